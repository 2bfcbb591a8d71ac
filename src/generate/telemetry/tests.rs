//! Telemetry generation: plans from Telemetry + MeshConfig, and listeners decorated with them.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType as TracerConfig;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::file_access_log::AccessLogFormat;
use envoy_types::pb::google::protobuf::value::Kind;

use super::*;
use crate::config::mesh_config::apply_mesh_yaml;
use crate::index::services::Labels;
use crate::store::Snapshot;

fn index_of(mesh_yaml: &str, manifests: &[&str]) -> Index {
    let snapshot = Snapshot::from_yaml(&manifests.join("---\n"));
    let mesh = apply_mesh_yaml(mesh_yaml, &MeshConfig::default()).unwrap();
    Index::build(&snapshot, &mesh)
}

fn plan_for(index: &Index, namespace: &str, labels: &Labels) -> Plan {
    plan(index, Workload { namespace, labels }, &|_| true)
}

fn app(name: &str) -> Labels {
    [("app".to_string(), name.to_string())]
        .into_iter()
        .collect()
}

fn file_log(log: &AccessLog) -> FileAccessLog {
    assert_eq!(log.name, "envoy.access_loggers.file");
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("{log:?}")
    };
    assert_eq!(any.type_url, FileAccessLog::type_url());
    FileAccessLog::decode(any.value.as_slice()).unwrap()
}

fn text_format(log: &FileAccessLog) -> String {
    let Some(AccessLogFormat::LogFormat(f)) = &log.access_log_format else {
        panic!("{log:?}")
    };
    let Some(substitution_format_string::Format::TextFormatSource(DataSource {
        specifier: Some(data_source::Specifier::InlineString(text)),
        ..
    })) = &f.format
    else {
        panic!("{f:?}")
    };
    text.clone()
}

fn json_labels(log: &FileAccessLog) -> BTreeMap<String, String> {
    let Some(AccessLogFormat::LogFormat(f)) = &log.access_log_format else {
        panic!("{log:?}")
    };
    let Some(substitution_format_string::Format::JsonFormat(s)) = &f.format else {
        panic!("{f:?}")
    };
    s.fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => (k.clone(), s.clone()),
            other => (k.clone(), format!("{other:?}")),
        })
        .collect()
}

const ZIPKIN_SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: zipkin, namespace: istio-system}\nspec:\n  hosts: [zipkin.istio-system.svc.cluster.local]\n  ports: [{number: 9411, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.9}]\n";

const ZIPKIN_MESH: &str = "extensionProviders:\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, maxTagLength: 64}\n";

fn telemetry(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    )
}

#[test]
fn nothing_configured_adds_nothing() {
    let index = index_of("", &[ZIPKIN_SERVICE]);
    assert!(plan_for(&index, "foo", &app("a")).is_empty());
}

#[test]
fn mesh_access_log_file_logs_both_sides_in_istiods_text_format() {
    let index = index_of("accessLogFile: /tmp/access.log\n", &[]);
    let plan = plan_for(&index, "foo", &app("a"));
    assert_eq!(plan.client, plan.server);
    let [log] = plan.client.access_logs.as_slice() else {
        panic!("{plan:?}")
    };
    let file = file_log(log);
    assert_eq!(file.path, "/tmp/access.log");
    assert_eq!(text_format(&file), DEFAULT_TEXT_FORMAT);
    assert!(log.filter.is_none());
    assert!(
        plan.client.tracing.is_none(),
        "no tracer without a provider"
    );

    let custom = index_of(
        "accessLogFile: /dev/stdout\naccessLogFormat: '%RESPONSE_CODE% %REQ(:PATH)%'\n",
        &[],
    );
    let plan = plan_for(&custom, "foo", &app("a"));
    // istiod appends the newline.
    assert_eq!(
        text_format(&file_log(&plan.client.access_logs[0])),
        "%RESPONSE_CODE% %REQ(:PATH)%\n"
    );
}

