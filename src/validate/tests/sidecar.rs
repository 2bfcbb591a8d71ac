use super::*;

fn sidecar(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: bookinfo}}\nspec:\n{spec}"
    )
}

fn egress(hosts: &str) -> String {
    sidecar(&format!("  egress:\n  - hosts: {hosts}\n"))
}

fn ingress(listener: &str) -> String {
    sidecar(&format!("  ingress:\n  - {listener}\n"))
}

/// The Sidecars of Istio's everyday config corpus (tests/testdata/config), as written there.
#[test]
fn istio_corpus_sidecars_are_valid() {
    let none = "apiVersion: networking.istio.io/v1alpha3\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: none\nspec:\n  egress:\n    - hosts:\n        - none/*\n        - default/test.default\n  ingress:\n    - port:\n        number: 7071\n        protocol: HTTP\n        name: httplocal\n      defaultEndpoint: 127.0.0.1:17071\n    - port:\n        number: 7070\n        protocol: TCP\n        name: tcplocal\n      defaultEndpoint: 127.0.0.1:17070\n    - port:\n        number: 18080\n        protocol: HTTP\n        name: http-echo\n      defaultEndpoint: 127.0.0.1:28080\n    - port:\n        number: 18079\n        protocol: TCP\n        name: grpc-ping\n      defaultEndpoint: 127.0.0.1:28079\n";
    let se_example = "apiVersion: networking.istio.io/v1alpha3\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: seexamples\nspec:\n  egress:\n  - hosts:\n      - seexamples/* # Doesn't work without this - should be default\n";
    let se_example_gw = "apiVersion: networking.istio.io/v1alpha3\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: exampleegressgw\nspec:\n  egress:\n  - hosts:\n      - exampleegressgw/*\n";
    for yaml in [none, se_example, se_example_gw] {
        let found = run(yaml);
        assert!(found.is_empty(), "{found:#?}");
    }
}

