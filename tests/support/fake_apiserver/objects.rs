//! Writes as the real server does them: what it stamps on create (uid, creationTimestamp,
//! generation), what an update may not change, optimistic concurrency on resourceVersion,
//! and the status subresource of custom resources.

use serde_json::{Value, json};

use super::crds;
use super::patch;
use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{ObjectKey, Store};

/// Where an object lives: its resource, the version the client speaks, its namespace.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub resource: &'a ResourceType,
    pub version: &'a str,
    pub namespace: Option<&'a str>,
}

impl Place<'_> {
    pub fn key(&self, name: &str) -> ObjectKey {
        (
            self.namespace.unwrap_or_default().to_string(),
            name.to_string(),
        )
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.resource.qualified(), name)
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn str_at<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks the body names this resource and this namespace, and fills in apiVersion and kind.
fn conform(place: Place, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    let resource = place.resource;
    if let Some(kind) = str_at(object, "/kind")
        && kind != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "kind: {kind} does not match the {} endpoint ({})",
            resource.qualified(),
            resource.kind
        )));
    }
    object["apiVersion"] = Value::String(resource.api_version(place.version));
    object["kind"] = Value::String(resource.kind.clone());
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if crds::is_crd(resource) {
        crds::conform(object)?;
    }
    match place.namespace {
        Some(namespace) => {
            if let Some(body) = str_at(object, "/metadata/namespace")
                && body != namespace
            {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace: the namespace of the object ({body}) does not match the namespace of the request ({namespace})"
                )));
            }
            object["metadata"]["namespace"] = Value::String(namespace.into());
        }
        None => {
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("namespace");
            }
        }
    }
    Ok(())
}

pub fn create(store: &mut Store, place: Place, mut object: Value) -> Result<Value, ApiError> {
    if place.resource.namespaced && place.namespace.is_none() {
        return Err(ApiError::bad_request(format!(
            "{}: a namespaced resource is created in a namespace",
            place.resource.qualified()
        )));
    }
    conform(place, &mut object)?;
    let name = match (
        str_at(&object, "/metadata/name"),
        str_at(&object, "/metadata/generateName"),
    ) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}{:05x}", store.resource_version()),
        (None, None) => {
            return Err(ApiError::invalid(
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    let key = place.key(&name);
    if store.get(&place.resource.key(), &key).is_some() {
        return Err(ApiError::already_exists(&place.resource.qualified(), &name));
    }
    let metadata = &mut object["metadata"];
    metadata["name"] = Value::String(name);
    metadata["uid"] = Value::String(store.next_uid());
    metadata["creationTimestamp"] = Value::String(now());
    if place.resource.custom {
        metadata["generation"] = json!(1);
    }
    store
        .write(place.resource, key, Some(object))
        .ok_or_else(|| ApiError::new(500, "InternalError", "create wrote nothing"))
}

/// Which part of the object a write may change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part {
    /// The object; a custom resource's status is kept (it has a status subresource).
    Main,
    /// Only `status`.
    Status,
}

/// Replaces an object. With `check_version`, a resourceVersion in the body must be the
/// stored one (409 Conflict otherwise); an empty one is an unconditional update.
pub fn update(
    store: &mut Store,
    place: Place,
    name: &str,
    mut object: Value,
    part: Part,
    check_version: bool,
) -> Result<Value, ApiError> {
    let key = place.key(name);
    let current = store
        .get(&place.resource.key(), &key)
        .cloned()
        .ok_or_else(|| place.not_found(name))?;
    conform(place, &mut object)?;
    if let Some(body_name) = str_at(&object, "/metadata/name")
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "metadata.name: the name of the object ({body_name}) does not match the name in the URL ({name})"
        )));
    }
    if check_version
        && let Some(rv) = str_at(&object, "/metadata/resourceVersion")
        && Some(rv) != str_at(&current, "/metadata/resourceVersion")
    {
        return Err(ApiError::conflict(&place.resource.qualified(), name));
    }
    let mut next = match part {
        Part::Status => {
            let mut next = current.clone();
            next["status"] = object.get("status").cloned().unwrap_or(Value::Null);
            next
        }
        Part::Main if place.resource.custom => {
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            object
        }
        Part::Main => object,
    };
    if let Some(o) = next.as_object_mut()
        && o.get("status").is_some_and(Value::is_null)
    {
        o.remove("status");
    }
    for field in [
        "name",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        next["metadata"][field] = current["metadata"][field].clone();
    }
    if let Some(metadata) = next["metadata"].as_object_mut() {
        metadata.retain(|_, v| !v.is_null());
    }
    if place.resource.custom && next.get("spec") != current.get("spec") {
        next["metadata"]["generation"] =
            json!(current["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
    }
    if next == current {
        // A no-op update writes nothing, as on a real server: no new resourceVersion, no event.
        return Ok(current);
    }
    store
        .write(place.resource, key, Some(next))
        .ok_or_else(|| place.not_found(name))
}

/// The patch formats the real server accepts, by Content-Type.
pub fn patch(
    store: &mut Store,
    place: Place,
    name: &str,
    content_type: &str,
    body: &[u8],
    part: Part,
) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
    let current = store.get(&place.resource.key(), &place.key(name)).cloned();
    let mut object = match (current, media) {
        (Some(current), _) => current,
        // Server-side apply creates what does not exist.
        (None, "application/apply-patch+yaml") => return create(store, place, patch),
        (None, _) => return Err(place.not_found(name)),
    };
    match media {
        "application/merge-patch+json" | "application/apply-patch+yaml" => {
            patch::merge(&mut object, &patch)
        }
        // As on a real server: custom resources have no Go types to take merge keys from.
        "application/strategic-merge-patch+json" if place.resource.custom => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "strategic merge patch is not supported for {}",
                    place.resource.qualified()
                ),
            ));
        }
        "application/strategic-merge-patch+json" => patch::strategic_merge(&mut object, &patch)
            .map_err(|e| ApiError::bad_request(format!("strategic merge patch: {e}")))?,
        "application/json-patch+json" => {
            patch::json_patch(&mut object, &patch).map_err(ApiError::invalid)?
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the patch Content-Type {other:?} is not supported"),
            ));
        }
    }
    update(store, place, name, object, part, true)
}

/// Deletes an object; `preconditions` (`{"uid": .., "resourceVersion": ..}` of DeleteOptions)
/// must hold.
pub fn delete(
    store: &mut Store,
    place: Place,
    name: &str,
    preconditions: Option<&Value>,
) -> Result<Value, ApiError> {
    let key = place.key(name);
    let current = store
        .get(&place.resource.key(), &key)
        .ok_or_else(|| place.not_found(name))?;
    for field in ["uid", "resourceVersion"] {
        if let Some(expected) = preconditions
            .and_then(|p| p.get(field))
            .and_then(Value::as_str)
            && Some(expected) != current["metadata"][field].as_str()
        {
            return Err(ApiError::conflict(&place.resource.qualified(), name));
        }
    }
    store
        .write(place.resource, key, None)
        .ok_or_else(|| place.not_found(name))
}
