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

use super::mtls::{self, Secure};
use super::{cluster, endpoint, gateway, names, sidecar};
use crate::config::istio::DestinationRule;
use crate::index::scope::{Scope, ScopeId};
use crate::index::{Index, Service};
use crate::model::{NodeType, Proxy};
use crate::store::Entry;
use crate::xds::resource::MapChange;
use crate::xds::{ProxyResources, ResourceMap, Snapshot, TypeUrl};

/// What generation reads of a proxy: proxies equal in these get equal config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProxyClass {
    node_type: NodeType,
    namespace: String,
    labels: BTreeMap<String, String>,
    /// Sent its certificate (authenticated on the TLS port): its clusters may use mTLS.
    secure: bool,
}

pub struct PushContext {
    index: Arc<Index>,
    shared: OnceLock<Shared>,
    by_class: Mutex<HashMap<ProxyClass, Arc<OnceLock<Arc<ProxyResources>>>>>,
    /// Sidecar config per [`sidecar::ProxyKey`] (class, DNS domain, interception mode, the
    /// ports it serves).
    sidecars: Mutex<HashMap<sidecar::ProxyKey, Arc<OnceLock<Arc<ProxyResources>>>>>,
    /// Sidecar cluster maps by scope and the ports the workload serves.
    sidecar_clusters: Mutex<
        HashMap<
            (ScopeId, Vec<sidecar::InboundPort>, bool),
            Arc<OnceLock<(Arc<ResourceMap>, Arc<ResourceMap>)>>,
        >,
    >,
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
    fn shared(&self) -> &Shared {
        self.shared.get_or_init(|| {
            let previous = self.previous();
            Shared::build(&self.index, previous.as_ref().and_then(|p| p.shared.get()))
        })
    }

    /// The shared clusters (their mTLS variant for a `secure` proxy) and endpoints.
    fn with_shared(&self, secure: bool) -> ProxyResources {
        let shared = self.shared();
        let mut r = ProxyResources::default();
        r.by_type[TypeUrl::Cluster.index()] = shared.clusters(secure).clone();
        r.by_type[TypeUrl::ClusterLoadAssignment.index()] = shared.endpoints.clone();
        r.changes[TypeUrl::ClusterLoadAssignment.index()] = shared.endpoints_change.clone();
        r
    }

