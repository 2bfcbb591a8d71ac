//! DestinationRule traffic policies → Envoy cluster settings, as istiod's
//! `cluster_traffic_policy.go` applies them to outbound clusters.
//!
//! The caller builds the base cluster (name, discovery type, connect timeout); this only applies
//! policy. TLS is not applied yet.

#[path = "traffic_policy_lb.rs"]
mod lb;
#[path = "traffic_policy_pool.rs"]
mod pool;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
};

use crate::config::istio::destination_rule::{
    ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, PortTrafficPolicy,
    TrafficPolicy,
};
use crate::model::Protocol;

pub use pool::{HTTP_PROTOCOL_OPTIONS, default_thresholds};

/// Applies `policy` for `port` to an outbound cluster, as istiod's `applyTrafficPolicy` plus its
/// upstream-protocol choice.
///
/// Call it for every outbound cluster, with `TrafficPolicy::default()` when no DestinationRule
/// applies: istiod's defaults (circuit breakers at u32::MAX, LEAST_REQUEST, HTTP/2 for
/// HTTP2/gRPC ports) come from here too.
pub fn apply_traffic_policy(
    cluster: &mut Cluster,
    policy: &TrafficPolicy,
    port: u32,
    protocol: Protocol,
) {
    let parts = PolicyParts::for_port(policy, port);
    let mut options = pool::HttpOptions::take(cluster);
    if protocol.is_http2() {
        options.set_http2();
    }
    let default_pool = ConnectionPoolSettings::default();
    pool::apply_connection_pool(
        cluster,
        &mut options,
        parts.connection_pool.unwrap_or(&default_pool),
    );
    if pool::should_upgrade_h2(parts.connection_pool) {
        options.set_http2();
    }
    lb::apply_outlier_detection(cluster, parts.outlier_detection);
    lb::apply_load_balancer(cluster, parts.load_balancer);
    options.put(cluster);
}

/// The policy components in force on one port.
#[derive(Debug, Clone, Copy, Default)]
struct PolicyParts<'a> {
    connection_pool: Option<&'a ConnectionPoolSettings>,
    outlier_detection: Option<&'a OutlierDetection>,
    load_balancer: Option<&'a LoadBalancerSettings>,
}

impl<'a> PolicyParts<'a> {
    /// A matching port-level entry replaces the top-level components wholesale: fields it omits
    /// fall back to defaults, not to the top level (Istio's documented semantics).
    fn for_port(policy: &'a TrafficPolicy, port: u32) -> Self {
        match port_level(&policy.port_level_settings, port) {
            Some(p) => PolicyParts {
                connection_pool: p.connection_pool.as_ref(),
                outlier_detection: p.outlier_detection.as_ref(),
                load_balancer: p.load_balancer.as_ref(),
            },
            None => PolicyParts {
                connection_pool: policy.connection_pool.as_ref(),
                outlier_detection: policy.outlier_detection.as_ref(),
                load_balancer: policy.load_balancer.as_ref(),
            },
        }
    }
}

fn port_level(settings: &[PortTrafficPolicy], port: u32) -> Option<&PortTrafficPolicy> {
    settings
        .iter()
        .find(|p| p.port.is_some_and(|s| s.number == port))
}

/// A subset's policy over its DestinationRule's, as istiod's `MergeSubsetTrafficPolicy`.
///
/// Fields the subset sets override the parent's. Port-level settings are resolved per port
/// without knowing the port: a subset's entry for a port wins wholesale; a parent's entry for a
/// port the subset does not list is kept, with the subset's top-level fields over it. So
/// [`apply_traffic_policy`] on the result gives istiod's answer for every port.
pub fn merge_subset_policy(
    parent: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
) -> Option<TrafficPolicy> {
    let (parent, subset) = match (parent, subset) {
        (p, None) => return p.cloned(),
        (None, Some(s)) => return Some(s.clone()),
        (Some(p), Some(s)) => (p, s),
    };
    let overlay = |mut base: PortTrafficPolicy| {
        if subset.connection_pool.is_some() {
            base.connection_pool = subset.connection_pool.clone();
        }
        if subset.outlier_detection.is_some() {
            base.outlier_detection = subset.outlier_detection.clone();
        }
        if subset.load_balancer.is_some() {
            base.load_balancer = subset.load_balancer.clone();
        }
        if subset.tls.is_some() {
            base.tls = subset.tls.clone();
        }
        base
    };
    let top = overlay(PortTrafficPolicy {
        port: None,
        load_balancer: parent.load_balancer.clone(),
        connection_pool: parent.connection_pool.clone(),
        outlier_detection: parent.outlier_detection.clone(),
        tls: parent.tls.clone(),
    });
    let mut port_level_settings = subset.port_level_settings.clone();
    for p in &parent.port_level_settings {
        let Some(port) = p.port else { continue };
        if port_level(&port_level_settings, port.number).is_none() {
            port_level_settings.push(overlay(p.clone()));
        }
    }
    Some(TrafficPolicy {
        load_balancer: top.load_balancer,
        connection_pool: top.connection_pool,
        outlier_detection: top.outlier_detection,
        tls: top.tls,
        port_level_settings,
        tunnel: subset.tunnel.clone().or_else(|| parent.tunnel.clone()),
        proxy_protocol: subset
            .proxy_protocol
            .clone()
            .or_else(|| parent.proxy_protocol.clone()),
        retry_budget: subset
            .retry_budget
            .clone()
            .or_else(|| parent.retry_budget.clone()),
    })
}

/// The consistent hash a route to `port` of a DestinationRule's host (and `subset`) uses, with
/// istiod's precedence (`hashForHTTPDestination`): subset port-level, subset, port-level, top.
/// Unlike the cluster side, a port-level entry without a consistent hash does not clear it.
pub fn consistent_hash_lb<'a>(
    parent: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: Option<u32>,
) -> Option<&'a LoadBalancerSettings> {
    let has_hash =
        |lb: Option<&'a LoadBalancerSettings>| lb.filter(|lb| lb.consistent_hash.is_some());
    let port_lb = |p: Option<&'a TrafficPolicy>| {
        let port = port?;
        has_hash(
            port_level(&p?.port_level_settings, port)?
                .load_balancer
                .as_ref(),
        )
    };
    let top_lb = |p: Option<&'a TrafficPolicy>| has_hash(p?.load_balancer.as_ref());
    port_lb(subset)
        .or_else(|| top_lb(subset))
        .or_else(|| port_lb(parent))
        .or_else(|| top_lb(parent))
}

/// The route-side hash policy of a consistent-hash load balancer (empty otherwise), as
/// istiod's `consistentHashToHashPolicy`.
pub fn hash_policy(lb: &LoadBalancerSettings) -> Vec<HashPolicy> {
    let Some(ch) = &lb.consistent_hash else {
        return Vec::new();
    };
    let spec = if let Some(name) = &ch.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: name.clone(),
            regex_rewrite: None,
        })
    } else if let Some(c) = &ch.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            ttl: c.ttl.map(|d| d.to_proto()),
            path: c.path.clone(),
            attributes: Vec::new(),
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(name) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }]
}

#[cfg(test)]
#[path = "traffic_policy_tests.rs"]
mod tests;
