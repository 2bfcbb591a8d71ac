//! `envoy.service.discovery.v3.AggregatedDiscoveryService` by hand. The generated server in
//! envoy-types hardcodes the prost codec, and tonic's encoder and decoder keep per-stream
//! buffers as large as the largest message; this one decodes requests with [`Requests`] and
//! writes each response as one exact-size frame ([`GrpcBody`]) that copies each resource's
//! shared bytes onto the wire.

use std::convert::Infallible;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;

use super::SnapshotRx;
use super::body::GrpcBody;
use super::codec::WireResponse;
use super::requests::Requests;
use super::connection::Connections;
use super::delta::Delta;
use super::sotw::Sotw;
use super::stream::{self, Protocol, Shared};

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
            },
        }
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
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move { Ok(respond::<Sotw, B>(&shared, req)) }),
            DELTA_PATH => Box::pin(async move { Ok(respond::<Delta, B>(&shared, req)) }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// Starts the stream task for protocol `P`: requests decode through [`Requests`],
/// responses go out through [`GrpcBody`], one exact-size frame each.
fn respond<P, B>(shared: &Shared, req: http::Request<B>) -> http::Response<tonic::body::Body>
where
    P: Protocol,
    P::Request: prost::Message + Default,
    P::Response: WireResponse,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let peer = req.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr);
    let requests = Requests::<_, P::Request>::new(Box::pin(req.into_body()));
    let responses = stream::start::<P, _>(shared, peer, requests);
    let mut response = http::Response::new(tonic::body::Body::new(GrpcBody::new(responses)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}
