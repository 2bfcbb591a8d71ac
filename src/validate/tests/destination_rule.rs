use super::*;

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: ns}}\nspec:\n  host: reviews.ns.svc.cluster.local\n{spec}"
    )
}

/// A DestinationRule with a top-level traffic policy given in flow style.
fn tp(policy: &str) -> String {
    dr(&format!("  trafficPolicy: {policy}\n"))
}

#[test]
fn a_plain_rule_is_valid() {
    let ok = dr(
        "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}\n",
    );
    assert!(run(&ok).is_empty(), "{:?}", run(&ok));
}

#[test]
fn host() {
    let missing = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {}\n";
    assert_error(missing, "spec.host", "empty domain name");
    assert_error(
        &dr("").replace("reviews.ns.svc.cluster.local", "bad_host"),
        "spec.host",
        "invalid",
    );
    assert_valid(&dr("").replace("reviews.ns.svc.cluster.local", "\"*.example.com\""));
}

#[test]
fn subsets() {
    assert_error(
        &dr("  subsets: [{name: v1}, {name: v1}]\n"),
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    );
    assert_error(
        &dr("  subsets: [{name: \"v_1\"}]\n"),
        "spec.subsets[0].name",
        "subset name is invalid",
    );
    assert_error(
        &dr("  subsets: [{labels: {a: b}}]\n"),
        "spec.subsets[0].name",
        "cannot be empty",
    );
    assert_error(
        &dr("  subsets: [{name: v1, labels: {version: \"-x\"}}]\n"),
        "spec.subsets[0].labels",
        "invalid tag value",
    );
    assert_error(
        &dr("  subsets: [{name: v1, trafficPolicy: {}}]\n"),
        "spec.subsets[0].trafficPolicy",
        "at least one field",
    );
}

