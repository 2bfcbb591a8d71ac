//! Listeners with an HTTP connection manager that takes its routes over RDS.

use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier, UpgradeConfig},
    HttpConnectionManager, Rds,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::cluster::ads;
use super::endpoint::socket_address;
use super::route::{http_filters, HttpFilterNeeds};

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// A listener on `bind:port` whose routes are the RDS config `route_config`.
/// Fault and CORS filters are always in the chain, as istiod puts them: then a route edit never
/// changes the listener, which would drain its connections.
pub fn http_listener(name: &str, bind: &str, port: u32, route_config: &str, stat_prefix: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.to_string(),
        })),
        http_filters: http_filters(HttpFilterNeeds::ALL),
        // A gateway is the edge: the client's address is the peer's, as istiod sets it.
        use_remote_address: Some(BoolValue { value: true }),
        normalize_path: Some(BoolValue { value: true }),
        upgrade_configs: vec![UpgradeConfig { upgrade_type: "websocket".into(), ..Default::default() }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address(bind, u16::try_from(port).unwrap_or_default())),
        filter_chains: vec![FilterChain {
            filters: vec![Filter { name: HCM.into(), config_type: Some(ConfigType::TypedConfig(pack_any(hcm))) }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
