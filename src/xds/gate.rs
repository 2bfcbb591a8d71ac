//! Make-before-break across types within one push.
//!
//! Envoy applies each response as it arrives, so a route to a cluster added by the same push
//! must not arrive before that cluster's endpoints: Envoy would route to a cluster still warming
//! and answer 503 "no cluster" (the xDS protocol's "eventual consistency considerations": CDS,
//! then EDS for new clusters, then LDS, then RDS). Envoy asks for a new cluster's endpoints only
//! after applying CDS, so a push that adds EDS clusters goes out in two stages: CDS and EDS at
//! once, then LDS, RDS and SDS once the proxy has answered that CDS and been sent the new
//! clusters' endpoints. The wait is state of the connection loop, not an await: the requests
//! that end it must keep being served. It is bounded, so a proxy that never subscribes (it
//! rejected the cluster) still gets the rest of its config.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::connection::AckState;
use super::held;
use super::stream::Protocol;
use super::{ProxyResources, Resource, TypeUrl};

/// How long the rest of a push waits for the proxy to subscribe to new clusters' endpoints.
pub(crate) const HOLD_TIMEOUT: Duration = Duration::from_secs(5);

/// What goes out at once: clusters, and endpoints of those the proxy already watches.
const FIRST: [TypeUrl; 2] = [TypeUrl::Cluster, TypeUrl::ClusterLoadAssignment];
/// What waits for new clusters to be warmable: everything that may route to them.
const SECOND: [TypeUrl; 3] = [
    TypeUrl::Listener,
    TypeUrl::RouteConfiguration,
    TypeUrl::Secret,
];

/// The second stage of a push, waiting for the proxy.
#[derive(Debug)]
struct HeldPush {
    /// What the proxy had of the held types: every push since then is held too, and the
    /// newest snapshot goes out on release, diffed against this.
    base: Arc<ProxyResources>,
    /// New EDS clusters sent by the held pushes: cluster name → the EDS name it watches.
    clusters: BTreeMap<String, String>,
    since: Instant,
    /// Fixed at the first held push, so a stream of changes cannot hold the rest forever.
    deadline: Instant,
}

/// Orders one connection's pushes; at most one push is held at a time.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    held: Option<HeldPush>,
}

impl Gate {
    /// Pushes a new snapshot (`previous` is what the proxy had): CDS and EDS now, the rest now
    /// or, when new EDS clusters went out, once [`Gate::poll`] finds the proxy ready.
    pub fn push<P: Protocol>(
        &mut self,
        protocol: &mut P,
        previous: &Arc<ProxyResources>,
        resources: &Arc<ProxyResources>,
        now: Instant,
        out: &mut Vec<P::Response>,
    ) {
        let unheld = unheld_clusters(protocol, previous, resources);
        protocol.on_push(previous, resources, &FIRST, out);
        let added = sent_eds_clusters(protocol, unheld);
        match &mut self.held {
            Some(held) => {
                debug!(
                    added = added.len(),
                    "push superseded a held one; still holding LDS/RDS"
                );
                held.clusters.extend(added);
            }
            None if added.is_empty() => protocol.on_push(previous, resources, &SECOND, out),
            None => {
                debug!(clusters = ?added.keys().collect::<Vec<_>>(),
                    "holding LDS/RDS until the new clusters' endpoints are sent");
                self.held = Some(HeldPush {
                    base: Arc::clone(previous),
                    clusters: added,
                    since: now,
                    deadline: now + HOLD_TIMEOUT,
                });
            }
        }
    }

