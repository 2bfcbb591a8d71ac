//! One AdmissionReview in, its answer out: the checks of `pilotfish validate`, per object.
//!
//! Pure: no I/O, so every decision is tested on the JSON the API server sends. Behaviour follows
//! istiod's webhook (`pkg/webhooks/validation/server`): CREATE and UPDATE are validated, other
//! operations admitted; a denial carries only a message, which the API server prefixes with
//! `admission webhook "<name>" denied the request: `; warnings ride on the response.

use serde_json::{Map, Value, json};

use crate::config::Kind;
use crate::config::parse::parse_object;
use crate::diagnostic::Diagnostic;

/// The API versions of AdmissionReview answered; the reply uses the request's.
const REVIEW_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The top-level fields an Istio object may have; istiod rejects any other (`checkFields`).
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// A body that is not an AdmissionReview: answered with HTTP 400, as there is no `uid` to
/// answer to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("{field}: {message}")]
    Malformed {
        field: &'static str,
        message: String,
    },
}

fn malformed(field: &'static str, message: impl Into<String>) -> ReviewError {
    ReviewError::Malformed {
        field,
        message: message.into(),
    }
}

/// What was decided, for the server's log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed {
        warnings: usize,
    },
    Denied {
        message: String,
    },
    /// Admitted without looking: the operation or kind is not one pilotfish checks.
    NotChecked {
        reason: String,
    },
}

/// The AdmissionReview to send back, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    pub review: Value,
    pub outcome: Outcome,
}

/// Answers one AdmissionReview (the HTTP body the API server posts).
pub fn review(body: &[u8]) -> Result<Reviewed, ReviewError> {
    let input: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    let api_version = input
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !REVIEW_VERSIONS.contains(&api_version) {
        return Err(malformed(
            "apiVersion",
            format!(
                "{api_version:?} is not one of {}",
                REVIEW_VERSIONS.join(", ")
            ),
        ));
    }
    if input.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(malformed("kind", "must be AdmissionReview"));
    }
    let request = input
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("request", "is required"))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let uid = uid.ok_or_else(|| malformed("request.uid", "is required"))?;
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (decision, outcome) = match operation {
        "CREATE" | "UPDATE" => {
            let object = request.get("object").and_then(Value::as_object);
            let object = object.ok_or_else(|| {
                malformed("request.object", format!("is required for {operation}"))
            })?;
            let namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            check(object, namespace)
        }
        "DELETE" | "CONNECT" => {
            let reason = format!("{operation} is not validated");
            (Decision::allow(Vec::new()), Outcome::NotChecked { reason })
        }
        other => {
            return Err(malformed(
                "request.operation",
                format!("unknown operation {other:?}"),
            ));
        }
    };
    let mut response = Map::new();
    response.insert("uid".into(), json!(uid));
    response.insert("allowed".into(), json!(decision.denial.is_none()));
    if let Some(message) = &decision.denial {
        response.insert("status".into(), json!({ "code": 400, "message": message }));
    }
    if !decision.warnings.is_empty() {
        response.insert("warnings".into(), json!(decision.warnings));
    }
    let review =
        json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response });
    Ok(Reviewed { review, outcome })
}

struct Decision {
    denial: Option<String>,
    warnings: Vec<String>,
}

impl Decision {
    fn allow(warnings: Vec<String>) -> Decision {
        Decision {
            denial: None,
            warnings,
        }
    }
}

/// Validates one object as `pilotfish validate` does: typed by the parser, then checked.
fn check(object: &Map<String, Value>, request_namespace: &str) -> (Decision, Outcome) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    if !group.ends_with(".istio.io") {
        // The API server validates its own kinds; a webhook configured more broadly than
        // pilotfish's must not turn pilotfish's checks of Services or Pods into admission rules.
        let reason = format!("{kind} ({api_version}) is not an Istio kind");
        return (Decision::allow(Vec::new()), Outcome::NotChecked { reason });
    }
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let ns = ns.filter(|n| !n.is_empty()).unwrap_or(request_namespace);
    if let Some(field) = object
        .keys()
        .find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str()))
    {
        return deny(
            vec![format!(
                "unknown field {field:?} on {kind} resource {ns}/{name}"
            )],
            Vec::new(),
        );
    }
    let mut value = Value::Object(object.clone());
    // On CREATE the namespace may only be in the request URL; the checks need it (exportTo,
    // short host names).
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && !request_namespace.is_empty()
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), json!(request_namespace));
    }
    let diagnostics = match parse_object(value) {
        Ok(Some((object, warnings))) => {
            let key = object.key();
            let mut diagnostics: Vec<Diagnostic> =
                warnings.into_iter().map(|d| d.on(&key)).collect();
            diagnostics.extend(crate::validate::validate(&object));
            diagnostics
        }
        Ok(None) => {
            let reason = format!("{kind} is a kind pilotfish ignores");
            return (Decision::allow(Vec::new()), Outcome::NotChecked { reason });
        }
        // Istio kinds pilotfish reads but does not serve yet: admitted, and the user told so.
        Err(d) if !d.is_error() => {
            return (
                Decision::allow(vec![describe(&d)]),
                Outcome::Allowed { warnings: 1 },
            );
        }
        Err(_) if Kind::from_type_meta(api_version, kind).is_none() => {
            // Only reached if the webhook configuration names more kinds than pilotfish's
            // manifest does (istiod's names every Istio kind). pilotfish cannot check a kind it
            // does not type; the CRD's schema still does, and refusing would block valid config.
            let reason = format!("{kind} ({api_version}) is not a kind pilotfish checks");
            return (Decision::allow(Vec::new()), Outcome::NotChecked { reason });
        }
        Err(d) => vec![d],
    };
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics.iter().partition(|d| d.is_error());
    let warnings: Vec<String> = warnings.into_iter().map(describe).collect();
    if errors.is_empty() {
        let outcome = Outcome::Allowed {
            warnings: warnings.len(),
        };
        return (Decision::allow(warnings), outcome);
    }
    deny(errors.into_iter().map(describe).collect(), warnings)
}

/// istiod's wording: `configuration is invalid: <error>`, several errors listed as its
/// multierror lists them.
fn deny(errors: Vec<String>, warnings: Vec<String>) -> (Decision, Outcome) {
    let message = match errors.as_slice() {
        [one] => format!("configuration is invalid: {one}"),
        many => {
            let list: String = many.iter().map(|e| format!("\n\t* {e}")).collect();
            format!(
                "configuration is invalid: {} errors occurred:{list}",
                many.len()
            )
        }
    };
    (
        Decision {
            denial: Some(message.clone()),
            warnings,
        },
        Outcome::Denied { message },
    )
}

/// `VirtualService bookinfo/reviews: spec.http[0].timeout: ...`: the object, the field, what
/// is wrong; no severity (the response says that) and no file (there is none).
fn describe(d: &Diagnostic) -> String {
    let mut out = String::new();
    if let Some(object) = &d.object {
        out.push_str(&format!("{object}: "));
    }
    if !d.field.is_empty() {
        out.push_str(&format!("{}: ", d.field));
    }
    out.push_str(&d.message);
    out
}

#[cfg(test)]
mod tests;
