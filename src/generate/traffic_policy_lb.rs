//! `loadBalancer` and `outlierDetection`, as istiod's `applyLoadBalancer`,
//! `ApplyRingHashLoadBalancer` and `applyOutlierDetection`.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, LeastRequestLbConfig,
    MaglevLbConfig, RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection as EnvoyOutlier};
use envoy_types::pb::envoy::config::core::v3::RuntimeDouble;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use crate::config::istio::destination_rule::{LoadBalancerSettings, OutlierDetection, SimpleLb};

/// Envoy's limits: larger values are NACKed.
const MAX_RING_SIZE: u64 = 8_388_608;
const MAX_MAGLEV_TABLE: u64 = 5_000_011;
/// Envoy's default ring size, which istiod sets explicitly for the deprecated form.
const DEFAULT_RING_SIZE: u64 = 1024;

fn is_original_dst(c: &Cluster) -> bool {
    c.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

/// istiod's slow start: `warmup` (its `setWarmup`: aggression 1 and a 10 % minimum weight
/// unless set; the runtime key is never looked up but Envoy requires one) over the older
/// `warmupDurationSecs`.
fn slow_start(lb: &LoadBalancerSettings) -> Option<SlowStartConfig> {
    if let Some(w) = &lb.warmup {
        return Some(SlowStartConfig {
            slow_start_window: w.duration.map(|d| d.to_proto()),
            aggression: Some(RuntimeDouble {
                default_value: w.aggression.unwrap_or(1.0),
                runtime_key: "(".into(),
            }),
            min_weight_percent: Some(Percent {
                value: w.minimum_percent.unwrap_or(10.0),
            }),
        });
    }
    lb.warmup_duration_secs.map(|d| SlowStartConfig {
        slow_start_window: Some(d.to_proto()),
        ..Default::default()
    })
}

pub(super) fn apply_load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    // Original-destination clusters must use the cluster's own choice of host.
    if is_original_dst(c) {
        c.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    let slow_start = lb.and_then(slow_start);
    match lb.and_then(|lb| lb.simple) {
        Some(SimpleLb::Random) => c.lb_policy = LbPolicy::Random as i32,
        Some(SimpleLb::RoundRobin) => {
            c.lb_policy = LbPolicy::RoundRobin as i32;
            c.lb_config = slow_start.map(|s| {
                LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: Some(s),
                })
            });
        }
        Some(SimpleLb::Passthrough) => {
            // Send to the address the client asked for; no endpoints from EDS or DNS.
            c.lb_policy = LbPolicy::ClusterProvided as i32;
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            c.load_assignment = None;
            c.eds_cluster_config = None;
            c.lb_config = None;
            return;
        }
        // LEAST_CONN is LEAST_REQUEST's deprecated name; unset is istiod's default, LEAST_REQUEST.
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified) | None => {
            c.lb_policy = LbPolicy::LeastRequest as i32;
            c.lb_config = slow_start.map(|s| {
                LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: Some(s),
                    ..Default::default()
                })
            });
        }
    }
    if let Some(ch) = lb.and_then(|lb| lb.consistent_hash.as_ref()) {
        if let Some(maglev) = &ch.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            c.lb_config = None;
            match maglev.table_size.filter(|t| *t != 0) {
                Some(t) if t <= MAX_MAGLEV_TABLE && is_prime(t) => {
                    c.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                        table_size: Some(UInt64Value { value: t }),
                    }));
                }
                Some(t) => {
                    tracing::warn!(cluster = %c.name, "maglev tableSize {t} is not a prime up to {MAX_MAGLEV_TABLE}; using Envoy's default")
                }
                None => {}
            }
        } else {
            let size = match &ch.ring_hash {
                Some(r) => r.minimum_ring_size.filter(|s| *s != 0),
                None => Some(
                    ch.minimum_ring_size
                        .filter(|s| *s != 0)
                        .unwrap_or(DEFAULT_RING_SIZE),
                ),
            };
            c.lb_policy = LbPolicy::RingHash as i32;
            c.lb_config = None;
            match size {
                Some(s) if s <= MAX_RING_SIZE => {
                    c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                        minimum_ring_size: Some(UInt64Value { value: s }),
                        ..Default::default()
                    }));
                }
                Some(s) => {
                    tracing::warn!(cluster = %c.name, "minimumRingSize {s} is above Envoy's {MAX_RING_SIZE}; using Envoy's default")
                }
                None => {}
            }
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Success-rate ejection is off and consecutive-error ejection is enforced at 100%, as istiod
/// configures it. The deprecated `consecutiveErrors` is ignored, as current istiod ignores it.
pub(super) fn apply_outlier_detection(c: &mut Cluster, outlier: Option<&OutlierDetection>) {
    let Some(o) = outlier else { return };
    let enforce = |v: u32| {
        Some(UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    let mut out = EnvoyOutlier {
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    };
    if let Some(v) = o.consecutive_5xx_errors {
        out.consecutive_5xx = Some(UInt32Value { value: v });
        out.enforcing_consecutive_5xx = enforce(v);
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(UInt32Value { value: v });
        out.enforcing_consecutive_gateway_failure = enforce(v);
    }
    // Envoy rejects zero durations here.
    out.interval = o
        .interval
        .filter(|d| !d.as_std().is_zero())
        .map(|d| d.to_proto());
    out.base_ejection_time = o
        .base_ejection_time
        .filter(|d| !d.as_std().is_zero())
        .map(|d| d.to_proto());
    out.max_ejection_percent = o
        .max_ejection_percent
        .filter(|p| *p > 0)
        .map(|p| UInt32Value {
            value: p.min(100) as u32,
        });
    if o.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = Some(UInt32Value { value: v });
            out.enforcing_consecutive_local_origin_failure = Some(UInt32Value { value: 100 });
        }
        out.enforcing_local_origin_success_rate = Some(UInt32Value { value: 0 });
    }
    c.outlier_detection = Some(out);
    // Set even when 0 (Envoy's default is 50): panic routing rarely helps with few pods per
    // service, so istiod turns it off unless minHealthPercent asks for it.
    let min_health = o.min_health_percent.unwrap_or(0);
    if min_health >= 0 {
        c.common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent {
            value: f64::from(min_health.min(100)),
        });
    }
}

#[cfg(test)]
#[path = "traffic_policy_lb_tests.rs"]
mod tests;
