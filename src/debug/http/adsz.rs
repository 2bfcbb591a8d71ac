//! `/debug/adsz`: the live connections in istiod's `AdsClients` shape (`totalClients`,
//! `clients` with `connectionId`, `connectedAt`, `address`, `labels`). istiod's `watches` lists the names
//! each proxy watches; the registry keeps counts, not names (a gateway watches every EDS
//! cluster), so each client carries the registry's own per-type state as `types` instead.

use std::collections::BTreeMap;

use serde::Serialize;

use super::time::rfc3339_ms;
use crate::xds::{ConnectionInfo, TypeStatus, Variant};

#[derive(Debug, Serialize)]
pub struct AdsClients<'a> {
    #[serde(rename = "totalClients")]
    pub total: usize,
    #[serde(rename = "clients", skip_serializing_if = "Vec::is_empty")]
    pub connected: Vec<AdsClient<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdsClient<'a> {
    /// `<proxy id>-<n>`, as istiod names connections.
    pub connection_id: String,
    pub connected_at: String,
    #[serde(rename = "address", skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<&'a str>,
    pub proxy: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub cluster_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub istio_version: &'a str,
    pub variant: Variant,
    /// By type URL: subscription, sent/ACKed versions, last NACK, counters.
    pub types: Vec<&'a TypeStatus>,
}

pub fn adsz(connections: &[ConnectionInfo]) -> AdsClients<'_> {
    AdsClients {
        total: connections.len(),
        connected: connections
            .iter()
            .map(|c| AdsClient {
                connection_id: format!("{}-{}", c.proxy_id, c.id),
                connected_at: rfc3339_ms(c.connected_at_unix_ms),
                peer_address: c.peer.as_deref(),
                proxy: &c.proxy_id,
                labels: &c.proxy.labels,
                cluster_id: &c.cluster_id,
                istio_version: &c.istio_version,
                variant: c.variant,
                types: c.types.values().collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{AckState, TypeUrl};

    #[test]
    fn lists_each_connection_with_its_types() {
        let mut c = super::super::syncz::tests::connection(
            "sidecar~10.0.0.1~a.default~default.svc.cluster.local",
            &[(TypeUrl::Cluster, "n1", AckState::Acked)],
        );
        c.id = 7;
        c.connected_at_unix_ms = 1_735_689_600_000;
        let json = serde_json::to_value(adsz(&[c])).unwrap();
        assert_eq!(json["totalClients"], 1);
        let client = &json["clients"][0];
        assert_eq!(
            client["connectionId"],
            "sidecar~10.0.0.1~a.default~default.svc.cluster.local-7"
        );
        assert_eq!(client["connectedAt"], "2025-01-01T00:00:00.000Z");
        assert_eq!(client["address"], "127.0.0.1:40000");
        assert_eq!(client["clusterId"], "Kubernetes");
        assert_eq!(client["istioVersion"], "1.28.0");
        assert_eq!(client["types"][0]["type_url"], TypeUrl::Cluster.url());
        assert_eq!(client["types"][0]["state"], "acked");
    }

    #[test]
    fn no_connections_is_an_empty_total() {
        let json = serde_json::to_value(adsz(&[])).unwrap();
        assert_eq!(json, serde_json::json!({"totalClients": 0}));
    }
}
