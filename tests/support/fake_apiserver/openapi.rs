//! The least of `/openapi/v3` and `/version` that `kubectl apply` needs.
//!
//! kubectl 1.32 validates server-side when the OpenAPI v3 document of a group version shows a
//! `fieldValidation` parameter on the kind's PATCH operation; without the document it refuses
//! to apply at all (unless `--validate=false`). No schemas are served and strategic merge is
//! not offered, so kubectl builds its patches from its compiled-in types (strategic merge for
//! built-in kinds) or as JSON merge patches (custom resources), and the fake accepts
//! `fieldValidation` without checking fields, as for a CRD without a schema.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::Registry;

/// The Kubernetes release the fake claims to be (what its discovery and watch features match).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `api/v1` or `apis/{group}/{version}`: how `/openapi/v3` names a group version.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: every served group version, with a hash of its document so a client's
/// cache notices a CRD installed since.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in registry.group_versions() {
        let path = gv_path(&group, &version);
        let document = group_version(registry, &group, &version).unwrap_or(Value::Null);
        let mut hasher = DefaultHasher::new();
        document.to_string().hash(&mut hasher);
        let url = format!("/openapi/v3/{path}?hash={:016X}", hasher.finish());
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{gv path}`: a PATCH operation per kind, tagged with its kind and
/// accepting `fieldValidation`.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let served: Vec<_> = registry
        .types()
        .iter()
        .filter(|t| t.group == group && t.serves(version))
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for t in served {
        let scope = if t.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let path = format!("/{}{scope}/{}/{{name}}", gv_path(group, version), t.plural);
        let body = json!({"schema": {"type": "object"}});
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}", t.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": t.kind},
                "parameters": [
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                ],
                "requestBody": {"content": {
                    "application/json-patch+json": body,
                    "application/merge-patch+json": body,
                    "application/apply-patch+yaml": body,
                }},
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": self::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

// No `use` in the tests: a bench that includes the fake builds with cfg(test) but without
// them, where the imports would go unused.
#[cfg(test)]
mod tests {
    #[test]
    fn each_served_kind_has_a_patch_operation_accepting_field_validation() {
        let registry = super::Registry::builtin();
        let root = super::root(&registry);
        let url = root["paths"]["apis/discovery.k8s.io/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/discovery.k8s.io/v1?hash="),
            "{url}"
        );
        let document = super::group_version(&registry, "discovery.k8s.io", "v1").unwrap();
        let patch = &document["paths"]["/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "EndpointSlice"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            super::group_version(&registry, "networking.istio.io", "v1").is_none(),
            "no CRD installed"
        );
    }
}
