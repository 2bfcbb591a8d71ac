//! The index: services and the policies that apply to them, built from one store snapshot.
//!
//! Building is pure and synchronous (a snapshot in, an immutable `Index` out), like istiod's
//! PushContext; generators read it and never touch the store.

mod changes;
mod delegate;
pub mod scope;
pub mod security;
pub mod services;
mod services_by_ip;
pub mod telemetry;
pub mod visibility;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::istio::{DestinationRule, Gateway, Sidecar, VirtualService};
use crate::config::{Kind, KindSpec};
use crate::diagnostic::Diagnostic;
use crate::model::MeshConfig;
use crate::model::jwks::JwksKeys;
use crate::store::{Entry, Snapshot};

pub use references::unserved_gateway_server;
pub use services::{Endpoint, Resolution, Service, ServicePort};
pub use services_by_ip::ServicesByIp;

/// An object of a known kind, with typed access to its spec.
#[derive(Debug, Clone)]
pub struct Typed<T> {
    pub entry: Arc<Entry>,
    spec: std::marker::PhantomData<fn() -> T>,
}

impl<T: KindSpec> Typed<T> {
    fn new(entry: &Arc<Entry>) -> Option<Self> {
        T::from_spec(&entry.object.spec)?;
        Some(Typed {
            entry: entry.clone(),
            spec: std::marker::PhantomData,
        })
    }

    pub fn spec(&self) -> &T {
        // `new` checked the kind, and entries never change.
        T::from_spec(&self.entry.object.spec)
            .unwrap_or_else(|| unreachable!("kind checked in Typed::new"))
    }

    pub fn namespace(&self) -> &str {
        &self.entry.object.meta.namespace
    }

    pub fn name(&self) -> &str {
        &self.entry.object.meta.name
    }

    /// `namespace/name`, as Gateways are referred to.
    pub fn ns_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}

pub struct Index {
    pub revision: u64,
    pub mesh: MeshConfig,
    /// Every service by hostname.
    pub services: BTreeMap<String, Arc<Service>>,
    /// The services each endpoint IP backs, in hostname order: what a sidecar at that IP serves.
    pub services_by_ip: ServicesByIp,
    pub gateways: Vec<Typed<Gateway>>,
    /// Every VirtualService, in namespace/name order.
    pub virtual_services: Vec<Arc<Entry>>,
    /// The VirtualServices for sidecars, in namespace/name order.
    pub mesh_virtual_services: Vec<Arc<scope::MeshVirtualService>>,
    /// Every label key a mesh VirtualService's `sourceLabels` names: the only labels sidecar
    /// routes depend on.
    pub source_label_keys: std::collections::BTreeSet<String>,
    /// Sidecar resources, in namespace/name order.
    pub sidecars: Vec<Typed<Sidecar>>,
    /// VirtualServices bound to each Gateway (`ns/name`), in namespace/name order.
    pub virtual_services_by_gateway: HashMap<String, Vec<Typed<VirtualService>>>,
    /// DestinationRules by the FQDN of their host, the one that applies first.
    pub destination_rules: HashMap<String, Vec<Typed<DestinationRule>>>,
    /// Problems between objects (missing hosts, subsets, gateways); each object alone was valid.
    pub diagnostics: Vec<Diagnostic>,
    /// Where the diagnostics of `references::check_endpoints` start: the last, and the only
    /// ones an endpoint change can change.
    endpoint_diagnostics_from: usize,
    /// The snapshot this was built from, for [`Index::build_after`] to see what changed.
    snapshot: Snapshot,
    /// The JWKS fetched for RequestAuthentications' `jwksUri`s so far (set by the push
    /// pipeline; generation inlines them).
    pub jwks: Arc<JwksKeys>,
}

impl Index {
    /// The index of a YAML text under istiod's default mesh config, for tests.
    #[cfg(test)]
    pub fn from_yaml(yaml: &str) -> Index {
        Index::build(&Snapshot::from_yaml(yaml), &MeshConfig::default())
    }

