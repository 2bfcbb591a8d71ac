//! Sidecar route configs `"<port>"`: one virtual host per HTTP service on the port, named
//! `<fqdn>:<port>` with istiod's domains, carrying the routes of the mesh VirtualService for the
//! host or istiod's default route; then the `allow_any` catch-all to `PassthroughCluster`.

use std::collections::{HashMap, HashSet};

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteMatch, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::google::protobuf::Duration;

use super::super::names;
use super::super::route::{MESH_GATEWAY, retry_policy};
use super::super::route_config::{
    self, EncodedRoutes, Naming, RouteConfigOptions, VirtualHostParts,
};
use super::super::virtual_service;
use crate::index::scope::{MeshVirtualService, Scope};
use crate::index::{Index, Service};
use crate::model::Proxy;
use crate::model::mesh::OutboundTrafficMode;
use crate::xds::Resource;
use prost::Message;

/// The route config `name` (istiod's `"<port>"`) for the HTTP services on `port` (in hostname
/// order), ending with the `allow_any` or `block_all` catch-all.
pub fn port_route_config(
    name: &str,
    index: &Index,
    proxy: &Proxy,
    port: u16,
    services: &[&Service],
    scope: &Scope,
) -> Resource {
    let mesh_vs = &scope.virtual_services;
    // Each VirtualService's routes are translated and encoded once per port, however many of its
    // hosts are services on the port.
    let mut encoded: Vec<EncodedRoutes> = Vec::new();
    let mut by_vs: HashMap<usize, usize> = HashMap::new();
    let mut hosts: Vec<(String, Vec<String>, usize)> = Vec::with_capacity(services.len());
    let domains = unique_domains(services, port, &proxy.dns_domain);
    for (service, domains) in services.iter().zip(domains) {
        let routes = match mesh_vs
            .iter()
            .position(|vs| vs.applies_to(&service.hostname))
        {
            Some(i) => *by_vs.entry(i).or_insert_with(|| {
                encoded.push(EncodedRoutes::encode(&virtual_service_routes(
                    index,
                    proxy,
                    &mesh_vs[i],
                    port,
                )));
                encoded.len() - 1
            }),
            None => {
                let cluster = names::outbound_cluster(port, "", &service.hostname);
                encoded.push(DEFAULT_ROUTE.to(&cluster));
                encoded.len() - 1
            }
        };
        if domains.is_empty() {
            tracing::warn!(host = %service.hostname, port, "every domain of the service is taken by another on this port; virtual host skipped");
            continue;
        }
        hosts.push((format!("{}:{port}", service.hostname), domains, routes));
    }
    // Unknown hosts: passed through under ALLOW_ANY, answered 502 under REGISTRY_ONLY, as
    // istiod's `allow_any` and `block_all` virtual hosts do.
    let (catch_all_name, catch_all) = match scope.outbound_traffic_policy {
        OutboundTrafficMode::AllowAny => (
            names::ALLOW_ANY,
            default_route(names::PASSTHROUGH_CLUSTER, names::ALLOW_ANY),
        ),
        OutboundTrafficMode::RegistryOnly => (names::BLOCK_ALL, block_all_route()),
    };
    let catch_all = EncodedRoutes::encode(&[catch_all]);
    let mut virtual_hosts: Vec<VirtualHostParts> = hosts
        .into_iter()
        .map(|(name, domains, i)| VirtualHostParts {
            naming: Naming::Explicit { name, domains },
            routes: vec![&encoded[i]],
            require_tls: 0,
        })
        .collect();
    virtual_hosts.push(VirtualHostParts {
        naming: Naming::Explicit {
            name: catch_all_name.into(),
            domains: vec!["*".into()],
        },
        routes: vec![&catch_all],
        require_tls: 0,
    });
    let options = RouteConfigOptions {
        validate_clusters: false,
        max_direct_response_body_size_bytes: 1024 * 1024,
    };
    route_config::encode(name, &virtual_hosts, &options)
}

