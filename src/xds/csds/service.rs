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

use super::{StatusError, status};
use crate::xds::SnapshotRx;
use crate::xds::connection::Connections;

/// The CSDS service over the connection registry; bodies come from the newest snapshot.
#[derive(Clone)]
pub struct CsdsService {
    connections: Arc<Connections>,
    snapshots: SnapshotRx,
}

impl CsdsService {
    pub fn new(connections: Arc<Connections>, snapshots: SnapshotRx) -> CsdsService {
        CsdsService {
            connections,
            snapshots,
        }
    }

    /// The service ready to add to a `tonic::transport::Server`.
    pub fn server(
        connections: Arc<Connections>,
        snapshots: SnapshotRx,
    ) -> ClientStatusDiscoveryServiceServer<CsdsService> {
        ClientStatusDiscoveryServiceServer::new(CsdsService::new(connections, snapshots))
    }

    fn answer(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        // Clone out of the borrow: generating bodies must not hold the watch lock.
        let snapshot = self.snapshots.borrow().clone();
        status(&self.connections, Some(&*snapshot), request).map_err(|e| match e {
            StatusError::Matcher(e) => Status::invalid_argument(e.to_string()),
            StatusError::Body(e) => {
                crate::metrics::global().internal_errors.inc();
                Status::internal(e.to_string())
            }
        })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let service = self.clone();
        let responses = request.into_inner().map(move |req| service.answer(&req?));
        Ok(Response::new(Box::pin(responses)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.answer(request.get_ref()).map(Response::new)
    }
}
