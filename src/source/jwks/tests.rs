use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::generate::security::jwt::mint::{Signer, jwks as jwks_of};

#[derive(Clone)]
enum Reply {
    Body(String),
    Status(u16, String),
    Redirect(String),
    /// Sent in chunks, without a length.
    Chunked(String),
    Hang,
}

/// A key server on 127.0.0.1 whose replies tests change as they go.
struct KeyServer {
    addr: SocketAddr,
    scheme: &'static str,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (r, h) = (routes.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (routes, hits, tls) = (r.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let reply = routes.lock().unwrap().get(request.uri().path()).cloned();
                            async move { Ok::<_, std::convert::Infallible>(respond(reply).await) }
                        });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        KeyServer {
            addr,
            scheme,
            routes,
            hits,
        }
    }

    fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.into(), reply);
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn respond(reply: Option<Reply>) -> hyper::Response<axum::body::Body> {
    let response = hyper::Response::builder();
    match reply {
        None => response.status(404).body("not found".into()),
        Some(Reply::Body(text)) => response.body(text.into()),
        Some(Reply::Status(status, text)) => response.status(status).body(text.into()),
        Some(Reply::Redirect(location)) => response
            .status(302)
            .header("location", location)
            .body(axum::body::Body::empty()),
        Some(Reply::Chunked(text)) => {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = text
                .into_bytes()
                .chunks(100)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            response.body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
        }
        Some(Reply::Hang) => std::future::pending().await,
    }
    .unwrap()
}

fn uri(url: String) -> JwksSource {
    JwksSource::Uri(url)
}

fn wanting(sources: &[&JwksSource], timeout: Duration) -> BTreeMap<JwksSource, Duration> {
    sources.iter().map(|s| ((*s).clone(), timeout)).collect()
}

const FIVE_SECONDS: Duration = Duration::from_secs(5);

#[tokio::test]
async fn fetches_keys_over_http_and_tells_subscribers() {
    let server = KeyServer::start(None).await;
    let keys = Signer::es256("k1").jwks();
    server.set("/keys", Reply::Body(keys.clone()));
    let jwks = Jwks::new(Settings::default());
    let mut changes = jwks.subscribe();
    let source = uri(server.url("/keys"));

    assert_eq!(jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await, []);
    assert_eq!(jwks.jwks(&source).as_deref(), Some(keys.as_str()));
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();

    // Wanted again: already known, not fetched again.
    assert_eq!(jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await, []);
    assert_eq!(server.hits(), 1);
    assert!(!changes.has_changed().unwrap());

    // No longer wanted: forgotten.
    assert_eq!(jwks.refresh(BTreeMap::new()).await, []);
    assert_eq!(jwks.jwks(&source), None);
}

#[tokio::test]
async fn a_failed_source_has_no_keys_until_a_refetch_succeeds() {
    let server = KeyServer::start(None).await;
    server.set("/keys", Reply::Status(503, "down for maintenance".into()));
    let jwks = Jwks::new(Settings::default());
    let changes = jwks.subscribe();
    let source = uri(server.url("/keys"));

    let errors = jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    assert!(
        matches!(&errors[..], [JwksError::Status { status: 503, body, .. }] if body == "down for maintenance"),
        "{errors:?}"
    );
    assert_eq!(jwks.jwks(&source), None);
    assert!(!changes.has_changed().unwrap());

    // The next config change does not retry it; the refresher does.
    jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    assert_eq!(server.hits(), 1);
    let keys = Signer::rs256("r").jwks();
    server.set("/keys", Reply::Body(keys.clone()));
    assert_eq!(jwks.refetch().await, []);
    assert_eq!(jwks.jwks(&source).as_deref(), Some(keys.as_str()));
    assert!(changes.has_changed().unwrap());
}

