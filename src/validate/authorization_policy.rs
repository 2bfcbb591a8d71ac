//! AuthorizationPolicy: istiod's `ValidateAuthorizationPolicy` (and `pkg/config/security`'s
//! attribute, IP, port and path-template checks), with the limits and CEL rules of its CRD.

use std::net::IpAddr;

use crate::config::istio::security::{
    Action, AuthorizationPolicy, Condition, Operation, Rule, Source,
};

use super::common::Diags;
use super::policy_target;
use super::security::validate_service_account;

/// The CRD's limits on `rules` and on a rule's `from`.
const MAX_RULES: usize = 512;
const MAX_FROM: usize = 512;
const MAX_SERVICE_ACCOUNTS: usize = 16;

pub fn validate(ap: &AuthorizationPolicy, out: &mut Diags) {
    policy_target::validate(
        out,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    // A DENY or CUSTOM policy without rules never triggers; an empty rule `{}` matches everything.
    let never = |action| {
        format!(
            "{action} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request"
        )
    };
    match ap.action {
        Action::Custom => {
            if ap.rules.is_none() {
                out.error("spec.rules", never("CUSTOM"));
            } else if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                out.error("spec.provider.name", "`provider.name` must not be empty");
            }
            for (i, rule) in ap.rules.iter().flatten().enumerate() {
                validate_custom_rule(&format!("spec.rules[{i}]"), rule, out);
            }
        }
        Action::Deny if ap.rules.is_none() => out.error("spec.rules", never("DENY")),
        _ => {}
    }
    if ap.provider.is_some() && ap.action != Action::Custom {
        out.error(
            "spec.provider",
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action_name(ap.action)
            ),
        );
    }
    let rules = ap.rules.as_deref().unwrap_or_default();
    if rules.len() > MAX_RULES {
        out.error(
            "spec.rules",
            format!("at most {MAX_RULES} rules are allowed, got {}", rules.len()),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        validate_rule(i, rule, ap.action, out);
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    }
}

/// istiod's `istio.io/dry-run` annotation check: only ALLOW and DENY policies can be dry-run,
/// and the value is a Go boolean.
pub fn validate_dry_run(value: &str, action: Action) -> Result<(), String> {
    if !matches!(action, Action::Allow | Action::Deny) {
        return Err(format!(
            "the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action {}",
            action_name(action)
        ));
    }
    let is_go_bool = matches!(
        value,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    );
    if !is_go_bool {
        return Err(format!(
            "annotation istio.io/dry-run has invalid value ({value}): must be true or false"
        ));
    }
    Ok(())
}

