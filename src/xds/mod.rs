//! The xDS server: ADS over gRPC, State-of-the-World and delta.
//!
//! `resource` and `snapshot` are the core (encoded resources, the watch interface); `state`,
//! `sotw` and `delta` decide what to send and `gate` when, with no transport in them; `codec`,
//! `service`, `stream` and `server` put it on the wire; `connection` is what the outside world
//! can see.

mod body;
pub mod codec;
pub mod connection;
pub mod csds;
pub mod debug_types;
mod delta;
mod gate;
mod held;
pub mod reflection;
mod requests;
pub mod resource;
pub mod security;
pub mod server;
pub mod service;
pub mod snapshot;
mod sotw;
mod state;
mod stream;
mod subscription;

#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod tests;

pub use codec::{DeltaResponse, SotwResponse};
pub use connection::{
    AckState, ConnectionInfo, Connections, Nack, SubscriptionStatus, TypeStatus, Variant,
};
pub use resource::{ProxyResources, Resource, ResourceMap, TypeUrl};
pub use security::{Authenticate, IdentitySecrets, IssueSecrets, Peer, Security};
pub use server::{RunningServer, serve};
pub use service::AdsService;
pub use snapshot::{Snapshot, SnapshotRx};

/// Errors of the xDS server. Protocol errors a client causes end its stream with a gRPC
/// status instead; they never reach here.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("binding the xDS listener on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("xDS server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("xDS server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
