//! Gateway proxies (node type `router`): a listener per Gateway server port, the route configs
//! of its HTTP servers, and the Secrets (gateway credentials) its TLS servers refer to.
//!
//! - Plain-text HTTP servers of a port share the route config `http.<port>`, whose virtual
//!   hosts come from the VirtualServices bound to them (`httpsRedirect` hosts answer with a
//!   redirect to HTTPS);
//! - each HTTPS server that terminates TLS is a filter chain selected by SNI (its hosts; `*`
//!   selects every name) with its own route config `https.<port>.<portName>.<gateway>.<ns>`;
//! - TLS servers that terminate TLS, and TCP servers, proxy to the first `tcp` route;
//!   `PASSTHROUGH` servers are a chain per `tls` route match, by its `sniHosts` (`l4`);
//! - `AUTO_PASSTHROUGH`, certificates from files and `caCertCredentialName` are not served
//!   (`index::references` says so once per revision).
//!
//! Envoy rejects a listener with two chains for one SNI name, and keeps warming one whose chain
//! waits for a secret that never comes: such chains are skipped with a warning naming the
//! Gateway, the server and the cause.

mod l4;
mod servers;
#[cfg(test)]
mod tests;
mod tls;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteMatch, route::Action, route_match::PathSpecifier,
    virtual_host::TlsRequirementType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

use super::listener::{downstream_tls, http_connection_manager, listener};
use super::names;
use super::route_config::{self, EncodedRoutes, Naming, RouteConfigOptions, VirtualHostParts};
use super::virtual_service;
use crate::config::istio::gateway::{Server, ServerTlsMode};
use crate::config::istio::{Gateway, VirtualService};
use crate::index::services::selects;
use crate::index::{Index, Typed};
use crate::model::host::intersect;
use crate::model::{Protocol, Proxy};
use crate::xds::{Resource, ResourceMap};
use servers::{Bound, PortKind, PortServers};

/// The Gateways whose selector matches the proxy's labels (from any namespace, as istiod
/// does by default), in namespace/name order.
pub fn select<'a>(index: &'a Index, proxy: &Proxy) -> Vec<&'a Typed<Gateway>> {
    index
        .gateways
        .iter()
        .filter(|g| selects(&g.spec().selector, &proxy.labels))
        .collect()
}

/// What a set of Gateways makes: listeners, route configs, and the Secrets their TLS servers
/// refer to (`kubernetes://<credentialName>`, `…-cacert`).
#[derive(Debug, Default)]
pub struct GatewayConfig {
    pub listeners: ResourceMap,
    pub routes: ResourceMap,
    pub secrets: ResourceMap,
}

pub fn build(index: &Index, proxy: &Proxy, gateways: &[&Typed<Gateway>]) -> GatewayConfig {
    let mut out = GatewayConfig::default();
    for (port, merged) in servers::merge(gateways) {
        let bind = merged.bind().to_string();
        let listener_name = names::listener(&bind, port);
        let stat_prefix = format!("outbound_{bind}_{port}");
        let chains = match merged.kind {
            PortKind::Http => {
                let routes = http_route_config(
                    index,
                    proxy,
                    port,
                    &merged.servers,
                    &names::gateway_http_routes(port),
                    false,
                );
                let hcm = http_connection_manager(&routes.name, &stat_prefix);
                out.routes.insert(routes.name.clone(), Arc::new(routes));
                vec![FilterChain {
                    filters: vec![hcm],
                    ..Default::default()
                }]
            }
            PortKind::Tcp => tcp_chains(index, &merged),
            PortKind::Tls => tls_chains(index, proxy, &merged, &stat_prefix, &mut out),
        };
        // istiod sends no listener without chains: it would refuse every connection anyway.
        if chains.is_empty() {
            continue;
        }
        let listener = listener(&listener_name, &bind, port, chains);
        out.listeners.insert(
            listener_name.clone(),
            Arc::new(Resource::encode(listener_name, &listener)),
        );
    }
    // A gateway's CDS has every service's clusters; all its listeners are the client side.
    let workload = crate::index::security::Workload {
        namespace: &proxy.namespace,
        labels: &proxy.labels,
    };
    let plan = super::telemetry::plan(index, workload, &|_| true);
    super::telemetry::decorate(&mut out.listeners, &plan, |_| {
        crate::index::telemetry::Side::Client
    });
    out
}

