//! One revision's config, as the xDS server asks for it: `resources_for(proxy)`.
//!
//! Clusters and endpoints are built once per revision and shared by every proxy; listeners and
//! routes are built once per proxy class (type, namespace, labels: all that generation reads of
//! a proxy) and shared by every proxy of the class. A thousand replicas of a gateway cost one
//! generation.
//!
//! A new revision keeps the previous revision's `Arc`s for whatever did not change — each
//! unchanged resource, and a whole type's map when none of it changed — so the server finds
//! what changed for a proxy by pointer, without comparing thousands of names per connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use super::{cluster, endpoint, gateway, names, sidecar};
use crate::index::scope::{Scope, ScopeId};
use crate::index::Index;
use crate::model::{NodeType, Proxy};
use crate::xds::{ProxyResources, ResourceMap, Snapshot, TypeUrl};

/// What generation reads of a proxy: proxies equal in these get equal config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProxyClass {
    node_type: NodeType,
    namespace: String,
    labels: BTreeMap<String, String>,
}

pub struct PushContext {
    index: Arc<Index>,
    shared: OnceLock<(Arc<ResourceMap>, Arc<ResourceMap>)>,
    by_class: Mutex<HashMap<ProxyClass, Arc<OnceLock<Arc<ProxyResources>>>>>,
    /// Sidecar config per [`sidecar::ProxyKey`] (class, DNS domain, interception mode, the
    /// ports it serves).
    sidecars: Mutex<HashMap<sidecar::ProxyKey, Arc<OnceLock<Arc<ProxyResources>>>>>,
    /// Sidecar cluster maps by scope and the ports the workload serves.
    sidecar_clusters: Mutex<HashMap<(ScopeId, Vec<sidecar::InboundPort>), Arc<OnceLock<(Arc<ResourceMap>, Arc<ResourceMap>)>>>>,
    /// See [`PushContext::routing_unchanged`].
    routing_unchanged: OnceLock<bool>,
    /// The revision before this one, whose `Arc`s unchanged resources keep. Only one level is
    /// kept: creating a context takes its predecessor's own `previous` away.
    previous: Mutex<Option<Arc<PushContext>>>,
}

impl PushContext {
    pub fn new(index: Arc<Index>) -> PushContext {
        PushContext::after(index, None)
    }

    /// A context for a new revision that shares what did not change with `previous`.
    pub fn after(index: Arc<Index>, previous: Option<Arc<PushContext>>) -> PushContext {
        if let Some(p) = &previous {
            lock(&p.previous).take();
        }
        PushContext {
            index,
            shared: OnceLock::new(),
            by_class: Mutex::default(),
            sidecars: Mutex::default(),
            sidecar_clusters: Mutex::default(),
            routing_unchanged: OnceLock::new(),
            previous: Mutex::new(previous),
        }
    }

    fn previous(&self) -> Option<Arc<PushContext>> {
        lock(&self.previous).clone()
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Clusters and endpoints of this revision.
    fn shared(&self) -> &(Arc<ResourceMap>, Arc<ResourceMap>) {
        self.shared.get_or_init(|| {
            let before = self.previous();
            let before = before.as_ref().and_then(|p| p.shared.get());
            (
                share_unchanged(cluster::build_all(&self.index), before.map(|b| &b.0)),
                share_unchanged(endpoint::build_all(&self.index), before.map(|b| &b.1)),
            )
        })
    }

    fn with_shared(&self) -> ProxyResources {
        let (clusters, endpoints) = self.shared();
        let mut r = ProxyResources::default();
        r.by_type[TypeUrl::Cluster.index()] = clusters.clone();
        r.by_type[TypeUrl::ClusterLoadAssignment.index()] = endpoints.clone();
        r
    }

    fn router(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        let class = ProxyClass {
            node_type: proxy.node_type,
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
        };
        let cell = lock(&self.by_class).entry(class.clone()).or_default().clone();
        cell.get_or_init(|| {
            let selected = gateway::select(&self.index, proxy);
            let built = gateway::build(&self.index, proxy, &selected);
            let before = self.previous().and_then(|p| lock(&p.by_class).get(&class).and_then(|c| c.get().cloned()));
            let before = |ty: TypeUrl| before.as_ref().map(|b| b.get(ty).clone());
            let mut r = self.with_shared();
            r.by_type[TypeUrl::Listener.index()] = share_unchanged(built.listeners, before(TypeUrl::Listener).as_ref());
            r.by_type[TypeUrl::RouteConfiguration.index()] =
                share_unchanged(built.routes, before(TypeUrl::RouteConfiguration).as_ref());
            Arc::new(r)
        })
        .clone()
    }
}

impl PushContext {
    /// Shared endpoints, the shared clusters with this proxy's local ones, and what
    /// [`sidecar::build`] makes for it.
    fn sidecar(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        let key = sidecar::ProxyKey::of(&self.index, proxy);
        let cell = lock(&self.sidecars).entry(key.clone()).or_default().clone();
        cell.get_or_init(|| {
            let scope = Scope::of(&self.index, &proxy.namespace, &proxy.labels);
            let before = self.previous().and_then(|p| lock(&p.sidecars).get(&key).and_then(|c| c.get().cloned()));
            let mut r = self.with_shared();
            let (clusters, endpoints) = self.sidecar_clusters(&scope, &key.inbound);
            r.by_type[TypeUrl::Cluster.index()] = clusters;
            r.by_type[TypeUrl::ClusterLoadAssignment.index()] = endpoints;
            match before.clone().filter(|_| self.routing_unchanged()) {
                // Nothing listeners and routes are built from changed: keep the previous ones.
                Some(b) => {
                    for ty in [TypeUrl::Listener, TypeUrl::RouteConfiguration] {
                        r.by_type[ty.index()] = b.get(ty).clone();
                    }
                }
                None => {
                    let built = sidecar::build(&self.index, proxy, &key, &scope);
                    let before = |ty: TypeUrl| before.as_ref().map(|b| b.get(ty).clone());
                    r.by_type[TypeUrl::Listener.index()] = share_unchanged(built.listeners, before(TypeUrl::Listener).as_ref());
                    r.by_type[TypeUrl::RouteConfiguration.index()] =
                        share_unchanged(built.routes, before(TypeUrl::RouteConfiguration).as_ref());
                }
            }
            Arc::new(r)
        })
        .clone()
    }