#[test]
fn load_balancer() {
    assert_valid(&tp(
        "{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}}",
    ));
    assert_error(
        &tp("{loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}"),
        "spec.trafficPolicy.loadBalancer",
        "only one of simple or consistentHash",
    );
    assert_error(
        &tp("{loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of httpHeaderName",
    );
    assert_warning(
        &tp("{loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 1024}}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "no hash key",
    );
    assert_error(
        &tp("{loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required",
    );
    assert_error(
        &tp("{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    );
    assert_valid(&tp(
        "{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}}",
    ));
    assert_warning(
        &tp("{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 42}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "deprecated",
    );
    assert_error(
        &tp("{loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0s}}"),
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "1ms",
    );
}

#[test]
fn locality_lb() {
    let lb = |l: &str| {
        tp(&format!(
            "{{loadBalancer: {{localityLbSetting: {l}}}, outlierDetection: {{consecutive5xxErrors: 5}}}}"
        ))
    };
    assert_valid(&lb(
        "{distribute: [{from: us-west/*, to: {\"us-west/*\": 80, \"us-east/*\": 20}}]}",
    ));
    assert_error(
        &lb("{distribute: [{from: a/*, to: {\"a/*\": 50}}]}"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "!= 100",
    );
    assert_error(
        &lb("{failover: [{from: a, to: a}]}"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "different regions",
    );
}

#[test]
fn connection_pool() {
    assert_valid(&tp(
        "{connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}, http: {http2MaxRequests: 1000, idleTimeout: 1h}}}",
    ));
    assert_error(
        &tp("{connectionPool: {}}"),
        "spec.trafficPolicy.connectionPool",
        "at least one field",
    );
    assert_error(
        &tp("{connectionPool: {tcp: {maxConnections: -1}}}"),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "non-negative",
    );
    assert_error(
        &tp("{connectionPool: {http: {maxRetries: -1}}}"),
        "spec.trafficPolicy.connectionPool.http.maxRetries",
        "non-negative",
    );
    assert_error(
        &tp("{connectionPool: {tcp: {connectTimeout: 0s}}}"),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "1ms",
    );
    assert_error(
        &tp("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}"),
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "UPGRADE",
    );
}

#[test]
fn outlier_detection() {
    assert_valid(&tp(
        "{outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100, minHealthPercent: 0}}",
    ));
    assert_error(
        &tp("{outlierDetection: {maxEjectionPercent: 101}}"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "0..100",
    );
    assert_error(
        &tp("{outlierDetection: {minHealthPercent: -1}}"),
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
        "0..100",
    );
    assert_error(
        &tp("{outlierDetection: {interval: 0s}}"),
        "spec.trafficPolicy.outlierDetection.interval",
        "1ms",
    );
    assert_error(
        &tp("{outlierDetection: {baseEjectionTime: 0.5ms}}"),
        "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        "1ms",
    );
    assert_error(
        &tp("{outlierDetection: {consecutiveLocalOriginFailures: 3}}"),
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "split external",
    );
    assert_warning(
        &tp("{outlierDetection: {consecutiveErrors: 3}}"),
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "deprecated",
    );
}

#[test]
fn port_level_settings() {
    assert_valid(&tp(
        "{portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: LEAST_REQUEST}}, {port: {number: 443}, tls: {mode: SIMPLE}}]}",
    ));
    assert_error(
        &tp("{portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}"),
        "spec.trafficPolicy.portLevelSettings[0].port",
        "must have valid port",
    );
    assert_error(
        &tp("{portLevelSettings: [{port: {number: 80}}]}"),
        "spec.trafficPolicy.portLevelSettings[0]",
        "at least one field",
    );
    assert_error(
        &tp(
            "{portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE}}, {port: {number: 80}, tls: {mode: DISABLE}}]}",
        ),
        "spec.trafficPolicy.portLevelSettings[1].port.number",
        "duplicate",
    );
}

#[test]
fn client_tls() {
    assert_valid(&tp(
        "{tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}}",
    ));
    assert_valid(&tp("{tls: {mode: MUTUAL, credentialName: client-cert}}"));
    assert_valid(&tp("{tls: {mode: ISTIO_MUTUAL, sni: a.com}}"));
    assert_error(
        &tp("{tls: {mode: MUTUAL}}"),
        "spec.trafficPolicy.tls.clientCertificate",
        "client certificate required",
    );
    assert_error(
        &tp("{tls: {mode: MUTUAL, clientCertificate: /c.pem}}"),
        "spec.trafficPolicy.tls.privateKey",
        "private key required",
    );
    assert_error(
        &tp("{tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}}"),
        "spec.trafficPolicy.tls.clientCertificate",
        "ISTIO_MUTUAL",
    );
    assert_error(
        &tp("{tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}"),
        "spec.trafficPolicy.tls.caCertificates",
        "credentialName is set",
    );
    assert_error(
        &tp("{tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}"),
        "spec.trafficPolicy.tls",
        "InsecureSkipVerify",
    );
}

#[test]
fn tunnel_and_proxy_protocol() {
    assert_valid(&tp(
        "{tunnel: {protocol: CONNECT, targetHost: egress.example.com, targetPort: 8080}}",
    ));
    assert_error(
        &tp("{tunnel: {protocol: PUT, targetHost: a.com, targetPort: 80}}"),
        "spec.trafficPolicy.tunnel.protocol",
        "CONNECT",
    );
    assert_error(
        &tp("{tunnel: {targetHost: a.com, targetPort: 0}}"),
        "spec.trafficPolicy.tunnel.targetPort",
        "1..65535",
    );
    assert_error(
        &tp("{tunnel: {targetHost: a.com, targetPort: 80}, proxyProtocol: {version: V1}}"),
        "spec.trafficPolicy",
        "must not be set together",
    );
}

#[test]
fn export_to_and_selector() {
    assert_valid(&dr("  exportTo: [\".\", other]\n"));
    assert_error(
        &dr("  exportTo: [\"*\", \".\"]\n"),
        "spec.exportTo",
        "both public",
    );
    assert_error(
        &dr("  exportTo: [ns, \".\"]\n"),
        "spec.exportTo[1]",
        "duplicate entries in exportTo: . and current namespace ns",
    );
    assert_valid(&dr(
        "  workloadSelector: {matchLabels: {app: a}}\n  exportTo: [\".\"]\n",
    ));
    assert_error(
        &dr("  workloadSelector: {matchLabels: {app: a}}\n  exportTo: [other]\n"),
        "spec.exportTo",
        "beyond current namespace",
    );
    // `matchLabels` itself is not read yet: config's DestinationRule.workloadSelector has `labels`.
}

#[test]
fn warmup_needs_a_duration_and_values_in_range() {
    assert_error(
        &tp("{loadBalancer: {warmup: {minimumPercent: 5}}}"),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "required",
    );
    assert_error(
        &tp("{loadBalancer: {warmup: {duration: 300s, minimumPercent: 150}}}"),
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "0..100",
    );
    assert_error(
        &tp("{loadBalancer: {warmup: {duration: 300s, aggression: -0.1}}}"),
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "negative",
    );
    assert_valid(&tp(
        "{loadBalancer: {warmup: {duration: 300s, minimumPercent: 5, aggression: 5}}}",
    ));
}
