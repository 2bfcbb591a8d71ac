//! Who a connected proxy is: its Istio node id and the node metadata istio-agent sends.
//!
//! A stock Envoy with a hand-written bootstrap and an Istio-injected proxy both connect with an
//! id `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`; labels and everything else
//! come from node metadata (`LABELS`, `NAMESPACE`, `INSTANCE_IPS`, …).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use serde::Serialize;

use crate::ca::SpiffeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Sidecar,
    Router,
}

impl NodeType {
    pub fn parse(s: &str) -> Option<NodeType> {
        match s {
            "sidecar" => Some(NodeType::Sidecar),
            "router" => Some(NodeType::Router),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the request carries no node; the first request on a stream must identify the proxy")]
    MissingNode,
    #[error(
        "node id {0:?} is not of the form <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local"
    )]
    MalformedId(String),
    #[error("node id {id:?}: unknown proxy type {ty:?} (expected sidecar or router)")]
    UnknownType { id: String, ty: String },
}

/// The node metadata pilotfish reads (istio-agent's `NodeMetadata` names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ProxyMetadata {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub instance_ips: Vec<String>,
    pub cluster_id: String,
    pub istio_version: String,
    pub service_account: String,
    pub interception_mode: String,
    pub workload_name: String,
    pub mesh_id: String,
    pub generator: String,
}

/// A connected proxy, as generation needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proxy {
    /// The full node id.
    pub id: String,
    pub node_type: NodeType,
    pub ip_addresses: Vec<String>,
    /// `<pod>.<namespace>` part of the id.
    pub workload: String,
    pub namespace: String,
    pub dns_domain: String,
    /// `node.cluster`: the service cluster name Envoy reports in stats.
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
    pub metadata: ProxyMetadata,
    /// Extension names the proxy says it has (`node.extensions`); `istio.*` filters are
    /// sent only when listed here.
    pub extensions: Vec<String>,
    /// Who the proxy proved to be on the TLS xDS port (client certificate or service-account
    /// token), its metadata checked against it. Only such a proxy is sent certificates, so only
    /// its config refers to them (mutual TLS); `None` on the plaintext port.
    #[serde(serialize_with = "display_opt")]
    pub identity: Option<SpiffeId>,
}

fn display_opt<S: serde::Serializer, T: std::fmt::Display>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

impl Proxy {
    /// Parses an Istio node id with no metadata (the `render` command, tests).
    pub fn from_id(id: &str) -> Result<Proxy, ProxyError> {
        let parts: Vec<&str> = id.split('~').collect();
        let [ty, ip, workload, domain] = parts[..] else {
            return Err(ProxyError::MalformedId(id.to_string()));
        };
        let node_type = NodeType::parse(ty).ok_or_else(|| ProxyError::UnknownType {
            id: id.to_string(),
            ty: ty.to_string(),
        })?;
        let namespace = workload
            .split_once('.')
            .map(|(_, ns)| ns)
            .filter(|ns| !ns.is_empty())
            .or_else(|| domain.split('.').next().filter(|ns| !ns.is_empty()))
            .unwrap_or("default")
            .to_string();
        Ok(Proxy {
            id: id.to_string(),
            node_type,
            ip_addresses: ip
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            workload: workload.to_string(),
            namespace,
            dns_domain: domain.to_string(),
            cluster: String::new(),
            labels: BTreeMap::new(),
            metadata: ProxyMetadata::default(),
            extensions: Vec::new(),
            identity: None,
        })
    }

