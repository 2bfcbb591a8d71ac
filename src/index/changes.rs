//! Whether two revisions differ in anything sidecar listeners and route configs are built from.
//!
//! Most revisions change endpoints only (pods come and go). Those leave every listener and
//! route config as it was, so a new revision can keep the previous one's instead of building
//! them again for every proxy class and finding them equal.

use std::sync::Arc;

use super::{Index, Service, Typed};
use crate::config::{Kind, KindSpec};

impl Index {
    /// Whether sidecar listeners and route configs built from `self` equal those built from
    /// `previous` for the same proxy key: the same mesh config, VirtualServices,
    /// DestinationRules, Sidecars, security policies and fetched JWKS, and services equal but
    /// for their endpoints. (Which
    /// ports a workload serves is part of the proxy key, not compared here.)
    pub fn same_routing_inputs(&self, previous: &Index) -> bool {
        self.mesh == previous.mesh
            && (Arc::ptr_eq(&self.jwks, &previous.jwks) || self.jwks == previous.jwks)
            && [
                Kind::PeerAuthentication,
                Kind::AuthorizationPolicy,
                Kind::RequestAuthentication,
                Kind::Telemetry,
            ]
            .into_iter()
            .all(|k| same_kind(self.snapshot(), previous.snapshot(), k))
            && same_entries(&self.virtual_services, &previous.virtual_services)
            && same_typed(&self.sidecars, &previous.sidecars)
            && self.destination_rules.len() == previous.destination_rules.len()
            && self.destination_rules.iter().all(|(host, rules)| {
                previous
                    .destination_rules
                    .get(host)
                    .is_some_and(|p| same_typed(rules, p))
            })
            && self.services.len() == previous.services.len()
            && self
                .services
                .values()
                .zip(previous.services.values())
                .all(|(a, b)| same_shape(a, b))
    }
}

/// The same objects of `kind`, by pointer (a snapshot shares a kind's map until it changes) or
/// by content.
fn same_kind(a: &crate::store::Snapshot, b: &crate::store::Snapshot, kind: Kind) -> bool {
    a.same_kind(b, kind)
        || a.entries(kind)
            .map(|e| &e.object)
            .eq(b.entries(kind).map(|e| &e.object))
}

fn same_entries(a: &[Arc<crate::store::Entry>], b: &[Arc<crate::store::Entry>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(x, y) || x.object == y.object)
}

fn same_typed<T: KindSpec>(a: &[Typed<T>], b: &[Typed<T>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(&x.entry, &y.entry) || x.entry.object == y.entry.object)
}

/// Everything of a service but its endpoints.
fn same_shape(a: &Service, b: &Service) -> bool {
    a.hostname == b.hostname
        && a.namespace == b.namespace
        && a.origin == b.origin
        && a.ports == b.ports
        && a.resolution == b.resolution
        && a.addresses == b.addresses
        && a.mesh_external == b.mesh_external
        && a.export_to == b.export_to
}

#[cfg(test)]
mod tests {

    use crate::index::Index;

    fn index(yaml: &str) -> Index {
        Index::from_yaml(yaml)
    }

    const BASE: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.0.0.1, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: shop, labels: {app: reviews}}
spec: {containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
";

    #[test]
    fn an_endpoint_change_keeps_the_routing_inputs_and_others_do_not() {
        let before = index(BASE);
        assert!(
            index(&BASE.replace("10.1.0.1", "10.1.0.2")).same_routing_inputs(&before),
            "a pod moved"
        );
        assert!(
            !index(&BASE.replace("clusterIP: 10.0.0.1", "clusterIP: 10.0.0.9"))
                .same_routing_inputs(&before)
        );
        assert!(!index(&BASE.replace("port: 9080", "port: 9081")).same_routing_inputs(&before));
        assert!(
            !index(&BASE.replace("hosts: [reviews]", "hosts: [reviews, ratings]"))
                .same_routing_inputs(&before)
        );
        let with_rule = format!(
            "{BASE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: shop}}\nspec: {{host: reviews}}\n"
        );
        assert!(!index(&with_rule).same_routing_inputs(&before));
    }
}
