//! `envoy.service.discovery.v3.AggregatedDiscoveryService` by hand. The generated server in
//! envoy-types hardcodes the prost codec; this one routes the same two method paths through
//! [`AdsCodec`], which copies each resource's shared bytes onto the wire.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::watch;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};

use super::SnapshotRx;
use super::codec::{AdsCodec, DeltaResponse, SotwResponse};
use super::connection::Connections;
use super::delta::Delta;
use super::sotw::Sotw;
use super::stream::{self, Protocol, ResponseStream, Shared};

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
    B: Body + Send + 'static,
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
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(AdsCodec::<DiscoveryRequest, SotwResponse>::default());
                Ok(grpc.streaming(Method::<Sotw>::new(shared), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(AdsCodec::<DeltaDiscoveryRequest, DeltaResponse>::default());
                Ok(grpc.streaming(Method::<Delta>::new(shared), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// One ADS method: starts the stream task for protocol `P`.
struct Method<P> {
    shared: Shared,
    _protocol: PhantomData<fn() -> P>,
}

impl<P> Method<P> {
    fn new(shared: Shared) -> Self {
        Method { shared, _protocol: PhantomData }
    }
}

impl<P: Protocol> StreamingService<P::Request> for Method<P>
where
    P::Request: prost::Message + Default,
{
    type Response = P::Response;
    type ResponseStream = ResponseStream<P>;
    type Future = std::future::Ready<Result<tonic::Response<ResponseStream<P>>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<P::Request>>) -> Self::Future {
        let peer = request.remote_addr();
        let responses = stream::start::<P, _>(&self.shared, peer, request.into_inner());
        std::future::ready(Ok(tonic::Response::new(responses)))
    }
}
