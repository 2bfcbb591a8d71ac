use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions as CommonHttpOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use prost::Message;
use serde_json::json;

use super::pool::HTTP_PROTOCOL_OPTIONS;
use super::*;

pub(super) fn policy(v: serde_json::Value) -> TrafficPolicy {
    serde_json::from_value(v).expect("valid TrafficPolicy")
}

pub(super) fn eds_cluster() -> Cluster {
    Cluster {
        name: "outbound|80||a.example".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        connect_timeout: Some(PbDuration {
            seconds: 10,
            nanos: 0,
        }),
        ..Default::default()
    }
}

pub(super) fn applied(v: serde_json::Value, port: u32, protocol: Protocol) -> Cluster {
    let mut c = eds_cluster();
    apply_traffic_policy(&mut c, &policy(v), port, protocol);
    c
}

pub(super) fn thresholds(c: &Cluster) -> &Thresholds {
    &c.circuit_breakers
        .as_ref()
        .expect("circuit breakers")
        .thresholds[0]
}

pub(super) fn http_options(c: &Cluster) -> Option<HttpProtocolOptions> {
    let any = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)?;
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    Some(HttpProtocolOptions::decode(any.value.as_slice()).expect("decodes"))
}

pub(super) fn is_http2(o: &HttpProtocolOptions) -> bool {
    matches!(&o.upstream_protocol_options, Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
        if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_))))
}

pub(super) fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

pub(super) fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

#[test]
fn default_policy_is_istiods_defaults() {
    let c = applied(json!({}), 80, Protocol::Http);
    let t = thresholds(&c);
    assert_eq!(
        (
            t.max_connections,
            t.max_pending_requests,
            t.max_requests,
            t.max_retries
        ),
        (
            u32v(u32::MAX),
            u32v(u32::MAX),
            u32v(u32::MAX),
            u32v(u32::MAX)
        )
    );
    assert!(t.track_remaining);
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(c.lb_config, None);
    assert_eq!(c.connect_timeout, secs(10));
    assert!(c.typed_extension_protocol_options.is_empty());
    assert_eq!(c.outlier_detection, None);
}

#[test]
fn http2_and_grpc_ports_get_explicit_http2() {
    for protocol in [Protocol::Http2, Protocol::Grpc] {
        let c = applied(json!({}), 80, protocol);
        assert!(is_http2(&http_options(&c).unwrap()), "{protocol:?}");
    }
}

#[test]
fn tcp_connection_pool() {
    let c = applied(
        json!({"connectionPool": {"tcp": {
        "maxConnections": 100, "connectTimeout": "3s", "maxConnectionDuration": "1h", "idleTimeout": "5m",
        "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"}}}}),
        80,
        Protocol::Tcp,
    );
    let t = thresholds(&c);
    assert_eq!(t.max_connections, u32v(100));
    assert_eq!(t.max_requests, u32v(u32::MAX));
    assert_eq!(c.connect_timeout, secs(3));
    let ka = c
        .upstream_connection_options
        .unwrap()
        .tcp_keepalive
        .unwrap();
    assert_eq!(
        (
            ka.keepalive_probes,
            ka.keepalive_time,
            ka.keepalive_interval
        ),
        (u32v(3), u32v(7200), u32v(75))
    );
    let common = http_options(&c)
        .unwrap()
        .common_http_protocol_options
        .unwrap();
    assert_eq!(common.max_connection_duration, secs(3600));
    assert_eq!(common.idle_timeout, secs(300));
}

