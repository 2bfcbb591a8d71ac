//! Telemetry: istiod's `ValidateTelemetry` (tracing, metrics, access logging), with the limits
//! and CEL rules of its CRD.

use crate::config::istio::Duration;
use crate::config::istio::telemetry::{
    AccessLogging, CustomTag, Metrics, ProviderRef, TagOperation, Telemetry, Tracing,
};

use super::common::Diags;
use super::policy_target;

pub fn validate(t: &Telemetry, out: &mut Diags) {
    policy_target::validate(
        out,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    for (i, m) in t.metrics.iter().enumerate() {
        validate_metrics(&format!("spec.metrics[{i}]"), m, out);
    }
    if t.tracing.len() > 1 {
        out.warning(
            "spec.tracing",
            "multiple tracing is not currently supported",
        );
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        validate_tracing(&format!("spec.tracing[{i}]"), tr, out);
    }
    for (i, l) in t.access_logging.iter().enumerate() {
        validate_access_logging(&format!("spec.accessLogging[{i}]"), l, out);
    }
}

/// Each provider names one of the mesh config's `extensionProviders`.
fn validate_providers(at: &str, providers: &[ProviderRef], out: &mut Diags) {
    for (j, p) in providers.iter().enumerate() {
        if p.name.is_empty() {
            out.error(
                format!("{at}.providers[{j}].name"),
                "providers.name may not be empty",
            );
        }
    }
}

fn validate_metrics(at: &str, m: &Metrics, out: &mut Diags) {
    validate_providers(at, &m.providers, out);
    if let Some(interval) = m.reporting_interval {
        out.check(
            format!("{at}.reportingInterval"),
            validate_min_duration(interval),
        );
    }
    for (j, o) in m.overrides.iter().enumerate() {
        let oat = format!("{at}.overrides[{j}]");
        for (name, tag) in &o.tag_overrides {
            let tat = format!("{oat}.tagOverrides.{name}");
            if name.is_empty() {
                out.warning(
                    format!("{oat}.tagOverrides"),
                    "tagOverrides.name may not be empty",
                );
            }
            // The CRD's CEL: UPSERT needs a non-empty value; REMOVE may not carry one, even empty.
            match (tag.operation, &tag.value) {
                (TagOperation::Upsert, None) => out.error(
                    tat,
                    "tagOverrides.value must be set when operation is UPSERT",
                ),
                (TagOperation::Upsert, Some(v)) if v.is_empty() => out.error(
                    format!("{tat}.value"),
                    "tagOverrides.value must be set when operation is UPSERT",
                ),
                (TagOperation::Remove, Some(_)) => out.error(
                    format!("{tat}.value"),
                    "tagOverrides.value may only be set when operation is UPSERT",
                ),
                _ => {}
            }
        }
        if let Some(selector) = &o.matches {
            if selector.custom_metric.as_deref() == Some("") {
                out.error(
                    format!("{oat}.match.customMetric"),
                    "customMetric may not be empty",
                );
            }
            if selector.metric.is_some() && selector.custom_metric.is_some() {
                out.error(
                    format!("{oat}.match"),
                    "only one of metric or customMetric can be set",
                );
            }
        }
    }
}

fn validate_tracing(at: &str, t: &Tracing, out: &mut Diags) {
    if t.providers.len() > 1 {
        out.warning(
            format!("{at}.providers"),
            "multiple providers is not currently supported",
        );
    }
    validate_providers(at, &t.providers, out);
    if let Some(p) = t.random_sampling_percentage
        && !(0.0..=100.0).contains(&p)
    {
        out.error(
            format!("{at}.randomSamplingPercentage"),
            "randomSamplingPercentage must be in range [0.0, 100.0]",
        );
    }
    for (name, tag) in &t.custom_tags {
        validate_custom_tag(&format!("{at}.customTags"), name, tag, out);
    }
}

fn validate_custom_tag(at: &str, name: &str, tag: &CustomTag, out: &mut Diags) {
    if name.is_empty() {
        out.error(at, "tag name may not be empty");
    }
    let tat = format!("{at}.{name}");
    if tag.sources_set() > 1 {
        out.error(
            &tat,
            "only one of literal, environment, header or formatter can be set",
        );
    }
    let empty = [
        (
            "literal.value",
            tag.literal.as_ref().is_some_and(|l| l.value.is_empty()),
            "literal tag value may not be empty",
        ),
        (
            "header.name",
            tag.header.as_ref().is_some_and(|h| h.name.is_empty()),
            "header tag name may not be empty",
        ),
        (
            "environment.name",
            tag.environment.as_ref().is_some_and(|e| e.name.is_empty()),
            "environment tag name may not be empty",
        ),
        (
            "formatter.value",
            tag.formatter.as_ref().is_some_and(|f| f.value.is_empty()),
            "formatter tag value may not be empty",
        ),
    ];
    for (field, is_empty, message) in empty {
        if is_empty {
            out.error(format!("{tat}.{field}"), message);
        }
    }
}

fn validate_access_logging(at: &str, l: &AccessLogging, out: &mut Diags) {
    if let Some(filter) = &l.filter {
        out.check(
            format!("{at}.filter.expression"),
            validate_cel_syntax(&filter.expression),
        );
    }
    validate_providers(at, &l.providers, out);
}

/// The CRD's `duration(self) >= duration('1ms')` (no millisecond-precision rule, unlike istiod's
/// `ValidateDuration`).
fn validate_min_duration(d: Duration) -> Result<(), String> {
    if d.as_std() < std::time::Duration::from_millis(1) {
        return Err("must be a valid duration greater than 1ms".into());
    }
    Ok(())
}

/// A light stand-in for istiod's CEL parse of an access log filter: the expression is not empty,
/// its string literals are closed and its brackets balance. Semantics are Envoy's to judge.
pub fn validate_cel_syntax(expr: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("must be a valid CEL expression, {why}"));
    if expr.trim().is_empty() {
        return invalid("found an empty expression");
    }
    let mut open: Vec<char> = Vec::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut closed = false;
                while let Some(s) = chars.next() {
                    if s == '\\' {
                        chars.next();
                    } else if s == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return invalid("found an unterminated string literal");
                }
            }
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(expected) {
                    return invalid(&format!("found an unbalanced {c:?}"));
                }
            }
            _ => {}
        }
    }
    match open.last() {
        Some(c) => invalid(&format!("found an unclosed {c:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_syntax() {
        for ok in [
            "true",
            "response.code >= 400",
            "request.headers['x-id'] == \"a)b\"",
            "size(x) > 0 && [1, 2][0] == 1",
        ] {
            assert_eq!(validate_cel_syntax(ok), Ok(()), "{ok}");
        }
        for bad in ["", "  ", "size(x", "a)", "x == 'open", "[1, 2)", "{'a': 1"] {
            assert!(validate_cel_syntax(bad).is_err(), "{bad}");
        }
    }
}