    fn router(&self, proxy: &Proxy) -> Arc<ProxyResources> {
        let class = ProxyClass {
            node_type: proxy.node_type,
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
            secure: proxy.identity.is_some(),
        };
        let cell = lock(&self.by_class)
            .entry(class.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let selected = gateway::select(&self.index, proxy);
            let built = gateway::build(&self.index, proxy, &selected);
            let before = self
                .previous()
                .and_then(|p| lock(&p.by_class).get(&class).and_then(|c| c.get().cloned()));
            let before = |ty: TypeUrl| before.as_ref().map(|b| b.get(ty).clone());
            let mut r = self.with_shared(class.secure);
            r.by_type[TypeUrl::Listener.index()] =
                share_unchanged(built.listeners, before(TypeUrl::Listener).as_ref());
            r.by_type[TypeUrl::RouteConfiguration.index()] =
                share_unchanged(built.routes, before(TypeUrl::RouteConfiguration).as_ref());
            // Gateway credentials; the server sends them only to a proxy authenticated in the
            // proxy's namespace (`xds::security`).
            r.by_type[TypeUrl::Secret.index()] =
                share_unchanged(built.secrets, before(TypeUrl::Secret).as_ref());
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
            let previous = self.previous();
            let before = previous
                .as_ref()
                .and_then(|p| lock(&p.sidecars).get(&key).and_then(|c| c.get().cloned()));
            if let (Some(p), Some(b)) = (&previous, &before)
                && let Some(kept) = self.endpoints_changed_only(p, b)
            {
                return kept;
            }
            let scope = Scope::of(&self.index, &proxy.namespace, &proxy.labels);
            let mut r = self.with_shared(key.secure);
            let (clusters, endpoints) = self.sidecar_clusters(&scope, &key.inbound, key.secure);
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
                    r.by_type[TypeUrl::Listener.index()] =
                        share_unchanged(built.listeners, before(TypeUrl::Listener).as_ref());
                    r.by_type[TypeUrl::RouteConfiguration.index()] =
                        share_unchanged(built.routes, before(TypeUrl::RouteConfiguration).as_ref());
                }
            }
            Arc::new(r)
        })
        .clone()
    }

    /// `before` (what `previous` built for a sidecar) with this revision's endpoints, when
    /// nothing else it holds can differ: its listeners and routes (`routing_unchanged`), and its
    /// clusters, built from the shared clusters, which did not change. Only for sidecars that
    /// are sent the shared endpoint map (no DestinationRule of their own differs), which is
    /// most: their config is then had without working out their scope again.
    fn endpoints_changed_only(
        &self,
        previous: &PushContext,
        before: &Arc<ProxyResources>,
    ) -> Option<Arc<ProxyResources>> {
        let (now, then) = (self.shared(), previous.shared.get()?);
        let shared_endpoints =
            Arc::ptr_eq(before.get(TypeUrl::ClusterLoadAssignment), &then.endpoints);
        let same_clusters = Arc::ptr_eq(&now.clusters, &then.clusters)
            && Arc::ptr_eq(&now.secure_clusters, &then.secure_clusters);
        if !(shared_endpoints && same_clusters && self.routing_unchanged()) {
            return None;
        }
        let mut r = (**before).clone();
        r.by_type[TypeUrl::ClusterLoadAssignment.index()] = now.endpoints.clone();
        r.changes = Default::default();
        r.changes[TypeUrl::ClusterLoadAssignment.index()] = now.endpoints_change.clone();
        Some(Arc::new(r))
    }

    /// Whether this revision's sidecar listeners and routes equal the previous one's for every
    /// proxy key (an endpoint-only change), decided once per revision.
    fn routing_unchanged(&self) -> bool {
        *self.routing_unchanged.get_or_init(|| {
            self.previous()
                .is_some_and(|p| self.index.same_routing_inputs(&p.index))
        })
    }

    /// Clusters and endpoints for a sidecar: the shared ones the scope sees, those of services
    /// whose DestinationRule differs for it rebuilt, plus [`sidecar::local_clusters`]. One pair
    /// per scope and set of inbound ports: proxies that see every service under the shared
    /// rules and serve the same ports share it, each outbound cluster in it the shared `Arc`,
    /// and the endpoint map the shared one.
    fn sidecar_clusters(
        &self,
        scope: &Scope,
        inbound: &[sidecar::InboundPort],
        secure: bool,
    ) -> (Arc<ResourceMap>, Arc<ResourceMap>) {
        let key = (scope.id.clone(), inbound.to_vec(), secure);
        let cell = lock(&self.sidecar_clusters)
            .entry(key.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let shared = self.shared();
            let (shared_clusters, shared_endpoints) = (shared.clusters(secure), &shared.endpoints);
            let mtls = secure.then_some(Secure {
                trust_domain: &self.index.mesh.trust_domain,
            });
            let before = self.previous().and_then(|p| {
                lock(&p.sidecar_clusters)
                    .get(&key)
                    .and_then(|c| c.get().cloned())
            });
            let mut clusters = match scope.id {
                ScopeId::Everything => (**shared_clusters).clone(),
                ScopeId::Scoped { .. } => shared_clusters
                    .iter()
                    .filter(|(name, _)| {
                        names::outbound_cluster_host(name).is_none_or(|host| scope.sees(host))
                    })
                    .map(|(name, c)| (name.clone(), c.clone()))
                    .collect(),
            };
            let mut endpoints = shared_endpoints.clone();
            if !scope.destination_rules.is_empty() {
                let overridden = |name: &String| {
                    names::outbound_cluster_host(name).is_some_and(|h| {
                        scope.destination_rules.iter().any(|(s, _)| s.hostname == h)
                    })
                };
                clusters.retain(|name, _| !overridden(name));
                let mut own_endpoints = (**shared_endpoints).clone();
                own_endpoints.retain(|name, _| !overridden(name));
                for (service, dr) in &scope.destination_rules {
                    let dr = dr.as_ref().map(|d| d.spec());
                    clusters.extend(cluster::service_clusters(service, dr, mtls));
                    own_endpoints.extend(endpoint::service_assignments(service, dr));
                }
                endpoints = share_unchanged(own_endpoints, before.as_ref().map(|b| &b.1));
            }
            clusters.extend(sidecar::local_clusters(inbound));
            (
                share_unchanged(clusters, before.as_ref().map(|b| &b.0)),
                endpoints,
            )
        })
        .clone()
    }
}

/// Clusters and endpoints of one revision, shared by every proxy, and per service what they
/// were built from, so that the next revision builds again only the services that changed.
struct Shared {
    clusters: Arc<ResourceMap>,
    /// `clusters` with in-mesh mTLS, for proxies sent their certificate: the same `Arc`s but
    /// for the clusters of services that have sidecars or ISTIO_MUTUAL rules.
    secure_clusters: Arc<ResourceMap>,
    endpoints: Arc<ResourceMap>,
    /// How `endpoints` differs from the previous revision's, for the xDS server.
    endpoints_change: Option<Arc<MapChange>>,
    by_service: HashMap<String, Arc<ServiceResources>>,
}

/// One service's clusters and endpoints, and what they were built from.
struct ServiceResources {
    service: Arc<Service>,
    /// The DestinationRule that applied to it.
    rule: Option<Arc<Entry>>,
    clusters: Arc<ResourceMap>,
    secure_clusters: Arc<ResourceMap>,
    endpoints: Arc<ResourceMap>,
}

