//! Make-before-break within a push: a snapshot adding EDS cluster `c2` and a route to it must
//! reach the proxy as CDS, then `c2`'s endpoints (once it asks for them), then RDS.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_stream::wrappers::ReceiverStream;

use super::gate::{Gate, HOLD_TIMEOUT};
use super::stream::{self, Protocol, Shared};
use super::tests::{
    CDS, EDS, RDS, cla, cluster, delta, dnames, dreq, names, on_request, proxy_resources, req,
    route, sotw,
};
use super::{Connections, ProxyResources, Resource, Snapshot, TypeUrl};
use crate::model::Proxy;

const LDS: TypeUrl = TypeUrl::Listener;

/// An EDS cluster whose endpoints go by another name (`service_name` `<name>-eds`), so the
/// tests tell cluster and EDS names apart.
fn eds_cluster(name: &str) -> Arc<Resource> {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: format!("{name}-eds"),
            ..Default::default()
        }),
        ..Default::default()
    };
    Arc::new(Resource::encode(name, &c))
}

fn before() -> Arc<ProxyResources> {
    Arc::new(proxy_resources(&[
        (CDS, vec![eds_cluster("a")]),
        (EDS, vec![cla("a-eds", 1)]),
        (LDS, vec![cluster("l", "listener stand-in")]),
        (RDS, vec![route("r", 1)]),
    ]))
}

/// `before` plus cluster c2 and its endpoints; the route changes (to send traffic to c2).
fn after(route_vhosts: usize) -> Arc<ProxyResources> {
    Arc::new(proxy_resources(&[
        (CDS, vec![eds_cluster("a"), eds_cluster("c2")]),
        (EDS, vec![cla("a-eds", 1), cla("c2-eds", 1)]),
        (LDS, vec![cluster("l", "listener stand-in")]),
        (RDS, vec![route("r", route_vhosts)]),
    ]))
}

fn types<R>(out: &[R], url: impl Fn(&R) -> &str) -> Vec<TypeUrl> {
    out.iter()
        .filter_map(|r| TypeUrl::from_url(url(r)))
        .collect()
}

/// A SotW proxy holding and having ACKed all of `res`.
fn synced_sotw(res: &ProxyResources) -> super::sotw::Sotw {
    let mut s = sotw();
    for (ty, sub) in [
        (CDS, vec![]),
        (EDS, vec!["a-eds"]),
        (LDS, vec![]),
        (RDS, vec!["r"]),
    ] {
        let out = on_request(&mut s, req(ty, &sub, "", ""), res);
        let ack = req(ty, &sub, &out[0].version_info, &out[0].nonce);
        assert!(on_request(&mut s, ack, res).is_empty());
    }
    s
}

fn synced_delta(res: &ProxyResources) -> super::delta::Delta {
    let mut d = delta();
    for (ty, sub) in [
        (CDS, vec![]),
        (EDS, vec!["a-eds"]),
        (LDS, vec![]),
        (RDS, vec!["r"]),
    ] {
        let out = on_request(&mut d, dreq(ty, &sub, &[], ""), res);
        assert!(on_request(&mut d, dreq(ty, &[], &[], &out[0].nonce), res).is_empty());
    }
    d
}

fn sent_nonce<P: Protocol>(p: &P, ty: TypeUrl) -> String {
    p.type_state(ty)
        .and_then(|t| t.status.sent_nonce.clone())
        .unwrap_or_default()
}

#[test]
fn sotw_routes_wait_for_cds_answer_and_new_endpoints() {
    let (res1, res2) = (before(), after(2));
    let mut s = synced_sotw(&res1);
    let (mut gate, now, mut out) = (Gate::default(), Instant::now(), Vec::new());
    gate.push(&mut s, &res1, &res2, now, &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [CDS], "RDS is held");
    assert_eq!(names(&out[0]), ["a", "c2"]);
    let cds = out.remove(0);

    // Subscribing c2's endpoints (with the last EDS nonce, as Envoy does) sends them, but the
    // CDS is not answered yet.
    let eds_nonce = sent_nonce(&s, EDS);
    let out = on_request(
        &mut s,
        req(EDS, &["a-eds", "c2-eds"], "", &eds_nonce),
        &res2,
    );
    assert_eq!(
        names(&out[0]),
        ["a-eds", "c2-eds"],
        "SotW answers with the whole subscription"
    );
    let mut out = Vec::new();
    gate.poll(&mut s, &res2, now, &mut out);
    assert!(
        out.is_empty(),
        "CDS not answered: {:?}",
        types(&out, |r| &r.type_url)
    );

    assert!(on_request(&mut s, req(CDS, &[], &cds.version_info, &cds.nonce), &res2).is_empty());
    gate.poll(&mut s, &res2, now, &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [RDS]);
    assert_eq!(out[0].resources[0].hash, route("r", 2).hash);
    assert_eq!(gate.deadline(), None);
}

#[test]
fn delta_routes_wait_for_cds_ack_and_new_endpoints() {
    let (res1, res2) = (before(), after(2));
    let mut d = synced_delta(&res1);
    let (mut gate, now, mut out) = (Gate::default(), Instant::now(), Vec::new());
    gate.push(&mut d, &res1, &res2, now, &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [CDS], "RDS is held");
    assert_eq!(dnames(&out[0]), ["c2"]);
    let cds_nonce = out.remove(0).nonce;

    assert!(on_request(&mut d, dreq(CDS, &[], &[], &cds_nonce), &res2).is_empty());
    gate.poll(&mut d, &res2, now, &mut out);
    assert!(out.is_empty(), "c2's endpoints not subscribed yet");

    let out = on_request(&mut d, dreq(EDS, &["c2-eds"], &[], ""), &res2);
    assert_eq!(dnames(&out[0]), ["c2-eds"]);
    let mut out = Vec::new();
    gate.poll(&mut d, &res2, now, &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [RDS]);
}