#[test]
fn empty_keepalive_still_enables_so_keepalive_and_zero_connect_timeout_is_ignored() {
    let c = applied(
        json!({"connectionPool": {"tcp": {"tcpKeepalive": {}, "connectTimeout": "0s"}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(
        c.upstream_connection_options.unwrap().tcp_keepalive,
        Some(Default::default())
    );
    assert_eq!(c.connect_timeout, secs(10));
}

#[test]
fn http_connection_pool() {
    let c = applied(
        json!({"connectionPool": {
        "tcp": {"idleTimeout": "9s"},
        "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 20, "maxRetries": 3,
                 "maxRequestsPerConnection": 5, "idleTimeout": "30s", "maxConcurrentStreams": 7}}}),
        80,
        Protocol::Grpc,
    );
    let t = thresholds(&c);
    assert_eq!(
        (t.max_pending_requests, t.max_requests, t.max_retries),
        (u32v(10), u32v(20), u32v(3))
    );
    let o = http_options(&c).unwrap();
    let common = o.common_http_protocol_options.unwrap();
    assert_eq!(common.max_requests_per_connection, u32v(5));
    assert_eq!(
        common.idle_timeout,
        secs(30),
        "http idleTimeout wins over tcp's"
    );
    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) = o.upstream_protocol_options else {
        panic!()
    };
    let Some(ProtocolConfig::Http2ProtocolOptions(h2)) = e.protocol_config else {
        panic!()
    };
    assert_eq!(h2.max_concurrent_streams, u32v(7));
}

#[test]
fn options_without_protocol_choice_default_to_explicit_http1() {
    let c = applied(
        json!({"connectionPool": {"http": {"idleTimeout": "1s"}}}),
        80,
        Protocol::Http,
    );
    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) =
        http_options(&c).unwrap().upstream_protocol_options
    else {
        panic!()
    };
    assert!(matches!(
        e.protocol_config,
        Some(ProtocolConfig::HttpProtocolOptions(_))
    ));
}

#[test]
fn h2_upgrade_policy_and_use_client_protocol() {
    let c = applied(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}),
        80,
        Protocol::Http,
    );
    assert!(is_http2(&http_options(&c).unwrap()));
    let c = applied(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "DEFAULT"}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(http_options(&c), None);
    let c = applied(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "DO_NOT_UPGRADE"}}}),
        80,
        Protocol::Grpc,
    );
    assert!(
        is_http2(&http_options(&c).unwrap()),
        "gRPC ports stay HTTP/2"
    );
    let c = applied(
        json!({"connectionPool": {"http": {"useClientProtocol": true}}}),
        80,
        Protocol::Http,
    );
    let Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) =
        http_options(&c).unwrap().upstream_protocol_options
    else {
        panic!()
    };
    assert!(d.http_protocol_options.is_some() && d.http2_protocol_options.is_some());
}

#[test]
fn callers_protocol_options_are_kept() {
    let mut c = eds_cluster();
    let mine = HttpProtocolOptions {
        common_http_protocol_options: Some(CommonHttpOptions {
            max_headers_count: u32v(50),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        HTTP_PROTOCOL_OPTIONS.into(),
        envoy_types::util::pack_any(mine),
    );
    apply_traffic_policy(
        &mut c,
        &policy(json!({"connectionPool": {"http": {"idleTimeout": "2s"}}})),
        80,
        Protocol::Http,
    );
    let common = http_options(&c)
        .unwrap()
        .common_http_protocol_options
        .unwrap();
    assert_eq!(
        (common.max_headers_count, common.idle_timeout),
        (u32v(50), secs(2))
    );
}

#[test]
fn port_level_settings_replace_the_top_level_wholesale() {
    let p = json!({
        "loadBalancer": {"simple": "RANDOM"},
        "outlierDetection": {"consecutive5xxErrors": 3},
        "connectionPool": {"tcp": {"maxConnections": 5}},
        "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}],
    });
    let on_port = applied(p.clone(), 9080, Protocol::Http);
    assert_eq!(on_port.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(
        on_port.outlier_detection, None,
        "not inherited from the top level"
    );
    assert_eq!(thresholds(&on_port).max_connections, u32v(u32::MAX));
    let other = applied(p, 80, Protocol::Http);
    assert_eq!(other.lb_policy, LbPolicy::Random as i32);
    assert_eq!(thresholds(&other).max_connections, u32v(5));
}

#[test]
fn subset_overrides_parent_field_wise() {
    let parent = policy(
        json!({"loadBalancer": {"simple": "RANDOM"}, "connectionPool": {"tcp": {"maxConnections": 5}}}),
    );
    let subset = policy(json!({"loadBalancer": {"simple": "ROUND_ROBIN"}}));
    let m = merge_subset_policy(Some(&parent), Some(&subset)).unwrap();
    assert_eq!(m.load_balancer, subset.load_balancer);
    assert_eq!(m.connection_pool, parent.connection_pool);
    assert_eq!(
        merge_subset_policy(Some(&parent), None),
        Some(parent.clone())
    );
    assert_eq!(
        merge_subset_policy(None, Some(&subset)),
        Some(subset.clone())
    );
    assert_eq!(merge_subset_policy(None, None), None);
}

#[test]
fn subset_merge_matches_istiod_per_port() {
    let parent = policy(json!({
        "loadBalancer": {"simple": "RANDOM"},
        "connectionPool": {"tcp": {"maxConnections": 5}},
        "portLevelSettings": [
            {"port": {"number": 81}, "connectionPool": {"tcp": {"maxConnections": 81}}},
            {"port": {"number": 82}, "connectionPool": {"tcp": {"maxConnections": 82}}},
        ],
    }));
    let subset = policy(json!({
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "portLevelSettings": [{"port": {"number": 82}, "outlierDetection": {"consecutive5xxErrors": 1}}],
    }));
    let m = merge_subset_policy(Some(&parent), Some(&subset)).unwrap();
    let on = |port| {
        let mut c = eds_cluster();
        apply_traffic_policy(&mut c, &m, port, Protocol::Http);
        c
    };
    // Port 80: parent top-level with the subset's load balancer.
    let c = on(80);
    assert_eq!(
        (c.lb_policy, thresholds(&c).max_connections),
        (LbPolicy::RoundRobin as i32, u32v(5))
    );
    // Port 81: the parent's port-level entry, with the subset's top-level fields over it.
    let c = on(81);
    assert_eq!(
        (c.lb_policy, thresholds(&c).max_connections),
        (LbPolicy::RoundRobin as i32, u32v(81))
    );
    // Port 82: the subset's port-level entry, wholesale.
    let c = on(82);
    assert_eq!(
        (c.lb_policy, thresholds(&c).max_connections),
        (LbPolicy::LeastRequest as i32, u32v(u32::MAX))
    );
    assert_eq!(c.outlier_detection.unwrap().consecutive_5xx, u32v(1));
}

#[test]
fn consistent_hash_precedence_follows_istiod() {
    let parent = policy(json!({
        "loadBalancer": {"consistentHash": {"httpHeaderName": "top"}},
        "portLevelSettings": [
            {"port": {"number": 81}, "loadBalancer": {"consistentHash": {"httpHeaderName": "port"}}},
            {"port": {"number": 82}, "loadBalancer": {"simple": "RANDOM"}},
        ],
    }));
    let subset = policy(json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "subset"}}}));
    let header = |lb: Option<&LoadBalancerSettings>| {
        lb.and_then(|l| l.consistent_hash.clone())
            .and_then(|c| c.http_header_name)
    };
    assert_eq!(
        header(consistent_hash_lb(Some(&parent), None, None)).as_deref(),
        Some("top")
    );
    assert_eq!(
        header(consistent_hash_lb(Some(&parent), None, Some(81))).as_deref(),
        Some("port")
    );
    assert_eq!(
        header(consistent_hash_lb(Some(&parent), None, Some(82))).as_deref(),
        Some("top")
    );
    assert_eq!(
        header(consistent_hash_lb(Some(&parent), Some(&subset), Some(81))).as_deref(),
        Some("subset")
    );
    assert_eq!(consistent_hash_lb(None, None, Some(81)), None);
}

