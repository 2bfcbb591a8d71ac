//! JSON merge patch (RFC 7386), strategic merge patch, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

const ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";
const RETAIN_KEYS: &str = "$retainKeys";
const PATCH: &str = "$patch";

fn directive(value: &Value) -> Option<&str> {
    value.get(PATCH).and_then(Value::as_str)
}

/// A strategic merge patch as kubectl computes one for a built-in kind (`kubectl apply`,
/// `kubectl patch`): a merge patch whose lists of objects merge by a key, with directives
/// (`$patch`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`, `$retainKeys`) that never
/// reach the stored object. The real server takes each list's merge key from the Go types;
/// here it is read off the patch itself, where kubectl always names it: in the
/// `$setElementOrder` entries (`[{"port": 80}]`) and `$patch: delete` entries of a list it
/// changes. A list without them is replaced, as an atomic list is.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get(PATCH).and_then(Value::as_str) {
        None | Some("merge") => {}
        Some("replace") => {
            let mut replacement = Value::Object(Map::new());
            let rest: Map<String, Value> = patch
                .iter()
                .filter(|(k, _)| *k != PATCH)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            strategic_merge(&mut replacement, &Value::Object(rest))?;
            *target = replacement;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown $patch directive {other:?} on an object")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return Ok(());
    };
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(_) if directive(value) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(_) => {
                strategic_merge(target.entry(key.clone()).or_insert(Value::Null), value)?
            }
            Value::Array(items) => {
                let order = patch
                    .get(&format!("{ORDER}{key}"))
                    .and_then(Value::as_array);
                let merged =
                    merge_list(target.get(key), items, order).map_err(|e| format!("{key}: {e}"))?;
                target.insert(key.clone(), merged);
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVES) {
            let doomed = value
                .as_array()
                .ok_or_else(|| format!("{key}: expected a list"))?;
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
        } else if let Some(field) = key.strip_prefix(ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| format!("{key}: expected a list"))?;
            if let Some(Value::Array(items)) = target.get_mut(field) {
                reorder(items, order);
            }
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let retain = retain
            .as_array()
            .ok_or_else(|| format!("{RETAIN_KEYS}: expected a list"))?;
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

/// The key a patch's list merges by: the one field of its `$setElementOrder` entries or of
/// its `$patch: delete` entries.
fn merge_key(items: &[Value], order: Option<&Vec<Value>>) -> Option<String> {
    let single_key = |entry: &Value| {
        let mut keys = entry.as_object()?.keys().filter(|k| *k != PATCH);
        let key = keys.next()?.clone();
        keys.next().is_none().then_some(key)
    };
    let from_order = order.into_iter().flatten().find_map(single_key);
    from_order.or_else(|| {
        items
            .iter()
            .filter(|i| directive(i) == Some("delete"))
            .find_map(single_key)
    })
}

fn merge_list(
    current: Option<&Value>,
    items: &[Value],
    order: Option<&Vec<Value>>,
) -> Result<Value, String> {
    let current: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.iter().any(|i| directive(i) == Some("replace")) {
        let rest: Vec<Value> = items
            .iter()
            .filter(|i| directive(i) != Some("replace"))
            .cloned()
            .collect();
        return merge_list(None, &rest, None);
    }
    let fresh = |item: &Value| {
        let mut value = Value::Null;
        strategic_merge(&mut value, item).map(|()| value)
    };
    if let Some(key) = merge_key(items, order) {
        let mut merged = current;
        for item in items {
            let id = item
                .get(&key)
                .ok_or_else(|| format!("an entry has no merge key {key:?}: {item}"))?;
            let position = merged.iter().position(|m| m.get(&key) == Some(id));
            match (directive(item), position) {
                (Some("delete"), Some(i)) => {
                    merged.remove(i);
                }
                (Some("delete"), None) => {}
                (_, Some(i)) => strategic_merge(&mut merged[i], item)?,
                (_, None) => merged.push(fresh(item)?),
            }
        }
        return Ok(Value::Array(merged));
    }
    if order.is_some_and(|o| o.iter().all(|v| !v.is_object())) {
        // A list of scalars that merges (finalizers): a union.
        let mut merged = current;
        for item in items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        return Ok(Value::Array(merged));
    }
    items
        .iter()
        .map(fresh)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Puts the items `order` names first, in its order; the others keep theirs after them.
fn reorder(items: &mut [Value], order: &[Value]) {
    let rank = |item: &Value| {
        order.iter().position(|entry| match entry.as_object() {
            Some(fields) => fields.iter().all(|(k, v)| item.get(k) == Some(v)),
            None => entry == item,
        })
    };
    items.sort_by_key(|item| rank(item).unwrap_or(usize::MAX));
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent of `pointer`'s target and the last token.
fn parent<'a>(document: &'a mut Value, pointer: &str) -> Result<(&'a mut Value, String), String> {
    let (parent, last) = pointer
        .rsplit_once('/')
        .ok_or_else(|| format!("path {pointer:?} is not a JSON pointer"))?;
    let parent = document
        .pointer_mut(parent)
        .ok_or_else(|| format!("path {pointer:?}: parent does not exist"))?;
    Ok((parent, unescape(last)))
}

fn add(document: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *document = value;
        return Ok(());
    }
    let (parent, last) = parent(document, path)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i <= items.len() => {
                items.insert(i, value);
                Ok(())
            }
            _ => Err(format!("path {path:?}: index out of range")),
        },
        _ => Err(format!("path {path:?}: parent is not an object or array")),
    }
}

