//! istiod's plain-HTTP status endpoints (its port 8080): `/ready` for the readiness probe,
//! `/version`, and `/metrics` (Prometheus text). `/metrics` is also served alone on istiod's
//! monitoring port (15014, [`serve_monitoring`]), where Istio's scrape configs look for it.
//!
//! Ready means config is being served: the config directory has been read, or every kind has
//! been listed from the Kubernetes API and the first push context built. It turns false again
//! when a drain starts, so Kubernetes takes the replica out of the `istiod` Service before its
//! streams close.
//!
//! `serve` with debug sources also answers istiod's `/debug/*` endpoints
//! ([`crate::debug::http`]), to loopback clients unless `--debug-remote` is given.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The routes, over the readiness flag `serve` keeps.
pub fn router(ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/ready", get(ready_handler))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(ready)
}

async fn ready_handler(State(ready): State<watch::Receiver<bool>>) -> (StatusCode, &'static str) {
    if *ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: config not yet loaded, or draining\n",
        )
    }
}

async fn version() -> String {
    format!("pilotfish {}\n", env!("CARGO_PKG_VERSION"))
}

async fn metrics() -> Result<([(header::HeaderName, &'static str); 1], String), (StatusCode, String)>
{
    match crate::metrics::global().encode() {
        Ok(text) => Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )),
    }
}

/// istiod's monitoring port: `/metrics` and `/version` only, never readiness or debug.
pub fn monitoring_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/version", get(version))
}

/// Serves [`monitoring_router`] on `listener` until `shutdown` completes.
pub async fn serve_monitoring(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics (monitoring)");
    serve_router(listener, monitoring_router(), shutdown).await
}

/// Serves the status endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "serving /ready, /version and /metrics");
    serve_router(listener, router(ready), shutdown).await
}

/// [`serve`] with the debug endpoints over `sources`.
pub async fn serve_with_debug(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    sources: crate::debug::http::Sources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        remote = sources.remote,
        "serving /ready, /version, /metrics and /debug/*"
    );
    let app = router(ready).merge(crate::debug::http::router(sources));
    serve_router(listener, app, shutdown).await
}

/// Records each client's address, which the debug endpoints' access check reads.
async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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
        let code = response[9..12].parse().unwrap();
        (code, response)
    }

    #[tokio::test]
    async fn ready_follows_the_flag() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, rx, std::future::pending()));
        assert_eq!(get_status(addr, "/ready").await.0, 503);
        tx.send_replace(true);
        assert_eq!(get_status(addr, "/ready").await.0, 200);
        let (code, body) = get_status(addr, "/version").await;
        assert_eq!(code, 200);
        assert!(body.contains(env!("CARGO_PKG_VERSION")), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(true);
        tokio::spawn(serve(listener, rx, std::future::pending()));
        crate::metrics::global().csr.inc();
        let (code, response) = get_status(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        let csr = body
            .lines()
            .find_map(|l| l.strip_prefix("citadel_server_csr_count "))
            .unwrap();
        assert!(csr.parse::<u64>().unwrap() >= 1, "{body}");
        assert!(body.contains("# TYPE pilot_xds_pushes counter"), "{body}");
    }

    #[tokio::test]
    async fn the_monitoring_port_serves_metrics_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_monitoring(listener, std::future::pending()));
        let (code, response) = get_status(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            response.contains("# TYPE pilot_xds_pushes counter"),
            "{response}"
        );
        for path in ["/ready", "/debug/syncz"] {
            assert_eq!(get_status(addr, path).await.0, 404, "{path}");
        }
    }
}
