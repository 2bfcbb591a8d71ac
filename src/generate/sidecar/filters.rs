//! The network filters sidecar listeners carry: an HTTP connection manager (RDS or inline routes)
//! and a TCP proxy. Only stock Envoy filters: no `istio.*` extension is ever sent here, so a plain
//! Envoy accepts every listener.

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
        UpgradeConfig,
    },
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::super::cluster::ads;
pub use super::super::listener::tcp_proxy;
use super::super::route::{HttpFilterNeeds, http_filters};

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// Where an HTTP connection manager takes its routes from.
pub enum Routes {
    /// Outbound: the shared route config of the port, over RDS.
    Rds(String),
    /// Inbound: one fixed route to the local workload, inline as istiod writes it.
    Inline(Box<RouteConfiguration>),
}

/// An HTTP connection manager as istiod configures a sidecar's: fault, CORS and router always in
/// the chain (a route edit then never changes the listener), and `use_remote_address` off, because
/// inside the mesh the peer is another proxy or the app, not the client.
pub fn http_connection_manager(stat_prefix: String, routes: Routes) -> Filter {
    Filter {
        name: HCM.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(hcm(
            stat_prefix,
            routes,
            Vec::new(),
        )))),
    }
}

/// An inbound chain's: `policy` filters (JWT authentication, RBAC) first, and, as istiod sets
/// it, the peer's identity from its mTLS certificate passed to the app in
/// `x-forwarded-client-cert` (`By=<own id>;URI=<peer id>`).
pub fn inbound_http_connection_manager(
    stat_prefix: String,
    routes: Routes,
    policy: Vec<HttpFilter>,
) -> Filter {
    let mut hcm = hcm(stat_prefix, routes, policy);
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        dns: true,
        uri: true,
        ..Default::default()
    });
    Filter {
        name: HCM.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(hcm))),
    }
}

fn hcm(stat_prefix: String, routes: Routes, policy: Vec<HttpFilter>) -> HttpConnectionManager {
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: policy
            .into_iter()
            .chain(http_filters(HttpFilterNeeds::ALL))
            .collect(),
        use_remote_address: Some(BoolValue { value: false }),
        normalize_path: Some(BoolValue { value: true }),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
