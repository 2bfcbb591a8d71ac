//! Turns the JSON Schema schemars derives from a spec type into a Kubernetes *structural*
//! OpenAPI v3 schema: the API server refuses a CRD whose schema is not structural, and prunes
//! every field a structural schema does not name.
//!
//! What changes: `$ref`s are inlined (structural schemas have no references), `Option`'s `null`
//! alternative is dropped (an absent field is how the API server spells `None`), an enum's
//! alternatives are merged into one typed node, unsigned integers get Istio's bounds, and the
//! annotations Kubernetes does not want (`default`, which the API server would *apply*,
//! `$schema`, `title`, our developer doc comments) are removed.

use serde_json::{Map, Value, json};

/// Why a schemars schema cannot become a structural one. `path` is the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("{path}: $ref {reference} is recursive, which a structural schema cannot express")]
    Recursive { path: String, reference: String },
    #[error("{path}: $ref {reference} names no definition")]
    UnknownRef { path: String, reference: String },
    #[error("{path}: the schema accepts any value; give the field a typed schema")]
    Untyped { path: String },
    #[error("{path}: cannot merge the alternatives of {keyword}: {reason}")]
    Alternatives {
        path: String,
        keyword: &'static str,
        reason: String,
    },
}

/// Keys that only document, or that the API server would act on (`default`), dropped everywhere.
const DROPPED: &[&str] = &[
    "$schema",
    "$defs",
    "definitions",
    "title",
    "default",
    "description",
    "examples",
];

/// Rewrites a root schema (with its `$defs`) into a structural schema.
pub fn structural(root: &Value) -> Result<Value, RewriteError> {
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Rewriter {
        defs,
        stack: Vec::new(),
    }
    .node(root, "")
}

struct Rewriter {
    defs: Map<String, Value>,
    /// The definitions being inlined, outermost first, to detect recursion.
    stack: Vec<String>,
}

