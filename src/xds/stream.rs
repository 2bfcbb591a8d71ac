//! One ADS stream, whatever its flavour: identify the proxy from the first request, then
//! `select!` between its requests and new snapshots, letting a [`Protocol`] decide what to send
//! and a [`Gate`] when the types of a push go out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug, info, info_span, warn};

use super::codec::SotwResponse;
use super::connection::Rejection;
use super::connection::{Connections, TypeStatus, Variant};
use super::debug_types::{self, Scope};
use super::gate::Gate;
use super::security::{self, Security};
use super::state::{Sources, TypeState};
use super::{ProxyResources, SnapshotRx, TypeUrl};
use crate::ca::SpiffeId;
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
    /// Traces the NACKs received since the last call to the objects behind them.
    fn trace_nacks(&mut self, sources: Sources<'_>) -> Vec<Rejection>;
    /// The request, if it asks for one of istiod's debug types ([`debug_types`]); those are
    /// answered apart from the protocol's own bookkeeping. Only SotW carries them.
    fn debug_request(request: &Self::Request) -> Option<&DiscoveryRequest> {
        let _ = request;
        None
    }
    /// A debug answer as this protocol's response.
    fn debug_response(response: SotwResponse) -> Option<Self::Response> {
        let _ = response;
        None
    }
}

/// What every stream needs from the server; cheap to clone.
#[derive(Clone)]
pub(crate) struct Shared {
    pub snapshots: SnapshotRx,
    pub connections: Arc<Connections>,
    /// Turns true when the server shuts down, ending every stream so connections can close.
    pub shutdown: watch::Receiver<bool>,
    pub control_plane: Arc<str>,
    /// On the TLS port: how callers are authenticated and secrets issued.
    pub security: Option<Security>,
}

pub(crate) type ResponseStream<P> = ReceiverStream<Result<<P as Protocol>::Response, Status>>;

/// Wait before retrying a failed certificate renewal (the current one stays in use).
const RENEW_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// A wall-clock time as a timer deadline (now, if it has passed).
fn refresh_instant(at: std::time::SystemTime) -> Instant {
    Instant::now()
        + at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
}

/// Responses queued per stream before the task waits for the client to read.
const RESPONSE_BUFFER: usize = 8;

/// Starts the task serving one stream and returns the stream of its responses.
/// `caller` is the identity the TLS port authenticated; `None` on the plaintext port.
pub(crate) fn start<P, S>(
    shared: &Shared,
    peer: Option<SocketAddr>,
    caller: Option<SpiffeId>,
    requests: S,
) -> ResponseStream<P>
where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
    tokio::spawn(run::<P, S>(shared.clone(), peer, caller, requests, tx));
    ReceiverStream::new(rx)
}

