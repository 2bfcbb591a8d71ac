//! Istio's mesh config as istiod reads it: the `mesh` key of ConfigMap `istio` in istiod's
//! namespace, a YAML `MeshConfig` applied over istiod's defaults.
//!
//! Only the fields pilotfish uses are read. The hundreds of others are ignored silently, as
//! istiod ignores fields it does not know. A field pilotfish reads that is malformed fails the
//! whole document with an error naming the ConfigMap and the field, so the caller keeps the
//! mesh config it had (istiod keeps its previous one too).

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::kube::ConfigMap;
use super::parse::first_line;
use super::{Kind, Meta, ObjectKey};
use crate::model::host::is_dns1123_label;
use crate::model::mesh::{
    AccessLogEncoding, CollectorService, DefaultProviders, ExtensionProvider, LogFormat,
    MeshConfig, OutboundTrafficMode, ProviderKind, ZipkinProvider, builtin_providers,
};

/// The ConfigMap istiod reads its mesh config from (revisioned installs use `istio-<rev>`,
/// which pilotfish does not read).
pub const CONFIG_MAP_NAME: &str = "istio";
/// The ConfigMap key holding the MeshConfig YAML.
pub const MESH_KEY: &str = "mesh";

/// The key of the mesh ConfigMap in `namespace` (istiod's own, usually `istio-system`).
pub fn config_map_key(namespace: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::ConfigMap,
        namespace: namespace.to_string(),
        name: CONFIG_MAP_NAME.to_string(),
    }
}

/// A mesh config that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", Location(.config_map, .field))]
pub struct MeshConfigError {
    /// `namespace/name` of the ConfigMap; empty for YAML given directly.
    pub config_map: String,
    /// Path in the MeshConfig document (`outboundTrafficPolicy.mode`); empty when the document
    /// as a whole is wrong.
    pub field: String,
    pub message: String,
}

/// Formats `ns/name: data.mesh: field: ` for what is known.
struct Location<'a>(&'a String, &'a String);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() {
            write!(f, "{}: data.{MESH_KEY}: ", self.0)?;
        }
        if !self.1.is_empty() {
            write!(f, "{}: ", self.1)?;
        }
        Ok(())
    }
}

/// The MeshConfig fields pilotfish reads. Protobuf JSON accepts the proto field names too,
/// hence the snake_case aliases.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MeshDoc {
    #[serde(alias = "root_namespace")]
    root_namespace: Option<String>,
    #[serde(alias = "trust_domain")]
    trust_domain: Option<String>,
    #[serde(alias = "outbound_traffic_policy")]
    outbound_traffic_policy: Option<OutboundTrafficPolicyDoc>,
    #[serde(alias = "default_service_export_to")]
    default_service_export_to: Option<Vec<String>>,
    #[serde(alias = "default_virtual_service_export_to")]
    default_virtual_service_export_to: Option<Vec<String>>,
    #[serde(alias = "default_destination_rule_export_to")]
    default_destination_rule_export_to: Option<Vec<String>>,
    #[serde(alias = "access_log_file")]
    access_log_file: Option<String>,
    #[serde(alias = "access_log_format")]
    access_log_format: Option<String>,
    /// `TEXT`/`JSON` or their numbers; checked in [`apply_mesh_yaml`].
    #[serde(alias = "access_log_encoding")]
    access_log_encoding: Option<Value>,
    #[serde(alias = "enable_tracing")]
    enable_tracing: Option<bool>,
    #[serde(alias = "default_providers")]
    default_providers: Option<DefaultProvidersDoc>,
    #[serde(alias = "extension_providers")]
    extension_providers: Option<Vec<ExtensionProviderDoc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DefaultProvidersDoc {
    tracing: Vec<String>,
    #[serde(alias = "access_logging")]
    access_logging: Vec<String>,
    metrics: Vec<String>,
}

