//! RequestAuthentication → Envoy `jwt_authn`, as istiod's `convertToEnvoyJwtConfig`: one provider
//! `origins-<i>` per JWT rule (all rules of all applying policies, sorted by issuer), keys inlined
//! (`local_jwks`), and a requirement that rejects a request whose token is invalid but lets a
//! request without one through — requiring a token is AuthorizationPolicy's job.
//!
//! istiod fetches `jwksUri` itself and inlines the keys, so Envoy needs no cluster for the JWKS
//! server; pilotfish does the same through [`JwksLookup`] (the fetching is I/O and lives in
//! `security::jwks`). Keys not fetched yet become [`UNAVAILABLE_JWKS`], which no token verifies
//! against: a token of that issuer is rejected until the keys arrive, as with istiod's fake JWKS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Empty};
use prost::Message;

use super::{JWT_PAYLOAD_KEY, JWT_PAYLOAD_NAMESPACE};
use crate::config::istio::security::{JwtPresence, JwtRule, RequestAuthentication};
use crate::index::security::Applied;
use crate::model::NodeType;
pub use crate::model::jwks::{JwksLookup, JwksSource};

#[cfg(test)]
pub(crate) mod mint;
#[cfg(test)]
mod tests;

/// The HTTP filter's name, which is also the dynamic-metadata namespace it writes payloads to.
pub const JWT_FILTER: &str = JWT_PAYLOAD_NAMESPACE;
const JWT_AUTHENTICATION_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// istiod's JWKS fetch timeout when the rule sets none.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Claims istiod always treats as space-separated lists, so `scope: "a b"` matches `a`.
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["permission", "scope"];

/// Inlined for keys that could not be fetched: one P-256 public key whose private half was never
/// kept, so every token of the issuer fails verification instead of the provider being dropped
/// (which would let that issuer's tokens through unchecked).
pub const UNAVAILABLE_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"pilotfish-jwks-unavailable","x":"F9vp9yqrIroaUAJhhwaF35-DJPCJas1lYciWM1Ct8Go","y":"yLHLhYFsNcSXKqow_CaiVfVsr2SwEWWkXZZEOsboKEM"}]}"#;

impl JwksSource {
    /// `None` when the keys are inline (`jwks`) or there is nothing to fetch them from.
    pub fn of(rule: &JwtRule) -> Option<JwksSource> {
        if !rule.jwks.is_empty() {
            None
        } else if !rule.jwks_uri.is_empty() {
            Some(JwksSource::Uri(rule.jwks_uri.clone()))
        } else if !rule.issuer.is_empty() {
            Some(JwksSource::Discovery {
                issuer: rule.issuer.clone(),
            })
        } else {
            None
        }
    }
}

/// Every source the rules need fetched, each with the longest timeout a rule gives it.
pub fn jwks_sources<'a>(
    rules: impl IntoIterator<Item = &'a JwtRule>,
) -> BTreeMap<JwksSource, Duration> {
    let mut out = BTreeMap::new();
    for rule in rules {
        if let Some(source) = JwksSource::of(rule) {
            let timeout = rule.timeout.map_or(DEFAULT_JWKS_TIMEOUT, |t| t.0);
            let entry = out.entry(source).or_insert(timeout);
            *entry = (*entry).max(timeout);
        }
    }
    out
}

/// The `jwt_authn` filter for the RequestAuthentications that apply to a workload, or `None`
/// when they have no JWT rules. Goes before RBAC, which reads the payloads it writes.
pub fn http_filter(
    policies: &[Applied<'_, RequestAuthentication>],
    jwks: &dyn JwksLookup,
    node_type: NodeType,
) -> Option<HttpFilter> {
    let config = jwt_authentication(policies, jwks, node_type)?;
    Some(HttpFilter {
        name: JWT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: JWT_AUTHENTICATION_TYPE_URL.into(),
            value: encode(config),
        })),
        ..Default::default()
    })
}

