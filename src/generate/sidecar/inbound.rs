//! Inbound: `virtualInbound` on 15006, where iptables sends every connection to the pod. A filter
//! chain per port of the services this workload backs (its IP is one of their endpoints) goes to
//! `inbound|<port>||`; anything else passes through to `InboundPassthroughCluster`. Also the
//! sidecar's local clusters: those, and `PassthroughCluster` for ALLOW_ANY.
//!
//! Like istiod, inbound names use the endpoint (target) port: it is the port the connection was
//! originally sent to, so the one the filter chain matches on.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, CidrRange, TrafficDirection, address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;

use super::super::endpoint::{pipe_address, socket_address};
use super::super::mtls;
use super::super::names;
use super::super::security::{authz, jwt};
use super::filters::{Routes, inbound_http_connection_manager, tcp_proxy};
use crate::config::istio::Sidecar;
use crate::config::istio::security::MtlsMode;
use crate::config::istio::sidecar::{IngressListener, split_host_port};
use crate::config::istio::{AuthorizationPolicy, RequestAuthentication};
use crate::config::{Kind, KindSpec, ObjectKey};
use crate::index::Index;
use crate::index::security::{self, Applied, Workload};
use crate::model::NodeType;
use crate::model::{Protocol, Proxy};
use crate::xds::{Resource, ResourceMap};
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;

pub const VIRTUAL_INBOUND_PORT: u16 = 15006;
const CONNECT_TIMEOUT: Duration = Duration {
    seconds: 10,
    nanos: 0,
};
/// istiod's source address for inbound passthrough: the app then sees a local peer that is not
/// 127.0.0.1, and iptables does not capture the connection again.
const INBOUND_PASSTHROUGH_BIND: &str = "127.0.0.6";

/// A port this workload serves: the endpoint (target) port and the protocol of the first
/// service port (hostname order) that uses it, or a Sidecar `ingress` listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboundPort {
    pub port: u16,
    pub protocol: Protocol,
    /// Where the app listens (`defaultEndpoint`, resolved): `None` forwards to the address
    /// the connection was sent to (ORIGINAL_DST).
    pub endpoint: Option<Endpoint>,
    /// The address a listener for this port binds to without capture (`bind`, else the
    /// proxy's IP).
    pub bind: String,
}

/// An app address from a Sidecar ingress `defaultEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Socket(String, u16),
    Unix(String),
}

/// The ports `proxy` serves: the Sidecar's `ingress` listeners when it has any, else those of
/// the services whose endpoints include one of its IPs. All that inbound generation reads of
/// the proxy, so replicas of a workload share it (unless an ingress endpoint names their IP).
pub fn ports(index: &Index, proxy: &Proxy, sidecar: Option<&Sidecar>) -> Vec<InboundPort> {
    let ingress = sidecar.map(|s| s.ingress.as_slice()).unwrap_or_default();
    if !ingress.is_empty() {
        return ingress
            .iter()
            .filter_map(|l| ingress_port(l, proxy))
            .collect();
    }
    service_ports(index, proxy)
}

fn ingress_port(listener: &IngressListener, proxy: &Proxy) -> Option<InboundPort> {
    let port = listener.port.as_ref()?;
    let number = u16::try_from(port.number).ok()?;
    let own_ip = proxy
        .ip_addresses
        .first()
        .cloned()
        .unwrap_or_else(|| "0.0.0.0".into());
    let endpoint = match listener.default_endpoint.as_str() {
        "" => None,
        e if e.starts_with("unix://") => {
            Some(Endpoint::Unix(e.trim_start_matches("unix://").to_string()))
        }
        e => {
            let (host, p) = split_host_port(e).ok()?;
            // `0.0.0.0:PORT` (or `:PORT`) is the app on the pod's own address.
            let host = if host.is_empty() || host == "0.0.0.0" || host == "::" {
                own_ip.clone()
            } else {
                host.to_string()
            };
            Some(Endpoint::Socket(host, p.parse().ok()?))
        }
    };
    Some(InboundPort {
        port: number,
        protocol: Protocol::parse(&port.protocol),
        endpoint,
        bind: if listener.bind.is_empty() {
            own_ip
        } else {
            listener.bind.clone()
        },
    })
}

