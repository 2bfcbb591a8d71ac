//! `envoy.service.discovery.v3.AggregatedDiscoveryService` by hand. The generated server in
//! envoy-types hardcodes the prost codec, and tonic's encoder and decoder keep per-stream
//! buffers as large as the largest message; this one decodes requests with [`Requests`] and
//! writes each response as one exact-size frame ([`GrpcBody`]) that copies each resource's
//! shared bytes onto the wire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;

use super::SnapshotRx;
use super::body::GrpcBody;
use super::codec::WireResponse;
use super::connection::Connections;
use super::delta::Delta;
use super::requests::Requests;
use super::security::{Peer, Security};
use super::sotw::Sotw;
use super::stream::{self, Protocol, Shared};
use crate::ca::SpiffeId;

pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What the server says it is in every response (`control_plane.identifier`).
pub const CONTROL_PLANE_ID: &str = concat!("pilotfish/", env!("CARGO_PKG_VERSION"));

/// The ADS gRPC service; add it to a `tonic::transport::Server`.
#[derive(Clone)]
pub struct AdsService {
    shared: Shared,
}

impl AdsService {
    /// `shutdown` turning true ends every open stream, so a graceful server shutdown does not
    /// wait forever on proxies that never hang up.
    pub fn new(
        snapshots: SnapshotRx,
        connections: Arc<Connections>,
        shutdown: watch::Receiver<bool>,
    ) -> AdsService {
        AdsService {
            shared: Shared {
                snapshots,
                connections,
                shutdown,
                control_plane: Arc::from(CONTROL_PLANE_ID),
                security: None,
            },
        }
    }

    /// On the TLS port: every stream authenticates first, and is sent its identity's secrets.
    pub fn with_security(mut self, security: Security) -> AdsService {
        self.shared.security = Some(security);
        self
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let start = match req.uri().path() {
            SOTW_PATH => respond::<Sotw, B>,
            DELTA_PATH => respond::<Delta, B>,
            _ => return Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        };
        Box::pin(async move {
            let caller = match &shared.security {
                None => None,
                Some(security) => {
                    let cert = req
                        .extensions()
                        .get::<Peer>()
                        .and_then(|p| p.identity.clone());
                    match security
                        .authenticate
                        .authenticate(cert, bearer_token(req.headers()))
                        .await
                    {
                        Ok(identity) => Some(identity),
                        Err(status) => {
                            tracing::info!(peer = ?peer_addr(&req), error = status.message(), "refusing an unauthenticated xDS stream");
                            return Ok(status.into_http());
                        }
                    }
                }
            };
            Ok(start(&shared, req, caller))
        })
    }
}

/// Starts the stream task for protocol `P`: requests decode through [`Requests`],
/// responses go out through [`GrpcBody`], one exact-size frame each.
fn respond<P, B>(
    shared: &Shared,
    req: http::Request<B>,
    caller: Option<SpiffeId>,
) -> http::Response<tonic::body::Body>
where
    P: Protocol,
    P::Request: prost::Message + Default,
    P::Response: WireResponse,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let peer = peer_addr(&req);
    let requests = Requests::<_, P::Request>::new(Box::pin(req.into_body()));
    let responses = stream::start::<P, _>(shared, peer, caller, requests);
    let mut response = http::Response::new(tonic::body::Body::new(GrpcBody::new(responses)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The client's address, on the plaintext port or the TLS one.
fn peer_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = req.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<Peer>().and_then(|p| p.addr))
}

/// The bearer token of gRPC's `authorization` metadata, as istio-agent sends it.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then(|| token.to_string())
}