/// The filter's config. Its `providers` is a `HashMap`: encode it with [`encode`], not prost.
pub fn jwt_authentication(
    policies: &[Applied<'_, RequestAuthentication>],
    jwks: &dyn JwksLookup,
    node_type: NodeType,
) -> Option<JwtAuthentication> {
    let mut rules: Vec<&JwtRule> = policies.iter().flat_map(|p| &p.spec.jwt_rules).collect();
    if rules.is_empty() {
        return None;
    }
    // Stable, so rules of one issuer keep policy order (istiod's order there is unspecified).
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));

    // On gateways the route is picked after authentication and may match on claims, so a
    // verified token must clear the cached route; sidecar inbound routes do not (istiod's rule).
    let clear_route_cache = node_type != NodeType::Sidecar;
    let names: Vec<String> = (0..rules.len()).map(|i| format!("origins-{i}")).collect();
    let providers = names
        .iter()
        .zip(&rules)
        .map(|(name, rule)| (name.clone(), provider(rule, jwks, clear_route_cache)))
        .collect();
    let required: Vec<&str> = names
        .iter()
        .zip(&rules)
        .filter(|(_, r)| r.presence == JwtPresence::Required)
        .map(|(n, _)| n.as_str())
        .collect();

    Some(JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requirement(
                &names, &required,
            ))),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    })
}

fn provider(rule: &JwtRule, jwks: &dyn JwksLookup, clear_route_cache: bool) -> JwtProvider {
    let keys: Arc<str> = if !rule.jwks.is_empty() {
        rule.jwks.as_str().into()
    } else {
        JwksSource::of(rule)
            .and_then(|s| jwks.jwks(&s))
            .unwrap_or_else(|| UNAVAILABLE_JWKS.into())
    };
    let space_delimited: BTreeSet<&str> = rule
        .space_delimited_claims
        .iter()
        .map(String::as_str)
        .chain(SPACE_DELIMITED_CLAIMS)
        .collect();
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        forward_payload_header: rule.output_payload_to_header.clone(),
        payload_in_metadata: JWT_PAYLOAD_KEY.into(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: space_delimited.into_iter().map(String::from).collect(),
        }),
        clear_route_cache,
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(keys.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// istiod's requirement, with `presence: REQUIRED` added on top:
/// - each optional provider: `any(P, allow_missing)` — a token where P looks must verify;
/// - several providers: `any(P1, …, Pn, all(any(P1, allow_missing), …))`, the outer `Pi` for
///   providers sharing a location, where the other providers would see a foreign token;
/// - required providers: `all(R1, …, <the above>)`, so a request without a valid token of each
///   fails, while other tokens present must still verify.
fn requirement(names: &[String], required: &[&str]) -> JwtRequirement {
    let provider = |name: &str| JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
    };
    let any = |requirements| JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList { requirements },
        )),
    };
    let all = |requirements| JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
            JwtRequirementAndList { requirements },
        )),
    };
    let allow_missing = || JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    };

    let optional_each: Vec<JwtRequirement> = names
        .iter()
        .map(|n| any(vec![provider(n), allow_missing()]))
        .collect();
    let if_present_valid = if optional_each.len() == 1 {
        optional_each.into_iter().next()
    } else {
        let mut alternatives: Vec<JwtRequirement> = names.iter().map(|n| provider(n)).collect();
        alternatives.push(all(optional_each));
        Some(any(alternatives))
    };
    if required.is_empty() {
        return if_present_valid.unwrap_or_default();
    }
    let mut needed: Vec<JwtRequirement> = required.iter().map(|n| provider(n)).collect();
    // With every provider required, each present token is checked by its own provider already.
    if required.len() < names.len() {
        needed.extend(if_present_valid);
    }
    if needed.len() == 1 {
        needed.remove(0)
    } else {
        all(needed)
    }
}

/// prost writes `providers` in `HashMap` order, which differs between maps and processes; written
/// here in name order (field 1 first, the rest as prost writes it), equal config is equal bytes.
pub fn encode(mut config: JwtAuthentication) -> Vec<u8> {
    use prost::encoding::{btree_map, message, string};
    let providers: BTreeMap<String, JwtProvider> =
        std::mem::take(&mut config.providers).into_iter().collect();
    let mut buf = Vec::with_capacity(
        btree_map::encoded_len(string::encoded_len, message::encoded_len, 1, &providers)
            + config.encoded_len(),
    );
    btree_map::encode(
        string::encode,
        string::encoded_len,
        message::encode,
        message::encoded_len,
        1,
        &providers,
        &mut buf,
    );
    buf.extend(config.encode_to_vec());
    buf
}