fn service_ports(index: &Index, proxy: &Proxy) -> Vec<InboundPort> {
    let mut ports: BTreeMap<u16, (Protocol, &str)> = BTreeMap::new();
    for ip in &proxy.ip_addresses {
        for service in index.services_by_ip.get(ip) {
            for ep in service.endpoints.iter().filter(|ep| &ep.address == ip) {
                for port in &service.ports {
                    let Some(&target) = ep.ports.get(&port.port) else {
                        continue;
                    };
                    if target == VIRTUAL_INBOUND_PORT || port.protocol == Protocol::Udp {
                        continue;
                    }
                    let (protocol, first) = *ports
                        .entry(target)
                        .or_insert((port.protocol, &service.hostname));
                    if protocol.is_http() != port.protocol.is_http() {
                        tracing::debug!(port = target, first, other = %service.hostname, "workload port declared with different protocols; the first service's wins");
                    }
                }
            }
        }
    }
    ports
        .into_iter()
        .map(|(port, (protocol, _))| InboundPort {
            port,
            protocol,
            endpoint: None,
            bind: String::new(),
        })
        .collect()
}

/// The security policies that shape a workload's inbound side: each served port's mTLS mode
/// (PeerAuthentication), and the AuthorizationPolicies and RequestAuthentications that select
/// it. Names only, so that proxies under the same policies share one generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct InboundPolicies {
    /// Per inbound port, in the same order.
    pub mtls: Vec<MtlsMode>,
    pub authorization: Vec<ObjectKey>,
    pub authentication: Vec<ObjectKey>,
}