    pub fn build(snapshot: &Snapshot, mesh: &MeshConfig) -> Index {
        let mut diagnostics = Vec::new();
        let services = services::build(snapshot, mesh, &mut diagnostics);

        let gateways: Vec<Typed<Gateway>> = snapshot
            .entries(Gateway::KIND)
            .filter_map(Typed::new)
            .collect();

        let virtual_services = with_delegates_merged(snapshot, mesh, &mut diagnostics);
        let mut virtual_services_by_gateway: HashMap<String, Vec<Typed<VirtualService>>> =
            HashMap::new();
        for vs in virtual_services
            .iter()
            .filter_map(Typed::<VirtualService>::new)
        {
            for gw in &vs.spec().gateways {
                if gw == "mesh" {
                    continue;
                }
                virtual_services_by_gateway
                    .entry(gateway_ref(gw, vs.namespace()))
                    .or_default()
                    .push(vs.clone());
            }
        }

        // Per host, one rule per namespace (istiod merges a namespace's rules for a host), in the
        // order a shared gateway consults them: the service's namespace, the root namespace,
        // then the rest by name.
        let mut destination_rules: HashMap<String, Vec<Typed<DestinationRule>>> = HashMap::new();
        for dr in snapshot
            .entries(DestinationRule::KIND)
            .filter_map(Typed::<DestinationRule>::new)
        {
            let host = mesh.fqdn(&dr.spec().host, dr.namespace()).into_owned();
            destination_rules.entry(host).or_default().push(dr);
        }
        for (host, rules) in destination_rules.iter_mut() {
            let svc_ns = services
                .get(host)
                .map(|s| s.namespace.clone())
                .unwrap_or_default();
            let root = mesh.root_namespace.clone();
            rules.sort_by_key(|r| (r.namespace() != svc_ns, r.namespace() != root, r.ns_name()));
            *rules = merge_same_namespace(std::mem::take(rules));
        }

        let services_by_ip = ServicesByIp::build(services.values());

        let mesh_virtual_services = scope::mesh_virtual_services(mesh, &virtual_services);
        let index = Index {
            revision: snapshot.revision,
            source_label_keys: mesh_virtual_services
                .iter()
                .flat_map(|vs| scope::source_label_keys(vs.spec()))
                .cloned()
                .collect(),
            mesh_virtual_services,
            mesh: mesh.clone(),
            services,
            services_by_ip,
            gateways,
            virtual_services,
            sidecars: snapshot
                .entries(Sidecar::KIND)
                .filter_map(Typed::new)
                .collect(),
            virtual_services_by_gateway,
            endpoint_diagnostics_from: 0,
            destination_rules,
            diagnostics,
            snapshot: snapshot.clone(),
            jwks: Arc::default(),
        };
        let mut index = index;
        let routing = references::check_routing(&index);
        index.diagnostics.extend(routing);
        index.endpoint_diagnostics_from = index.diagnostics.len();
        index
            .diagnostics
            .extend(references::check_endpoints(&index));
        index
    }

    /// The index of `snapshot`, from `previous` when only Pods and EndpointSlices changed since
    /// it was built (most revisions of a cluster: pods come and go): then only the services
    /// those changes touch are built again, and everything else is `previous`'s, `Arc`s
    /// included. Anything else changed, it is [`Index::build`].
    pub fn build_after(snapshot: &Snapshot, mesh: &MeshConfig, previous: &Index) -> Index {
        let endpoints_only = Kind::ALL
            .into_iter()
            .filter(|k| !matches!(k, Kind::Pod | Kind::EndpointSlice))
            .all(|k| snapshot.same_kind(&previous.snapshot, k));
        if !endpoints_only || *mesh != previous.mesh {
            return Index::build(snapshot, mesh);
        }
        let (services, changed) =
            services::update(&previous.services, &previous.snapshot, snapshot, mesh);
        let mut services_by_ip = previous.services_by_ip.clone();
        for host in &changed {
            services_by_ip.replace(previous.services.get(host), services.get(host));
        }
        let mut index = Index {
            revision: snapshot.revision,
            mesh: previous.mesh.clone(),
            services,
            services_by_ip,
            gateways: previous.gateways.clone(),
            virtual_services: previous.virtual_services.clone(),
            mesh_virtual_services: previous.mesh_virtual_services.clone(),
            source_label_keys: previous.source_label_keys.clone(),
            sidecars: previous.sidecars.clone(),
            virtual_services_by_gateway: previous.virtual_services_by_gateway.clone(),
            destination_rules: previous.destination_rules.clone(),
            diagnostics: previous.diagnostics[..previous.endpoint_diagnostics_from].to_vec(),
            endpoint_diagnostics_from: previous.endpoint_diagnostics_from,
            snapshot: snapshot.clone(),
            jwks: previous.jwks.clone(),
        };
        index
            .diagnostics
            .extend(references::check_endpoints(&index));
        index
    }

