//! The ADS server over real gRPC on loopback, driven by envoy-types' generated client and fed
//! by a fake snapshot: what a stock Envoy would see.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilotfish::model::Proxy;
use pilotfish::xds::resource::version_of;
use pilotfish::xds::{
    AckState, Connections, ProxyResources, Resource, RunningServer, Snapshot, TypeUrl,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const NODE_ID: &str = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
const CDS: TypeUrl = TypeUrl::Cluster;
const EDS: TypeUrl = TypeUrl::ClusterLoadAssignment;
const LDS: TypeUrl = TypeUrl::Listener;
const RDS: TypeUrl = TypeUrl::RouteConfiguration;

/// Every proxy gets the same resources.
struct FakeSnapshot {
    revision: u64,
    resources: Arc<ProxyResources>,
}

impl Snapshot for FakeSnapshot {
    fn revision(&self) -> u64 {
        self.revision
    }
    fn resources_for(&self, _proxy: &Proxy) -> Arc<ProxyResources> {
        Arc::clone(&self.resources)
    }
}

type Config = HashMap<TypeUrl, Vec<Arc<Resource>>>;

fn snapshot(revision: u64, config: &Config) -> Arc<dyn Snapshot> {
    let mut resources = ProxyResources::default();
    for (ty, list) in config {
        resources.set(
            *ty,
            list.iter()
                .map(|r| (r.name.clone(), Arc::clone(r)))
                .collect(),
        );
    }
    Arc::new(FakeSnapshot {
        revision,
        resources: Arc::new(resources),
    })
}

fn cluster(name: &str, alt: &str) -> Arc<Resource> {
    Arc::new(Resource::encode(
        name,
        &Cluster {
            name: name.into(),
            alt_stat_name: alt.into(),
            ..Default::default()
        },
    ))
}

/// A cluster that warms only once Envoy has its endpoints (EDS, watching its own name).
fn eds_cluster(name: &str) -> Arc<Resource> {
    let ty = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: ty,
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &c))
}

fn cla(name: &str, localities: usize) -> Arc<Resource> {
    let c = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![Default::default(); localities],
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &c))
}

fn listener(name: &str) -> Arc<Resource> {
    Arc::new(Resource::encode(
        name,
        &Listener {
            name: name.into(),
            ..Default::default()
        },
    ))
}

fn route(name: &str) -> Arc<Resource> {
    Arc::new(Resource::encode(
        name,
        &RouteConfiguration {
            name: name.into(),
            ..Default::default()
        },
    ))
}

fn base_config() -> Config {
    HashMap::from([
        (CDS, vec![cluster("a", "1"), cluster("b", "1")]),
        (EDS, vec![cla("a", 1), cla("b", 1)]),
        (LDS, vec![listener("l1")]),
        (RDS, vec![route("r1"), route("r2")]),
    ])
}

struct Harness {
    server: RunningServer,
    publish: watch::Sender<Arc<dyn Snapshot>>,
    connections: Arc<Connections>,
    revision: u64,
}

impl Harness {
    async fn start(config: &Config) -> Harness {
        let (publish, snapshots) = watch::channel(snapshot(1, config));
        let connections = Connections::new();
        let server = RunningServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            snapshots,
            Arc::clone(&connections),
        )
        .await
        .unwrap();
        Harness {
            server,
            publish,
            connections,
            revision: 1,
        }
    }

    fn publish(&mut self, config: &Config) {
        self.revision += 1;
        self.publish.send_replace(snapshot(self.revision, config));
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(self.server.url())
            .await
            .unwrap()
    }

    async fn sotw(&self) -> SotwClient {
        let (tx, rx) = mpsc::channel(16);
        let responses = self
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        SotwClient {
            tx,
            responses,
            first: true,
        }
    }

    async fn delta(&self) -> DeltaClient {
        let (tx, rx) = mpsc::channel(16);
        let responses = self
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        DeltaClient {
            tx,
            responses,
            first: true,
        }
    }

    /// Waits until the registry shows `pred` for our proxy's `ty`.
    async fn wait_type(&self, ty: TypeUrl, pred: impl Fn(&pilotfish::xds::TypeStatus) -> bool) {
        let wait = self.connections.wait_for(|c| {
            c.by_proxy(NODE_ID)
                .and_then(|i| i.types.get(ty.url()).map(&pred))
                .unwrap_or(false)
        });
        timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("registry never matched: {:#?}", self.connections.list()));
    }
}

