//! JSON merge patch (RFC 7386; strategic merge is treated as merge) and JSON patch (RFC 6902).

use serde_json::Value;

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

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent of `pointer`'s target and the last token.
fn parent<'a>(document: &'a mut Value, pointer: &str) -> Result<(&'a mut Value, String), String> {
    let (parent, last) = pointer.rsplit_once('/').ok_or_else(|| format!("path {pointer:?} is not a JSON pointer"))?;
    let parent = document.pointer_mut(parent).ok_or_else(|| format!("path {pointer:?}: parent does not exist"))?;
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
    let operations = operations.as_array().ok_or("a JSON patch must be an array of operations")?;
    for (i, op) in operations.iter().enumerate() {
        let field = |name: &str| op.get(name).and_then(Value::as_str).ok_or_else(|| format!("operation {i}: missing {name:?}"));
        let value = || op.get("value").cloned().ok_or_else(|| format!("operation {i}: missing \"value\""));
        let path = field("path")?;
        match field("op")? {
            "add" => add(document, path, value()?)?,
            "remove" => {
                remove(document, path)?;
            }
            "replace" => {
                let target = document.pointer_mut(path).ok_or_else(|| format!("operation {i}: path {path:?} does not exist"))?;
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
                let copied =
                    document.pointer(from).cloned().ok_or_else(|| format!("operation {i}: from {from:?} does not exist"))?;
                add(document, path, copied)?;
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_removes_and_recurses() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 1});
        merge(&mut doc, &json!({"a": {"b": null, "x": 3}, "d": [3], "e": null}));
        assert_eq!(doc, json!({"a": {"c": 2, "x": 3}, "d": [3]}));
    }

    #[test]
    fn json_patch_applies_every_operation_in_order() {
        let mut doc = json!({"webhooks": [{"name": "a", "clientConfig": {}}]});
        let ops = json!([
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Zm9v"},
            {"op": "test", "path": "/webhooks/0/name", "value": "a"},
            {"op": "copy", "from": "/webhooks/0", "path": "/webhooks/-"},
            {"op": "replace", "path": "/webhooks/1/name", "value": "b"},
            {"op": "move", "from": "/webhooks/1", "path": "/second"},
            {"op": "remove", "path": "/webhooks/0/clientConfig"},
        ]);
        json_patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"webhooks": [{"name": "a"}], "second": {"name": "b", "clientConfig": {"caBundle": "Zm9v"}}}));
        let err = json_patch(&mut doc, &json!([{"op": "test", "path": "/second/name", "value": "a"}])).unwrap_err();
        assert!(err.contains("/second/name"), "{err}");
    }
}
