//! Access logs and tracing from Telemetry and MeshConfig, as istiod configures them
//! (`accesslog.go`, `telemetry_logging.go`, `tracing.go`), for stock Envoy: file access logs
//! (with CEL filters), and Zipkin or OpenTelemetry (gRPC) tracers whose collector is a mesh
//! service in the proxy's CDS. Telemetry `metrics` need istio's stats filter, which stock
//! Envoy does not have: they are not configured.
//!
//! [`plan`] works out what one proxy's client side (sidecar outbound, gateways) and server side
//! (sidecar inbound) get; [`decorate`] adds it to the HTTP connection managers and TCP proxies
//! of listeners already built, so no listener builder needs to know about telemetry.
//! Re-encoding a decoded listener gives the same bytes: pilotfish's listeners hold no protobuf
//! maps, and the one map telemetry adds (a JSON log format) is encoded key by key, sorted.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ExtensionFilter, access_log, access_log_filter, extension_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, GrpcService, SubstitutionFormatString, data_source, grpc_service,
    substitution_format_string,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::trace::v3::{
    OpenTelemetryConfig, ZipkinConfig, tracing::Http, tracing::http, zipkin_config,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};
use serde_json::Value;

use crate::config::istio::telemetry::CustomTag as TelemetryTag;
use crate::index::Index;
use crate::index::security::Workload;
use crate::index::telemetry::{self, Side, Telemetries, TracingSpec};
use crate::model::mesh::{
    AccessLogEncoding, BUILTIN_ENVOY_PROVIDER, CollectorService, LogFormat, MeshConfig,
    ProviderKind,
};
use crate::xds::{Resource, ResourceMap};

use super::names;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";
const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";
const ZIPKIN: &str = "envoy.tracers.zipkin";
const OPENTELEMETRY: &str = "envoy.tracers.opentelemetry";

/// istiod's text access log format (`EnvoyTextLogFormat`).
pub const DEFAULT_TEXT_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" ",
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ",
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" ",
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% ",
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ",
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
);

/// istiod's JSON access log labels (`EnvoyJSONLogFormatIstio`).
pub const DEFAULT_JSON_LABELS: [(&str, &str); 24] = [
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
];

/// istiod's sampling when neither Telemetry nor the provider sets one (`PILOT_TRACE_SAMPLING`).
const DEFAULT_SAMPLING: f64 = 1.0;

/// What one side's listeners get.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoration {
    /// For HTTP connection managers and TCP proxies alike (file logs fit both).
    pub access_logs: Vec<AccessLog>,
    pub tracing: Option<http_connection_manager::Tracing>,
}

impl Decoration {
    fn is_empty(&self) -> bool {
        self.access_logs.is_empty() && self.tracing.is_none()
    }
}

/// What a proxy's client-side and server-side listeners get.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub client: Decoration,
    pub server: Decoration,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.client.is_empty() && self.server.is_empty()
    }

    fn side(&self, side: Side) -> &Decoration {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }
}

/// The telemetry of a proxy in `workload`, whose CDS has the clusters of the services `sees`
/// accepts.
pub fn plan(index: &Index, workload: Workload<'_>, sees: &dyn Fn(&str) -> bool) -> Plan {
    let mesh = &index.mesh;
    let applied = telemetry::applying(index.snapshot(), &mesh.root_namespace, workload);
    let collectors = Collectors { index, sees };
    let tracing = applied.tracing(mesh);
    let decoration = |side: Side| Decoration {
        access_logs: access_logs(mesh, &applied, side),
        tracing: tracing
            .as_ref()
            .and_then(|t| hcm_tracing(mesh, t.side(side), &applied, &collectors)),
    };
    Plan {
        client: decoration(Side::Client),
        server: decoration(Side::Server),
    }
}

