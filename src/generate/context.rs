//! One revision's config, as the xDS server asks for it: `resources_for(proxy)`.
//!
//! Clusters and endpoints are built once per revision and shared by every proxy; listeners and
//! routes are built once per proxy class (type, namespace, labels: all that generation reads of
//! a proxy) and shared by every proxy of the class. A thousand replicas of a gateway cost one
//! generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use super::{cluster, endpoint, gateway};
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
    sidecar: OnceLock<Arc<ProxyResources>>,
}

impl PushContext {
    pub fn new(index: Arc<Index>) -> PushContext {
        PushContext { index, shared: OnceLock::new(), by_class: Mutex::default(), sidecar: OnceLock::new() }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Clusters and endpoints of this revision.
    fn shared(&self) -> &(Arc<ResourceMap>, Arc<ResourceMap>) {
        self.shared.get_or_init(|| {
            (Arc::new(cluster::build_all(&self.index)), Arc::new(endpoint::build_all(&self.index)))
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
        let cell = {
            let mut cache = self.by_class.lock().unwrap_or_else(|p| p.into_inner());
            cache.entry(class).or_default().clone()
        };
        cell.get_or_init(|| {
            let selected = gateway::select(&self.index, proxy);
            let built = gateway::build(&self.index, proxy, &selected);
            let mut r = self.with_shared();
            r.set(TypeUrl::Listener, built.listeners);
            r.set(TypeUrl::RouteConfiguration, built.routes);
            Arc::new(r)
        })
        .clone()
    }
}

impl Snapshot for PushContext {
    fn revision(&self) -> u64 {
        self.index.revision
    }

    fn resources_for(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        match proxy.node_type {
            NodeType::Router => self.router(proxy),
            // Sidecar listeners come with the sidecar generator; until then a sidecar gets the
            // outbound clusters and their endpoints.
            NodeType::Sidecar => self.sidecar.get_or_init(|| Arc::new(self.with_shared())).clone(),
        }
    }
}
