//! ClusterLoadAssignments: a service port's ready endpoints, grouped by locality, filtered by
//! a subset's labels.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, Locality, Pipe, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::cluster::service_eds_clusters;
use crate::config::istio::DestinationRule;
use crate::index::services::{Labels, selects};
use crate::index::{Index, Resolution, Service};
use crate::xds::{Resource, ResourceMap};

/// The assignment of every EDS cluster of the index at once: what the push context builds
/// service by service (`context.rs`), for the generation benchmark.
pub fn build_all(index: &Index) -> ResourceMap {
    let mut out = ResourceMap::new();
    for service in index.services.values() {
        out.extend(service_assignments(
            service,
            index.destination_rule(&service.hostname).map(|d| d.spec()),
        ));
    }
    out
}

/// The assignments of `service`'s EDS clusters under the DestinationRule `dr`.
pub fn service_assignments(service: &Service, dr: Option<&DestinationRule>) -> ResourceMap {
    let mut out = ResourceMap::new();
    for (name, port, labels) in service_eds_clusters(service, dr) {
        let cla = assignment(&name, service, port, labels.as_ref());
        out.insert(name.clone(), Arc::new(Resource::encode(name, &cla)));
    }
    out
}

/// The endpoints of one service port. Every locality carries a `load_balancing_weight`:
/// gRPC's xDS client ignores localities without one.
pub fn assignment(
    cluster: &str,
    service: &Service,
    port: u16,
    subset: Option<&Labels>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in &service.endpoints {
        if !ep.ready || subset.is_some_and(|s| !selects(s, &ep.labels)) {
            continue;
        }
        let Some(target) = ep.ports.get(&port) else {
            continue;
        };
        let address = match endpoint_address(&ep.address, *target, service.resolution) {
            Some(a) => a,
            None => {
                // index::references reports it once, naming the object.
                tracing::debug!(service = %service.hostname, address = %ep.address, "endpoint skipped: EDS carries only IPs and unix:// paths");
                continue;
            }
        };
        by_locality
            .entry(ep.locality.as_str())
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(address),
                    ..Default::default()
                })),
                health_status: HealthStatus::Healthy as i32,
                load_balancing_weight: Some(UInt32Value {
                    value: ep.weight.max(1),
                }),
                metadata: if ep.plaintext_ports.contains(target) {
                    None
                } else {
                    super::mtls::endpoint_metadata(&ep.labels)
                },
            });
    }
    let endpoints = by_locality
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let weight = lb_endpoints
                .iter()
                .filter_map(|e| e.load_balancing_weight)
                .map(|w| w.value)
                .sum::<u32>();
            let mut parts = locality.splitn(3, '/');
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: parts.next().unwrap_or_default().to_string(),
                    zone: parts.next().unwrap_or_default().to_string(),
                    sub_zone: parts.next().unwrap_or_default().to_string(),
                }),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value {
                    value: weight.max(1),
                }),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints,
        ..Default::default()
    }
}

/// An endpoint's address as Envoy takes it: `unix://` paths become pipes; an EDS cluster takes
/// only IPs (Envoy rejects the whole EDS response over one host name), while DNS clusters
/// resolve names themselves.
fn endpoint_address(address: &str, port: u16, resolution: Resolution) -> Option<Address> {
    if let Some(path) = address.strip_prefix("unix://") {
        return Some(pipe_address(path));
    }
    let is_ip = address.parse::<std::net::IpAddr>().is_ok();
    (is_ip || resolution != Resolution::Eds).then(|| socket_address(address, port))
}

pub fn pipe_address(path: &str) -> Address {
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.to_string(),
            mode: 0,
        })),
    }
}

pub fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_envoy_accepts() {
        let pipe = endpoint_address("unix:///var/run/app.sock", 80, Resolution::Eds).unwrap();
        assert!(
            matches!(pipe.address, Some(address::Address::Pipe(Pipe { ref path, .. })) if path == "/var/run/app.sock")
        );
        assert!(endpoint_address("10.0.0.1", 80, Resolution::Eds).is_some());
        assert!(endpoint_address("2001:db8::1", 80, Resolution::Eds).is_some());
        assert!(
            endpoint_address("db.example.com", 80, Resolution::Eds).is_none(),
            "EDS cannot carry names"
        );
        assert!(endpoint_address("db.example.com", 80, Resolution::Dns).is_some());
    }
}
