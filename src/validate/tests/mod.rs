//! Tests per kind, each with its own inline fixtures.

mod authorization_policy;
mod common;
mod destination_rule;
mod gateway;
mod kube;
mod security;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;

use crate::config::Object;
use crate::config::parse::parse_text;
use crate::diagnostic::{Diagnostic, Severity};

/// Parses one manifest; a fixture that does not type-check is a broken test.
pub fn object(yaml: &str) -> Object {
    let parsed = parse_text("fixture.yaml", yaml).expect("fixture YAML");
    let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "fixture does not parse: {errors:?}");
    let [one] = &parsed.objects[..] else {
        panic!("expected one object, got {}", parsed.objects.len())
    };
    (*one.object).clone()
}

pub fn run(yaml: &str) -> Vec<Diagnostic> {
    super::validate(&object(yaml))
}

pub fn errors(yaml: &str) -> Vec<Diagnostic> {
    run(yaml)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

pub fn warnings(yaml: &str) -> Vec<Diagnostic> {
    run(yaml)
        .into_iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect()
}

/// Asserts `yaml` is accepted without errors.
#[track_caller]
pub fn assert_valid(yaml: &str) {
    let errs = errors(yaml);
    assert!(errs.is_empty(), "unexpected errors: {errs:#?}");
}

/// Asserts an error on exactly `field` whose message contains `message`.
#[track_caller]
pub fn assert_error(yaml: &str, field: &str, message: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|d| d.field == field && d.message.contains(message)),
        "expected error on {field} containing {message:?}, got {errs:#?}"
    );
}

#[track_caller]
pub fn assert_warning(yaml: &str, field: &str, message: &str) {
    let ws = warnings(yaml);
    assert!(
        ws.iter()
            .any(|d| d.field == field && d.message.contains(message)),
        "expected warning on {field} containing {message:?}, got {ws:#?}"
    );
}