/// A TCP server's one chain, to its first `tcp` route.
fn tcp_chains(index: &Index, merged: &PortServers) -> Vec<FilterChain> {
    let Some(bound) = merged.servers.first() else {
        return Vec::new();
    };
    match l4::tcp_route(index, bound) {
        Some(proxy) => vec![FilterChain {
            filters: vec![proxy],
            ..Default::default()
        }],
        None => {
            warn_skipped(
                bound,
                "",
                "no VirtualService bound to the Gateway has a tcp route for this server",
            );
            Vec::new()
        }
    }
}

/// The chains of a port of HTTPS and TLS servers, each selected by SNI.
fn tls_chains(
    index: &Index,
    proxy: &Proxy,
    merged: &PortServers,
    stat_prefix: &str,
    out: &mut GatewayConfig,
) -> Vec<FilterChain> {
    let mut chains = SniChains::default();
    for bound in &merged.servers {
        let Some(tls) = &bound.server.tls else {
            continue;
        };
        if !bound.terminates_tls() {
            let routes = l4::tls_routes(index, bound);
            if routes.is_empty() {
                warn_skipped(
                    bound,
                    "",
                    "no VirtualService bound to the Gateway has a tls route for this server",
                );
            }
            for route in routes {
                match chains.taken(&route.sni_hosts) {
                    Some(taken) => tracing::warn!(
                        object = %route.object,
                        field = %route.field,
                        port = bound.server.port.number,
                        "SNI {taken:?} is already served on the port by another chain of {}; match skipped",
                        bound.object()
                    ),
                    None => chains.push(&route.sni_hosts, route.proxy, None),
                }
            }
            continue;
        }
        let sni_hosts = server_sni_hosts(bound.server);
        if let Some(taken) = chains.taken(&sni_hosts) {
            warn_skipped(
                bound,
                ".hosts",
                &format!("another server on the port already serves SNI {taken:?}"),
            );
            continue;
        }
        let https = Protocol::parse(&bound.server.port.protocol) == Protocol::Https;
        let alpn = if !https && tls.mode == ServerTlsMode::IstioMutual {
            tls::ALPN_MUTUAL_TCP
        } else {
            tls::ALPN_HTTP
        };
        let filter = if https {
            None
        } else {
            match l4::tcp_route(index, bound) {
                Some(proxy) => Some(proxy),
                None => {
                    warn_skipped(
                        bound,
                        "",
                        "no VirtualService bound to the Gateway has a tcp route for this server",
                    );
                    continue;
                }
            }
        };
        // Certificates go only to proxies that authenticated on the TLS port: a listener naming
        // a secret that never comes would wait out SDS's fetch timeout, then fail every handshake.
        if proxy.identity.is_none() {
            warn_skipped(
                bound,
                ".tls",
                "this gateway is on the plaintext xDS port and is never sent certificates; connect it to the TLS port (15012)",
            );
            continue;
        }
        let termination = match tls::terminate(index, &proxy.namespace, tls, alpn) {
            Ok(t) => t,
            Err(e) => {
                warn_skipped(bound, ".tls", &e.to_string());
                continue;
            }
        };
        let filter = filter.unwrap_or_else(|| {
            let name = https_route_name(bound);
            let routes = http_route_config(
                index,
                proxy,
                bound.server.port.number,
                std::slice::from_ref(bound),
                &name,
                true,
            );
            out.routes.insert(name.clone(), Arc::new(routes));
            let stat_prefix = if bound.server.name.is_empty() {
                stat_prefix
            } else {
                &bound.server.name
            };
            http_connection_manager(&name, stat_prefix)
        });
        for secret in termination.secrets {
            out.secrets.insert(secret.name.clone(), Arc::new(secret));
        }
        chains.push(&sni_hosts, filter, Some(termination.context));
    }
    chains.chains
}

