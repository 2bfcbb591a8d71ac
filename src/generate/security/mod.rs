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

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;

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
    SdsSecretConfig { name: name.to_string(), sds_config: Some(ads()) }
}
