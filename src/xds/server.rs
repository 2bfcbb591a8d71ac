//! Serving ADS over HTTP/2 (Envoy requires h2 on its xDS cluster; tonic's server speaks
//! nothing else unless told to).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use super::connection::Connections;
use super::csds::CsdsService;
use super::reflection;
use super::service::AdsService;
use super::{SnapshotRx, XdsError};

/// HTTP/2 PINGs on idle connections: a proxy that vanished without a FIN (node died, network
/// partition) is noticed and its stream task freed. Same values as istiod's defaults.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Serves ADS on `listener` until `shutdown` resolves, then ends every open stream (proxies
/// reconnect elsewhere) and returns once connections have closed.
pub async fn serve(
    listener: TcpListener,
    snapshots: SnapshotRx,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError> {
    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = watch::channel(false);
    let csds = CsdsService::server(Arc::clone(&connections), snapshots.clone());
    let service = AdsService::new(snapshots, connections, stop_rx);
    let (reflection, reflection_alpha) = reflection::services(reflection::PLAINTEXT);
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    info!(?addr, "serving xDS");
    let signal = async move {
        shutdown.await;
        info!("xDS server shutting down");
        let _ = stop_tx.send(true);
    };
    Server::builder()
        .http2_keepalive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(H2_KEEPALIVE_TIMEOUT))
        .add_service(service)
        .add_service(csds)
        .add_optional_service(reflection)
        .add_optional_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    Ok(())
}

/// A server running in the background (tests, embedding); bind to port 0 for a free port.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), XdsError>>,
}

impl RunningServer {
    pub async fn spawn(
        addr: SocketAddr,
        snapshots: SnapshotRx,
        connections: Arc<Connections>,
    ) -> Result<RunningServer, XdsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| XdsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| XdsError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, snapshots, connections, shutdown));
        Ok(RunningServer { addr, stop, task })
    }

    /// `http://addr`, for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> Result<(), XdsError> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
