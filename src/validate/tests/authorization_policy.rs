use super::*;

fn ap(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    )
}

/// One rule, given in flow style.
fn rule(r: &str) -> String {
    ap(&format!("  rules:\n  - {r}\n"))
}

fn source(s: &str) -> String {
    rule(&format!("{{from: [{{source: {s}}}]}}"))
}

fn operation(o: &str) -> String {
    rule(&format!("{{to: [{{operation: {o}}}]}}"))
}

fn when(key: &str, values: &str) -> String {
    rule(&format!("{{when: [{{key: \"{key}\", {values}}}]}}"))
}

/// istiod's own accepted AuthorizationPolicies (pkg/config/validation/testdata/crds/authz-valid.yaml).
const ISTIO_VALID: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: full
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
    - from:
        - source:
            principals: ["principal", "principal-prefix-*", "*-suffix-principal", "*"]
            requestPrincipals: ["requestPrincipals", "requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*"]
            namespaces: ["ns", "ns-prefix-*", "*-ns-suffix", "*"]
            ipBlocks: ["1.2.3.4", "5.6.0.0/16"]
            remoteIpBlocks: ["1.2.3.4", "5.6.0.0/16"]
            notPrincipals: ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"]
            notRequestPrincipals: ["not-requestPrincipals", "not-requestPrincipals-prefix-*", "*-not-suffix-requestPrincipals", "*"]
            notNamespaces: ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]
            notIpBlocks: ["9.0.0.1", "9.2.0.0/16"]
            notRemoteIpBlocks: ["9.0.0.1", "9.2.0.0/16"]
            trustDomains: ["cluster.local", "cluster-prefix-*", "*-suffix-cluster", "*"]
            notTrustDomains: ["not-cluster.local", "not-cluster-prefix-*", "*-not-suffix-cluster", "*"]
      to:
        - operation:
            methods: ["method", "method-prefix-*", "*-suffix-method", "*"]
            hosts: ["exact.com", "*.suffix.com", "prefix.*", "*"]
            ports: ["80", "90"]
            paths: ["/exact", "/prefix/*", "*/suffix", "*", "/path/template/{*}", "/{**}/path/template"]
            notMethods: ["not-method", "not-method-prefix-*", "*-not-suffix-method", "*"]
            notHosts: ["not-exact.com", "*.not-suffix.com", "not-prefix.*", "*"]
            notPorts: ["8000", "9000"]
            notPaths: ["/not-exact", "/not-prefix/*", "*/not-suffix", "*", "/not-path/template/{*}", "/{**}/not-path/template"]
      when:
        - key: "request.headers[X-header]"
          values: ["header", "header-prefix-*", "*-suffix-header", "*"]
          notValues: ["not-header", "not-header-prefix-*", "*-not-suffix-header", "*"]
        - key: "source.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
          notValues: ["90.10.10.10", "90.168.10.0/24"]
        - key: "remote.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
          notValues: ["90.10.10.10", "90.168.10.0/24"]
        - key: "source.namespace"
          values: ["ns", "ns-prefix-*", "*-ns-suffix", "*"]
          notValues: ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]
        - key: "source.principal"
          values: ["principal", "principal-prefix-*", "*-suffix-principal", "*"]
          notValues: ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"]
        - key: "request.auth.principal"
          values: ["requestPrincipals", "requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*", "https://example.com/*"]
          notValues: ["not-requestPrincipals", "not-requestPrincipals-prefix-*", "*-not-suffix-requestPrincipals", "*"]
        - key: "request.auth.audiences"
          values: ["audiences", "audiences-prefix-*", "*-suffix-audiences", "*"]
          notValues: ["not-audiences", "not-audiences-prefix-*", "*-not-suffix-audiences", "*"]
        - key: "request.auth.presenter"
          values: ["presenter", "presenter-prefix-*", "*-suffix-presenter", "*"]
          notValues: ["not-presenter", "not-presenter-prefix-*", "*-not-suffix-presenter", "*"]
        - key: "request.auth.claims[iss]"
          values: ["iss", "iss-prefix-*", "*-suffix-iss", "*"]
          notValues: ["not-iss", "not-iss-prefix-*", "*-not-suffix-iss", "*"]
        - key: "request.auth.claims[nested1][nested2]"
          values: ["nested", "nested-prefix-*", "*-suffix-nested", "*"]
          notValues: ["not-nested", "not-nested-prefix-*", "*-not-suffix-nested", "*"]
        - key: "destination.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
          notValues: ["90.10.10.10", "90.168.10.0/24"]
        - key: "destination.port"
          values: ["91", "92"]
          notValues: ["9001", "9002"]
        - key: "connection.sni"
          values: ["exact.com", "*.suffix.com", "prefix.*", "*"]
          notValues: ["not-exact.com", "*.not-suffix.com", "not-prefix.*", "*"]
        - key: "source.trustDomain"
          values: ["cluster.local", "cluster-prefix-*", "*-suffix-cluster", "*"]
          notValues: ["not-cluster.local", "not-cluster-prefix-*", "*-not-suffix-cluster", "*"]
        - key: "experimental.envoy.filters.a.b[c]"
          values: ["exact", "prefix-*", "*-suffix", "*"]
          notValues: ["not-exact", "not-prefix-*", "*-not-suffix", "*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: service-account-and-namespace-principal-split
spec:
  rules:
    - from:
        - source:
            serviceAccounts: ["baz/sa", "sa"]
        - source:
            principals: ["bar"]
        - source:
            namespaces: ["bar"]
"#;

#[test]
fn istio_valid_policies_load_and_pass() {
    let parsed = parse_text("authz-valid.yaml", ISTIO_VALID).unwrap();
    assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
    assert_eq!(parsed.objects.len(), 2);
    for located in &parsed.objects {
        let found = super::super::validate(&located.object);
        assert!(found.is_empty(), "{}: {found:#?}", located.object.key());
    }
}

#[test]
fn istio_invalid_policies_fail() {
    // authz-invalid.yaml: service accounts cannot be combined with namespaces or principals.
    let at = "spec.rules[0].from[0].source";
    assert_error(
        &source("{serviceAccounts: [\"bar/sa\"], namespaces: [bar]}"),
        at,
        "cannot set serviceAccounts with namespaces or principals",
    );
    assert_error(
        &source("{serviceAccounts: [\"baz/sa\"], principals: [bar]}"),
        at,
        "cannot set serviceAccounts with namespaces or principals",
    );
    assert_error(
        &source("{notServiceAccounts: [sa], notPrincipals: [bar]}"),
        at,
        "cannot set serviceAccounts",
    );
}

#[test]
fn an_empty_policy_denies_all_and_is_valid() {
    assert!(run(&ap("  {}\n")).is_empty());
    assert!(run(&ap("  action: AUDIT\n  rules: [{}]\n")).is_empty());
}

#[test]
fn deny_and_custom_need_rules() {
    assert_error(
        &ap("  action: DENY\n"),
        "spec.rules",
        "DENY action without `rules` is meaningless",
    );
    assert_valid(&ap("  action: DENY\n  rules: [{}]\n"));
    assert_error(
        &ap("  action: CUSTOM\n  provider: {name: ext}\n"),
        "spec.rules",
        "CUSTOM action without `rules`",
    );
    assert_error(
        &ap("  action: CUSTOM\n  rules: [{}]\n"),
        "spec.provider.name",
        "must not be empty",
    );
    assert_error(
        &ap("  action: CUSTOM\n  provider: {}\n  rules: [{}]\n"),
        "spec.provider.name",
        "must not be empty",
    );
    assert_valid(&ap(
        "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{}]\n",
    ));
    assert_error(
        &ap("  action: DENY\n  provider: {name: ext}\n  rules: [{}]\n"),
        "spec.provider",
        "found DENY",
    );
}

#[test]
fn custom_rules_cannot_match_identities() {
    let custom = |r: &str| {
        ap(&format!(
            "  action: CUSTOM\n  provider: {{name: ext}}\n  rules:\n  - {r}\n"
        ))
    };
    let at = "spec.rules[0]";
    assert_error(
        &custom("{from: [{source: {principals: [a]}}]}"),
        &format!("{at}.from[0].source.principals"),
        "From.Principals is currently not supported with CUSTOM action",
    );
    assert_error(
        &custom("{from: [{source: {serviceAccounts: [a]}}]}"),
        &format!("{at}.from[0].source.serviceAccounts"),
        "From.ServiceAccounts",
    );
    assert_error(
        &custom("{when: [{key: \"request.auth.claims[iss]\", values: [a]}]}"),
        &format!("{at}.when[0].key"),
        "request.auth.claims[iss] is currently not supported",
    );
    assert_error(
        &custom("{when: [{key: source.namespace, values: [a]}]}"),
        &format!("{at}.when[0].key"),
        "not supported with CUSTOM",
    );
    assert_valid(&custom(
        "{from: [{source: {ipBlocks: [10.0.0.0/8]}}], to: [{operation: {paths: [/admin]}}]}",
    ));
}

#[test]
fn from_and_to_entries() {
    let at = "spec.rules[0]";
    assert_error(
        &rule("{from: []}"),
        &format!("{at}.from"),
        "`from` must not be empty",
    );
    assert_error(
        &rule("{from: [{}]}"),
        &format!("{at}.from[0].source"),
        "`from.source` must not be nil",
    );
    assert_error(
        &source("{}"),
        &format!("{at}.from[0].source"),
        "`from.source` must not be empty",
    );
    assert_valid(&source("{trustDomains: [cluster.local]}"));
    assert_error(
        &rule("{to: []}"),
        &format!("{at}.to"),
        "`to` must not be empty",
    );
    assert_error(
        &rule("{to: [{}]}"),
        &format!("{at}.to[0].operation"),
        "`to.operation` must not be nil",
    );
    assert_error(
        &operation("{}"),
        &format!("{at}.to[0].operation"),
        "`to.operation` must not be empty",
    );
}

#[test]
fn source_values() {
    let at = "spec.rules[0].from[0].source";
    assert_error(
        &source("{ipBlocks: [1.2.3]}"),
        &format!("{at}.ipBlocks[0]"),
        "bad IP address (1.2.3)",
    );
    assert_error(
        &source("{remoteIpBlocks: [ok, 10.0.0.0/40]}"),
        &format!("{at}.remoteIpBlocks[1]"),
        "bad CIDR range (10.0.0.0/40)",
    );
    assert_error(
        &source("{notIpBlocks: [\"::1/200\"]}"),
        &format!("{at}.notIpBlocks[0]"),
        "bad CIDR range",
    );
    assert_error(
        &source("{principals: [a, \"\"]}"),
        &format!("{at}.principals[1]"),
        "empty value not allowed, found in Principals",
    );
    assert_error(
        &source("{notRequestPrincipals: [\"\"]}"),
        &format!("{at}.notRequestPrincipals[0]"),
        "found in NotRequestPrincipals",
    );
    assert_error(
        &source("{serviceAccounts: [\"\"]}"),
        &format!("{at}.serviceAccounts[0]"),
        "empty value not allowed",
    );
    assert_error(
        &source("{serviceAccounts: [\"a/b/c\"]}"),
        &format!("{at}.serviceAccounts[0]"),
        "<namespace>/<name>",
    );
    assert_error(
        &source("{serviceAccounts: [\"ns/*\"]}"),
        &format!("{at}.serviceAccounts[0]"),
        "invalid service account",
    );
    assert_error(
        &source("{notServiceAccounts: [\"/sa\"]}"),
        &format!("{at}.notServiceAccounts[0]"),
        "invalid service account",
    );
    let many = (0..17)
        .map(|i| format!("sa{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_error(
        &source(&format!("{{serviceAccounts: [{many}]}}")),
        &format!("{at}.serviceAccounts"),
        "at most 16",
    );
    assert_valid(&source(
        "{serviceAccounts: [\"istio-system/istio-ingressgateway\", sleep]}",
    ));
}

#[test]
fn operation_values() {
    let at = "spec.rules[0].to[0].operation";
    assert_error(
        &operation("{ports: [\"80\", http]}"),
        &format!("{at}.ports[1]"),
        "bad port (http)",
    );
    assert_error(
        &operation("{notPorts: [\"70000\"]}"),
        &format!("{at}.notPorts[0]"),
        "bad port (70000)",
    );
    assert_error(
        &operation("{methods: [GET, \"\"]}"),
        &format!("{at}.methods[1]"),
        "empty value not allowed, found in Methods",
    );
    assert_error(
        &operation("{paths: [\"/{*}/foo/{bar}\"]}"),
        &format!("{at}.paths[0]"),
        "invalid or unsupported path template, found in Paths",
    );
    assert_error(
        &operation("{notPaths: [\"/ok\", \"/{**}/*\"]}"),
        &format!("{at}.notPaths[1]"),
        "found in NotPaths",
    );
    assert_valid(&operation(
        "{paths: [\"/api/{*}/items/{**}\"], hosts: [\"*.example.com\"]}",
    ));
}

#[test]
fn conditions() {
    let at = "spec.rules[0].when[0]";
    assert_error(
        &rule("{when: [{values: [a]}]}"),
        &format!("{at}.key"),
        "`key` must not be empty",
    );
    assert_error(
        &when("source.ip", ""),
        at,
        "at least one of `values` or `notValues` must be set for key source.ip",
    );
    assert_error(
        &when("source.ip", "values: [10.0.0.300]"),
        &format!("{at}.values[0]"),
        "invalid `value` for `key` source.ip: bad IP address",
    );
    assert_error(
        &when("destination.port", "notValues: [\"80\", x]"),
        &format!("{at}.notValues[1]"),
        "invalid `notValue` for `key` destination.port: bad port (x)",
    );
    assert_error(
        &when("request.headers[x-id]", "values: [a, \"\"]"),
        &format!("{at}.values[1]"),
        "empty value not allowed",
    );
    assert_error(
        &when("request.headers", "values: [a]"),
        &format!("{at}.key"),
        "bad key (request.headers): should have format a[b]",
    );
    assert_error(
        &when("request.auth.claims[]", "values: [a]"),
        &format!("{at}.key"),
        "should have format a[b]",
    );
    assert_error(
        &when("destination.namespace", "values: [a]"),
        &format!("{at}.key"),
        "replaced by the metadata.namespace",
    );
    assert_error(
        &when("destination.labels[app]", "values: [a]"),
        &format!("{at}.key"),
        "replaced by the workload selector",
    );
    assert_error(
        &when("destination.name", "values: [a]"),
        &format!("{at}.key"),
        "only supported in v1alpha1",
    );
    assert_error(
        &when("source.colour", "values: [a]"),
        &format!("{at}.key"),
        "unknown attribute: source.colour",
    );
    assert_valid(&when("source.serviceAccount", "values: [\"ns/sa\"]"));
    let twice = errors(&when("request.headers", "values: [a], notValues: [b]"));
    assert_eq!(twice.len(), 1, "a bad key is reported once: {twice:#?}");
}

#[test]
fn deny_rules_with_only_http_attributes_warn() {
    let deny = |r: &str| ap(&format!("  action: DENY\n  rules:\n  - {r}\n"));
    let message = "deny all traffic to TCP ports";
    assert_warning(
        &deny("{to: [{operation: {methods: [GET]}}]}"),
        "spec.rules[0]",
        message,
    );
    assert_warning(
        &deny("{from: [{source: {requestPrincipals: [\"*\"]}}]}"),
        "spec.rules[0]",
        message,
    );
    assert!(
        warnings(&deny(
            "{to: [{operation: {methods: [GET], ports: [\"8080\"]}}]}"
        ))
        .is_empty()
    );
    assert!(warnings(&deny("{from: [{source: {namespaces: [foo]}}]}")).is_empty());
    assert!(warnings(&deny("{from: [{source: {serviceAccounts: [foo/bar]}}]}")).is_empty());
    assert!(
        warnings(&ap("  rules:\n  - {to: [{operation: {methods: [GET]}}]}\n")).is_empty(),
        "ALLOW never warns"
    );
}

#[test]
fn selector_and_target_refs() {
    assert_error(
        &ap("  selector: {matchLabels: {app: \"*\"}}\n"),
        "spec.selector.matchLabels.app",
        "wildcard is not supported",
    );
    assert_error(
        &ap("  selector: {matchLabels: {\"\": a}}\n"),
        "spec.selector.matchLabels",
        "empty key",
    );
    assert_error(
        &ap(&format!(
            "  selector: {{matchLabels: {{app: {}}}}}\n",
            "a".repeat(64)
        )),
        "spec.selector.matchLabels.app",
        "63 bytes",
    );
    assert_warning(
        &ap("  selector: {}\n"),
        "spec.selector",
        "workload selector specified without labels",
    );
    let both =
        ap("  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n");
    assert_error(
        &both,
        "spec.targetRefs",
        "only one of targetRefs or workloadSelector can be set",
    );
    assert_valid(&ap(
        "  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n  - {kind: GatewayClass, group: gateway.networking.k8s.io, name: istio}\n  - {kind: ServiceEntry, group: networking.istio.io, name: se}\n",
    ));
    assert_error(
        &ap("  targetRef: {kind: Deployment, group: apps, name: d}\n"),
        "spec.targetRef",
        "targetRef must be to one of",
    );
    let many = (0..17)
        .map(|i| format!("{{kind: Service, name: s{i}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_error(
        &ap(&format!("  targetRefs: [{many}]\n")),
        "spec.targetRefs",
        "at most 16",
    );
}

#[test]
fn dry_run_annotation() {
    let with = |value: &str, spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, annotations: {{istio.io/dry-run: \"{value}\"}}}}\nspec:\n{spec}"
        )
    };
    assert_valid(&with("true", "  action: DENY\n  rules: [{}]\n"));
    assert_valid(&with("false", "  rules: [{}]\n"));
    assert_error(
        &with("maybe", "  rules: [{}]\n"),
        "metadata.annotations.istio.io/dry-run",
        "invalid value (maybe)",
    );
    assert_error(
        &with("true", "  action: AUDIT\n  rules: [{}]\n"),
        "metadata.annotations.istio.io/dry-run",
        "only supports action ALLOW/DENY",
    );
}

#[test]
fn bad_enums_and_unknown_fields_are_reported_by_path() {
    let bad = parse_text("f.yaml", &ap("  action: BLOCK\n")).unwrap();
    assert!(bad.objects.is_empty());
    assert_eq!(bad.diagnostics[0].field, "spec.action");
    assert!(
        bad.diagnostics[0]
            .message
            .contains("unknown variant `BLOCK`")
            || bad.diagnostics[0].message.contains("BLOCK"),
        "{:?}",
        bad.diagnostics
    );
    let unknown = parse_text("f.yaml", &source("{principals: [a], colour: blue}")).unwrap();
    assert_eq!(
        unknown.diagnostics[0].field,
        "spec.rules[0].from[0].source.colour"
    );
    assert!(unknown.diagnostics[0].message.contains("unknown field"));
}
