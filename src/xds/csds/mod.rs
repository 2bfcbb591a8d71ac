//! Envoy's Client Status Discovery Service: what each connected proxy was sent and whether it
//! accepted it, read from the connection registry. `status` is the core (registry and snapshot
//! in, `ClientStatusResponse` out, no transport); `service` puts it on the xDS ports; `table`
//! prints it as `istioctl proxy-status` does; `client` is the CLI's side.
//!
//! Without `exclude_resource_contents`, each resource the proxy gets from the current snapshot
//! is its own `GenericXdsConfig` with its body, as Envoy's own CSDS lists them; `bodies`
//! redacts secrets. Per-connection workload certificates are not in the snapshot and never
//! listed.

mod bodies;
pub mod client;
mod matcher;
pub mod proxy_config;
pub mod service;
pub mod table;
mod tabwriter;

#[cfg(test)]
mod tests;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::{Struct, Timestamp, Value, value::Kind};

pub use bodies::{BodyError, REDACTED};
pub use matcher::{MatcherError, NodeFilter};
pub use service::CsdsService;

use super::connection::{AckState, ConnectionInfo, Connections, TypeStatus};
use super::{Snapshot, TypeUrl};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    /// One of our own resources did not decode: a bug, not bad input.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// The answer to one CSDS request: every live connection whose node id the request's
/// matchers accept (all of them when it has none). `snapshot` is where bodies come from; with
/// none, or when the request excludes contents, each type is one body-less entry.
pub fn status(
    connections: &Connections,
    snapshot: Option<&dyn Snapshot>,
    request: &ClientStatusRequest,
) -> Result<ClientStatusResponse, StatusError> {
    let filter = NodeFilter::try_from(request.node_matchers.as_slice())?;
    let bodies = snapshot.filter(|_| !request.exclude_resource_contents);
    let config = connections
        .matching(|c| filter.matches(&c.proxy_id))
        .iter()
        .map(|c| client_config(c, bodies))
        .collect::<Result<_, _>>()?;
    Ok(ClientStatusResponse { config })
}

/// One connection as CSDS shows it: the node (id and the metadata `proxy-status` prints), and
/// per type what was sent and how it stands; with `bodies`, per resource.
pub fn client_config(
    connection: &ConnectionInfo,
    bodies: Option<&dyn Snapshot>,
) -> Result<ClientConfig, BodyError> {
    let resources = bodies.map(|s| s.resources_for(&connection.proxy));
    let mut configs = Vec::new();
    for status in connection.types.values() {
        let entry = generic_config(status);
        let ty = TypeUrl::from_url(&status.type_url);
        match (ty, &resources) {
            (Some(ty), Some(resources)) if !resources.get(ty).is_empty() => {
                for resource in resources.get(ty).values() {
                    configs.push(GenericXdsConfig {
                        name: resource.name.clone(),
                        xds_config: Some(bodies::body(ty, resource)?),
                        ..entry.clone()
                    });
                }
            }
            _ => configs.push(entry),
        }
    }
    Ok(ClientConfig {
        node: Some(node(connection)),
        generic_xds_configs: configs,
        ..Default::default()
    })
}

fn node(connection: &ConnectionInfo) -> Node {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let fields = [
        ("CLUSTER_ID", &connection.cluster_id),
        ("ISTIO_VERSION", &connection.istio_version),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), string(v)))
    .collect();
    Node {
        id: connection.proxy_id.clone(),
        cluster: connection.proxy.cluster.clone(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// SYNCED once ACKed, STALE while a response is unanswered, ERROR after a NACK (with Envoy's
/// message), NOT_SENT for a type subscribed to but never answered. `last_updated` is when the
/// state began: the ACK, the response sent, the NACK.
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
    let last_updated = match status.state {
        AckState::None => None,
        AckState::Pending => status.sent_at_unix_ms,
        AckState::Acked => status.acked_at_unix_ms,
        AckState::Nacked => nack.map(|n| n.at_unix_ms),
    };
    GenericXdsConfig {
        type_url: status.type_url.clone(),
        version_info: version_info.unwrap_or_default(),
        last_updated: last_updated.map(timestamp),
        config_status: config_status as i32,
        client_status: client_status as i32,
        error_state: nack.map(|n| UpdateFailureState {
            last_update_attempt: Some(timestamp(n.at_unix_ms)),
            details: n.detail(),
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