async fn run<P, S>(
    shared: Shared,
    peer: Option<SocketAddr>,
    caller: Option<SpiffeId>,
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
    // istioctl asks with a node that is no proxy (`debug~0.0.0.0~istioctl~cluster.local`).
    if P::debug_request(&first).is_some() {
        return debug_stream::<P, S>(shared, peer, caller, first, requests, tx).await;
    }
    let mut proxy = match Proxy::from_node(P::node(&first)) {
        Ok(proxy) => proxy,
        Err(e) => {
            warn!(peer = ?peer, error = %e, "rejecting xDS stream");
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    let mut own = match (caller, &shared.security) {
        (Some(identity), Some(security)) => {
            let issued = security::check_identity(&proxy, &identity)
                .map_err(Status::permission_denied)
                .and_then(|()| {
                    security
                        .secrets
                        .issue(&identity)
                        .inspect_err(|_| crate::metrics::global().internal_errors.inc())
                });
            match issued {
                Ok(issued) => {
                    proxy.identity = Some(identity);
                    Some(issued)
                }
                Err(status) => {
                    warn!(peer = ?peer, proxy = %proxy.id, %identity, error = status.message(), "rejecting xDS stream");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
        _ => None,
    };
    let proxy = Arc::new(proxy);
    let registration =
        shared
            .connections
            .register(Arc::clone(&proxy), peer.map(|p| p.to_string()), P::VARIANT);
    let span = info_span!("xds", proxy = %proxy.id, conn = registration.id());
    async move {
        info!(variant = ?P::VARIANT, peer = ?peer, "proxy connected");
        let Shared { mut snapshots, mut shutdown, .. } = shared;
        let snapshot = snapshots.borrow_and_update().clone();
        let mut config = snapshot.resources_for(&proxy);
        let mut resources = security::with_secrets(&config, own.as_ref());
        let mut protocol = P::new(proxy.id.clone(), registration.id(), shared.control_plane);
        let mut out = Vec::new();
        protocol.on_request(first, &resources, &mut out);
        let mut watching = true;
        let mut debug_nonces = 0u64;
        let mut gate = Gate::default();
        loop {
            gate.poll(&mut protocol, &resources, Instant::now(), &mut out);
            for response in out.drain(..) {
                if tx.send(Ok(response)).await.is_err() {
                    return info!("proxy disconnected");
                }
            }
            // NACKs are traced against the newest snapshot: the one the rejected config came
            // from, unless a newer one arrived in the milliseconds the proxy took to answer.
            let sources = |ty: &str, names: &[String]| {
                let snapshot = snapshots.borrow().clone();
                snapshot.sources_of(&proxy, ty, names)
            };
            for rejection in protocol.trace_nacks(&sources) {
                registration.reject(rejection);
            }
            registration.update(protocol.status());
            let deadline = gate.deadline();
            let refresh = own.as_ref().map(|o| refresh_instant(o.refresh_at));
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        let scope = match &proxy.identity {
                            Some(identity) => Scope::Namespace(identity.namespace()),
                            None => Scope::All,
                        };
                        if !answer_debug::<P>(&request, &shared.connections, &snapshots, scope, &mut debug_nonces, &mut out) {
                            protocol.on_request(request, &resources, &mut out);
                        }
                    }
                    Some(Err(status)) => return info!(%status, "proxy stream ended with an error"),
                    None => return info!("proxy disconnected"),
                },
                changed = snapshots.changed(), if watching => match changed {
                    Ok(()) => {
                        // Clone out of the borrow: generation must not hold the watch lock.
                        let snapshot = snapshots.borrow_and_update().clone();
                        debug!(revision = snapshot.revision(), "new snapshot");
                        let next = snapshot.resources_for(&proxy);
                        if !Arc::ptr_eq(&next, &config) {
                            config = next;
                            let previous = std::mem::replace(&mut resources, security::with_secrets(&config, own.as_ref()));
                            gate.push(&mut protocol, &previous, &resources, Instant::now(), &mut out);
                        }
                    }
                    // The publisher is gone: keep serving what the proxy has.
                    Err(_) => watching = false,
                },
                // The certificate is due for renewal: a new one goes out well before the old
                // expires, and connections using the old one keep it (Envoy drains nothing).
                () = sleep_until(refresh.unwrap_or_else(Instant::now)), if refresh.is_some() => {
                    if let (Some(security), Some(identity)) = (&shared.security, &proxy.identity) {
                        match security.secrets.issue(identity) {
                            Ok(issued) => {
                                debug!("renewing the proxy's certificate");
                                own = Some(issued);
                                let previous = std::mem::replace(&mut resources, security::with_secrets(&config, own.as_ref()));
                                gate.push(&mut protocol, &previous, &resources, Instant::now(), &mut out);
                            }
                            Err(status) => {
                                crate::metrics::global().internal_errors.inc();
                                warn!(error = status.message(), "renewing the proxy's certificate failed; retrying in {RENEW_RETRY:?}");
                                if let Some(o) = own.as_mut() {
                                    o.refresh_at = std::time::SystemTime::now() + RENEW_RETRY;
                                }
                            }
                        }
                    }
                }
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

/// Answers `request` into `out` if it asks for a debug type; `false` if it is the protocol's.
/// A debug request that cannot be answered gets an empty response, as istiod sends, and a log.
fn answer_debug<P: Protocol>(
    request: &P::Request,
    connections: &Connections,
    snapshots: &SnapshotRx,
    scope: Scope<'_>,
    nonces: &mut u64,
    out: &mut Vec<P::Response>,
) -> bool {
    let Some(request) = P::debug_request(request) else {
        return false;
    };
    *nonces += 1;
    let nonce = format!("debug-{nonces}");
    let snapshot = snapshots.borrow().clone();
    let response =
        match debug_types::respond(request, connections, &*snapshot, scope, nonce.clone()) {
            None => return true,
            Some(Ok(response)) => response,
            Some(Err(e)) => {
                info!(type_url = %request.type_url, error = %e, "debug request not answered");
                SotwResponse {
                    version_info: String::new(),
                    resources: Vec::new(),
                    type_url: request.type_url.clone(),
                    nonce,
                    control_plane: None,
                }
            }
        };
    out.extend(P::debug_response(response));
    true
}

/// A stream that only asks for debug types (istioctl): never registered as a proxy, its
/// requests answered until it hangs up. A caller authenticated on the TLS port sees its own
/// namespace only.
async fn debug_stream<P, S>(
    shared: Shared,
    peer: Option<SocketAddr>,
    caller: Option<SpiffeId>,
    first: P::Request,
    mut requests: S,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
{
    debug!(peer = ?peer, "debug xDS stream");
    let scope = match &caller {
        Some(identity) => Scope::Namespace(identity.namespace()),
        None => Scope::All,
    };
    let mut shutdown = shared.shutdown.clone();
    let mut nonces = 0u64;
    let mut out = Vec::new();
    let mut next = Some(first);
    while let Some(request) = next.take() {
        if !answer_debug::<P>(
            &request,
            &shared.connections,
            &shared.snapshots,
            scope,
            &mut nonces,
            &mut out,
        ) {
            let status = Status::invalid_argument(
                "a stream that starts with an istio.io/debug type carries only debug types",
            );
            let _ = tx.send(Err(status)).await;
            return;
        }
        for response in out.drain(..) {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
        next = tokio::select! {
            request = requests.next() => request.and_then(Result::ok),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
    }
}
