//! One VirtualService's HTTP routes as a proxy sees them through a listener port: destinations
//! resolved in the VirtualService's namespace, consistent-hash policies from DestinationRules.
//! Gateways and sidecars differ only in the gateway names `match.gateways` is compared with.

use envoy_types::pb::envoy::config::route::v3::Route;

use super::names;
use super::route::{RouteContext, translate_http_route};
use super::traffic_policy;
use crate::config::istio::VirtualService;
use crate::config::istio::virtual_service::Destination;
use crate::index::Index;
use crate::model::Proxy;

/// Where a VirtualService is and what it says.
pub struct Source<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a VirtualService,
}

/// The routes of `vs` on `port` for `proxy`, with `gateways` the names `match.gateways` may
/// use for this listener (`mesh` for sidecars). A route that cannot be translated is skipped
/// with a warning naming the object and field; the others are served.
pub fn routes(
    index: &Index,
    proxy: &Proxy,
    vs: &Source,
    port: u32,
    gateways: &[String],
) -> Vec<Route> {
    routes_for_listener(index, proxy, vs, port, gateways, false)
}

/// [`routes`] for a listener that terminates TLS (`is_tls`) or not: redirects to a port
/// without a scheme then keep `https`, as istiod's `IsTLS` route option does.
pub fn routes_for_listener(
    index: &Index,
    proxy: &Proxy,
    vs: &Source,
    port: u32,
    gateways: &[String],
    is_tls: bool,
) -> Vec<Route> {
    let ns = vs.namespace;
    let cluster_for = |dest: &Destination| cluster_for(index, dest, ns, port);
    let hash_policy_for = |dest: &Destination| {
        let host = index.mesh.fqdn(&dest.host, ns);
        let Some(dr) = index.destination_rule(&host) else {
            return Vec::new();
        };
        let spec = dr.spec();
        let subset = spec
            .subsets
            .iter()
            .find(|s| s.name == dest.subset)
            .and_then(|s| s.traffic_policy.as_ref());
        traffic_policy::consistent_hash_lb(
            spec.traffic_policy.as_ref(),
            subset,
            dest.port.map(|p| p.number),
        )
        .map(traffic_policy::hash_policy)
        .unwrap_or_default()
    };
    let ctx = RouteContext {
        cluster_for: &cluster_for,
        hash_policy_for: &hash_policy_for,
        port,
        gateways,
        proxy_labels: &proxy.labels,
        proxy_namespace: &proxy.namespace,
        is_tls,
    };
    let mut routes = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        match translate_http_route(http, &ctx) {
            Ok(translated) => routes.extend(translated),
            Err(e) => tracing::warn!(
                object = %format!("VirtualService {ns}/{}", vs.name),
                field = %format!("spec.http[{i}]"),
                "route skipped: {e}"
            ),
        }
    }
    routes
}

/// The cluster a destination routes to: its host resolved in the VirtualService's namespace,
/// and its port — the one named, else the service's only port, else the listener's port, as
/// istiod's `GetDestinationCluster` does (a multi-port service without a port then gets a
/// cluster name that exists only if the service has the listener's port).
pub fn cluster_for(
    index: &Index,
    dest: &Destination,
    namespace: &str,
    listener_port: u32,
) -> Option<String> {
    let host = index.mesh.fqdn(&dest.host, namespace);
    let service = index.service(&host)?;
    let port = match (dest.port, service.ports.as_slice()) {
        (Some(p), _) => p.number,
        (None, [only]) => u32::from(only.port),
        (None, _) => listener_port,
    };
    Some(names::outbound_cluster(
        u16::try_from(port).ok()?,
        &dest.subset,
        &service.hostname,
    ))
}
