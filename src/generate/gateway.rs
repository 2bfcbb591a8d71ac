//! Gateway proxies (node type `router`): listeners per Gateway server port, and the route
//! configs `http.<port>` whose virtual hosts come from the VirtualServices bound to them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_match::PathSpecifier, virtual_host::TlsRequirementType, DirectResponseAction, Route, RouteMatch,
};

use super::listener::http_listener;
use super::names;
use super::route_config::{self, EncodedRoutes, Naming, RouteConfigOptions, VirtualHostParts};
use super::virtual_service;
use crate::config::istio::gateway::Server;
use crate::config::istio::{Gateway, VirtualService};
use crate::index::services::selects;
use crate::index::{Index, Typed};
use crate::model::host::intersect;
use crate::model::Proxy;
use crate::xds::{Resource, ResourceMap};

/// The Gateways whose selector matches the proxy's labels (from any namespace, as istiod
/// does by default), in namespace/name order.
pub fn select<'a>(index: &'a Index, proxy: &Proxy) -> Vec<&'a Typed<Gateway>> {
    index.gateways.iter().filter(|g| selects(&g.spec().selector, &proxy.labels)).collect()
}

/// What a set of Gateways makes: listeners and route configs.
#[derive(Debug, Default)]
pub struct GatewayConfig {
    pub listeners: ResourceMap,
    pub routes: ResourceMap,
}

pub fn build(index: &Index, proxy: &Proxy, gateways: &[&Typed<Gateway>]) -> GatewayConfig {
    // Servers merged by port, as istiod merges them.
    let mut ports: BTreeMap<u32, Vec<(&Typed<Gateway>, &Server)>> = BTreeMap::new();
    for gw in gateways {
        for server in &gw.spec().servers {
            ports.entry(server.port.number).or_default().push((gw, server));
        }
    }
    let mut out = GatewayConfig::default();
    for (port, servers) in ports {
        let http: Vec<_> = servers
            .into_iter()
            // Other servers are not served yet; index::references warns about them once.
            .filter(|(_, s)| s.is_plain_http())
            .collect();
        if http.is_empty() {
            continue;
        }
        let routes = http_route_config(index, proxy, port, &http);
        let route_name = routes.name.clone();
        let bind = http.iter().map(|(_, s)| s.bind.as_str()).find(|b| !b.is_empty()).unwrap_or("0.0.0.0");
        let listener_name = names::listener(bind, port);
        let listener = http_listener(&listener_name, bind, port, &route_name, &format!("outbound_{bind}_{port}"));
        out.routes.insert(route_name, Arc::new(routes));
        out.listeners.insert(listener_name.clone(), Arc::new(Resource::encode(listener_name, &listener)));
    }
    out
}

/// `http.<port>`: a virtual host per host name served on the port, holding the routes of every
/// VirtualService bound to a Gateway on the port for that host.
fn http_route_config(index: &Index, proxy: &Proxy, port: u32, servers: &[(&Typed<Gateway>, &Server)]) -> Resource {
    /// A VirtualService bound through one Gateway, translated and encoded once however many
    /// hosts use it.
    struct Bound<'a> {
        vs: &'a Typed<VirtualService>,
        gateway: String,
    }
    let mut bound: Vec<Bound> = Vec::new();
    // Host → (https redirect, indexes into `bound`). Hosts borrow from the specs where they can.
    let mut hosts: BTreeMap<Cow<str>, (bool, Vec<usize>)> = BTreeMap::new();
    for (gw, server) in servers {
        let https_redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
        let gateway = gw.ns_name();
        let services = index.virtual_services_by_gateway.get(&gateway).map(Vec::as_slice).unwrap_or_default();
        for vs in services {
            let mut slot = None;
            for vs_host in &vs.spec().hosts {
                let vs_host = index.mesh.fqdn(vs_host, vs.namespace());
                for server_host in &server.hosts {
                    let (ns_filter, pattern) = split_server_host(server_host);
                    let ns_ok = match ns_filter {
                        "*" => true,
                        "." => vs.namespace() == gw.namespace(),
                        ns => vs.namespace() == ns,
                    };
                    let Some(host) = ns_ok.then(|| intersect(&vs_host, pattern)).flatten() else { continue };
                    // `intersect` returns one of its arguments whole: borrow the server's pattern,
                    // or keep the VirtualService host as it is (borrowed unless it was resolved).
                    let host = if std::ptr::eq(host, pattern) { Cow::Borrowed(pattern) } else { vs_host.clone() };
                    let i = *slot.get_or_insert_with(|| {
                        bound.push(Bound { vs, gateway: gateway.clone() });
                        bound.len() - 1
                    });
                    let entry = hosts.entry(host).or_insert((https_redirect, Vec::new()));
                    entry.0 |= https_redirect;
                    // The same VirtualService through two Gateways on this port counts once.
                    if !entry.1.iter().any(|&j| Arc::ptr_eq(&bound[j].vs.entry, &vs.entry)) {
                        entry.1.push(i);
                    }
                }
            }
        }
    }

    let encoded: Vec<EncodedRoutes> = bound
        .iter()
        .map(|b| EncodedRoutes::encode(&virtual_service_routes(index, proxy, b.vs, port, &b.gateway)))
        .collect();
    let blackhole = EncodedRoutes::encode(&[blackhole_route()]);
    let mut virtual_hosts = Vec::with_capacity(hosts.len().max(1));
    for (_, members) in hosts.values_mut() {
        members.sort_by(|&a, &b| {
            let (a, b) = (&bound[a].vs, &bound[b].vs);
            (a.namespace(), a.name()).cmp(&(b.namespace(), b.name()))
        });
    }
    for (host, (https_redirect, members)) in &hosts {
        virtual_hosts.push(VirtualHostParts {
            naming: Naming::HostPort { host, port },
            routes: members.iter().map(|&i| &encoded[i]).collect(),
            require_tls: if *https_redirect { TlsRequirementType::All as i32 } else { 0 },
        });
    }
    if virtual_hosts.is_empty() {
        // istiod's answer on a port with no routes: 404 for everything.
        virtual_hosts.push(VirtualHostParts {
            naming: Naming::Explicit { name: format!("blackhole:{port}"), domains: vec!["*".into()] },
            routes: vec![&blackhole],
            require_tls: 0,
        });
    }
    let options = RouteConfigOptions {
        validate_clusters: false,
        // Envoy's default (4 KiB) would NACK larger `directResponse` bodies; istiod sets 1 MiB.
        max_direct_response_body_size_bytes: 1024 * 1024,
    };
    route_config::encode(&names::gateway_http_routes(port), &virtual_hosts, &options)
}

fn virtual_service_routes(index: &Index, proxy: &Proxy, vs: &Typed<VirtualService>, port: u32, gateway: &str) -> Vec<Route> {
    // `match.gateways` may name the gateway as `ns/name` or, from its own namespace, `name`.
    let mut gateways = vec![gateway.to_string()];
    if let Some(short) = gateway.strip_prefix(&format!("{}/", vs.namespace())) {
        gateways.push(short.to_string());
    }
    let source = virtual_service::Source { namespace: vs.namespace(), name: vs.name(), spec: vs.spec() };
    virtual_service::routes(index, proxy, &source, port, &gateways)
}

/// Splits a Gateway server host `ns/host` into its namespace filter and host pattern.
fn split_server_host(host: &str) -> (&str, &str) {
    host.split_once('/').unwrap_or(("*", host))
}

fn blackhole_route() -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() }),
        action: Some(Action::DirectResponse(DirectResponseAction { status: 404, ..Default::default() })),
        ..Default::default()
    }
}
