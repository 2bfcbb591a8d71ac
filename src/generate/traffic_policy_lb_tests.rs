use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::json;

use super::super::apply_traffic_policy;
use super::super::tests::{applied, policy, secs, u32v};
use crate::model::Protocol;

#[test]
fn simple_load_balancers() {
    for (simple, want) in [
        ("ROUND_ROBIN", LbPolicy::RoundRobin),
        ("LEAST_REQUEST", LbPolicy::LeastRequest),
        ("LEAST_CONN", LbPolicy::LeastRequest),
        ("RANDOM", LbPolicy::Random),
        ("UNSPECIFIED", LbPolicy::LeastRequest),
    ] {
        let c = applied(
            json!({"loadBalancer": {"simple": simple}}),
            80,
            Protocol::Http,
        );
        assert_eq!(c.lb_policy, want as i32, "{simple}");
    }
}

#[test]
fn passthrough_makes_an_original_dst_cluster() {
    let c = applied(
        json!({"loadBalancer": {"simple": "PASSTHROUGH"}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert_eq!(c.eds_cluster_config, None);
    assert_eq!(c.load_assignment, None);
}

#[test]
fn original_dst_cluster_ignores_load_balancer() {
    let mut c = Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        ..Default::default()
    };
    apply_traffic_policy(
        &mut c,
        &policy(json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}})),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
    assert_eq!(c.lb_config, None);
}

#[test]
fn warmup_is_slow_start() {
    let c = applied(
        json!({"loadBalancer": {"simple": "ROUND_ROBIN", "warmupDurationSecs": "30s"}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::RoundRobinLbConfig(rr)) = c.lb_config else {
        panic!("{:?}", c.lb_config)
    };
    assert_eq!(rr.slow_start_config.unwrap().slow_start_window, secs(30));
    let c = applied(
        json!({"loadBalancer": {"warmupDurationSecs": "10s"}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::LeastRequestLbConfig(lr)) = c.lb_config else {
        panic!("{:?}", c.lb_config)
    };
    assert_eq!(lr.slow_start_config.unwrap().slow_start_window, secs(10));
}

#[test]
fn consistent_hash_ring_hash_and_maglev() {
    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x", "ringHash": {"minimumRingSize": 2048}}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    let Some(LbConfig::RingHashLbConfig(r)) = c.lb_config else {
        panic!()
    };
    assert_eq!(r.minimum_ring_size, Some(UInt64Value { value: 2048 }));

    // The deprecated form always sets a size, 1024 (Envoy's default) when unset.
    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"useSourceIp": true}}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::RingHashLbConfig(r)) = c.lb_config else {
        panic!()
    };
    assert_eq!(r.minimum_ring_size, Some(UInt64Value { value: 1024 }));
    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "minimumRingSize": 512}}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::RingHashLbConfig(r)) = c.lb_config else {
        panic!()
    };
    assert_eq!(r.minimum_ring_size, Some(UInt64Value { value: 512 }));

    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 65537}}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    let Some(LbConfig::MaglevLbConfig(m)) = c.lb_config else {
        panic!()
    };
    assert_eq!(m.table_size, Some(UInt64Value { value: 65537 }));
}

#[test]
fn hash_lb_settings_envoy_would_reject_are_left_at_envoys_default() {
    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 1000}}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    assert_eq!(c.lb_config, None);
    let c = applied(
        json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x", "ringHash": {"minimumRingSize": 9000000}}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_config, None);
    // A warmup's least-request config must not survive under MAGLEV.
    let c = applied(
        json!({"loadBalancer": {"warmupDurationSecs": "5s", "consistentHash": {"httpHeaderName": "x", "maglev": {}}}}),
        80,
        Protocol::Http,
    );
    assert_eq!(c.lb_config, None);
}

#[test]
fn outlier_detection_as_istiod_sets_it() {
    let c = applied(
        json!({"outlierDetection": {
        "consecutive5xxErrors": 5, "consecutiveGatewayErrors": 0, "interval": "10s", "baseEjectionTime": "30s",
        "maxEjectionPercent": 50, "minHealthPercent": 20}}),
        80,
        Protocol::Http,
    );
    let o = c.outlier_detection.unwrap();
    assert_eq!(
        (o.consecutive_5xx, o.enforcing_consecutive_5xx),
        (u32v(5), u32v(100))
    );
    assert_eq!(
        (
            o.consecutive_gateway_failure,
            o.enforcing_consecutive_gateway_failure
        ),
        (u32v(0), u32v(0))
    );
    assert_eq!(o.enforcing_success_rate, u32v(0));
    assert_eq!((o.interval, o.base_ejection_time), (secs(10), secs(30)));
    assert_eq!(o.max_ejection_percent, u32v(50));
    assert!(!o.split_external_local_origin_errors);
    assert_eq!(
        c.common_lb_config.unwrap().healthy_panic_threshold,
        Some(Percent { value: 20.0 })
    );
}

#[test]
fn outlier_detection_disables_panic_threshold_and_splits_local_origin() {
    let c = applied(
        json!({"outlierDetection": {"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 4}}),
        80,
        Protocol::Http,
    );
    let o = c.outlier_detection.unwrap();
    assert!(o.split_external_local_origin_errors);
    assert_eq!(
        (
            o.consecutive_local_origin_failure,
            o.enforcing_consecutive_local_origin_failure
        ),
        (u32v(4), u32v(100))
    );
    assert_eq!(o.enforcing_local_origin_success_rate, u32v(0));
    assert_eq!((o.consecutive_5xx, o.interval), (None, None));
    assert_eq!(
        c.common_lb_config.unwrap().healthy_panic_threshold,
        Some(Percent { value: 0.0 })
    );
}

#[test]
fn warmup_is_istiods_set_warmup() {
    let c = applied(
        json!({"loadBalancer": {"simple": "ROUND_ROBIN", "warmup": {"duration": "30s"}}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::RoundRobinLbConfig(rr)) = c.lb_config else {
        panic!("{:?}", c.lb_config)
    };
    let slow = rr.slow_start_config.unwrap();
    assert_eq!(slow.slow_start_window.map(|d| d.seconds), Some(30));
    assert_eq!(slow.aggression.map(|a| a.default_value), Some(1.0));
    assert_eq!(slow.min_weight_percent.map(|p| p.value), Some(10.0));

    // `warmup` wins over `warmupDurationSecs`; set values are kept.
    let c = applied(
        json!({"loadBalancer": {"warmupDurationSecs": "5s", "warmup": {"duration": "60s", "aggression": 2.5, "minimumPercent": 30}}}),
        80,
        Protocol::Http,
    );
    let Some(LbConfig::LeastRequestLbConfig(lr)) = c.lb_config else {
        panic!("{:?}", c.lb_config)
    };
    let slow = lr.slow_start_config.unwrap();
    assert_eq!(slow.slow_start_window.map(|d| d.seconds), Some(60));
    assert_eq!(slow.aggression.map(|a| a.default_value), Some(2.5));
    assert_eq!(slow.min_weight_percent.map(|p| p.value), Some(30.0));
}
