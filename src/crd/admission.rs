//! What the API server does to an object under one of our structural schemas, for the subset of
//! OpenAPI v3 that [`super::rewrite`] emits: it prunes fields the schema does not name and refuses
//! values of the wrong type. Tests run Istio's example objects through it: a field pruned here
//! would be silently lost on `kubectl apply`.

use serde_json::{Map, Value};

/// One field the API server would prune, or one value it would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub problem: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Checks `value` against `schema`; `path` names the value in messages (e.g. `spec`).
pub fn check(schema: &Value, value: &Value, path: &str) -> Vec<Issue> {
    let mut out = Vec::new();
    node(schema, value, path, &mut out);
    out
}

fn node(schema: &Value, value: &Value, path: &str, out: &mut Vec<Issue>) {
    let mut fail = |problem: String| {
        out.push(Issue {
            path: path.to_string(),
            problem,
        })
    };
    let Some(s) = schema.as_object() else { return };
    if value.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            fail("null is dropped (the schema is not nullable)".into());
        }
        return;
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(is_integer(value) || value.is_string()) {
            fail(format!(
                "must be an integer or a string, found {}",
                type_name(value)
            ));
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str)
        && !has_type(value, t)
    {
        fail(format!("must be of type {t}, found {}", type_name(value)));
        return;
    }
    if let Some(Value::Array(allowed)) = s.get("enum")
        && !allowed.contains(value)
    {
        fail(format!(
            "{value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64).filter(|m| n < *m) {
            fail(format!("{value} is less than the minimum {min}"));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64).filter(|m| n > *m) {
            fail(format!("{value} is greater than the maximum {max}"));
        }
    }
    if let Some(obj) = value.as_object() {
        object(s, obj, path, preserve, out);
    }
    if let (Some(items), Some(list)) = (s.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            node(items, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn object(
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    preserve: bool,
    out: &mut Vec<Issue>,
) {
    let properties = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (key, v) in obj {
        let at = format!("{path}.{key}");
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(sub), _) | (None, Some(sub)) => node(sub, v, &at, out),
            (None, None) if preserve => {}
            (None, None) => out.push(Issue {
                path: at,
                problem: "unknown field, pruned".into(),
            }),
        }
    }
    for name in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !obj.contains_key(name) {
            out.push(Issue {
                path: path.to_string(),
                problem: format!("required field {name} is missing"),
            });
        }
    }
    for (keyword, want) in [("oneOf", Some(1)), ("anyOf", None)] {
        if let Some(Value::Array(members)) = s.get(keyword) {
            let matched = members.iter().filter(|m| satisfies(m, obj)).count();
            let ok = match want {
                Some(n) => matched == n,
                None => matched > 0,
            };
            if !ok {
                out.push(Issue {
                    path: path.to_string(),
                    problem: format!("matches {matched} of the {keyword} alternatives"),
                });
            }
        }
    }
}

/// Whether an object meets a junctor member made of `required`, `not`, `anyOf`, `oneOf`, `allOf`.
fn satisfies(member: &Value, obj: &Map<String, Value>) -> bool {
    let required_ok = member
        .get("required")
        .and_then(Value::as_array)
        .is_none_or(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .all(|n| obj.contains_key(n))
        });
    let not_ok = member.get("not").is_none_or(|n| !satisfies(n, obj));
    let count = |k: &str| {
        member
            .get(k)
            .and_then(Value::as_array)
            .map(|ms| ms.iter().filter(|m| satisfies(m, obj)).count())
    };
    let any_ok = count("anyOf").is_none_or(|c| c > 0);
    let one_ok = count("oneOf").is_none_or(|c| c == 1);
    let all_ok = member
        .get("allOf")
        .and_then(Value::as_array)
        .is_none_or(|ms| ms.iter().all(|m| satisfies(m, obj)));
    required_ok && not_ok && any_ok && one_ok && all_ok
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(v) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(schema: Value, value: Value) -> Vec<String> {
        check(&schema, &value, "spec")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "mode": {"type": "string", "enum": ["A", "B"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "uri": {"type": "object", "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}},
                    "oneOf": [{"required": ["exact"]}, {"required": ["prefix"]}]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "target": {"x-kubernetes-int-or-string": true},
        }, "required": ["mode"]})
    }

    #[test]
    fn accepts_what_the_schema_names() {
        let ok = json!({"port": 80, "mode": "A", "labels": {"a": "b"}, "hosts": ["x"], "uri": {"exact": "/"},
                        "free": {"any": {"thing": 1}}, "target": "http"});
        assert_eq!(problems(schema(), ok), Vec::<String>::new());
    }

    #[test]
    fn reports_pruned_fields_and_refused_values() {
        let bad = json!({"port": 70000, "mode": "C", "labels": {"a": 1}, "hosts": [true], "uri": {"exact": "/", "prefix": "/"},
                         "extra": 1, "target": 1.5, "free": null});
        let got = problems(schema(), bad);
        for expected in [
            "spec.port: 70000 is greater than the maximum 65535",
            "spec.mode: \"C\" is not one of [\"A\",\"B\"]",
            "spec.labels.a: must be of type string, found integer",
            "spec.hosts[0]: must be of type string, found boolean",
            "spec.uri: matches 2 of the oneOf alternatives",
            "spec.extra: unknown field, pruned",
            "spec.target: must be an integer or a string, found number",
            "spec.free: null is dropped (the schema is not nullable)",
        ] {
            assert!(
                got.iter().any(|g| g == expected),
                "missing {expected:?} in {got:#?}"
            );
        }
        assert_eq!(
            problems(schema(), json!({})),
            ["spec: required field mode is missing"]
        );
    }
}