impl InboundPolicies {
    pub fn of(index: &Index, proxy: &Proxy, ports: &[InboundPort]) -> InboundPolicies {
        let snapshot = index.snapshot();
        let root = index.mesh.root_namespace.as_str();
        let workload = Workload {
            namespace: &proxy.namespace,
            labels: &proxy.labels,
        };
        let peer = security::peer_authentications(snapshot, root, workload);
        let keys = |kind: Kind, found: Vec<(&str, &str)>| -> Vec<ObjectKey> {
            found
                .into_iter()
                .map(|(ns, name)| ObjectKey {
                    kind,
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
                .collect()
        };
        let authz: Vec<Applied<'_, AuthorizationPolicy>> =
            security::applying(snapshot, root, workload);
        let authn: Vec<Applied<'_, RequestAuthentication>> =
            security::applying(snapshot, root, workload);
        InboundPolicies {
            mtls: ports
                .iter()
                .map(|p| security::mtls_mode(&peer, p.port))
                .collect(),
            authorization: keys(
                Kind::AuthorizationPolicy,
                authz.iter().map(|a| (a.namespace, a.name)).collect(),
            ),
            authentication: keys(
                Kind::RequestAuthentication,
                authn.iter().map(|a| (a.namespace, a.name)).collect(),
            ),
        }
    }
}

/// `virtualInbound`: chains per served port (mTLS as PeerAuthentication asks, for a proxy
/// that has its certificate), connections to 15006 itself dropped, anything else passed
/// through to `InboundPassthroughCluster`.
pub fn virtual_inbound(
    index: &Index,
    ports: &[InboundPort],
    policies: &InboundPolicies,
    secure: bool,
) -> Resource {
    let mut chains = vec![FilterChain {
        name: "virtualInbound-blackhole".into(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(VIRTUAL_INBOUND_PORT),
            }),
            ..Default::default()
        }),
        filters: vec![tcp_proxy(names::BLACKHOLE_CLUSTER)],
        ..Default::default()
    }];
    let filters = AppFilters::of(index, policies);
    for (i, p) in ports.iter().enumerate() {
        let mode = if secure {
            policies
                .mtls
                .get(i)
                .copied()
                .unwrap_or(MtlsMode::Permissive)
        } else {
            MtlsMode::Disable
        };
        let port_match = || FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(p.port),
            }),
            ..Default::default()
        };
        let name = names::listener("0.0.0.0", u32::from(p.port));
        if mode != MtlsMode::Strict {
            chains.push(FilterChain {
                name: name.clone(),
                filter_chain_match: Some(port_match()),
                filters: to_app(p, &filters),
                ..Default::default()
            });
        }
        if mode == MtlsMode::Permissive {
            // Only in-mesh TLS (an istio ALPN) is terminated; an app's own TLS passes as is.
            chains.push(FilterChain {
                name: format!("{name}_mtls"),
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: "tls".into(),
                    application_protocols: mtls::INBOUND_MTLS_ALPNS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    ..port_match()
                }),
                filters: to_app(p, &filters),
                transport_socket: Some(mtls::inbound_tls_socket()),
                ..Default::default()
            });
        }
        if mode == MtlsMode::Strict {
            // Everything must be mTLS: a plaintext client fails the handshake.
            chains.push(FilterChain {
                name: format!("{name}_mtls"),
                filter_chain_match: Some(port_match()),
                filters: to_app(p, &filters),
                transport_socket: Some(mtls::inbound_tls_socket()),
                ..Default::default()
            });
        }
    }
    chains.push(FilterChain {
        name: names::VIRTUAL_INBOUND.into(),
        filter_chain_match: Some(FilterChainMatch {
            prefix_ranges: ["0.0.0.0", "::"]
                .map(|a| CidrRange {
                    address_prefix: a.into(),
                    prefix_len: Some(UInt32Value { value: 0 }),
                })
                .to_vec(),
            ..Default::default()
        }),
        filters: vec![tcp_proxy(names::INBOUND_PASSTHROUGH_CLUSTER)],
        ..Default::default()
    });
    let mut listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            OriginalDst::default(),
        ))),
        ..Default::default()
    }];
    if secure {
        // Sets the transport protocol and ALPN the PERMISSIVE chains match on.
        listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        });
    }
    let listener = Listener {
        name: names::VIRTUAL_INBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT)),
        filter_chains: chains,
        listener_filters,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    Resource::encode(names::VIRTUAL_INBOUND, &listener)
}

/// Without capture, a Sidecar's ingress ports are listeners of their own, bound to `bind` (or
/// the proxy's IP), as istiod builds them for `INTERCEPTION_MODE=NONE`.
/// They carry the authorization and authentication filters, not mTLS: a workload without capture
/// is reached on these ports directly, by peers that cannot know to use TLS.
pub fn bound_listeners(
    index: &Index,
    ports: &[InboundPort],
    policies: &InboundPolicies,
    _secure: bool,
) -> Vec<Resource> {
    let filters = AppFilters::of(index, policies);
    ports
        .iter()
        .map(|p| {
            let name = names::listener(&p.bind, u32::from(p.port));
            let listener = Listener {
                name: name.clone(),
                address: Some(socket_address(&p.bind, p.port)),
                filter_chains: vec![FilterChain {
                    filters: to_app(p, &filters),
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Inbound as i32,
                ..Default::default()
            };
            Resource::encode(name, &listener)
        })
        .collect()
}

/// The policy filters of an inbound chain: for HTTP, JWT authentication then authorization
/// ahead of the usual chain; for TCP, network authorization ahead of the proxy.
#[derive(Default)]
struct AppFilters {
    http: Vec<HttpFilter>,
    network: Vec<Filter>,
}

impl AppFilters {
    fn of(index: &Index, policies: &InboundPolicies) -> AppFilters {
        let authz: Vec<Applied<'_, AuthorizationPolicy>> = resolve(index, &policies.authorization);
        let authn: Vec<Applied<'_, RequestAuthentication>> =
            resolve(index, &policies.authentication);
        let trust_domain = &index.mesh.trust_domain;
        let jwt = jwt::http_filter(&authn, &*index.jwks, NodeType::Sidecar);
        AppFilters {
            http: jwt
                .into_iter()
                .chain(authz::http_filters(&authz, trust_domain))
                .collect(),
            network: authz::network_filters(&authz, trust_domain),
        }
    }
}

/// The policies `keys` name, as they are in this revision.
fn resolve<'a, T: KindSpec>(index: &'a Index, keys: &[ObjectKey]) -> Vec<Applied<'a, T>> {
    let snapshot = index.snapshot();
    keys.iter()
        .filter_map(|key| snapshot.get(key))
        .filter_map(|e| {
            Some(Applied {
                namespace: &e.object.meta.namespace,
                name: &e.object.meta.name,
                spec: e.object.spec::<T>()?,
            })
        })
        .collect()
}

