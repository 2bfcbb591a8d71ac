//! Gateway listeners and the pieces they are made of: the HTTP connection manager taking its
//! routes over RDS, TCP proxies, downstream TLS and the TLS inspector.

use crate::config::istio::virtual_service::RouteDestination;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener, ListenerFilter, filter::ConfigType, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
        UpgradeConfig,
    },
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
    ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::google::protobuf::{BoolValue, Duration};
use envoy_types::util::pack_any;

use super::cluster::ads;
use super::endpoint::socket_address;
use super::route::{HttpFilterNeeds, http_filters};

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";

/// A listener on `bind:port` with these chains, and the TLS inspector when a chain needs the
/// client hello read: it selects by SNI, or terminates TLS (istiod adds it then too, for ALPN).
/// Every chain gets istiod's 15 s to finish a TLS handshake, against slow-handshake attacks.
pub fn listener(
    name: &str,
    bind: &str,
    port: u32,
    mut filter_chains: Vec<FilterChain>,
) -> Listener {
    let inspect = filter_chains.iter().any(|c| {
        c.transport_socket.is_some()
            || c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.server_names.is_empty())
    });
    for chain in &mut filter_chains {
        chain.transport_socket_connect_timeout = Some(Duration {
            seconds: 15,
            nanos: 0,
        });
    }
    Listener {
        name: name.to_string(),
        address: Some(socket_address(
            bind,
            u16::try_from(port).unwrap_or_default(),
        )),
        listener_filters: if inspect {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        filter_chains,
        ..Default::default()
    }
}

/// A gateway's HTTP connection manager, routes from the RDS config `route_config`.
/// Fault and CORS filters are always in the chain, as istiod puts them: then a route edit never
/// changes the listener, which would drain its connections. A gateway is the edge: the client's
/// address is the peer's, and a client's `x-forwarded-client-cert` is replaced by what the
/// gateway saw of the client certificate (istiod's `SANITIZE_SET`).
pub fn http_connection_manager(route_config: &str, stat_prefix: &str) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.to_string(),
        })),
        http_filters: http_filters(HttpFilterNeeds::ALL),
        use_remote_address: Some(BoolValue { value: true }),
        normalize_path: Some(BoolValue { value: true }),
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            cert: true,
            dns: true,
            uri: true,
            ..Default::default()
        }),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: HCM.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(hcm))),
    }
}

/// A TCP proxy to one cluster; istiod uses the cluster name as the stat prefix.
pub fn tcp_proxy(cluster: &str) -> Filter {
    tcp_proxy_filter(cluster, ClusterSpecifier::Cluster(cluster.to_string()))
}

/// A TCP proxy splitting connections over `(cluster, weight)`s; the stat prefix is the first's.
pub fn tcp_proxy_weighted(clusters: &[(String, u32)]) -> Filter {
    let weighted = WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(name, weight)| ClusterWeight {
                name: name.clone(),
                weight: *weight,
                ..Default::default()
            })
            .collect(),
    };
    tcp_proxy_filter(
        clusters.first().map(|c| c.0.as_str()).unwrap_or_default(),
        ClusterSpecifier::WeightedClusters(weighted),
    )
}

/// A TCP proxy to a `tcp`/`tls` route's destinations (`cluster` names each one's cluster): one
/// cluster, or those with a weight, as istiod builds it for sidecars and gateways alike.
pub fn tcp_route(
    route: &[RouteDestination],
    cluster: impl Fn(&RouteDestination) -> String,
) -> Filter {
    if let [only] = route {
        return tcp_proxy(&cluster(only));
    }
    let weighted: Vec<(String, u32)> = route
        .iter()
        .filter(|d| d.weight > 0)
        .map(|d| (cluster(d), u32::try_from(d.weight).unwrap_or(0)))
        .collect();
    match weighted.as_slice() {
        [] => tcp_proxy(
            &route
                .first()
                .map(&cluster)
                .unwrap_or_else(|| super::names::BLACKHOLE_CLUSTER.into()),
        ),
        [(only, _)] => tcp_proxy(only),
        _ => tcp_proxy_weighted(&weighted),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, cluster_specifier: ClusterSpecifier) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(proxy))),
    }
}

/// The transport socket terminating TLS with `context`.
pub fn downstream_tls(context: DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}

/// Reads the SNI and ALPN of a TLS client hello, for chains selected by `server_names`.
fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}
