//! Outbound clusters: one per service port, and one per DestinationRule subset of it.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::Duration;

use super::endpoint;
use super::mtls::{self, Secure};
use super::names::{BLACKHOLE_CLUSTER, outbound_cluster};
use super::traffic_policy;
use crate::config::istio::DestinationRule;
use crate::config::istio::destination_rule::TrafficPolicy;
use crate::index::services::Labels;
use crate::index::{Index, Resolution, Service, ServicePort};
use crate::xds::{Resource, ResourceMap};

/// istiod's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration {
    seconds: 10,
    nanos: 0,
};

/// Every outbound cluster of the index at once: what the push context builds service by
/// service (`context.rs`), for the generation benchmark.
pub fn build_all(index: &Index) -> ResourceMap {
    let mut out = ResourceMap::new();
    for service in index.services.values() {
        let dr = index.destination_rule(&service.hostname).map(|d| d.spec());
        out.extend(service_clusters(service, dr, None));
    }
    out.extend(always());
    out
}

/// The clusters every proxy gets whatever the services: `BlackHoleCluster`, where routes to
/// unknown hosts go.
pub fn always() -> ResourceMap {
    let blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(CONNECT_TIMEOUT),
        ..Default::default()
    };
    ResourceMap::from([(
        BLACKHOLE_CLUSTER.to_string(),
        Arc::new(Resource::encode(BLACKHOLE_CLUSTER, &blackhole)),
    )])
}

/// Every cluster of `service` under the DestinationRule `dr`, encoded; with in-mesh mTLS for a
/// `secure` proxy (one sent its certificate).
pub fn service_clusters(
    service: &Service,
    dr: Option<&DestinationRule>,
    secure: Option<Secure<'_>>,
) -> ResourceMap {
    let mut out = ResourceMap::new();
    for port in &service.ports {
        for cluster in service_port_clusters(service, port, dr, secure) {
            out.insert(
                cluster.name.clone(),
                Arc::new(Resource::encode(cluster.name.clone(), &cluster)),
            );
        }
    }
    out
}

/// The default cluster and one per subset, with the DestinationRule's policy applied.
fn service_port_clusters(
    service: &Service,
    port: &ServicePort,
    dr: Option<&DestinationRule>,
    secure: Option<Secure<'_>>,
) -> Vec<Cluster> {
    let top = dr.and_then(|d| d.traffic_policy.as_ref());
    let mut clusters = vec![cluster(service, port, "", top, secure)];
    for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
        let merged = traffic_policy::merge_subset_policy(top, subset.traffic_policy.as_ref());
        clusters.push(cluster(
            service,
            port,
            &subset.name,
            merged.as_ref(),
            secure,
        ));
    }
    clusters
}

fn cluster(
    service: &Service,
    port: &ServicePort,
    subset: &str,
    policy: Option<&TrafficPolicy>,
    secure: Option<Secure<'_>>,
) -> Cluster {
    let name = outbound_cluster(port.port, subset, &service.hostname);
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        ..Default::default()
    };
    match service.resolution {
        Resolution::Eds => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name,
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let ty = if service.resolution == Resolution::Dns {
                DiscoveryType::StrictDns
            } else {
                DiscoveryType::LogicalDns
            };
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(ty as i32));
            c.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            c.load_assignment = Some(endpoint::assignment(&c.name, service, port.port, None));
        }
        Resolution::Passthrough => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            c.lb_policy = LbPolicy::ClusterProvided as i32;
        }
    }
    let default_policy = TrafficPolicy::default();
    traffic_policy::apply_traffic_policy(
        &mut c,
        policy.unwrap_or(&default_policy),
        u32::from(port.port),
        port.protocol,
    );
    mtls::apply_upstream(
        &mut c,
        service,
        port.port,
        subset,
        policy.and_then(|p| p.tls.as_ref()),
        secure,
    );
    c
}

/// The config source that says "over this ADS stream".
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// istiod lifts Envoy's default circuit-breaker limits (1024) to the maximum, so a mesh
/// without DestinationRules is never throttled by the proxy.
fn default_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![traffic_policy::default_thresholds()],
        ..Default::default()
    }
}

/// The clusters of `service` whose endpoints come over EDS under the DestinationRule `dr`: name,
/// port, and the subset's labels.
pub fn service_eds_clusters(
    service: &Service,
    dr: Option<&DestinationRule>,
) -> Vec<(String, u16, Option<Labels>)> {
    let mut out = Vec::new();
    if service.resolution == Resolution::Eds {
        for port in &service.ports {
            out.push((
                outbound_cluster(port.port, "", &service.hostname),
                port.port,
                None,
            ));
            for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
                out.push((
                    outbound_cluster(port.port, &subset.name, &service.hostname),
                    port.port,
                    Some(subset.labels.clone()),
                ));
            }
        }
    }
    out
}
