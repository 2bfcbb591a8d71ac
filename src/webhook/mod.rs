//! istiod's validating admission webhook: the API server asks pilotfish, over HTTPS on 15017,
//! whether an Istio object may be written, and gets the answer `pilotfish validate` gives.
//!
//! [`admission`] decides (pure), [`server`] serves it over TLS with a certificate from
//! [`crate::ca`], and [`ca_bundle`] keeps the ValidatingWebhookConfiguration trusting that CA.

pub mod admission;
pub mod ca_bundle;
pub mod server;

/// The Service the webhook is reached through (istiod's).
pub const DEFAULT_SERVICE: &str = "istiod";
pub const DEFAULT_NAMESPACE: &str = "istio-system";
/// istiod's name for its revision's ValidatingWebhookConfiguration: `istio-validator-<ns>`.
pub const DEFAULT_CONFIG_NAME: &str = "istio-validator-istio-system";

/// The names the API server may use for the Service: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`
/// and `<svc>.<ns>.svc.<domain suffix>` (it dials `<svc>.<ns>.svc`).
pub fn service_dns_names(service: &str, namespace: &str, domain_suffix: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{domain_suffix}"),
    ]
}