/// Adds `plan` to every HTTP connection manager and TCP proxy of `listeners`; `side` tells
/// which side a listener (by name) serves.
pub fn decorate(listeners: &mut ResourceMap, plan: &Plan, side: impl Fn(&str) -> Side) {
    if plan.is_empty() {
        return;
    }
    for (name, resource) in listeners.iter_mut() {
        let decoration = plan.side(side(name));
        if decoration.is_empty() {
            continue;
        }
        let Ok(mut listener) = resource.decode::<Listener>() else {
            tracing::warn!(listener = %name, "listener does not decode; telemetry not added");
            continue;
        };
        let filters = listener
            .filter_chains
            .iter_mut()
            .chain(listener.default_filter_chain.iter_mut())
            .flat_map(|c| c.filters.iter_mut());
        for filter in filters {
            decorate_filter(filter, decoration);
        }
        *resource = Arc::new(Resource::encode(name.clone(), &listener));
    }
}

fn decorate_filter(filter: &mut Filter, decoration: &Decoration) {
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return;
    };
    let any = match filter.name.as_str() {
        HCM => {
            let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                return;
            };
            hcm.access_log
                .extend(decoration.access_logs.iter().cloned());
            if let Some(t) = &decoration.tracing {
                hcm.tracing = Some(t.clone());
            }
            pack_any(hcm)
        }
        TCP_PROXY if !decoration.access_logs.is_empty() => {
            let Ok(mut proxy) = TcpProxy::decode(any.value.as_slice()) else {
                return;
            };
            proxy
                .access_log
                .extend(decoration.access_logs.iter().cloned());
            pack_any(proxy)
        }
        _ => return,
    };
    filter.config_type = Some(ConfigType::TypedConfig(any));
}

/// istiod's access logs for one side: Telemetry's providers, or without Telemetry (or when
/// it leaves none) the mesh's `accessLogFile`.
fn access_logs(mesh: &MeshConfig, applied: &Telemetries<'_>, side: Side) -> Vec<AccessLog> {
    let from_telemetry: Vec<AccessLog> = applied
        .access_logging(mesh, side)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, filter)| {
            let log = provider_access_log(mesh, &name, applied)?;
            Some(with_filter(log, filter))
        })
        .collect();
    if !from_telemetry.is_empty() {
        return from_telemetry;
    }
    // istiod falls back to the mesh setting whenever Telemetry leaves no log.
    if mesh.access_log_file.is_empty() {
        return Vec::new();
    }
    vec![mesh_file_access_log(&mesh.access_log_file, mesh)]
}

fn provider_access_log(
    mesh: &MeshConfig,
    name: &str,
    applied: &Telemetries<'_>,
) -> Option<AccessLog> {
    let Some(provider) = mesh.provider(name) else {
        tracing::warn!(telemetry = %levels(applied), provider = name, "access log provider is not in meshConfig.extensionProviders; skipped");
        return None;
    };
    match &provider.kind {
        ProviderKind::FileAccessLog { path, format } => {
            let path = if path.is_empty() { "/dev/stdout" } else { path };
            Some(match format {
                LogFormat::Default if provider.name == BUILTIN_ENVOY_PROVIDER => {
                    mesh_file_access_log(path, mesh)
                }
                LogFormat::Default => file_access_log(path, &TextOrJson::Text(DEFAULT_TEXT_FORMAT)),
                LogFormat::Text(text) => file_access_log(path, &TextOrJson::Text(text)),
                LogFormat::Labels(json) => file_access_log(path, &TextOrJson::Json(json)),
            })
        }
        ProviderKind::Unsupported(kind) => {
            tracing::warn!(telemetry = %levels(applied), provider = name, kind = %kind, "access log provider kind is not supported on stock Envoy; skipped");
            None
        }
        // Tracing providers log nothing (istiod ignores them here too).
        ProviderKind::Zipkin(_) | ProviderKind::OpenTelemetry(_) => None,
    }
}

/// `namespace/name` of each applying Telemetry, for warnings.
fn levels(applied: &Telemetries<'_>) -> String {
    let names: Vec<String> = [applied.root, applied.namespace, applied.workload]
        .into_iter()
        .flatten()
        .map(|t| format!("{}/{}", t.namespace, t.name))
        .collect();
    if names.is_empty() {
        "meshConfig.defaultProviders".into()
    } else {
        names.join(",")
    }
}

