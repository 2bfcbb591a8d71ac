//! Mesh-wide settings (a subset of Istio's MeshConfig).
//!
//! `domain_suffix` is a command-line setting; the rest can come from the `mesh` key of ConfigMap
//! `istio` (see [`crate::config::mesh_config`]), falling back to istiod's defaults.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MeshConfig {
    /// DNS suffix of Kubernetes service hostnames (`cluster.local`).
    pub domain_suffix: String,
    /// Namespace whose config applies mesh-wide (`istio-system`).
    pub root_namespace: String,
    /// The SPIFFE trust domain of workload identities (`cluster.local`).
    pub trust_domain: String,
    /// What a sidecar does with traffic to hosts it does not know, unless its Sidecar says.
    pub outbound_traffic_policy: OutboundTrafficMode,
    /// `exportTo` of Services and ServiceEntries that do not set one.
    pub default_service_export_to: Vec<String>,
    /// `exportTo` of VirtualServices that do not set one.
    pub default_virtual_service_export_to: Vec<String>,
    /// `exportTo` of DestinationRules that do not set one.
    pub default_destination_rule_export_to: Vec<String>,
    /// `accessLogFile`: where every proxy logs requests when no Telemetry configures access
    /// logging (empty: no log).
    pub access_log_file: String,
    /// `accessLogFormat`: a text format, or a JSON object of labels with `JSON` encoding; empty
    /// for istiod's default.
    pub access_log_format: String,
    pub access_log_encoding: AccessLogEncoding,
    /// `enableTracing`. Without a Telemetry or default tracing provider, istiod's tracing comes
    /// from the proxy's bootstrap, which stock Envoy does not have: pilotfish then traces nothing.
    pub enable_tracing: bool,
    /// `defaultProviders`: what applies when a Telemetry names no provider, or none applies.
    pub default_providers: DefaultProviders,
    /// `extensionProviders`, istiod's built-in `envoy` (file log to stdout) and `prometheus`
    /// included unless replaced by name.
    pub extension_providers: Vec<ExtensionProvider>,
}

/// `accessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// `defaultProviders`: provider names per telemetry kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DefaultProviders {
    pub tracing: Vec<String>,
    pub access_logging: Vec<String>,
    pub metrics: Vec<String>,
}

/// One `extensionProviders` entry: a name Telemetry refers to and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ExtensionProvider {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum ProviderKind {
    /// `envoyFileAccessLog`.
    FileAccessLog { path: String, format: LogFormat },
    /// `zipkin`: spans POSTed as JSON v2 to the service's outbound cluster.
    Zipkin(ZipkinProvider),
    /// `opentelemetry` with the gRPC exporter.
    OpenTelemetry(CollectorService),
    /// A kind pilotfish parses but cannot configure on stock Envoy (`prometheus`,
    /// `envoyExtAuthzHttp`, …): its field name.
    Unsupported(String),
}

/// `envoyFileAccessLog.logFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub enum LogFormat {
    /// istiod's default text format, or for the built-in `envoy` provider the mesh's own.
    #[default]
    Default,
    Text(String),
    /// JSON labels, as canonical JSON text (sorted keys) so the config stays hashable; `{}`
    /// for istiod's default labels.
    Labels(String),
}

/// A collector reached through a mesh service (`[namespace/]hostname`) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CollectorService {
    pub service: String,
    pub port: u16,
    /// `maxTagLength` (0: Envoy's default).
    pub max_tag_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ZipkinProvider {
    pub collector: CollectorService,
    /// `path` (istiod's default `/api/v2/spans`).
    pub path: String,
    /// `enable64bitTraceId`: istiod sends 128-bit trace ids unless set.
    pub trace_id_64bit: bool,
}