#[test]
fn a_full_sidecar_is_valid() {
    let yaml = sidecar(concat!(
        "  workloadSelector: {labels: {app: reviews}}\n",
        "  ingress:\n",
        "  - port: {number: 9080, protocol: HTTP, name: http}\n",
        "    defaultEndpoint: 127.0.0.1:8080\n",
        "    captureMode: IPTABLES\n",
        "    connectionPool: {http: {http1MaxPendingRequests: 10}, tcp: {maxConnections: 5, idleTimeout: 0s}}\n",
        "  - port: {number: 9443, protocol: HTTPS, name: https}\n",
        "    defaultEndpoint: unix:///var/run/app.sock\n",
        "    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}\n",
        "  inboundConnectionPool: {tcp: {connectTimeout: 1s}}\n",
        "  egress:\n",
        "  - port: {number: 9080, protocol: HTTP, name: egresshttp}\n",
        "    bind: 127.0.0.1\n",
        "    captureMode: NONE\n",
        "    hosts: [\"./*\", \"istio-system/*\"]\n",
        "  - port: {number: 0, protocol: HTTP, name: uds}\n",
        "    bind: unix:///var/run/egress.sock\n",
        "    hosts: [\"*/*.example.com\"]\n",
        "  - hosts: [\"~/*\"]\n",
        "  outboundTrafficPolicy:\n",
        "    mode: ALLOW_ANY\n",
        "    egressProxy: {host: egress.istio-system.svc.cluster.local, port: {number: 443}, subset: v1}\n",
    ));
    let found = run(&yaml);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn loads_without_unknown_field_warnings() {
    let yaml = sidecar(
        "  ingress:\n  - port: {number: 8443, protocol: HTTPS, name: https}\n    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, ecdhCurves: [P-256], caCertCredentialName: ca}\n",
    );
    let parsed = parse_text("f.yaml", &yaml).unwrap();
    assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
    assert_eq!(
        parsed.objects[0].object.key().to_string(),
        "Sidecar bookinfo/default"
    );
    let unknown = parse_text("f.yaml", &egress("[\"./*\"]\n    colour: blue")).unwrap();
    assert_eq!(unknown.diagnostics[0].field, "spec.egress[0].colour");
}

#[test]
fn something_must_be_configured() {
    assert_error(
        &sidecar("  workloadSelector: {labels: {app: a}}\n"),
        "spec",
        "empty configuration provided",
    );
    assert_valid(&sidecar("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"));
    assert_valid(&sidecar(
        "  inboundConnectionPool: {http: {maxRetries: 3}}\n",
    ));
}

#[test]
fn workload_selector() {
    let with = |labels: &str| {
        sidecar(&format!(
            "  workloadSelector: {{labels: {labels}}}\n  egress:\n  - hosts: [\"./*\"]\n"
        ))
    };
    assert_warning(
        &with("{}"),
        "spec.workloadSelector",
        "will be applied to all services in namespace",
    );
    assert_error(
        &with("{app: \"*\"}"),
        "spec.workloadSelector.labels.app",
        "wildcard is not supported",
    );
    assert_error(
        &with("{\"\": a}"),
        "spec.workloadSelector.labels",
        "empty key",
    );
    assert_error(
        &with(&format!("{{app: {}}}", "a".repeat(64))),
        "spec.workloadSelector.labels.app",
        "63 bytes",
    );
    assert_valid(&with("{app: reviews, version: v1}"));
}

#[test]
fn ingress_ports() {
    assert_error(
        &ingress("defaultEndpoint: 127.0.0.1:8080"),
        "spec.ingress[0].port",
        "port is required",
    );
    assert_error(
        &ingress("port: {number: 80, protocol: HTTP, name: http, targetPort: 8080}"),
        "spec.ingress[0].port.targetPort",
        "no impact on Sidecars",
    );
    assert_error(
        &ingress("port: {number: 80, protocol: HTTP, name: Bad_Name}"),
        "spec.ingress[0].port.name",
        "invalid port name",
    );
    assert_error(
        &ingress("port: {number: 80, protocol: FTP}"),
        "spec.ingress[0].port.protocol",
        "unsupported protocol: FTP",
    );
    assert_error(
        &ingress("port: {number: 0, protocol: HTTP}"),
        "spec.ingress[0].port.number",
        "1..65535",
    );
    assert_error(
        &ingress("port: {number: 80, protocol: HTTP}\n    bind: unix:///a.sock"),
        "spec.ingress[0].bind",
        "not a valid IP",
    );
    assert_valid(&ingress("port: {number: 80}\n    bind: 10.0.0.1"));
    let dup = sidecar(
        "  ingress:\n  - port: {number: 80, protocol: HTTP}\n  - port: {number: 80, protocol: TCP}\n",
    );
    assert_error(&dup, "spec.ingress[1].port.number", "must be unique");
}

#[test]
fn ingress_default_endpoint() {
    let with = |ep: &str| {
        ingress(&format!(
            "port: {{number: 80, protocol: HTTP, name: http}}\n    defaultEndpoint: \"{ep}\""
        ))
    };
    for ok in [
        "127.0.0.1:8080",
        "0.0.0.0:8080",
        "[::1]:8080",
        "[::]:8080",
        ":8080",
        "unix:///var/run/app.sock",
        "unix://@abstract",
    ] {
        assert_valid(&with(ok));
    }
    let at = "spec.ingress[0].defaultEndpoint";
    assert_error(
        &with("10.0.0.1:8080"),
        at,
        "must be of form 127.0.0.1:<port>",
    );
    assert_error(&with("localhost:8080"), at, "must be of form");
    assert_error(&with("127.0.0.1"), at, "missing port in address");
    assert_error(&with("127.0.0.1:http"), at, "is not a number");
    assert_error(&with("127.0.0.1:0"), at, "1..65535");
    assert_error(&with("127.0.0.1:70000"), at, "1..65535");
    assert_error(&with("::1:8080"), at, "too many colons");
    assert_error(&with("unix://relative.sock"), at, "absolute path");
}

#[test]
fn ingress_tls() {
    let with = |port: &str, tls: &str| ingress(&format!("port: {port}\n    tls: {tls}"));
    let https = "{number: 443, protocol: HTTPS, name: https}";
    let at = "spec.ingress[0].tls";
    assert_valid(&with(
        https,
        "{mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}",
    ));
    assert_error(
        &with(https, "{mode: SIMPLE, credentialName: cert}"),
        &format!("{at}.credentialName"),
        "not currently supported",
    );
    assert_error(
        &with(https, "{mode: SIMPLE, credentialNames: [a]}"),
        &format!("{at}.credentialNames"),
        "not currently supported",
    );
    assert_error(
        &with(
            https,
            "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c, privateKey: /k}]}",
        ),
        &format!("{at}.tlsCertificates"),
        "not currently supported",
    );
    assert_error(
        &with(
            https,
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, subjectAltNames: [a]}",
        ),
        &format!("{at}.subjectAltNames"),
        "not supported",
    );
    assert_error(
        &with(
            https,
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, httpsRedirect: true}",
        ),
        &format!("{at}.httpsRedirect"),
        "not supported",
    );
    assert_error(
        &with(https, "{mode: ISTIO_MUTUAL}"),
        &format!("{at}.mode"),
        "cannot set mode to ISTIO_MUTUAL",
    );
    assert_error(
        &with(https, "{mode: AUTO_PASSTHROUGH}"),
        &format!("{at}.mode"),
        "cannot set mode to AUTO_PASSTHROUGH",
    );
    assert_error(
        &with(https, "{mode: SIMPLE}"),
        &format!("{at}.serverCertificate"),
        "SIMPLE TLS requires a server certificate",
    );
    assert_error(
        &with(
            "{number: 80, protocol: HTTP}",
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
        ),
        at,
        "non HTTPS/TLS",
    );
}

