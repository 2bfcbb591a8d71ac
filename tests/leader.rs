//! Leader election against the fake API server: one leader at a time, a fast hand-over on
//! shutdown, and a replica cut off from the API server stopping before another takes over.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use pilotfish::leader::{self, Candidate, Leadership, LeaseTimings};
use serde_json::json;
use support::fake_apiserver::FakeApiServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NAMESPACE: &str = "istio-system";
const LEASE: &str = "pilotfish-leader";

fn timings() -> LeaseTimings {
    LeaseTimings {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
    }
}

struct Replica {
    leadership: Leadership,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), leader::Error>>,
}

impl Replica {
    fn start(client: kube::Client, identity: &str) -> Replica {
        let leadership = Leadership::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let candidate = Candidate {
            namespace: NAMESPACE.into(),
            lease_name: LEASE.into(),
            identity: identity.into(),
            timings: timings(),
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(leader::run(client, candidate, leadership.clone(), shutdown));
        Replica {
            leadership,
            stop: Some(stop),
            task,
        }
    }

    fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        ended
            .expect("the election ends promptly on shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Samples both replicas every millisecond for `how_long`, failing if both are ever leader;
/// returns what was seen at each sample, timed just before it was taken (so a replica seen
/// leading at `t` was leading at some instant after `t`, however late the sample ran).
async fn sample(a: &Replica, b: &Replica, how_long: Duration) -> Vec<(Duration, bool, bool)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < how_long {
        let at = start.elapsed();
        let (x, y) = (a.is_leader(), b.is_leader());
        assert!(!(x && y), "both replicas leader at {at:?}");
        seen.push((at, x, y));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen
}

async fn until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

async fn lease(server: &FakeApiServer) -> Lease {
    Api::<Lease>::namespaced(server.client(), NAMESPACE)
        .get(LEASE)
        .await
        .unwrap()
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
async fn exactly_one_of_two_candidates_leads() {
    let server = FakeApiServer::start().await;
    let a = Replica::start(server.client(), "a");
    let b = Replica::start(server.client(), "b");
    until("a leader", Duration::from_secs(1), || {
        a.is_leader() || b.is_leader()
    })
    .await;
    let leader_is_a = a.is_leader();
    // Longer than a lease: the leader keeps renewing, the other never takes over.
    let seen = sample(&a, &b, Duration::from_millis(1500)).await;
    assert!(
        seen.iter()
            .all(|&(_, x, y)| (x, y) == (leader_is_a, !leader_is_a)),
        "leadership changed hands"
    );

    let lease = lease(&server).await;
    let spec = lease.spec.as_ref().unwrap();
    assert_eq!(
        holder(&lease).as_deref(),
        Some(if leader_is_a { "a" } else { "b" })
    );
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert!(
        spec.renew_time.as_ref().unwrap().0 > spec.acquire_time.as_ref().unwrap().0,
        "renewed since acquired"
    );
    assert!(
        *if leader_is_a { &a } else { &b }
            .leadership
            .subscribe()
            .borrow()
    );
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let server = FakeApiServer::start().await;
    let a = Replica::start(server.client(), "a");
    tokio::time::timeout(Duration::from_secs(1), a.leadership.wait_until_leader())
        .await
        .unwrap();
    let b = Replica::start(server.client(), "b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_leader());
    let transitions = lease(&server).await.spec.unwrap().lease_transitions;

    let a_leadership = a.leadership.clone();
    a.shut_down().await;
    assert!(!a_leadership.is_leader());
    // Well within the lease duration: b took a released lease, it did not wait for expiry.
    let took = until("b to take over", timings().lease_duration, || b.is_leader()).await;
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let lease = lease(&server).await;
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(
        lease.spec.unwrap().lease_transitions,
        transitions.map(|t| t + 1)
    );
    b.shut_down().await;
}

/// `cut` cuts replica a's endpoint off; a must stop by the renew deadline, b must take
/// over once the lease expired, and never both at once.
async fn cut_off_leader_hands_over(cut: impl FnOnce(&support::fake_apiserver::Endpoint)) {
    let server = FakeApiServer::start().await;
    let a_endpoint = server.endpoint().await;
    let a = Replica::start(a_endpoint.client(), "a");
    tokio::time::timeout(Duration::from_secs(1), a.leadership.wait_until_leader())
        .await
        .unwrap();
    let b = Replica::start(server.client(), "b");
    let mut a_changes = a.leadership.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await;

    cut(&a_endpoint);
    let seen = sample(&a, &b, Duration::from_millis(1800)).await;
    // a renewed last before the cut, so its deadline is within a renew deadline of it.
    let a_last = seen
        .iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .max()
        .unwrap_or_default();
    assert!(
        a_last < timings().renew_deadline,
        "a still leading {a_last:?} after the cut"
    );
    assert!(
        seen.last().is_some_and(|s| !s.1 && s.2),
        "b took over: {:?}",
        seen.last()
    );
    assert!(
        a_changes.has_changed().unwrap() && !*a_changes.borrow_and_update(),
        "a published that it stopped"
    );
    assert_eq!(holder(&lease(&server).await).as_deref(), Some("b"));
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test]
async fn a_leader_whose_api_server_hangs_stops_before_another_takes_over() {
    cut_off_leader_hands_over(|endpoint| endpoint.pause()).await;
}

#[tokio::test]
async fn a_leader_whose_api_server_fails_stops_before_another_takes_over() {
    cut_off_leader_hands_over(|endpoint| endpoint.fail_next(10_000, 503)).await;
}

#[tokio::test]
async fn a_reconnected_former_leader_stays_a_follower() {
    let server = FakeApiServer::start().await;
    let a_endpoint = server.endpoint().await;
    let a = Replica::start(a_endpoint.client(), "a");
    tokio::time::timeout(Duration::from_secs(1), a.leadership.wait_until_leader())
        .await
        .unwrap();
    let b = Replica::start(server.client(), "b");
    a_endpoint.pause();
    until("b to take over", Duration::from_secs(2), || b.is_leader()).await;
    a_endpoint.resume();
    let seen = sample(&a, &b, Duration::from_millis(400)).await;
    assert!(
        seen.iter().all(|&(_, x, y)| !x && y),
        "b keeps the lease once a is back"
    );
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test]
async fn the_expired_lease_of_a_crashed_holder_is_taken_over() {
    let server = FakeApiServer::start().await;
    let long_ago = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(10))
        .unwrap();
    server
        .apply(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NAMESPACE},
            "spec": {"holderIdentity": "crashed", "leaseDurationSeconds": 5, "renewTime": long_ago.to_string(),
                     "acquireTime": long_ago.to_string(), "leaseTransitions": 3},
        }))
        .unwrap();
    let b = Replica::start(server.client(), "b");
    until(
        "b to take the expired lease",
        Duration::from_millis(500),
        || b.is_leader(),
    )
    .await;
    let lease = lease(&server).await;
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(4));
    b.shut_down().await;
}

#[tokio::test]
async fn a_live_holder_from_elsewhere_is_respected() {
    let server = FakeApiServer::start().await;
    server
        .apply(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NAMESPACE},
            "spec": {"holderIdentity": "istiod-0", "leaseDurationSeconds": 30, "renewTime": Timestamp::now().to_string()},
        }))
        .unwrap();
    let b = Replica::start(server.client(), "b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_leader());
    assert_eq!(holder(&lease(&server).await).as_deref(), Some("istiod-0"));
    b.shut_down().await;
}

#[tokio::test]
async fn an_unreachable_api_server_never_grants_leadership_and_shutdown_still_ends_it() {
    let server = FakeApiServer::start().await;
    let endpoint = server.endpoint().await;
    endpoint.pause();
    let a = Replica::start(endpoint.client(), "a");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!a.is_leader());
    // Shutdown does not wait for the hung request.
    a.shut_down().await;
    assert!(
        server
            .get("coordination.k8s.io/v1", "Lease", Some(NAMESPACE), LEASE)
            .is_none()
    );
}
