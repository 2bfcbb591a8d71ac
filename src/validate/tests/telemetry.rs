use super::*;

fn telemetry(spec: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: ns}}\nspec:\n{spec}"
    )
}

fn metrics(m: &str) -> String {
    telemetry(&format!("  metrics:\n  - {m}\n"))
}

fn tracing(t: &str) -> String {
    telemetry(&format!("  tracing:\n  - {t}\n"))
}

/// istiod's accepted Telemetry objects (pkg/config/validation/testdata/crds/telemetry-valid.yaml).
const ISTIO_VALID: &str = r#"
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: full
spec:
  metrics:
  - providers:
    - name: prometheus
    reportingInterval: 5s
    overrides:
    - tagOverrides:
        request_method:
          value: "request.method"
        request_host:
          value: "request.host"
      match:
        customMetric: "foo"
      disabled: false
    - match:
        metric: GRPC_REQUEST_MESSAGES
      disabled: true
  accessLogging:
  - disabled: false
    filter:
      expression: 'true'
    match:
      mode: CLIENT
    providers:
    - name: stdout
  tracing:
  - providers:
    - name: otlp
    match:
      mode: CLIENT_AND_SERVER
    randomSamplingPercentage: 54.54
    useRequestIdForTraceSampling: true
    disableSpanReporting: false
    customTags:
      env:
        environment:
          name: "NAME"
          defaultValue: "default"
      header:
        header:
          name: "x-name"
          defaultValue: "default name"
      literal:
        literal:
          value: "default literal"
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: tag-upsert
spec:
  metrics:
  - overrides:
    - tagOverrides:
        foo:
          operation: UPSERT
          value: add
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: tag-remove
spec:
  metrics:
  - overrides:
    - tagOverrides:
        foo:
          operation: REMOVE
"#;

#[test]
fn istio_valid_telemetry_loads_and_passes() {
    let parsed = parse_text("telemetry-valid.yaml", ISTIO_VALID).unwrap();
    assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
    assert_eq!(parsed.objects.len(), 3);
    for located in &parsed.objects {
        let found = super::super::validate(&located.object);
        assert!(found.is_empty(), "{}: {found:#?}", located.object.key());
    }
}

#[test]
fn istio_invalid_telemetry_fails() {
    assert_error(
        &metrics("{providers: [{name: \"\"}]}"),
        "spec.metrics[0].providers[0].name",
        "providers.name may not be empty",
    );
    assert_error(
        &metrics("{overrides: [{match: {customMetric: \"\"}}]}"),
        "spec.metrics[0].overrides[0].match.customMetric",
        "customMetric may not be empty",
    );
    let upsert = metrics("{overrides: [{tagOverrides: {foo: {operation: UPSERT}}}]}");
    assert_error(
        &upsert,
        "spec.metrics[0].overrides[0].tagOverrides.foo",
        "value must be set when operation is UPSERT",
    );
    let remove = metrics("{overrides: [{tagOverrides: {foo: {operation: REMOVE, value: oops}}}]}");
    assert_error(
        &remove,
        "spec.metrics[0].overrides[0].tagOverrides.foo.value",
        "may only be set when operation is UPSERT",
    );
}

#[test]
fn tag_overrides_follow_the_crd_rules() {
    let at = "spec.metrics[0].overrides[0].tagOverrides";
    assert_error(
        &metrics("{overrides: [{tagOverrides: {foo: {value: \"\"}}}]}"),
        &format!("{at}.foo.value"),
        "must be set when operation is UPSERT",
    );
    assert_error(
        &metrics("{overrides: [{tagOverrides: {foo: {operation: REMOVE, value: \"\"}}}]}"),
        &format!("{at}.foo.value"),
        "only be set",
    );
    assert_warning(
        &metrics("{overrides: [{tagOverrides: {\"\": {value: a}}}]}"),
        at,
        "tagOverrides.name may not be empty",
    );
    let both = metrics("{overrides: [{match: {metric: REQUEST_COUNT, customMetric: foo}}]}");
    assert_error(
        &both,
        "spec.metrics[0].overrides[0].match",
        "only one of metric or customMetric",
    );
    assert_error(
        &metrics("{reportingInterval: 0s}"),
        "spec.metrics[0].reportingInterval",
        "greater than 1ms",
    );
    assert_valid(&metrics("{reportingInterval: 1.5ms}"));
}

