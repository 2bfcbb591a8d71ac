//! `/debug/endpointShardz`: endpoints by hostname, then namespace, as istiod's
//! `EndpointIndex.Shardz()`; pilotfish has one registry, so each namespace holds the endpoint
//! list itself instead of istiod's per-cluster shards. Each entry is istiod's `IstioEndpoint`:
//! one per endpoint and service port, `HealthStatus` as istiod's number (1 healthy,
//! 2 unhealthy).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::registryz::CLUSTER_ID;
use crate::index::Service;

/// istiod's `model.HealthStatus` values.
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

pub fn endpoint_shardz(
    services: &BTreeMap<String, Arc<Service>>,
) -> BTreeMap<String, BTreeMap<String, Vec<Value>>> {
    let mut shards: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for s in services.values() {
        let endpoints = s
            .endpoints
            .iter()
            .flat_map(|e| {
                s.ports.iter().map(move |port| {
                    json!({
                        "Labels": e.labels,
                        "Addresses": [e.address],
                        "ServicePortName": port.name,
                        "ServiceAccount": e.service_account,
                        "Locality": { "Label": e.locality, "ClusterID": CLUSTER_ID },
                        "EndpointPort": e.ports.get(&port.port).copied().unwrap_or(port.port),
                        "LbWeight": e.weight,
                        "HealthStatus": if e.ready { HEALTHY } else { UNHEALTHY },
                        "Namespace": s.namespace,
                    })
                })
            })
            .collect();
        shards
            .entry(s.hostname.clone())
            .or_default()
            .insert(s.namespace.clone(), endpoints);
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_host_then_namespace() {
        let shards = endpoint_shardz(&super::super::registryz::tests::services());
        let web = &shards["web.shop.svc.cluster.local"]["shop"];
        assert_eq!(web.len(), 2, "two endpoints, one port: {web:?}");
        assert_eq!(web[0]["Addresses"], json!(["10.1.0.1"]));
        assert_eq!(
            web[0]["EndpointPort"], 8080,
            "the target port, not the service port"
        );
        assert_eq!(web[0]["ServicePortName"], "http");
        assert_eq!(web[0]["Labels"]["app"], "web");
        assert_eq!(web[0]["ServiceAccount"], "web");
        assert_eq!(web[0]["Locality"]["Label"], "eu/west-1a/");
        assert_eq!(web[0]["HealthStatus"], HEALTHY);
        assert_eq!(web[1]["HealthStatus"], UNHEALTHY);
        assert_eq!(
            shards["api.example.com"]["shop"].len(),
            0,
            "a service without endpoints is listed, empty"
        );
    }
}
