//! What a policy kind (AuthorizationPolicy, RequestAuthentication, PeerAuthentication, Telemetry)
//! is attached to: a workload `selector` or a `targetRef(s)`, never both (istiod's
//! `validateOneOfSelectorType`, `validateWorkloadSelector`, `validatePolicyTargetReference`, and
//! the limits of the CRDs' schema).

use crate::config::istio::common::MatchLabels;
use crate::config::istio::security::PolicyTargetReference;

use super::common::{Diags, is_k8s_subdomain, validate_selector_labels};

/// The CRD's limits on `selector.matchLabels` and `targetRefs`.
const MAX_SELECTOR_LABELS: usize = 4096;
const MAX_LABEL_VALUE: usize = 63;
const MAX_TARGET_REFS: usize = 16;

/// The kinds a policy may target, by (canonical group, kind); the core group is `core`.
const ALLOWED_TARGETS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Checks `spec.selector`, `spec.targetRef` and `spec.targetRefs` of a policy.
pub fn validate(
    out: &mut Diags,
    selector: Option<&MatchLabels>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set: Vec<&str> = [
        (selector.is_some(), "selector"),
        (target_ref.is_some(), "targetRef"),
        (!target_refs.is_empty(), "targetRefs"),
    ]
    .into_iter()
    .filter_map(|(is_set, name)| is_set.then_some(name))
    .collect();
    if let [.., last] = set[..]
        && set.len() > 1
    {
        out.error(
            format!("spec.{last}"),
            format!(
                "only one of targetRefs or workloadSelector can be set; found {}",
                set.join(", ")
            ),
        );
    }
    if let Some(selector) = selector {
        validate_selector(out, selector);
    }
    if let Some(r) = target_ref {
        validate_target_ref(out, "spec.targetRef", r);
    }
    if target_refs.len() > MAX_TARGET_REFS {
        out.error(
            "spec.targetRefs",
            format!(
                "at most {MAX_TARGET_REFS} targetRefs are allowed, got {}",
                target_refs.len()
            ),
        );
    }
    for (i, r) in target_refs.iter().enumerate() {
        validate_target_ref(out, &format!("spec.targetRefs[{i}]"), r);
    }
}

/// `spec.selector`: labels as a workload carries them; none at all is suspicious (the policy then
/// applies to the whole namespace) but allowed.
pub fn validate_selector(out: &mut Diags, selector: &MatchLabels) {
    let at = "spec.selector.matchLabels";
    let labels = &selector.match_labels;
    validate_selector_labels(out, at, labels);
    if labels.len() > MAX_SELECTOR_LABELS {
        out.error(
            at,
            format!(
                "at most {MAX_SELECTOR_LABELS} labels are allowed, got {}",
                labels.len()
            ),
        );
    }
    for (k, v) in labels {
        if v.len() > MAX_LABEL_VALUE {
            out.error(
                format!("{at}.{k}"),
                format!("label value may not be more than {MAX_LABEL_VALUE} bytes"),
            );
        }
    }
    if labels.is_empty() {
        out.warning(
            "spec.selector",
            "workload selector specified without labels",
        );
    }
}

fn validate_target_ref(out: &mut Diags, at: &str, r: &PolicyTargetReference) {
    if r.name.is_empty() {
        out.error(format!("{at}.name"), "targetRef name must be set");
    } else if r.name.len() > 253 {
        out.error(
            format!("{at}.name"),
            "targetRef name may not be more than 253 characters",
        );
    }
    if !r.namespace.is_empty() {
        out.error(
            format!("{at}.namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    if !r.group.is_empty() && !is_k8s_subdomain(&r.group) {
        out.error(
            format!("{at}.group"),
            format!(
                "{:?} is not a valid API group (a lower-case DNS subdomain)",
                r.group
            ),
        );
    }
    if !is_kind_name(&r.kind) {
        out.error(
            format!("{at}.kind"),
            format!("{:?} is not a valid kind: a letter, then letters, digits and '-', at most 63 characters", r.kind),
        );
    }
    let group = if r.group.is_empty() {
        "core"
    } else {
        r.group.as_str()
    };
    if !ALLOWED_TARGETS.contains(&(group, r.kind.as_str())) {
        let allowed: Vec<String> = ALLOWED_TARGETS
            .iter()
            .map(|(g, k)| format!("{g}/{k}"))
            .collect();
        out.error(
            at,
            format!(
                "targetRef must be to one of [{}] but was {}/{}",
                allowed.join(", "),
                r.group,
                r.kind
            ),
        );
    }
}

/// The CRD's pattern for `kind`: `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`, 1 to 63 characters.
fn is_kind_name(kind: &str) -> bool {
    let b = kind.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}
