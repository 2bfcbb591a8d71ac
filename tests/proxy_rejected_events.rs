//! The leader's report of NACKs on the objects they were traced to, through the real
//! `kube::Client` against the fake API server: one Warning Event per (object, error) however many
//! proxies reject it, a `Reconciled: False` condition on Istio objects (others kept), nothing
//! written by a replica that does not lead.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pilotfish::config::{Kind, ObjectKey};
use pilotfish::operator::rejections::{self, Writer};
use pilotfish::xds::connection::Rejection;
use serde_json::{Value, json};
use support::fake_apiserver::FakeApiServer;
use tokio::sync::broadcast;

const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn rejection(proxy: usize, error: &str, sources: Vec<ObjectKey>) -> Rejection {
    Rejection {
        proxy_id: format!("sidecar~10.0.0.{proxy}~app-{proxy}.default~default.svc.cluster.local"),
        type_url: RDS.into(),
        error: error.into(),
        sources,
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events(fake: &FakeApiServer) -> Vec<Value> {
    fake.list("v1", "Event", Some("default"))
}

#[tokio::test]
async fn the_leader_writes_one_event_per_object_and_error_and_a_condition() {
    let fake = FakeApiServer::start().await;
    fake.install_crd(
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "VirtualService",
        "virtualservices",
        true,
    );
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"]},
    }))
    .unwrap();
    fake.apply_status(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "status": {"conditions": [{"type": "Other", "status": "True"}]},
    }))
    .unwrap();

    let (tx, rx) = broadcast::channel(64);
    let leading = Arc::new(AtomicBool::new(false));
    let is_leader = {
        let leading = leading.clone();
        move || leading.load(Ordering::SeqCst)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rejections::run(
        Writer::new(fake.client(), "pilotfish-0"),
        rx,
        is_leader,
        async move {
            let _ = stopped.await;
        },
    ));

    let vs = key(Kind::VirtualService, "reviews");
    let secret = key(Kind::Secret, "web-cert");
    // A follower writes nothing.
    tx.send(rejection(9, "ignored while following", vec![vs.clone()]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(events(&fake).is_empty(), "{:#?}", events(&fake));

    leading.store(true, Ordering::SeqCst);
    for proxy in 1..=5 {
        tx.send(rejection(
            proxy,
            "bad regex",
            vec![vs.clone(), secret.clone()],
        ))
        .unwrap();
    }
    tx.send(rejection(6, "another error", vec![vs.clone()]))
        .unwrap();

    let written = eventually("three Events", || {
        let e = events(&fake);
        (e.len() >= 3).then_some(e)
    })
    .await;
    // Give duplicates a chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written_now = events(&fake);
    assert_eq!(written_now.len(), 3, "{written_now:#?}");
    let summary: Vec<(String, String, String)> = written
        .iter()
        .map(|e| {
            let s = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                s("/involvedObject/kind"),
                s("/involvedObject/name"),
                s("/message"),
            )
        })
        .collect();
    let proxy1 = "proxy sidecar~10.0.0.1~app-1.default~default.svc.cluster.local";
    for expected in [
        ("VirtualService", "reviews", format!("{proxy1} rejected RouteConfiguration: bad regex")),
        ("Secret", "web-cert", format!("{proxy1} rejected RouteConfiguration: bad regex")),
        (
            "VirtualService",
            "reviews",
            "proxy sidecar~10.0.0.6~app-6.default~default.svc.cluster.local rejected RouteConfiguration: another error".to_string(),
        ),
    ] {
        let expected = (expected.0.to_string(), expected.1.to_string(), expected.2);
        assert!(summary.contains(&expected), "{expected:?} not in {summary:#?}");
    }
    for e in &written {
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reason"], rejections::REASON);
        assert_eq!(e["involvedObject"]["namespace"], "default");
    }

    let conditions = eventually("the Reconciled condition", || {
        let object = fake.get(
            "networking.istio.io/v1",
            "VirtualService",
            Some("default"),
            "reviews",
        )?;
        let conditions = object.pointer("/status/conditions")?.as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == rejections::CONDITION)
            .then_some(conditions)
    })
    .await;
    let other = conditions.iter().find(|c| c["type"] == "Other");
    assert_eq!(
        other.map(|c| &c["status"]),
        Some(&json!("True")),
        "kept: {conditions:#?}"
    );
    let ours = conditions
        .iter()
        .find(|c| c["type"] == rejections::CONDITION)
        .unwrap();
    assert_eq!(ours["status"], "False");
    assert_eq!(ours["reason"], rejections::REASON);
    assert!(
        ours["message"]
            .as_str()
            .unwrap()
            .contains("rejected RouteConfiguration")
    );

    // Through the status subresource, as a merge patch; one per (object, error), none for the
    // Secret (a Kubernetes kind, no IstioStatus).
    let patches: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|(method, _)| method == "PATCH")
        .map(|(_, target)| target)
        .collect();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert!(
        patches.iter().all(|p| p.starts_with(
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews/status"
        )),
        "{patches:#?}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the writer stops")
        .unwrap();
}
