//! CSDS over gRPC, next to ADS on the xDS ports: both the unary fetch and the stream, which
//! answers each request it reads with the registry as it is then.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{MatcherError, status};
use crate::xds::connection::Connections;

/// The CSDS service over the connection registry.
#[derive(Debug, Clone)]
pub struct CsdsService {
    connections: Arc<Connections>,
}

impl CsdsService {
    pub fn new(connections: Arc<Connections>) -> CsdsService {
        CsdsService { connections }
    }

    /// The service ready to add to a `tonic::transport::Server`.
    pub fn server(
        connections: Arc<Connections>,
    ) -> ClientStatusDiscoveryServiceServer<CsdsService> {
        ClientStatusDiscoveryServiceServer::new(CsdsService::new(connections))
    }
}

fn answer(
    connections: &Connections,
    request: &ClientStatusRequest,
) -> Result<ClientStatusResponse, Status> {
    status(connections, request).map_err(|e: MatcherError| Status::invalid_argument(e.to_string()))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let connections = Arc::clone(&self.connections);
        let responses = request
            .into_inner()
            .map(move |req| answer(&connections, &req?));
        Ok(Response::new(Box::pin(responses)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        answer(&self.connections, request.get_ref()).map(Response::new)
    }
}
