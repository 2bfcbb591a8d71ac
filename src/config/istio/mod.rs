//! Typed specs of the Istio kinds: `networking.istio.io` (v1alpha3, v1beta1 and v1 share one
//! schema), `security.istio.io` and `telemetry.istio.io`.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod security;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
pub mod virtual_service;

pub use common::{Duration, Percent, Port, PortSelector, StringMatch, WorkloadSelector};
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use sidecar::Sidecar;
pub use telemetry::Telemetry;
pub use virtual_service::VirtualService;
