//! Envoy's Client Status Discovery Service: what each connected proxy was sent and whether it
//! accepted it, read from the connection registry. `status` is the core (registry in,
//! `ClientStatusResponse` out, no transport); `service` puts it on the xDS ports; `table`
//! prints it as `istioctl proxy-status` does.
//!
//! Resource bodies are never included: the registry holds counts, not resources, and a
//! Secret body would carry a private key.

pub mod client;
mod matcher;
pub mod service;
pub mod table;

#[cfg(test)]
mod tests;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::Timestamp;

pub use matcher::{MatcherError, NodeFilter};
pub use service::CsdsService;

use super::connection::{AckState, ConnectionInfo, Connections, TypeStatus};

/// The answer to one CSDS request: every live connection whose node id the request's
/// matchers accept (all of them when it has none).
pub fn status(
    connections: &Connections,
    request: &ClientStatusRequest,
) -> Result<ClientStatusResponse, MatcherError> {
    let filter = NodeFilter::try_from(request.node_matchers.as_slice())?;
    let config = connections
        .list()
        .iter()
        .filter(|c| filter.matches(&c.proxy_id))
        .map(client_config)
        .collect();
    Ok(ClientStatusResponse { config })
}

/// One connection as CSDS shows it: the node, and per type what was sent and how it stands.
pub fn client_config(connection: &ConnectionInfo) -> ClientConfig {
    ClientConfig {
        node: Some(Node {
            id: connection.proxy_id.clone(),
            ..Default::default()
        }),
        generic_xds_configs: connection.types.values().map(generic_config).collect(),
        ..Default::default()
    }
}

/// SYNCED once ACKed, STALE while a response is unanswered, ERROR after a NACK (with Envoy's
/// message), NOT_SENT for a type subscribed to but never answered.
fn generic_config(status: &TypeStatus) -> GenericXdsConfig {
    let (config_status, client_status) = match status.state {
        AckState::None => (ConfigStatus::NotSent, ClientResourceStatus::Requested),
        AckState::Pending => (ConfigStatus::Stale, ClientResourceStatus::Requested),
        AckState::Acked => (ConfigStatus::Synced, ClientResourceStatus::Acked),
        AckState::Nacked => (ConfigStatus::Error, ClientResourceStatus::Nacked),
    };
    // What the proxy runs is the ACKed version; while a response is in flight, show that one
    // (istiod's choice), so STALE names the version being waited on.
    let version_info = match status.state {
        AckState::Pending => status.sent_version.clone(),
        _ => status.acked_version.clone(),
    };
    let nack = status
        .last_nack
        .as_ref()
        .filter(|_| status.state == AckState::Nacked);
    GenericXdsConfig {
        type_url: status.type_url.clone(),
        version_info: version_info.unwrap_or_default(),
        last_updated: nack.map(|n| timestamp(n.at_unix_ms)),
        config_status: config_status as i32,
        client_status: client_status as i32,
        error_state: nack.map(|n| UpdateFailureState {
            last_update_attempt: Some(timestamp(n.at_unix_ms)),
            details: n.error.clone(),
            version_info: n.version.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn timestamp(unix_ms: u64) -> Timestamp {
    Timestamp {
        seconds: (unix_ms / 1000) as i64,
        nanos: ((unix_ms % 1000) * 1_000_000) as i32,
    }
}
