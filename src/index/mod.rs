//! The index: services and the policies that apply to them, built from one store snapshot.
//!
//! Building is pure and synchronous (a snapshot in, an immutable `Index` out), like istiod's
//! PushContext; generators read it and never touch the store.

pub mod services;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::istio::{DestinationRule, Gateway, VirtualService};
use crate::config::KindSpec;
use crate::diagnostic::Diagnostic;
use crate::model::MeshConfig;
use crate::store::{Entry, Snapshot};

pub use services::{Endpoint, Resolution, Service, ServicePort};

/// An object of a known kind, with typed access to its spec.
#[derive(Debug, Clone)]
pub struct Typed<T> {
    pub entry: Arc<Entry>,
    spec: std::marker::PhantomData<fn() -> T>,
}

impl<T: KindSpec> Typed<T> {
    fn new(entry: &Arc<Entry>) -> Option<Self> {
        T::from_spec(&entry.object.spec)?;
        Some(Typed { entry: entry.clone(), spec: std::marker::PhantomData })
    }

    pub fn spec(&self) -> &T {
        // `new` checked the kind, and entries never change.
        T::from_spec(&self.entry.object.spec).unwrap_or_else(|| unreachable!("kind checked in Typed::new"))
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
    pub gateways: Vec<Typed<Gateway>>,
    /// VirtualServices bound to each Gateway (`ns/name`), in namespace/name order.
    pub virtual_services_by_gateway: HashMap<String, Vec<Typed<VirtualService>>>,
    /// DestinationRules by the FQDN of their host, the one that applies first.
    pub destination_rules: HashMap<String, Vec<Typed<DestinationRule>>>,
    /// Problems between objects (missing hosts, subsets, gateways); each object alone was valid.
    pub diagnostics: Vec<Diagnostic>,
}

impl Index {
    pub fn build(snapshot: &Snapshot, mesh: &MeshConfig) -> Index {
        let mut diagnostics = Vec::new();
        let services = services::build(snapshot, mesh, &mut diagnostics);

        let gateways: Vec<Typed<Gateway>> =
            snapshot.entries(Gateway::KIND).filter_map(Typed::new).collect();

        let mut virtual_services_by_gateway: HashMap<String, Vec<Typed<VirtualService>>> = HashMap::new();
        for vs in snapshot.entries(VirtualService::KIND).filter_map(Typed::<VirtualService>::new) {
            for gw in &vs.spec().gateways {
                if gw == "mesh" {
                    continue;
                }
                virtual_services_by_gateway.entry(gateway_ref(gw, vs.namespace())).or_default().push(vs.clone());
            }
        }

        // A DestinationRule in the root namespace applies to a host only where no rule in the
        // service's own namespace does (istiod's lookup order for a shared gateway's clusters).
        let mut destination_rules: HashMap<String, Vec<Typed<DestinationRule>>> = HashMap::new();
        for dr in snapshot.entries(DestinationRule::KIND).filter_map(Typed::<DestinationRule>::new) {
            let host = mesh.fqdn(&dr.spec().host, dr.namespace()).into_owned();
            destination_rules.entry(host).or_default().push(dr);
        }
        for (host, rules) in destination_rules.iter_mut() {
            let svc_ns = services.get(host).map(|s| s.namespace.clone()).unwrap_or_default();
            let root = mesh.root_namespace.clone();
            rules.sort_by_key(|r| (r.namespace() != svc_ns, r.namespace() != root, r.ns_name()));
        }

        let index = Index {
            revision: snapshot.revision,
            mesh: mesh.clone(),
            services,
            gateways,
            virtual_services_by_gateway,
            destination_rules,
            diagnostics,
        };
        let mut index = index;
        index.diagnostics.extend(references::check(&index));
        index
    }

    /// The DestinationRule that applies to a host (the first by precedence).
    pub fn destination_rule(&self, host: &str) -> Option<&Typed<DestinationRule>> {
        self.destination_rules.get(host).and_then(|rules| rules.first())
    }

    pub fn service(&self, host: &str) -> Option<&Arc<Service>> {
        self.services.get(host)
    }
}

/// Resolves a VirtualService's `gateways` entry to `ns/name`: a bare name is in the
/// VirtualService's own namespace.
pub fn gateway_ref(gateway: &str, vs_namespace: &str) -> String {
    if gateway.contains('/') { gateway.to_string() } else { format!("{vs_namespace}/{gateway}") }
}

mod references;
