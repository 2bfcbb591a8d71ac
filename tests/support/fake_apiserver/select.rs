//! `labelSelector` and `fieldSelector`, parsed as the real server parses them.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label selector: every requirement must hold (`a=b,c!=d,e in (f,g),!h`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses: `a in (b,c),d` is two terms.
fn terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// `=`, `==` or `!=` in `term`: (key, negated, value).
fn equality(term: &str) -> Option<(&str, bool, &str)> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some((k.trim(), true, v.trim()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Some((k.trim(), false, v.trim()));
    }
    term.split_once('=')
        .map(|(k, v)| (k.trim(), false, v.trim()))
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let invalid = |term: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: labelSelector term {term:?}"
            ))
        };
        let mut requirements = Vec::new();
        for term in terms(selector) {
            if let Some(key) = term.strip_prefix('!') {
                requirements.push(Requirement::NotExists(key.trim().to_string()));
            } else if let Some(open) = term.find('(') {
                let values = term[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| invalid(term))?;
                let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
                let mut words = term[..open].split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some(key), Some("in"), None) => {
                        requirements.push(Requirement::In(key.into(), values))
                    }
                    (Some(key), Some("notin"), None) => {
                        requirements.push(Requirement::NotIn(key.into(), values))
                    }
                    _ => return Err(invalid(term)),
                }
            } else if let Some((key, negated, value)) = equality(term) {
                let (key, value) = (key.to_string(), value.to_string());
                requirements.push(if negated {
                    Requirement::NotEquals(key, value)
                } else {
                    Requirement::Equals(key, value)
                });
            } else if term.split_whitespace().count() == 1 {
                requirements.push(Requirement::Exists(term.to_string()));
            } else {
                return Err(invalid(term));
            }
        }
        Ok(LabelSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A field selector: `path=value`, `path==value` or `path!=value` terms on dotted paths
/// (`metadata.name`, `metadata.namespace`, `type`, `status.phase`, ...). A missing field
/// compares as the empty string, as on the real server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in terms(selector) {
            let (path, negated, value) = equality(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid fieldSelector term {term:?}: expected field=value or field!=value"
                ))
            })?;
            requirements.push((
                path.split('.').map(str::to_string).collect(),
                negated,
                value.to_string(),
            ));
        }
        Ok(FieldSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, negated, value)| {
            let field = path.iter().try_fold(object, |v, segment| v.get(segment));
            let actual = match field {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) != *negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn label_selectors_combine_every_operator() {
        let s =
            LabelSelector::parse("app=web, tier in (front,edge),env!=prod,!canary,team").unwrap();
        assert!(s.matches(&pod(
            json!({"app": "web", "tier": "edge", "env": "dev", "team": "x"})
        )));
        assert!(!s.matches(&pod(
            json!({"app": "web", "tier": "back", "env": "dev", "team": "x"})
        )));
        assert!(!s.matches(&pod(
            json!({"app": "web", "tier": "edge", "env": "dev", "team": "x", "canary": "1"})
        )));
        assert!(!s.matches(&pod(json!({"app": "web", "tier": "edge", "env": "dev"}))));
        let notin = LabelSelector::parse("tier notin (back)").unwrap();
        assert!(notin.matches(&pod(json!({}))));
        assert!(!notin.matches(&pod(json!({"tier": "back"}))));
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn field_selectors_compare_missing_fields_as_empty() {
        let s = FieldSelector::parse(
            "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token",
        )
        .unwrap();
        assert!(s.matches(&pod(json!({}))));
        assert!(s.matches(&json!({"metadata": {"name": "x"}})));
        assert!(!s.matches(&json!({"type": "helm.sh/release.v1"})));
        let by_name = FieldSelector::parse("metadata.name==a").unwrap();
        assert!(by_name.matches(&pod(json!({}))));
        assert!(!by_name.matches(&json!({"metadata": {"name": "b"}})));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
