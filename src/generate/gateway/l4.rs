//! TCP proxying at a gateway, from the VirtualServices bound to it (istiod's
//! `buildGatewayNetworkFiltersFromTCPRoutes` and `…FromTLSRoutes`):
//!
//! - a TCP server, or a TLS server that terminates: the first `tcp` route (VirtualServices in
//!   namespace/name order) whose match names the server's port (or none) and the Gateway (or
//!   none), of a VirtualService with a host the server exposes;
//! - a `PASSTHROUGH` server: one chain per matching `tls` route match, selected by its
//!   `sniHosts`, the TLS left untouched.

use envoy_types::pb::envoy::config::listener::v3::Filter;

use super::servers::Bound;
use super::split_server_host;
use crate::config::istio::VirtualService;
use crate::config::istio::virtual_service::RouteDestination;
use crate::generate::names;
use crate::generate::virtual_service::cluster_for;
use crate::index::{Index, Typed, gateway_ref};
use crate::model::host::overlap;

/// The TCP proxy for a server's connections, from the first `tcp` route that applies.
pub fn tcp_route(index: &Index, bound: &Bound) -> Option<Filter> {
    let port = bound.server.port.number;
    bound_virtual_services(index, bound).find_map(|vs| {
        vs.spec()
            .tcp
            .iter()
            .filter(|r| !r.route.is_empty())
            .find(|r| {
                r.matches.is_empty()
                    || r.matches
                        .iter()
                        .any(|m| l4_match(vs, bound, m.port, &m.gateways))
            })
            .map(|r| proxy_to(index, vs, &r.route, port))
    })
}

/// A chain a `tls` route match makes for a passthrough server.
pub struct SniRoute {
    pub sni_hosts: Vec<String>,
    pub proxy: Filter,
    /// `VirtualService ns/name` and `spec.tls[i].match[j]`, for warnings.
    pub object: String,
    pub field: String,
}

/// The chain of each `tls` route match that applies to a passthrough server.
pub fn tls_routes(index: &Index, bound: &Bound) -> Vec<SniRoute> {
    let port = bound.server.port.number;
    let mut out = Vec::new();
    for vs in bound_virtual_services(index, bound) {
        for (i, route) in vs
            .spec()
            .tls
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.route.is_empty())
        {
            for (j, m) in route
                .matches
                .iter()
                .enumerate()
                .filter(|(_, m)| l4_match(vs, bound, m.port, &m.gateways))
            {
                out.push(SniRoute {
                    sni_hosts: m.sni_hosts.clone(),
                    proxy: proxy_to(index, vs, &route.route, port),
                    object: format!("VirtualService {}/{}", vs.namespace(), vs.name()),
                    field: format!("spec.tls[{i}].match[{j}].sniHosts"),
                });
            }
        }
    }
    out
}

/// The VirtualServices bound to the server's Gateway that have a host the server exposes
/// (istiod's `pickMatchingGatewayHosts`), in namespace/name order.
fn bound_virtual_services<'a>(
    index: &'a Index,
    bound: &'a Bound,
) -> impl Iterator<Item = &'a Typed<VirtualService>> {
    let services = index
        .virtual_services_by_gateway
        .get(&bound.gateway.ns_name())
        .map(Vec::as_slice)
        .unwrap_or_default();
    services.iter().filter(move |vs| {
        vs.spec().hosts.iter().any(|host| {
            let host = index.mesh.fqdn(host, vs.namespace());
            bound.server.hosts.iter().any(|server_host| {
                let (ns, pattern) = split_server_host(server_host);
                let ns_ok = match ns {
                    "*" => true,
                    "." => vs.namespace() == bound.gateway.namespace(),
                    ns => vs.namespace() == ns,
                };
                ns_ok && overlap(pattern, &host)
            })
        })
    })
}

/// Whether a route match's `port` and `gateways` select the server (istiod's `l4SingleMatch`).
fn l4_match(vs: &Typed<VirtualService>, bound: &Bound, port: u32, gateways: &[String]) -> bool {
    let gateway = bound.gateway.ns_name();
    (port == 0 || port == bound.server.port.number)
        && (gateways.is_empty()
            || gateways
                .iter()
                .any(|g| gateway_ref(g, vs.namespace()) == gateway))
}

/// A TCP proxy to the route's destinations: one cluster, or weighted clusters. Unknown hosts go
/// to `BlackHoleCluster` (index::references names them).
fn proxy_to(
    index: &Index,
    vs: &Typed<VirtualService>,
    route: &[RouteDestination],
    port: u32,
) -> Filter {
    crate::generate::listener::tcp_route(route, |d| {
        cluster_for(index, &d.destination, vs.namespace(), port)
            .unwrap_or_else(|| names::BLACKHOLE_CLUSTER.into())
    })
}