#[test]
fn tracing_settings() {
    let at = "spec.tracing[0]";
    assert_error(
        &tracing("{randomSamplingPercentage: 100.5}"),
        &format!("{at}.randomSamplingPercentage"),
        "must be in range [0.0, 100.0]",
    );
    assert_error(
        &tracing("{randomSamplingPercentage: -1}"),
        &format!("{at}.randomSamplingPercentage"),
        "range",
    );
    assert_valid(&tracing("{randomSamplingPercentage: 0}"));
    assert_warning(
        &tracing("{providers: [{name: a}, {name: b}]}"),
        &format!("{at}.providers"),
        "multiple providers is not currently supported",
    );
    assert_warning(
        &telemetry("  tracing: [{}, {}]\n"),
        "spec.tracing",
        "multiple tracing is not currently supported",
    );
    assert_error(
        &tracing("{providers: [{}]}"),
        &format!("{at}.providers[0].name"),
        "may not be empty",
    );
    assert_valid(&tracing(
        "{enableIstioTags: false, disableContextPropagation: true, useRequestIdForTraceSampling: false}",
    ));
}

#[test]
fn custom_tags() {
    let tags = |t: &str| tracing(&format!("{{customTags: {t}}}"));
    let at = "spec.tracing[0].customTags";
    assert_error(
        &tags("{a: {literal: {value: \"\"}}}"),
        &format!("{at}.a.literal.value"),
        "literal tag value may not be empty",
    );
    assert_error(
        &tags("{a: {header: {defaultValue: x}}}"),
        &format!("{at}.a.header.name"),
        "header tag name may not be empty",
    );
    assert_error(
        &tags("{a: {environment: {name: \"\"}}}"),
        &format!("{at}.a.environment.name"),
        "environment tag name may not be empty",
    );
    assert_error(
        &tags("{a: {formatter: {}}}"),
        &format!("{at}.a.formatter.value"),
        "formatter tag value may not be empty",
    );
    assert_error(
        &tags("{a: {literal: {value: x}, header: {name: x-id}}}"),
        &format!("{at}.a"),
        "only one of literal, environment, header or formatter",
    );
    assert_error(
        &tags("{\"\": {literal: {value: x}}}"),
        at,
        "tag name may not be empty",
    );
    assert_valid(&tags("{a: {formatter: {value: \"%REQ(x-id)%\"}}, b: {}}"));
}

#[test]
fn access_logging() {
    let log = |l: &str| telemetry(&format!("  accessLogging:\n  - {l}\n"));
    let at = "spec.accessLogging[0]";
    assert_valid(&log(
        "{filter: {expression: \"response.code >= 400 && request.headers['x-debug'] == 'on'\"}}",
    ));
    assert_error(
        &log("{filter: {expression: \"size(request.path\"}}"),
        &format!("{at}.filter.expression"),
        "must be a valid CEL expression",
    );
    assert_error(
        &log("{filter: {}}"),
        &format!("{at}.filter.expression"),
        "empty expression",
    );
    assert_error(
        &log("{providers: [{name: \"\"}]}"),
        &format!("{at}.providers[0].name"),
        "may not be empty",
    );
    let bad_mode = parse_text("f.yaml", &log("{match: {mode: BOTH}}")).unwrap();
    assert_eq!(
        bad_mode.diagnostics[0].field,
        "spec.accessLogging[0].match.mode"
    );
}

#[test]
fn selector_and_targets() {
    assert_error(
        &telemetry("  selector: {matchLabels: {app: \"a*\"}}\n"),
        "spec.selector.matchLabels.app",
        "wildcard",
    );
    let both =
        telemetry("  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Service, name: a}\n");
    assert_error(
        &both,
        "spec.targetRef",
        "only one of targetRefs or workloadSelector",
    );
    assert_valid(&telemetry(
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n  accessLogging: [{providers: [{name: envoy}]}]\n",
    ));
}
