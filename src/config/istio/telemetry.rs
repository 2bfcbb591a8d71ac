//! `telemetry.istio.io` Telemetry (v1alpha1 and v1 share one schema): tracing, metrics and
//! access logging of the workloads it selects.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, MatchLabels};
use super::security::PolicyTargetReference;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Telemetry {
    pub selector: Option<MatchLabels>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub tracing: Vec<Tracing>,
    pub metrics: Vec<Metrics>,
    pub access_logging: Vec<AccessLogging>,
}

/// A reference to a `meshConfig.extensionProviders` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ProviderRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Which side of the traffic a setting applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

/// `match` of tracing and access logging: only a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct ModeSelector {
    pub mode: WorkloadMode,
}

/// Wrapper fields (`google.protobuf.BoolValue`, `DoubleValue`) are `Option`: unset inherits.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Tracing {
    #[serde(rename = "match")]
    pub matches: Option<ModeSelector>,
    pub providers: Vec<ProviderRef>,
    #[schemars(range(min = 0.0, max = 100.0))]
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    pub custom_tags: BTreeMap<String, CustomTag>,
    pub use_request_id_for_trace_sampling: Option<bool>,
    pub enable_istio_tags: Option<bool>,
    pub disable_context_propagation: Option<bool>,
}

/// A span tag: at most one of its sources (the CRD's `oneOf` also allows none).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct CustomTag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<ValueFromSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<ValueFromSource>,
    /// An Envoy formatter command (`%REQ(x-id)%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatter: Option<LiteralTag>,
}

impl CustomTag {
    pub fn sources_set(&self) -> usize {
        [
            self.literal.is_some(),
            self.environment.is_some(),
            self.header.is_some(),
            self.formatter.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct LiteralTag {
    #[schemars(length(min = 1))]
    pub value: String,
}

/// An environment variable or request header, with a value for when it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ValueFromSource {
    #[schemars(length(min = 1))]
    pub name: String,
    pub default_value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Metrics {
    pub providers: Vec<ProviderRef>,
    pub overrides: Vec<MetricsOverrides>,
    pub reporting_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsOverrides {
    #[serde(rename = "match")]
    pub matches: Option<MetricSelector>,
    pub disabled: Option<bool>,
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override applies to: a standard one or a custom one (or all, with neither).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub custom_metric: Option<String>,
    pub mode: WorkloadMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

/// A metric label to set or drop.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct TagOverride {
    pub operation: TagOperation,
    /// A CEL expression; required by UPSERT and forbidden (even empty) with REMOVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    #[default]
    Upsert,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct AccessLogging {
    #[serde(rename = "match")]
    pub matches: Option<ModeSelector>,
    pub providers: Vec<ProviderRef>,
    pub disabled: Option<bool>,
    pub filter: Option<AccessLogFilter>,
}

/// Logs only the requests for which the CEL `expression` is true.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct AccessLogFilter {
    pub expression: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_section() {
        let t: Telemetry = serde_saphyr::from_str(concat!(
            "selector: {matchLabels: {app: a}}\n",
            "tracing:\n- providers: [{name: otel}]\n  randomSamplingPercentage: 12.5\n",
            "  customTags: {env: {environment: {name: POD, defaultValue: x}}, fmt: {formatter: {value: \"%REQ(x)%\"}}}\n",
            "metrics:\n- overrides:\n  - match: {metric: REQUEST_COUNT, mode: CLIENT}\n    tagOverrides: {a: {operation: REMOVE}}\n",
            "  reportingInterval: 10s\n",
            "accessLogging:\n- match: {mode: SERVER}\n  filter: {expression: \"response.code >= 400\"}\n",
        ))
        .unwrap();
        assert_eq!(t.tracing[0].random_sampling_percentage, Some(12.5));
        assert_eq!(
            t.tracing[0].custom_tags["env"]
                .environment
                .as_ref()
                .map(|e| e.name.as_str()),
            Some("POD")
        );
        assert_eq!(t.tracing[0].custom_tags["fmt"].sources_set(), 1);
        let m = t.metrics[0].overrides[0].matches.as_ref().unwrap();
        assert_eq!(
            (m.metric, m.mode),
            (Some(IstioMetric::RequestCount), WorkloadMode::Client)
        );
        assert_eq!(
            t.metrics[0].overrides[0].tag_overrides["a"],
            TagOverride {
                operation: TagOperation::Remove,
                value: None
            }
        );
        assert_eq!(
            t.metrics[0].reporting_interval.map(|d| d.to_string()),
            Some("10s".into())
        );
        assert_eq!(
            t.access_logging[0].matches.map(|m| m.mode),
            Some(WorkloadMode::Server)
        );
    }
}