    /// The DestinationRule that applies to a host for a gateway (the first by precedence).
    pub fn destination_rule(&self, host: &str) -> Option<&Typed<DestinationRule>> {
        self.destination_rules
            .get(host)
            .and_then(|rules| rules.first())
    }

    /// The DestinationRule that applies to a host for a sidecar in `namespace`, as istiod looks
    /// it up: the proxy's namespace, then the service's, then the root namespace, each only if
    /// exported to the proxy's namespace.
    pub fn destination_rule_for(
        &self,
        namespace: &str,
        host: &str,
    ) -> Option<&Typed<DestinationRule>> {
        let rules = self.destination_rules.get(host)?;
        let service_ns = self.services.get(host).map(|s| s.namespace.as_str());
        let visible = |r: &&Typed<DestinationRule>| {
            visibility::ExportTo::parse(
                &r.spec().export_to,
                r.namespace(),
                &self.mesh.default_destination_rule_export_to,
            )
            .visible_to(namespace)
        };
        [
            Some(namespace),
            service_ns,
            Some(self.mesh.root_namespace.as_str()),
        ]
        .into_iter()
        .flatten()
        .find_map(|ns| rules.iter().filter(|r| r.namespace() == ns).find(visible))
    }

    pub fn service(&self, host: &str) -> Option<&Arc<Service>> {
        self.services.get(host)
    }

    /// The store snapshot this index was built from (policies are read from it directly).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// A Kubernetes Secret, for gateway credentials (`credentialName`).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&crate::config::kube::Secret> {
        let key = crate::config::ObjectKey {
            kind: Kind::Secret,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.snapshot
            .get(&key)?
            .object
            .spec::<crate::config::kube::Secret>()
    }
}

