//! The filter chains of an outbound TCP or TLS listener, from the `tcp` and `tls` routes of
//! the first mesh VirtualService for the service (istiod's `buildSidecarOutboundTCPTLSFilterChainOpts`):
//!
//! - `tls` routes: a chain per match, selected by SNI (`server_names` = `sniHosts`), to its
//!   destinations; the listener then needs the TLS inspector;
//! - `tcp` routes: a match with `destinationSubnets` gets a chain selected by destination
//!   address; the first route that matches without subnets is the listener's default chain;
//! - without either, the default chain goes to the service's own cluster.
//!
//! A match applies to this proxy when its `port` is the listener's (or unset), its
//! `sourceLabels` select the proxy, its `sourceNamespace` is the proxy's, and its `gateways`
//! (if any) include `mesh`. Envoy rejects a listener with two equal chain matches: the first of
//! equal matches wins, as istiod keeps the first route.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::super::names;
use super::super::route::MESH_GATEWAY;
use super::super::virtual_service::cluster_for;
use super::filters::tcp_proxy;
use crate::config::istio::virtual_service::RouteDestination;
use crate::index::scope::{MeshVirtualService, Scope};
use crate::index::services::selects;
use crate::index::{Index, Service};
use crate::model::Proxy;

/// The chains, and whether any selects by SNI (the listener then needs `tls_inspector`).
pub struct Chains {
    pub chains: Vec<FilterChain>,
    pub by_sni: bool,
}

pub fn chains(index: &Index, proxy: &Proxy, scope: &Scope, service: &Service, port: u16) -> Chains {
    let own = names::outbound_cluster(port, "", &service.hostname);
    let Some(vs) = scope.virtual_services.iter().find(|vs| {
        vs.applies_to(&service.hostname) && (!vs.spec().tcp.is_empty() || !vs.spec().tls.is_empty())
    }) else {
        return Chains {
            chains: vec![chain(None, tcp_proxy(&own))],
            by_sni: false,
        };
    };
    let spec = vs.spec();
    let mut out: Vec<FilterChain> = Vec::new();
    let push = |m: Option<FilterChainMatch>, filter, out: &mut Vec<FilterChain>| {
        if !out.iter().any(|c| c.filter_chain_match == m) {
            out.push(chain(m, filter));
        }
    };

    for route in &spec.tls {
        for m in route.matches.iter().filter(|m| {
            applies(
                proxy,
                port,
                m.port,
                &m.source_labels,
                &m.source_namespace,
                &m.gateways,
            )
        }) {
            let mut names = m.sni_hosts.clone();
            names.sort();
            let fcm = FilterChainMatch {
                server_names: names,
                prefix_ranges: cidrs(&m.destination_subnets),
                ..Default::default()
            };
            push(Some(fcm), proxy_to(index, vs, &route.route, port), &mut out);
        }
    }
    let by_sni = !out.is_empty();

    let mut default = None;
    for route in &spec.tcp {
        let matching: Vec<_> = route
            .matches
            .iter()
            .filter(|m| {
                applies(
                    proxy,
                    port,
                    m.port,
                    &m.source_labels,
                    &m.source_namespace,
                    &m.gateways,
                )
            })
            .collect();
        if route.matches.is_empty() {
            default.get_or_insert(route);
            continue;
        }
        for m in matching {
            if m.destination_subnets.is_empty() {
                default.get_or_insert(route);
            } else {
                let fcm = FilterChainMatch {
                    prefix_ranges: cidrs(&m.destination_subnets),
                    ..Default::default()
                };
                push(Some(fcm), proxy_to(index, vs, &route.route, port), &mut out);
            }
        }
    }
    let fallback = default
        .map(|r| proxy_to(index, vs, &r.route, port))
        .unwrap_or_else(|| tcp_proxy(&own));
    push(None, fallback, &mut out);
    Chains {
        chains: out,
        by_sni,
    }
}

fn applies(
    proxy: &Proxy,
    listener_port: u16,
    port: u32,
    source_labels: &std::collections::BTreeMap<String, String>,
    source_namespace: &str,
    gateways: &[String],
) -> bool {
    (port == 0 || port == u32::from(listener_port))
        && selects(source_labels, &proxy.labels)
        && (source_namespace.is_empty() || source_namespace == proxy.namespace)
        && (gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY))
}

/// A TCP proxy to the route's destinations: one cluster, or weighted clusters. Unknown hosts go
/// to `BlackHoleCluster` (index::references names them).
fn proxy_to(
    index: &Index,
    vs: &MeshVirtualService,
    route: &[RouteDestination],
    port: u16,
) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    crate::generate::listener::tcp_route(route, |d| {
        cluster_for(index, &d.destination, vs.namespace(), u32::from(port))
            .unwrap_or_else(|| names::BLACKHOLE_CLUSTER.into())
    })
}

fn chain(
    m: Option<FilterChainMatch>,
    filter: envoy_types::pb::envoy::config::listener::v3::Filter,
) -> FilterChain {
    FilterChain {
        filter_chain_match: m,
        filters: vec![filter],
        ..Default::default()
    }
}

/// `10.0.0.0/16` or a bare IP as Envoy's CIDR ranges; validation has checked the syntax.
pub(super) fn cidrs(subnets: &[String]) -> Vec<CidrRange> {
    subnets
        .iter()
        .filter_map(|s| {
            let (ip, len) = match s.split_once('/') {
                Some((ip, len)) => (ip, len.parse::<u32>().ok()?),
                None => (s.as_str(), if s.contains(':') { 128 } else { 32 }),
            };
            Some(CidrRange {
                address_prefix: ip.to_string(),
                prefix_len: Some(UInt32Value { value: len }),
            })
        })
        .collect()
}
