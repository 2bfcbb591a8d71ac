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
