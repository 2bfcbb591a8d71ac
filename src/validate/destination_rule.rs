//! DestinationRule: istiod's `ValidateDestinationRule` and `validateTrafficPolicy`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::config::istio::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

use super::common::{
    Diags, validate_duration, validate_export_to, validate_labels, validate_percent, validate_port,
    validate_selector_labels, validate_subset_name, validate_wildcard_domain,
};

pub fn validate(namespace: &str, dr: &DestinationRule, out: &mut Diags) {
    out.check("spec.host", validate_wildcard_domain(&dr.host));
    if let Some(tp) = &dr.traffic_policy {
        validate_traffic_policy("spec.trafficPolicy", tp, out);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        // Two subsets of one name would both claim cluster `outbound|port|name|host`.
        if !names.insert(subset.name.as_str()) {
            out.error(
                format!("{at}.name"),
                format!("duplicate subset names: {}", subset.name),
            );
        }
        out.check(format!("{at}.name"), validate_subset_name(&subset.name));
        out.check(format!("{at}.labels"), validate_labels(&subset.labels));
        if let Some(tp) = &subset.traffic_policy {
            validate_traffic_policy(&format!("{at}.trafficPolicy"), tp, out);
        }
    }
    validate_export_to(out, "spec.exportTo", namespace, &dr.export_to, false);
    if let Some(sel) = &dr.workload_selector {
        // A rule for particular workloads only applies in its own namespace.
        let beyond = dr.export_to.iter().any(|e| e != "." && e != namespace);
        if beyond {
            out.error("spec.exportTo", "destination rule with workload selector cannot have exportTo beyond current namespace");
        } else if dr.export_to.len() > 1 {
            out.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
        validate_selector_labels(out, "spec.workloadSelector.matchLabels", &sel.match_labels);
        if sel.match_labels.is_empty() {
            out.warning(
                "spec.workloadSelector",
                "workload selector specified without labels",
            );
        }
    }
}

fn validate_traffic_policy(at: &str, tp: &TrafficPolicy, out: &mut Diags) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
    {
        out.error(at, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.error(at, "tunnel and proxyProtocol must not be set together");
        return;
    }
    validate_policy_parts(
        at,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
        out,
    );
    let mut ports = BTreeSet::new();
    for (i, pls) in tp.port_level_settings.iter().enumerate() {
        let pat = format!("{at}.portLevelSettings[{i}]");
        match pls.port {
            None => out.error(
                format!("{pat}.port"),
                "portTrafficPolicy must have valid port",
            ),
            Some(p) => {
                out.check(format!("{pat}.port.number"), validate_port(p.number.into()));
                if !ports.insert(p.number) {
                    out.error(
                        format!("{pat}.port.number"),
                        format!("duplicate port level settings for port {}", p.number),
                    );
                }
            }
        }
        if pls.outlier_detection.is_none()
            && pls.connection_pool.is_none()
            && pls.load_balancer.is_none()
            && pls.tls.is_none()
        {
            out.error(&pat, "port traffic policy must have at least one field");
        } else {
            validate_policy_parts(
                &pat,
                &pls.load_balancer,
                &pls.connection_pool,
                &pls.outlier_detection,
                &pls.tls,
                out,
            );
        }
    }
    if let Some(t) = &tp.tunnel {
        validate_tunnel(&format!("{at}.tunnel"), t, out);
    }
    if let Some(version) = tp
        .proxy_protocol
        .as_ref()
        .and_then(|p| p.get("version"))
        .and_then(Value::as_str)
        && !matches!(version, "V1" | "V2")
    {
        out.error(
            format!("{at}.proxyProtocol.version"),
            format!("proxy protocol version is invalid: {version}"),
        );
    }
}

fn validate_policy_parts(
    at: &str,
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    outlier: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
    out: &mut Diags,
) {
    if let Some(o) = outlier {
        validate_outlier(&format!("{at}.outlierDetection"), o, out);
    }
    if let Some(p) = pool {
        validate_connection_pool(&format!("{at}.connectionPool"), p, out);
    }
    if let Some(lb) = lb {
        validate_load_balancer(&format!("{at}.loadBalancer"), lb, outlier.is_some(), out);
    }
    if let Some(t) = tls {
        validate_client_tls(&format!("{at}.tls"), t, out);
    }
}

fn validate_outlier(at: &str, o: &OutlierDetection, out: &mut Diags) {
    if let Some(d) = o.base_ejection_time {
        out.check(format!("{at}.baseEjectionTime"), validate_duration(d));
    }
    if let Some(d) = o.interval {
        out.check(format!("{at}.interval"), validate_duration(d));
    }
    if o.consecutive_errors.is_some_and(|c| c != 0) {
        out.warning(
            format!("{at}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !o.split_external_local_origin_errors.unwrap_or(false)
        && o.consecutive_local_origin_failures.is_some_and(|c| c > 0)
    {
        out.error(
            format!("{at}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    if let Some(p) = o.max_ejection_percent {
        out.check(
            format!("{at}.maxEjectionPercent"),
            validate_percent(p.into()),
        );
    }
    if let Some(p) = o.min_health_percent {
        out.check(format!("{at}.minHealthPercent"), validate_percent(p.into()));
    }
}

pub(super) fn validate_connection_pool(at: &str, p: &ConnectionPoolSettings, out: &mut Diags) {
    if p.http.is_none() && p.tcp.is_none() {
        out.error(at, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &p.http {
        let hat = format!("{at}.http");
        for (field, value) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if value.is_some_and(|v| v < 0) {
                out.error(
                    format!("{hat}.{field}"),
                    format!("{field} must be non-negative"),
                );
            }
        }
        if let Some(d) = h.idle_timeout {
            out.check(format!("{hat}.idleTimeout"), validate_duration(d));
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            out.error(
                format!("{hat}.useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = &p.tcp {
        let tat = format!("{at}.tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            out.error(
                format!("{tat}.maxConnections"),
                "max connections must be non-negative",
            );
        }
        // A TCP idle timeout of 0s disables it (istiod skips the check).
        let idle = t.idle_timeout.filter(|d| d.as_std().as_millis() != 0);
        for (field, d) in [
            ("connectTimeout", t.connect_timeout),
            ("maxConnectionDuration", t.max_connection_duration),
            ("idleTimeout", idle),
        ] {
            if let Some(d) = d {
                out.check(format!("{tat}.{field}"), validate_duration(d));
            }
        }
        if let Some(ka) = &t.tcp_keepalive {
            for (field, d) in [("time", ka.time), ("interval", ka.interval)] {
                if let Some(d) = d {
                    out.check(format!("{tat}.tcpKeepalive.{field}"), validate_duration(d));
                }
            }
        }
    }
}

fn validate_load_balancer(at: &str, lb: &LoadBalancerSettings, has_outlier: bool, out: &mut Diags) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        out.error(at, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cat = format!("{at}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => out.warning(
                &cat,
                "consistentHash has no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName); requests will not be sticky",
            ),
            1 => {}
            _ => out.error(&cat, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set"),
        }
        if ch.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
            out.error(
                format!("{cat}.httpCookie.name"),
                "name required for HttpCookie",
            );
        }
        if let Some(ttl) = ch.http_cookie.as_ref().and_then(|c| c.ttl)
            && ttl.as_std().is_zero()
        {
            out.warning(
                format!("{cat}.httpCookie.ttl"),
                "a zero ttl makes the cookie a session cookie",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            out.error(&cat, "only one of ringHash or maglev may be set");
        }
        if ch.minimum_ring_size.is_some_and(|s| s != 0) {
            out.warning(
                format!("{cat}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                out.error(
                    format!("{cat}.minimumRingSize"),
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let size = m.table_size.unwrap_or(0);
            let field = format!("{cat}.maglev.tableSize");
            if size == 0 {
                out.error(field, "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                out.error(field, "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(size) {
                out.error(field, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality_lb(&format!("{at}.localityLbSetting"), l, has_outlier, out);
    }
    if let Some(d) = lb.warmup_duration_secs {
        out.check(format!("{at}.warmupDurationSecs"), validate_duration(d));
    }
    if let Some(w) = &lb.warmup {
        match w.duration {
            None => out.error(format!("{at}.warmup.duration"), "is required"),
            Some(d) => out.check(format!("{at}.warmup.duration"), validate_duration(d)),
        }
        if let Some(p) = w.minimum_percent.filter(|p| !(0.0..=100.0).contains(p)) {
            out.error(
                format!("{at}.warmup.minimumPercent"),
                format!("{p} is not in 0..100"),
            );
        }
        if let Some(a) = w.aggression.filter(|a| a.is_nan() || *a < 0.0) {
            out.error(
                format!("{at}.warmup.aggression"),
                format!("{a} must not be negative"),
            );
        }
    }
}

/// Envoy's own primality test for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    (3..)
        .step_by(2)
        .take_while(|f| f * f <= x)
        .all(|f| !x.is_multiple_of(f))
}

/// The parts of istiod's `ValidateLocalityLbSetting` a user most often gets wrong.
fn validate_locality_lb(at: &str, l: &Value, has_outlier: bool, out: &mut Diags) {
    let list = |k: &str| {
        l.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (distribute, failover, priority) = (
        list("distribute"),
        list("failover"),
        list("failoverPriority"),
    );
    if !distribute.is_empty() && !failover.is_empty() {
        out.error(
            at,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    for (i, d) in distribute.iter().enumerate() {
        let to = d
            .get("to")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut total = 0u64;
        for (loc, w) in &to {
            let w = w.as_u64().unwrap_or(0);
            if !(1..=100).contains(&w) {
                out.error(
                    format!("{at}.distribute[{i}].to.{loc}"),
                    "locality weight must be in range [1, 100]",
                );
            }
            total += w;
        }
        if total != 100 {
            out.error(
                format!("{at}.distribute[{i}].to"),
                format!("total locality weight {total} != 100"),
            );
        }
    }
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        out.warning(at, "outlier detection policy must be provided for failover");
    }
    for (i, f) in failover.iter().enumerate() {
        let side = |k: &str| {
            f.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (from, to) = (side("from"), side("to"));
        let fat = format!("{at}.failover[{i}]");
        if from == to {
            out.error(
                &fat,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            out.error(&fat, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            out.error(
                &fat,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Client TLS towards the upstream (istiod `agent.ValidateTLS`).
fn validate_client_tls(at: &str, t: &ClientTlsSettings, out: &mut Diags) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    if t.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple
            && (!t.ca_certificates.is_empty()
                || !t.credential_name.is_empty()
                || !t.subject_alt_names.is_empty())
        {
            out.error(at, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
        }
        if mode == ClientTlsMode::Mutual
            && (!t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty())
        {
            out.error(at, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
        }
    }
    let certs = [
        ("clientCertificate", &t.client_certificate),
        ("privateKey", &t.private_key),
        ("caCertificates", &t.ca_certificates),
        ("caCrl", &t.ca_crl),
    ];
    match mode {
        ClientTlsMode::Simple | ClientTlsMode::Mutual if !t.credential_name.is_empty() => {
            for (field, value) in certs {
                if !value.is_empty() {
                    out.error(
                        format!("{at}.{field}"),
                        "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
                    );
                }
            }
        }
        ClientTlsMode::Mutual => {
            if t.client_certificate.is_empty() {
                out.error(
                    format!("{at}.clientCertificate"),
                    "client certificate required for mutual tls (or credentialName)",
                );
            }
            if t.private_key.is_empty() {
                out.error(
                    format!("{at}.privateKey"),
                    "private key required for mutual tls (or credentialName)",
                );
            }
        }
        // Stricter than istiod, which ignores them: the mesh's own certificates are used.
        ClientTlsMode::IstioMutual => {
            for (field, value) in certs
                .into_iter()
                .chain([("credentialName", &t.credential_name)])
            {
                if !value.is_empty() {
                    out.error(
                        format!("{at}.{field}"),
                        format!("ISTIO_MUTUAL uses Istio's certificates; {field} must not be set"),
                    );
                }
            }
        }
        _ => {}
    }
}

fn validate_tunnel(at: &str, t: &Value, out: &mut Diags) {
    let protocol = t
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !protocol.is_empty() && protocol != "CONNECT" && protocol != "POST" {
        out.error(
            format!("{at}.protocol"),
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
    }
    let host = t
        .get("targetHost")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if super::common::validate_fqdn(host).is_err() && !super::common::is_ip(host) {
        out.error(
            format!("{at}.targetHost"),
            format!("tunnel target host must be valid FQDN or IP address: {host:?}"),
        );
    }
    let port = t.get("targetPort").and_then(Value::as_i64).unwrap_or(0);
    out.check(format!("{at}.targetPort"), validate_port(port));
}
