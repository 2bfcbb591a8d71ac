//! The webhook over HTTPS: `POST /validate` (and istiod's `/validate/`), AdmissionReview JSON
//! in and out, with a certificate from pilotfish's CA that is renewed while the listener runs.
//!
//! Requests are checked as istiod checks them (`application/json`, a non-empty body), and a
//! body may be at most 6 MiB: an AdmissionReview holds the object twice on UPDATE, and the API
//! server itself caps an object near 1.5 MiB (etcd's request limit), so 6 MiB only bounds what
//! an unauthenticated client can make pilotfish buffer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admission::{self, Outcome};
use crate::ca::Authority;
use crate::ca::serving::{self, ServingError};

/// Largest request body read.
pub const MAX_BODY: usize = 6 << 20;
/// Lifetime of the serving certificate; it is renewed when two thirds of it have passed.
pub const CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// A client that has not finished its TLS handshake (or sent its headers) by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Certificate(#[from] ServingError),
    #[error("webhook TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The routes, without TLS (the HTTP side of the webhook).
pub fn router() -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/", post(validate))
}

async fn validate(request: Request) -> Response {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let message = format!("invalid Content-Type {content_type:?}, want `application/json`\n");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    // An announced length over the limit is refused before any of the body is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {MAX_BODY} bytes\n"),
        )
            .into_response()
    };
    if announced.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    // Past the limit, or the client went away mid-body: either way no review is read.
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY).await else {
        return too_large();
    };
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "no body found\n").into_response();
    }
    match admission::review(&body) {
        Ok(reviewed) => {
            match &reviewed.outcome {
                Outcome::Denied { message } => tracing::info!("admission denied: {message}"),
                Outcome::Allowed { warnings } => tracing::debug!(warnings, "admission allowed"),
                Outcome::NotChecked { reason } => {
                    tracing::debug!("admission allowed unchecked: {reason}")
                }
            }
            axum::Json(reviewed.review).into_response()
        }
        Err(e) => {
            tracing::warn!("malformed admission review: {e}");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

/// Serves the webhook on `listener` until `shutdown` completes, with a certificate for
/// `dns_names` issued by `authority` and renewed before it expires.
pub async fn serve(
    listener: TcpListener,
    authority: Arc<Authority>,
    dns_names: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_ttl(listener, authority, dns_names, CERT_TTL, shutdown).await
}

/// [`serve`] with the certificate lifetime chosen (tests renew in seconds).
pub async fn serve_with_ttl(
    listener: TcpListener,
    authority: Arc<Authority>,
    dns_names: Vec<String>,
    cert_ttl: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop) = watch::channel(false);
    let (cert, renewal) = serving::start(authority, dns_names, cert_ttl, "webhook", stop.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(serving::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    tracing::info!(addr = ?listener.local_addr().ok(), "serving the validating webhook (HTTPS)");
    let router = router();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(connection(acceptor.clone(), tcp, router.clone(), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("webhook accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    stop_tx.send_replace(true);
    renewal.abort();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("webhook connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// Completes once shutdown has begun (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: drop it here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!("webhook TLS handshake failed: {e}"),
        Err(_) => return tracing::debug!("webhook TLS handshake timed out"),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("webhook connection ended: {e}");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