fn remove(document: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent(document, path)?;
    let removed = match parent {
        Value::Object(map) => map.remove(&last),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Some(items.remove(i)),
            _ => None,
        },
        _ => None,
    };
    removed.ok_or_else(|| format!("path {path:?} does not exist"))
}

pub fn json_patch(document: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for (i, op) in operations.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: missing {name:?}"))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i}: missing \"value\""))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add(document, path, value()?)?,
            "remove" => {
                remove(document, path)?;
            }
            "replace" => {
                let target = document
                    .pointer_mut(path)
                    .ok_or_else(|| format!("operation {i}: path {path:?} does not exist"))?;
                *target = value()?;
            }
            "test" => {
                if document.pointer(path) != Some(&value()?) {
                    return Err(format!("operation {i}: test of {path:?} failed"));
                }
            }
            "move" => {
                let moved = remove(document, field("from")?)?;
                add(document, path, moved)?;
            }
            "copy" => {
                let from = field("from")?;
                let copied = document
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("operation {i}: from {from:?} does not exist"))?;
                add(document, path, copied)?;
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(())
}

// No `use` in the tests: a bench that includes the fake builds with cfg(test) but without
// them, where the imports would go unused.
#[cfg(test)]
mod tests {
    #[test]
    fn merge_patch_replaces_removes_and_recurses() {
        let mut doc = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 1});
        super::merge(
            &mut doc,
            &serde_json::json!({"a": {"b": null, "x": 3}, "d": [3], "e": null}),
        );
        assert_eq!(doc, serde_json::json!({"a": {"c": 2, "x": 3}, "d": [3]}));
    }

    #[test]
    fn strategic_merge_merges_lists_by_the_key_kubectl_names_and_drops_directives() {
        // What `kubectl apply` sends for a Service whose ports changed and lost a label.
        let mut service = serde_json::json!({"metadata": {"labels": {"app": "web", "a": "b"}, "finalizers": ["x"]},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 9080}, {"name": "grpc", "port": 9090}]}});
        let patch = serde_json::json!({"metadata": {"labels": {"a": null}, "$setElementOrder/finalizers": ["x", "y"], "finalizers": ["y"]},
            "spec": {"$setElementOrder/ports": [{"port": 9081}, {"port": 9080}],
                "ports": [{"name": "http2", "port": 9081}, {"port": 9080, "targetPort": 8080}, {"$patch": "delete", "port": 9090}]}});
        super::strategic_merge(&mut service, &patch).unwrap();
        assert_eq!(
            service,
            serde_json::json!({"metadata": {"labels": {"app": "web"}, "finalizers": ["x", "y"]},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http2", "port": 9081}, {"name": "http", "port": 9080, "targetPort": 8080}]}})
        );
    }

    #[test]
    fn strategic_merge_replaces_atomic_lists_and_honours_replace_delete_and_retain_keys() {
        let mut slice = serde_json::json!({"endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
            "data": {"a": "1"}, "extra": {"b": 1}, "finalizers": ["x", "y"]});
        let patch = serde_json::json!({"endpoints": [{"addresses": ["10.0.0.3"]}],
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
            "data": {"$patch": "replace", "c": "3"}, "extra": {"$patch": "delete"},
            "$deleteFromPrimitiveList/finalizers": ["x"]});
        super::strategic_merge(&mut slice, &patch).unwrap();
        assert_eq!(
            slice,
            serde_json::json!({"endpoints": [{"addresses": ["10.0.0.3"]}], "spec": {"strategy": {"type": "Recreate"}},
            "data": {"c": "3"}, "finalizers": ["y"]})
        );
        let err = super::strategic_merge(
            &mut slice,
            &serde_json::json!({"data": {"$patch": "explode"}}),
        )
        .unwrap_err();
        assert!(err.contains("explode"), "{err}");
    }

    #[test]
    fn json_patch_applies_every_operation_in_order() {
        let mut doc = serde_json::json!({"webhooks": [{"name": "a", "clientConfig": {}}]});
        let ops = serde_json::json!([
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Zm9v"},
            {"op": "test", "path": "/webhooks/0/name", "value": "a"},
            {"op": "copy", "from": "/webhooks/0", "path": "/webhooks/-"},
            {"op": "replace", "path": "/webhooks/1/name", "value": "b"},
            {"op": "move", "from": "/webhooks/1", "path": "/second"},
            {"op": "remove", "path": "/webhooks/0/clientConfig"},
        ]);
        super::json_patch(&mut doc, &ops).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"webhooks": [{"name": "a"}], "second": {"name": "b", "clientConfig": {"caBundle": "Zm9v"}}})
        );
        let err = super::json_patch(
            &mut doc,
            &serde_json::json!([{"op": "test", "path": "/second/name", "value": "a"}]),
        )
        .unwrap_err();
        assert!(err.contains("/second/name"), "{err}");
    }
}