/// Every VirtualService of the snapshot, in namespace/name order, a root one with its delegates'
/// routes merged in (`delegate.rs`).
fn with_delegates_merged(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Arc<Entry>> {
    let find = |namespace: &str, name: &str| {
        let key = crate::config::ObjectKey {
            kind: VirtualService::KIND,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let entry = snapshot.get(&key)?;
        let spec = entry.object.spec::<VirtualService>()?;
        let export_to = visibility::ExportTo::parse(
            &spec.export_to,
            namespace,
            &mesh.default_virtual_service_export_to,
        );
        Some(delegate::DelegateSource { spec, export_to })
    };
    snapshot
        .entries(VirtualService::KIND)
        .map(|entry| {
            let Some(spec) = entry.object.spec::<VirtualService>() else {
                return entry.clone();
            };
            match delegate::merge(spec, &entry.object.key(), mesh, find, diagnostics) {
                Some(merged) => entry.with_spec(crate::config::Spec::VirtualService(merged)),
                None => entry.clone(),
            }
        })
        .collect()
}

/// istiod's `mergeDestinationRule`, per namespace: the rules for one host in one namespace
/// become the first of them (in precedence order) with the others' subsets it does not have
/// added, and its traffic policy kept (a later rule's fills it only when it has none).
fn merge_same_namespace(rules: Vec<Typed<DestinationRule>>) -> Vec<Typed<DestinationRule>> {
    let mut out: Vec<Typed<DestinationRule>> = Vec::new();
    let mut merged: Vec<Option<DestinationRule>> = Vec::new();
    for rule in rules {
        let Some(i) = out.iter().position(|r| r.namespace() == rule.namespace()) else {
            out.push(rule);
            merged.push(None);
            continue;
        };
        let into = merged[i].get_or_insert_with(|| out[i].spec().clone());
        let spec = rule.spec();
        for subset in &spec.subsets {
            if !into.subsets.iter().any(|s| s.name == subset.name) {
                into.subsets.push(subset.clone());
            }
        }
        if into.traffic_policy.is_none() {
            into.traffic_policy = spec.traffic_policy.clone();
        }
    }
    for (rule, spec) in out.iter_mut().zip(merged) {
        let Some(spec) = spec else { continue };
        if let Some(typed) = Typed::new(
            &rule
                .entry
                .with_spec(crate::config::Spec::DestinationRule(spec)),
        ) {
            *rule = typed;
        }
    }
    out
}

/// Resolves a VirtualService's `gateways` entry to `ns/name`: a bare name is in the
/// VirtualService's own namespace.
pub fn gateway_ref(gateway: &str, vs_namespace: &str) -> String {
    if gateway.contains('/') {
        gateway.to_string()
    } else {
        format!("{vs_namespace}/{gateway}")
    }
}

mod references;
mod sidecar_references;
#[cfg(test)]
pub(crate) mod update_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::istio::destination_rule::SimpleLb;

    fn index(yaml: &str) -> Index {
        Index::from_yaml(yaml)
    }

    const RULES: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: c, namespace: istio-system}
spec:
  host: reviews.shop.svc.cluster.local
  subsets: [{name: v3, labels: {version: v3}}]
";

    #[test]
    fn rules_in_one_namespace_merge_as_istiod_merges_them() {
        let index = index(RULES);
        let dr = index
            .destination_rule("reviews.shop.svc.cluster.local")
            .unwrap();
        let spec = dr.spec();
        let subsets: Vec<(&str, &str)> = spec
            .subsets
            .iter()
            .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
            .collect();
        // The first rule's v1 wins over the second's; v2 is added; the other namespace's v3 is not.
        assert_eq!(subsets, vec![("v1", "v1"), ("v2", "v2")]);
        let lb = spec
            .traffic_policy
            .as_ref()
            .and_then(|p| p.load_balancer.as_ref())
            .and_then(|l| l.simple);
        assert_eq!(
            lb,
            Some(SimpleLb::RoundRobin),
            "the first rule's policy stays"
        );
        assert_eq!(dr.name(), "a");
    }

    #[test]
    fn without_a_service_the_root_namespace_rule_applies_first() {
        // No Service names the host, so no service namespace: the root namespace's rule comes
        // first (what istiod picks for a gateway proxy in istio-system), and is not merged with
        // rules of other namespaces.
        let index = index(&RULES.replacen("kind: Service", "kind: ServiceAccount", 1));
        let dr = index
            .destination_rule("reviews.shop.svc.cluster.local")
            .unwrap();
        assert_eq!(dr.name(), "c");
        assert_eq!(dr.spec().subsets.len(), 1);
    }

    #[test]
    fn conflicting_mesh_virtual_services_are_named() {
        let vs = |name: &str, ns: &str, host: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  http: [{{route: [{{destination: {{host: {host}}}}}]}}]\n"
            )
        };
        let yaml = format!(
            "{}{}{}{}",
            vs("a", "shop", "reviews.shop.svc.cluster.local"),
            vs("b", "shop", "reviews"),
            vs("c", "other", "reviews"),
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: other}\nspec: {ports: [{name: http, port: 80}]}\n"
        );
        let found: Vec<String> = index(&yaml)
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    d.object.as_ref().unwrap().name,
                    d.field,
                    d.message
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                "b spec.hosts[0] host reviews.shop.svc.cluster.local is also routed for sidecars by VirtualService shop/a; sidecars that see both use only that one"
            ]
        );
    }

    #[test]
    fn unserved_gateway_servers_are_named_once() {
        let index = index(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: cert}\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: AUTO_PASSTHROUGH}\n",
        );
        let found: Vec<String> = index
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.field, d.message))
            .collect();
        assert_eq!(
            found,
            [
                "spec.servers[2].tls.mode AUTO_PASSTHROUGH is not served yet; the server on port 15443 is not served"
            ]
        );
    }
}
