//! The Kubernetes kinds pilotfish reads, reduced to what service discovery needs.
//!
//! Manifests and API objects are read as `k8s-openapi` types (Pods as the slimmer
//! [`SlimPod`]) and converted here, at the boundary, so the store holds small values and no
//! code past this point depends on `k8s-openapi`'s shapes.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Serialize, Serializer};

use super::{Meta, Object, Spec};

mod pod;
pub use pod::{ContainerPort, Pod, SlimPod};

/// A field that is wrong in a Kubernetes object; `field` is the path (`spec.ports[0].port`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Service {
    /// `None` for a Service without a selector (endpoints managed by hand).
    pub selector: Option<BTreeMap<String, String>>,
    /// The VIP; `None` for headless Services.
    pub cluster_ip: Option<String>,
    pub service_type: String,
    pub external_name: Option<String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct EndpointSlice {
    /// From the `kubernetes.io/service-name` label.
    pub service_name: String,
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The Pod behind this endpoint (`targetRef` of kind Pod), for its labels.
    pub pod: Option<String>,
    pub zone: Option<String>,
    pub node_name: Option<String>,
}

/// A ConfigMap's string `data` (`binaryData` is not kept): istiod's mesh config is the `mesh`
/// key of ConfigMap `istio` ([`super::mesh_config`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ConfigMap {
    pub data: BTreeMap<String, String>,
}

/// A Secret reduced to the keys gateway credentials (`credentialName`) read, so the store does not
/// hold every secret of the cluster. Its `Debug` and `Serialize` show key names and sizes only:
/// key material must never reach logs or debug dumps.
#[derive(Clone, PartialEq, Default)]
pub struct Secret {
    /// `kubernetes.io/tls`, `Opaque`, …
    pub secret_type: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// The keys istiod's credential controller reads: `tls.*` (kubernetes.io/tls) and the generic
/// `cert`/`key`/`cacert` form, each with its CA, CRL and OCSP companions.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "tls.crt",
    "tls.key",
    "ca.crt",
    "cert",
    "key",
    "cacert",
    "tls.ocsp-staple",
    "ca.crl",
];

impl Secret {
    /// Each kept key with its size, the only view of the data that may be shown.
    fn sizes(&self) -> BTreeMap<&str, String> {
        self.data
            .iter()
            .map(|(k, v)| (k.as_str(), format!("<{} bytes>", v.len())))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("secret_type", &self.secret_type)
            .field("data", &self.sizes())
            .finish()
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Redacted<'a> {
            secret_type: &'a str,
            data: BTreeMap<&'a str, String>,
        }
        Redacted {
            secret_type: &self.secret_type,
            data: self.sizes(),
        }
        .serialize(s)
    }
}

/// Label carrying an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn meta(m: ObjectMeta) -> Meta {
    Meta {
        name: m.name.unwrap_or_default(),
        namespace: m.namespace.unwrap_or_default(),
        labels: m.labels.unwrap_or_default(),
        annotations: m.annotations.unwrap_or_default(),
        resource_version: m.resource_version.unwrap_or_default(),
        generation: m.generation.unwrap_or_default(),
    }
}

fn port16(value: i32, field: String) -> Result<u16, ConvertError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(field, format!("port {value} is not in 1-65535")))
}

impl TryFrom<core::Service> for Object {
    type Error = ConvertError;

    fn try_from(svc: core::Service) -> Result<Self, ConvertError> {
        let spec = svc.spec.unwrap_or_default();
        let mut ports = Vec::new();
        for (i, p) in spec.ports.unwrap_or_default().into_iter().enumerate() {
            let port = port16(p.port, format!("spec.ports[{i}].port"))?;
            let target_port = match p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => {
                    TargetPort::Number(port16(n, format!("spec.ports[{i}].targetPort"))?)
                }
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => TargetPort::Number(port16(n, format!("spec.ports[{i}].targetPort"))?),
                    Err(_) => TargetPort::Name(s),
                },
            };
            ports.push(ServicePort {
                name: p.name.unwrap_or_default(),
                port,
                target_port,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol,
            });
        }
        let cluster_ip = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None");
        Ok(Object {
            meta: meta(svc.metadata),
            spec: Spec::Service(Service {
                selector: spec.selector.filter(|s| !s.is_empty()),
                cluster_ip,
                service_type: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
                external_name: spec.external_name,
                ports,
            }),
        })
    }
}

impl TryFrom<discovery::EndpointSlice> for Object {
    type Error = ConvertError;

    fn try_from(slice: discovery::EndpointSlice) -> Result<Self, ConvertError> {
        let meta = meta(slice.metadata);
        let service_name = meta
            .labels
            .get(SERVICE_NAME_LABEL)
            .cloned()
            .ok_or_else(|| invalid("metadata.labels", format!("missing {SERVICE_NAME_LABEL}")))?;
        let mut ports = Vec::new();
        for (i, p) in slice.ports.unwrap_or_default().into_iter().enumerate() {
            let Some(port) = p.port else { continue };
            ports.push(EndpointPort {
                name: p.name.unwrap_or_default(),
                port: port16(port, format!("ports[{i}].port"))?,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol,
            });
        }
        let endpoints = slice
            .endpoints
            .into_iter()
            .map(|e| {
                let c = e.conditions.unwrap_or_default();
                // Kubernetes: a nil `ready` means ready; `serving` defaults to `ready`.
                let ready = c.ready.unwrap_or(true);
                SliceEndpoint {
                    addresses: e.addresses,
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    pod: e
                        .target_ref
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| r.name),
                    zone: e.zone,
                    node_name: e.node_name,
                }
            })
            .collect();
        Ok(Object {
            meta,
            spec: Spec::EndpointSlice(EndpointSlice {
                service_name,
                address_type: slice.address_type,
                ports,
                endpoints,
            }),
        })
    }
}