/// One provider: a name and exactly one kind. The kinds pilotfish does not configure land in
/// `other`, to be reported by name.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ExtensionProviderDoc {
    name: String,
    #[serde(alias = "envoy_file_access_log")]
    envoy_file_access_log: Option<FileAccessLogDoc>,
    zipkin: Option<ZipkinDoc>,
    opentelemetry: Option<OpenTelemetryDoc>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FileAccessLogDoc {
    path: String,
    #[serde(alias = "log_format")]
    log_format: Option<LogFormatDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LogFormatDoc {
    text: Option<String>,
    labels: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ZipkinDoc {
    service: String,
    port: u32,
    #[serde(alias = "max_tag_length")]
    max_tag_length: u32,
    path: String,
    #[serde(rename = "enable64bitTraceId", alias = "enable_64bit_trace_id")]
    enable_64bit_trace_id: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct OpenTelemetryDoc {
    service: String,
    port: u32,
    #[serde(alias = "max_tag_length")]
    max_tag_length: u32,
    http: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OutboundTrafficPolicyDoc {
    mode: Option<OutboundTrafficMode>,
}

/// The mesh config from ConfigMap `meta`/`cm` over `base`. `base` must be the config without
/// any ConfigMap (command-line settings and defaults), not a previous result: a field removed
/// from the ConfigMap goes back to its default, as in istiod. `domain_suffix` always comes from
/// `base`. A ConfigMap without a `mesh` key gives `base`.
pub fn from_config_map(
    meta: &Meta,
    cm: &ConfigMap,
    base: &MeshConfig,
) -> Result<MeshConfig, MeshConfigError> {
    let Some(yaml) = cm.data.get(MESH_KEY) else {
        return Ok(base.clone());
    };
    apply_mesh_yaml(yaml, base).map_err(|e| MeshConfigError {
        config_map: format!("{}/{}", meta.namespace, meta.name),
        ..e
    })
}

/// Applies a MeshConfig YAML document over `base`: the fields it sets replace `base`'s
/// (a nested message such as `outboundTrafficPolicy` is replaced whole, as protobuf JSON does,
/// so `outboundTrafficPolicy: {}` means `REGISTRY_ONLY`); `null` leaves a field as it was.
pub fn apply_mesh_yaml(yaml: &str, base: &MeshConfig) -> Result<MeshConfig, MeshConfigError> {
    let err = |field: &str, message: String| MeshConfigError {
        config_map: String::new(),
        field: field.to_string(),
        message,
    };
    let value: Value = if yaml
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        Value::Null
    } else {
        serde_saphyr::from_str(yaml)
            .map_err(|e| err("", format!("invalid YAML: {}", first_line(&e.to_string()))))?
    };
    let doc: MeshDoc = match value {
        Value::Null => return Ok(base.clone()),
        Value::Object(_) => serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            err(if path == "." { "" } else { &path }, e.inner().to_string())
        })?,
        _ => return Err(err("", "must be a mapping of MeshConfig fields".into())),
    };

    let mut mesh = base.clone();
    if let Some(ns) = doc.root_namespace.filter(|ns| !ns.is_empty()) {
        if !is_dns1123_label(&ns) {
            return Err(err(
                "rootNamespace",
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        mesh.root_namespace = ns;
    }
    if let Some(td) = doc.trust_domain {
        validate_trust_domain(&td).map_err(|m| err("trustDomain", m))?;
        mesh.trust_domain = td;
    }
    if let Some(policy) = doc.outbound_traffic_policy {
        mesh.outbound_traffic_policy = policy.mode.unwrap_or(OutboundTrafficMode::RegistryOnly);
    }
    for (list, target) in [
        (
            doc.default_service_export_to,
            &mut mesh.default_service_export_to,
        ),
        (
            doc.default_virtual_service_export_to,
            &mut mesh.default_virtual_service_export_to,
        ),
        (
            doc.default_destination_rule_export_to,
            &mut mesh.default_destination_rule_export_to,
        ),
    ] {
        // An empty list exports as no list does: to every namespace.
        if let Some(list) = list {
            *target = if list.is_empty() {
                vec!["*".to_string()]
            } else {
                list
            };
        }
    }
    if let Some(file) = doc.access_log_file {
        mesh.access_log_file = file;
    }
    if let Some(format) = doc.access_log_format {
        mesh.access_log_format = format;
    }
    if let Some(encoding) = doc.access_log_encoding.filter(|v| !v.is_null()) {
        mesh.access_log_encoding = match &encoding {
            Value::String(s) if s == "TEXT" => AccessLogEncoding::Text,
            Value::String(s) if s == "JSON" => AccessLogEncoding::Json,
            Value::Number(n) if n.as_u64() == Some(0) => AccessLogEncoding::Text,
            Value::Number(n) if n.as_u64() == Some(1) => AccessLogEncoding::Json,
            other => {
                return Err(err(
                    "accessLogEncoding",
                    format!("unknown value {other}, expected TEXT or JSON"),
                ));
            }
        };
    }
    if mesh.access_log_encoding == AccessLogEncoding::Json
        && !mesh.access_log_format.is_empty()
        && !serde_json::from_str::<Value>(&mesh.access_log_format).is_ok_and(|v| v.is_object())
    {
        return Err(err(
            "accessLogFormat",
            "with accessLogEncoding JSON the format must be a JSON object of labels".into(),
        ));
    }
    if let Some(enabled) = doc.enable_tracing {
        mesh.enable_tracing = enabled;
    }
    if let Some(d) = doc.default_providers {
        mesh.default_providers = DefaultProviders {
            tracing: d.tracing,
            access_logging: d.access_logging,
            metrics: d.metrics,
        };
    }
    if let Some(providers) = doc.extension_providers {
        let mut parsed: Vec<ExtensionProvider> = Vec::with_capacity(providers.len());
        for (i, p) in providers.into_iter().enumerate() {
            let provider = extension_provider(p).map_err(|(field, message)| {
                err(&format!("extensionProviders[{i}]{field}"), message)
            })?;
            if parsed.iter().any(|q| q.name == provider.name) {
                return Err(err(
                    &format!("extensionProviders[{i}].name"),
                    format!("duplicate provider name {:?}", provider.name),
                ));
            }
            parsed.push(provider);
        }
        // istiod keeps its built-in providers unless the mesh config names its own.
        for builtin in builtin_providers() {
            if !parsed.iter().any(|p| p.name == builtin.name) {
                parsed.push(builtin);
            }
        }
        mesh.extension_providers = parsed;
    }
    Ok(mesh)
}

/// One `extensionProviders` entry, or the field under it that is wrong and why.
fn extension_provider(doc: ExtensionProviderDoc) -> Result<ExtensionProvider, (String, String)> {
    if doc.name.is_empty() {
        return Err((".name".into(), "a provider needs a name".into()));
    }
    let mut kinds: Vec<ProviderKind> = Vec::new();
    if let Some(file) = doc.envoy_file_access_log {
        let format = match file.log_format {
            None => LogFormat::Default,
            Some(LogFormatDoc {
                text: Some(text), ..
            }) if !text.is_empty() => LogFormat::Text(text),
            // No labels means istiod's default JSON labels (generation reads `{}` so).
            // serde_json's map is ordered by key: the text is canonical.
            Some(LogFormatDoc {
                labels: Some(labels),
                ..
            }) => LogFormat::Labels(Value::Object(labels).to_string()),
            Some(_) => LogFormat::Default,
        };
        kinds.push(ProviderKind::FileAccessLog {
            path: file.path,
            format,
        });
    }
    if let Some(z) = doc.zipkin {
        kinds.push(ProviderKind::Zipkin(ZipkinProvider {
            collector: collector(&z.service, z.port, z.max_tag_length, ".zipkin")?,
            path: z.path,
            trace_id_64bit: z.enable_64bit_trace_id,
        }));
    }
    if let Some(o) = doc.opentelemetry {
        kinds.push(if o.http.is_some_and(|h| !h.is_null()) {
            ProviderKind::Unsupported("opentelemetry.http".into())
        } else {
            ProviderKind::OpenTelemetry(collector(
                &o.service,
                o.port,
                o.max_tag_length,
                ".opentelemetry",
            )?)
        });
    }
    kinds.extend(
        doc.other
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| ProviderKind::Unsupported(k)),
    );
    match kinds.len() {
        1 => Ok(ExtensionProvider {
            name: doc.name,
            kind: kinds.remove(0),
        }),
        0 => Err((
            String::new(),
            format!("provider {:?} sets no provider kind", doc.name),
        )),
        _ => Err((
            String::new(),
            format!("provider {:?} sets more than one provider kind", doc.name),
        )),
    }
}

fn collector(
    service: &str,
    port: u32,
    max_tag_length: u32,
    field: &str,
) -> Result<CollectorService, (String, String)> {
    if service.is_empty() {
        return Err((format!("{field}.service"), "must name a service".into()));
    }
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            (
                format!("{field}.port"),
                format!("{port} is not a port number (1-65535)"),
            )
        })?;
    Ok(CollectorService {
        service: service.to_string(),
        port,
        max_tag_length,
    })
}

/// istiod's `ValidateTrustDomain`: DNS-1123 labels joined by dots, a trailing dot allowed.
fn validate_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let last = labels.len() - 1;
    let ok = labels
        .iter()
        .enumerate()
        .all(|(i, l)| (i == last && l.is_empty()) || is_dns1123_label(l));
    if ok {
        Ok(())
    } else {
        Err(format!("trust domain name {domain:?} invalid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(yaml: &str) -> Result<MeshConfig, MeshConfigError> {
        apply_mesh_yaml(yaml, &MeshConfig::default())
    }

    #[test]
    fn reads_the_fields_pilotfish_uses_and_ignores_the_rest() {
        let mesh = apply(
            "accessLogFile: /dev/stdout\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  tracing: {zipkin: {address: z:9411}}\nenableAutoMtls: true\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nrootNamespace: mesh-root\ntrustDomain: example.org\ndefaultServiceExportTo: [\".\"]\ndefaultVirtualServiceExportTo: [\"*\"]\ndefaultDestinationRuleExportTo: [\".\", istio-system]\n",
        )
        .unwrap();
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(mesh.root_namespace, "mesh-root");
        assert_eq!(mesh.trust_domain, "example.org");
        assert_eq!(mesh.default_service_export_to, vec!["."]);
        assert_eq!(mesh.default_virtual_service_export_to, vec!["*"]);
        assert_eq!(
            mesh.default_destination_rule_export_to,
            vec![".", "istio-system"]
        );
        assert_eq!(mesh.domain_suffix, "cluster.local");
    }

    #[test]
    fn absent_and_empty_documents_keep_the_defaults() {
        let defaults = MeshConfig::default();
        assert_eq!(apply("").unwrap(), defaults);
        assert_eq!(apply("# nothing\n").unwrap(), defaults);
        assert_eq!(apply("{}").unwrap(), defaults);
        assert_eq!(
            apply("outboundTrafficPolicy: null\ntrustDomain: null\n").unwrap(),
            defaults
        );
        assert_eq!(
            apply("defaultServiceExportTo: []\n")
                .unwrap()
                .default_service_export_to,
            vec!["*"]
        );
        assert_eq!(
            apply("rootNamespace: \"\"\n").unwrap().root_namespace,
            "istio-system"
        );
    }

    #[test]
    fn a_nested_message_is_replaced_whole() {
        // protobuf's zero value for the mode is REGISTRY_ONLY.
        assert_eq!(
            apply("outboundTrafficPolicy: {}\n")
                .unwrap()
                .outbound_traffic_policy,
            OutboundTrafficMode::RegistryOnly
        );
        let base = MeshConfig {
            outbound_traffic_policy: OutboundTrafficMode::RegistryOnly,
            ..MeshConfig::default()
        };
        let mesh = apply_mesh_yaml("outboundTrafficPolicy: {mode: ALLOW_ANY}\n", &base).unwrap();
        assert_eq!(mesh.outbound_traffic_policy, OutboundTrafficMode::AllowAny);
    }

    #[test]
    fn proto_field_names_and_enum_numbers() {
        let mesh = apply("outbound_traffic_policy: {mode: 0}\ntrust_domain: td.local\n").unwrap();
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(mesh.trust_domain, "td.local");
    }

    #[test]
    fn malformed_known_fields_name_the_field() {
        let e = apply("outboundTrafficPolicy:\n  mode: FOO\n").unwrap_err();
        assert_eq!(e.field, "outboundTrafficPolicy.mode");
        assert_eq!(
            e.to_string(),
            "outboundTrafficPolicy.mode: unknown variant \"FOO\", expected ALLOW_ANY or REGISTRY_ONLY"
        );
        assert_eq!(
            apply("trustDomain: [a]\n").unwrap_err().field,
            "trustDomain"
        );
        assert_eq!(
            apply("trustDomain: \"\"\n").unwrap_err().field,
            "trustDomain"
        );
        assert_eq!(
            apply("trustDomain: bad_domain\n").unwrap_err().field,
            "trustDomain"
        );
        assert_eq!(
            apply("rootNamespace: Not_A_Namespace\n").unwrap_err().field,
            "rootNamespace"
        );
        assert_eq!(
            apply("defaultServiceExportTo: \"*\"\n").unwrap_err().field,
            "defaultServiceExportTo"
        );
        assert_eq!(
            apply("outboundTrafficPolicy: ALLOW_ANY\n")
                .unwrap_err()
                .field,
            "outboundTrafficPolicy"
        );
        let whole = apply("- a\n- b\n").unwrap_err();
        assert!(
            whole.field.is_empty() && whole.message.contains("mapping"),
            "{whole}"
        );
        let syntax = apply("a: [unclosed\n").unwrap_err();
        assert!(syntax.message.starts_with("invalid YAML"), "{syntax}");
    }

    #[test]
    fn from_a_config_map() {
        let meta = Meta {
            name: "istio".into(),
            namespace: "istio-system".into(),
            ..Meta::default()
        };
        let cm = |mesh: &str| ConfigMap {
            data: [(MESH_KEY.to_string(), mesh.to_string())]
                .into_iter()
                .collect(),
        };
        let base = MeshConfig {
            domain_suffix: "corp.local".into(),
            ..MeshConfig::default()
        };
        let mesh = from_config_map(&meta, &cm("trustDomain: corp.example\n"), &base).unwrap();
        assert_eq!(
            (mesh.trust_domain.as_str(), mesh.domain_suffix.as_str()),
            ("corp.example", "corp.local")
        );
        assert_eq!(
            from_config_map(&meta, &ConfigMap::default(), &base).unwrap(),
            base
        );
        let e =
            from_config_map(&meta, &cm("outboundTrafficPolicy: {mode: FOO}\n"), &base).unwrap_err();
        assert_eq!(
            e.to_string(),
            "istio-system/istio: data.mesh: outboundTrafficPolicy.mode: unknown variant \"FOO\", expected ALLOW_ANY or REGISTRY_ONLY"
        );
        assert_eq!(
            config_map_key("istio-system").to_string(),
            "ConfigMap istio-system/istio"
        );
    }

    #[test]
    fn telemetry_settings_and_extension_providers() {
        let mesh = apply(concat!(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
            "accessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\nenableTracing: false\n",
            "defaultProviders: {tracing: [zipkin], accessLogging: [envoy]}\n",
            "extensionProviders:\n",
            "- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n",
            "- name: otel\n  opentelemetry: {service: otel/collector.otel.svc.cluster.local, port: 4317, maxTagLength: 99}\n",
            "- name: json\n  envoyFileAccessLog: {path: /tmp/x, logFormat: {labels: {z: a, b: c}}}\n",
            "- name: als\n  envoyHttpAls: {service: als, port: 9000}\n",
        ))
        .unwrap();
        assert_eq!(mesh.access_log_file, "/dev/stdout");
        assert_eq!(mesh.access_log_encoding, AccessLogEncoding::Json);
        assert!(!mesh.enable_tracing);
        assert_eq!(mesh.default_providers.tracing, ["zipkin"]);
        assert_eq!(mesh.default_providers.access_logging, ["envoy"]);
        assert_eq!(mesh.default_providers.metrics, Vec::<String>::new());
        let kinds: Vec<(&str, &ProviderKind)> = mesh
            .extension_providers
            .iter()
            .map(|p| (p.name.as_str(), &p.kind))
            .collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(
            kinds[0].1,
            &ProviderKind::Zipkin(ZipkinProvider {
                collector: CollectorService {
                    service: "zipkin.istio-system.svc.cluster.local".into(),
                    port: 9411,
                    max_tag_length: 0
                },
                path: String::new(),
                trace_id_64bit: false,
            })
        );
        assert!(
            matches!(kinds[1].1, ProviderKind::OpenTelemetry(c) if c.port == 4317 && c.max_tag_length == 99)
        );
        // Labels are kept as canonical (key-sorted) JSON.
        assert_eq!(
            kinds[2].1,
            &ProviderKind::FileAccessLog {
                path: "/tmp/x".into(),
                format: LogFormat::Labels(r#"{"b":"c","z":"a"}"#.into())
            }
        );
        assert_eq!(
            kinds[3].1,
            &ProviderKind::Unsupported("envoyHttpAls".into())
        );
        // istiod's built-in providers stay.
        assert_eq!(
            (kinds[4].0, kinds[5].0),
            ("prometheus", "envoy"),
            "{kinds:?}"
        );
        assert_eq!(
            mesh.provider("ENVOY").map(|p| &p.kind),
            Some(&ProviderKind::FileAccessLog {
                path: "/dev/stdout".into(),
                format: LogFormat::Default
            })
        );
        let defaults = MeshConfig::default();
        assert!(defaults.enable_tracing && defaults.access_log_file.is_empty());
        assert!(defaults.provider("envoy").is_some());
    }

    #[test]
    fn malformed_telemetry_settings_name_the_field() {
        let field = |yaml: &str| apply(yaml).unwrap_err().field;
        assert_eq!(field("accessLogEncoding: XML\n"), "accessLogEncoding");
        assert_eq!(
            field("accessLogEncoding: JSON\naccessLogFormat: '%CODE%'\n"),
            "accessLogFormat"
        );
        assert_eq!(
            field("extensionProviders:\n- zipkin: {service: z, port: 1}\n"),
            "extensionProviders[0].name"
        );
        assert_eq!(
            field("extensionProviders:\n- name: z\n  zipkin: {port: 9411}\n"),
            "extensionProviders[0].zipkin.service"
        );
        assert_eq!(
            field("extensionProviders:\n- name: z\n  zipkin: {service: z, port: 70000}\n"),
            "extensionProviders[0].zipkin.port"
        );
        assert_eq!(
            field(
                "extensionProviders:\n- name: z\n  zipkin: {service: z, port: 1}\n- name: z\n  zipkin: {service: z, port: 2}\n"
            ),
            "extensionProviders[1].name"
        );
        let e = apply("extensionProviders:\n- name: z\n").unwrap_err();
        assert_eq!(e.field, "extensionProviders[0]");
        assert!(e.message.contains("no provider kind"), "{e}");
        assert_eq!(
            apply("accessLogEncoding: 1\n").unwrap().access_log_encoding,
            AccessLogEncoding::Json
        );
    }
}