#[tokio::test]
async fn failures_keep_the_last_good_keys() {
    let server = KeyServer::start(None).await;
    let keys = Signer::es256("k1").jwks();
    server.set("/keys", Reply::Body(keys.clone()));
    let jwks = Jwks::new(Settings::default());
    let source = uri(server.url("/keys"));
    jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    let mut changes = jwks.subscribe();

    server.set("/keys", Reply::Status(500, "x".repeat(300)));
    let errors = jwks.refetch().await;
    let [
        JwksError::Status {
            status: 500, body, ..
        },
    ] = &errors[..]
    else {
        panic!("{errors:?}")
    };
    assert_eq!(body.chars().count(), 101, "error bodies are cut");

    server.set("/keys", Reply::Body("<html>maintenance</html>".into()));
    let errors = jwks.refetch().await;
    assert!(
        matches!(&errors[..], [JwksError::Invalid { reason, .. }] if reason.contains("not JSON")),
        "{errors:?}"
    );
    server.set("/keys", Reply::Body(r#"{"keys":[{"n":"abc"}]}"#.into()));
    assert!(matches!(
        &jwks.refetch().await[..],
        [JwksError::Invalid { .. }]
    ));

    assert_eq!(jwks.jwks(&source).as_deref(), Some(keys.as_str()));
    assert!(!changes.has_changed().unwrap());

    // And a changed key set replaces them.
    let rotated = jwks_of(&[&Signer::es256("k1"), &Signer::es256("k2")]);
    server.set("/keys", Reply::Body(rotated.clone()));
    assert_eq!(jwks.refetch().await, []);
    assert_eq!(jwks.jwks(&source).as_deref(), Some(rotated.as_str()));
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
}

#[tokio::test]
async fn reordered_keys_are_no_change() {
    let server = KeyServer::start(None).await;
    let (a, b) = (Signer::es256("a"), Signer::rs256("b"));
    let keys = jwks_of(&[&a, &b]);
    server.set("/keys", Reply::Body(keys.clone()));
    let jwks = Jwks::new(Settings::default());
    let source = uri(server.url("/keys"));
    jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    let changes = jwks.subscribe();

    let reordered: serde_json::Value = serde_json::from_str(&jwks_of(&[&b, &a])).unwrap();
    server.set(
        "/keys",
        Reply::Body(serde_json::to_string_pretty(&reordered).unwrap()),
    );
    assert_eq!(jwks.refetch().await, []);
    assert!(!changes.has_changed().unwrap());
    // The bytes sent to Envoy stay the same too.
    assert_eq!(jwks.jwks(&source).as_deref(), Some(keys.as_str()));
}

#[tokio::test]
async fn responses_over_the_size_cap_are_refused() {
    let server = KeyServer::start(None).await;
    let big = jwks_of(
        &(0..20)
            .map(|i| Signer::es256(&format!("k{i}")))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>(),
    );
    assert!(big.len() > 2000);
    server.set("/sized", Reply::Body(big.clone()));
    server.set("/chunked", Reply::Chunked(big.clone()));
    let jwks = Jwks::new(Settings {
        max_body_bytes: 1000,
        ..Settings::default()
    });
    let (sized, chunked) = (uri(server.url("/sized")), uri(server.url("/chunked")));

    let errors = jwks
        .refresh(wanting(&[&sized, &chunked], FIVE_SECONDS))
        .await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, JwksError::TooLarge { limit: 1000, .. })),
        "{errors:?}"
    );

    // Under the cap, the chunked one is read whole.
    let jwks = Jwks::new(Settings {
        max_body_bytes: big.len(),
        ..Settings::default()
    });
    assert_eq!(jwks.refresh(wanting(&[&chunked], FIVE_SECONDS)).await, []);
    assert_eq!(jwks.jwks(&chunked).as_deref(), Some(big.as_str()));
}

#[tokio::test]
async fn a_stalled_server_times_out_at_the_rules_timeout() {
    let server = KeyServer::start(None).await;
    server.set("/keys", Reply::Hang);
    let jwks = Jwks::new(Settings::default());
    let source = uri(server.url("/keys"));
    let started = std::time::Instant::now();
    let errors = jwks
        .refresh(wanting(&[&source], Duration::from_millis(200)))
        .await;
    assert!(
        matches!(&errors[..], [JwksError::Timeout { after, .. }] if *after == Duration::from_millis(200)),
        "{errors:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_issuer_without_jwks_uri_is_discovered() {
    let server = KeyServer::start(None).await;
    let keys = Signer::es256("k").jwks();
    server.set(
        "/idp/.well-known/openid-configuration",
        Reply::Body(format!(
            r#"{{"issuer":"x","jwks_uri":"{}"}}"#,
            server.url("/idp/keys")
        )),
    );
    server.set("/idp/keys", Reply::Body(keys.clone()));
    let jwks = Jwks::new(Settings::default());
    // A trailing slash on the issuer is dropped, as istiod drops it.
    let source = JwksSource::Discovery {
        issuer: server.url("/idp/"),
    };
    assert_eq!(jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await, []);
    assert_eq!(jwks.jwks(&source).as_deref(), Some(keys.as_str()));

    server.set(
        "/bare/.well-known/openid-configuration",
        Reply::Body(r#"{"issuer":"x"}"#.into()),
    );
    let bare = JwksSource::Discovery {
        issuer: server.url("/bare"),
    };
    let errors = jwks.refresh(wanting(&[&bare], FIVE_SECONDS)).await;
    assert!(
        matches!(&errors[..], [JwksError::Invalid { uri, reason }] if uri.ends_with(OPENID_DISCOVERY_PATH) && reason.contains("jwks_uri")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn redirects_are_followed_a_few_times() {
    let server = KeyServer::start(None).await;
    let keys = Signer::es256("k").jwks();
    server.set("/keys", Reply::Body(keys.clone()));
    server.set("/moved", Reply::Redirect("/keys".into()));
    server.set("/moved-absolute", Reply::Redirect(server.url("/moved")));
    server.set("/loop", Reply::Redirect("/loop".into()));
    let jwks = Jwks::new(Settings::default());
    let (moved, looping) = (uri(server.url("/moved-absolute")), uri(server.url("/loop")));

    let errors = jwks
        .refresh(wanting(&[&moved, &looping], FIVE_SECONDS))
        .await;
    assert!(
        matches!(&errors[..], [JwksError::TooManyRedirects { uri }] if uri.ends_with("/loop")),
        "{errors:?}"
    );
    assert_eq!(jwks.jwks(&moved).as_deref(), Some(keys.as_str()));
}

#[tokio::test]
async fn bad_uris_are_errors_naming_them() {
    let jwks = Jwks::new(Settings::default());
    let sources = [uri("ftp://keys.example/k".into()), uri("not a uri".into())];
    let errors = jwks
        .refresh(wanting(&[&sources[0], &sources[1]], FIVE_SECONDS))
        .await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, JwksError::InvalidUri { .. })),
        "{errors:?}"
    );
    assert!(
        errors[0].to_string().contains("ftp://keys.example/k"),
        "{}",
        errors[0]
    );
}

/// A server certificate for 127.0.0.1, and its self-signed certificate as the root to trust.
fn tls_server() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], private)
    .unwrap();
    (Arc::new(config), der)
}

