//! Outbound listeners: `0.0.0.0_<port>` per HTTP service port (route config `"<port>"`),
//! `<vip>_<port>` with a `tcp_proxy` per TCP service port, and `virtualOutbound` on 15001.
//!
//! Envoy rejects two listeners on one address:port, and istiod has conflict rules for it. This
//! is their deterministic subset: HTTP wins a port it shares with a TCP service that has no VIP
//! (the TCP service is then reachable only through its VIP listener, if any); between TCP
//! services on the same address:port, the first hostname wins. Each loser is logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;

use super::super::endpoint::socket_address;
use super::super::names;
use super::filters::{Routes, http_connection_manager, tcp_proxy};
use super::l4;
use super::routes::port_route_config;
use super::{Interception, SidecarConfig};
use crate::index::scope::Scope;
use crate::index::{Index, Service};
use crate::model::mesh::OutboundTrafficMode;
use crate::model::{Protocol, Proxy};
use crate::xds::Resource;

const WILDCARD: &str = "0.0.0.0";
const VIRTUAL_OUTBOUND_PORT: u16 = 15001;

pub fn build(index: &Index, proxy: &Proxy, scope: &Scope, out: &mut SidecarConfig) {
    let bind = Interception::of(proxy) == Interception::None;
    let mut http: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    let mut tcp: Vec<(&Service, u16)> = Vec::new();
    for service in &scope.outbound_services {
        for port in &service.ports {
            if port.port == VIRTUAL_OUTBOUND_PORT
                || port.port == super::inbound::VIRTUAL_INBOUND_PORT
            {
                tracing::warn!(host = %service.hostname, port = port.port, "service port collides with the sidecar's capture port; skipped");
            } else if port.protocol.is_http() {
                http.entry(port.port).or_default().push(service);
            } else if port.protocol != Protocol::Udp {
                tcp.push((service, port.port));
            }
        }
    }

    for (&port, services) in &http {
        http_listener(index, proxy, scope, WILDCARD, port, services, bind, out);
    }

    for (service, port) in tcp {
        let vip = service.addresses.iter().find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_unspecified())
        });
        let address = vip.map(String::as_str).unwrap_or(WILDCARD);
        let listener_name = names::listener(address, u32::from(port));
        if out.listeners.contains_key(&listener_name) {
            tracing::warn!(host = %service.hostname, port, listener = %listener_name, "TCP service port conflicts with another listener on the same address; skipped");
            continue;
        }
        let mut l4 = l4::chains(index, proxy, scope, service, port);
        let cidrs: Vec<String> = service
            .addresses
            .iter()
            .filter(|a| a.contains('/'))
            .cloned()
            .collect();
        if vip.is_none() && !cidrs.is_empty() {
            // A ServiceEntry for address ranges: its chains take only those destinations, and
            // the rest of the port goes where unknown traffic goes (istiod's passthrough chain).
            for c in &mut l4.chains {
                let m = c.filter_chain_match.get_or_insert_with(Default::default);
                if m.prefix_ranges.is_empty() {
                    m.prefix_ranges = l4::cidrs(&cidrs);
                }
            }
            l4.chains.push(chain(vec![tcp_proxy(unknown_traffic_cluster(
                scope.outbound_traffic_policy,
            ))]));
        }
        // A VIP is not an address of this host: only capture reaches it, never a bind.
        let listener = l4_listener(&listener_name, address, port, l4, bind && vip.is_none());
        out.listeners.insert(
            listener_name.clone(),
            Arc::new(Resource::encode(listener_name, &listener)),
        );
    }

    // A Sidecar's egress listeners with a port replace what the catch-all built on their
    // address and port. Without capture (the proxy's or the listener's) they are bound, by
    // default to 127.0.0.1, as istiod binds them.
    for ep in &scope.egress_ports {
        // Two listeners on one port, one of them on the wildcard address, cannot both bind.
        let wildcard = names::listener(WILDCARD, u32::from(ep.port));
        if out.listeners.remove(&wildcard).is_some() {
            out.routes.remove(&names::sidecar_http_routes(ep.port));
        }
        let uncaptured = bind || ep.uncaptured;
        let address = if !ep.bind.is_empty() {
            ep.bind.as_str()
        } else if uncaptured {
            "127.0.0.1"
        } else {
            WILDCARD
        };
        if ep.protocol.is_http() {
            let services: Vec<&Service> = ep.services.iter().map(|s| &**s).collect();
            http_listener(
                index, proxy, scope, address, ep.port, &services, uncaptured, out,
            );
        } else {
            let Some(first) = ep.services.first() else {
                continue;
            };
            if ep.services.len() > 1 {
                tracing::warn!(port = ep.port, to = %first.hostname, "a TCP egress listener imports more than one service; the first is served");
            }
            let listener_name = names::listener(address, u32::from(ep.port));
            let l4 = l4::chains(index, proxy, scope, first, ep.port);
            let l = l4_listener(&listener_name, address, ep.port, l4, uncaptured);
            out.listeners.insert(
                listener_name.clone(),
                Arc::new(Resource::encode(listener_name, &l)),
            );
        }
    }

    if bind {
        // Without capture nothing reaches 15001.
        return;
    }
    let virtual_outbound = virtual_outbound(scope.outbound_traffic_policy);
    out.listeners.insert(
        names::VIRTUAL_OUTBOUND.into(),
        Arc::new(Resource::encode(names::VIRTUAL_OUTBOUND, &virtual_outbound)),
    );
}

