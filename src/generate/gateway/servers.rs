//! The servers of a proxy's Gateways merged per port, as istiod's `mergeGateways` merges them:
//! a port serves either plain-text HTTP servers (sharing `http.<port>`), or servers told apart
//! by SNI (HTTPS and TLS, terminated or passed through), or one plain TCP server. The first
//! server on a port (Gateways in namespace/name order, then servers in order) decides which;
//! a later server of another kind is skipped with a warning, as istiod skips it.

use std::collections::BTreeMap;

use crate::config::istio::Gateway;
use crate::config::istio::gateway::{Server, ServerTlsMode};
use crate::index::Typed;
use crate::index::unserved_gateway_server;
use crate::model::Protocol;

/// One server of one Gateway.
#[derive(Clone, Copy)]
pub struct Bound<'a> {
    pub gateway: &'a Typed<Gateway>,
    /// Its index in `spec.servers`, for warnings.
    pub index: usize,
    pub server: &'a Server,
}

impl Bound<'_> {
    /// `Gateway ns/name`, for warnings.
    pub fn object(&self) -> String {
        format!("Gateway {}", self.gateway.ns_name())
    }

    /// `spec.servers[i]` followed by `rest`, for warnings.
    pub fn field(&self, rest: &str) -> String {
        format!("spec.servers[{}]{rest}", self.index)
    }

    /// What kind of port the server needs.
    pub fn kind(&self) -> PortKind {
        let protocol = Protocol::parse(&self.server.port.protocol);
        if protocol.is_http() {
            PortKind::Http
        } else if self.server.tls.is_some() {
            PortKind::Tls
        } else {
            PortKind::Tcp
        }
    }

    /// Whether the server terminates TLS (otherwise, on a TLS port, it passes it through).
    pub fn terminates_tls(&self) -> bool {
        self.server.tls.as_ref().is_some_and(|t| {
            !matches!(
                t.mode,
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Plain-text HTTP (`httpsRedirect` included): one route config for the port.
    Http,
    /// HTTPS and TLS servers, one filter chain (or, passed through, several) each, by SNI.
    Tls,
    /// Plain TCP (and the other non-HTTP protocols): one server, its `tcp` routes.
    Tcp,
}

/// The servers of one port.
pub struct PortServers<'a> {
    pub kind: PortKind,
    pub servers: Vec<Bound<'a>>,
}

impl PortServers<'_> {
    /// The address the port's listener binds: the first `bind` a server sets, else every address.
    pub fn bind(&self) -> &str {
        self.servers
            .iter()
            .map(|b| b.server.bind.as_str())
            .find(|b| !b.is_empty())
            .unwrap_or("0.0.0.0")
    }
}

/// The servers pilotfish serves, by port. Servers it cannot serve yet are left out here
/// (`index::references` says why, once per revision).
pub fn merge<'a>(gateways: &[&'a Typed<Gateway>]) -> BTreeMap<u32, PortServers<'a>> {
    let mut ports: BTreeMap<u32, PortServers<'a>> = BTreeMap::new();
    for gateway in gateways {
        for (index, server) in gateway.spec().servers.iter().enumerate() {
            if unserved_gateway_server(server).is_some() {
                continue;
            }
            let bound = Bound {
                gateway,
                index,
                server,
            };
            let kind = bound.kind();
            let Some(port) = ports.get_mut(&server.port.number) else {
                ports.insert(
                    server.port.number,
                    PortServers {
                        kind,
                        servers: vec![bound],
                    },
                );
                continue;
            };
            let joins = match port.kind {
                PortKind::Http | PortKind::Tls => port.kind == kind,
                // istiod merges nothing into a TCP port.
                PortKind::Tcp => false,
            };
            if joins {
                port.servers.push(bound);
            } else {
                let first = &port.servers[0];
                tracing::warn!(
                    object = %bound.object(),
                    field = %bound.field(""),
                    "{} server on port {} conflicts with the {} server {} of {}; skipped",
                    server.port.protocol,
                    server.port.number,
                    first.server.port.protocol,
                    first.field(""),
                    first.object(),
                );
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::index::Index;

    fn index(yaml: &str) -> Index {
        Index::from_yaml(yaml)
    }

    const GATEWAYS: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a, namespace: edge}
spec:
  servers:
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: a}}
  - {port: {number: 443, name: http-on-443, protocol: HTTP}, hosts: [x.example.com]}
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}
  - {port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*']}
  - {port: {number: 15443, name: auto, protocol: TLS}, hosts: ['*.local'], tls: {mode: AUTO_PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b, namespace: edge}
spec:
  servers:
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: [b.example.com], tls: {mode: PASSTHROUGH}}
  - {port: {number: 80, name: http2, protocol: HTTP2}, hosts: [b.example.com]}
  - {port: {number: 9000, name: tcp2, protocol: TCP}, hosts: ['*']}
";

    #[test]
    fn the_first_server_on_a_port_decides_what_joins_it() {
        let index = index(GATEWAYS);
        let refs: Vec<&Typed<Gateway>> = index.gateways.iter().collect();
        let ports = merge(&refs);
        let summary: Vec<(u32, PortKind, Vec<String>)> = ports
            .iter()
            .map(|(port, p)| {
                (
                    *port,
                    p.kind,
                    p.servers
                        .iter()
                        .map(|b| format!("{}:{}", b.gateway.name(), b.server.port.name))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    80,
                    PortKind::Http,
                    vec!["a:http".to_string(), "b:http2".to_string()]
                ),
                // The HTTP server cannot share a port with SNI-selected ones.
                (
                    443,
                    PortKind::Tls,
                    vec!["a:https".to_string(), "b:tls".to_string()]
                ),
                // Only the first TCP server; AUTO_PASSTHROUGH is not served (references warns).
                (9000, PortKind::Tcp, vec!["a:tcp".to_string()]),
            ]
        );
        assert!(ports[&443].servers[0].terminates_tls());
        assert!(!ports[&443].servers[1].terminates_tls());
    }
}
