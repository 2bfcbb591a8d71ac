use super::*;

fn pa(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    )
}

fn ra(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: ns}}\nspec:\n{spec}"
    )
}

/// A RequestAuthentication with one JWT rule, given in flow style.
fn jwt(rule: &str) -> String {
    ra(&format!("  jwtRules:\n  - {rule}\n"))
}

/// The first error of a manifest that does not type-check.
fn parse_error(yaml: &str) -> Diagnostic {
    let parsed = parse_text("f.yaml", yaml).unwrap();
    assert!(parsed.objects.is_empty(), "{yaml} parsed");
    parsed
        .diagnostics
        .into_iter()
        .find(Diagnostic::is_error)
        .expect("an error")
}

/// istiod's accepted PeerAuthentications and RequestAuthentications
/// (pkg/config/validation/testdata/crds/{peerauth,reqauth}-valid.yaml).
const ISTIO_VALID: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: full
spec:
  selector:
    matchLabels:
      foo: bar
  mtls:
    mode: PERMISSIVE
  portLevelMtls:
    "80":
      mode: STRICT
---
# Weird but valid
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: partial-selector
spec:
  selector: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: full
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: foo
  jwtRules:
  - issuer: "example.com"
    jwksUri: https://example.com/.well-known/jwks.json
    forwardOriginalToken: true
    fromCookies: [foo]
    fromHeaders:
      - name: foo
        prefix: baz
    outputClaimToHeaders:
    - claim: abc
      header: def
    timeout: 5s
    outputPayloadToHeader: header
    spaceDelimitedClaims:
    - "custom_scope"
    - "provider.login.scope"
    presence: REQUIRED
"#;

#[test]
fn istio_valid_objects_load_and_pass() {
    let parsed = parse_text("valid.yaml", ISTIO_VALID).unwrap();
    assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
    assert_eq!(parsed.objects.len(), 3);
    for located in &parsed.objects {
        let errs: Vec<_> = super::super::validate(&located.object)
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
        assert!(errs.is_empty(), "{}: {errs:#?}", located.object.key());
    }
}

#[test]
fn peer_authentication_modes_and_ports() {
    let bad_mode = parse_error(&pa("  mtls: {mode: BLAH}\n"));
    assert_eq!(bad_mode.field, "spec.mtls.mode");
    assert!(bad_mode.message.contains("BLAH"), "{bad_mode}");
    let bad_port = parse_error(&pa(
        "  selector: {matchLabels: {foo: bar}}\n  portLevelMtls: {\"acd\": {mode: STRICT}}\n",
    ));
    assert!(
        bad_port.field.starts_with("spec.portLevelMtls"),
        "{bad_port}"
    );
    let ports = |p: &str| {
        pa(&format!(
            "  selector: {{matchLabels: {{foo: bar}}}}\n  portLevelMtls: {p}\n"
        ))
    };
    assert_error(
        &ports("{\"0\": {mode: STRICT}}"),
        "spec.portLevelMtls.0",
        "port must be in range 1..65535",
    );
    assert_error(
        &ports("{\"42949672\": {mode: STRICT}}"),
        "spec.portLevelMtls.42949672",
        "1..65535",
    );
    assert_error(
        &ports("{}"),
        "spec.portLevelMtls",
        "must have at least one element",
    );
    assert_valid(&ports("{8080: {mode: DISABLE}, 9090: {mode: UNSET}}"));
}

#[test]
fn port_level_mtls_needs_a_workload() {
    let message = "cannot have port level mTLS";
    assert_error(
        &pa("  portLevelMtls: {\"80\": {mode: STRICT}}\n"),
        "spec.portLevelMtls",
        message,
    );
    assert_error(
        &pa("  selector: {}\n  portLevelMtls: {\"80\": {mode: STRICT}}\n"),
        "spec.portLevelMtls",
        message,
    );
    assert_valid(&pa("  mtls: {mode: STRICT}\n"));
}

#[test]
fn peer_authentication_selector() {
    assert_error(
        &pa("  selector: {matchLabels: {\"app*\": a}}\n"),
        "spec.selector.matchLabels.app*",
        "wildcard is not supported",
    );
    assert_warning(&pa("  selector: {}\n"), "spec.selector", "without labels");
}

#[test]
fn request_authentication_targets() {
    let refs = "  targetRefs:\n  - {group: \"\", kind: Service, name: foo, namespace: bar}\n";
    let both = ra(&format!(
        "{refs}  targetRef: {{group: \"\", kind: Service, name: foo}}\n"
    ));
    assert_error(
        &both,
        "spec.targetRefs",
        "only one of targetRefs or workloadSelector can be set",
    );
    assert_error(
        &both,
        "spec.targetRefs[0].namespace",
        "cross namespace referencing is not supported",
    );
    let with_selector = ra(
        "  selector: {matchLabels: {a: b}}\n  targetRef: {group: \"\", kind: Service, name: foo}\n",
    );
    assert_error(
        &with_selector,
        "spec.targetRef",
        "only one of targetRefs or workloadSelector",
    );
    assert_error(
        &ra("  targetRef: {group: \"\", kind: Service}\n"),
        "spec.targetRef.name",
        "targetRef name must be set",
    );
    assert_error(
        &ra("  targetRef: {group: \"\", kind: Service, name: foo, namespace: bar}\n"),
        "spec.targetRef.namespace",
        "cross namespace",
    );
    assert_error(
        &ra("  targetRef: {group: \"__\", kind: Service, name: foo}\n"),
        "spec.targetRef.group",
        "not a valid API group",
    );
    assert_error(
        &ra("  targetRef: {group: \"\", kind: Serv_ice, name: foo}\n"),
        "spec.targetRef.kind",
        "not a valid kind",
    );
    assert_error(
        &ra("  targetRef: {group: \"\", kind: Pod, name: foo}\n"),
        "spec.targetRef",
        "targetRef must be to one of",
    );
    assert_valid(&ra(
        "  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n",
    ));
}

