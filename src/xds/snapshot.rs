//! The narrow interface the server depends on: a watched, consistent snapshot of config that
//! answers "what does this proxy get". The server knows nothing of Istio; the generators know
//! nothing of gRPC.

use std::sync::Arc;

use tokio::sync::watch;

use super::ProxyResources;
use crate::model::Proxy;

pub trait Snapshot: Send + Sync + 'static {
    /// Grows with each snapshot published (logs, debug output).
    fn revision(&self) -> u64;

    /// The full config of one proxy. Proxies that generate the same config get the same `Arc`.
    fn resources_for(&self, proxy: &Proxy) -> Arc<ProxyResources>;
}

/// How the server receives new snapshots.
pub type SnapshotRx = watch::Receiver<Arc<dyn Snapshot>>;
