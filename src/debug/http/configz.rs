//! `/debug/configz`: every Istio config object of the store, as istiod prints its config
//! store: a list of Kubernetes-shaped objects (`kind`, `apiVersion`, `metadata`, `spec`).
//! As in istiod only Istio's kinds are listed, not the Kubernetes objects they refer to;
//! Secrets in particular (gateway credentials) never appear.

use serde_json::{Map, Value, json};

use super::DebugError;
use crate::config::{Kind, Object};
use crate::store::Snapshot;

/// The API groups istiod's config store holds.
fn is_istio(kind: Kind) -> bool {
    kind != Kind::Secret && kind.group_versions().0.ends_with("istio.io")
}

pub fn configz(snapshot: &Snapshot) -> Result<Vec<Value>, DebugError> {
    Kind::ALL
        .into_iter()
        .filter(|k| is_istio(*k))
        .flat_map(|k| snapshot.entries(k))
        .map(|entry| object(&entry.object))
        .collect()
}

fn object(o: &Object) -> Result<Value, DebugError> {
    let (group, versions) = o.kind().group_versions();
    let version = versions.first().copied().unwrap_or("v1");
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let spec = serde_json::to_value(&o.spec).map_err(|source| DebugError::Serialize {
        object: o.key().to_string(),
        source,
    })?;
    let meta = &o.meta;
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(meta.name));
    if !meta.namespace.is_empty() {
        metadata.insert("namespace".into(), json!(meta.namespace));
    }
    if !meta.labels.is_empty() {
        metadata.insert("labels".into(), json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(meta.annotations));
    }
    if !meta.resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), json!(meta.resource_version));
    }
    if meta.generation != 0 {
        metadata.insert("generation".into(), json!(meta.generation));
    }
    Ok(json!({
        "kind": o.kind().name(),
        "apiVersion": api_version,
        "metadata": metadata,
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Meta, Spec, istio, kube};
    use crate::store::{Entry, SourceId};

    fn entry(name: &str, spec: Spec) -> Entry {
        Entry {
            object: Arc::new(Object {
                meta: Meta {
                    name: name.into(),
                    namespace: "shop".into(),
                    labels: [("app".to_string(), "web".to_string())]
                        .into_iter()
                        .collect(),
                    generation: 2,
                    ..Default::default()
                },
                spec,
            }),
            origin: None,
            source: SourceId::Files,
        }
    }

    #[test]
    fn istio_objects_in_kubernetes_shape_without_secrets() {
        let gateway = istio::Gateway {
            selector: [("istio".to_string(), "ingressgateway".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let secret = kube::Secret {
            secret_type: "kubernetes.io/tls".into(),
            data: [("tls.key".to_string(), b"PRIVATE KEY BYTES".to_vec())]
                .into_iter()
                .collect(),
        };
        let snapshot = Snapshot::of(vec![
            entry("gw", Spec::Gateway(gateway)),
            entry("cred", Spec::Secret(secret)),
            entry("web", Spec::Service(kube::Service::default())),
        ]);
        let all = configz(&snapshot).unwrap();
        assert_eq!(all.len(), 1, "only Istio kinds: {all:?}");
        let gw = &all[0];
        assert_eq!(gw["kind"], "Gateway");
        assert_eq!(gw["apiVersion"], "networking.istio.io/v1");
        assert_eq!(gw["metadata"]["name"], "gw");
        assert_eq!(gw["metadata"]["namespace"], "shop");
        assert_eq!(gw["metadata"]["labels"]["app"], "web");
        assert_eq!(gw["metadata"]["generation"], 2);
        assert_eq!(gw["spec"]["selector"]["istio"], "ingressgateway");
        let text = serde_json::to_string(&all).unwrap();
        assert!(
            !text.contains("cred") && !text.contains("tls.key"),
            "{text}"
        );
    }
}
