//! `/debug/syncz`: istiod's `SyncStatus` per connected proxy, what `istioctl proxy-status`
//! reads. As in istiod, `*_sent` is the nonce of the last response of the type and `*_acked`
//! the nonce the proxy last ACKed; the registry keeps the ACKed version, not nonce, so a type
//! counts as ACKed at the sent nonce only while its last response stands ACKed (pending or
//! NACKed: empty, which istioctl shows as STALE, as it would for istiod).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::NodeType;
use crate::xds::{AckState, ConnectionInfo, TypeStatus, TypeUrl};

/// istiod's `SyncStatus` (pilot/pkg/xds/debug.go), field for field in JSON.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct SyncStatus {
    /// The proxy's cluster (node metadata `CLUSTER_ID`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
    #[serde(rename = "proxy")]
    pub proxy_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub proxy_type: String,
    /// Node metadata `ISTIO_VERSION`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub istio_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_sent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_acked: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub listener_sent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub listener_acked: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub route_sent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub route_acked: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint_sent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint_acked: String,
    /// By type URL, every type the proxy watches (SDS included).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, ResourceStatus>,
}

/// istiod's per-type `ResourceStatus`.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct ResourceStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub acked: String,
    #[serde(rename = "lastError", skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

/// The sync status of each connection, optionally only proxies of `namespace` (istiod's
/// `?namespace=`).
pub fn syncz(connections: &[ConnectionInfo], namespace: Option<&str>) -> Vec<SyncStatus> {
    connections
        .iter()
        .filter(|c| namespace.is_none_or(|ns| c.proxy.namespace == ns))
        .map(sync_status)
        .collect()
}

fn sync_status(c: &ConnectionInfo) -> SyncStatus {
    let nonces = |ty: TypeUrl| {
        c.type_status(ty.url())
            .map(|t| (sent(t), acked(t)))
            .unwrap_or_default()
    };
    let (cluster_sent, cluster_acked) = nonces(TypeUrl::Cluster);
    let (listener_sent, listener_acked) = nonces(TypeUrl::Listener);
    let (route_sent, route_acked) = nonces(TypeUrl::RouteConfiguration);
    let (endpoint_sent, endpoint_acked) = nonces(TypeUrl::ClusterLoadAssignment);
    SyncStatus {
        cluster_id: c.cluster_id.clone(),
        proxy_id: c.proxy_id.clone(),
        proxy_type: match c.proxy.node_type {
            NodeType::Sidecar => "sidecar",
            NodeType::Router => "router",
        }
        .to_string(),
        istio_version: c.istio_version.clone(),
        cluster_sent,
        cluster_acked,
        listener_sent,
        listener_acked,
        route_sent,
        route_acked,
        endpoint_sent,
        endpoint_acked,
        resources: c
            .types
            .iter()
            .map(|(url, t)| {
                let status = ResourceStatus {
                    sent: sent(t),
                    acked: acked(t),
                    last_error: t.last_nack.as_ref().map(|n| n.detail()).unwrap_or_default(),
                };
                (url.clone(), status)
            })
            .collect(),
    }
}

fn sent(t: &TypeStatus) -> String {
    t.sent_nonce.clone().unwrap_or_default()
}

fn acked(t: &TypeStatus) -> String {
    match t.state {
        AckState::Acked => sent(t),
        AckState::None | AckState::Pending | AckState::Nacked => String::new(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Proxy;
    use crate::xds::{Nack, Variant};

    pub(crate) fn connection(
        proxy_id: &str,
        types: &[(TypeUrl, &str, AckState)],
    ) -> ConnectionInfo {
        ConnectionInfo {
            id: 1,
            proxy_id: proxy_id.into(),
            cluster_id: "Kubernetes".into(),
            istio_version: "1.28.0".into(),
            proxy: Arc::new(Proxy::from_id(proxy_id).unwrap()),
            peer: Some("127.0.0.1:40000".into()),
            variant: Variant::Sotw,
            connected_at_unix_ms: 0,
            types: types
                .iter()
                .map(|(ty, nonce, state)| {
                    let status = TypeStatus {
                        type_url: ty.url().into(),
                        sent_nonce: Some(nonce.to_string()),
                        sent_version: Some(format!("v-{nonce}")),
                        state: *state,
                        last_nack: (*state == AckState::Nacked).then(|| Nack {
                            version: format!("v-{nonce}"),
                            nonce: nonce.to_string(),
                            error: "no filter chains".into(),
                            resources: vec![],
                            sources: vec!["VirtualService default/web".into()],
                            at_unix_ms: 0,
                        }),
                        ..Default::default()
                    };
                    (ty.url().to_string(), status)
                })
                .collect(),
        }
    }

    const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
    const GW: &str = "router~10.0.0.9~gw.istio-system~istio-system.svc.cluster.local";

    #[test]
    fn acked_types_show_the_sent_nonce_as_acked() {
        let c = connection(
            APP,
            &[
                (TypeUrl::Cluster, "n1", AckState::Acked),
                (TypeUrl::Listener, "n2", AckState::Pending),
                (TypeUrl::RouteConfiguration, "n3", AckState::Nacked),
            ],
        );
        let [status] = &syncz(&[c], None)[..] else {
            panic!("one proxy, one status")
        };
        assert_eq!(status.proxy_type, "sidecar");
        assert_eq!(status.cluster_id, "Kubernetes");
        assert_eq!(status.istio_version, "1.28.0");
        assert_eq!(
            (status.cluster_sent.as_str(), status.cluster_acked.as_str()),
            ("n1", "n1")
        );
        assert_eq!(
            (
                status.listener_sent.as_str(),
                status.listener_acked.as_str()
            ),
            ("n2", "")
        );
        assert_eq!(
            (status.route_sent.as_str(), status.route_acked.as_str()),
            ("n3", "")
        );
        assert_eq!(status.endpoint_sent, "", "nothing sent");
        let rds = &status.resources[TypeUrl::RouteConfiguration.url()];
        assert_eq!(
            rds.last_error,
            "no filter chains (from VirtualService default/web)"
        );

        let json = serde_json::to_value(status).unwrap();
        assert_eq!(json["proxy"], APP);
        assert_eq!(json["cluster_acked"], "n1");
        assert!(
            json.get("endpoint_sent").is_none(),
            "omitted when empty, as in istiod: {json}"
        );
    }

    #[test]
    fn namespace_filters_proxies() {
        let conns = [connection(APP, &[]), connection(GW, &[])];
        let all = syncz(&conns, None);
        assert_eq!(all.len(), 2);
        let gw = syncz(&conns, Some("istio-system"));
        assert_eq!(gw.len(), 1);
        assert_eq!(gw[0].proxy_id, GW);
        assert_eq!(gw[0].proxy_type, "router");
    }
}