/// Each service's [`virtual_host_domains`], without those an earlier service (hostname order)
/// has: Envoy rejects a route config in which two virtual hosts share a domain, and istiod's
/// dedup keeps the first.
fn unique_domains(services: &[&Service], port: u16, proxy_domain: &str) -> Vec<Vec<String>> {
    let all: Vec<Vec<String>> = services
        .iter()
        .map(|s| virtual_host_domains(s, port, proxy_domain))
        .collect();
    let keep: Vec<Vec<bool>> = {
        let mut seen: HashSet<&str> = HashSet::with_capacity(all.iter().map(Vec::len).sum());
        all.iter()
            .map(|domains| domains.iter().map(|d| seen.insert(d)).collect())
            .collect()
    };
    all.into_iter()
        .zip(keep)
        .map(|(domains, keep)| {
            domains
                .into_iter()
                .zip(keep)
                .filter_map(|(d, k)| k.then_some(d))
                .collect()
        })
        .collect()
}

/// istiod's `generateVirtualHostDomains`: the FQDN, the short forms a client in the proxy's
/// DNS domain can use (`name`, `name.ns.svc`, `name.ns` in the same namespace; `name.ns`,
/// `name.ns.svc` from another), the service's addresses — each also with `:<port>`.
pub fn virtual_host_domains(service: &Service, port: u16, proxy_domain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |d: &str| {
        out.push(d.to_string());
        out.push(format!("{d}:{port}"));
    };
    let host = service.hostname.as_str();
    add(host);
    for alt in alt_hosts(host, proxy_domain) {
        add(&alt);
    }
    for address in &service.addresses {
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {}
            Ok(std::net::IpAddr::V6(ip)) => add(&format!("[{ip}]")),
            Ok(std::net::IpAddr::V4(ip)) => add(&ip.to_string()),
            // CIDR ranges of ServiceEntries are not Host headers.
            Err(_) => {}
        }
    }
    out
}

