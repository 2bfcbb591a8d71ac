//! `/debug/push_status`: the last push and what is wrong with the config it was built from.
//! istiod prints its `PushContext`: `ProxyStatus` maps a condition to the objects it concerns,
//! each with a message. Here the conditions are the index's diagnostics by severity
//! (`pilotfish_config_error`, `pilotfish_config_warning`), keyed by object and field, next to the
//! push's revision (`PushVersion`, a string as in istiod), time and duration.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::time::rfc3339;
use crate::diagnostic::{Diagnostic, Severity};

/// What a push was, as plain values.
pub struct PushSummary<'a> {
    pub revision: u64,
    pub at: SystemTime,
    pub took: Duration,
    /// Proxies connected now, each of which was sent this push's config when it changed.
    pub connected_proxies: usize,
    pub services: usize,
    pub diagnostics: &'a [Diagnostic],
}

pub fn push_status(push: &PushSummary<'_>) -> Value {
    let mut status: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for d in push.diagnostics {
        let condition = match d.severity {
            Severity::Error => "pilotfish_config_error",
            Severity::Warning => "pilotfish_config_warning",
        };
        let mut subject = match (&d.object, &d.origin) {
            (Some(object), _) => object.to_string(),
            (None, Some(origin)) => origin.to_string(),
            (None, None) => "mesh".to_string(),
        };
        if !d.field.is_empty() {
            subject = format!("{subject} {}", d.field);
        }
        // Two findings on the same field share an entry, as istiod keeps one per object.
        let entry = status
            .entry(condition)
            .or_default()
            .entry(subject)
            .or_insert_with(|| json!({"proxy": "", "message": ""}));
        let message = match entry["message"].as_str() {
            Some(m) if !m.is_empty() => format!("{m}; {}", d.message),
            _ => d.message.clone(),
        };
        entry["message"] = json!(message);
    }
    json!({
        "PushVersion": push.revision.to_string(),
        "pushTime": rfc3339(push.at),
        "pushDuration": format!("{:?}", push.took),
        "connectedProxies": push.connected_proxies,
        "totalServices": push.services,
        "ProxyStatus": status,
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::config::{Kind, ObjectKey};

    #[test]
    fn diagnostics_by_condition_then_object_and_field() {
        let vs = ObjectKey {
            kind: Kind::VirtualService,
            namespace: "shop".into(),
            name: "web".into(),
        };
        let diagnostics = vec![
            Diagnostic::error("spec.http[0].route[0].weight", "weights must sum to 100").on(&vs),
            Diagnostic::error("spec.http[0].route[0].weight", "weight is negative").on(&vs),
            Diagnostic::warning("spec.gateways[0]", "gateway shop/gw not found").on(&vs),
        ];
        let json = push_status(&PushSummary {
            revision: 42,
            at: UNIX_EPOCH + Duration::from_secs(1_735_689_600),
            took: Duration::from_millis(3),
            connected_proxies: 2,
            services: 5,
            diagnostics: &diagnostics,
        });
        assert_eq!(json["PushVersion"], "42");
        assert_eq!(json["pushTime"], "2025-01-01T00:00:00.000Z");
        assert_eq!(json["pushDuration"], "3ms");
        assert_eq!(json["connectedProxies"], 2);
        let errors = &json["ProxyStatus"]["pilotfish_config_error"];
        assert_eq!(
            errors["VirtualService shop/web spec.http[0].route[0].weight"]["message"],
            "weights must sum to 100; weight is negative"
        );
        let warnings = &json["ProxyStatus"]["pilotfish_config_warning"];
        assert_eq!(
            warnings["VirtualService shop/web spec.gateways[0]"]["message"],
            "gateway shop/gw not found"
        );
    }

    #[test]
    fn a_clean_config_has_no_conditions() {
        let json = push_status(&PushSummary {
            revision: 1,
            at: UNIX_EPOCH,
            took: Duration::ZERO,
            connected_proxies: 0,
            services: 0,
            diagnostics: &[],
        });
        assert_eq!(json["ProxyStatus"], json!({}));
    }
}