#[test]
fn held_push_is_released_at_the_deadline() {
    let (res1, res2) = (before(), after(2));
    let mut s = synced_sotw(&res1);
    let (mut gate, now, mut out) = (Gate::default(), Instant::now(), Vec::new());
    gate.push(&mut s, &res1, &res2, now, &mut out);
    assert_eq!(gate.deadline(), Some(now + HOLD_TIMEOUT));
    out.clear();
    gate.poll(
        &mut s,
        &res2,
        now + HOLD_TIMEOUT - Duration::from_millis(1),
        &mut out,
    );
    assert!(out.is_empty());
    gate.poll(&mut s, &res2, now + HOLD_TIMEOUT, &mut out);
    assert_eq!(
        types(&out, |r| &r.type_url),
        [RDS],
        "never answered, never subscribed"
    );
}

#[test]
fn newer_snapshot_supersedes_a_held_push() {
    let (res1, res2, res3) = (before(), after(2), after(3));
    let mut s = synced_sotw(&res1);
    let (mut gate, now, mut out) = (Gate::default(), Instant::now(), Vec::new());
    gate.push(&mut s, &res1, &res2, now, &mut out);
    let cds = out.remove(0);
    let later = now + Duration::from_secs(1);
    gate.push(&mut s, &res2, &res3, later, &mut out);
    assert!(out.is_empty(), "clusters unchanged, routes still held");
    assert_eq!(
        gate.deadline(),
        Some(now + HOLD_TIMEOUT),
        "the first hold bounds the wait"
    );

    on_request(&mut s, req(CDS, &[], &cds.version_info, &cds.nonce), &res3);
    let eds_nonce = sent_nonce(&s, EDS);
    on_request(
        &mut s,
        req(EDS, &["a-eds", "c2-eds"], "", &eds_nonce),
        &res3,
    );
    gate.poll(&mut s, &res3, later, &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [RDS]);
    assert_eq!(
        out[0].resources[0].hash,
        route("r", 3).hash,
        "the newest routes, once"
    );
}

#[test]
fn changed_or_non_eds_clusters_do_not_hold() {
    let res1 = before();
    let mut s = synced_sotw(&res1);
    // A changed EDS cluster keeps serving its old version while it warms; a new static
    // cluster needs no EDS.
    let res2 = Arc::new(proxy_resources(&[
        (CDS, vec![eds_cluster("a"), cluster("static", "1")]),
        (EDS, vec![cla("a-eds", 2)]),
        (LDS, vec![cluster("l", "listener stand-in")]),
        (RDS, vec![route("r", 2)]),
    ]));
    let (mut gate, mut out) = (Gate::default(), Vec::new());
    gate.push(&mut s, &res1, &res2, Instant::now(), &mut out);
    assert_eq!(types(&out, |r| &r.type_url), [CDS, EDS, RDS]);
    assert_eq!(gate.deadline(), None);
}

/// Every proxy gets the same resources.
struct Fixed(Arc<ProxyResources>);

impl Snapshot for Fixed {
    fn revision(&self) -> u64 {
        1
    }
    fn resources_for(&self, _proxy: &Proxy) -> Arc<ProxyResources> {
        Arc::clone(&self.0)
    }
}

/// The connection loop's timer, in paused time: the held routes go out at the deadline
/// without any request from the proxy.
#[tokio::test(start_paused = true)]
async fn stream_releases_a_held_push_on_its_timer() {
    let (publish, snapshots) = watch::channel::<Arc<dyn Snapshot>>(Arc::new(Fixed(before())));
    let (_stop, shutdown) = watch::channel(false);
    let connections = Connections::new();
    let shared = Shared {
        snapshots,
        connections,
        shutdown,
        control_plane: "test".into(),
        security: None,
    };
    let (tx, rx) = mpsc::channel(16);
    let mut responses =
        stream::start::<super::sotw::Sotw, _>(&shared, None, None, ReceiverStream::new(rx).map(Ok));
    let mut recv = async || {
        responses
            .next()
            .await
            .expect("stream open")
            .expect("response")
    };

    let mut first = req(CDS, &[], "", "");
    first.node = Some(Node {
        id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
        ..Default::default()
    });
    tx.send(first).await.expect("send");
    let cds = recv().await;
    tx.send(req(CDS, &[], &cds.version_info, &cds.nonce))
        .await
        .expect("send");
    tx.send(req(RDS, &["r"], "", "")).await.expect("send");
    let rds = recv().await;
    tx.send(req(RDS, &["r"], &rds.version_info, &rds.nonce))
        .await
        .expect("send");

    publish.send_replace(Arc::new(Fixed(after(2))));
    let pushed = Instant::now();
    assert_eq!(
        recv().await.type_url,
        CDS.url(),
        "the proxy neither ACKs nor subscribes"
    );
    let early = timeout(HOLD_TIMEOUT - Duration::from_millis(10), recv()).await;
    assert!(
        early.is_err(),
        "routes went out before the deadline: {early:?}"
    );
    let rds = timeout(Duration::from_secs(1), recv())
        .await
        .expect("routes never released");
    assert_eq!(rds.type_url, RDS.url());
    assert!(pushed.elapsed() >= HOLD_TIMEOUT);
}