impl MeshConfig {
    /// The extension provider named `name` (case-insensitive, as istiod looks it up).
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// istiod's built-in providers, present unless the mesh config names its own of the name.
pub fn builtin_providers() -> Vec<ExtensionProvider> {
    vec![
        ExtensionProvider {
            name: "prometheus".into(),
            kind: ProviderKind::Unsupported("prometheus".into()),
        },
        ExtensionProvider {
            name: BUILTIN_ENVOY_PROVIDER.into(),
            kind: ProviderKind::FileAccessLog {
                path: "/dev/stdout".into(),
                format: LogFormat::Default,
            },
        },
    ]
}

/// The built-in file access log provider; without a format of its own it logs in the mesh's
/// `accessLogFormat`/`accessLogEncoding`.
pub const BUILTIN_ENVOY_PROVIDER: &str = "envoy";

impl Default for MeshConfig {
    /// istiod's defaults (`mesh.DefaultMeshConfig`).
    fn default() -> Self {
        MeshConfig {
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            outbound_traffic_policy: OutboundTrafficMode::AllowAny,
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            access_log_file: String::new(),
            access_log_format: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            enable_tracing: true,
            default_providers: DefaultProviders {
                metrics: vec!["prometheus".into()],
                ..DefaultProviders::default()
            },
            extension_providers: builtin_providers(),
        }
    }
}

impl MeshConfig {
    /// Resolves a short host name (`reviews`) relative to a namespace, as istiod does; names
    /// with a dot and wildcards are taken as written (and borrowed: this is on the hot path).
    pub fn fqdn<'a>(&self, host: &'a str, namespace: &str) -> std::borrow::Cow<'a, str> {
        if host.contains('.') || host == "*" {
            std::borrow::Cow::Borrowed(host)
        } else {
            std::borrow::Cow::Owned(format!("{host}.{namespace}.svc.{}", self.domain_suffix))
        }
    }
}

/// `OutboundTrafficPolicy.Mode` of MeshConfig and of the Sidecar kind.
///
/// The default here is the mesh's (`ALLOW_ANY`); the protobuf zero value, which a Sidecar's
/// `outboundTrafficPolicy: {}` gets, is `REGISTRY_ONLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Unknown hosts pass through to their original destination (`PassthroughCluster`).
    #[default]
    AllowAny,
    /// Only hosts in the service registry are reachable (`BlackHoleCluster` otherwise).
    RegistryOnly,
}

impl OutboundTrafficMode {
    pub fn name(self) -> &'static str {
        match self {
            OutboundTrafficMode::AllowAny => "ALLOW_ANY",
            OutboundTrafficMode::RegistryOnly => "REGISTRY_ONLY",
        }
    }
}

/// By name, as the CRDs and YAML write it, and by number (`0`, `1`), as protobuf JSON also
/// accepts in mesh config.
impl<'de> Deserialize<'de> for OutboundTrafficMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;

        impl Visitor<'_> for ModeVisitor {
            type Value = OutboundTrafficMode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ALLOW_ANY or REGISTRY_ONLY")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "ALLOW_ANY" => Ok(OutboundTrafficMode::AllowAny),
                    "REGISTRY_ONLY" => Ok(OutboundTrafficMode::RegistryOnly),
                    _ => Err(E::custom(format!(
                        "unknown variant {v:?}, expected ALLOW_ANY or REGISTRY_ONLY"
                    ))),
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match v {
                    0 => Ok(OutboundTrafficMode::RegistryOnly),
                    1 => Ok(OutboundTrafficMode::AllowAny),
                    _ => Err(E::custom(format!(
                        "unknown value {v}, expected ALLOW_ANY (1) or REGISTRY_ONLY (0)"
                    ))),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "unknown value {v}, expected ALLOW_ANY (1) or REGISTRY_ONLY (0)"
                    ))),
                }
            }
        }

        d.deserialize_any(ModeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_their_namespace() {
        let mesh = MeshConfig::default();
        assert_eq!(
            mesh.fqdn("reviews", "bookinfo"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            mesh.fqdn("reviews.bookinfo.svc.cluster.local", "x"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(mesh.fqdn("*.example.com", "x"), "*.example.com");
        assert_eq!(mesh.fqdn("*", "x"), "*");
    }

    #[test]
    fn outbound_mode_by_name_or_number() {
        let mode = |json: &str| serde_json::from_str::<OutboundTrafficMode>(json);
        assert_eq!(
            mode("\"ALLOW_ANY\"").unwrap(),
            OutboundTrafficMode::AllowAny
        );
        assert_eq!(
            mode("\"REGISTRY_ONLY\"").unwrap(),
            OutboundTrafficMode::RegistryOnly
        );
        assert_eq!(mode("0").unwrap(), OutboundTrafficMode::RegistryOnly);
        assert_eq!(mode("1").unwrap(), OutboundTrafficMode::AllowAny);
        let err = mode("\"FOO\"").unwrap_err().to_string();
        assert!(err.contains("unknown variant \"FOO\""), "{err}");
        assert!(mode("2").is_err() && mode("-1").is_err() && mode("true").is_err());
        assert_eq!(
            MeshConfig::default().outbound_traffic_policy,
            OutboundTrafficMode::AllowAny
        );
    }
}