    /// Reads a proxy from the `Node` of its first discovery request.
    pub fn from_node(node: Option<&Node>) -> Result<Proxy, ProxyError> {
        let node = node.ok_or(ProxyError::MissingNode)?;
        let mut proxy = Proxy::from_id(&node.id)?;
        proxy.cluster = node.cluster.clone();
        proxy.extensions = node.extensions.iter().map(|e| e.name.clone()).collect();
        if let Some(md) = &node.metadata {
            proxy.metadata = ProxyMetadata::from_struct(md);
        }
        if !proxy.metadata.namespace.is_empty() {
            proxy.namespace = proxy.metadata.namespace.clone();
        }
        proxy.labels = proxy.metadata.labels.clone();
        if !proxy.metadata.instance_ips.is_empty() {
            proxy.ip_addresses = proxy.metadata.instance_ips.clone();
        }
        Ok(proxy)
    }

    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.metadata.labels = labels.clone();
        self.labels = labels;
        self
    }

    /// Whether the proxy declared an extension (e.g. `istio.metadata_exchange`).
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }
}

impl ProxyMetadata {
    pub fn from_struct(md: &Struct) -> ProxyMetadata {
        let string = |key: &str| {
            md.fields
                .get(key)
                .and_then(as_str)
                .unwrap_or_default()
                .to_string()
        };
        let labels = md
            .fields
            .get("LABELS")
            .and_then(|v| match &v.kind {
                Some(ValueKind::StructValue(s)) => Some(
                    s.fields
                        .iter()
                        .filter_map(|(k, v)| as_str(v).map(|v| (k.clone(), v.to_string())))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        ProxyMetadata {
            namespace: string("NAMESPACE"),
            labels,
            instance_ips: string("INSTANCE_IPS")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            cluster_id: string("CLUSTER_ID"),
            istio_version: string("ISTIO_VERSION"),
            service_account: string("SERVICE_ACCOUNT"),
            interception_mode: string("INTERCEPTION_MODE"),
            workload_name: string("WORKLOAD_NAME"),
            mesh_id: string("MESH_ID"),
            generator: string("GENERATOR"),
        }
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match &v.kind {
        Some(ValueKind::StringValue(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Extension;

    fn str_value(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.into())),
        }
    }

    #[test]
    fn parses_istio_sidecar_id() {
        let p = Proxy::from_id("sidecar~10.1.0.5~reviews-v1-abc.default~default.svc.cluster.local")
            .unwrap();
        assert_eq!(p.node_type, NodeType::Sidecar);
        assert_eq!(p.ip_addresses, vec!["10.1.0.5"]);
        assert_eq!(p.workload, "reviews-v1-abc.default");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.dns_domain, "default.svc.cluster.local");
    }

    #[test]
    fn rejects_malformed_ids_with_the_expected_form() {
        let err = Proxy::from_id("my-envoy").unwrap_err();
        assert!(
            err.to_string().contains("<type>~<ip>~<pod>.<namespace>"),
            "{err}"
        );
        assert!(matches!(
            Proxy::from_id("ztunnel~1.1.1.1~a.b~b.svc.cluster.local"),
            Err(ProxyError::UnknownType { .. })
        ));
    }

    #[test]
    fn metadata_overrides_id_and_supplies_labels() {
        let labels = Struct {
            fields: [("istio".to_string(), str_value("ingressgateway"))]
                .into_iter()
                .collect(),
        };
        let md = Struct {
            fields: [
                ("NAMESPACE".to_string(), str_value("istio-system")),
                ("INSTANCE_IPS".to_string(), str_value("10.0.0.1, 10.0.0.2")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(ValueKind::StructValue(labels)),
                    },
                ),
                ("ISTIO_VERSION".to_string(), str_value("1.28.0")),
            ]
            .into_iter()
            .collect(),
        };
        let node = Node {
            id: "router~10.0.0.1~gw-1.default~default.svc.cluster.local".into(),
            cluster: "istio-ingressgateway".into(),
            metadata: Some(md),
            extensions: vec![Extension {
                name: "istio.stats".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = Proxy::from_node(Some(&node)).unwrap();
        assert_eq!(p.namespace, "istio-system");
        assert_eq!(
            p.labels.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        assert_eq!(p.ip_addresses, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(p.metadata.istio_version, "1.28.0");
        assert!(p.has_extension("istio.stats"));
        assert!(!p.has_extension("istio.metadata_exchange"));
    }
}