impl Rewriter {
    fn node(&mut self, node: &Value, path: &str) -> Result<Value, RewriteError> {
        let Some(obj) = node.as_object() else {
            return Err(RewriteError::Untyped {
                path: display(path),
            });
        };
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            return self.inline(reference, obj, path);
        }
        let mut out = Map::new();
        for (key, value) in obj {
            if DROPPED.contains(&key.as_str()) {
                continue;
            }
            let value = match key.as_str() {
                "properties" => Value::Object(self.properties(value, path)?),
                "items" => self.node(value, &format!("{path}[]"))?,
                "additionalProperties" if value.is_object() => {
                    self.node(value, &format!("{path}{{}}"))?
                }
                // `false` is serde's `deny_unknown_fields`: pruning already drops unknown fields.
                "additionalProperties" => continue,
                // A map with non-string keys (`BTreeMap<u32, _>`): Kubernetes has no
                // patternProperties, so the values' schema becomes additionalProperties.
                "patternProperties" => {
                    let values =
                        single_pattern(value).ok_or_else(|| RewriteError::Alternatives {
                            path: display(path),
                            keyword: "patternProperties",
                            reason: "more than one key pattern".into(),
                        })?;
                    out.insert(
                        "additionalProperties".into(),
                        self.node(values, &format!("{path}{{}}"))?,
                    );
                    continue;
                }
                "anyOf" | "oneOf" | "allOf" => Value::Array(self.each(value, path)?),
                "const" => {
                    out.insert("enum".into(), json!([value]));
                    continue;
                }
                _ => value.clone(),
            };
            out.insert(key.clone(), value);
        }
        drop_null_type(&mut out);
        for keyword in ["anyOf", "oneOf"] {
            merge_alternatives(&mut out, keyword, path)?;
        }
        unsigned_bounds(&mut out);
        if out.get("type").is_none() && !is_escape_hatch(&out) {
            return Err(RewriteError::Untyped {
                path: display(path),
            });
        }
        Ok(Value::Object(out))
    }

    fn inline(
        &mut self,
        reference: &str,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Result<Value, RewriteError> {
        let name = reference.strip_prefix("#/$defs/").unwrap_or(reference);
        if self.stack.iter().any(|n| n == name) {
            return Err(RewriteError::Recursive {
                path: display(path),
                reference: reference.into(),
            });
        }
        let Some(def) = self.defs.get(name).cloned() else {
            return Err(RewriteError::UnknownRef {
                path: display(path),
                reference: reference.into(),
            });
        };
        self.stack.push(name.to_string());
        let inlined = self.node(&def, path);
        self.stack.pop();
        let mut inlined = inlined?;
        // schemars puts annotations (dropped) beside a `$ref`; keep anything else it may add.
        if let Value::Object(target) = &mut inlined {
            for (k, v) in obj
                .iter()
                .filter(|(k, _)| *k != "$ref" && !DROPPED.contains(&k.as_str()))
            {
                target.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(inlined)
    }

    fn properties(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Result<Map<String, Value>, RewriteError> {
        let mut out = Map::new();
        for (name, schema) in value.as_object().into_iter().flatten() {
            out.insert(name.clone(), self.node(schema, &format!("{path}.{name}"))?);
        }
        Ok(out)
    }

    fn each(&mut self, value: &Value, path: &str) -> Result<Vec<Value>, RewriteError> {
        let mut out = Vec::new();
        for alternative in value.as_array().into_iter().flatten() {
            if is_null_schema(alternative) {
                out.push(json!({"type": "null"}));
            } else if alternative.get("required").is_some()
                && alternative.get("type").is_none()
                && alternative.get("$ref").is_none()
            {
                // A value validation (`{required: [x]}`), structural as it is.
                out.push(alternative.clone());
            } else {
                out.push(self.node(alternative, path)?);
            }
        }
        Ok(out)
    }
}

fn single_pattern(value: &Value) -> Option<&Value> {
    let patterns = value.as_object()?;
    if patterns.len() == 1 {
        patterns.values().next()
    } else {
        None
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null") || v.get("const") == Some(&Value::Null)
}

fn is_escape_hatch(node: &Map<String, Value>) -> bool {
    node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// `type: [T, "null"]` (an `Option<T>`) becomes `type: T`; `null` in an `enum` goes too.
fn drop_null_type(node: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = node.get("type") {
        let kept: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if kept.len() == 1 {
            node.insert("type".into(), kept[0].clone());
        }
    }
    if let Some(Value::Array(values)) = node.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

/// Structural schemas allow `anyOf`/`oneOf` only as value validations under a typed node, so an
/// enum's alternatives are merged: string constants into one `enum`, externally tagged variants
/// (`{exact: ..}`, `{prefix: ..}`) into one object whose `oneOf` keeps "exactly one of them".
fn merge_alternatives(
    node: &mut Map<String, Value>,
    keyword: &'static str,
    path: &str,
) -> Result<(), RewriteError> {
    let Some(Value::Array(alternatives)) = node.remove(keyword) else {
        return Ok(());
    };
    let alternatives: Vec<Value> = alternatives
        .into_iter()
        .filter(|a| !is_null_schema(a))
        .collect();
    let fail = |reason: String| RewriteError::Alternatives {
        path: display(path),
        keyword,
        reason,
    };
    let types: Vec<Option<&str>> = alternatives
        .iter()
        .map(|a| a.get("type").and_then(Value::as_str))
        .collect();
    if alternatives.is_empty() {
        return Err(fail("no alternative but null".into()));
    }
    if types.iter().all(Option::is_none) {
        // Already value validations only (`{required: [..]}`): keep them.
        node.insert(keyword.into(), Value::Array(alternatives));
        return Ok(());
    }
    if alternatives.len() == 1 {
        for (k, v) in alternatives[0].as_object().into_iter().flatten() {
            node.entry(k.clone()).or_insert_with(|| v.clone());
        }
        return Ok(());
    }
    if types.iter().all(|t| *t == Some("string")) {
        let mut values = Vec::new();
        for a in &alternatives {
            let Some(Value::Array(vs)) = a.get("enum") else {
                return Err(fail("a string alternative without enum values".into()));
            };
            values.extend(vs.iter().cloned());
        }
        node.insert("type".into(), json!("string"));
        node.insert("enum".into(), Value::Array(values));
        return Ok(());
    }
    if types.iter().all(|t| *t == Some("object")) {
        let mut properties = Map::new();
        let mut one_of = Vec::new();
        for a in &alternatives {
            for (name, schema) in a
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if properties.get(name).is_some_and(|s| s != schema) {
                    return Err(fail(format!("property {name} has two different schemas")));
                }
                properties.insert(name.clone(), schema.clone());
            }
            if let Some(required) = a.get("required") {
                one_of.push(json!({"required": required}));
            }
        }
        node.insert("type".into(), json!("object"));
        node.insert("properties".into(), Value::Object(properties));
        if one_of.len() == alternatives.len() {
            node.insert("oneOf".into(), Value::Array(one_of));
        }
        return Ok(());
    }
    Err(fail(format!("alternatives of different types {types:?}")))
}

/// schemars writes `format: uint32`/`uint64`, which Kubernetes does not know; Istio's CRDs bound
/// the value instead.
fn unsigned_bounds(node: &mut Map<String, Value>) {
    let max = match node.get("format").and_then(Value::as_str) {
        Some("uint32") => Some(json!(u32::MAX)),
        Some("uint64") => None,
        Some("uint8" | "uint16" | "uint" | "int8" | "int16") => None,
        _ => return,
    };
    node.remove("format");
    // A range the type declares (`#[schemars(range(..))]`) is narrower: keep it.
    node.entry("minimum").or_insert(json!(0));
    if let Some(m) = max {
        node.entry("maximum").or_insert(m);
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.trim_start_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlines_refs_and_drops_annotations() {
        let root = json!({
            "$schema": "x", "title": "T", "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A", "description": "doc"}},
            "$defs": {"A": {"type": "object", "default": {}, "properties": {"n": {"type": "string"}}}}
        });
        let got = structural(&root).unwrap();
        assert_eq!(
            got,
            json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"n": {"type": "string"}}}}})
        );
    }

    #[test]
    fn recursion_and_unknown_refs_are_errors() {
        let root = json!({"$ref": "#/$defs/A", "$defs": {"A": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}}});
        assert!(
            matches!(structural(&root), Err(RewriteError::Recursive { path, .. }) if path == "a")
        );
        let root = json!({"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}});
        assert!(
            matches!(structural(&root), Err(RewriteError::UnknownRef { path, .. }) if path == "b")
        );
    }

    #[test]
    fn options_lose_their_null() {
        let root = json!({"type": "object", "properties": {
            "n": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
            "o": {"anyOf": [{"$ref": "#/$defs/O"}, {"type": "null"}]},
        }, "$defs": {"O": {"type": "string", "enum": ["A", "B"]}}});
        let got = structural(&root).unwrap();
        assert_eq!(
            got["properties"]["n"],
            json!({"type": "integer", "minimum": 0, "maximum": 4294967295u32})
        );
        assert_eq!(
            got["properties"]["o"],
            json!({"type": "string", "enum": ["A", "B"]})
        );
    }

    #[test]
    fn merges_enum_alternatives() {
        let strings = json!({"oneOf": [{"type": "string", "const": "A", "description": "a"}, {"type": "string", "enum": ["B"]}]});
        assert_eq!(
            structural(&strings).unwrap(),
            json!({"type": "string", "enum": ["A", "B"]})
        );
        let tagged = json!({"oneOf": [
            {"type": "object", "properties": {"exact": {"type": "string"}}, "required": ["exact"], "additionalProperties": false},
            {"type": "object", "properties": {"prefix": {"type": "string"}}, "required": ["prefix"], "additionalProperties": false},
        ]});
        assert_eq!(
            structural(&tagged).unwrap(),
            json!({"type": "object", "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}},
                   "oneOf": [{"required": ["exact"]}, {"required": ["prefix"]}]})
        );
        let mixed = json!({"anyOf": [{"type": "string", "enum": ["A"]}, {"type": "object"}]});
        assert!(matches!(
            structural(&mixed),
            Err(RewriteError::Alternatives {
                keyword: "anyOf",
                ..
            })
        ));
    }

    #[test]
    fn integer_keyed_maps_become_additional_properties() {
        let root = json!({"type": "object", "patternProperties": {"^\\d+$": {"$ref": "#/$defs/M"}}, "$defs": {"M": {"type": "string"}}});
        assert_eq!(
            structural(&root).unwrap(),
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        let two = json!({"type": "object", "patternProperties": {"^a$": {"type": "string"}, "^b$": {"type": "string"}}});
        assert!(matches!(
            structural(&two),
            Err(RewriteError::Alternatives {
                keyword: "patternProperties",
                ..
            })
        ));
    }

    #[test]
    fn untyped_fields_are_errors() {
        let root = json!({"type": "object", "properties": {"free": true, "empty": {}}});
        let err = structural(&root).unwrap_err();
        assert!(
            matches!(err, RewriteError::Untyped { ref path } if path == "empty" || path == "free"),
            "{err}"
        );
        let hatch = json!({"x-kubernetes-preserve-unknown-fields": true});
        assert_eq!(structural(&hatch).unwrap(), hatch);
    }
}
