//! Checks istiod's validating webhook makes, per kind.
//!
//! [`validate`] returns every problem found in one object, so a user fixes them in one pass.
//! Errors mean the object is rejected (the previous good version, if any, keeps being served);
//! warnings are served. Semantics follow istiod's `pkg/config/validation` and the CEL rules of
//! Istio's CRDs; field paths are exact (`spec.http[2].match[0].uri.regex`).

mod authorization_policy;
mod common;
mod destination_rule;
mod gateway;
mod http_route;
mod kube;
mod policy_target;
mod security;
mod service_entry;
mod sidecar;
mod telemetry;
mod unreachable;
mod virtual_service;

#[cfg(test)]
mod tests;

use crate::config::{Object, Spec};
use crate::diagnostic::Diagnostic;

use common::{Diags, is_k8s_label, is_k8s_subdomain};
/// Cipher suites Envoy accepts: generation drops the others, as istiod's `FilterCipherSuites`.
pub(crate) use gateway::CIPHER_SUITES;

/// Rejects any object carrying it; istiod's switch for testing the webhook path.
const ALWAYS_REJECT: &str = "istio.io/alwaysReject";
/// Only AuthorizationPolicy may carry it; istiod rejects it elsewhere.
const DRY_RUN: &str = "istio.io/dry-run";

/// Every error and warning for `object`, each naming the object and the offending field.
pub fn validate(object: &Object) -> Vec<Diagnostic> {
    let mut out = Diags::default();
    validate_meta(object, &mut out);
    let ns = object.meta.namespace.as_str();
    match &object.spec {
        Spec::Gateway(g) => gateway::validate(&object.meta.name, g, &mut out),
        Spec::VirtualService(vs) => virtual_service::validate(ns, vs, &mut out),
        Spec::DestinationRule(dr) => destination_rule::validate(ns, dr, &mut out),
        Spec::ServiceEntry(se) => service_entry::validate(ns, se, &mut out),
        Spec::WorkloadEntry(we) => service_entry::validate_workload_entry(we, &mut out),
        Spec::Sidecar(sc) => sidecar::validate(ns, sc, &mut out),
        Spec::PeerAuthentication(pa) => security::validate_peer_authentication(pa, &mut out),
        Spec::AuthorizationPolicy(ap) => authorization_policy::validate(ap, &mut out),
        Spec::RequestAuthentication(ra) => security::validate_request_authentication(ra, &mut out),
        Spec::Telemetry(t) => telemetry::validate(t, &mut out),
        Spec::Service(_)
        | Spec::EndpointSlice(_)
        | Spec::Pod(_)
        | Spec::Namespace
        | Spec::ConfigMap(_)
        | Spec::Secret(_) => kube::validate(object, &mut out),
    }
    let key = object.key();
    out.0.into_iter().map(|d| d.on(&key)).collect()
}

/// What the API server checks of every object's metadata, plus istiod's annotation checks.
/// Names of the Kubernetes kinds are checked per kind in [`kube`].
fn validate_meta(object: &Object, out: &mut Diags) {
    let meta = &object.meta;
    let istio = object.kind().group_versions().0.ends_with(".istio.io");
    if istio && !is_k8s_subdomain(&meta.name) {
        out.error(
            "metadata.name",
            format!("{:?} is not a valid name: lower-case alphanumerics, '-' and '.', at most 253 characters", meta.name),
        );
    }
    if object.kind().is_namespaced() && !meta.namespace.is_empty() && !is_k8s_label(&meta.namespace)
    {
        out.error(
            "metadata.namespace",
            format!(
                "{:?} is not a valid namespace name (DNS-1123 label)",
                meta.namespace
            ),
        );
    }
    if meta.annotations.contains_key(ALWAYS_REJECT) {
        out.error(
            format!("metadata.annotations.{ALWAYS_REJECT}"),
            format!("{ALWAYS_REJECT:?} annotation found, rejecting"),
        );
    }
    if let Some(value) = meta.annotations.get(DRY_RUN) {
        let at = format!("metadata.annotations.{DRY_RUN}");
        match &object.spec {
            Spec::AuthorizationPolicy(ap) => out.check(at, authorization_policy::validate_dry_run(value, ap.action)),
            _ if istio => out.error(
                at,
                format!("unsupported annotation {DRY_RUN} (only AuthorizationPolicy supports it), please remove the annotation"),
            ),
            _ => {}
        }
    }
}
