//! istiod's in-band debug types, asked for over ADS like any resource type (what
//! `istioctl x proxy-status --xds-address` and pilot-agent's debug port send):
//!
//! - `istio.io/debug/syncz`: one `envoy.service.status.v3.ClientConfig` per connected proxy,
//!   as CSDS reports it (no bodies);
//! - `istio.io/debug/config_dump` with `resource_names: [proxy id]`: that proxy's Envoy admin
//!   `ConfigDump`, its sections as unnamed resources (istiod's `AnyToUnnamedResources`).
//!
//! They are answered from the registry and the snapshot and leave the stream's own types alone:
//! no subscription, no ACK tracking; an ACK of a debug response is ignored. A caller
//! authenticated on the TLS port sees only proxies of its own namespace (istiod restricts
//! non-system callers alike); the plaintext port shows what its CSDS service shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::{
    ClustersConfigDump, ConfigDump, EndpointsConfigDump, ListenersConfigDump, RoutesConfigDump,
    SecretsConfigDump, clusters_config_dump, endpoints_config_dump, listeners_config_dump,
    routes_config_dump, secrets_config_dump,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::status::v3::ClientConfig;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::codec::SotwResponse;
use super::connection::Connections;
use super::csds::{self, BodyError};
use super::resource::hash_bytes;
use super::{Resource, Snapshot, TypeUrl};

pub const SYNCZ: &str = "istio.io/debug/syncz";
pub const CONFIG_DUMP: &str = "istio.io/debug/config_dump";

#[derive(Debug, thiserror::Error)]
pub enum DebugTypeError {
    #[error("{CONFIG_DUMP}: resource_names must hold exactly one proxy id, got {0}")]
    ProxyIds(usize),
    #[error("{CONFIG_DUMP}: proxy {0:?} is not connected to this control plane")]
    UnknownProxy(String),
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Whether `type_url` is one of the debug types this module answers.
pub fn is_debug(type_url: &str) -> bool {
    type_url == SYNCZ || type_url == CONFIG_DUMP
}

/// Who asks: everything (plaintext port) or the proxies of one namespace.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Namespace(&'a str),
}

/// The response to one debug request, or `None` for an ACK or NACK of an earlier one (they
/// carry its nonce and need no answer).
pub(crate) fn respond(
    request: &DiscoveryRequest,
    connections: &Connections,
    snapshot: &dyn Snapshot,
    scope: Scope<'_>,
    nonce: String,
) -> Option<Result<SotwResponse, DebugTypeError>> {
    if !request.response_nonce.is_empty() {
        return None;
    }
    let resources = match request.type_url.as_str() {
        SYNCZ => Ok(syncz(connections, scope)),
        _ => config_dump(&request.resource_names, connections, snapshot, scope),
    };
    Some(resources.map(|resources| SotwResponse {
        version_info: String::new(),
        resources,
        type_url: request.type_url.clone(),
        nonce,
        control_plane: None,
    }))
}

fn visible(scope: Scope<'_>, namespace: &str) -> bool {
    match scope {
        Scope::All => true,
        Scope::Namespace(ns) => ns == namespace,
    }
}

/// A resource carrying `message` as its `Any`, named `name` (empty: unnamed).
fn resource<M: Message + Name>(name: &str, message: &M) -> Arc<Resource> {
    Arc::new(Resource::encode(name, message))
}

fn syncz(connections: &Connections, scope: Scope<'_>) -> Vec<Arc<Resource>> {
    connections
        .list()
        .iter()
        .filter(|c| visible(scope, &c.proxy.namespace))
        .filter_map(|c| csds::client_config(c, None).ok())
        .map(|config| {
            let id = config
                .node
                .as_ref()
                .map(|n| n.id.clone())
                .unwrap_or_default();
            resource(&id, &config)
        })
        .collect()
}

fn config_dump(
    names: &[String],
    connections: &Connections,
    snapshot: &dyn Snapshot,
    scope: Scope<'_>,
) -> Result<Vec<Arc<Resource>>, DebugTypeError> {
    let [proxy_id] = names else {
        return Err(DebugTypeError::ProxyIds(names.len()));
    };
    let connection = connections
        .by_proxy(proxy_id)
        .filter(|c| visible(scope, &c.proxy.namespace))
        .ok_or_else(|| DebugTypeError::UnknownProxy(proxy_id.clone()))?;
    let config = csds::client_config(&connection, Some(snapshot))?;
    Ok(dump(&config)
        .configs
        .into_iter()
        .map(|section| {
            let any = section.encode_to_vec();
            Arc::new(Resource {
                name: String::new(),
                hash: hash_bytes(&any),
                any: any.into(),
            })
        })
        .collect())
}

/// A CSDS `ClientConfig` with bodies as Envoy's admin `ConfigDump`: clusters, listeners,
/// routes, endpoints, secrets, each resource with its version and last update.
pub fn dump(config: &ClientConfig) -> ConfigDump {
    let mut by_type: BTreeMap<TypeUrl, Vec<&GenericXdsConfig>> = BTreeMap::new();
    for g in &config.generic_xds_configs {
        if let (Some(ty), Some(_)) = (TypeUrl::from_url(&g.type_url), &g.xds_config) {
            by_type.entry(ty).or_default().push(g);
        }
    }
    let of = |ty: TypeUrl| by_type.get(&ty).map(Vec::as_slice).unwrap_or_default();
    let clusters = ClustersConfigDump {
        dynamic_active_clusters: of(TypeUrl::Cluster)
            .iter()
            .map(|g| clusters_config_dump::DynamicCluster {
                version_info: g.version_info.clone(),
                cluster: g.xds_config.clone(),
                last_updated: g.last_updated,
                client_status: g.client_status,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let listeners = ListenersConfigDump {
        dynamic_listeners: of(TypeUrl::Listener)
            .iter()
            .map(|g| listeners_config_dump::DynamicListener {
                name: g.name.clone(),
                active_state: Some(listeners_config_dump::DynamicListenerState {
                    version_info: g.version_info.clone(),
                    listener: g.xds_config.clone(),
                    last_updated: g.last_updated,
                }),
                client_status: g.client_status,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let routes = RoutesConfigDump {
        dynamic_route_configs: of(TypeUrl::RouteConfiguration)
            .iter()
            .map(|g| routes_config_dump::DynamicRouteConfig {
                version_info: g.version_info.clone(),
                route_config: g.xds_config.clone(),
                last_updated: g.last_updated,
                client_status: g.client_status,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let endpoints = EndpointsConfigDump {
        dynamic_endpoint_configs: of(TypeUrl::ClusterLoadAssignment)
            .iter()
            .map(|g| endpoints_config_dump::DynamicEndpointConfig {
                version_info: g.version_info.clone(),
                endpoint_config: g.xds_config.clone(),
                last_updated: g.last_updated,
                client_status: g.client_status,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let secrets = SecretsConfigDump {
        dynamic_active_secrets: of(TypeUrl::Secret)
            .iter()
            .map(|g| secrets_config_dump::DynamicSecret {
                name: g.name.clone(),
                version_info: g.version_info.clone(),
                last_updated: g.last_updated,
                secret: g.xds_config.clone(),
                client_status: g.client_status,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ConfigDump {
        configs: vec![
            pack(&clusters),
            pack(&listeners),
            pack(&routes),
            pack(&endpoints),
            pack(&secrets),
        ],
    }
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
#[path = "debug_types_tests.rs"]
mod tests;
