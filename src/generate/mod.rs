//! Pure generators: the index and one proxy in, Envoy resources out.

pub mod cluster;
pub mod consistency;
pub mod context;
pub mod credentials;
pub mod endpoint;
pub mod gateway;
pub mod listener;
pub mod mtls;
pub mod names;
pub mod provenance;
pub mod route;
pub mod route_config;
pub mod security;
pub mod sidecar;
pub mod telemetry;
pub mod traffic_policy;
pub mod virtual_service;

pub use context::PushContext;