fn node() -> Node {
    Node {
        id: NODE_ID.into(),
        cluster: "app".into(),
        ..Default::default()
    }
}

const WAIT: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(300);

struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
    first: bool,
}

impl SotwClient {
    async fn send(&mut self, ty: TypeUrl, names: &[&str], version: &str, nonce: &str) {
        let mut req = DiscoveryRequest {
            type_url: ty.url().into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        };
        if std::mem::take(&mut self.first) {
            req.node = Some(node());
        }
        self.tx.send(req).await.unwrap();
    }

    async fn ack(&mut self, names: &[&str], r: &DiscoveryResponse) {
        let ty = TypeUrl::from_url(&r.type_url).unwrap();
        self.send(ty, names, &r.version_info, &r.nonce).await;
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        timeout(WAIT, self.responses.message())
            .await
            .expect("no response")
            .unwrap()
            .unwrap()
    }

    async fn silence(&mut self) {
        if let Ok(r) = timeout(SILENCE, self.responses.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }
}

struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
    first: bool,
}

impl DeltaClient {
    async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if std::mem::take(&mut self.first) {
            req.node = Some(node());
        }
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        timeout(WAIT, self.responses.message())
            .await
            .expect("no response")
            .unwrap()
            .unwrap()
    }

    async fn silence(&mut self) {
        if let Ok(r) = timeout(SILENCE, self.responses.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }
}

fn dreq(ty: TypeUrl, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.url().into(),
        resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// The names inside a SotW response, decoded from the wire as Envoy would.
fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|any| match TypeUrl::from_url(&any.type_url) {
            Some(CDS) => Cluster::decode(any.value.as_slice()).unwrap().name,
            Some(EDS) => {
                ClusterLoadAssignment::decode(any.value.as_slice())
                    .unwrap()
                    .cluster_name
            }
            Some(LDS) => Listener::decode(any.value.as_slice()).unwrap().name,
            Some(RDS) => {
                RouteConfiguration::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            other => panic!("unexpected resource type {other:?}"),
        })
        .collect()
}

fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test]
async fn sotw_initial_wildcard_lds_and_cds() {
    let config = base_config();
    let h = Harness::start(&config).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, CDS.url());
    assert_eq!(names(&cds), ["a", "b"]);
    assert_eq!(cds.version_info, version_of(&config[&CDS]));
    assert!(!cds.nonce.is_empty());
    assert!(
        cds.control_plane
            .is_some_and(|cp| cp.identifier.starts_with("pilotfish"))
    );

    c.send(LDS, &[], "", "").await;
    let lds = c.recv().await;
    assert_eq!(names(&lds), ["l1"]);
    assert_eq!(lds.version_info, version_of(&config[&LDS]));

    // Shutting down ends open streams cleanly instead of waiting on them forever.
    timeout(WAIT, h.server.shutdown())
        .await
        .expect("shutdown hangs")
        .unwrap();
    let end = timeout(WAIT, c.responses.message())
        .await
        .expect("stream not ended");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn sotw_ack_updates_state() {
    let h = Harness::start(&base_config()).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let cds = c.recv().await;
    h.wait_type(CDS, |t| t.state == AckState::Pending).await;
    c.ack(&[], &cds).await;
    h.wait_type(CDS, |t| t.state == AckState::Acked).await;
    let info = h.connections.by_proxy(NODE_ID).unwrap();
    let t = &info.types[CDS.url()];
    assert_eq!(t.acked_version.as_deref(), Some(cds.version_info.as_str()));
    assert_eq!(t.sent_version.as_deref(), Some(cds.version_info.as_str()));
    assert_eq!((t.responses, t.acks, t.nacks, t.resources), (1, 1, 0, 2));
    c.silence().await;
}