impl Shared {
    fn clusters(&self, secure: bool) -> &Arc<ResourceMap> {
        if secure {
            &self.secure_clusters
        } else {
            &self.clusters
        }
    }

    /// This revision's, keeping from `before` every service whose service and DestinationRule
    /// are the same, and the maps themselves when nothing in them changed.
    fn build(index: &Index, before: Option<&Shared>) -> Shared {
        let mut by_service = HashMap::with_capacity(index.services.len());
        let (mut stale, mut fresh) = (Vec::new(), Vec::new());
        for (host, service) in &index.services {
            let rule = index.destination_rule(host).map(|r| r.entry.clone());
            let old = before.and_then(|b| b.by_service.get(host));
            let resources = match old {
                Some(old) if old.built_from(service, rule.as_ref()) => old.clone(),
                _ => {
                    let new = Arc::new(ServiceResources::build(
                        service,
                        rule,
                        old.map(|o| &**o),
                        &index.mesh.trust_domain,
                    ));
                    stale.extend(old);
                    fresh.push(new.clone());
                    new
                }
            };
            by_service.insert(host.clone(), resources);
        }
        let Some(before) = before else {
            let all = |f: fn(&ServiceResources) -> &Arc<ResourceMap>| -> ResourceMap {
                fresh
                    .iter()
                    .flat_map(|s| f(s).iter())
                    .map(|(name, r)| (name.clone(), r.clone()))
                    .collect()
            };
            let mut clusters = all(|s| &s.clusters);
            clusters.extend(cluster::always());
            let mut secure_clusters = all(|s| &s.secure_clusters);
            secure_clusters.extend(cluster::always());
            return Shared {
                clusters: Arc::new(clusters),
                secure_clusters: Arc::new(secure_clusters),
                endpoints: Arc::new(all(|s| &s.endpoints)),
                endpoints_change: None,
                by_service,
            };
        };
        stale.extend(
            before
                .by_service
                .iter()
                .filter(|(host, _)| !index.services.contains_key(*host))
                .map(|(_, s)| s),
        );
        let patch = |map: &Arc<ResourceMap>, f: fn(&ServiceResources) -> &Arc<ResourceMap>| {
            if stale.is_empty() && fresh.is_empty() {
                return map.clone();
            }
            let mut patched = (**map).clone();
            for name in stale.iter().flat_map(|s| f(s).keys()) {
                patched.remove(name);
            }
            patched.extend(
                fresh
                    .iter()
                    .flat_map(|s| f(s).iter())
                    .map(|(name, r)| (name.clone(), r.clone())),
            );
            let same = patched.len() == map.len()
                && patched
                    .values()
                    .zip(map.values())
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if same { map.clone() } else { Arc::new(patched) }
        };
        let endpoints = patch(&before.endpoints, |s| &s.endpoints);
        let endpoints_change = (!Arc::ptr_eq(&endpoints, &before.endpoints)).then(|| {
            let stale_names = stale.iter().flat_map(|s| s.endpoints.keys());
            let mut names: Vec<String> = stale_names
                .chain(fresh.iter().flat_map(|s| s.endpoints.keys()))
                .cloned()
                .collect();
            names.sort_unstable();
            names.dedup();
            Arc::new(MapChange {
                from: before.endpoints.clone(),
                to: endpoints.clone(),
                names,
            })
        });
        Shared {
            clusters: patch(&before.clusters, |s| &s.clusters),
            secure_clusters: patch(&before.secure_clusters, |s| &s.secure_clusters),
            endpoints,
            endpoints_change,
            by_service,
        }
    }
}

impl ServiceResources {
    /// Encodes `service`'s clusters and endpoints, keeping `old`'s `Arc` of each that came out
    /// the same.
    fn build(
        service: &Arc<Service>,
        rule: Option<Arc<Entry>>,
        old: Option<&ServiceResources>,
        trust_domain: &str,
    ) -> ServiceResources {
        let dr = rule
            .as_ref()
            .and_then(|r| r.object.spec::<DestinationRule>());
        let clusters = share_unchanged(
            cluster::service_clusters(service, dr, None),
            old.map(|o| &o.clusters),
        );
        // Most services have neither sidecars nor ISTIO_MUTUAL rules: their secure clusters
        // are the plain ones, not encoded twice.
        let secure_clusters = if mtls::may_differ(service, dr) {
            let secure = cluster::service_clusters(service, dr, Some(Secure { trust_domain }));
            share_unchanged(secure, old.map(|o| &o.secure_clusters))
        } else {
            clusters.clone()
        };
        ServiceResources {
            clusters,
            secure_clusters,
            endpoints: share_unchanged(
                endpoint::service_assignments(service, dr),
                old.map(|o| &o.endpoints),
            ),
            service: service.clone(),
            rule,
        }
    }