/// istiod's `GenerateAltVirtualHosts` for a proxy in a Kubernetes DNS domain (`<ns>.svc.<suffix>`);
/// other proxy domains get the shared-suffix forms istiod derives.
fn alt_hosts(host: &str, proxy_domain: &str) -> Vec<String> {
    if let Some(id) = proxy_domain.find(".svc.") {
        let suffix = &proxy_domain[id..];
        let Some(ih) = host.find(".svc.").filter(|_| host.ends_with(suffix)) else {
            return Vec::new();
        };
        let Some(ns) = host.find('.').filter(|ns| ns + 1 < ih) else {
            return Vec::new();
        };
        let with_ns = &host[..ih];
        return if host[ns + 1..ih] == proxy_domain[..id] {
            vec![
                host[..ns].to_string(),
                format!("{with_ns}.svc"),
                with_ns.to_string(),
            ]
        } else {
            vec![with_ns.to_string(), format!("{with_ns}.svc")]
        };
    }
    let host_parts: Vec<&str> = host.split('.').collect();
    let domain_parts: Vec<&str> = proxy_domain.split('.').collect();
    let shared = host_parts
        .iter()
        .rev()
        .zip(domain_parts.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    if shared == 0 || proxy_domain.is_empty() || shared >= host_parts.len() {
        return Vec::new();
    }
    let unique = host_parts[..host_parts.len() - shared].join(".");
    let mut out = vec![unique.clone()];
    if host_parts.len() - shared == 2 {
        out.push(format!(
            "{unique}.{}",
            host_parts[host_parts.len() - shared]
        ));
    }
    out
}

/// A VirtualService's HTTP routes for a sidecar on `port`: `match.gateways` compares against
/// `mesh`, `sourceLabels`/`sourceNamespace` against this proxy.
fn virtual_service_routes(
    index: &Index,
    proxy: &Proxy,
    vs: &MeshVirtualService,
    port: u16,
) -> Vec<Route> {
    let source = virtual_service::Source {
        namespace: vs.namespace(),
        name: vs.name(),
        spec: vs.spec(),
    };
    virtual_service::routes(
        index,
        proxy,
        &source,
        u32::from(port),
        &[MESH_GATEWAY.to_string()],
    )
}

/// istiod's default route to many clusters: encoded once, each cluster's name spliced into the
/// bytes (a service without a VirtualService costs a copy, not a translation and an encoding).
static DEFAULT_ROUTE: std::sync::LazyLock<DefaultRoute> =
    std::sync::LazyLock::new(DefaultRoute::new);

struct DefaultRoute {
    /// The encoded `Route` up to its action, the action up to the cluster name, and the rests.
    route_head: Vec<u8>,
    action_head: Vec<u8>,
    action_tail: Vec<u8>,
    route_tail: Vec<u8>,
}

impl DefaultRoute {
    const MARK: &'static str = "\u{0}cluster\u{0}";

    fn new() -> DefaultRoute {
        let route = default_route(Self::MARK, "default");
        let Some(Action::Route(action)) = &route.action else {
            unreachable!("default_route routes")
        };
        let (route_bytes, action_bytes) = (route.encode_to_vec(), action.encode_to_vec());
        let split = |whole: &[u8], part: &[u8]| {
            let at = whole
                .windows(part.len())
                .position(|w| w == part)
                .unwrap_or_else(|| unreachable!("a field is in its message"));
            (whole[..at].to_vec(), whole[at + part.len()..].to_vec())
        };
        // The action as a field of the route (key, length, bytes), the name as a field of the action.
        let mut action_field = Vec::new();
        prost::encoding::message::encode(2, action, &mut action_field);
        let mut cluster_field = Vec::new();
        prost::encoding::string::encode(1, &Self::MARK.to_string(), &mut cluster_field);
        let (route_head, route_tail) = split(&route_bytes, &action_field);
        let (action_head, action_tail) = split(&action_bytes, &cluster_field);
        DefaultRoute {
            route_head,
            action_head,
            action_tail,
            route_tail,
        }
    }

    fn to(&self, cluster: &str) -> EncodedRoutes {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
        let action_len = self.action_head.len()
            + key_len(1)
            + encoded_len_varint(cluster.len() as u64)
            + cluster.len()
            + self.action_tail.len();
        let mut route = Vec::with_capacity(
            self.route_head.len() + key_len(2) + 3 + action_len + self.route_tail.len(),
        );
        route.extend_from_slice(&self.route_head);
        encode_key(2, WireType::LengthDelimited, &mut route);
        encode_varint(action_len as u64, &mut route);
        route.extend_from_slice(&self.action_head);
        encode_key(1, WireType::LengthDelimited, &mut route);
        encode_varint(cluster.len() as u64, &mut route);
        route.extend_from_slice(cluster.as_bytes());
        route.extend_from_slice(&self.action_tail);
        route.extend_from_slice(&self.route_tail);
        EncodedRoutes::from_encoded_route(&route)
    }
}

/// istiod's `block_all` route: a 502 for a host outside the registry.
fn block_all_route() -> Route {
    Route {
        name: names::BLOCK_ALL.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 502,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// istiod's default route (`BuildDefaultHTTPOutboundRoute`): everything to one cluster, no
/// timeout, and the default retry policy.
fn default_route(cluster: &str, name: &str) -> Route {
    let no_timeout = Duration {
        seconds: 0,
        nanos: 0,
    };
    let passthrough = cluster == names::PASSTHROUGH_CLUSTER;
    // `max_grpc_timeout` is deprecated but istiod sets it (see `route::action`).
    #[allow(deprecated)]
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: Some(no_timeout),
        max_grpc_timeout: Some(no_timeout),
        // istiod's catch-all has no retries: the destination is unknown.
        retry_policy: if passthrough {
            None
        } else {
            retry_policy(None, false)
        },
        ..Default::default()
    };
    Route {
        name: name.to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spliced_default_route_is_prosts_encoding() {
        let template = DefaultRoute::new();
        for cluster in [
            "outbound|9080||reviews.default.svc.cluster.local",
            "",
            &"x".repeat(300),
        ] {
            assert_eq!(
                template.to(cluster),
                EncodedRoutes::encode(&[default_route(cluster, "default")]),
                "{cluster}"
            );
        }
    }
}