#[test]
fn connection_pools() {
    let with =
        |port: &str, pool: &str| ingress(&format!("port: {port}\n    connectionPool: {pool}"));
    assert_error(
        &with("{number: 80, protocol: HTTP}", "{}"),
        "spec.ingress[0].connectionPool",
        "at least one field",
    );
    assert_error(
        &with(
            "{number: 80, protocol: HTTP}",
            "{tcp: {maxConnections: -1}}",
        ),
        "spec.ingress[0].connectionPool.tcp.maxConnections",
        "non-negative",
    );
    assert_error(
        &with(
            "{number: 80, protocol: HTTP}",
            "{http: {idleTimeout: 0.5ms}}",
        ),
        "spec.ingress[0].connectionPool.http.idleTimeout",
        "greater than 1ms",
    );
    assert_warning(
        &with(
            "{number: 5432, protocol: TCP, name: db}",
            "{http: {maxRetries: 1}}",
        ),
        "spec.ingress[0].connectionPool.http",
        "only TCP settings will apply",
    );
    assert!(
        warnings(&with(
            "{number: 80, protocol: HTTP}",
            "{http: {maxRetries: 1}}"
        ))
        .is_empty()
    );
    assert_error(
        &sidecar("  inboundConnectionPool: {http: {http2MaxRequests: -1}}\n"),
        "spec.inboundConnectionPool.http.http2MaxRequests",
        "non-negative",
    );
}

#[test]
fn one_catch_all_egress_listener_and_it_comes_last() {
    let first = sidecar(
        "  egress:\n  - hosts: [\"./*\"]\n  - port: {number: 80, protocol: HTTP}\n    hosts: [\"./*\"]\n",
    );
    assert_error(&first, "spec.egress[0].port", "should be the last listener");
    let two = sidecar("  egress:\n  - hosts: [\"./*\"]\n  - hosts: [\"*/*\"]\n");
    assert_error(
        &two,
        "spec.egress[1].port",
        "only one listener with empty port",
    );
    assert_valid(&sidecar(
        "  egress:\n  - port: {number: 80, protocol: HTTP}\n    hosts: [\"./*\"]\n  - hosts: [\"*/*\"]\n",
    ));
}

#[test]
fn egress_ports_and_binds() {
    let with = |listener: &str| {
        sidecar(&format!(
            "  egress:\n  - {listener}\n    hosts: [\"./*\"]\n"
        ))
    };
    assert_error(
        &with("port: {number: 80, protocol: HTTP, targetPort: 8080}"),
        "spec.egress[0].port.targetPort",
        "no impact",
    );
    assert_error(
        &with("port: {number: 80, protocol: NOPE}"),
        "spec.egress[0].port.protocol",
        "unsupported protocol",
    );
    assert_error(
        &with("port: {number: 70000, protocol: HTTP}"),
        "spec.egress[0].port.number",
        "1..65535",
    );
    assert_error(
        &with("port: {number: 80, protocol: HTTP}\n    bind: nope"),
        "spec.egress[0].bind",
        "not a valid IP",
    );
    assert_error(
        &with("port: {number: 0, protocol: HTTP}\n    bind: 127.0.0.1"),
        "spec.egress[0].bind",
        "unix domain socket bind address",
    );
    assert_error(
        &with("port: {number: 0, protocol: HTTP}\n    bind: unix://rel"),
        "spec.egress[0].bind",
        "absolute path",
    );
    assert_error(
        &with(
            "port: {number: 0, protocol: HTTP}\n    bind: unix:///a.sock\n    captureMode: IPTABLES",
        ),
        "spec.egress[0].captureMode",
        "DEFAULT/NONE",
    );
    assert_valid(&with(
        "port: {number: 0, protocol: HTTP}\n    bind: unix:///a.sock\n    captureMode: NONE",
    ));
    let uds = sidecar(
        "  egress:\n  - port: {number: 0}\n    bind: unix:///a.sock\n    hosts: [\"./*\"]\n  - port: {number: 0}\n    bind: unix:///a.sock\n    hosts: [\"./*\"]\n",
    );
    assert_error(
        &uds,
        "spec.egress[1].bind",
        "unix domain socket values for listeners must be unique",
    );
    let ports = sidecar(
        "  egress:\n  - port: {number: 80}\n    hosts: [\"./*\"]\n  - port: {number: 80}\n    bind: 127.0.0.2\n    hosts: [\"./*\"]\n",
    );
    assert_error(
        &ports,
        "spec.egress[1].port.number",
        "ports on IP bound listeners must be unique",
    );
}

