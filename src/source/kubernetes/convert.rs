//! API objects into store objects, checked as the file source checks them.
//!
//! Kubernetes kinds come typed (`k8s-openapi`) and go through the same `TryFrom` conversions
//! as manifests; Istio kinds come as JSON and go through the manifest parser. Either way the
//! result is validated with istiod's webhook checks: an object the webhook would have refused
//! (because it was not installed, or the object predates it) is not served.

use kube::Resource;
use kube::api::DynamicObject;

use crate::config::{Kind, Object, ObjectKey, parse};
use crate::diagnostic::Diagnostic;

/// Written by `kubectl apply` on every object it applies: a second copy of the whole object,
/// which nothing here reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One object as a watcher saw it: typed when it is valid, and its diagnostics (errors keep it
/// out of the store; warnings ride along).
#[derive(Debug)]
pub struct Converted {
    pub key: ObjectKey,
    pub object: Option<Object>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The key an API object will have in the store.
pub fn key_of<K: Resource>(kind: Kind, object: &K) -> ObjectKey {
    let meta = object.meta();
    let namespace = if kind.is_namespaced() {
        meta.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    ObjectKey {
        kind,
        namespace,
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// A Kubernetes kind, through its `TryFrom` conversion (`config::kube`).
pub fn typed<K, E>(kind: Kind, object: K) -> Converted
where
    K: Resource,
    Object: TryFrom<K, Error = E>,
    E: FieldError,
{
    let key = key_of(kind, &object);
    match Object::try_from(object) {
        Ok(object) => checked(key, object, Vec::new()),
        Err(e) => Converted {
            diagnostics: vec![Diagnostic::error(e.field(), e.message()).on(&key)],
            key,
            object: None,
        },
    }
}

/// A conversion error as a diagnostic wants it: the field's path and what is wrong with it.
pub trait FieldError {
    fn field(&self) -> String;
    fn message(&self) -> String;
}

impl FieldError for crate::config::kube::ConvertError {
    fn field(&self) -> String {
        self.field.clone()
    }
    fn message(&self) -> String {
        self.message.clone()
    }
}

impl FieldError for std::convert::Infallible {
    fn field(&self) -> String {
        match *self {}
    }
    fn message(&self) -> String {
        match *self {}
    }
}

/// An Istio kind, through the manifest parser. `None` for kinds the parser deliberately skips.
pub fn dynamic(kind: Kind, object: DynamicObject) -> Option<Converted> {
    let key = key_of(kind, &object);
    let value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(e) => {
            return Some(Converted {
                diagnostics: vec![Diagnostic::error("", e.to_string()).on(&key)],
                key,
                object: None,
            });
        }
    };
    match parse::parse_object(value) {
        Ok(None) => None,
        Ok(Some((object, warnings))) => Some(checked(key, object, warnings)),
        Err(d) => Some(Converted {
            diagnostics: vec![d.on(&key)],
            key,
            object: None,
        }),
    }
}

/// Validates `object` and drops what changes on every write without changing the config
/// (`resourceVersion`, kubectl's last-applied copy), so an update that touches only those —
/// a Pod's status heartbeat, a re-list — compares equal in the store and pushes nothing.
fn checked(key: ObjectKey, mut object: Object, mut diagnostics: Vec<Diagnostic>) -> Converted {
    object.meta.resource_version.clear();
    object.meta.annotations.remove(LAST_APPLIED);
    diagnostics.extend(
        crate::validate::validate(&object)
            .into_iter()
            .map(|d| d.on(&key)),
    );
    let rejected = diagnostics.iter().any(Diagnostic::is_error);
    Converted {
        key,
        object: (!rejected).then_some(object),
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1 as core;

    fn dynamic_object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn istio_kinds_go_through_the_manifest_parser_and_validation() {
        let vs = dynamic_object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "default", "resourceVersion": "42",
                "annotations": {LAST_APPLIED: "{...}", "keep": "me"}},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
        }));
        let converted = dynamic(Kind::VirtualService, vs).unwrap();
        let object = converted.object.unwrap();
        assert_eq!(converted.key.to_string(), "VirtualService default/r");
        assert!(object.meta.resource_version.is_empty());
        assert_eq!(object.meta.annotations.keys().collect::<Vec<_>>(), ["keep"]);

        let bad = dynamic_object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "port": {"number": 0}}}]}]}
        }));
        let converted = dynamic(Kind::VirtualService, bad).unwrap();
        assert!(converted.object.is_none());
        let error = converted.diagnostics.iter().find(|d| d.is_error()).unwrap();
        assert!(
            error.to_string().contains("VirtualService default/bad"),
            "{error}"
        );
        assert!(error.field.contains("port"), "{error}");
    }

    #[test]
    fn kubernetes_kinds_name_the_field_a_conversion_failed_on() {
        let service: core::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"ports": [{"port": 70000}]}
        }))
        .unwrap();
        let converted = typed(Kind::Service, service);
        assert!(converted.object.is_none());
        let [d] = &converted.diagnostics[..] else {
            panic!("{:?}", converted.diagnostics)
        };
        assert_eq!(d.field, "spec.ports[0].port");
        assert!(d.to_string().contains("Service ns/s"), "{d}");
    }
}
