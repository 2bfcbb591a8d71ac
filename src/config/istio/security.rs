//! `security.istio.io` PeerAuthentication, AuthorizationPolicy and RequestAuthentication, as
//! their served versions (v1beta1, v1) share one schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;
use super::common::MatchLabels;

/// `PolicyTargetReference`: the Service, ServiceEntry or Gateway a policy attaches to, instead of
/// a workload selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// Empty is the core group (a Service).
    pub group: String,
    pub kind: String,
    pub name: String,
    /// Must be empty: cross-namespace references are not supported.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// `None`: the policy applies to the namespace (or the mesh, in the root namespace).
    pub selector: Option<MatchLabels>,
    pub mtls: Option<MutualTls>,
    /// Per workload port; `Some` but empty is invalid, so presence is kept.
    pub port_level_mtls: Option<BTreeMap<u32, MutualTls>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct MutualTls {
    pub mode: MtlsMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent policy (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    pub selector: Option<MatchLabels>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    /// `None` and `Some(empty)` differ: DENY and CUSTOM without rules are rejected, while an
    /// empty rule (`[{}]`) matches every request.
    pub rules: Option<Vec<Rule>>,
    pub action: Action,
    /// The extension provider of a CUSTOM action.
    pub provider: Option<ExtensionProvider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// Logs matching requests; never allows or denies.
    Audit,
    /// Delegates the decision to an extension provider.
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ExtensionProvider {
    pub name: String,
}

/// A rule matches when all its `from`, `to` and `when` match (each list: any of its entries).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct Rule {
    /// `Some(empty)` is invalid where `None` (any source) is not.
    pub from: Option<Vec<RuleFrom>>,
    pub to: Option<Vec<RuleTo>>,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RuleFrom {
    pub source: Option<Source>,
}

/// Who sent the request; every set field must match, and no `notX` value may.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities (`cluster.local/ns/default/sa/sleep`), from mTLS.
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    /// `issuer/subject` of the request's JWT.
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    /// `namespace/name` or `name` (the policy's namespace); exclusive with principals and namespaces.
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    /// The peer's IP (of the downstream connection).
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    /// The original client IP (X-Forwarded-For or PROXY protocol).
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct RuleTo {
    pub operation: Option<Operation>,
}

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    /// Port numbers, as strings.
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// A `when` condition on an Istio attribute (`request.headers[x-id]`, `source.ip`, …).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestAuthentication {
    pub selector: Option<MatchLabels>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub jwt_rules: Vec<JwtRule>,
}

/// How to validate the JWTs of one issuer.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(transform = mirror_jwks_uri_alias)]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Protobuf JSON also reads the proto name, `jwks_uri`.
    #[serde(alias = "jwks_uri")]
    pub jwks_uri: String,
    /// Inline JWKS; exclusive with `jwksUri`.
    pub jwks: String,
    /// Where the token is; empty (with the other two) means `Authorization: Bearer`.
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: String,
    pub forward_original_token: bool,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for the JWKS fetch.
    pub timeout: Option<Duration>,
    /// Claims whose value is a space-separated list (`scope`).
    pub space_delimited_claims: Vec<String>,
    pub presence: JwtPresence,
}

/// schemars leaves serde aliases out; the CRD must name `jwks_uri` or the API server prunes it.
fn mirror_jwks_uri_alias(schema: &mut schemars::Schema) {
    let alias = schema
        .get("properties")
        .and_then(|p| p.get("jwksUri"))
        .cloned();
    if let (Some(alias), Some(properties)) = (
        alias,
        schema.get_mut("properties").and_then(|p| p.as_object_mut()),
    ) {
        properties.insert("jwks_uri".into(), alias);
    }
}

/// A header the token is read from; `prefix` (`Bearer `) is stripped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct JwtHeader {
    pub name: String,
    pub prefix: String,
}

/// Copies a claim of a valid token into a request header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    /// A request without a token passes (an invalid token never does).
    #[default]
    Optional,
    Required,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_level_mtls_is_keyed_by_port_number() {
        let pa: PeerAuthentication =
            serde_saphyr::from_str("selector: {matchLabels: {app: a}}\nportLevelMtls:\n  80: {mode: STRICT}\n  \"8080\": {mode: DISABLE}\n")
                .unwrap();
        let ports = pa.port_level_mtls.unwrap();
        assert_eq!(ports[&80].mode, MtlsMode::Strict);
        assert_eq!(ports[&8080].mode, MtlsMode::Disable);
        assert!(
            serde_json::from_str::<PeerAuthentication>(r#"{"portLevelMtls":{"http":{}}}"#).is_err()
        );
    }

    #[test]
    fn rules_keep_nil_apart_from_empty() {
        let none: AuthorizationPolicy = serde_json::from_str(r#"{"action":"DENY"}"#).unwrap();
        assert_eq!(none.rules, None);
        let empty_rule: AuthorizationPolicy =
            serde_json::from_str(r#"{"action":"DENY","rules":[{}]}"#).unwrap();
        assert_eq!(empty_rule.rules, Some(vec![Rule::default()]));
        assert_eq!(empty_rule.action, Action::Deny);
    }

    #[test]
    fn jwks_uri_reads_the_proto_name_too() {
        let a: JwtRule = serde_json::from_str(r#"{"jwks_uri":"https://a/keys"}"#).unwrap();
        let b: JwtRule = serde_json::from_str(r#"{"jwksUri":"https://a/keys"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.jwks_uri, "https://a/keys");
        let schema = serde_json::to_value(schemars::schema_for!(JwtRule)).unwrap();
        assert!(schema["properties"]["jwks_uri"].is_object(), "{schema}");
    }
}
