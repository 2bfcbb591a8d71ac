//! Sidecar: istiod's `ValidateSidecar` (ingress and egress listeners, egress hosts, outbound
//! traffic policy), with the CRD's limits on workload selector labels.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::istio::common::Port;
use crate::config::istio::gateway::{ServerTls, ServerTlsMode};
use crate::config::istio::sidecar::{
    CaptureMode, EgressListener, IngressListener, OutboundTrafficPolicy, Sidecar, split_host_port,
};
use crate::model::Protocol;
use crate::model::mesh::OutboundTrafficMode;

use super::common::{
    Diags, is_dns1123_label, validate_fqdn, validate_ip, validate_partial_wildcard, validate_port,
    validate_port_name, validate_selector_labels, validate_unix_address, validate_wildcard_domain,
};
use super::destination_rule::validate_connection_pool;
use super::gateway::validate_tls;
use super::virtual_service::validate_destination;

const UNIX_PREFIX: &str = "unix://";
/// The CRD's limits on `workloadSelector.labels`.
const MAX_SELECTOR_LABELS: usize = 256;
const MAX_LABEL_VALUE: usize = 63;

pub fn validate(namespace: &str, sc: &Sidecar, out: &mut Diags) {
    if let Some(sel) = &sc.workload_selector {
        let at = "spec.workloadSelector.labels";
        validate_selector_labels(out, at, &sel.labels);
        if sel.labels.len() > MAX_SELECTOR_LABELS {
            out.error(
                at,
                format!(
                    "at most {MAX_SELECTOR_LABELS} labels are allowed, got {}",
                    sel.labels.len()
                ),
            );
        }
        for (k, v) in &sel.labels {
            if v.len() > MAX_LABEL_VALUE {
                out.error(
                    format!("{at}.{k}"),
                    format!("label value may not be more than {MAX_LABEL_VALUE} bytes"),
                );
            }
        }
        if sel.labels.is_empty() {
            out.warning(
                "spec.workloadSelector",
                "sidecar: workload selector specified without labels, will be applied to all services in namespace",
            );
        }
    }
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        out.error("spec", "sidecar: empty configuration provided");
        return;
    }

    let mut ports = BTreeSet::new();
    for (i, listener) in sc.ingress.iter().enumerate() {
        validate_ingress(&format!("spec.ingress[{i}]"), listener, &mut ports, out);
    }
    if let Some(pool) = &sc.inbound_connection_pool {
        validate_connection_pool("spec.inboundConnectionPool", pool, out);
    }

    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all = false;
    for (i, listener) in sc.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        match &listener.port {
            // One listener without a port catches what the others do not; it must come last.
            None => {
                if catch_all {
                    out.error(
                        format!("{at}.port"),
                        "sidecar: egress can have only one listener with empty port",
                    );
                } else if i + 1 != sc.egress.len() {
                    out.error(format!("{at}.port"), "sidecar: the egress listener with empty port should be the last listener in the list");
                }
                catch_all = true;
            }
            Some(port) => validate_egress_port(&at, listener, port, &mut ports, &mut sockets, out),
        }
        validate_egress_hosts(&at, namespace, listener, out);
    }

    if let Some(policy) = &sc.outbound_traffic_policy {
        validate_outbound_policy("spec.outboundTrafficPolicy", policy, out);
    }
}

