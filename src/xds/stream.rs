//! One ADS stream, whatever its flavour: identify the proxy from the first request, then
//! `select!` between its requests and new snapshots, letting a [`Protocol`] decide what to send
//! and a [`Gate`] when the types of a push go out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::connection::{Connections, TypeStatus, Variant};
use super::gate::Gate;
use super::state::TypeState;
use super::{ProxyResources, SnapshotRx, TypeUrl};
use crate::model::Proxy;

/// What SotW and delta differ in: how a request or a new snapshot turns into responses.
pub(crate) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const VARIANT: Variant;

    fn node(request: &Self::Request) -> Option<&Node>;
    fn new(proxy_id: String, connection_id: u64, control_plane: Arc<str>) -> Self;
    fn on_request(
        &mut self,
        request: Self::Request,
        resources: &ProxyResources,
        out: &mut Vec<Self::Response>,
    );
    /// The proxy's resources changed (`previous` is what it had): bring `types`, in that
    /// order, up to date. [`Gate`] decides which types go when.
    fn on_push(
        &mut self,
        previous: &ProxyResources,
        resources: &ProxyResources,
        types: &[TypeUrl],
        out: &mut Vec<Self::Response>,
    );
    /// One type's bookkeeping, once the proxy has asked for it.
    fn type_state(&self, ty: TypeUrl) -> Option<&TypeState>;
    fn status(&self) -> BTreeMap<String, TypeStatus>;
}

/// What every stream needs from the server; cheap to clone.
#[derive(Clone)]
pub(crate) struct Shared {
    pub snapshots: SnapshotRx,
    pub connections: Arc<Connections>,
    /// Turns true when the server shuts down, ending every stream so connections can close.
    pub shutdown: watch::Receiver<bool>,
    pub control_plane: Arc<str>,
}

pub(crate) type ResponseStream<P> = ReceiverStream<Result<<P as Protocol>::Response, Status>>;

/// Responses queued per stream before the task waits for the client to read.
const RESPONSE_BUFFER: usize = 8;

/// Starts the task serving one stream and returns the stream of its responses.
pub(crate) fn start<P, S>(
    shared: &Shared,
    peer: Option<SocketAddr>,
    requests: S,
) -> ResponseStream<P>
where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
    tokio::spawn(run::<P, S>(shared.clone(), peer, requests, tx));
    ReceiverStream::new(rx)
}

async fn run<P, S>(
    shared: Shared,
    peer: Option<SocketAddr>,
    mut requests: S,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
{
    let first = match requests.next().await {
        Some(Ok(first)) => first,
        Some(Err(status)) => return debug!(%status, "xDS stream failed before its first request"),
        None => return,
    };
    let proxy = match Proxy::from_node(P::node(&first)) {
        Ok(proxy) => proxy,
        Err(e) => {
            warn!(peer = ?peer, error = %e, "rejecting xDS stream");
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    let registration =
        shared.connections.register(&proxy.id, peer.map(|p| p.to_string()), P::VARIANT);
    let span = info_span!("xds", proxy = %proxy.id, conn = registration.id());
    async move {
        info!(variant = ?P::VARIANT, peer = ?peer, "proxy connected");
        let Shared { mut snapshots, mut shutdown, .. } = shared;
        let snapshot = snapshots.borrow_and_update().clone();
        let mut resources = snapshot.resources_for(&proxy);
        let mut protocol = P::new(proxy.id.clone(), registration.id(), shared.control_plane);
        let mut out = Vec::new();
        protocol.on_request(first, &resources, &mut out);
        let mut watching = true;
        let mut gate = Gate::default();
        loop {
            gate.poll(&mut protocol, &resources, Instant::now(), &mut out);
            for response in out.drain(..) {
                if tx.send(Ok(response)).await.is_err() {
                    return info!("proxy disconnected");
                }
            }
            registration.update(protocol.status());
            let deadline = gate.deadline();
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => protocol.on_request(request, &resources, &mut out),
                    Some(Err(status)) => return info!(%status, "proxy stream ended with an error"),
                    None => return info!("proxy disconnected"),
                },
                changed = snapshots.changed(), if watching => match changed {
                    Ok(()) => {
                        // Clone out of the borrow: generation must not hold the watch lock.
                        let snapshot = snapshots.borrow_and_update().clone();
                        debug!(revision = snapshot.revision(), "new snapshot");
                        let next = snapshot.resources_for(&proxy);
                        if !Arc::ptr_eq(&next, &resources) {
                            let previous = std::mem::replace(&mut resources, next);
                            gate.push(&mut protocol, &previous, &resources, Instant::now(), &mut out);
                        }
                    }
                    // The publisher is gone: keep serving what the proxy has.
                    Err(_) => watching = false,
                },
                // A held push gives up waiting; the `poll` at the top of the loop sends it.
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    return info!("closing stream: server shutting down");
                }
            }
        }
    }
    .instrument(span)
    .await
}
