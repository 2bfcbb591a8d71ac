//! istiod's TLS port (15012): ADS for authenticated proxies, with their secrets, and the CA API.
//!
//! The server certificate comes from the mesh CA, for istiod's names. A client may present a
//! certificate the CA issued; TLS verifies it against the mesh roots, and its SPIFFE id rides
//! with every request as [`Peer`]. Without one, requests must carry a service-account token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::authenticate::Authenticator;
use super::ca_service::CaService;
use super::proto::istio_certificate_service_server::IstioCertificateServiceServer;
use super::secrets::WorkloadSecrets;
use crate::ca::serving::{self, ServingError};
use crate::ca::{Authority, SpiffeId};
use crate::xds::csds::CsdsService;
use crate::xds::reflection;
use crate::xds::{AdsService, Connections, Peer, Security, SnapshotRx};

/// Lifetime of the port's own certificate (renewed two thirds in).
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait in the listen backlog.
const HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsPortError {
    #[error(transparent)]
    Certificate(#[from] ServingError),
    #[error("TLS xDS port: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS xDS port: the CA roots: {0}")]
    Roots(String),
    #[error("TLS xDS port: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What the port serves with.
pub struct TlsPort {
    pub authority: Arc<Authority>,
    pub authenticator: Arc<Authenticator>,
    /// The names of the port's certificate (`istiod.istio-system.svc`, …).
    pub dns_names: Vec<String>,
    /// Lifetime of the workload certificates sent over SDS.
    pub workload_ttl: Duration,
}

/// Serves ADS and the CA API over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    port: TlsPort,
    snapshots: SnapshotRx,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsPortError> {
    let (stop_tx, stop) = watch::channel(false);
    let (cert, renewal) = serving::start(
        port.authority.clone(),
        port.dns_names.clone(),
        CERT_TTL,
        "xDS TLS",
        stop.clone(),
    )?;
    let roots = port.authority.root_store()?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), serving::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsPortError::Roots(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(serving::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let security = Security {
        authenticate: port.authenticator.clone(),
        secrets: Arc::new(WorkloadSecrets::new(
            port.authority.clone(),
            port.workload_ttl,
        )),
    };
    let csds = CsdsService::server(Arc::clone(&connections), snapshots.clone());
    let (reflection, reflection_alpha) = reflection::services(reflection::TLS);
    let ads = AdsService::new(snapshots, connections, stop.clone()).with_security(security);
    let ca = IstioCertificateServiceServer::new(CaService::new(
        port.authority.clone(),
        port.authenticator.clone(),
    ));

    let (accepted_tx, accepted_rx) = mpsc::channel(HANDSHAKES);
    let accepting = tokio::spawn(accept(listener, acceptor, accepted_tx));
    tracing::info!("serving xDS and the CA over TLS");
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let result = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads)
        .add_service(ca)
        .add_service(csds)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha)
        .serve_with_incoming_shutdown(ReceiverStream::new(accepted_rx), signal)
        .await;
    accepting.abort();
    renewal.abort();
    Ok(result?)
}

/// Accepts connections and completes their handshakes concurrently (a slow client must not
/// hold up the others), handing finished ones to the server.
async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    accepted: mpsc::Sender<Result<TlsConnection, std::io::Error>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("TLS xDS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let identity = client_identity(&tls);
                    let _ = accepted
                        .send(Ok(TlsConnection {
                            tls,
                            peer: Peer {
                                addr: Some(addr),
                                identity,
                            },
                        }))
                        .await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, "TLS xDS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS xDS handshake timed out"),
            }
        });
    }
}

/// The SPIFFE id of a verified client certificate, if the client sent one.
fn client_identity(tls: &TlsStream<TcpStream>) -> Option<SpiffeId> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    spiffe_id_of(leaf)
}

/// The one `spiffe://` URI SAN of a certificate, as istiod reads a client's identity.
pub fn spiffe_id_of(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => uri.parse().ok(),
        _ => None,
    })
}

/// A TLS connection and what it established about its peer.
pub struct TlsConnection {
    tls: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// The names istiod's certificate carries, for the control plane's Service in `namespace`.
pub fn dns_names(service: &str, namespace: &str, domain_suffix: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{domain_suffix}"),
        "localhost".into(),
    ]
}
