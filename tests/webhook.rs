//! The validating webhook end to end: AdmissionReviews POSTed over real TLS, verified against
//! the CA root as the API server verifies the `caBundle`; the CA kept in a Secret and the
//! webhook configuration kept pointing at it, against the fake API server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::ByteString;
use pilotfish::ca::{self, Authority, LoadOptions};
use pilotfish::webhook::ca_bundle::{self, CaBundle, Pass};
use pilotfish::webhook::{self, server};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::fake_apiserver::FakeApiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn dns_names() -> Vec<String> {
    webhook::service_dns_names("istiod", "istio-system", "cluster.local")
}

/// A webhook server on 127.0.0.1 under a fresh CA.
async fn start(ttl: Duration) -> (std::net::SocketAddr, Arc<Authority>) {
    let authority = Arc::new(Authority::generate("cluster.local").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(server::serve_with_ttl(
        listener,
        authority.clone(),
        dns_names(),
        ttl,
        std::future::pending(),
    ));
    (address, authority)
}

struct Reply {
    status: u16,
    body: String,
    /// The chain the server presented.
    chain: Vec<CertificateDer<'static>>,
}

/// Connects over TLS trusting only `root`, expecting the certificate to be valid for `name`.
async fn connect(
    address: std::net::SocketAddr,
    root: &Authority,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.root_der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await?;
    connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 request over TLS; `content_length` overrides the header (to announce more body
/// than is sent).
async fn request(
    address: std::net::SocketAddr,
    root: &Authority,
    path: &str,
    content_type: &str,
    body: &[u8],
    content_length: Option<usize>,
) -> Reply {
    let mut tls = connect(address, root, "istiod.istio-system.svc")
        .await
        .unwrap();
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let head = format!(
        "POST {path}?timeout=10s HTTP/1.1\r\nhost: istiod.istio-system.svc:443\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        content_length.unwrap_or(body.len())
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    // Read up to the end of the response by its content-length: a server refusing a body it
    // did not read need not close the connection.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("responses carry a content-length");
            if body.len() >= length {
                let status = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not HTTP: {head:?}"));
                return Reply {
                    status,
                    body: body.to_string(),
                    chain,
                };
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "connection closed mid-response: {text:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

async fn review(address: std::net::SocketAddr, root: &Authority, fixture_name: &str) -> Value {
    let reply = request(
        address,
        root,
        "/validate",
        "application/json",
        &fixture(fixture_name),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str::<Value>(&reply.body).unwrap()["response"].clone()
}

#[tokio::test]
async fn reviews_are_answered_over_tls_verified_against_the_ca_root() {
    let (address, root) = start(server::CERT_TTL).await;
    let allowed = review(address, &root, "virtualservice-create-valid").await;
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    let denied = review(address, &root, "virtualservice-create-invalid").await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.http[0].match[0].uri.regex"),
        "{message}"
    );
    assert!(
        message.contains("spec.http[0].route[0].destination.port.number"),
        "{message}"
    );
    let warned = review(address, &root, "virtualservice-update-warning").await;
    assert_eq!(
        warned["warnings"][0],
        "VirtualService bookinfo/bookinfo: spec.http[0].colour: unknown field (ignored)"
    );
    assert_eq!(
        review(address, &root, "destinationrule-delete").await["allowed"],
        true
    );
    // istiod's alias.
    let reply = request(
        address,
        &root,
        "/validate/",
        "application/json",
        &fixture("gateway-create-dry-run-empty"),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("gateway must have at least one server"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn the_certificate_names_the_service_and_nothing_else() {
    let (address, root) = start(server::CERT_TTL).await;
    for name in dns_names() {
        connect(address, &root, &name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["istiod.default.svc", "localhost", "pilotfish"] {
        let err = connect(address, &root, name)
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains("not valid for name"), "{name}: {err}");
    }
    // Another cluster's root (same subject) and an unrelated one.
    for org in ["cluster.local", "example.org"] {
        let stranger = Authority::generate(org).unwrap();
        let err = connect(address, &stranger, "istiod.istio-system.svc")
            .await
            .expect_err(org)
            .to_string();
        assert!(err.contains("invalid peer certificate"), "{org}: {err}");
    }
}

#[tokio::test]
async fn requests_that_are_not_reviews_are_refused() {
    let (address, root) = start(server::CERT_TTL).await;
    let body = fixture("virtualservice-create-valid");
    let wrong_type = request(address, &root, "/validate", "application/yaml", &body, None).await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.body);
    let empty = request(address, &root, "/validate", "application/json", b"", None).await;
    assert_eq!((empty.status, empty.body.trim()), (400, "no body found"));
    let garbage = request(
        address,
        &root,
        "/validate",
        "application/json",
        b"{\"kind\": 1}",
        None,
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.body.starts_with("apiVersion: "), "{}", garbage.body);
    let unknown = request(
        address,
        &root,
        "/admitpilot",
        "application/json",
        &body,
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    // Refused on the announced length, before the body is read.
    let huge = request(
        address,
        &root,
        "/validate",
        "application/json",
        b"{",
        Some(server::MAX_BODY + 1),
    )
    .await;
    assert_eq!(huge.status, 413);
    let charset = request(
        address,
        &root,
        "/validate",
        "application/json; charset=utf-8",
        &body,
        None,
    )
    .await;
    assert_eq!(charset.status, 200);
}

#[tokio::test]
async fn the_certificate_is_renewed_without_restarting_the_listener() {
    let (address, root) = start(Duration::from_secs(3)).await;
    let first = request(
        address,
        &root,
        "/validate",
        "application/json",
        &fixture("virtualservice-create-valid"),
        None,
    )
    .await;
    // Renewed at two thirds of its life; the new one is served, and still verifies.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let second = request(
        address,
        &root,
        "/validate",
        "application/json",
        &fixture("virtualservice-create-valid"),
        None,
    )
    .await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(
        first.chain[0], second.chain[0],
        "the leaf should have been reissued"
    );
    assert_eq!(first.chain[1], second.chain[1], "under the same root");
}

// ---- The CA root in its Secret, against the fake API server.

fn load_options(retry_ms: u64) -> LoadOptions {
    LoadOptions {
        retry: Duration::from_millis(retry_ms),
        ..LoadOptions::default()
    }
}

#[tokio::test]
async fn the_leader_creates_the_root_and_every_replica_reads_it() {
    let api = FakeApiServer::start().await;
    // A follower finds no Secret and waits for it.
    let follower = tokio::spawn({
        let client = api.client();
        async move { ca::load_or_create(client, &load_options(20), || false).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !follower.is_finished(),
        "a follower must not give up nor generate"
    );
    assert!(
        api.get("v1", "Secret", Some("istio-system"), "istio-ca-secret")
            .is_none()
    );

    let leader = ca::load_or_create(api.client(), &load_options(20), || true)
        .await
        .unwrap();
    let secret = api
        .get("v1", "Secret", Some("istio-system"), "istio-ca-secret")
        .unwrap();
    assert_eq!(secret["type"], "istio.io/ca-root");
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "key.pem",
            "root-cert.pem"
        ]
    );
    let follower = tokio::time::timeout(Duration::from_secs(3), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(follower.root_der(), leader.root_der());
    // A restart reads it back rather than generating another.
    let again = ca::load_or_create(api.client(), &load_options(20), || true)
        .await
        .unwrap();
    assert_eq!(again.root_der(), leader.root_der());
}

#[tokio::test]
async fn two_leaders_racing_end_with_one_root() {
    let api = FakeApiServer::start().await;
    // Both read "missing" before either creates: one create wins, the other gets 409.
    api.set_latency(Duration::from_millis(100));
    let options = load_options(20);
    let (a, b) = tokio::join!(
        ca::load_or_create(api.client(), &options, || true),
        ca::load_or_create(api.client(), &options, || true),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.root_der(), b.root_der());
    let creates = api
        .requests()
        .iter()
        .filter(|(method, path)| method == "POST" && path.contains("/secrets"))
        .count();
    assert_eq!(
        creates, 2,
        "both tried to create; the loser read the winner's"
    );
}

#[tokio::test]
async fn a_broken_root_is_reported_not_replaced() {
    let api = FakeApiServer::start().await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
        "metadata": {"name": "istio-ca-secret", "namespace": "istio-system"},
        "data": {"ca-cert.pem": "bm90IGEgY2VydA==", "ca-key.pem": "bm90IGEga2V5"}
    }))
    .unwrap();
    let err = ca::load_or_create(api.client(), &load_options(20), || true)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Secret istio-system/istio-ca-secret: ca-cert.pem: no CERTIFICATE block"
    );
    let secret = api
        .get("v1", "Secret", Some("istio-system"), "istio-ca-secret")
        .unwrap();
    assert_eq!(secret["data"]["ca-cert.pem"], "bm90IGEgY2VydA==");
}

// ---- The webhook configuration kept pointing at the CA.

/// The ValidatingWebhookConfiguration of manifests/, as installed.
fn installed_config(api: &FakeApiServer) {
    let path = format!(
        "{}/manifests/istiod/50-validatingwebhookconfiguration.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    api.apply(config).unwrap();
}

fn webhook_state(api: &FakeApiServer) -> (Option<Vec<u8>>, String) {
    let config = api
        .get(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            webhook::DEFAULT_CONFIG_NAME,
        )
        .unwrap();
    let webhook = &config["webhooks"][0];
    let bundle = webhook["clientConfig"]
        .get("caBundle")
        .map(|b| serde_json::from_value::<ByteString>(b.clone()).unwrap().0);
    (
        bundle,
        webhook["failurePolicy"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn fast_options() -> ca_bundle::Options {
    ca_bundle::Options {
        resync: Duration::from_secs(60),
        retry: Duration::from_millis(50),
        leader_poll: Duration::from_millis(20),
        ..ca_bundle::Options::default()
    }
}

#[tokio::test]
async fn the_leader_sets_the_bundle_then_fails_closed_once_invalid_config_is_refused() {
    let api = FakeApiServer::start().await;
    installed_config(&api);
    let root = Authority::generate("cluster.local").unwrap();
    let leader: ca_bundle::IsLeader = Arc::new(|| true);
    let mut keeper = CaBundle::new(
        api.client(),
        fast_options(),
        root.root_pem().to_string(),
        leader,
    );
    assert_eq!(keeper.reconcile().await.unwrap(), Pass::Written);
    assert_eq!(
        webhook_state(&api),
        (
            Some(root.root_pem().as_bytes().to_vec()),
            "Ignore".to_string()
        )
    );
    // The fake API server calls no webhooks: with the Gateway CRD installed, the dry run of an
    // invalid Gateway is admitted, which proves the webhook is not in the path yet.
    api.install_crd(
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "Gateway",
        "gateways",
        true,
    );
    let err = keeper.reconcile().await.unwrap_err().to_string();
    assert!(
        err.contains(
            "not switching to failurePolicy Fail yet: a dry run of an invalid Gateway was admitted"
        ),
        "{err}"
    );
    assert_eq!(webhook_state(&api).1, "Ignore");
    // Without the CRD the check cannot be made and is not waited for, as with istiod.
    api.uninstall_crd("networking.istio.io", "gateways");
    assert_eq!(keeper.reconcile().await.unwrap(), Pass::Written);
    assert_eq!(webhook_state(&api).1, "Fail");
    assert_eq!(keeper.reconcile().await.unwrap(), Pass::UpToDate);
}

#[tokio::test]
async fn only_the_leader_writes_and_changes_are_put_back() {
    let api = FakeApiServer::start().await;
    installed_config(&api);
    let root = Authority::generate("cluster.local").unwrap();
    let leading = Arc::new(AtomicBool::new(false));
    let is_leader: ca_bundle::IsLeader = Arc::new({
        let leading = leading.clone();
        move || leading.load(Ordering::SeqCst)
    });
    let keeper = CaBundle::new(
        api.client(),
        fast_options(),
        root.root_pem().to_string(),
        is_leader,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(keeper.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        webhook_state(&api),
        (None, "Ignore".to_string()),
        "a follower never writes"
    );
    assert!(!api.requests().iter().any(|(method, _)| method == "PUT"));

    leading.store(true, Ordering::SeqCst);
    let wanted = (
        Some(root.root_pem().as_bytes().to_vec()),
        "Fail".to_string(),
    );
    eventually(
        &api,
        &wanted,
        "the new leader to set the bundle and fail closed",
    )
    .await;
    // Someone puts the manifest back (a `kubectl apply`): the watch brings it back well
    // before the 60 s resync.
    installed_config(&api);
    eventually(&api, &wanted, "the change to be undone").await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

async fn eventually(api: &FakeApiServer, wanted: &(Option<Vec<u8>>, String), what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while webhook_state(api) != *wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_missing_configuration_is_an_error_naming_it() {
    let api = FakeApiServer::start().await;
    let leader: ca_bundle::IsLeader = Arc::new(|| true);
    let mut keeper = CaBundle::new(api.client(), fast_options(), "root".into(), leader);
    let err = keeper.reconcile().await.unwrap_err().to_string();
    assert_eq!(
        err,
        "ValidatingWebhookConfiguration istio-validator-istio-system not found"
    );
}