#[test]
fn json_encoding_uses_istiods_labels_or_the_meshs_and_encodes_them_in_one_order() {
    let index_default = index_of("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n", &[]);
    let plan = plan_for(&index_default, "foo", &app("a"));
    let labels = json_labels(&file_log(&plan.client.access_logs[0]));
    let expected: BTreeMap<String, String> = DEFAULT_JSON_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(labels, expected);

    let yaml = "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{\"zeta\": \"%DURATION%\", \"alpha\": \"%RESPONSE_CODE%\", \"mid\": \"%PROTOCOL%\"}'\n";
    let a = plan_for(&index_of(yaml, &[]), "foo", &app("a"));
    let b = plan_for(&index_of(yaml, &[]), "foo", &app("a"));
    let labels = json_labels(&file_log(&a.client.access_logs[0]));
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        ["alpha", "mid", "zeta"],
        "{labels:?}"
    );
    // Separately built plans (different HashMap hashers in prost) encode to the same bytes.
    assert_eq!(
        a.client.access_logs[0].encode_to_vec(),
        b.client.access_logs[0].encode_to_vec()
    );
}

#[test]
fn telemetry_providers_replace_the_mesh_file_and_carry_their_cel_filter() {
    let mesh = "accessLogFile: /tmp/mesh.log\nextensionProviders:\n- name: json-file\n  envoyFileAccessLog:\n    path: /tmp/json.log\n    logFormat: {labels: {code: '%RESPONSE_CODE%'}}\n";
    let t = telemetry(
        "istio-system",
        "mesh",
        "  accessLogging:\n  - providers: [{name: json-file}]\n    filter: {expression: 'response.code >= 400'}\n    match: {mode: CLIENT}",
    );
    let index = index_of(mesh, &[&t]);
    let plan = plan_for(&index, "foo", &app("a"));
    let [log] = plan.client.access_logs.as_slice() else {
        panic!("{plan:?}")
    };
    let file = file_log(log);
    assert_eq!(file.path, "/tmp/json.log");
    assert_eq!(
        json_labels(&file),
        BTreeMap::from([("code".to_string(), "%RESPONSE_CODE%".to_string())])
    );
    let Some(access_log_filter::FilterSpecifier::ExtensionFilter(ext)) = log
        .filter
        .as_ref()
        .and_then(|f| f.filter_specifier.as_ref())
    else {
        panic!("{log:?}")
    };
    assert_eq!(ext.name, "envoy.access_loggers.extension_filters.cel");
    let Some(extension_filter::ConfigType::TypedConfig(any)) = &ext.config_type else {
        panic!("{ext:?}")
    };
    assert_eq!(
        ExpressionFilter::decode(any.value.as_slice())
            .unwrap()
            .expression,
        "response.code >= 400"
    );
    // The server side has no Telemetry log: istiod falls back to the mesh's file.
    assert_eq!(file_log(&plan.server.access_logs[0]).path, "/tmp/mesh.log");
}

#[test]
fn disabled_logging_leaves_no_log_and_the_builtin_envoy_provider_logs_to_stdout() {
    let t = [
        telemetry(
            "istio-system",
            "mesh",
            "  accessLogging: [{providers: [{name: envoy}]}]",
        ),
        telemetry(
            "foo",
            "quiet",
            "  selector: {matchLabels: {app: quiet}}\n  accessLogging: [{disabled: true}]",
        ),
    ];
    let index = index_of("", &[&t[0], &t[1]]);
    let plan = plan_for(&index, "foo", &app("a"));
    assert_eq!(file_log(&plan.client.access_logs[0]).path, "/dev/stdout");
    let quiet = plan_for(&index, "foo", &app("quiet"));
    assert!(quiet.is_empty(), "{quiet:?}");
}

