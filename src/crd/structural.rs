//! The API server's "structural schema" rules, checked here so that a CRD that would be refused
//! (or silently lose pruning) fails a test instead of a `kubectl apply`.
//! See <https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>.

use serde_json::{Map, Value};

/// One broken rule, at a JSON path of the schema's *fields* (`spec.http[].match[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            if self.path.is_empty() {
                "(root)"
            } else {
                &self.path
            },
            self.rule
        )
    }
}

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];
const JUNCTORS: &[&str] = &["allOf", "anyOf", "oneOf", "not"];
/// The OpenAPI v3 keywords a CRD schema may use (Kubernetes' `JSONSchemaProps`).
const KNOWN: &[&str] = &[
    "type",
    "format",
    "description",
    "title",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "default",
    "example",
    "externalDocs",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];
/// What a junctor (`oneOf`…) must not set: it may only add value validations.
const NOT_IN_JUNCTOR: &[&str] = &[
    "type",
    "description",
    "default",
    "additionalProperties",
    "nullable",
];

/// Every way `schema` (an `openAPIV3Schema`) is not structural; empty when it is.
pub fn violations(schema: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    node(schema, "", &mut out);
    out
}

fn node(schema: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut fail = |rule: String| {
        out.push(Violation {
            path: path.trim_start_matches('.').to_string(),
            rule,
        })
    };
    let Some(obj) = schema.as_object() else {
        fail(format!("schema must be an object, found {schema}"));
        return;
    };
    for key in obj.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        fail(format!("{key} is not allowed in a CRD schema"));
    }
    let escape = is_true(obj, "x-kubernetes-int-or-string")
        || is_true(obj, "x-kubernetes-preserve-unknown-fields");
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => fail(format!("type {t:?} is not one of {TYPES:?}")),
        None if obj.contains_key("type") => fail("type must be a single string".into()),
        None if !escape => fail("type must be set".into()),
        None => {}
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        fail("properties and additionalProperties are mutually exclusive".into());
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        fail("additionalProperties: false is not allowed (pruning drops unknown fields)".into());
    }
    if obj.get("type").and_then(Value::as_str) == Some("array")
        && !obj.get("items").is_some_and(Value::is_object)
    {
        fail("an array must have one items schema".into());
    }
    if is_true(obj, "x-kubernetes-int-or-string") && !int_or_string_junctors_ok(obj) {
        fail(
            "x-kubernetes-int-or-string allows only anyOf [{type: integer}, {type: string}]".into(),
        );
    }
    for (name, sub) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        node(sub, &format!("{path}.{name}"), out);
    }
    if let Some(sub) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        node(sub, &format!("{path}{{}}"), out);
    }
    if let Some(sub) = obj.get("items") {
        node(sub, &format!("{path}[]"), out);
    }
    if !is_true(obj, "x-kubernetes-int-or-string") {
        for j in JUNCTORS {
            for sub in junctor_members(obj, j) {
                junctor(sub, obj, path, out);
            }
        }
    }
}

/// A junctor member may restrict values of fields the enclosing node declares; nothing else.
fn junctor(schema: &Value, outer: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    let mut fail = |rule: String| {
        out.push(Violation {
            path: path.trim_start_matches('.').to_string(),
            rule,
        })
    };
    let Some(obj) = schema.as_object() else {
        fail(format!(
            "a junctor member must be an object, found {schema}"
        ));
        return;
    };
    for key in obj.keys() {
        if NOT_IN_JUNCTOR.contains(&key.as_str()) || key.starts_with("x-kubernetes-") {
            fail(format!("{key} is not allowed inside allOf/anyOf/oneOf/not"));
        }
    }
    let declared = outer.get("properties").and_then(Value::as_object);
    let named = obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.keys().cloned());
    let required = obj
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from));
    for name in named.chain(required) {
        if !declared.is_some_and(|d| d.contains_key(&name)) {
            fail(format!(
                "{name} is named inside a junctor but not declared in properties"
            ));
        }
    }
    for j in JUNCTORS {
        for sub in junctor_members(obj, j) {
            junctor(sub, outer, path, out);
        }
    }
}

fn junctor_members<'a>(obj: &'a Map<String, Value>, keyword: &str) -> Vec<&'a Value> {
    match obj.get(keyword) {
        Some(Value::Array(members)) => members.iter().collect(),
        Some(single) if keyword == "not" => vec![single],
        _ => Vec::new(),
    }
}

fn int_or_string_junctors_ok(obj: &Map<String, Value>) -> bool {
    match obj.get("anyOf") {
        None => true,
        Some(any) => *any == serde_json::json!([{"type": "integer"}, {"type": "string"}]),
    }
}

fn is_true(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key) == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(schema: Value) -> Vec<String> {
        violations(&schema)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn accepts_a_structural_schema() {
        let schema = json!({"type": "object", "properties": {
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "l": {"type": "array", "items": {"type": "integer"}},
            "s": {"type": "object", "properties": {"exact": {"type": "string"}}, "oneOf": [{"required": ["exact"]}, {"not": {"required": ["exact"]}}]},
            "p": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "u": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }});
        assert_eq!(rules(schema), Vec::<String>::new());
    }

    #[test]
    fn names_each_broken_rule_and_where() {
        let schema = json!({"type": "object", "properties": {
            "untyped": {"properties": {}},
            "both": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "list": {"type": "array"},
            "ref": {"$ref": "#/$defs/X"},
            "closed": {"type": "object", "additionalProperties": false},
            "j": {"type": "object", "properties": {"a": {"type": "string"}}, "oneOf": [{"type": "object"}, {"required": ["b"]}]},
            "n": {"type": ["string", "null"]},
        }});
        let got = rules(schema);
        for expected in [
            "untyped: type must be set",
            "both: properties and additionalProperties are mutually exclusive",
            "list: an array must have one items schema",
            "ref: $ref is not allowed in a CRD schema",
            "closed: additionalProperties: false is not allowed (pruning drops unknown fields)",
            "j: type is not allowed inside allOf/anyOf/oneOf/not",
            "j: b is named inside a junctor but not declared in properties",
            "n: type must be a single string",
        ] {
            assert!(
                got.iter().any(|g| g == expected),
                "missing {expected:?} in {got:#?}"
            );
        }
    }
}
