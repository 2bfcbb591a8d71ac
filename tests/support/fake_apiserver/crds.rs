//! CustomResourceDefinition objects, as the apiextensions-apiserver treats them: a valid one
//! is stored Established and its kind is served from then on; deleting it deletes its objects
//! and stops serving the kind. So `kubectl apply -f crds/` installs Istio's kinds.

use serde_json::{Value, json};

use super::resources::{ResourceType, sort_versions};
use super::status::ApiError;
use super::store::WatchMessage;
use super::{Shared, lock};

pub const GROUP: &str = "apiextensions.k8s.io";
pub const KIND: &str = "CustomResourceDefinition";
pub const PLURAL: &str = "customresourcedefinitions";

pub fn is_crd(resource: &ResourceType) -> bool {
    resource.group == GROUP && resource.plural == PLURAL
}

fn invalid(name: &str, field: &str, detail: &str) -> ApiError {
    ApiError::invalid(format!(
        "CustomResourceDefinition.apiextensions.k8s.io {name:?} is invalid: {field}: {detail}"
    ))
}

/// The kind a CRD object defines, checked as the real server checks it: group, kind,
/// plural and scope present, at least one served version, and the name `<plural>.<group>`.
pub fn resource_of(crd: &Value) -> Result<ResourceType, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = |pointer: &str, field: &str| {
        crd.pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| invalid(name, field, "Required value"))
    };
    let group = text("/spec/group", "spec.group")?;
    let kind = text("/spec/names/kind", "spec.names.kind")?;
    let plural = text("/spec/names/plural", "spec.names.plural")?;
    let namespaced = match text("/spec/scope", "spec.scope")?.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            let detail = format!(
                "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            );
            return Err(invalid(name, "spec.scope", &detail));
        }
    };
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            name,
            "metadata.name",
            &format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let entries = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut versions = Vec::new();
    for (i, version) in entries.iter().enumerate() {
        let version_name = version
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let version_name = version_name
            .ok_or_else(|| invalid(name, &format!("spec.versions[{i}].name"), "Required value"))?;
        if version
            .get("served")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            versions.push(version_name.to_string());
        }
    }
    if versions.is_empty() {
        return Err(invalid(
            name,
            "spec.versions",
            "Invalid value: must have at least one served version",
        ));
    }
    sort_versions(&mut versions);
    let strings = |pointer: &str| -> Vec<String> {
        let values = crd
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let (short_names, categories) = (
        strings("/spec/names/shortNames"),
        strings("/spec/names/categories"),
    );
    Ok(ResourceType {
        group,
        versions,
        kind,
        plural,
        namespaced,
        custom: true,
        short_names,
        categories,
    })
}

/// Checks a CRD about to be written and sets the status the real server's controllers set
/// at once: names accepted, Established.
pub fn conform(crd: &mut Value) -> Result<(), ApiError> {
    resource_of(crd)?;
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "reason": reason, "message": ""});
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|versions| {
            versions
                .iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|v| v.get("name").cloned())
                .collect::<Vec<_>>()
        }),
    });
    Ok(())
}

/// Serves (or re-defines) the kind of a CRD just written.
pub fn installed(shared: &Shared, crd: &Value) {
    if let Ok(resource) = resource_of(crd) {
        lock(&shared.registry).install(resource);
    }
}

/// Stops serving the kind of a CRD just deleted.
pub fn deleted(shared: &Shared, crd: &Value) {
    if let Ok(resource) = resource_of(crd) {
        uninstall(shared, &resource.group, &resource.plural);
    }
}

/// Removes a custom resource as deleting its CRD does: every object is deleted (watches see
/// the deletions), open watches end, and the API answers 404 from then on.
pub fn uninstall(shared: &Shared, group: &str, plural: &str) {
    let Some(resource) = lock(&shared.registry).remove(group, plural) else {
        return;
    };
    let mut store = lock(&shared.store);
    for (key, _) in store.all(&resource.key()) {
        store.write(&resource, key, None);
    }
    store.close_watches(Some(&resource.key()), || WatchMessage::End);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, scope: &str, versions: Value) -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": KIND, "metadata": {"name": name},
            "spec": {"group": "networking.istio.io", "scope": scope,
                "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway", "shortNames": ["gw"]}, "versions": versions}})
    }

    #[test]
    fn a_crd_defines_its_served_versions_most_stable_first() {
        let versions = json!([{"name": "v1alpha3", "served": true}, {"name": "v1", "served": true, "storage": true},
            {"name": "v1beta1", "served": false}]);
        let resource =
            resource_of(&crd("gateways.networking.istio.io", "Namespaced", versions)).unwrap();
        assert_eq!(resource.versions, ["v1", "v1alpha3"]);
        assert_eq!(
            (
                resource.kind.as_str(),
                resource.plural.as_str(),
                resource.namespaced
            ),
            ("Gateway", "gateways", true)
        );
        assert_eq!(resource.short_names, ["gw"]);
    }

    #[test]
    fn errors_name_the_field() {
        let served = json!([{"name": "v1", "served": true}]);
        let message = |crd: Value| resource_of(&crd).unwrap_err().message;
        assert!(
            message(crd("gateways.example.com", "Namespaced", served.clone()))
                .contains("metadata.name")
        );
        assert!(
            message(crd("gateways.networking.istio.io", "Everywhere", served))
                .contains("spec.scope")
        );
        assert!(
            message(crd(
                "gateways.networking.istio.io",
                "Cluster",
                json!([{"name": "v1"}])
            ))
            .contains("spec.versions")
        );
        let mut no_group = crd("gateways.networking.istio.io", "Cluster", json!([]));
        no_group["spec"].as_object_mut().unwrap().remove("group");
        assert!(message(no_group).contains("spec.group"));
    }

    #[test]
    fn conform_marks_the_crd_established() {
        let mut object = crd(
            "gateways.networking.istio.io",
            "Namespaced",
            json!([{"name": "v1", "served": true, "storage": true}]),
        );
        conform(&mut object).unwrap();
        let established = object["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established");
        assert!(established, "{object}");
        assert_eq!(object["status"]["storedVersions"], json!(["v1"]));
    }
}
