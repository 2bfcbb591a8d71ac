//! The registry of live xDS connections: what each proxy subscribed to, was sent, ACKed and
//! rejected. It is the debug surface (`Serialize`) and what tests assert on; connection tasks
//! publish a fresh copy of their state after every event, readers never touch a stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::sync::{broadcast, watch};

use crate::config::ObjectKey;
use crate::model::Proxy;

/// Which ADS flavour a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Sotw,
    Delta,
}

/// What a proxy asked for, for one type, in brief: the registry keeps one copy per connection,
/// so it holds counts, never the names (a gateway subscribes to every EDS cluster by name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionStatus {
    /// Every resource of the type, whatever `names` says.
    pub wildcard: bool,
    /// How many resources the proxy asked for by name.
    pub names: usize,
}

/// Where the last response of a type stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckState {
    /// Nothing sent yet.
    #[default]
    None,
    /// Sent, no answer yet.
    Pending,
    Acked,
    Nacked,
}

/// A rejected response, kept after later ACKs so the debug surface shows the last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The version the proxy rejected.
    pub version: String,
    pub nonce: String,
    /// `error_detail.message` as Envoy sent it.
    pub error: String,
    /// The resources carried by the rejected response.
    pub resources: Vec<String>,
    /// The objects the rejected resources came from (`VirtualService default/reviews`).
    pub sources: Vec<String>,
    pub at_unix_ms: u64,
}

impl Nack {
    /// Envoy's error followed by the objects behind it: `… (from VirtualService default/reviews,
    /// DestinationRule default/reviews)`, as CSDS and `proxy-status` show it.
    pub fn detail(&self) -> String {
        if self.sources.is_empty() {
            self.error.clone()
        } else {
            format!("{} (from {})", self.error, self.sources.join(", "))
        }
    }
}

/// A NACK traced to the objects behind it, as published to [`Connections::subscribe_rejections`]
/// (the leader turns these into Kubernetes Events and status conditions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub proxy_id: String,
    pub type_url: String,
    /// `error_detail.message` as Envoy sent it.
    pub error: String,
    pub sources: Vec<ObjectKey>,
}

/// Rejections a slow subscriber may lag behind before it misses some (it is told how many).
const REJECTIONS_BUFFER: usize = 1024;

/// The state of one type on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    pub type_url: String,
    pub subscription: SubscriptionStatus,
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub state: AckState,
    pub last_nack: Option<Nack>,
    /// How many resources of the type the proxy holds from us.
    pub resources: usize,
    pub responses: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Requests ignored because their nonce was not the last one sent.
    pub stale: u64,
    /// When the last response of the type went out (CSDS `last_updated` while it is pending).
    pub sent_at_unix_ms: Option<u64>,
    /// When the proxy last ACKed the type (CSDS `last_updated` once it is synced).
    pub acked_at_unix_ms: Option<u64>,
}

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub proxy_id: String,
    /// Node metadata `CLUSTER_ID`: the proxy's Kubernetes cluster (`proxy-status` CLUSTER).
    pub cluster_id: String,
    /// Node metadata `ISTIO_VERSION` (`proxy-status` VERSION).
    pub istio_version: String,
    pub peer: Option<String>,
    pub variant: Variant,
    pub connected_at_unix_ms: u64,
    /// By type URL.
    pub types: BTreeMap<String, TypeStatus>,
    /// The proxy as the stream generates for it (metadata, labels, identity), so debug views
    /// compute exactly its config; shared with the stream, one `Arc` per connection.
    #[serde(skip)]
    pub proxy: Arc<Proxy>,
}

impl ConnectionInfo {
    pub fn type_status(&self, type_url: &str) -> Option<&TypeStatus> {
        self.types.get(type_url)
    }
}