fn validate_ingress(at: &str, l: &IngressListener, ports: &mut BTreeSet<u32>, out: &mut Diags) {
    let Some(port) = &l.port else {
        out.error(
            format!("{at}.port"),
            "sidecar: port is required for ingress listeners",
        );
        return;
    };
    validate_port_fields(at, port, out);
    out.check(
        format!("{at}.port.number"),
        validate_port(port.number.into()),
    );
    if !l.bind.is_empty() {
        out.check(format!("{at}.bind"), validate_ip(&l.bind));
    }
    if !ports.insert(port.number) {
        out.error(
            format!("{at}.port.number"),
            "sidecar: ports on IP bound listeners must be unique",
        );
    }
    if !l.default_endpoint.is_empty() {
        validate_default_endpoint(&format!("{at}.defaultEndpoint"), &l.default_endpoint, out);
    }
    if let Some(tls) = &l.tls {
        validate_ingress_tls(&format!("{at}.tls"), tls, port, out);
    }
    if let Some(pool) = &l.connection_pool {
        validate_connection_pool(&format!("{at}.connectionPool"), pool, out);
        if pool.http.is_some() && !Protocol::parse(&port.protocol).is_http() {
            out.warning(
                format!("{at}.connectionPool.http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {} ({:?}) but its protocol is not HTTP ({}); only TCP settings will apply",
                    port.number, port.name, port.protocol
                ),
            );
        }
    }
}