/// An HTTP listener `<address>_<port>` with its route config: `"<port>"` on the wildcard
/// address, as istiod names it, else `"<address>_<port>"`.
#[allow(clippy::too_many_arguments)]
fn http_listener(
    index: &Index,
    proxy: &Proxy,
    scope: &Scope,
    address: &str,
    port: u16,
    services: &[&Service],
    bind: bool,
    out: &mut SidecarConfig,
) {
    let route_name = if address == WILDCARD {
        names::sidecar_http_routes(port)
    } else {
        names::listener(address, u32::from(port))
    };
    let routes = port_route_config(&route_name, index, proxy, port, services, scope);
    let listener_name = names::listener(address, u32::from(port));
    let hcm = http_connection_manager(
        format!("outbound_{address}_{port}"),
        Routes::Rds(route_name),
    );
    let listener = listener(&listener_name, address, port, vec![chain(vec![hcm])], bind);
    out.routes.insert(routes.name.clone(), Arc::new(routes));
    out.listeners.insert(
        listener_name.clone(),
        Arc::new(Resource::encode(listener_name, &listener)),
    );
}

/// Where traffic to a destination outside the registry goes: its original destination under
/// ALLOW_ANY, nowhere under REGISTRY_ONLY.
fn unknown_traffic_cluster(policy: OutboundTrafficMode) -> &'static str {
    match policy {
        OutboundTrafficMode::AllowAny => names::PASSTHROUGH_CLUSTER,
        OutboundTrafficMode::RegistryOnly => names::BLACKHOLE_CLUSTER,
    }
}

/// A TCP/TLS listener from its [`l4::chains`], with the TLS inspector when a chain selects by SNI.
fn l4_listener(name: &str, address: &str, port: u16, l4: l4::Chains, bind: bool) -> Listener {
    let mut l = listener(name, address, port, l4.chains, bind);
    if l4.by_sni {
        l.listener_filters.push(tls_inspector());
    }
    l
}

/// Reads the SNI of a TLS client hello, for chains selected by `server_names`.
fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

fn chain(filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        filters,
        ..Default::default()
    }
}

fn listener(
    name: &str,
    address: &str,
    port: u16,
    filter_chains: Vec<FilterChain>,
    bind: bool,
) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains,
        bind_to_port: Some(BoolValue { value: bind }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// `virtualOutbound`: iptables sends every outbound connection here; `use_original_dst` hands
/// it to the listener for its original destination, and what has none goes to
/// `PassthroughCluster` (ALLOW_ANY) or `BlackHoleCluster` (REGISTRY_ONLY). A connection to
/// 15001 itself is dropped, as istiod does, so that a direct connection does not loop back
/// into the listener.
fn virtual_outbound(policy: OutboundTrafficMode) -> Listener {
    let catch_all = unknown_traffic_cluster(policy);
    let blackhole = FilterChain {
        name: "virtualOutbound-blackhole".into(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(VIRTUAL_OUTBOUND_PORT),
            }),
            ..Default::default()
        }),
        filters: vec![tcp_proxy(names::BLACKHOLE_CLUSTER)],
        ..Default::default()
    };
    let passthrough = FilterChain {
        name: "virtualOutbound-catchall-tcp".into(),
        filters: vec![tcp_proxy(catch_all)],
        ..Default::default()
    };
    Listener {
        name: names::VIRTUAL_OUTBOUND.into(),
        address: Some(socket_address(WILDCARD, VIRTUAL_OUTBOUND_PORT)),
        filter_chains: vec![blackhole, passthrough],
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}