    /// Whether these are what `service` under `rule` gives: the same service and rule, or
    /// equal ones (a rebuilt index makes new `Arc`s of the same content).
    fn built_from(&self, service: &Arc<Service>, rule: Option<&Arc<Entry>>) -> bool {
        let same_service = Arc::ptr_eq(&self.service, service) || self.service == *service;
        let same_rule = match (&self.rule, rule) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.object == b.object,
            _ => false,
        };
        same_service && same_rule
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `built` with every resource whose content did not change since `before` replaced by
/// `before`'s `Arc`, or `before` itself when nothing changed at all.
fn share_unchanged(mut built: ResourceMap, before: Option<&Arc<ResourceMap>>) -> Arc<ResourceMap> {
    let Some(before) = before else {
        return Arc::new(built);
    };
    let mut all_same = built.len() == before.len();
    for (name, resource) in built.iter_mut() {
        match before.get(name) {
            Some(old) if old.hash == resource.hash => *resource = old.clone(),
            _ => all_same = false,
        }
    }
    if all_same {
        before.clone()
    } else {
        Arc::new(built)
    }
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

    /// Worked out from this revision's index only when a proxy rejects config; see
    /// `provenance`.
    fn sources_of(
        &self,
        proxy: &Proxy,
        type_url: &str,
        names: &[String],
    ) -> Vec<crate::config::ObjectKey> {
        super::provenance::sources(&self.index, proxy, type_url, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::update_tests::{BASE, revisions};
    use crate::model::MeshConfig;

    fn names_and_hashes(map: &ResourceMap) -> Vec<(String, u64)> {
        map.values().map(|r| (r.name.clone(), r.hash)).collect()
    }

    /// The previous revision's context with its shared resources built, and the next one's
    /// built after it; checked equal to the next one built from scratch.
    fn next(upsert: &str) -> (Arc<PushContext>, Arc<PushContext>) {
        let (before, after) = revisions(upsert, &[]);
        let mesh = MeshConfig::default();
        let previous = Arc::new(PushContext::new(Arc::new(Index::build(&before, &mesh))));
        previous.shared();
        let index = Index::build_after(&after, &mesh, previous.index());
        let current = Arc::new(PushContext::after(Arc::new(index), Some(previous.clone())));
        let scratch = PushContext::new(Arc::new(Index::build(&after, &mesh)));
        assert_eq!(
            names_and_hashes(&current.shared().clusters),
            names_and_hashes(&scratch.shared().clusters)
        );
        assert_eq!(
            names_and_hashes(&current.shared().endpoints),
            names_and_hashes(&scratch.shared().endpoints)
        );
        (previous, current)
    }

    #[test]
    fn an_endpoint_change_encodes_only_its_assignment() {
        let grown = BASE.split("---").nth(1).unwrap().replace(
            "endpoints:\n",
            "endpoints:\n- addresses: [10.1.0.9]\n  conditions: {ready: true}\n",
        );
        let (previous, current) = next(&grown);
        let (then, now) = (previous.shared(), current.shared());
        assert!(
            Arc::ptr_eq(&then.clusters, &now.clusters),
            "no cluster changed"
        );
        let changed: Vec<&String> = now
            .endpoints
            .iter()
            .filter(|(name, r)| !Arc::ptr_eq(r, &then.endpoints[*name]))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(changed, ["outbound|9080||reviews.shop.svc.cluster.local"]);
        let hint = now
            .endpoints_change
            .as_ref()
            .expect("the server is told what changed");
        assert!(Arc::ptr_eq(&hint.from, &then.endpoints) && Arc::ptr_eq(&hint.to, &now.endpoints));
        assert_eq!(
            hint.names,
            ["outbound|9080||reviews.shop.svc.cluster.local"]
        );
    }

    #[test]
    fn a_service_change_keeps_the_others_resources() {
        let moved = BASE
            .split("---")
            .nth(3)
            .unwrap()
            .replace("port: 9080", "port: 9081");
        let (previous, current) = next(&moved);
        let (then, now) = (previous.shared(), current.shared());
        assert!(
            now.clusters
                .contains_key("outbound|9081||ratings.shop.svc.cluster.local")
        );
        assert!(
            !now.clusters
                .contains_key("outbound|9080||ratings.shop.svc.cluster.local")
        );
        assert!(
            !now.endpoints
                .contains_key("outbound|9080||ratings.shop.svc.cluster.local")
        );
        let reviews = "outbound|9080||reviews.shop.svc.cluster.local";
        assert!(
            Arc::ptr_eq(&then.clusters[reviews], &now.clusters[reviews]),
            "an unchanged service keeps its encoded cluster"
        );
    }
}
