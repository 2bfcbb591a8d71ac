//! Two replicas of `pilotfish serve` against one (fake) cluster, as the Deployment runs them:
//! one leader; one CA root in `istio-ca-secret`; both serve the webhook with certificates from
//! that root; only the leader writes the webhook configuration's caBundle; a leader that
//! drains hands the Lease to the other at once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pilotfish::leader::LeaseTimings;
use pilotfish::operator::{LEASE_NAME, OperatorOptions};
use pilotfish::serve::{ConfigSource, Listeners, ServeOptions};
use pilotfish::source::kubernetes::KubeOptions;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::fake_apiserver::FakeApiServer;

const NAMESPACE: &str = "istio-system";

struct Replica {
    webhook: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), pilotfish::serve::ServeError>>,
}

async fn replica(fake: &FakeApiServer, name: &str) -> Replica {
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (xds, webhook) = (bind().await.unwrap(), bind().await.unwrap());
    let address = webhook.local_addr().unwrap();
    let operator = OperatorOptions {
        identity: name.into(),
        lease: LeaseTimings {
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(1000),
            retry_period: Duration::from_millis(100),
        },
        ..OperatorOptions::default()
    };
    let options = ServeOptions {
        debounce: Duration::from_millis(10),
        ..ServeOptions::new(ConfigSource::Kubernetes {
            client: fake.client(),
            options: KubeOptions::default(),
            operator,
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners {
        webhook: Some(webhook),
        ..Listeners::new(xds)
    };
    let task = tokio::spawn(pilotfish::serve::serve(
        options,
        listeners,
        pilotfish::xds::Connections::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    Replica {
        webhook: address,
        stop,
        task,
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    let lease = fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some(NAMESPACE),
        LEASE_NAME,
    )?;
    lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn base64_decode(text: &str) -> Vec<u8> {
    serde_json::from_value::<k8s_openapi::ByteString>(Value::String(text.into()))
        .unwrap()
        .0
}

/// The PEM root of `istio-ca-secret`, as DER.
fn secret_root(fake: &FakeApiServer) -> Option<Vec<u8>> {
    let secret = fake.get("v1", "Secret", Some(NAMESPACE), "istio-ca-secret")?;
    let pem = base64_decode(secret.pointer("/data/ca-cert.pem")?.as_str()?);
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
        .ok()
        .map(|c: CertificateDer<'static>| c.to_vec());
    der
}

/// Completes a TLS handshake with the webhook, trusting only `root` and expecting the name the
/// API server dials.
async fn handshake(address: std::net::SocketAddr, root: &[u8]) -> std::io::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::try_from("istiod.istio-system.svc").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test]
async fn one_leader_one_root_both_replicas_serve_the_webhook_and_the_lease_moves_on_drain() {
    let fake = FakeApiServer::start().await;
    let config = format!(
        "{}/manifests/istiod/50-validatingwebhookconfiguration.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    fake.apply(serde_saphyr::from_str(&std::fs::read_to_string(config).unwrap()).unwrap())
        .unwrap();
    let a = replica(&fake, "istiod-a").await;
    let b = replica(&fake, "istiod-b").await;

    let leader = eventually("a leader", || holder(&fake)).await;
    let root = eventually("the CA root", || secret_root(&fake)).await;
    for replica in [&a, &b] {
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if handshake(replica.webhook, &root).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            served.is_ok(),
            "the webhook at {} presents a certificate from the Secret's root",
            replica.webhook
        );
    }
    eventually("the caBundle", || {
        let config = fake.get(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            "istio-validator-istio-system",
        )?;
        let bundle = base64_decode(
            config
                .pointer("/webhooks/0/clientConfig/caBundle")?
                .as_str()?,
        );
        let der: CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(&bundle).ok()?;
        (der.to_vec() == root).then_some(())
    })
    .await;

    // The leader drains: the other replica holds the Lease well before it would have expired.
    let (leaving, staying) = if leader == "istiod-a" { (a, b) } else { (b, a) };
    let handed_over = tokio::time::Instant::now();
    leaving.stop.send(()).unwrap();
    leaving.task.await.unwrap().unwrap();
    let next = eventually("a new leader", || holder(&fake).filter(|h| *h != leader)).await;
    assert_ne!(next, leader);
    assert!(
        handed_over.elapsed() < Duration::from_millis(1500),
        "released, not expired: {:?}",
        handed_over.elapsed()
    );
    assert_eq!(
        secret_root(&fake).unwrap(),
        root,
        "the root is never replaced"
    );
    staying.stop.send(()).unwrap();
    staying.task.await.unwrap().unwrap();
}

/// The ConfigMap `istio-ca-root-cert` of `namespace`, as DER.
fn config_map_root(fake: &FakeApiServer, namespace: &str) -> Option<Vec<u8>> {
    let map = fake.get("v1", "ConfigMap", Some(namespace), "istio-ca-root-cert")?;
    let pem = map.pointer("/data/root-cert.pem")?.as_str()?.to_string();
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c: CertificateDer<'static>| c.to_vec())
}

#[tokio::test]
async fn the_leader_puts_the_root_in_every_namespace_and_corrects_a_wrong_one() {
    let fake = FakeApiServer::start().await;
    for ns in ["istio-system", "shop"] {
        fake.apply(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
    }
    // A stale root left behind by an earlier CA: replaced.
    fake.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"},
        "data": {"root-cert.pem": "stale"},
    }))
    .unwrap();
    let a = replica(&fake, "istiod-a").await;
    let root = eventually("the CA root", || secret_root(&fake)).await;
    for ns in ["istio-system", "shop"] {
        let found = eventually(&format!("the root in {ns}"), || {
            config_map_root(&fake, ns).filter(|r| *r == root)
        })
        .await;
        assert_eq!(found, root);
    }
    // A namespace created later gets it too.
    fake.apply(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}}),
    )
    .unwrap();
    eventually("the root in a new namespace", || {
        config_map_root(&fake, "late").filter(|r| *r == root)
    })
    .await;
    let _ = a.stop.send(());
    let _ = a.task.await;
}
