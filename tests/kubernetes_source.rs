//! The Kubernetes source against the in-process fake API server, through the real
//! `kube::Client` and kube-runtime watchers: sync gating, updates and deletes, re-lists after
//! `410 Gone`, CRDs installed later, API errors, and `pilotfish serve` answering Envoy's
//! requests only once the cluster has been listed.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use pilotfish::config::Kind;
use pilotfish::serve::{ConfigSource, Listeners, ServeOptions};
use pilotfish::source::kubernetes::{KubeOptions, KubeSource};
use pilotfish::store::{Snapshot, Store};
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, ISTIO_NETWORKING};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

fn install_networking(fake: &FakeApiServer, except: &[&str]) {
    for (kind, plural) in ISTIO_NETWORKING.iter().filter(|(k, _)| !except.contains(k)) {
        fake.install_crd(
            "networking.istio.io",
            &["v1alpha3", "v1beta1", "v1"],
            kind,
            plural,
            true,
        );
    }
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}})
}

fn virtual_service(name: &str, host: &str, port: u32) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host, "port": {"number": port}}}]}]}})
}

/// A small cluster: a namespace, a Service with its EndpointSlice and Pod, and a VirtualService.
fn populate(fake: &FakeApiServer) {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        service("reviews"),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "reviews-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 9080}],
            "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "reviews-1", "namespace": "default"}}]}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reviews-1", "namespace": "default", "labels": {"app": "reviews"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        virtual_service("reviews", "reviews", 9080),
    ];
    for object in objects {
        fake.apply(object).unwrap();
    }
}

struct Source {
    source: KubeSource,
    store: watch::Receiver<Arc<Snapshot>>,
}

fn start(fake: &FakeApiServer) -> Source {
    let store = Arc::new(Mutex::new(Store::new()));
    let rx = store.lock().unwrap().subscribe();
    let options = KubeOptions {
        missing_crd_retry: Duration::from_millis(200),
        ..KubeOptions::default()
    };
    Source {
        source: KubeSource::start(fake.client(), store, options),
        store: rx,
    }
}

fn names(snapshot: &Snapshot, kind: Kind) -> Vec<String> {
    snapshot
        .entries(kind)
        .map(|e| e.object.key().to_string())
        .collect()
}

/// Waits (at most 10 s) until the store's latest snapshot satisfies `condition`.
async fn eventually(
    store: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    condition: impl Fn(&Snapshot) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(10), store.wait_for(|s| condition(s)))
        .await
        .map(|r| r.is_ok());
    assert_eq!(
        waited,
        Ok(true),
        "timed out waiting for {what}; the store has {} objects",
        store.borrow().len()
    );
}

fn vs_port(snapshot: &Snapshot) -> Option<u32> {
    let entry = snapshot.entries(Kind::VirtualService).next()?;
    let spec = entry
        .object
        .spec::<pilotfish::config::istio::VirtualService>()?;
    spec.http
        .first()?
        .route
        .first()?
        .destination
        .port
        .as_ref()
        .map(|p| p.number)
}

#[tokio::test]
async fn nothing_is_published_until_every_kind_is_listed() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &[]);
    populate(&fake);
    fake.pause();
    let mut source = start(&fake);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!source.source.is_ready());
    assert_eq!(
        source.store.borrow().revision,
        0,
        "nothing published while the API hangs"
    );

    fake.resume();
    tokio::time::timeout(Duration::from_secs(10), source.source.synced())
        .await
        .expect("synced");
    let snapshot = source.store.borrow().clone();
    assert_eq!(
        snapshot.revision, 1,
        "the whole cluster arrives as one revision"
    );
    assert_eq!(names(&snapshot, Kind::Service), ["Service default/reviews"]);
    assert_eq!(
        names(&snapshot, Kind::EndpointSlice),
        ["EndpointSlice default/reviews-abc"]
    );
    assert_eq!(names(&snapshot, Kind::Pod), ["Pod default/reviews-1"]);
    assert_eq!(names(&snapshot, Kind::Namespace), ["Namespace default"]);
    assert_eq!(
        names(&snapshot, Kind::VirtualService),
        ["VirtualService default/reviews"]
    );
    let pod = snapshot.entries(Kind::Pod).next().unwrap();
    assert!(
        pod.object
            .spec::<pilotfish::config::kube::Pod>()
            .unwrap()
            .ready
    );
}

#[tokio::test]
async fn updates_and_deletes_follow_the_cluster_and_invalid_updates_keep_the_last_good_object() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &[]);
    populate(&fake);
    let mut source = start(&fake);
    source.source.synced().await;
    assert_eq!(vs_port(&source.store.borrow()), Some(9080));

    fake.apply(virtual_service("reviews", "reviews", 9090))
        .unwrap();
    eventually(&mut source.store, "the VirtualService update", |s| {
        vs_port(s) == Some(9090)
    })
    .await;

    // Port 0 is refused by validation: the last good version stays.
    fake.apply(virtual_service("reviews", "reviews", 0))
        .unwrap();
    fake.apply(service("ratings")).unwrap();
    eventually(&mut source.store, "the new Service", |s| {
        names(s, Kind::Service).len() == 2
    })
    .await;
    assert_eq!(
        vs_port(&source.store.borrow()),
        Some(9090),
        "an invalid update keeps the previous version"
    );

    fake.delete("v1", "Service", Some("default"), "reviews")
        .unwrap();
    eventually(&mut source.store, "the Service deletion", |s| {
        names(s, Kind::Service) == ["Service default/ratings"]
    })
    .await;
}

