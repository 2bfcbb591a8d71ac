//! `connectionPool` and the upstream HTTP protocol, as istiod's `applyConnectionPool`,
//! `applyH2Upgrade` and `setH2Options`.

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
    TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use prost::{Message, Name};

use crate::config::istio::destination_rule::{ConnectionPoolSettings, H2UpgradePolicy};

/// The key Envoy reads upstream HTTP options from in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The cluster's upstream `HttpProtocolOptions` while policy is applied, written back packed
/// (never the deprecated cluster-level protocol fields).
#[derive(Debug, Default)]
pub(super) struct HttpOptions(Option<HttpProtocolOptions>);

impl HttpOptions {
    /// Starts from what the caller already put on the cluster, if anything.
    pub fn take(cluster: &mut Cluster) -> Self {
        let existing = cluster
            .typed_extension_protocol_options
            .remove(HTTP_PROTOCOL_OPTIONS);
        HttpOptions(existing.and_then(|any| {
            (any.type_url == HttpProtocolOptions::type_url())
                .then(|| HttpProtocolOptions::decode(any.value.as_slice()).ok())
                .flatten()
        }))
    }

    fn get(&mut self) -> &mut HttpProtocolOptions {
        self.0.get_or_insert_default()
    }

    /// Explicit HTTP/2, replacing any other protocol choice (as istiod's `setH2Options`).
    pub fn set_http2(&mut self) {
        self.get().upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        ));
    }

    fn http2(&mut self) -> Option<&mut Http2ProtocolOptions> {
        match self.0.as_mut()?.upstream_protocol_options.as_mut()? {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            }) => Some(h2),
            _ => None,
        }
    }

    /// HTTP/1.1 or HTTP/2 as the downstream used, keeping explicit HTTP/1.1 options.
    fn use_downstream_protocol(&mut self) {
        let opts = self.get();
        let http1 = match opts.upstream_protocol_options.take() {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(h1)),
            })) => h1,
            _ => Http1ProtocolOptions::default(),
        };
        opts.upstream_protocol_options = Some(
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(http1),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                http3_protocol_options: None,
            }),
        );
    }

    /// Envoy requires a protocol choice once the options exist: HTTP/1.1 unless one was made.
    pub fn put(self, cluster: &mut Cluster) {
        let Some(mut opts) = self.0 else { return };
        if opts.upstream_protocol_options.is_none() {
            opts.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                        Http1ProtocolOptions::default(),
                    )),
                },
            ));
        }
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.into(), pack_any(opts));
    }
}

/// istiod's thresholds: everything unlimited (Envoy's defaults of 1024 and 3 retries cause 503s
/// during pod churn) unless the policy sets a limit. `track_remaining` feeds the stats.
pub fn default_thresholds() -> Thresholds {
    let max = Some(UInt32Value { value: u32::MAX });
    Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        track_remaining: true,
        ..Default::default()
    }
}

/// Zero and negative limits count as unset, as in istiod (proto3 cannot tell them apart).
fn limit(v: Option<i32>) -> Option<UInt32Value> {
    v.filter(|v| *v > 0)
        .map(|v| UInt32Value { value: v as u32 })
}

pub(super) fn apply_connection_pool(
    cluster: &mut Cluster,
    options: &mut HttpOptions,
    pool: &ConnectionPoolSettings,
) {
    let mut thresholds = default_thresholds();
    let mut common = CommonHttpOptions::default();
    let mut max_concurrent_streams = None;
    if let Some(http) = &pool.http {
        // Envoy applies max_requests to HTTP/2 and max_pending_requests to HTTP/1.1.
        thresholds.max_requests = limit(http.http2_max_requests).or(thresholds.max_requests);
        thresholds.max_pending_requests =
            limit(http.http1_max_pending_requests).or(thresholds.max_pending_requests);
        thresholds.max_retries = limit(http.max_retries).or(thresholds.max_retries);
        common.idle_timeout = http.idle_timeout.map(|d| d.to_proto());
        common.max_requests_per_connection = limit(http.max_requests_per_connection);
        max_concurrent_streams = limit(http.max_concurrent_streams);
    }
    if let Some(tcp) = &pool.tcp {
        // Envoy rejects a zero connect timeout; keep the caller's.
        if let Some(t) = tcp.connect_timeout.filter(|t| !t.as_std().is_zero()) {
            cluster.connect_timeout = Some(t.to_proto());
        }
        thresholds.max_connections = limit(tcp.max_connections).or(thresholds.max_connections);
        common.max_connection_duration = tcp.max_connection_duration.map(|d| d.to_proto());
        if common.idle_timeout.is_none() {
            common.idle_timeout = tcp.idle_timeout.map(|d| d.to_proto());
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            // Seconds, truncated, as istiod does; an empty message still turns SO_KEEPALIVE on.
            let secs = |d: crate::config::istio::Duration| UInt32Value {
                value: d.as_std().as_secs() as u32,
            };
            let keepalive = TcpKeepalive {
                keepalive_probes: ka
                    .probes
                    .filter(|p| *p > 0)
                    .map(|value| UInt32Value { value }),
                keepalive_time: ka.time.map(secs),
                keepalive_interval: ka.interval.map(secs),
            };
            cluster
                .upstream_connection_options
                .get_or_insert_with(UpstreamConnectionOptions::default)
                .tcp_keepalive = Some(keepalive);
        }
    }
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds],
        ..Default::default()
    });

    if common != CommonHttpOptions::default() || max_concurrent_streams.is_some() {
        let opts = options
            .get()
            .common_http_protocol_options
            .get_or_insert_default();
        opts.idle_timeout = common.idle_timeout.or(opts.idle_timeout);
        opts.max_requests_per_connection = common
            .max_requests_per_connection
            .or(opts.max_requests_per_connection);
        opts.max_connection_duration = common
            .max_connection_duration
            .or(opts.max_connection_duration);
        // Only when the cluster is already HTTP/2 (by port protocol), as in istiod.
        if let (Some(streams), Some(h2)) = (max_concurrent_streams, options.http2()) {
            h2.max_concurrent_streams = Some(streams);
        }
    }
    if pool.http.as_ref().and_then(|h| h.use_client_protocol) == Some(true) {
        options.use_downstream_protocol();
    }
}

/// Only an explicit `UPGRADE` upgrades: istiod's mesh-wide default is DO_NOT_UPGRADE, and
/// HTTP2/gRPC ports are HTTP/2 anyway.
pub(super) fn should_upgrade_h2(pool: Option<&ConnectionPoolSettings>) -> bool {
    pool.and_then(|p| p.http.as_ref())
        .and_then(|h| h.h2_upgrade_policy)
        == Some(H2UpgradePolicy::Upgrade)
}