#[tokio::test]
async fn sotw_nack_is_recorded_and_not_resent() {
    let mut config = base_config();
    let mut h = Harness::start(&config).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let v1 = c.recv().await;
    c.ack(&[], &v1).await;
    c.send(EDS, &["a"], "", "").await;
    let eds = c.recv().await;
    c.ack(&["a"], &eds).await;
    h.wait_type(EDS, |t| t.state == AckState::Acked).await;

    config.insert(CDS, vec![cluster("a", "broken"), cluster("b", "1")]);
    h.publish(&config);
    let v2 = c.recv().await;
    assert_eq!(v2.type_url, CDS.url());
    let mut nack = DiscoveryRequest {
        type_url: CDS.url().into(),
        version_info: v1.version_info.clone(),
        response_nonce: v2.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster a: bad".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    c.tx.send(nack.clone()).await.unwrap();
    h.wait_type(CDS, |t| t.state == AckState::Nacked).await;
    let t = h.connections.by_proxy(NODE_ID).unwrap().types[CDS.url()].clone();
    let last = t.last_nack.unwrap();
    assert_eq!(last.error, "cluster a: bad");
    assert_eq!(last.version, v2.version_info);
    assert_eq!(last.resources, ["a", "b"]);
    assert_eq!(t.acked_version.as_deref(), Some(v1.version_info.as_str()));
    c.silence().await;

    // Another snapshot that leaves CDS alone: only EDS goes out, the rejected CDS does not.
    config.insert(EDS, vec![cla("a", 2), cla("b", 1)]);
    h.publish(&config);
    let r = c.recv().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (EDS.url(), vec!["a".to_string()])
    );
    c.silence().await;

    // Envoy repeating its NACK is recorded again, and still answered with nothing.
    nack.version_info = v1.version_info.clone();
    c.tx.send(nack).await.unwrap();
    h.wait_type(CDS, |t| t.nacks == 2).await;
    c.silence().await;
}

#[tokio::test]
async fn sotw_eds_only_change_sends_only_eds_with_subscribed_names() {
    let mut config = base_config();
    config.insert(EDS, vec![cla("a", 1), cla("b", 1), cla("c", 1)]);
    let mut h = Harness::start(&config).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let cds = c.recv().await;
    c.ack(&[], &cds).await;
    c.send(EDS, &["a", "b"], "", "").await;
    let eds = c.recv().await;
    assert_eq!(names(&eds), ["a", "b"], "only the subscribed names");
    c.ack(&["a", "b"], &eds).await;
    c.send(LDS, &[], "", "").await;
    let lds = c.recv().await;
    c.ack(&[], &lds).await;
    c.send(RDS, &["r1"], "", "").await;
    let rds = c.recv().await;
    assert_eq!(names(&rds), ["r1"], "only the subscribed names");
    c.ack(&["r1"], &rds).await;
    h.wait_type(RDS, |t| t.state == AckState::Acked).await;

    // Change an unsubscribed endpoint set: nothing at all.
    config.insert(EDS, vec![cla("a", 1), cla("b", 1), cla("c", 5)]);
    h.publish(&config);
    c.silence().await;
    // Change a subscribed one: one EDS response, with that one.
    config.insert(EDS, vec![cla("a", 1), cla("b", 3), cla("c", 5)]);
    h.publish(&config);
    let r = c.recv().await;
    assert_eq!(r.type_url, EDS.url());
    assert_eq!(names(&r), ["b"]);
    assert_eq!(r.version_info, version_of([&cla("a", 1), &cla("b", 3)]));
    c.silence().await;
}