/// Live connections, shared by the server and whoever reads them.
#[derive(Debug)]
pub struct Connections {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, ConnectionInfo>>,
    /// Bumped on every change, so readers (tests, a debug stream) can wait instead of poll.
    generation: watch::Sender<u64>,
    rejections: broadcast::Sender<Rejection>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            next_id: AtomicU64::new(1),
            live: Mutex::default(),
            generation: watch::Sender::new(0),
            rejections: broadcast::Sender::new(REJECTIONS_BUFFER),
        }
    }
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections::default())
    }

    /// Every live connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.matching(|_| true)
    }

    /// The live connections `keep` accepts, cloned: only those are copied out of the lock.
    pub fn matching(&self, mut keep: impl FnMut(&ConnectionInfo) -> bool) -> Vec<ConnectionInfo> {
        self.lock().values().filter(|c| keep(c)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The newest live connection of a proxy.
    pub fn by_proxy(&self, proxy_id: &str) -> Option<ConnectionInfo> {
        self.lock()
            .values()
            .rev()
            .find(|c| c.proxy_id == proxy_id)
            .cloned()
    }

    /// A receiver that changes whenever any connection's state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Every NACK from now on, traced to its objects.
    pub fn subscribe_rejections(&self) -> broadcast::Receiver<Rejection> {
        self.rejections.subscribe()
    }

    /// Publishes a traced NACK; with no subscriber it is only logged and counted.
    pub(crate) fn reject(&self, rejection: Rejection) {
        let _ = self.rejections.send(rejection);
    }

    /// Waits until `pred` holds for the registry (tests, readiness checks).
    pub async fn wait_for(&self, mut pred: impl FnMut(&Connections) -> bool) {
        let mut rx = self.subscribe();
        while !pred(self) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn register(
        self: &Arc<Self>,
        proxy: Arc<Proxy>,
        peer: Option<String>,
        variant: Variant,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let istio_version = proxy.metadata.istio_version.clone();
        let info = ConnectionInfo {
            id,
            proxy_id: proxy.id.clone(),
            cluster_id: proxy.metadata.cluster_id.clone(),
            istio_version: istio_version.clone(),
            peer,
            variant,
            connected_at_unix_ms: unix_ms(SystemTime::now()),
            types: BTreeMap::new(),
            proxy,
        };
        self.lock().insert(id, info);
        self.bump();
        crate::metrics::global().xds_clients_add(&istio_version, 1);
        Registration {
            connections: Arc::clone(self),
            id,
            istio_version,
        }
    }

    /// A poisoned lock only means a reader panicked mid-clone; the map itself is intact.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ConnectionInfo>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Serialize for Connections {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list().serialize(s)
    }
}

/// A connection's entry; dropping it (the stream ended) removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    connections: Arc<Connections>,
    id: u64,
    /// The `version` label this connection counts under in `pilot_xds`.
    istio_version: String,
}

impl Registration {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// See [`Connections::reject`].
    pub(crate) fn reject(&self, rejection: Rejection) {
        self.connections.reject(rejection);
    }

    pub(crate) fn update(&self, types: BTreeMap<String, TypeStatus>) {
        let changed = match self.connections.lock().get_mut(&self.id) {
            Some(info) if info.types != types => {
                info.types = types;
                true
            }
            _ => false,
        };
        if changed {
            self.connections.bump();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        self.connections.bump();
        crate::metrics::global().xds_clients_add(&self.istio_version, -1);
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lives_as_long_as_the_stream() {
        let conns = Connections::new();
        let version = "registration_lives_as_long_as_the_stream";
        let mut proxy = Proxy::from_id("sidecar~1~a.b~b.svc.cluster.local").unwrap();
        proxy.metadata.istio_version = version.into();
        proxy.metadata.cluster_id = "east".into();
        let reg = conns.register(Arc::new(proxy), None, Variant::Sotw);
        assert_eq!(
            crate::metrics::global().xds_clients(version),
            1,
            "pilot_xds counts the connection"
        );
        let mut types = BTreeMap::new();
        types.insert(
            "t".to_string(),
            TypeStatus {
                responses: 2,
                ..Default::default()
            },
        );
        reg.update(types);
        let info = conns.by_proxy("sidecar~1~a.b~b.svc.cluster.local").unwrap();
        assert_eq!(info.types["t"].responses, 2);
        assert_eq!(info.cluster_id, "east");
        assert_eq!(info.istio_version, version);
        assert_eq!(info.proxy.namespace, "b", "the stream's proxy is kept");
        let json = serde_json::to_value(&*conns).unwrap();
        assert_eq!(json[0]["variant"], "sotw");
        assert_eq!(json[0]["cluster_id"], "east");
        assert_eq!(json[0]["types"]["t"]["state"], "none");
        drop(reg);
        assert!(conns.is_empty());
        assert_eq!(crate::metrics::global().xds_clients(version), 0);
    }
}