#[test]
fn zipkin_tracing_points_at_the_collectors_outbound_cluster() {
    let t = telemetry(
        "istio-system",
        "mesh",
        "  tracing:\n  - providers: [{name: zipkin}]\n    randomSamplingPercentage: 100\n    customTags:\n      team: {literal: {value: core}}\n      pod: {environment: {name: POD_NAME, defaultValue: none}}\n      user: {header: {name: x-user}}",
    );
    let index = index_of(ZIPKIN_MESH, &[ZIPKIN_SERVICE, &t]);
    let plan = plan_for(&index, "foo", &app("a"));
    let tracing = plan.client.tracing.as_ref().expect("client tracing");
    assert_eq!(plan.server.tracing.as_ref(), Some(tracing));
    assert_eq!(tracing.random_sampling.map(|p| p.value), Some(100.0));
    assert_eq!(tracing.overall_sampling.map(|p| p.value), Some(100.0));
    assert_eq!(tracing.max_path_tag_length.map(|v| v.value), Some(64));
    let provider = tracing.provider.as_ref().unwrap();
    assert_eq!(provider.name, "envoy.tracers.zipkin");
    let Some(TracerConfig::TypedConfig(any)) = &provider.config_type else {
        panic!("{provider:?}")
    };
    let zipkin = ZipkinConfig::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        zipkin.collector_cluster,
        "outbound|9411||zipkin.istio-system.svc.cluster.local"
    );
    assert_eq!(zipkin.collector_endpoint, "/api/v2/spans");
    assert_eq!(
        zipkin.collector_endpoint_version,
        zipkin_config::CollectorEndpointVersion::HttpJson as i32
    );
    assert_eq!(
        zipkin.collector_hostname,
        "zipkin.istio-system.svc.cluster.local"
    );
    assert!(zipkin.trace_id_128bit);
    let tags: Vec<(String, String)> = tracing
        .custom_tags
        .iter()
        .map(|t| (t.tag.clone(), format!("{:?}", t.r#type)))
        .collect();
    assert_eq!(
        tags.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["pod", "team", "user"]
    );
    assert!(
        tags[0].1.contains("POD_NAME") && tags[0].1.contains("none"),
        "{tags:?}"
    );
    assert!(
        tags[2].1.contains("RequestHeader") && tags[2].1.contains("x-user"),
        "{tags:?}"
    );
}

#[test]
fn sampling_defaults_to_istiods_one_percent() {
    let t = telemetry(
        "istio-system",
        "mesh",
        "  tracing: [{providers: [{name: zipkin}]}]",
    );
    let index = index_of(ZIPKIN_MESH, &[ZIPKIN_SERVICE, &t]);
    let tracing = plan_for(&index, "foo", &app("a")).client.tracing.unwrap();
    assert_eq!(tracing.random_sampling.map(|p| p.value), Some(1.0));
}

#[test]
fn a_collector_the_proxy_has_no_cluster_for_is_skipped() {
    let t = telemetry(
        "istio-system",
        "mesh",
        "  tracing: [{providers: [{name: zipkin}]}]",
    );
    let missing = index_of(ZIPKIN_MESH, &[&t]);
    assert!(plan_for(&missing, "foo", &app("a")).is_empty());

    let index = index_of(ZIPKIN_MESH, &[ZIPKIN_SERVICE, &t]);
    let hidden = plan(
        &index,
        Workload {
            namespace: "foo",
            labels: &app("a"),
        },
        &|host| host != "zipkin.istio-system.svc.cluster.local",
    );
    assert!(hidden.is_empty(), "not in the proxy's scope: {hidden:?}");

    let wrong_port = ZIPKIN_MESH.replace("9411", "9412");
    let index = super::tests::index_of(&wrong_port, &[ZIPKIN_SERVICE, &t]);
    assert!(plan_for(&index, "foo", &app("a")).is_empty());
}

#[test]
fn opentelemetry_exports_over_grpc_to_the_collector_cluster() {
    let mesh = "extensionProviders:\n- name: otel\n  opentelemetry: {service: istio-system/zipkin.istio-system.svc.cluster.local, port: 9411}\n";
    let t = telemetry(
        "foo",
        "app",
        "  selector: {matchLabels: {app: a}}\n  tracing: [{providers: [{name: otel}], match: {mode: SERVER}}]",
    );
    let index = index_of(mesh, &[ZIPKIN_SERVICE, &t]);
    let plan = plan_for(&index, "foo", &app("a"));
    assert!(plan.client.tracing.is_none(), "SERVER mode only");
    let provider = plan.server.tracing.unwrap().provider.unwrap();
    assert_eq!(provider.name, "envoy.tracers.opentelemetry");
    let Some(TracerConfig::TypedConfig(any)) = &provider.config_type else {
        panic!("{provider:?}")
    };
    let otel = OpenTelemetryConfig::decode(any.value.as_slice()).unwrap();
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) =
        otel.grpc_service.and_then(|g| g.target_specifier)
    else {
        panic!("no gRPC exporter")
    };
    assert_eq!(
        grpc.cluster_name,
        "outbound|9411||zipkin.istio-system.svc.cluster.local"
    );
}

fn listener_with(name: &str, filters: Vec<Filter>) -> Arc<Resource> {
    let listener = Listener {
        name: name.into(),
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &listener))
}

