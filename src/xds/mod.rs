//! The xDS server: ADS over gRPC, State-of-the-World and delta.

pub mod resource;
pub mod snapshot;

pub use resource::{ProxyResources, Resource, ResourceMap, TypeUrl};
pub use snapshot::{Snapshot, SnapshotRx};
