//! VirtualService: istiod's `ValidateVirtualService`, its TLS and TCP routes and the
//! destinations all routes share. HTTP routes are in [`super::http_route`], the unreachable-rule
//! warnings in [`super::unreachable`].

use crate::config::istio::virtual_service::{
    Destination, HeaderOperations, Headers, L4MatchAttributes, RouteDestination,
    TlsMatchAttributes, TlsRoute, VirtualService,
};
use std::collections::BTreeMap;

use super::common::{
    Diags, is_dns1123_label, is_ip, validate_export_to, validate_gateway_names,
    validate_header_value, validate_ip_subnet, validate_labels, validate_port,
    validate_subset_name, validate_wildcard_domain,
};
use super::{http_route, unreachable};
use crate::model::host;

/// The name of the implicit gateway of every sidecar.
const MESH: &str = "mesh";

pub fn validate(namespace: &str, vs: &VirtualService, out: &mut Diags) {
    // A VirtualService without hosts can only be used as a delegate of another one.
    let delegate = vs.hosts.is_empty();
    if delegate {
        for (field, set) in [
            ("gateways", !vs.gateways.is_empty()),
            ("tls", !vs.tls.is_empty()),
            ("tcp", !vs.tcp.is_empty()),
        ] {
            if set {
                out.error(
                    format!("spec.{field}"),
                    format!("delegate virtual service (no hosts) must have no {field} specified"),
                );
            }
        }
    }
    validate_gateway_names(out, "spec.gateways", &vs.gateways);
    let applies_to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == MESH);
    let applies_to_mesh = !applies_to_gateway;

    if !applies_to_gateway {
        for (i, route) in vs.http.iter().enumerate() {
            for (j, m) in route.matches.iter().enumerate() {
                for (field, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                ] {
                    for key in map.keys().filter(|k| http_route::is_jwt_claim(k)) {
                        out.error(
                            format!("spec.http[{i}].match[{j}].{field}.{key}"),
                            format!("JWT claim based routing (key: {key}) is only supported for gateway, found no gateways"),
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    let sni = vs
        .tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    for (i, host) in vs.hosts.iter().enumerate() {
        let result = if applies_to_gateway {
            validate_gateway_bound_host(sni, host)
        } else {
            validate_wildcard_domain(host)
        };
        match result {
            Err(e) if !is_ip(host) => {
                out.error(format!("spec.hosts[{i}]"), e);
                all_hosts_valid = false;
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                out.error(
                    format!("spec.hosts[{i}]"),
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            _ => {}
        }
    }
    if all_hosts_valid {
        for (i, a) in vs.hosts.iter().enumerate() {
            for b in &vs.hosts[i + 1..] {
                if host::overlap(a, b) {
                    out.error(
                        format!("spec.hosts[{i}]"),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        out.error(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route::validate(&format!("spec.http[{i}]"), route, delegate, out);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        validate_tls_route(
            &format!("spec.tls[{i}]"),
            route,
            vs,
            applies_to_gateway,
            out,
        );
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        for (j, m) in route.matches.iter().enumerate() {
            validate_l4_match(&format!("{at}.match[{j}]"), m, out);
        }
        if route.route.is_empty() {
            out.error(format!("{at}.route"), "TCP route is required");
        }
        validate_route_destinations(&format!("{at}.route"), &route.route, out);
    }
    validate_export_to(out, "spec.exportTo", namespace, &vs.export_to, false);
    unreachable::analyze(vs, out);
}

/// Hosts of a VirtualService bound to gateways; SNI routes may name istiod's generated
/// `outbound_.<port>_._.<host>` names.
fn validate_gateway_bound_host(sni: bool, host: &str) -> Result<(), String> {
    if sni && host.split('.').next() == Some("outbound_") {
        let rest = &host["outbound_".len()..];
        let ok = rest
            .strip_prefix('.')
            .is_some_and(|r| r.starts_with(|c: char| ('0'..='8').contains(&c)));
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "domain name {host:?} invalid (label \"outbound_\" invalid)"
            ))
        };
    }
    validate_wildcard_domain(host)
}

fn validate_tls_route(
    at: &str,
    route: &TlsRoute,
    vs: &VirtualService,
    applies_to_gateway: bool,
    out: &mut Diags,
) {
    if route.matches.is_empty() {
        out.error(
            format!("{at}.match"),
            "TLS route must have at least one match condition",
        );
    }
    for (j, m) in route.matches.iter().enumerate() {
        validate_tls_match(&format!("{at}.match[{j}]"), m, vs, applies_to_gateway, out);
    }
    if route.route.is_empty() {
        out.error(format!("{at}.route"), "TLS route is required");
    }
    validate_route_destinations(&format!("{at}.route"), &route.route, out);
}

fn validate_tls_match(
    at: &str,
    m: &TlsMatchAttributes,
    vs: &VirtualService,
    applies_to_gateway: bool,
    out: &mut Diags,
) {
    if m.sni_hosts.is_empty() {
        out.error(
            format!("{at}.sniHosts"),
            "TLS match must have at least one SNI host",
        );
    }
    for (k, sni) in m.sni_hosts.iter().enumerate() {
        let field = format!("{at}.sniHosts[{k}]");
        let result = if applies_to_gateway {
            validate_gateway_bound_host(true, sni)
        } else {
            validate_wildcard_domain(sni)
        };
        if let Err(e) = result {
            if is_ip(sni) {
                out.warning(field, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
            } else {
                out.error(field, e);
            }
            continue;
        }
        if !vs.hosts.iter().any(|h| host::matches(h, sni)) {
            out.error(
                field,
                format!("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]", vs.hosts.join(", ")),
            );
        }
    }
    validate_l4_fields(
        at,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        out,
    );
}

fn validate_l4_match(at: &str, m: &L4MatchAttributes, out: &mut Diags) {
    validate_l4_fields(
        at,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        out,
    );
}

fn validate_l4_fields(
    at: &str,
    destination_subnets: &[String],
    port: u32,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
    out: &mut Diags,
) {
    for (k, subnet) in destination_subnets.iter().enumerate() {
        out.check(
            format!("{at}.destinationSubnets[{k}]"),
            validate_ip_subnet(subnet),
        );
    }
    validate_source_match(at, port, source_labels, gateways, source_namespace, out);
}

/// The fields every match kind (HTTP, TCP, TLS) shares: port, source labels, gateways and
/// source namespace.
pub fn validate_source_match(
    at: &str,
    port: u32,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
    out: &mut Diags,
) {
    if port != 0 {
        out.check(format!("{at}.port"), validate_port(port.into()));
    }
    out.check(format!("{at}.sourceLabels"), validate_labels(source_labels));
    validate_gateway_names(out, &format!("{at}.gateways"), gateways);
    if !source_namespace.is_empty() && !is_dns1123_label(source_namespace) {
        out.error(
            format!("{at}.sourceNamespace"),
            format!("sourceNamespace match {source_namespace} is invalid"),
        );
    }
}

/// A route's destination, mirror or mirrors entry.
pub fn validate_destination(at: &str, d: &Destination, out: &mut Diags) {
    if d.host.is_empty() {
        out.error(format!("{at}.host"), "destination host is required");
    } else if d.host == "*" {
        out.error(
            format!("{at}.host"),
            format!("invalid destination host {}", d.host),
        );
    } else {
        out.check(format!("{at}.host"), validate_wildcard_domain(&d.host));
    }
    if !d.subset.is_empty() {
        out.check(format!("{at}.subset"), validate_subset_name(&d.subset));
    }
    if let Some(port) = d.port {
        out.check(
            format!("{at}.port.number"),
            validate_port(port.number.into()),
        );
    }
}

/// Weights are shares of 100: each at least 0, and with several destinations they must add up
/// to 100. A single destination may omit its weight (it gets everything).
///
/// Stricter than istiod 1.2x+, which only rejects a total of 0 and lets Envoy normalize.
pub fn validate_weights(at: &str, weights: &[i32], out: &mut Diags) {
    let mut total: i64 = 0;
    for (i, w) in weights.iter().enumerate() {
        if *w < 0 {
            out.error(format!("{at}[{i}].weight"), format!("weight {w} < 0"));
        }
        total += i64::from(*w);
    }
    if weights.len() > 1 && total != 100 {
        out.error(at, format!("total destination weight = {total} != 100"));
    }
}

fn validate_route_destinations(at: &str, route: &[RouteDestination], out: &mut Diags) {
    for (i, d) in route.iter().enumerate() {
        validate_destination(&format!("{at}[{i}].destination"), &d.destination, out);
    }
    validate_weights(at, &route.iter().map(|d| d.weight).collect::<Vec<_>>(), out);
}

/// Header rewrites: Envoy refuses to touch pseudo-headers and `Host` (except setting the
/// authority on requests, which becomes a host rewrite).
pub fn validate_header_operations(at: &str, headers: &Headers, out: &mut Diags) {
    let ops = |o: &Option<HeaderOperations>| o.clone().unwrap_or_default();
    let (request, response) = (ops(&headers.request), ops(&headers.response));
    for (kind, ops, is_request) in [("request", &request, true), ("response", &response, false)] {
        for (verb, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let field = format!("{at}.{kind}.{verb}.{name}");
                let result = if is_request {
                    check_request_header_name(name)
                } else {
                    check_header_operation_name(name)
                };
                out.check(&field, result);
                out.check(field, validate_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            out.check(
                format!("{at}.{kind}.remove[{i}]"),
                check_header_operation_name(name),
            );
        }
    }
}

pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn check_request_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if (name.starts_with(':') || name.eq_ignore_ascii_case("host")) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

fn check_header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}
