//! PeerAuthentication and RequestAuthentication: istiod's `ValidatePeerAuthentication` and
//! `ValidateRequestAuthentication` (`validateJwtRule`), with the limits and CEL rules of their
//! CRDs. AuthorizationPolicy is in [`super::authorization_policy`].

use crate::config::istio::security::{JwtRule, PeerAuthentication, RequestAuthentication};

use super::common::{
    Diags, is_k8s_label, is_k8s_subdomain, validate_duration, validate_header_name, validate_port,
};
use super::policy_target;

/// The CRD's limits on JWT rules.
const MAX_JWT_RULES: usize = 4096;
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;
const MAX_JWKS_URI: usize = 2048;

pub fn validate_peer_authentication(pa: &PeerAuthentication, out: &mut Diags) {
    if let Some(selector) = &pa.selector {
        policy_target::validate_selector(out, selector);
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    let at = "spec.portLevelMtls";
    // Port-level settings refine a workload's policy; a namespace or mesh policy has no ports.
    if pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
    {
        out.error(at, "mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires selector)");
    }
    if ports.is_empty() {
        out.error(
            at,
            "port level mTLS, if defined, must have at least one element",
        );
    }
    for port in ports.keys() {
        if validate_port((*port).into()).is_err() {
            out.error(format!("{at}.{port}"), "port must be in range 1..65535");
        }
    }
}

pub fn validate_request_authentication(ra: &RequestAuthentication, out: &mut Diags) {
    policy_target::validate(
        out,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    if ra.jwt_rules.len() > MAX_JWT_RULES {
        out.error(
            "spec.jwtRules",
            format!(
                "at most {MAX_JWT_RULES} jwtRules are allowed, got {}",
                ra.jwt_rules.len()
            ),
        );
    }
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        validate_jwt_rule(&format!("spec.jwtRules[{i}]"), rule, out);
    }
}

fn validate_jwt_rule(at: &str, rule: &JwtRule, out: &mut Diags) {
    if rule.issuer.is_empty() && rule.jwks_uri.is_empty() {
        out.error(
            format!("{at}.issuer"),
            "issuer or jwksUri must be non-empty string",
        );
    }
    non_empty_values(
        out,
        &format!("{at}.audiences"),
        &rule.audiences,
        "audience must be non-empty string",
    );
    if !rule.jwks_uri.is_empty() {
        out.check(format!("{at}.jwksUri"), validate_jwks_uri(&rule.jwks_uri));
        if !rule.jwks.is_empty() {
            out.error(
                format!("{at}.jwks"),
                "only one of jwks or jwksUri can be set",
            );
        }
    }
    if !rule.jwks.is_empty() {
        out.check(format!("{at}.jwks"), validate_jwks(&rule.jwks));
    }
    for (k, header) in rule.from_headers.iter().enumerate() {
        if header.name.is_empty() {
            out.error(
                format!("{at}.fromHeaders[{k}].name"),
                "location header name must be non-empty string",
            );
        }
    }
    non_empty_values(
        out,
        &format!("{at}.fromParams"),
        &rule.from_params,
        "location query must be non-empty string",
    );
    non_empty_values(
        out,
        &format!("{at}.fromCookies"),
        &rule.from_cookies,
        "cookie name must be non-empty string",
    );
    for (k, c) in rule.output_claim_to_headers.iter().enumerate() {
        let cat = format!("{at}.outputClaimToHeaders[{k}]");
        if c.claim.is_empty() || c.header.is_empty() {
            out.error(
                cat,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
        } else {
            out.check(format!("{cat}.header"), validate_header_name(&c.header));
        }
    }
    if let Some(timeout) = rule.timeout {
        out.check(format!("{at}.timeout"), validate_duration(timeout));
    }
    let claims = &rule.space_delimited_claims;
    non_empty_values(
        out,
        &format!("{at}.spaceDelimitedClaims"),
        claims,
        "claim name must be non-empty string",
    );
    if claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
        out.error(
            format!("{at}.spaceDelimitedClaims"),
            format!(
                "at most {MAX_SPACE_DELIMITED_CLAIMS} claims are allowed, got {}",
                claims.len()
            ),
        );
    }
}

/// An error on each empty entry of a list whose entries must be set.
fn non_empty_values(out: &mut Diags, at: &str, values: &[String], message: &str) {
    for (k, v) in values.iter().enumerate() {
        if v.is_empty() {
            out.error(format!("{at}[{k}]"), message);
        }
    }
}

/// istiod's `ParseJwksURI` and the CRD's `url(self).getScheme() in ["http", "https"]`: Envoy fetches
/// the keys from it, so it must be an http(s) URL with a numeric port, if any.
pub fn validate_jwks_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_JWKS_URI {
        return Err(format!(
            "jwksUri may not be more than {MAX_JWKS_URI} characters"
        ));
    }
    if let Some(c) = uri.chars().find(|c| c.is_control() || *c == ' ') {
        return Err(format!(
            "invalid jwksUri {uri:?}: invalid character {c:?} in URL"
        ));
    }
    let rest = match uri.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest
        }
        _ => {
            return Err(format!(
                "invalid jwksUri {uri:?}: url must have scheme http:// or https://"
            ));
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // `[v6]:port` or `host:port`; the port, if written, is a number.
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port
        && !port.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(format!("invalid jwksUri {uri:?}: invalid port {port:?}"));
    }
    Ok(())
}

/// An inline JWKS, as `jwk.Parse` accepts it: a JSON key set (`{"keys": [...]}`) or a single key,
/// each key an object with a `kty`.
pub fn validate_jwks(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("jwks parse error: not JSON: {e}"))?;
    let keys = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("jwks parse error: \"keys\" must be an array".into()),
        None => vec![&value],
    };
    for (i, key) in keys.iter().enumerate() {
        if key
            .get("kty")
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("jwks parse error: key {i} has no \"kty\""));
        }
    }
    Ok(())
}

/// A service account of an AuthorizationPolicy source: `namespace/name` or `name`, each part as
/// Kubernetes names them (no wildcards: they are matched exactly).
pub fn validate_service_account(sa: &str) -> Result<(), String> {
    if sa.is_empty() {
        return Err("empty value not allowed, found in ServiceAccounts".into());
    }
    if sa.len() > 320 {
        return Err(format!(
            "service account {sa:?} may not be more than 320 characters"
        ));
    }
    let (namespace, name) = match sa.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, sa),
    };
    if namespace.is_some_and(|ns| !is_k8s_label(ns)) || !is_k8s_subdomain(name) {
        return Err(format!(
            "invalid service account {sa:?}: must be <namespace>/<name> or <name>"
        ));
    }
    Ok(())
}