#[test]
fn jwt_rules_need_non_empty_values() {
    let at = "spec.jwtRules[0]";
    assert_error(
        &jwt("{audiences: [\"\"], issuer: example}"),
        &format!("{at}.audiences[0]"),
        "audience must be non-empty string",
    );
    assert_error(
        &jwt("{fromHeaders: [{prefix: baz}], issuer: example}"),
        &format!("{at}.fromHeaders[0].name"),
        "location header name must be non-empty",
    );
    assert_error(
        &jwt("{fromHeaders: [{name: \"\", prefix: baz}], issuer: e}"),
        &format!("{at}.fromHeaders[0].name"),
        "non-empty",
    );
    assert_error(
        &jwt("{fromParams: [\"\"], issuer: example}"),
        &format!("{at}.fromParams[0]"),
        "location query must be non-empty string",
    );
    assert_error(
        &jwt("{fromCookies: [a, \"\"], issuer: example}"),
        &format!("{at}.fromCookies[1]"),
        "cookie name must be non-empty string",
    );
    assert_error(
        &jwt("{spaceDelimitedClaims: [\"\"], issuer: example}"),
        &format!("{at}.spaceDelimitedClaims[0]"),
        "non-empty",
    );
    assert_error(
        &jwt("{fromParams: [token]}"),
        &format!("{at}.issuer"),
        "issuer or jwksUri must be non-empty string",
    );
    assert_valid(&jwt("{jwksUri: \"https://example.com/jwks\"}"));
}

#[test]
fn jwt_rules_reject_null_entries() {
    let rule = parse_error(&ra("  jwtRules:\n  -\n"));
    assert_eq!(rule.field, "spec.jwtRules[0]");
    let claim = parse_error(&jwt("{issuer: example, outputClaimToHeaders: [~]}"));
    assert_eq!(claim.field, "spec.jwtRules[0].outputClaimToHeaders[0]");
}

#[test]
fn claims_to_headers() {
    let at = "spec.jwtRules[0].outputClaimToHeaders[0]";
    assert_error(
        &jwt("{issuer: example, outputClaimToHeaders: [{claim: \"\", header: h}]}"),
        at,
        "header and claim value must be non-empty",
    );
    assert_error(
        &jwt("{issuer: example, outputClaimToHeaders: [{claim: x, header: \"\"}]}"),
        at,
        "must be non-empty",
    );
    assert_error(
        &jwt("{issuer: example, outputClaimToHeaders: [{claim: x, header: \":authority\"}]}"),
        &format!("{at}.header"),
        "not a valid header name",
    );
    assert_valid(&jwt(
        "{issuer: example, outputClaimToHeaders: [{claim: sub, header: x-jwt-sub}]}",
    ));
}

#[test]
fn jwks_uri_and_jwks() {
    let at = "spec.jwtRules[0]";
    assert_error(
        &jwt("{issuer: example, jwksUri: \"hTPp\\\\\\blah\"}"),
        &format!("{at}.jwksUri"),
        "invalid jwksUri",
    );
    assert_error(
        &jwt("{issuer: example, jwksUri: \"ftp://example.com/jwks\"}"),
        &format!("{at}.jwksUri"),
        "url must have scheme http:// or https://",
    );
    assert_error(
        &jwt("{issuer: example, jwksUri: \"example.com/jwks\"}"),
        &format!("{at}.jwksUri"),
        "scheme",
    );
    assert_error(
        &jwt("{issuer: example, jwksUri: \"https://example.com:port/jwks\"}"),
        &format!("{at}.jwksUri"),
        "invalid port",
    );
    assert_valid(&jwt(
        "{issuer: example, jwks_uri: \"HTTP://[::1]:8080/jwks\"}",
    ));
    let keys = r#"'{"keys":[{"kty":"RSA","e":"AQAB","n":"abc"}]}'"#;
    assert_valid(&jwt(&format!("{{issuer: example, jwks: {keys}}}")));
    assert_error(
        &jwt("{issuer: example, jwks: \"not json\"}"),
        &format!("{at}.jwks"),
        "jwks parse error",
    );
    assert_error(
        &jwt(r#"{issuer: example, jwks: '{"keys":[{"e":"AQAB"}]}'}"#),
        &format!("{at}.jwks"),
        "no \"kty\"",
    );
    let both = jwt(&format!(
        "{{issuer: example, jwksUri: \"https://a/keys\", jwks: {keys}}}"
    ));
    assert_error(
        &both,
        &format!("{at}.jwks"),
        "only one of jwks or jwksUri can be set",
    );
    let twice = parse_error(&jwt(
        "{issuer: e, jwksUri: \"https://a\", jwks_uri: \"https://b\"}",
    ));
    assert!(twice.message.contains("duplicate field"), "{twice}");
}

#[test]
fn jwt_timeout_and_presence() {
    let at = "spec.jwtRules[0]";
    let apple = parse_error(&jwt("{issuer: example, timeout: apple}"));
    assert_eq!(apple.field, format!("{at}.timeout"));
    assert_error(
        &jwt("{issuer: example, timeout: 0s}"),
        &format!("{at}.timeout"),
        "duration must be greater than 1ms",
    );
    assert_error(
        &jwt("{issuer: example, timeout: 1.5ms}"),
        &format!("{at}.timeout"),
        "ms precision",
    );
    let presence = parse_error(&jwt("{issuer: example, presence: MANDATORY}"));
    assert_eq!(presence.field, format!("{at}.presence"));
    assert!(presence.message.contains("MANDATORY"), "{presence}");
}