#[test]
fn hash_policy_kinds() {
    let lb = |v| serde_json::from_value::<LoadBalancerSettings>(v).unwrap();
    let spec = |v| hash_policy(&lb(v)).pop().and_then(|h| h.policy_specifier);
    assert_eq!(
        spec(json!({"consistentHash": {"httpHeaderName": "x-user"}})),
        Some(PolicySpecifier::Header(Header {
            header_name: "x-user".into(),
            regex_rewrite: None
        }))
    );
    assert_eq!(
        spec(json!({"consistentHash": {"httpCookie": {"name": "c", "path": "/p", "ttl": "60s"}}})),
        Some(PolicySpecifier::Cookie(Cookie {
            name: "c".into(),
            ttl: secs(60),
            path: "/p".into(),
            attributes: vec![]
        }))
    );
    assert_eq!(
        spec(json!({"consistentHash": {"useSourceIp": true}})),
        Some(PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip: true }
        ))
    );
    assert_eq!(
        spec(json!({"consistentHash": {"httpQueryParameterName": "q"}})),
        Some(PolicySpecifier::QueryParameter(QueryParameter {
            name: "q".into()
        }))
    );
    assert!(hash_policy(&lb(json!({"simple": "RANDOM"}))).is_empty());
    assert!(hash_policy(&lb(json!({"consistentHash": {"useSourceIp": false}}))).is_empty());
}

#[test]
fn clusters_round_trip_through_prost() {
    let c = applied(
        json!({
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "c", "ttl": "1s"}, "ringHash": {"minimumRingSize": 64}}},
            "connectionPool": {"tcp": {"maxConnections": 1, "tcpKeepalive": {"time": "1s"}},
                               "http": {"idleTimeout": "1s", "maxRequestsPerConnection": 1, "useClientProtocol": true}},
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "minHealthPercent": 10},
        }),
        80,
        Protocol::Http,
    );
    let bytes = c.encode_to_vec();
    assert_eq!(Cluster::decode(bytes.as_slice()).unwrap(), c);
    http_options(&c).unwrap();
}
