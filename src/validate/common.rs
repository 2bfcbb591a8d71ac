//! Checks shared by several kinds, with istiod's meaning (`pkg/config/validation`,
//! `pkg/config/labels`): names, hosts, ports, durations, percentages, regexes, labels, exportTo.
//!
//! Each check returns `Result<(), String>` so a caller can put the message on its own field path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::istio::{Duration, StringMatch};
use crate::diagnostic::Diagnostic;
pub use crate::model::host::is_dns1123_label;

/// Errors and warnings of one object, in the order found.
#[derive(Debug, Default)]
pub struct Diags(pub Vec<Diagnostic>);

impl Diags {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::error(field, message));
    }

    pub fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::warning(field, message));
    }

    /// Records `result`'s error, if any, on `field`.
    pub fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.error(field, message);
        }
    }
}

/// A Kubernetes DNS-1123 label (`metadata.name` of a Namespace): lower case only.
pub fn is_k8s_label(s: &str) -> bool {
    is_dns1123_label(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// A Kubernetes DNS-1123 subdomain (`metadata.name` of most kinds): lower-case labels joined by
/// dots, at most 253 characters.
pub fn is_k8s_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_k8s_label)
}

/// A Kubernetes DNS-1035 label (`metadata.name` of a Service): a label that starts with a letter.
pub fn is_k8s_dns1035_label(s: &str) -> bool {
    is_k8s_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// `*`, or a DNS-1123 label optionally prefixed by `*` or `*-` (istiod `IsWildcardDNS1123Label`).
fn is_wildcard_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_dns1123_label(rest)
}

fn check_domain_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Dot-separated DNS-1123 labels; a trailing dot is allowed and the top-level label may not be
/// all digits (so `1.2.3.4` is not a host name).
fn check_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified (or short) host name without wildcards.
pub fn validate_fqdn(name: &str) -> Result<(), String> {
    check_domain_preconditions(name)?;
    check_dns1123_labels(name)
}

/// A host name whose first label may be a wildcard (`*.example.com`, `*`, `*x`).
pub fn validate_wildcard_domain(name: &str) -> Result<(), String> {
    check_domain_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {name:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.map_or(Ok(()), check_dns1123_labels)
}

/// `*` and `*.suffix` are the wildcards Envoy's virtual hosts and SNI matching understand.
pub fn validate_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() != 1 {
        return validate_ip(s);
    }
    let invalid = || format!("{s} is not a valid CIDR block");
    let (addr, bits) = s.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match bits.parse::<u8>() {
        Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
        _ => Err(invalid()),
    }
}

/// The socket path after `unix://`: absolute and not a directory, or an abstract `@name`.
pub fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istiod's `ValidateDuration`: Envoy is given millisecond precision, and zero means "unset"
/// to most Envoy fields, so a duration must be at least 1ms and a whole number of ms.
pub fn validate_duration(d: Duration) -> Result<(), String> {
    let d = d.as_std();
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

/// An integer percentage, 0..=100.
pub fn validate_percent(value: i64) -> Result<(), String> {
    if (0..=100).contains(&value) {
        Ok(())
    } else {
        Err(format!("percentage {value} is not in range 0..100"))
    }
}

/// A fractional percentage: 0, or within [0.0001, 100] (Envoy's smallest step is a millionth).
pub fn validate_percentage(value: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        return Err(format!(
            "percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    Ok(())
}

/// Compiles a regex as Envoy will (RE2; Rust's `regex` accepts nearly the same language).
/// Istiod also caps the length, as Envoy caps RE2 program size.
pub fn validate_regex(re: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".into());
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        let detail = e.to_string().lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string();
        format!("invalid regex {re:?}: {detail}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
    })
}

/// Istiod's `validateStringMatch`: a prefix may not be empty (Envoy rejects it outside `uri`),
/// a regex must compile. `allow_empty_prefix` is for `uri`, where Envoy allows `prefix: ""`.
pub fn validate_string_match(m: &StringMatch, allow_empty_prefix: bool) -> Result<(), String> {
    match m {
        StringMatch::Prefix(p) if p.is_empty() && !allow_empty_prefix => {
            Err("prefix string match should not be empty".into())
        }
        StringMatch::Regex(r) if r.is_empty() => {
            Err("regex string match should not be empty".into())
        }
        StringMatch::Regex(r) => validate_regex(r),
        _ => Ok(()),
    }
}

/// An HTTP header name as istiod accepts it in matches: `[-_A-Za-z0-9]+`.
pub fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// A header value Envoy accepts: no control characters but tab, and `%` only as `%%` or around
/// a command operator (`%HOSTNAME%`).
pub fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t') && (c as u32) < 0x80)
    {
        return Err(format!("header value configuration {value:?} is invalid"));
    }
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            rest = stripped;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(format!(
                "header value configuration {value:?}: un-terminated variable expression"
            ));
        };
        let var = &after[..end];
        if !var.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(format!(
                "header value configuration {value:?}: invalid variable name {var:?}"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Kubernetes label keys (`prefix/name`) and values, as istiod checks selectors and subsets.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        if !is_label_key(k) {
            errs.push(format!("invalid tag key: {k:?}"));
        }
        if !v.is_empty() && !is_qualified_name(v) {
            errs.push(format!("invalid tag value: {v:?}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label));
    prefix_ok && name.len() <= 63 && is_qualified_name(name)
}

/// A workload selector's labels: no empty keys and no `*` (istiod matches labels literally).
pub fn validate_selector_labels(out: &mut Diags, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if k.is_empty() {
            out.error(
                field,
                format!("empty key is not supported in selector: \"={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            out.error(
                format!("{field}.{k}"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

/// `exportTo`: `.` (this namespace), `*` (all), `~` (nobody; ServiceEntry only) or namespace
/// names, without duplicates, and `*`/`~` alone.
pub fn validate_export_to(
    out: &mut Diags,
    field: &str,
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in export_to.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let key = if e == "." { namespace } else { e.as_str() };
        if seen.contains(&key) {
            if key != e {
                out.error(
                    at,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                out.error(at, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        let valid = key == "*"
            || (key == "~" && is_service_entry)
            || key == namespace
            || is_dns1123_label(key);
        if valid {
            seen.push(key);
        } else {
            out.error(
                at,
                format!(
                    "only . or * or valid DNS 1123 label is allowed as exportTo entry, got {e:?}"
                ),
            );
        }
    }
    if export_to.len() > 1 {
        if seen.contains(&"*") {
            out.error(
                field,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if seen.contains(&"~") {
            out.error(
                field,
                "cannot export service entry to no one (~) and someone",
            );
        }
    }
}

/// VirtualService and match `gateways`: `mesh`, `name`, or `namespace/name`.
pub fn validate_gateway_names(out: &mut Diags, field: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match name.split_once('/') {
            None => {
                if let Some((short, ns)) = name.split_once('.') {
                    let ns = ns.split('.').next().unwrap_or(ns);
                    out.warning(
                        &at,
                        format!("using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: \"{ns}/{short}\""),
                    );
                }
                out.check(at, validate_fqdn(name));
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    out.error(&at, "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    out.error(&at, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(gw) {
                    out.error(&at, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

/// Subset names become part of Envoy cluster names (`outbound|80|v1|host`).
pub fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

/// A port name (ServiceEntry ports, WorkloadEntry port keys): a DNS-1123 label.
pub fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name:?}"))
    }
}
