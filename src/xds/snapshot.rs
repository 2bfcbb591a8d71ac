//! The narrow interface the server depends on: a watched, consistent snapshot of config that
//! answers "what does this proxy get". The server knows nothing of Istio; the generators know
//! nothing of gRPC.

use std::sync::Arc;

use tokio::sync::watch;

use super::ProxyResources;
use crate::config::ObjectKey;
use crate::model::Proxy;

pub trait Snapshot: Send + Sync + 'static {
    /// Grows with each snapshot published (logs, debug output).
    fn revision(&self) -> u64;

    /// The full config of one proxy. Proxies that generate the same config get the same `Arc`.
    fn resources_for(&self, proxy: &Proxy) -> Arc<ProxyResources>;

    /// The objects the resources `names` of `type_url` sent to `proxy` were generated from,
    /// for a NACK of them; asked only when a proxy rejects config. Snapshots that do not know
    /// where their resources came from (tests) name none.
    fn sources_of(&self, proxy: &Proxy, type_url: &str, names: &[String]) -> Vec<ObjectKey> {
        let _ = (proxy, type_url, names);
        Vec::new()
    }
}

/// How the server receives new snapshots.
pub type SnapshotRx = watch::Receiver<Arc<dyn Snapshot>>;