#[tokio::test]
async fn a_relist_after_410_gone_neither_loses_nor_duplicates_objects() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &[]);
    populate(&fake);
    let mut source = start(&fake);
    source.source.synced().await;
    let revision = source.store.borrow().revision;

    // While the watches are down, one Service goes and another comes; then the history the
    // watchers would resume from is gone, so they must re-list.
    fake.drop_watches();
    fake.delete("v1", "Service", Some("default"), "reviews")
        .unwrap();
    fake.apply(service("ratings")).unwrap();
    fake.compact();
    fake.clear_requests();
    eventually(&mut source.store, "the re-listed Services", |s| {
        names(s, Kind::Service) == ["Service default/ratings"]
    })
    .await;
    let relisted = fake.requests().iter().any(|(method, path)| {
        method == "GET" && path.starts_with("/api/v1/services") && !path.contains("watch=")
    });
    assert!(relisted, "a list after 410: {:?}", fake.requests());

    // Every other kind re-lists the same objects: equal content, no further revision.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot = source.store.borrow().clone();
    assert_eq!(names(&snapshot, Kind::Pod), ["Pod default/reviews-1"]);
    assert_eq!(
        names(&snapshot, Kind::VirtualService),
        ["VirtualService default/reviews"]
    );
    assert!(
        snapshot.revision <= revision + 2,
        "re-lists of unchanged kinds publish nothing: {} → {}",
        revision,
        snapshot.revision
    );
}

#[tokio::test]
async fn a_crd_installed_later_is_watched_from_then_on() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &["Sidecar"]);
    populate(&fake);
    let mut source = start(&fake);
    tokio::time::timeout(Duration::from_secs(10), source.source.synced())
        .await
        .expect("a missing CRD does not hold up readiness");

    fake.install_crd(
        "networking.istio.io",
        &["v1alpha3", "v1beta1", "v1"],
        "Sidecar",
        "sidecars",
        true,
    );
    fake.apply(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"egress": [{"hosts": ["./*"]}]}}),
    )
    .unwrap();
    eventually(&mut source.store, "the Sidecar", |s| {
        names(s, Kind::Sidecar) == ["Sidecar default/default"]
    })
    .await;

    // And a CRD that goes away takes its objects with it.
    fake.uninstall_crd("networking.istio.io", "sidecars");
    eventually(&mut source.store, "the Sidecars' removal", |s| {
        names(s, Kind::Sidecar).is_empty()
    })
    .await;
}

#[tokio::test]
async fn api_errors_keep_what_is_served_and_changes_flow_again_after() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &[]);
    populate(&fake);
    let mut source = start(&fake);
    source.source.synced().await;
    let before = source.store.borrow().clone();

    fake.fail_next(20, 500);
    fake.drop_watches();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = source.store.borrow().clone();
    assert_eq!(
        during.len(),
        before.len(),
        "nothing is dropped while the API fails"
    );

    fake.apply(service("ratings")).unwrap();
    eventually(&mut source.store, "changes after the outage", |s| {
        names(s, Kind::Service).len() == 2
    })
    .await;
}

fn cds_request(version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        response_nonce: nonce.into(),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        node: Some(Node {
            id: "sidecar~10.1.0.9~sleep-1.default~default.svc.cluster.local".into(),
            cluster: "sleep.default".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cluster_names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    response
        .resources
        .iter()
        .filter_map(|any| {
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(any.value.as_slice()).ok()
        })
        .map(|c| c.name)
        .filter(|n| n.starts_with("outbound|"))
        .collect()
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

#[tokio::test]
async fn serve_answers_only_after_the_cluster_is_listed_and_follows_it() {
    let fake = FakeApiServer::start().await;
    install_networking(&fake, &[]);
    populate(&fake);
    fake.pause();

    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (xds_addr, status_addr) = (xds.local_addr().unwrap(), status.local_addr().unwrap());
    let options = ServeOptions {
        debounce: Duration::from_millis(10),
        ..ServeOptions::new(ConfigSource::Kubernetes {
            client: fake.client(),
            options: KubeOptions::default(),
            operator: Default::default(),
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pilotfish::serve::serve(
        options,
        Listeners {
            status: Some(status),
            ..Listeners::new(xds)
        },
        pilotfish::xds::Connections::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        http_status(status_addr, "/ready").await,
        503,
        "not ready before the initial sync"
    );

    // A proxy that connects now waits for the sync, and then gets the whole cluster.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds_addr}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(cds_request("", "")).await.unwrap();
    let call = tokio::spawn(async move {
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        (client, responses, first)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "no response before the cluster is listed"
    );
    fake.resume();
    let (client, mut responses, first) = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cluster_names(&first),
        ["outbound|9080||reviews.default.svc.cluster.local"]
    );
    assert_eq!(http_status(status_addr, "/ready").await, 200);

    // A Service added to the cluster reaches the proxy.
    tx.send(cds_request(&first.version_info, &first.nonce))
        .await
        .unwrap();
    fake.apply(service("ratings")).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut names = cluster_names(&second);
    names.sort();
    assert_eq!(
        names,
        [
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local"
        ]
    );

    // Draining: not ready, and the stream ends.
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("the stream ends on drain");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    drop((tx, responses, client));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once connections close")
        .unwrap()
        .unwrap();
}