/// Filter chains told apart by SNI, each name (or the match-all) used once: Envoy rejects a
/// listener where two chains match the same name.
#[derive(Default)]
struct SniChains {
    chains: Vec<FilterChain>,
    /// Every SNI name a chain selects; `""` for a chain that selects every name.
    names: BTreeSet<String>,
}

impl SniChains {
    /// The first of these SNI names a chain already selects.
    fn taken(&self, sni_hosts: &[String]) -> Option<String> {
        match_names(sni_hosts)
            .into_iter()
            .find(|n| self.names.contains(n))
    }

    /// A chain for `sni_hosts`, whose names [`SniChains::taken`] found free.
    fn push(&mut self, sni_hosts: &[String], filter: Filter, tls: Option<DownstreamTlsContext>) {
        let names = match_names(sni_hosts);
        let server_names: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
        self.names.extend(names);
        self.chains.push(FilterChain {
            filter_chain_match: (!server_names.is_empty()).then(|| FilterChainMatch {
                server_names,
                ..Default::default()
            }),
            filters: vec![filter],
            transport_socket: tls.map(downstream_tls),
            ..Default::default()
        });
    }
}

/// The SNI names a chain for `sni_hosts` selects, sorted: `[""]` (every name) when there are
/// none or one is `*`, as istiod's `toFilterChainMatch` reads them.
fn match_names(sni_hosts: &[String]) -> Vec<String> {
    if sni_hosts.is_empty() || sni_hosts.iter().any(|h| h == "*") {
        return vec![String::new()];
    }
    let names: BTreeSet<&String> = sni_hosts.iter().collect();
    names.into_iter().cloned().collect()
}

/// A server's hosts without their namespace part (istiod's `GetSNIHostsForServer`).
fn server_sni_hosts(server: &Server) -> Vec<String> {
    server
        .hosts
        .iter()
        .map(|h| split_server_host(h).1.to_string())
        .collect()
}

/// istiod's route config name for an HTTPS server that terminates TLS:
/// `https.<port>.<portName>.<gateway>.<namespace>`.
fn https_route_name(bound: &Bound) -> String {
    let port = &bound.server.port;
    format!(
        "https.{}.{}.{}.{}",
        port.number,
        port.name,
        bound.gateway.name(),
        bound.gateway.namespace()
    )
}

fn warn_skipped(bound: &Bound, field: &str, why: &str) {
    let credential = bound
        .server
        .tls
        .as_ref()
        .map(|t| t.credential_name.as_str())
        .unwrap_or_default();
    tracing::warn!(
        object = %bound.object(),
        field = %bound.field(field),
        port = bound.server.port.number,
        credential_name = credential,
        "{why}; skipped"
    );
}

