//! istiod's HTTP debug endpoints (`/debug/syncz`, `configz`, `adsz`, `registryz`,
//! `endpointShardz`, `config_dump`, `push_status`), served on the status port.
//!
//! Each endpoint's JSON is built by a function over plain values (connections, a store
//! snapshot, the index's services, a push) in its own module, so it is tested without a
//! server; [`routes`] only reads the current values and answers.

pub mod access;
pub mod adsz;
pub mod config_dump;
pub mod configz;
pub mod endpoint_shardz;
pub mod push_status;
pub mod registryz;
pub mod routes;
pub mod syncz;
mod time;

use std::sync::Arc;

use tokio::sync::watch;

use crate::debug::json::JsonError;
use crate::push::Pushed;
use crate::store;
use crate::xds::Connections;

pub use routes::router;

/// What the debug endpoints read, all of it live.
#[derive(Clone)]
pub struct Sources {
    /// The store's published snapshots (`configz`).
    pub store: watch::Receiver<Arc<store::Snapshot>>,
    /// The last push; `None` until the config is first loaded.
    pub pushes: watch::Receiver<Option<Pushed>>,
    pub connections: Arc<Connections>,
    /// `--debug-remote`: answer clients that are not on loopback too.
    pub remote: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("the config is not loaded yet: nothing has been pushed")]
    NotLoaded,
    #[error("query parameter proxyID is required: the node id of a connected proxy")]
    MissingProxyId,
    #[error(
        "proxy {0:?} is not connected to this pilotfish; it may be connected to another replica"
    )]
    UnknownProxy(String),
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("serializing {object}: {source}")]
    Serialize {
        object: String,
        source: serde_json::Error,
    },
}
