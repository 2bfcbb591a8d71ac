//! Typed specs of the `networking.istio.io` kinds, as their served versions
//! (v1alpha3, v1beta1, v1) share one schema.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use common::{Duration, Percent, Port, PortSelector, StringMatch, WorkloadSelector};
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
