//! `networking.istio.io` DestinationRule.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, MatchLabels, PortSelector};

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct DestinationRule {
    pub host: String,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    pub export_to: Vec<String>,
    pub workload_selector: Option<MatchLabels>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub retry_budget: Option<RetryBudget>,
    #[schemars(with = "Option<TunnelSettingsSchema>")]
    pub tunnel: Option<serde_json::Value>,
    #[schemars(with = "Option<ProxyProtocolSchema>")]
    pub proxy_protocol: Option<serde_json::Value>,
}

/// The CRD shape of `trafficPolicy.tunnel`, kept as JSON in [`TrafficPolicy`] (validation reads
/// it field by field); the schema still names its fields so that the API server keeps them.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSettingsSchema {
    pub protocol: Option<String>,
    pub target_host: Option<String>,
    pub target_port: Option<u32>,
}

/// The CRD shape of `trafficPolicy.proxyProtocol` (see [`TunnelSettingsSchema`]).
#[derive(JsonSchema)]
pub struct ProxyProtocolSchema {
    pub version: Option<ProxyProtocolVersion>,
}

#[derive(JsonSchema)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// The CRD shape of `loadBalancer.localityLbSetting` (see [`TunnelSettingsSchema`]).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSettingSchema {
    pub distribute: Option<Vec<LocalityDistributeSchema>>,
    pub failover: Option<Vec<LocalityFailoverSchema>>,
    pub failover_priority: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

#[derive(JsonSchema)]
pub struct LocalityDistributeSchema {
    pub from: Option<String>,
    pub to: Option<BTreeMap<String, u32>>,
}

#[derive(JsonSchema)]
pub struct LocalityFailoverSchema {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    pub simple: Option<SimpleLb>,
    pub consistent_hash: Option<ConsistentHashLb>,
    #[schemars(with = "Option<LocalityLbSettingSchema>")]
    pub locality_lb_setting: Option<serde_json::Value>,
    pub warmup_duration_secs: Option<Duration>,
    pub warmup: Option<Warmup>,
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    pub backend_utilization: Option<BackendUtilization>,
}

/// Zone-aware load balancing (Envoy's `zone_aware_lb_config`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ZoneAwareLbSetting {
    pub enabled: Option<bool>,
    pub failover: Vec<ZoneFailover>,
    pub failover_priority: Vec<String>,
    #[schemars(range(min = 1))]
    pub min_cluster_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ZoneFailover {
    pub from: String,
    pub to: String,
}

/// Weights endpoints by the load they report (ORCA), Envoy's client-side weighted round robin.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct BackendUtilization {
    pub error_utilization_penalty_percent: Option<u32>,
    pub metric_names_for_computing_utilization: Vec<String>,
    pub weight_expiration_period: Option<Duration>,
    pub weight_stabilization_period: Option<Duration>,
    pub weight_update_period: Option<Duration>,
}

/// A limit on concurrent retries relative to active requests (Envoy's `retry_budget`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RetryBudget {
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: Option<f64>,
    pub min_retry_concurrency: Option<u32>,
    pub budget_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Warmup {
    pub duration: Option<Duration>,
    #[schemars(range(min = 0.0, max = 100.0))]
    pub minimum_percent: Option<f64>,
    #[schemars(range(min = 0.0))]
    pub aggression: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ConsistentHashLb {
    pub http_header_name: Option<String>,
    pub http_cookie: Option<HttpCookie>,
    pub use_source_ip: Option<bool>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<Maglev>,
    /// Deprecated; `ringHash.minimumRingSize` replaces it.
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct HttpCookie {
    pub name: String,
    pub path: String,
    pub ttl: Option<Duration>,
    pub attributes: Vec<CookieAttribute>,
}

/// An attribute of the cookie the proxy sets (`SameSite=Strict`…).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct CookieAttribute {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RingHash {
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Maglev {
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpSettings {
    pub max_connections: Option<i32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpSettings {
    pub http1_max_pending_requests: Option<i32>,
    pub http2_max_requests: Option<i32>,
    pub max_requests_per_connection: Option<i32>,
    pub max_retries: Option<i32>,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    pub use_client_protocol: Option<bool>,
    pub max_concurrent_streams: Option<i32>,
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct Http2KeepAlive {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct OutlierDetection {
    pub split_external_local_origin_errors: Option<bool>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated alias of `consecutive5xxErrors` (counted as gateway errors by istiod).
    pub consecutive_errors: Option<i32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<i32>,
    pub min_health_percent: Option<i32>,
    /// HTTP status codes counted as errors (Envoy's outlier detection `error_matcher`).
    #[schemars(inner(range(min = 100, max = 599)))]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    pub mode: Option<ClientTlsMode>,
    pub client_certificate: String,
    pub private_key: String,
    pub ca_certificates: String,
    pub ca_crl: String,
    pub credential_name: String,
    pub subject_alt_names: Vec<String>,
    pub sni: String,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}