fn with_filter(mut log: AccessLog, expression: Option<String>) -> AccessLog {
    if let Some(expression) = expression.filter(|e| !e.is_empty()) {
        let cel = ExpressionFilter {
            expression,
            ..Default::default()
        };
        log.filter = Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                ExtensionFilter {
                    name: CEL_FILTER.into(),
                    config_type: Some(extension_filter::ConfigType::TypedConfig(pack_any(cel))),
                },
            )),
        });
    }
    log
}

enum TextOrJson<'a> {
    Text(&'a str),
    /// A JSON object of labels.
    Json(&'a str),
}

/// istiod's `FileAccessLogFromMeshConfig`: the mesh's format and encoding, or istiod's default.
/// A JSON format that does not parse was refused with the mesh config.
pub fn mesh_file_access_log(path: &str, mesh: &MeshConfig) -> AccessLog {
    let format = match (mesh.access_log_encoding, mesh.access_log_format.as_str()) {
        (AccessLogEncoding::Text, "") => TextOrJson::Text(DEFAULT_TEXT_FORMAT),
        (AccessLogEncoding::Text, text) => TextOrJson::Text(text),
        (AccessLogEncoding::Json, "") => TextOrJson::Json(""),
        (AccessLogEncoding::Json, labels) => TextOrJson::Json(labels),
    };
    file_access_log(path, &format)
}

fn file_access_log(path: &str, format: &TextOrJson<'_>) -> AccessLog {
    let head = FileAccessLog {
        path: path.to_string(),
        access_log_format: None,
    };
    let mut value = head.encode_to_vec();
    let format_bytes = match format {
        TextOrJson::Text(text) => {
            // istiod appends the newline Envoy does not add.
            let mut text = text.to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(text)),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }
            .encode_to_vec()
        }
        TextOrJson::Json(labels) => {
            let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(labels)
                .ok()
                .filter(|m: &serde_json::Map<_, _>| !m.is_empty());
            let labels = parsed.unwrap_or_else(|| {
                DEFAULT_JSON_LABELS
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect()
            });
            // SubstitutionFormatString.json_format (2): a Struct, encoded in key order.
            let mut bytes = Vec::new();
            length_delimited(2, &encode_struct(&labels), &mut bytes);
            bytes
        }
    };
    // FileAccessLog.log_format (5).
    length_delimited(5, &format_bytes, &mut value);
    AccessLog {
        name: FILE_ACCESS_LOG.into(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: FileAccessLog::type_url(),
            value,
        })),
    }
}

fn length_delimited(tag: u32, body: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A `google.protobuf.Struct` with its fields in key order (prost would write its `HashMap`
/// in hasher order, a different byte string each time).
fn encode_struct(fields: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        length_delimited(2, &encode_value(&fields[key]), &mut entry);
        length_delimited(1, &entry, &mut out);
    }
    out
}

/// A `google.protobuf.Value`.
fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Null => prost::encoding::int32::encode(1, &0, &mut out),
        Value::Number(n) => {
            prost::encoding::double::encode(2, &n.as_f64().unwrap_or(0.0), &mut out)
        }
        Value::String(s) => prost::encoding::string::encode(3, s, &mut out),
        Value::Bool(b) => prost::encoding::bool::encode(4, b, &mut out),
        Value::Object(m) => length_delimited(5, &encode_struct(m), &mut out),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                length_delimited(1, &encode_value(item), &mut list);
            }
            length_delimited(6, &list, &mut out);
        }
    }
    out
}

/// Finds a provider's collector cluster as istiod's `LookupCluster` does, and only if the
/// proxy has it.
struct Collectors<'a> {
    index: &'a Index,
    sees: &'a dyn Fn(&str) -> bool,
}

impl Collectors<'_> {
    /// `(hostname, cluster)`, or why there is none.
    fn cluster(&self, collector: &CollectorService) -> Result<(String, String), String> {
        let (namespace, host) = match collector.service.split_once('/') {
            Some((ns, host)) => (Some(ns), host),
            None => (None, collector.service.as_str()),
        };
        let service = self
            .index
            .service(host)
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .ok_or_else(|| {
                format!(
                    "service {} is not in the service registry",
                    collector.service
                )
            })?;
        if service.port(collector.port).is_none() {
            return Err(format!(
                "service {} has no port {}",
                collector.service, collector.port
            ));
        }
        if !(self.sees)(&service.hostname) {
            return Err(format!(
                "service {} is not visible to the proxy",
                collector.service
            ));
        }
        Ok((
            service.hostname.clone(),
            names::outbound_cluster(collector.port, "", &service.hostname),
        ))
    }
}

