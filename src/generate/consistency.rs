//! The rules a published config must keep, checked rule by rule (go-control-plane's
//! `Snapshot.Consistent`): Envoy waits forever for an EDS or RDS name nothing serves.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::Message;

use crate::xds::{ProxyResources, TypeUrl};

/// Every violation, as a sentence; empty when the config is consistent.
pub fn check(resources: &ProxyResources) -> Vec<String> {
    let mut problems = Vec::new();
    let endpoints: BTreeSet<&String> = resources
        .get(TypeUrl::ClusterLoadAssignment)
        .keys()
        .collect();
    for (name, r) in resources.get(TypeUrl::Cluster).iter() {
        match r.decode::<Cluster>() {
            Err(e) => problems.push(format!("cluster {name} does not decode: {e}")),
            Ok(c) => {
                if c.name != *name {
                    problems.push(format!("cluster {name} is named {} inside", c.name));
                }
                let eds = matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32);
                let service = c
                    .eds_cluster_config
                    .map(|e| e.service_name)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(c.name);
                if eds && !endpoints.contains(&service) {
                    problems.push(format!(
                        "EDS cluster {name} has no ClusterLoadAssignment {service}"
                    ));
                }
            }
        }
    }
    let routes: BTreeSet<&String> = resources.get(TypeUrl::RouteConfiguration).keys().collect();
    for (name, r) in resources.get(TypeUrl::Listener).iter() {
        let Ok(listener) = r.decode::<Listener>() else {
            problems.push(format!("listener {name} does not decode"));
            continue;
        };
        for filter in listener.filter_chains.iter().flat_map(|c| &c.filters) {
            let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            match HttpConnectionManager::decode(any.value.as_slice()) {
                Ok(HttpConnectionManager {
                    route_specifier: Some(RouteSpecifier::Rds(rds)),
                    ..
                }) => {
                    if !routes.contains(&rds.route_config_name) {
                        problems.push(format!(
                            "listener {name} uses route config {} that is not served",
                            rds.route_config_name
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("listener {name}: HCM does not decode: {e}")),
            }
        }
    }
    problems
}
