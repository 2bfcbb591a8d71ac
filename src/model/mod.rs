//! Domain values shared by the index, the generators and the server.

pub mod host;
pub mod jwks;
pub mod mesh;
pub mod protocol;
pub mod proxy;

pub use mesh::MeshConfig;
pub use protocol::Protocol;
pub use proxy::{NodeType, Proxy, ProxyError};