/// What ingress and egress ports share: an optional port name, a known protocol (empty means
/// sniffed), and no `targetPort`.
fn validate_port_fields(at: &str, port: &Port, out: &mut Diags) {
    if port.target_port.is_some_and(|p| p > 0) {
        out.error(
            format!("{at}.port.targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    if !port.name.is_empty() {
        out.check(format!("{at}.port.name"), validate_port_name(&port.name));
    }
    if !port.protocol.is_empty() && Protocol::parse(&port.protocol) == Protocol::Unsupported {
        out.error(
            format!("{at}.port.protocol"),
            format!("unsupported protocol: {}", port.protocol),
        );
    }
}

/// Where inbound traffic is forwarded: a loopback or wildcard address with a port, or a socket.
fn validate_default_endpoint(at: &str, endpoint: &str, out: &mut Diags) {
    if let Some(path) = endpoint.strip_prefix(UNIX_PREFIX) {
        out.check(at, validate_unix_address(path));
        return;
    }
    let (host, port) = match split_host_port(endpoint) {
        Ok(parts) => parts,
        Err(e) => return out.error(at, e),
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.error(
            at,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<i64>() {
        Ok(n) => out.check(at, validate_port(n)),
        Err(_) => out.error(
            at,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

/// TLS terminated by the sidecar for callers outside the mesh: file certificates only, and
/// only on TLS/HTTPS ports.
fn validate_ingress_tls(at: &str, tls: &ServerTls, port: &Port, out: &mut Diags) {
    let unsupported = [
        (
            "subjectAltNames",
            !tls.subject_alt_names.is_empty(),
            "sidecar: subjectAltNames is not supported in ingress tls",
        ),
        (
            "httpsRedirect",
            tls.https_redirect,
            "sidecar: httpsRedirect is not supported",
        ),
        (
            "credentialName",
            !tls.credential_name.is_empty(),
            "sidecar: credentialName is not currently supported",
        ),
        (
            "credentialNames",
            !tls.credential_names.is_empty(),
            "sidecar: credentialNames is not currently supported",
        ),
        (
            "tlsCertificates",
            !tls.tls_certificates.is_empty(),
            "sidecar: tls_certificates is not currently supported",
        ),
    ];
    for (field, set, message) in unsupported {
        if set {
            out.error(format!("{at}.{field}"), message);
        }
    }
    let mode = match tls.mode {
        ServerTlsMode::IstioMutual => Some("ISTIO_MUTUAL"),
        ServerTlsMode::AutoPassthrough => Some("AUTO_PASSTHROUGH"),
        _ => None,
    };
    if let Some(mode) = mode {
        out.error(
            format!("{at}.mode"),
            format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
        );
    }
    if !Protocol::parse(&port.protocol).is_tls() {
        out.error(
            at,
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }
    validate_tls(at, tls, out);
}

fn validate_egress_port(
    at: &str,
    l: &EgressListener,
    port: &Port,
    ports: &mut BTreeSet<u32>,
    sockets: &mut BTreeSet<String>,
    out: &mut Diags,
) {
    validate_port_fields(at, port, out);
    if port.number == 0 {
        // Port 0 is how a listener on a Unix domain socket is written.
        match l.bind.strip_prefix(UNIX_PREFIX) {
            None => out.error(
                format!("{at}.bind"),
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
            Some(path) => out.check(format!("{at}.bind"), validate_unix_address(path)),
        }
        if !matches!(l.capture_mode, CaptureMode::Default | CaptureMode::None) {
            out.error(
                format!("{at}.captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
        if !sockets.insert(l.bind.clone()) {
            out.error(
                format!("{at}.bind"),
                "sidecar: unix domain socket values for listeners must be unique",
            );
        }
    } else {
        out.check(
            format!("{at}.port.number"),
            validate_port(port.number.into()),
        );
        if !l.bind.is_empty() {
            out.check(format!("{at}.bind"), validate_ip(&l.bind));
        }
        if !ports.insert(port.number) {
            out.error(
                format!("{at}.port.number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
    }
}

/// `hosts`: at least one, each `namespace/dnsName`; repeats are warnings, as in istiod.
fn validate_egress_hosts(at: &str, namespace: &str, l: &EgressListener, out: &mut Diags) {
    if l.hosts.is_empty() {
        out.error(
            format!("{at}.hosts"),
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    let mut by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (j, host) in l.hosts.iter().enumerate() {
        let hat = format!("{at}.hosts[{j}]");
        if let Some((ns, name)) = host.split_once('/') {
            let names = by_namespace
                .entry(if ns == "." { namespace } else { ns })
                .or_default();
            let repeated = if name == "*" {
                !names.is_empty()
            } else {
                names.contains(name) || names.contains("*")
            };
            if repeated {
                out.warning(&hat, format!("duplicated egress host: {host}"));
            }
            names.insert(name);
        }
        validate_egress_host(&hat, host, out);
    }
    if by_namespace
        .get("*")
        .is_some_and(|names| names.contains("*"))
        && by_namespace.len() != 1
    {
        out.warning(
            format!("{at}.hosts"),
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

/// istiod's `ValidateNamespaceSlashWildcardHostname` for sidecars: the namespace is `*`, `.`,
/// `~` or a DNS label; the host is `*`, `*.suffix` or an FQDN (no short names, no IPs).
fn validate_egress_host(at: &str, host: &str, out: &mut Diags) {
    let Some((ns, name)) = host.split_once('/') else {
        return out.error(at, "host must be of form namespace/dnsName");
    };
    if ns.is_empty() || name.is_empty() {
        out.error(
            at,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    if !matches!(ns, "*" | "." | "~") && !is_dns1123_label(ns) {
        out.error(at, format!("invalid namespace value {ns:?} in sidecar"));
    }
    if name != "*" && !name.contains('.') {
        out.error(
            at,
            format!("short names (non FQDN) are not allowed: {name:?}"),
        );
    }
    out.check(at, validate_wildcard_domain(name));
    out.check(at, validate_partial_wildcard(name));
}

/// An egress proxy replaces passthrough, so it only makes sense with ALLOW_ANY.
fn validate_outbound_policy(at: &str, policy: &OutboundTrafficPolicy, out: &mut Diags) {
    let Some(proxy) = &policy.egress_proxy else {
        return;
    };
    let pat = format!("{at}.egressProxy");
    if policy.mode() != OutboundTrafficMode::AllowAny {
        out.error(
            pat,
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        return;
    }
    let fqdn = validate_fqdn(&proxy.host);
    let host_ok = fqdn.is_ok();
    out.check(format!("{pat}.host"), fqdn);
    if proxy.port.is_none() {
        out.error(
            format!("{pat}.port"),
            "sidecar: egress_proxy port must be non-nil",
        );
        return;
    }
    // The destination checks repeat the host's; keep the FQDN error alone.
    let mut destination = Diags::default();
    validate_destination(&pat, proxy, &mut destination);
    let host_field = format!("{pat}.host");
    out.0.extend(
        destination
            .0
            .into_iter()
            .filter(|d| host_ok || d.field != host_field),
    );
}