/// The route config `name` of HTTP servers (`http.<port>`: all of a port's plain-text ones;
/// `https.…`: one terminating HTTPS server): a virtual host per host name served, holding the
/// routes of every VirtualService bound to the servers' Gateways for that host. `is_tls`: the
/// listener terminates TLS (redirects keep `https`).
fn http_route_config(
    index: &Index,
    proxy: &Proxy,
    port: u32,
    servers: &[Bound],
    name: &str,
    is_tls: bool,
) -> Resource {
    /// A VirtualService bound through one Gateway, translated and encoded once however many
    /// hosts use it.
    struct BoundVs<'a> {
        vs: &'a Typed<VirtualService>,
        gateway: String,
    }
    let mut bound: Vec<BoundVs> = Vec::new();
    // Host → (https redirect, indexes into `bound`). Hosts borrow from the specs where they can.
    let mut hosts: BTreeMap<Cow<str>, (bool, Vec<usize>)> = BTreeMap::new();
    for Bound {
        gateway: gw,
        server,
        ..
    } in servers
    {
        let https_redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
        let gateway = gw.ns_name();
        let services = index
            .virtual_services_by_gateway
            .get(&gateway)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for vs in services {
            let mut slot = None;
            for vs_host in &vs.spec().hosts {
                let vs_host = index.mesh.fqdn(vs_host, vs.namespace());
                for server_host in &server.hosts {
                    let Some(host) =
                        server_admits(server_host, gw.namespace(), vs.namespace(), &vs_host)
                    else {
                        continue;
                    };
                    let pattern = split_server_host(server_host).1;
                    // `intersect` returns one of its arguments whole: borrow the server's pattern,
                    // or keep the VirtualService host as it is (borrowed unless it was resolved).
                    let host = if std::ptr::eq(host, pattern) {
                        Cow::Borrowed(pattern)
                    } else {
                        vs_host.clone()
                    };
                    let i = *slot.get_or_insert_with(|| {
                        bound.push(BoundVs {
                            vs,
                            gateway: gateway.clone(),
                        });
                        bound.len() - 1
                    });
                    let entry = hosts.entry(host).or_insert((https_redirect, Vec::new()));
                    entry.0 |= https_redirect;
                    // The same VirtualService through two Gateways on this port counts once.
                    if !entry
                        .1
                        .iter()
                        .any(|&j| Arc::ptr_eq(&bound[j].vs.entry, &vs.entry))
                    {
                        entry.1.push(i);
                    }
                }
            }
        }
        // A redirecting server's hosts redirect even where no VirtualService routes them, as
        // istiod gives each a virtual host of its own.
        if https_redirect {
            for server_host in &server.hosts {
                hosts
                    .entry(Cow::Borrowed(split_server_host(server_host).1))
                    .or_default()
                    .0 = true;
            }
        }
    }

    let encoded: Vec<EncodedRoutes> = bound
        .iter()
        .map(|b| {
            EncodedRoutes::encode(&virtual_service_routes(
                index, proxy, b.vs, port, &b.gateway, is_tls,
            ))
        })
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
            require_tls: if *https_redirect {
                TlsRequirementType::All as i32
            } else {
                0
            },
        });
    }
    if virtual_hosts.is_empty() {
        // istiod's answer on a port with no routes: 404 for everything.
        virtual_hosts.push(VirtualHostParts {
            naming: Naming::Explicit {
                name: format!("blackhole:{port}"),
                domains: vec!["*".into()],
            },
            routes: vec![&blackhole],
            require_tls: 0,
        });
    }
    let options = RouteConfigOptions {
        validate_clusters: false,
        // Envoy's default (4 KiB) would NACK larger `directResponse` bodies; istiod sets 1 MiB.
        max_direct_response_body_size_bytes: 1024 * 1024,
    };
    route_config::encode(name, &virtual_hosts, &options)
}

fn virtual_service_routes(
    index: &Index,
    proxy: &Proxy,
    vs: &Typed<VirtualService>,
    port: u32,
    gateway: &str,
    is_tls: bool,
) -> Vec<Route> {
    // `match.gateways` may name the gateway as `ns/name` or, from its own namespace, `name`.
    let mut gateways = vec![gateway.to_string()];
    if let Some(short) = gateway.strip_prefix(&format!("{}/", vs.namespace())) {
        gateways.push(short.to_string());
    }
    let source = virtual_service::Source {
        namespace: vs.namespace(),
        name: vs.name(),
        spec: vs.spec(),
    };
    virtual_service::routes_for_listener(index, proxy, &source, port, &gateways, is_tls)
}

/// Splits a Gateway server host `ns/host` into its namespace filter and host pattern.
fn split_server_host(host: &str) -> (&str, &str) {
    host.split_once('/').unwrap_or(("*", host))
}

/// The host a Gateway (in `gateway_ns`) serves for a VirtualService host, when its server host
/// `ns/pattern` admits it: the namespace part admits the VirtualService's namespace (`*` any,
/// `.` the Gateway's own) and the patterns intersect.
pub(super) fn server_admits<'h>(
    server_host: &'h str,
    gateway_ns: &str,
    vs_ns: &str,
    vs_host: &'h str,
) -> Option<&'h str> {
    let (ns_filter, pattern) = split_server_host(server_host);
    let admitted = match ns_filter {
        "*" => true,
        "." => vs_ns == gateway_ns,
        ns => vs_ns == ns,
    };
    admitted.then(|| intersect(vs_host, pattern)).flatten()
}

fn blackhole_route() -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 404,
            ..Default::default()
        })),
        ..Default::default()
    }
}