#[tokio::test]
async fn sotw_reconnect_with_last_version_sees_the_same_version() {
    let h = Harness::start(&base_config()).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let first = c.recv().await;
    drop(c);
    timeout(WAIT, h.connections.wait_for(|c| c.is_empty()))
        .await
        .expect("connection not dropped");

    let mut c = h.sotw().await;
    c.send(CDS, &[], &first.version_info, "").await;
    let again = c.recv().await;
    assert_eq!(again.version_info, first.version_info);
    assert_eq!(names(&again), names(&first));
}

#[tokio::test]
async fn request_without_node_is_invalid_argument() {
    let h = Harness::start(&base_config()).await;
    let mut c = h.sotw().await;
    c.first = false;
    c.send(CDS, &[], "", "").await;
    let err = timeout(WAIT, c.responses.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("node"), "{}", err.message());

    let mut c = h.sotw().await;
    c.first = false;
    c.tx.send(DiscoveryRequest {
        type_url: CDS.url().into(),
        node: Some(Node {
            id: "not-istio".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = timeout(WAIT, c.responses.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("<type>~<ip>"), "{}", err.message());
    assert!(h.connections.is_empty());
}

#[tokio::test]
async fn unknown_type_gets_an_empty_response() {
    let h = Harness::start(&base_config()).await;
    let mut c = h.sotw().await;
    let url = "type.googleapis.com/envoy.service.runtime.v3.Runtime";
    c.tx.send(DiscoveryRequest {
        type_url: url.into(),
        node: Some(node()),
        resource_names: vec!["rtds".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c.recv().await;
    assert_eq!(r.type_url, url);
    assert!(r.resources.is_empty());
    c.first = false;
    c.send(CDS, &[], "", "").await;
    assert_eq!(names(&c.recv().await), ["a", "b"], "the stream survives");
}

#[tokio::test]
async fn delta_initial_update_and_removal() {
    let mut config = base_config();
    let mut h = Harness::start(&config).await;
    let mut c = h.delta().await;
    c.send(dreq(CDS, &[], "")).await;
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert_eq!(r.resources[0].version, config[&CDS][0].version());
    assert_eq!(
        Cluster::decode(r.resources[1].resource.as_ref().unwrap().value.as_slice())
            .unwrap()
            .name,
        "b"
    );
    assert!(r.removed_resources.is_empty());
    c.send(dreq(CDS, &[], &r.nonce)).await;
    h.wait_type(CDS, |t| t.state == AckState::Acked).await;

    config.insert(CDS, vec![cluster("a", "2"), cluster("b", "1")]);
    h.publish(&config);
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["a"], "only the changed resource");
    assert_eq!(r.resources[0].version, cluster("a", "2").version());
    assert!(r.removed_resources.is_empty());
    c.send(dreq(CDS, &[], &r.nonce)).await;

    config.insert(CDS, vec![cluster("a", "2")]);
    h.publish(&config);
    let r = c.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["b"]);
    c.silence().await;
}

#[tokio::test]
async fn delta_initial_resource_versions_suppress_resends() {
    let config = base_config();
    let h = Harness::start(&config).await;
    let mut c = h.delta().await;
    let mut req = dreq(EDS, &["a", "b"], "");
    req.initial_resource_versions = HashMap::from([
        ("a".to_string(), config[&EDS][0].version()),
        ("b".into(), "old".into()),
    ]);
    c.send(req).await;
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["b"], "a is already held at this version");
    c.send(dreq(EDS, &[], &r.nonce)).await;
    h.wait_type(EDS, |t| t.state == AckState::Acked && t.resources == 2)
        .await;
    c.silence().await;
}

/// Before: EDS cluster a, listener l1, route r1. After: cluster c2 is added and r1 changes (to
/// route to it), as a new Service plus a VirtualService edit do.
fn push_order_configs() -> (Config, Config) {
    let before = HashMap::from([
        (CDS, vec![eds_cluster("a")]),
        (EDS, vec![cla("a", 1), cla("c2", 1)]),
        (LDS, vec![listener("l1")]),
        (RDS, vec![route("r1")]),
    ]);
    let mut after = before.clone();
    after.insert(CDS, vec![eds_cluster("a"), eds_cluster("c2")]);
    after.insert(RDS, vec![Arc::new(Resource::encode("r1", &route_to("c2")))]);
    (before, after)
}

fn route_to(cluster: &str) -> RouteConfiguration {
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    let route = Route {
        action: Some(Action::Route(action)),
        ..Default::default()
    };
    let vhost = VirtualHost {
        name: "web".into(),
        routes: vec![route],
        ..Default::default()
    };
    RouteConfiguration {
        name: "r1".into(),
        virtual_hosts: vec![vhost],
        ..Default::default()
    }
}

#[tokio::test]
async fn sotw_route_to_a_new_cluster_waits_for_its_endpoints() {
    let (before, after) = push_order_configs();
    let mut h = Harness::start(&before).await;
    let mut c = h.sotw().await;
    for (ty, sub) in [
        (CDS, vec![]),
        (EDS, vec!["a"]),
        (LDS, vec![]),
        (RDS, vec!["r1"]),
    ] {
        c.send(ty, &sub, "", "").await;
        let r = c.recv().await;
        c.ack(&sub, &r).await;
    }
    h.wait_type(RDS, |t| t.state == AckState::Acked).await;
    let eds_nonce = h.connections.by_proxy(NODE_ID).unwrap().types[EDS.url()]
        .sent_nonce
        .clone();

    h.publish(&after);
    let cds = c.recv().await;
    assert_eq!(
        (cds.type_url.as_str(), names(&cds)),
        (CDS.url(), vec!["a".into(), "c2".into()])
    );
    c.silence().await;
    c.ack(&[], &cds).await;
    c.silence().await;
    // Envoy asks for the new cluster's endpoints once it has applied CDS.
    c.send(
        EDS,
        &["a", "c2"],
        "",
        eds_nonce.as_deref().unwrap_or_default(),
    )
    .await;
    let eds = c.recv().await;
    assert_eq!(
        (eds.type_url.as_str(), names(&eds)),
        (EDS.url(), vec!["a".into(), "c2".into()])
    );
    let rds = c.recv().await;
    assert_eq!(
        (rds.type_url.as_str(), names(&rds)),
        (RDS.url(), vec!["r1".into()])
    );
    assert_eq!(
        RouteConfiguration::decode(rds.resources[0].value.as_slice()).unwrap(),
        route_to("c2")
    );
    c.silence().await;
}

#[tokio::test]
async fn delta_route_to_a_new_cluster_waits_for_its_endpoints() {
    let (before, after) = push_order_configs();
    let mut h = Harness::start(&before).await;
    let mut c = h.delta().await;
    for (ty, sub) in [
        (CDS, vec![]),
        (EDS, vec!["a"]),
        (LDS, vec![]),
        (RDS, vec!["r1"]),
    ] {
        c.send(dreq(ty, &sub, "")).await;
        let r = c.recv().await;
        c.send(dreq(ty, &[], &r.nonce)).await;
    }
    h.wait_type(RDS, |t| t.state == AckState::Acked).await;

    h.publish(&after);
    let cds = c.recv().await;
    assert_eq!(
        (cds.type_url.as_str(), delta_names(&cds)),
        (CDS.url(), vec!["c2"])
    );
    c.silence().await;
    // Subscribing first and ACKing after is fine too: both are needed.
    c.send(dreq(EDS, &["c2"], "")).await;
    let eds = c.recv().await;
    assert_eq!(
        (eds.type_url.as_str(), delta_names(&eds)),
        (EDS.url(), vec!["c2"])
    );
    c.silence().await;
    c.send(dreq(CDS, &[], &cds.nonce)).await;
    let rds = c.recv().await;
    assert_eq!(
        (rds.type_url.as_str(), delta_names(&rds)),
        (RDS.url(), vec!["r1"])
    );
    c.silence().await;
}

/// A proxy that never asks for the new cluster's endpoints (it rejected the cluster) still
/// gets its routes, after the server's 5 s hold.
#[tokio::test]
async fn route_to_a_new_cluster_goes_out_after_the_hold_timeout() {
    let (before, after) = push_order_configs();
    let mut h = Harness::start(&before).await;
    let mut c = h.sotw().await;
    for (ty, sub) in [(CDS, vec![]), (EDS, vec!["a"]), (RDS, vec!["r1"])] {
        c.send(ty, &sub, "", "").await;
        let r = c.recv().await;
        c.ack(&sub, &r).await;
    }
    h.wait_type(RDS, |t| t.state == AckState::Acked).await;
    h.publish(&after);
    let cds = c.recv().await;
    let start = std::time::Instant::now();
    let nack = DiscoveryRequest {
        type_url: CDS.url().into(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "c2: bad".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    c.tx.send(nack).await.unwrap();
    let rds = timeout(Duration::from_secs(8), c.responses.message())
        .await
        .unwrap()
        .unwrap();
    let rds = rds.unwrap();
    assert_eq!(rds.type_url, RDS.url());
    assert!(
        start.elapsed() >= Duration::from_millis(4500),
        "{:?}",
        start.elapsed()
    );
}

/// istiod's metrics move with the protocol: a response counts in `pilot_xds_pushes` and
/// `pilot_xds_config_size_bytes`, its ACK in `pilot_proxy_convergence_time`, a NACK in
/// `pilot_total_xds_rejects`, and the stream in `pilot_xds` while it lasts. The registry is
/// process-wide, so other tests in this binary may add to it: only increases are asserted.
#[tokio::test]
async fn metrics_count_responses_acks_and_nacks() {
    let metrics = pilotfish::metrics::global();
    let cds = metrics.xds_type(CDS);
    let (pushes, rejects, sizes, converged) = (
        cds.pushes.get(),
        cds.rejects.get(),
        cds.config_size.count(),
        metrics.convergence.count(),
    );
    let mut h = Harness::start(&base_config()).await;
    let mut c = h.sotw().await;
    c.send(CDS, &[], "", "").await;
    let v1 = c.recv().await;
    assert!(
        cds.pushes.get() > pushes,
        "the response counts in pilot_xds_pushes{{type=cds}}"
    );
    assert!(cds.config_size.count() > sizes);
    assert!(
        metrics.xds_clients("") >= 1,
        "the stream counts in pilot_xds"
    );
    c.ack(&[], &v1).await;
    h.wait_type(CDS, |t| t.state == AckState::Acked).await;
    assert!(
        metrics.convergence.count() > converged,
        "the ACK is a convergence sample"
    );
    assert_eq!(cds.rejects.get(), rejects, "an ACK is no reject");

    let mut config = base_config();
    config.insert(CDS, vec![cluster("a", "broken")]);
    h.publish(&config);
    let v2 = c.recv().await;
    c.tx.send(DiscoveryRequest {
        type_url: CDS.url().into(),
        version_info: v1.version_info.clone(),
        response_nonce: v2.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "a: bad".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    h.wait_type(CDS, |t| t.state == AckState::Nacked).await;
    assert!(
        cds.rejects.get() > rejects,
        "the NACK counts in pilot_total_xds_rejects{{type=cds}}"
    );
    let text = metrics.encode().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("pilot_total_xds_rejects{type=\"cds\"} "))
        .unwrap();
    assert!(
        line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap() >= 1,
        "{text}"
    );
}