#[test]
fn egress_hosts() {
    assert_error(&egress("[]"), "spec.egress[0].hosts", "at least one host");
    assert_error(
        &sidecar("  egress:\n  - port: {number: 80}\n"),
        "spec.egress[0].hosts",
        "at least one host",
    );
    let at = "spec.egress[0].hosts[0]";
    assert_error(
        &egress("[reviews.bookinfo.svc.cluster.local]"),
        at,
        "namespace/dnsName",
    );
    assert_error(&egress("[\"/a.com\"]"), at, "cannot be empty");
    assert_error(&egress("[\"ns/\"]"), at, "cannot be empty");
    assert_error(&egress("[\"Bad_NS/a.com\"]"), at, "invalid namespace value");
    assert_error(&egress("[\"ns/reviews\"]"), at, "short names");
    assert_error(&egress("[\"ns/*a.com\"]"), at, "partial wildcard");
    assert_error(&egress("[\"ns/a.*.com\"]"), at, "invalid");
    assert_error(&egress("[\"ns/10.0.0.1\"]"), at, "all-numeric");
    assert_valid(&egress(
        "[\"*/*\", \"./*\", \"~/*\", \"ns/*.example.com\", \"istio-system/istiod.istio-system.svc.cluster.local\"]",
    ));
}

#[test]
fn repeated_egress_hosts_are_warnings() {
    assert_warning(
        &egress("[\"ns/a.com\", \"ns/a.com\"]"),
        "spec.egress[0].hosts[1]",
        "duplicated egress host: ns/a.com",
    );
    assert_warning(
        &egress("[\"ns/*\", \"ns/a.com\"]"),
        "spec.egress[0].hosts[1]",
        "duplicated egress host",
    );
    assert_warning(
        &egress("[\"ns/a.com\", \"ns/*\"]"),
        "spec.egress[0].hosts[1]",
        "duplicated egress host",
    );
    // `.` is the Sidecar's own namespace.
    assert_warning(
        &egress("[\"./*\", \"bookinfo/a.com\"]"),
        "spec.egress[0].hosts[1]",
        "duplicated egress host",
    );
    assert_warning(
        &egress("[\"*/*\", \"ns/a.com\"]"),
        "spec.egress[0].hosts",
        "`*/*` host select all resources",
    );
    assert!(warnings(&egress("[\"ns/a.com\", \"other/a.com\", \"*/b.com\"]")).is_empty());
    assert_valid(&egress("[\"ns/a.com\", \"ns/a.com\"]"));
}

#[test]
fn egress_proxy_needs_allow_any_and_a_port() {
    let with = |policy: &str| sidecar(&format!("  outboundTrafficPolicy: {policy}\n"));
    let at = "spec.outboundTrafficPolicy.egressProxy";
    assert_error(
        &with("{egressProxy: {host: egress.example.com, port: {number: 443}}}"),
        at,
        "only with ALLOW_ANY",
    );
    assert_error(
        &with(
            "{mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com, port: {number: 443}}}",
        ),
        at,
        "only with ALLOW_ANY",
    );
    assert_error(
        &with("{mode: ALLOW_ANY, egressProxy: {host: egress.example.com}}"),
        &format!("{at}.port"),
        "port must be non-nil",
    );
    assert_error(
        &with("{mode: ALLOW_ANY, egressProxy: {host: \"*.example.com\", port: {number: 443}}}"),
        &format!("{at}.host"),
        "invalid",
    );
    assert_error(
        &with("{mode: ALLOW_ANY, egressProxy: {host: egress.example.com, port: {number: 0}}}"),
        &format!("{at}.port.number"),
        "1..65535",
    );
    assert_error(
        &with(
            "{mode: ALLOW_ANY, egressProxy: {host: egress.example.com, subset: Bad_Subset, port: {number: 443}}}",
        ),
        &format!("{at}.subset"),
        "subset name is invalid",
    );
    assert_valid(&with(
        "{mode: ALLOW_ANY, egressProxy: {host: egress, port: {number: 443}}}",
    ));
    let once = errors(&with(
        "{mode: ALLOW_ANY, egressProxy: {host: \"a_b.com\", port: {number: 443}}}",
    ));
    assert_eq!(
        once.iter()
            .filter(|d| d.field == format!("{at}.host"))
            .count(),
        1,
        "{once:#?}"
    );
    let bad_mode = parse_text("f.yaml", &with("{mode: BLOCK}")).unwrap();
    assert!(bad_mode.objects.is_empty());
    assert_eq!(
        bad_mode.diagnostics[0].field,
        "spec.outboundTrafficPolicy.mode"
    );
    assert!(
        bad_mode.diagnostics[0]
            .message
            .contains("unknown variant \"BLOCK\""),
        "{:?}",
        bad_mode.diagnostics
    );
}