/// istiod's `configureFromProviderConfig` + sampling and custom tags, for one side; `None` when
/// the side does not trace or its provider cannot be configured (warned, naming the
/// Telemetries and the provider).
fn hcm_tracing(
    mesh: &MeshConfig,
    spec: &TracingSpec,
    applied: &Telemetries<'_>,
    collectors: &Collectors<'_>,
) -> Option<http_connection_manager::Tracing> {
    if spec.disabled {
        return None;
    }
    let name = spec.provider.as_deref()?;
    let warn = |why: &str| {
        tracing::warn!(telemetry = %levels(applied), provider = name, "tracing provider skipped: {why}");
    };
    let Some(provider) = mesh.provider(name) else {
        warn("not in meshConfig.extensionProviders");
        return None;
    };
    let (tracer, max_tag_length) = match &provider.kind {
        ProviderKind::Zipkin(z) => {
            let (hostname, cluster) = collectors
                .cluster(&z.collector)
                .map_err(|e| warn(&e))
                .ok()?;
            let config = ZipkinConfig {
                collector_cluster: cluster,
                collector_endpoint: if z.path.is_empty() {
                    "/api/v2/spans".into()
                } else {
                    z.path.clone()
                },
                collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson
                    as i32,
                collector_hostname: hostname,
                trace_id_128bit: !z.trace_id_64bit,
                shared_span_context: Some(BoolValue { value: false }),
                ..Default::default()
            };
            ((ZIPKIN, pack_any(config)), z.collector.max_tag_length)
        }
        ProviderKind::OpenTelemetry(c) => {
            let (hostname, cluster) = collectors.cluster(c).map_err(|e| warn(&e)).ok()?;
            let config = OpenTelemetryConfig {
                grpc_service: Some(GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: cluster,
                            authority: hostname,
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            };
            ((OPENTELEMETRY, pack_any(config)), c.max_tag_length)
        }
        ProviderKind::Unsupported(kind) => {
            warn(&format!("{kind} is not supported on stock Envoy"));
            return None;
        }
        ProviderKind::FileAccessLog { .. } => {
            warn("an access log provider does not trace");
            return None;
        }
    };
    let percent = |value: f64| Some(Percent { value });
    Some(http_connection_manager::Tracing {
        client_sampling: percent(100.0),
        random_sampling: percent(spec.random_sampling_percentage.unwrap_or(DEFAULT_SAMPLING)),
        overall_sampling: percent(100.0),
        max_path_tag_length: (max_tag_length != 0).then_some(UInt32Value {
            value: max_tag_length,
        }),
        custom_tags: custom_tags(&spec.custom_tags, applied),
        provider: Some(Http {
            name: tracer.0.into(),
            config_type: Some(http::ConfigType::TypedConfig(tracer.1)),
        }),
        ..Default::default()
    })
}

/// Literal, environment and header tags, in name order (istiod sorts them too).
fn custom_tags(tags: &BTreeMap<String, TelemetryTag>, applied: &Telemetries<'_>) -> Vec<CustomTag> {
    tags.iter()
        .filter_map(|(name, tag)| {
            let r#type = if let Some(l) = &tag.literal {
                custom_tag::Type::Literal(custom_tag::Literal {
                    value: l.value.clone(),
                })
            } else if let Some(e) = &tag.environment {
                custom_tag::Type::Environment(custom_tag::Environment {
                    name: e.name.clone(),
                    default_value: e.default_value.clone(),
                })
            } else if let Some(h) = &tag.header {
                custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: h.name.clone(),
                    default_value: h.default_value.clone(),
                })
            } else {
                if tag.formatter.is_some() {
                    tracing::warn!(telemetry = %levels(applied), tag = %name, "formatter custom tags are not supported; skipped");
                }
                return None;
            };
            Some(CustomTag {
                tag: name.clone(),
                r#type: Some(r#type),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