impl TryFrom<core::ConfigMap> for Object {
    type Error = ConvertError;

    fn try_from(cm: core::ConfigMap) -> Result<Self, ConvertError> {
        Ok(Object {
            meta: meta(cm.metadata),
            spec: Spec::ConfigMap(ConfigMap {
                data: cm.data.unwrap_or_default(),
            }),
        })
    }
}

impl TryFrom<core::Secret> for Object {
    type Error = ConvertError;

    fn try_from(secret: core::Secret) -> Result<Self, ConvertError> {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| CREDENTIAL_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k, v.0))
            .collect();
        // The API server folds `stringData` into `data` on write (so a watch never sees it);
        // a manifest read from a file gets the same treatment.
        for (k, v) in secret.string_data.unwrap_or_default() {
            if CREDENTIAL_KEYS.contains(&k.as_str()) {
                data.insert(k, v.into_bytes());
            }
        }
        Ok(Object {
            meta: meta(secret.metadata),
            spec: Spec::Secret(Secret {
                secret_type: secret.type_.unwrap_or_else(|| "Opaque".into()),
                data,
            }),
        })
    }
}

impl From<core::Namespace> for Object {
    fn from(ns: core::Namespace) -> Self {
        Object {
            meta: meta(ns.metadata),
            spec: Spec::Namespace,
        }
    }
}

/// The protocol Istio assigns a Kubernetes port: `appProtocol` first, then the
/// port-name prefix (`http-web`, `grpc`), else TCP (istiod sniffs; see docs/architecture.md).
pub fn port_protocol(name: &str, app_protocol: Option<&str>, l4: &str) -> crate::model::Protocol {
    use crate::model::Protocol;
    if l4.eq_ignore_ascii_case("UDP") {
        return Protocol::Udp;
    }
    if let Some(p) = app_protocol {
        let p = p.rsplit('/').next().unwrap_or(p);
        let parsed = Protocol::parse(p);
        if parsed != Protocol::Unsupported {
            return parsed;
        }
    }
    let prefix = name.split('-').next().unwrap_or(name);
    match Protocol::parse(prefix) {
        Protocol::Unsupported => Protocol::Tcp,
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn protocol_from_app_protocol_then_name() {
        assert_eq!(port_protocol("http-web", None, "TCP"), Protocol::Http);
        assert_eq!(port_protocol("grpc", None, "TCP"), Protocol::Grpc);
        assert_eq!(port_protocol("web", Some("http"), "TCP"), Protocol::Http);
        assert_eq!(
            port_protocol("web", Some("kubernetes.io/h2c"), "TCP"),
            Protocol::Http2
        );
        assert_eq!(port_protocol("http-web", Some("tcp"), "TCP"), Protocol::Tcp);
        assert_eq!(port_protocol("web", None, "TCP"), Protocol::Tcp);
        assert_eq!(port_protocol("dns", None, "UDP"), Protocol::Udp);
    }

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> core::Secret {
        let bytes = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect()
        };
        let strings = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        core::Secret {
            metadata: ObjectMeta {
                name: Some("cert".into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(bytes(data)),
            string_data: Some(strings(string_data)),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_keep_only_credential_keys() {
        let object = Object::try_from(secret(
            &[
                ("tls.crt", "CERT"),
                ("tls.key", "KEY"),
                ("password", "hunter2"),
                ("ca.crl", "CRL"),
            ],
            &[("cacert", "CA"), ("token", "t")],
        ))
        .unwrap();
        let Spec::Secret(s) = &object.spec else {
            panic!("{:?}", object.spec)
        };
        assert_eq!(s.secret_type, "kubernetes.io/tls");
        let keys: Vec<&str> = s.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ca.crl", "cacert", "tls.crt", "tls.key"]);
        assert_eq!(s.data["cacert"], b"CA");
        assert_eq!(object.meta.namespace, "istio-system");
    }

    #[test]
    fn secret_debug_and_json_show_no_key_material() {
        let object = Object::try_from(secret(&[("tls.key", "PRIVATE-KEY-MATERIAL")], &[])).unwrap();
        let debug = format!("{object:?}");
        let json = serde_json::to_string(&object).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains("PRIVATE-KEY-MATERIAL"), "{shown}");
            // Nor as bytes: the key's first byte, 'P' = 80, would show in a Vec<u8> dump.
            assert!(!shown.contains("80, 82"), "{shown}");
            assert!(
                shown.contains("tls.key") && shown.contains("<20 bytes>"),
                "{shown}"
            );
        }
    }
}