/// The external authorizer sees no peer identity nor JWT: a CUSTOM rule cannot match on them.
fn validate_custom_rule(at: &str, rule: &Rule, out: &mut Diags) {
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let Some(src) = &from.source else { continue };
        let unsupported = [
            ("namespaces", "From.Namespaces", &src.namespaces),
            ("notNamespaces", "From.NotNamespaces", &src.not_namespaces),
            (
                "serviceAccounts",
                "From.ServiceAccounts",
                &src.service_accounts,
            ),
            (
                "notServiceAccounts",
                "From.NotServiceAccounts",
                &src.not_service_accounts,
            ),
            ("principals", "From.Principals", &src.principals),
            ("notPrincipals", "From.NotPrincipals", &src.not_principals),
            (
                "requestPrincipals",
                "From.RequestPrincipals",
                &src.request_principals,
            ),
            (
                "notRequestPrincipals",
                "From.NotRequestPrincipals",
                &src.not_request_principals,
            ),
        ];
        for (field, name, values) in unsupported {
            if !values.is_empty() {
                out.error(
                    format!("{at}.from[{j}].source.{field}"),
                    format!("{name} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
    for (k, when) in rule.when.iter().enumerate() {
        let key = when.key.as_str();
        if matches!(
            key,
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || key.starts_with("request.auth.")
        {
            out.error(
                format!("{at}.when[{k}].key"),
                format!("{key} is currently not supported with CUSTOM action"),
            );
        }
    }
}

fn validate_rule(i: usize, rule: &Rule, action: Action, out: &mut Diags) {
    let at = format!("spec.rules[{i}]");
    // Whether the rule can match TCP traffic: HTTP-only attributes in a DENY rule deny all TCP.
    let (mut from_exists, mut tcp_in_from, mut to_exists, mut tcp_in_to) =
        (false, false, false, false);
    if let Some(from) = &rule.from {
        if from.is_empty() {
            out.error(
                format!("{at}.from"),
                format!("`from` must not be empty, found at rule {i}"),
            );
        }
        if from.len() > MAX_FROM {
            out.error(
                format!("{at}.from"),
                format!(
                    "at most {MAX_FROM} from entries are allowed, got {}",
                    from.len()
                ),
            );
        }
        for (j, f) in from.iter().enumerate() {
            let fat = format!("{at}.from[{j}].source");
            match &f.source {
                None => out.error(
                    fat,
                    format!("`from.source` must not be nil, found at rule {i}"),
                ),
                Some(src) => {
                    from_exists = true;
                    tcp_in_from |= validate_source(&fat, i, src, out);
                }
            }
        }
    }
    if let Some(to) = &rule.to {
        if to.is_empty() {
            out.error(
                format!("{at}.to"),
                format!("`to` must not be empty, found at rule {i}"),
            );
        }
        for (j, t) in to.iter().enumerate() {
            let tat = format!("{at}.to[{j}].operation");
            match &t.operation {
                None => out.error(
                    tat,
                    format!("`to.operation` must not be nil, found at rule {i}"),
                ),
                Some(op) => {
                    to_exists = true;
                    tcp_in_to |= validate_operation(&tat, i, op, out);
                }
            }
        }
    }
    for (k, condition) in rule.when.iter().enumerate() {
        validate_condition(&format!("{at}.when[{k}]"), condition, out);
    }
    if action == Action::Deny
        && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
    {
        out.warning(
            at,
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
        );
    }
}

/// Checks one `source`; returns whether it names anything a TCP connection carries.
fn validate_source(at: &str, i: usize, src: &Source, out: &mut Diags) -> bool {
    let identities = [
        &src.principals,
        &src.not_principals,
        &src.namespaces,
        &src.not_namespaces,
    ];
    let accounts = [&src.service_accounts, &src.not_service_accounts];
    let any = |lists: &[&Vec<String>]| lists.iter().any(|l| !l.is_empty());
    if any(&identities) && any(&accounts) {
        out.error(
            at,
            format!("cannot set serviceAccounts with namespaces or principals, found at rule {i}"),
        );
    }
    let ips = [
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
    ];
    let others = [
        ("principals", "Principals", &src.principals),
        ("notPrincipals", "NotPrincipals", &src.not_principals),
        (
            "requestPrincipals",
            "RequestPrincipals",
            &src.request_principals,
        ),
        (
            "notRequestPrincipals",
            "NotRequestPrincipals",
            &src.not_request_principals,
        ),
        ("namespaces", "Namespaces", &src.namespaces),
        ("notNamespaces", "NotNamespaces", &src.not_namespaces),
        ("trustDomains", "TrustDomains", &src.trust_domains),
        ("notTrustDomains", "NotTrustDomains", &src.not_trust_domains),
    ];
    let is_empty = others.iter().all(|(_, _, l)| l.is_empty())
        && ips.iter().all(|(_, l)| l.is_empty())
        && accounts.iter().all(|l| l.is_empty());
    if is_empty {
        out.error(
            at,
            format!("`from.source` must not be empty, found at rule {i}"),
        );
    }
    for (field, list) in ips {
        for (k, ip) in list.iter().enumerate() {
            out.check(format!("{at}.{field}[{k}]"), validate_ip_block(ip));
        }
    }
    for (field, name, list) in others {
        check_empty_values(out, &format!("{at}.{field}"), name, list);
    }
    for (field, list) in [
        ("serviceAccounts", &src.service_accounts),
        ("notServiceAccounts", &src.not_service_accounts),
    ] {
        if list.len() > MAX_SERVICE_ACCOUNTS {
            out.error(
                format!("{at}.{field}"),
                format!(
                    "at most {MAX_SERVICE_ACCOUNTS} service accounts are allowed, got {}",
                    list.len()
                ),
            );
        }
        for (k, sa) in list.iter().enumerate() {
            out.check(format!("{at}.{field}[{k}]"), validate_service_account(sa));
        }
    }
    // Request principals need the HTTP request's JWT; everything else is known of a connection.
    let tcp_lists = [
        &src.principals,
        &src.not_principals,
        &src.namespaces,
        &src.not_namespaces,
    ];
    any(&tcp_lists) || any(&accounts) || ips.iter().any(|(_, l)| !l.is_empty())
}

/// Checks one `operation`; returns whether it names a port (the only TCP attribute there).
fn validate_operation(at: &str, i: usize, op: &Operation, out: &mut Diags) -> bool {
    let lists = [
        ("hosts", "Hosts", &op.hosts),
        ("notHosts", "NotHosts", &op.not_hosts),
        ("ports", "Ports", &op.ports),
        ("notPorts", "NotPorts", &op.not_ports),
        ("methods", "Methods", &op.methods),
        ("notMethods", "NotMethods", &op.not_methods),
        ("paths", "Paths", &op.paths),
        ("notPaths", "NotPaths", &op.not_paths),
    ];
    if lists.iter().all(|(_, _, l)| l.is_empty()) {
        out.error(
            at,
            format!("`to.operation` must not be empty, found at rule {i}"),
        );
    }
    for (field, name, list) in lists {
        check_empty_values(out, &format!("{at}.{field}"), name, list);
    }
    for (field, list) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (k, port) in list.iter().enumerate() {
            out.check(format!("{at}.{field}[{k}]"), validate_port_string(port));
        }
    }
    for (field, name, list) in [
        ("paths", "Paths", &op.paths),
        ("notPaths", "NotPaths", &op.not_paths),
    ] {
        for (k, path) in list.iter().enumerate() {
            if is_unsupported_path_template(path) {
                out.error(
                    format!("{at}.{field}[{k}]"),
                    format!("invalid or unsupported path template, found in {name}"),
                );
            }
        }
    }
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

/// istiod's `CheckEmptyValues`: the first empty entry of a list.
fn check_empty_values(out: &mut Diags, at: &str, name: &str, values: &[String]) {
    if let Some(k) = values.iter().position(String::is_empty) {
        out.error(
            format!("{at}[{k}]"),
            format!("empty value not allowed, found in {name}"),
        );
    }
}

fn validate_condition(at: &str, c: &Condition, out: &mut Diags) {
    let key = c.key.as_str();
    if key.is_empty() {
        out.error(format!("{at}.key"), "`key` must not be empty");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        out.error(
            at,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    let attribute = match attribute(key) {
        Ok(a) => a,
        Err(e) => return out.error(format!("{at}.key"), e),
    };
    for (field, what, values) in [
        ("values", "value", &c.values),
        ("notValues", "notValue", &c.not_values),
    ] {
        let problem = if let Some(k) = values.iter().position(String::is_empty) {
            Some((k, format!("empty value not allowed, found in {key}")))
        } else {
            values
                .iter()
                .enumerate()
                .find_map(|(k, v)| match attribute {
                    Attribute::Ip => validate_ip_block(v).err().map(|e| (k, e)),
                    Attribute::Port => validate_port_string(v).err().map(|e| (k, e)),
                    Attribute::Any => None,
                })
        };
        if let Some((k, e)) = problem {
            out.error(
                format!("{at}.{field}[{k}]"),
                format!("invalid `{what}` for `key` {key}: {e}"),
            );
        }
    }
}

/// What values an attribute takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Attribute {
    Ip,
    Port,
    Any,
}

/// istiod's `ValidateAttribute`, the key part: which attributes a `when` may name.
fn attribute(key: &str) -> Result<Attribute, String> {
    let map_key = |key: &str| {
        let open = key.find('[');
        let ok = key.ends_with(']') && open.is_some_and(|o| o > 0 && o + 2 < key.len());
        if ok {
            Ok(Attribute::Any)
        } else {
            Err(format!("bad key ({key}): should have format a[b]"))
        }
    };
    match key {
        _ if key.starts_with("request.headers") => map_key(key),
        "source.ip" | "remote.ip" | "destination.ip" => Ok(Attribute::Ip),
        "destination.port" => Ok(Attribute::Port),
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(Attribute::Any),
        _ if key.starts_with("request.auth.claims") => map_key(key),
        _ if key.starts_with("experimental.envoy.filters.") => map_key(key),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        _ if key.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

/// An IP address or a CIDR range (`netip.ParseAddr` / `ParsePrefix`).
fn validate_ip_block(v: &str) -> Result<(), String> {
    match v.split_once('/') {
        Some((addr, bits)) => {
            let max = match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return Err(format!("bad CIDR range ({v}): invalid address")),
            };
            match bits.parse::<u8>() {
                Ok(b) if b <= max && bits.bytes().all(|c| c.is_ascii_digit()) => Ok(()),
                _ => Err(format!(
                    "bad CIDR range ({v}): bad bits after slash: {bits:?}"
                )),
            }
        }
        None => v
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("bad IP address ({v})")),
    }
}

/// A port as a decimal string, 0 to 65535.
fn validate_port_string(v: &str) -> Result<(), String> {
    match v.parse::<u32>() {
        Ok(p) if p <= 65535 && !v.starts_with('+') => Ok(()),
        _ => Err(format!("bad port ({v})")),
    }
}

/// istiod's `CheckValidPathTemplate`: a path with `{*}` or `{**}` is a template, and Envoy's URI
/// templates support neither named variables (`{name}`, `{name=*}`) nor bare `/*` or `*/` segments.
fn is_unsupported_path_template(path: &str) -> bool {
    if !path.contains("{*}") && !path.contains("{**}") {
        return false;
    }
    if path.contains("/*") || path.contains("*/") {
        return true;
    }
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = path.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'{')
        .any(|(open, _)| {
            let word = b[open + 1..].iter().take_while(|c| is_word(**c)).count();
            let rest = &path[open + 1 + word..];
            // `{}` or `{name}`; or `/{name=*}`, `/{name=**}`.
            rest.starts_with('}')
                || (word > 0
                    && open > 0
                    && b[open - 1] == b'/'
                    && (rest.starts_with("=*}") || rest.starts_with("=**}")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        for ok in [
            "/exact",
            "/prefix/*",
            "*/suffix",
            "*",
            "/path/template/{*}",
            "/{**}/path/template",
            "/a/{*}/b/{**}",
        ] {
            assert!(!is_unsupported_path_template(ok), "{ok}");
        }
        for bad in [
            "/{*}/foo/{bar}",
            "/{*}/{}",
            "/{*}/{name=*}",
            "/{**}/*",
            "/{*}/a*/b",
            "/{*}/{name=**}/x",
        ] {
            assert!(is_unsupported_path_template(bad), "{bad}");
        }
    }

    #[test]
    fn ip_blocks_and_ports() {
        for ok in ["1.2.3.4", "5.6.0.0/16", "::1", "2001:db8::/32", "0.0.0.0/0"] {
            assert_eq!(validate_ip_block(ok), Ok(()), "{ok}");
        }
        for bad in [
            "1.2.3",
            "1.2.3.4/33",
            "::/129",
            "a.b.c.d/8",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "10.0.0.0/8/8",
        ] {
            assert!(validate_ip_block(bad).is_err(), "{bad}");
        }
        assert!(validate_port_string("0").is_ok() && validate_port_string("65535").is_ok());
        for bad in ["65536", "-1", "+80", "http", ""] {
            assert!(validate_port_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attributes() {
        assert_eq!(attribute("request.headers[x-id]"), Ok(Attribute::Any));
        assert_eq!(attribute("request.auth.claims[a][b]"), Ok(Attribute::Any));
        assert_eq!(attribute("destination.port"), Ok(Attribute::Port));
        assert_eq!(attribute("remote.ip"), Ok(Attribute::Ip));
        assert!(
            attribute("request.headers[]")
                .unwrap_err()
                .contains("should have format a[b]")
        );
        assert!(attribute("request.headers").is_err());
        assert!(attribute("[a]").is_err());
        assert!(
            attribute("destination.labels[app]")
                .unwrap_err()
                .contains("workload selector")
        );
        assert!(
            attribute("destination.user")
                .unwrap_err()
                .contains("deprecated")
        );
        assert_eq!(
            attribute("source.colour"),
            Err("unknown attribute: source.colour".into())
        );
    }

    #[test]
    fn dry_run_values() {
        assert!(
            validate_dry_run("true", Action::Deny).is_ok()
                && validate_dry_run("F", Action::Allow).is_ok()
        );
        assert!(
            validate_dry_run("yes", Action::Allow)
                .unwrap_err()
                .contains("invalid value (yes)")
        );
        assert!(
            validate_dry_run("true", Action::Audit)
                .unwrap_err()
                .contains("found action AUDIT")
        );
    }
}
