use serde_json::{Value, json};

use super::*;

/// AdmissionReviews as the API server posts them (kubectl, Argo CD, a dry run, a delete).
fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn answer(review: &Value) -> (Value, Outcome) {
    let reviewed = super::review(&serde_json::to_vec(review).unwrap()).unwrap();
    let response = reviewed.review["response"].clone();
    assert_eq!(reviewed.review["apiVersion"], review["apiVersion"]);
    assert_eq!(reviewed.review["kind"], "AdmissionReview");
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "the answer must carry the request's uid"
    );
    (response, reviewed.outcome)
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_valid_virtual_service_is_allowed_without_remarks() {
    let (response, outcome) = answer(&fixture("virtualservice-create-valid"));
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("status").is_none() && response.get("warnings").is_none(),
        "{response}"
    );
    assert_eq!(outcome, Outcome::Allowed { warnings: 0 });
}

#[test]
fn an_invalid_virtual_service_is_denied_naming_every_failing_field() {
    let (response, outcome) = answer(&fixture("virtualservice-create-invalid"));
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = message(&response);
    assert!(
        message.starts_with("configuration is invalid: 2 errors occurred:\n\t* "),
        "{message}"
    );
    for expected in [
        "VirtualService bookinfo/ratings: spec.http[0].match[0].uri.regex: invalid regex \"/ratings/(v1\"",
        "VirtualService bookinfo/ratings: spec.http[0].route[0].destination.port.number: port number 0 must be in the range 1..65535",
    ] {
        assert!(message.contains(expected), "{expected} not in {message}");
    }
    assert!(matches!(outcome, Outcome::Denied { message: m } if m == message));
}

#[test]
fn unknown_fields_come_back_as_warnings_on_an_allowed_update() {
    let (response, outcome) = answer(&fixture("virtualservice-update-warning"));
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!(["VirtualService bookinfo/bookinfo: spec.http[0].colour: unknown field (ignored)"])
    );
    assert_eq!(outcome, Outcome::Allowed { warnings: 1 });
}

#[test]
fn deletes_are_allowed_unchecked() {
    let (response, outcome) = answer(&fixture("destinationrule-delete"));
    assert_eq!(response["allowed"], true);
    assert!(matches!(outcome, Outcome::NotChecked { reason } if reason.contains("DELETE")));
}

#[test]
fn a_dry_run_of_an_empty_gateway_is_denied_as_istiods_readiness_check_expects() {
    let (response, _) = answer(&fixture("gateway-create-dry-run-empty"));
    assert_eq!(response["allowed"], false);
    assert_eq!(
        message(&response),
        "configuration is invalid: Gateway istio-system/pilotfish-webhook-check-x7k2p: spec.servers: gateway must have at least one server"
    );
}

#[test]
fn istio_kinds_not_served_yet_are_allowed_with_a_warning() {
    let (response, _) = answer(&fixture("envoyfilter-create"));
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("EnvoyFilter is not served by pilotfish yet"),
        "{warnings:?}"
    );
}

#[test]
fn a_type_error_denies_naming_the_field() {
    let mut review = fixture("virtualservice-create-valid");
    review["request"]["object"]["spec"]["http"][0]["route"][0]["weight"] = json!("lots");
    let (response, _) = answer(&review);
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response)
            .contains("VirtualService bookinfo/reviews: spec.http[0].route[0].weight: "),
        "{response}"
    );
}

#[test]
fn an_unknown_top_level_field_is_denied_as_istiod_words_it() {
    let mut review = fixture("virtualservice-create-valid");
    review["request"]["object"]["specs"] = json!({});
    let (response, _) = answer(&review);
    assert_eq!(
        message(&response),
        "configuration is invalid: unknown field \"specs\" on VirtualService resource bookinfo/reviews"
    );
}

#[test]
fn the_request_namespace_stands_in_for_a_missing_object_namespace() {
    let mut review = fixture("virtualservice-create-invalid");
    review["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    review["request"]["namespace"] = json!("shop");
    let (response, _) = answer(&review);
    assert!(
        message(&response).contains("VirtualService shop/ratings: "),
        "{response}"
    );
}

#[test]
fn kubernetes_kinds_are_left_to_the_api_server() {
    let mut review = fixture("virtualservice-create-valid");
    review["request"]["object"] = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"ports": [{"port": 0}]}
    });
    let (response, outcome) = answer(&review);
    assert_eq!(response["allowed"], true);
    assert!(
        matches!(outcome, Outcome::NotChecked { reason } if reason.contains("not an Istio kind"))
    );
}

#[test]
fn v1beta1_reviews_are_answered_in_v1beta1() {
    let mut review = fixture("virtualservice-create-invalid");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (response, _) = answer(&review);
    assert_eq!(response["allowed"], false);
}

#[test]
fn what_is_not_a_review_is_an_error_naming_the_field() {
    let valid = fixture("virtualservice-create-valid");
    let mut cases: Vec<(Vec<u8>, &str)> = vec![(b"{not json".to_vec(), "the body is not JSON")];
    let mut edit = |f: &dyn Fn(&mut Value), expected: &'static str| {
        let mut v = valid.clone();
        f(&mut v);
        cases.push((serde_json::to_vec(&v).unwrap(), expected));
    };
    edit(
        &|v| v["apiVersion"] = json!("admission.k8s.io/v2"),
        "apiVersion: \"admission.k8s.io/v2\" is not one of",
    );
    edit(
        &|v| v["kind"] = json!("Pod"),
        "kind: must be AdmissionReview",
    );
    edit(&|v| v["request"] = Value::Null, "request: is required");
    edit(
        &|v| v["request"]["uid"] = json!(""),
        "request.uid: is required",
    );
    edit(
        &|v| v["request"]["operation"] = json!("PATCH"),
        "request.operation: unknown operation \"PATCH\"",
    );
    edit(
        &|v| v["request"]["object"] = Value::Null,
        "request.object: is required for CREATE",
    );
    for (body, expected) in cases {
        let err = super::review(&body).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err} (expected {expected})");
    }
}
