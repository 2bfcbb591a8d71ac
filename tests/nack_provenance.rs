//! A NACK named by the Istio objects behind it, over real gRPC against a push context built from
//! YAML: the registry, CSDS, the published rejection and the metric all name the VirtualService
//! (or the DestinationRule and Service) the rejected resources came from.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use pilotfish::config::{Kind, ObjectKey};
use pilotfish::model::MeshConfig;
use pilotfish::store::{Entry, Snapshot as Store};
use pilotfish::xds::connection::Rejection;
use pilotfish::xds::{Connections, RunningServer, Snapshot, TypeUrl};
use tokio::sync::{broadcast, watch};
use tokio::time::timeout;

#[path = "support/ads.rs"]
mod ads;
use ads::SotwProxy;
const APP: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(5);

const CONFIG: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
";

fn context() -> Arc<dyn Snapshot> {
    let parsed = pilotfish::config::parse::parse_text("nack.yaml", CONFIG).unwrap();
    let store = Store::of(parsed.objects.into_iter().map(Entry::from_file).collect());
    pilotfish::push::build(&store, &MeshConfig::default(), None)
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

async fn next(rejections: &mut broadcast::Receiver<Rejection>) -> Rejection {
    timeout(WAIT, rejections.recv())
        .await
        .expect("no rejection published")
        .unwrap()
}

#[tokio::test]
async fn a_nack_names_the_objects_behind_the_rejected_resources() {
    let (_publish, snapshots) = watch::channel(context());
    let connections = Connections::new();
    let mut rejections = connections.subscribe_rejections();
    let server = RunningServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        snapshots,
        Arc::clone(&connections),
    )
    .await
    .unwrap();
    let mut proxy = SotwProxy::connect(
        server.url(),
        Node {
            id: APP.into(),
            ..Default::default()
        },
    )
    .await;

    // A route config rejected by an error that names no resource: all it carried is traced.
    let rds = proxy
        .subscribe(TypeUrl::RouteConfiguration, &["9080"])
        .await;
    assert_eq!(rds.resources.len(), 1, "route config 9080 is served");
    let error = "Only unique values for domains are permitted. Duplicate entry of domain reviews";
    proxy.nack(&rds, error).await;
    let rejection = next(&mut rejections).await;
    assert_eq!(
        (rejection.proxy_id.as_str(), rejection.type_url.as_str()),
        (APP, TypeUrl::RouteConfiguration.url())
    );
    assert_eq!(rejection.error, error);
    let vs = key(Kind::VirtualService, "reviews");
    assert_eq!(rejection.sources, std::slice::from_ref(&vs));

    let traced = connections.wait_for(|c| {
        c.by_proxy(APP)
            .and_then(|i| i.type_status(TypeUrl::RouteConfiguration.url()).cloned())
            .and_then(|t| t.last_nack)
            .is_some_and(|n| !n.sources.is_empty())
    });
    timeout(WAIT, traced)
        .await
        .expect("the registry never named the objects");
    let nack = connections
        .by_proxy(APP)
        .and_then(|i| i.type_status(TypeUrl::RouteConfiguration.url()).cloned())
        .and_then(|t| t.last_nack)
        .unwrap();
    assert_eq!(nack.sources, ["VirtualService default/reviews"]);

    let mut csds = ClientStatusDiscoveryServiceClient::connect(server.url())
        .await
        .unwrap();
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let details = status.config[0]
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url == TypeUrl::RouteConfiguration.url())
        .and_then(|g| g.error_state.as_ref())
        .map(|e| e.details.clone());
    assert_eq!(
        details.as_deref(),
        Some(format!("{error} (from VirtualService default/reviews)").as_str())
    );

    let metrics = pilotfish::metrics::global();
    assert_eq!(
        metrics.rejected_objects(TypeUrl::RouteConfiguration, &vs),
        1
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("# TYPE pilotfish_xds_rejected_objects counter")
            && text.contains(
                "pilotfish_xds_rejected_objects{type=\"rds\",kind=\"VirtualService\",namespace=\"default\",name=\"reviews\"} 1"
            ),
        "{text}"
    );

    // A cluster rejected by an error that names it: only that one is traced, to its Service
    // and the DestinationRule that shaped it, not to every cluster the response carried.
    let cds = proxy.subscribe(TypeUrl::Cluster, &[]).await;
    assert!(
        cds.resources.len() > 2,
        "CDS carries more than the rejected cluster"
    );
    let cluster = "outbound|9080|v1|reviews.default.svc.cluster.local";
    proxy
        .nack(
            &cds,
            &format!("Error adding/updating cluster(s) {cluster}: bad lb_policy"),
        )
        .await;
    let rejection = next(&mut rejections).await;
    assert_eq!(
        rejection.sources,
        [
            key(Kind::DestinationRule, "reviews"),
            key(Kind::Service, "reviews")
        ]
    );
    server.shutdown().await.unwrap();
}
