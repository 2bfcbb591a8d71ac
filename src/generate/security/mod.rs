//! Istio's security API on stock Envoy: AuthorizationPolicy → RBAC filters ([`authz`]),
//! RequestAuthentication → `jwt_authn` ([`jwt`]).
//!
//! Stock Envoy has no `istio_authn` filter, so the request principal and claims RBAC matches on
//! come from `jwt_authn` itself: every provider writes the verified payload into the dynamic
//! metadata at [`JWT_PAYLOAD_NAMESPACE`] / [`JWT_PAYLOAD_KEY`], and RBAC's metadata matchers
//! read `iss`, `sub` and claims from there.

/// The filter whose dynamic metadata carries a verified JWT's payload.
pub const JWT_PAYLOAD_NAMESPACE: &str = "envoy.filters.http.jwt_authn";
/// The key every `jwt_authn` provider writes the payload under (`payload_in_metadata`).
pub const JWT_PAYLOAD_KEY: &str = "payload";

pub mod jwt;

pub mod authz;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SdsSecretConfig, SubjectAltNameMatcher,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

use super::cluster::ads;

/// The SDS name of a proxy's own certificate and key, as istio-agent names it.
pub const WORKLOAD_CERT: &str = "default";
/// The SDS name of the mesh's trust roots.
pub const ROOT_CA: &str = "ROOTCA";
/// Prefix of a gateway credential read from a Kubernetes Secret (`credentialName`).
pub const KUBERNETES_SECRET_PREFIX: &str = "kubernetes://";
/// Suffix of the SDS name of a credential's CA certificate (istiod's `-cacert`).
pub const CA_CERT_SUFFIX: &str = "-cacert";

/// A secret fetched over ADS: stock Envoy has no istio-agent beside it serving SDS on a socket,
/// so pilotfish serves secrets on the same stream as the rest of the config.
pub fn sds_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

/// Peers checked against the SDS secret `ca` (the roots), then against `defaults` (SANs).
pub fn combined_validation(
    defaults: CertificateValidationContext,
    ca: &str,
) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(defaults),
        validation_context_sds_secret_config: Some(sds_secret(ca)),
        ..Default::default()
    })
}

/// A validation context accepting a certificate with any of `sans`. istiod sends untyped
/// matchers, which Envoy deprecates; each is typed here by its form: `scheme://…` a URI (SPIFFE
/// ids), an IP address, `user@host` an email, anything else a DNS name.
pub fn matching_sans(sans: &[String]) -> CertificateValidationContext {
    let typed = |san: &String| {
        let san_type = if san.contains("://") {
            SanType::Uri
        } else if san.parse::<std::net::IpAddr>().is_ok() {
            SanType::IpAddress
        } else if san.contains('@') {
            SanType::Email
        } else {
            SanType::Dns
        };
        SubjectAltNameMatcher {
            san_type: san_type as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(san.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    CertificateValidationContext {
        match_typed_subject_alt_names: sans.iter().map(typed).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_alt_names_are_typed_by_their_form() {
        let sans = [
            "spiffe://cluster.local/ns/foo/sa/a",
            "10.0.0.1",
            "::1",
            "ops@example.com",
            "api.example.com",
        ]
        .map(String::from);
        let typed: Vec<(i32, Option<MatchPattern>)> = matching_sans(&sans)
            .match_typed_subject_alt_names
            .into_iter()
            .map(|m| (m.san_type, m.matcher.and_then(|s| s.match_pattern)))
            .collect();
        let want = [
            SanType::Uri,
            SanType::IpAddress,
            SanType::IpAddress,
            SanType::Email,
            SanType::Dns,
        ];
        assert_eq!(typed.len(), want.len());
        for ((got, pattern), (want, san)) in typed.into_iter().zip(want.into_iter().zip(&sans)) {
            assert_eq!(got, want as i32, "{san}");
            assert_eq!(pattern, Some(MatchPattern::Exact(san.clone())));
        }
    }
}