#[tokio::test]
async fn https_key_servers_are_checked_against_trusted_roots() {
    let (config, root) = tls_server();
    let server = KeyServer::start(Some(config)).await;
    let keys = Signer::es256("k").jwks();
    server.set("/keys", Reply::Body(keys.clone()));
    let source = uri(server.url("/keys"));
    assert!(server.url("/keys").starts_with("https://127.0.0.1:"));

    let untrusting = Jwks::new(Settings::default());
    let errors = untrusting.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    assert!(
        matches!(&errors[..], [JwksError::Io { reason, .. }] if reason.starts_with("TLS")),
        "{errors:?}"
    );
    assert_eq!(untrusting.jwks(&source), None);

    let trusting = Jwks::new(Settings {
        extra_roots: vec![root],
        ..Settings::default()
    });
    assert_eq!(
        trusting.refresh(wanting(&[&source], FIVE_SECONDS)).await,
        []
    );
    assert_eq!(trusting.jwks(&source).as_deref(), Some(keys.as_str()));
}

#[tokio::test]
async fn the_refresher_picks_up_rotated_keys_and_stops_with_the_cache() {
    let server = KeyServer::start(None).await;
    server.set("/keys", Reply::Body(Signer::es256("old").jwks()));
    let jwks = Jwks::new(Settings {
        refresh_interval: Duration::from_millis(50),
        ..Settings::default()
    });
    let source = uri(server.url("/keys"));
    jwks.refresh(wanting(&[&source], FIVE_SECONDS)).await;
    let mut changes = jwks.subscribe();
    let refresher = jwks.spawn_refresher();

    let rotated = Signer::es256("new").jwks();
    server.set("/keys", Reply::Body(rotated.clone()));
    tokio::time::timeout(FIVE_SECONDS, changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jwks.jwks(&source).as_deref(), Some(rotated.as_str()));

    drop(jwks);
    tokio::time::timeout(FIVE_SECONDS, refresher)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn refresh_schedule_backs_off_after_failures_as_istiod() {
    let s = Settings::default();
    let minutes = |m: u64| Duration::from_secs(60 * m);
    assert_eq!(next_wait(&s, minutes(20), false, false), minutes(20));
    assert_eq!(next_wait(&s, minutes(20), true, false), minutes(1));
    assert_eq!(next_wait(&s, minutes(1), true, true), minutes(2));
    assert_eq!(next_wait(&s, minutes(32), true, true), minutes(60));
    assert_eq!(next_wait(&s, minutes(60), true, true), minutes(60));
    assert_eq!(next_wait(&s, minutes(8), false, true), minutes(20));
}

#[test]
fn what_counts_as_a_key_set() {
    check_jwks(r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB"}]}"#).unwrap();
    assert!(
        check_jwks(r#"{"keys":[]}"#)
            .unwrap_err()
            .contains("no keys")
    );
    assert!(check_jwks(r#"{"kty":"RSA"}"#).unwrap_err().contains("keys"));
    assert!(check_jwks(r#"{"keys":{}}"#).is_err());
    assert!(
        check_jwks(r#"{"keys":[{"kty":""}]}"#)
            .unwrap_err()
            .contains("key 0")
    );
    assert!(check_jwks("<html/>").unwrap_err().contains("not JSON"));
}
