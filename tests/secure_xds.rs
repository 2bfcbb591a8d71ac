//! The TLS xDS port end to end over real TLS: who a caller is comes only from its client
//! certificate (or token), never from what it asks for.

mod support;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use hyper_util::rt::TokioIo;
use pilotfish::ca::{Authority, SpiffeId};
use pilotfish::model::MeshConfig;
use pilotfish::security::Authenticator;
use pilotfish::security::proto::IstioCertificateRequest;
use pilotfish::security::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use pilotfish::security::tls_port::{self, TlsPort, spiffe_id_of};
use pilotfish::store::Snapshot;
use pilotfish::xds::Connections;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

struct Port {
    addr: std::net::SocketAddr,
    authority: Arc<Authority>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Port {
    let authority = Arc::new(Authority::generate("cluster.local").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let context = pilotfish::push::build(&Snapshot::of(Vec::new()), &MeshConfig::default(), None);
    // The sender is leaked: the port keeps serving this one snapshot for the whole test.
    let (tx, rx) = watch::channel::<Arc<dyn pilotfish::xds::Snapshot>>(context);
    std::mem::forget(tx);
    let port = TlsPort {
        authority: authority.clone(),
        authenticator: Arc::new(Authenticator::new("cluster.local", None)),
        dns_names: vec!["localhost".into()],
        workload_ttl: Duration::from_secs(3600),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tls_port::serve(
        listener,
        port,
        rx,
        Connections::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    Port {
        addr,
        authority,
        _stop: stop,
    }
}

/// A channel over TLS to the port, trusting the mesh root, with `client` (chain, key PEM).
async fn channel(port: &Port, client: Option<(String, String)>) -> Channel {
    let roots = port.authority.root_store().unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect();
            builder
                .with_client_auth_cert(
                    chain,
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = port.addr;
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

/// A client certificate for `namespace/account`, as `pilotfish ca issue` writes it.
fn client_cert(authority: &Authority, namespace: &str, account: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let id = SpiffeId::new("cluster.local", namespace, account).unwrap();
    let cert = authority
        .sign_workload_key(&key, &id, Duration::from_secs(600))
        .unwrap();
    (cert.cert_chain.concat(), key.serialize_pem())
}

/// A CSR that asks for `uri` (which must be ignored).
fn csr_asking_for(uri: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn leaf_identity(pem: &str) -> SpiffeId {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    spiffe_id_of(&der).unwrap()
}

#[tokio::test]
async fn a_certificate_is_for_the_caller_not_for_what_the_csr_asks() {
    let port = start().await;
    let sleep = client_cert(&port.authority, "foo", "sleep");
    let mut ca = IstioCertificateServiceClient::new(channel(&port, Some(sleep)).await);
    let request = IstioCertificateRequest {
        csr: csr_asking_for("spiffe://cluster.local/ns/bar/sa/admin"),
        validity_duration: 3600,
        metadata: None,
    };
    let chain = ca
        .create_certificate(request)
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        leaf_identity(&chain[0]).to_string(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    assert_eq!(
        chain.last().unwrap().trim(),
        port.authority.root_pem().trim(),
        "the chain ends at the root"
    );
}

#[tokio::test]
async fn bad_requests_get_errors_that_say_why() {
    let port = start().await;
    let sleep = client_cert(&port.authority, "foo", "sleep");
    let mut ca = IstioCertificateServiceClient::new(channel(&port, Some(sleep)).await);
    let ask = |csr: String, validity_duration| IstioCertificateRequest {
        csr,
        validity_duration,
        metadata: None,
    };
    let garbage = ca
        .create_certificate(ask("not a csr".into(), 0))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");
    let huge = ca
        .create_certificate(ask("A".repeat(70 * 1024), 0))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::InvalidArgument);
    assert!(huge.message().contains("bytes"), "{}", huge.message());
    let too_long = ca
        .create_certificate(ask(csr_asking_for("spiffe://x/ns/a/sa/b"), 365 * 24 * 3600))
        .await
        .unwrap_err();
    assert!(
        too_long.message().contains("max allowed TTL"),
        "{}",
        too_long.message()
    );
}

#[tokio::test]
async fn without_a_certificate_or_token_nothing_is_served() {
    let port = start().await;
    let mut ca = IstioCertificateServiceClient::new(channel(&port, None).await);
    let request = IstioCertificateRequest {
        csr: csr_asking_for("spiffe://cluster.local/ns/foo/sa/sleep"),
        validity_duration: 0,
        metadata: None,
    };
    let refused = ca.create_certificate(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

fn node(namespace: &str, account: &str) -> Node {
    let string = |s: &str| Value {
        kind: Some(ValueKind::StringValue(s.into())),
    };
    Node {
        id: format!("sidecar~10.0.0.1~app-1.{namespace}~{namespace}.svc.cluster.local"),
        cluster: "app".into(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), string(namespace)),
                ("SERVICE_ACCOUNT".to_string(), string(account)),
            ]
            .into_iter()
            .collect(),
        }),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion("test".into())),
        ..Default::default()
    }
}

const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[tokio::test]
async fn a_proxy_gets_only_its_own_identitys_secrets() {
    let port = start().await;
    let sleep = client_cert(&port.authority, "foo", "sleep");
    let mut ads = AggregatedDiscoveryServiceClient::new(channel(&port, Some(sleep)).await);

    // Claiming the identity it authenticated as: its own certificate and key, and the roots.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node("foo", "sleep")),
        type_url: SECRET.into(),
        resource_names: vec!["default".into(), "ROOTCA".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = ads
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let secrets: Vec<Secret> = response
        .resources
        .iter()
        .map(|a| prost::Message::decode(a.value.as_slice()).unwrap())
        .collect();
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ROOTCA", "default"]);
    let Some(secret::Type::TlsCertificate(cert)) = &secrets[1].r#type else {
        panic!("{:?}", secrets[1])
    };
    let Some(Specifier::InlineBytes(chain)) = &cert.certificate_chain.as_ref().unwrap().specifier
    else {
        panic!()
    };
    assert_eq!(
        leaf_identity(std::str::from_utf8(chain).unwrap()).to_string(),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    drop(tx);

    // Claiming another namespace or service account: refused.
    for (ns, sa) in [("bar", "sleep"), ("foo", "httpbin")] {
        let sleep = client_cert(&port.authority, "foo", "sleep");
        let mut ads = AggregatedDiscoveryServiceClient::new(channel(&port, Some(sleep)).await);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(DiscoveryRequest {
            node: Some(node(ns, sa)),
            type_url: SECRET.into(),
            resource_names: vec!["default".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut responses = ads
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let refused = responses.message().await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::PermissionDenied,
            "{ns}/{sa}: {refused:?}"
        );
    }
}

#[test]
fn the_ca_key_is_never_in_debug_output() {
    let authority = Authority::generate("cluster.local").unwrap();
    let debug = format!("{authority:?}");
    assert!(
        !debug.contains("PRIVATE KEY") && debug.contains("redacted"),
        "{debug}"
    );
    let issued = authority
        .issue_server_cert(&["localhost".into()], Duration::from_secs(60))
        .unwrap();
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
}

/// In a cluster: a service-account token, checked with a TokenReview against the (fake) API
/// server through the real `kube::Client`, is the caller's identity.
#[tokio::test]
async fn a_service_account_token_is_checked_with_a_token_review() {
    let fake = support::fake_apiserver::FakeApiServer::start().await;
    fake.add_token(
        "good-token",
        "system:serviceaccount:foo:sleep",
        &["istio-ca"],
    );
    fake.add_token(
        "api-token",
        "system:serviceaccount:foo:sleep",
        &["https://kubernetes.default.svc"],
    );
    let reviewer = Arc::new(pilotfish::security::token_review::TokenReviewer::new(
        fake.client(),
    ));
    let auth = Authenticator::new("cluster.local", Some(reviewer));
    let id = auth.caller(None, Some("good-token".into())).await.unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/foo/sa/sleep");
    let wrong_audience = auth
        .caller(None, Some("api-token".into()))
        .await
        .unwrap_err();
    assert_eq!(wrong_audience.code(), tonic::Code::Unauthenticated);
    assert!(
        wrong_audience.message().contains("audiences"),
        "{}",
        wrong_audience.message()
    );
    let unknown = auth.caller(None, Some("forged".into())).await.unwrap_err();
    assert!(
        unknown.message().contains("invalid bearer token"),
        "{}",
        unknown.message()
    );
}