fn decoded<M: Message + Default>(map: &ResourceMap, name: &str, filter: usize) -> M {
    let listener: Listener = map[name].decode().unwrap();
    let Some(ConfigType::TypedConfig(any)) = &listener.filter_chains[0].filters[filter].config_type
    else {
        panic!("{listener:?}")
    };
    M::decode(any.value.as_slice()).unwrap()
}

#[test]
fn decorate_adds_each_sides_logs_and_tracing_to_hcms_and_tcp_proxies() {
    let t = [telemetry(
        "istio-system",
        "mesh",
        "  tracing: [{providers: [{name: zipkin}], match: {mode: CLIENT}}]\n  accessLogging: [{providers: [{name: envoy}], match: {mode: SERVER}}]",
    )];
    let index = index_of(ZIPKIN_MESH, &[ZIPKIN_SERVICE, &t[0]]);
    let plan = plan_for(&index, "foo", &app("a"));
    let hcm = crate::generate::listener::http_connection_manager("80", "outbound_0.0.0.0_80");
    let tcp = crate::generate::listener::tcp_proxy("outbound|5432||db");
    let mut listeners: ResourceMap = [
        (
            "out".to_string(),
            listener_with("out", vec![hcm.clone(), tcp.clone()]),
        ),
        ("in".to_string(), listener_with("in", vec![hcm, tcp])),
    ]
    .into_iter()
    .collect();
    let before = listeners.clone();
    decorate(&mut listeners, &plan, |name| {
        if name == "in" {
            Side::Server
        } else {
            Side::Client
        }
    });
    let out: HttpConnectionManager = decoded(&listeners, "out", 0);
    assert!(out.tracing.is_some() && out.access_log.is_empty());
    let out_tcp: TcpProxy = decoded(&listeners, "out", 1);
    assert!(out_tcp.access_log.is_empty());
    let inbound: HttpConnectionManager = decoded(&listeners, "in", 0);
    assert!(inbound.tracing.is_none());
    assert_eq!(file_log(&inbound.access_log[0]).path, "/dev/stdout");
    let in_tcp: TcpProxy = decoded(&listeners, "in", 1);
    assert_eq!(in_tcp.access_log.len(), 1);

    // Decorating again from the same inputs gives the same bytes; an empty plan changes nothing.
    let mut again = before.clone();
    decorate(&mut again, &plan_for(&index, "foo", &app("a")), |name| {
        if name == "in" {
            Side::Server
        } else {
            Side::Client
        }
    });
    assert_eq!(again["in"].hash, listeners["in"].hash);
    let mut untouched = before.clone();
    decorate(&mut untouched, &Plan::default(), |_| Side::Client);
    assert!(Arc::ptr_eq(&untouched["in"], &before["in"]));
}