    /// When a held push gives up waiting, if one is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.deadline)
    }

    /// Sends the held stage if the proxy is ready for it or the deadline has passed. Call after
    /// every request and when the deadline fires.
    pub fn poll<P: Protocol>(
        &mut self,
        protocol: &mut P,
        resources: &Arc<ProxyResources>,
        now: Instant,
        out: &mut Vec<P::Response>,
    ) {
        let Some(held) = &self.held else { return };
        let waiting = waiting_for(protocol, held, resources);
        if waiting.is_empty() {
            debug!(waited = ?now - held.since, "new clusters are warmable; releasing LDS/RDS");
        } else if now >= held.deadline {
            warn!(waiting = ?waiting, timeout = ?HOLD_TIMEOUT,
                "proxy never took the endpoints of new clusters; sending LDS/RDS anyway");
        } else {
            return;
        }
        if let Some(held) = self.held.take() {
            protocol.on_push(&held.base, resources, &SECOND, out);
        }
    }
}

/// Clusters the proxy selects in `resources` but does not hold: the ones this push adds.
/// Empty when CDS did not change or was never answered (its first request will carry all).
fn unheld_clusters<'a, P: Protocol>(
    protocol: &P,
    previous: &ProxyResources,
    resources: &'a ProxyResources,
) -> Vec<&'a Arc<Resource>> {
    let map = resources.get(TypeUrl::Cluster);
    match protocol.type_state(TypeUrl::Cluster) {
        Some(cds)
            if cds.status.sent_nonce.is_some()
                && !Arc::ptr_eq(previous.get(TypeUrl::Cluster), map) =>
        {
            held::added(cds.sent_map(), map, &cds.subscription)
        }
        _ => Vec::new(),
    }
}

/// Of `candidates`, the EDS clusters that went out, with the name each watches in EDS.
fn sent_eds_clusters<P: Protocol>(
    protocol: &P,
    candidates: Vec<&Arc<Resource>>,
) -> BTreeMap<String, String> {
    let Some(cds) = protocol.type_state(TypeUrl::Cluster) else {
        return BTreeMap::new();
    };
    candidates
        .into_iter()
        .filter(|c| cds.holds(&c.name))
        .filter_map(|c| Some((c.name.clone(), eds_name(c)?)))
        .collect()
}

/// The EDS resource an EDS cluster watches (`service_name`, else its own name); `None` for
/// other discovery types, which warm without EDS.
fn eds_name(cluster: &Resource) -> Option<String> {
    let c = match cluster.decode::<Cluster>() {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::global().internal_errors.inc();
            warn!(cluster = %cluster.name, error = %e, "undecodable cluster; not waiting for it");
            return None;
        }
    };
    if c.cluster_discovery_type != Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
        return None;
    }
    let service = c
        .eds_cluster_config
        .map(|e| e.service_name)
        .unwrap_or_default();
    Some(if service.is_empty() { c.name } else { service })
}

/// What the held stage still waits for: the CDS answer, and each new cluster (still sent)
/// whose endpoints are not subscribed and sent. Empty when ready.
fn waiting_for<P: Protocol>(
    protocol: &P,
    held: &HeldPush,
    resources: &ProxyResources,
) -> Vec<String> {
    let Some(cds) = protocol.type_state(TypeUrl::Cluster) else {
        return Vec::new();
    };
    if cds.status.state == AckState::Pending {
        return vec!["CDS ACK".to_string()];
    }
    let eds = protocol.type_state(TypeUrl::ClusterLoadAssignment);
    let ready = |name: &str| {
        eds.is_some_and(|eds| {
            // A name missing from the snapshot has nothing to send: subscribing is all.
            let sent = eds.holds(name) || !eds.map(resources).contains_key(name);
            eds.subscription.covers(name) && sent
        })
    };
    held.clusters
        .iter()
        .filter(|(cluster, name)| cds.holds(cluster) && !ready(name))
        .map(|(_, name)| name.clone())
        .collect()
}

#[cfg(test)]
mod internal_error_tests {
    use super::*;

    #[test]
    fn an_undecodable_cluster_counts_as_an_internal_error() {
        let errors = &crate::metrics::global().internal_errors;
        let before = errors.get();
        let garbage = Resource {
            name: "c".into(),
            hash: 0,
            any: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert_eq!(eds_name(&garbage), None);
        assert_eq!(errors.get() - before, 1);
    }
}