    /// Whether this revision's sidecar listeners and routes equal the previous one's for every
    /// proxy key (an endpoint-only change), decided once per revision.
    fn routing_unchanged(&self) -> bool {
        *self.routing_unchanged.get_or_init(|| self.previous().is_some_and(|p| self.index.same_routing_inputs(&p.index)))
    }

    /// Clusters and endpoints for a sidecar: the shared ones the scope sees, those of services
    /// whose DestinationRule differs for it rebuilt, plus [`sidecar::local_clusters`]. One pair
    /// per scope and set of inbound ports: proxies that see every service under the shared
    /// rules and serve the same ports share it, each outbound cluster in it the shared `Arc`,
    /// and the endpoint map the shared one.
    fn sidecar_clusters(&self, scope: &Scope, inbound: &[sidecar::InboundPort]) -> (Arc<ResourceMap>, Arc<ResourceMap>) {
        let key = (scope.id.clone(), inbound.to_vec());
        let cell = lock(&self.sidecar_clusters).entry(key.clone()).or_default().clone();
        cell.get_or_init(|| {
            let (shared_clusters, shared_endpoints) = self.shared();
            let before = self.previous().and_then(|p| lock(&p.sidecar_clusters).get(&key).and_then(|c| c.get().cloned()));
            let mut clusters = match scope.id {
                ScopeId::Everything => (**shared_clusters).clone(),
                ScopeId::Scoped { .. } => shared_clusters
                    .iter()
                    .filter(|(name, _)| names::outbound_cluster_host(name).is_none_or(|host| scope.sees(host)))
                    .map(|(name, c)| (name.clone(), c.clone()))
                    .collect(),
            };
            let mut endpoints = shared_endpoints.clone();
            if !scope.destination_rules.is_empty() {
                let overridden = |name: &String| {
                    names::outbound_cluster_host(name).is_some_and(|h| scope.destination_rules.iter().any(|(s, _)| s.hostname == h))
                };
                clusters.retain(|name, _| !overridden(name));
                let mut own_endpoints = (**shared_endpoints).clone();
                own_endpoints.retain(|name, _| !overridden(name));
                for (service, dr) in &scope.destination_rules {
                    let dr = dr.as_ref().map(|d| d.spec());
                    clusters.extend(cluster::service_clusters(service, dr));
                    own_endpoints.extend(endpoint::service_assignments(service, dr));
                }
                endpoints = share_unchanged(own_endpoints, before.as_ref().map(|b| &b.1));
            }
            clusters.extend(sidecar::local_clusters(inbound));
            (share_unchanged(clusters, before.as_ref().map(|b| &b.0)), endpoints)
        })
        .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `built` with every resource whose content did not change since `before` replaced by
/// `before`'s `Arc`, or `before` itself when nothing changed at all.
fn share_unchanged(mut built: ResourceMap, before: Option<&Arc<ResourceMap>>) -> Arc<ResourceMap> {
    let Some(before) = before else { return Arc::new(built) };
    let mut all_same = built.len() == before.len();
    for (name, resource) in built.iter_mut() {
        match before.get(name) {
            Some(old) if old.hash == resource.hash => *resource = old.clone(),
            _ => all_same = false,
        }
    }
    if all_same { before.clone() } else { Arc::new(built) }
}

impl Snapshot for PushContext {
    fn revision(&self) -> u64 {
        self.index.revision
    }

    fn resources_for(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        match proxy.node_type {
            NodeType::Router => self.router(proxy),
            NodeType::Sidecar => self.sidecar(proxy),
        }
    }
}