/// The filters that hand a connection for `p` to the app: an HTTP connection manager with
/// istiod's inline route, or a TCP proxy, each behind the policy filters.
fn to_app(p: &InboundPort, filters: &AppFilters) -> Vec<Filter> {
    let cluster = names::inbound_cluster(p.port);
    if p.protocol.is_http() {
        let routes = Routes::Inline(Box::new(inbound_routes(&cluster, p.port)));
        vec![inbound_http_connection_manager(
            format!("inbound_0.0.0.0_{}", p.port),
            routes,
            filters.http.clone(),
        )]
    } else {
        filters
            .network
            .iter()
            .cloned()
            .chain([tcp_proxy(&cluster)])
            .collect()
    }
}

/// The clusters only sidecars have: `PassthroughCluster`, `InboundPassthroughCluster`, and
/// `inbound|<port>||` per served port. Like istiod's under REDIRECT, the inbound clusters
/// connect to the connection's original destination (the pod's own IP and port) from
/// 127.0.0.6, which the capture rules let through; they are equal for every proxy, so only the
/// set of ports tells two proxies' local clusters apart.
pub fn local_clusters(ports: &[InboundPort]) -> ResourceMap {
    let mut out = ResourceMap::new();
    let mut add = |name: String, bind: Option<&str>| {
        let c = original_dst_cluster(&name, bind);
        out.insert(name.clone(), Arc::new(Resource::encode(name, &c)));
    };
    add(names::PASSTHROUGH_CLUSTER.into(), None);
    add(
        names::INBOUND_PASSTHROUGH_CLUSTER.into(),
        Some(INBOUND_PASSTHROUGH_BIND),
    );
    for p in ports {
        let name = names::inbound_cluster(p.port);
        let c = match &p.endpoint {
            None => original_dst_cluster(&name, Some(INBOUND_PASSTHROUGH_BIND)),
            Some(endpoint) => static_cluster(&name, endpoint),
        };
        out.insert(name.clone(), Arc::new(Resource::encode(name, &c)));
    }
    out
}

/// istiod's inline inbound route config: everything to the local app, no timeout.
fn inbound_routes(cluster: &str, port: u16) -> RouteConfiguration {
    let no_timeout = Duration {
        seconds: 0,
        nanos: 0,
    };
    #[allow(deprecated)]
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: Some(no_timeout),
        max_grpc_timeout: Some(no_timeout),
        ..Default::default()
    };
    RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A cluster to the app at a Sidecar ingress `defaultEndpoint`.
fn static_cluster(name: &str, endpoint: &Endpoint) -> Cluster {
    let address = match endpoint {
        Endpoint::Socket(host, port) => socket_address(host, *port),
        Endpoint::Unix(path) => pipe_address(path),
    };
    let endpoint = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(address),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(CONNECT_TIMEOUT),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A cluster that connects where the client meant to (ORIGINAL_DST needs the CLUSTER_PROVIDED
/// load balancer, or Envoy rejects it).
fn original_dst_cluster(name: &str, bind: Option<&str>) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(CONNECT_TIMEOUT),
        upstream_bind_config: bind.map(|a| BindConfig {
            source_address: match socket_address(a, 0).address {
                Some(address::Address::SocketAddress(s)) => Some(s),
                _ => None,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
