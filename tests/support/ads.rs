//! A SotW ADS client standing in for Envoy: it names its node on the first request only, as
//! Envoy does, subscribes, and ACKs or NACKs what it gets. Included by path
//! (`#[path = "support/ads.rs"]`) where the fake API server is not needed.
#![allow(dead_code)]

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilotfish::xds::TypeUrl;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// How long a response may take.
const WAIT: Duration = Duration::from_secs(5);

pub struct SotwProxy {
    /// Sent with the first request, then `None`.
    node: Option<Node>,
    tx: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl SotwProxy {
    /// Opens an ADS stream to the server at `url` (`http://host:port`).
    pub async fn connect(url: String, node: Node) -> SotwProxy {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::connect(url)
            .await
            .unwrap();
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        SotwProxy {
            node: Some(node),
            tx,
            responses,
        }
    }

    pub async fn send(&mut self, mut req: DiscoveryRequest) {
        if let Some(node) = self.node.take() {
            req.node = Some(node);
        }
        self.tx.send(req).await.unwrap();
    }

    /// Asks for `names` of `ty` (none: a wildcard for CDS and LDS) and waits for the answer.
    pub async fn subscribe(&mut self, ty: TypeUrl, names: &[&str]) -> DiscoveryResponse {
        self.request(DiscoveryRequest {
            type_url: ty.url().into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await
    }

    /// Sends `req` and waits for the next response.
    pub async fn request(&mut self, req: DiscoveryRequest) -> DiscoveryResponse {
        self.send(req).await;
        timeout(WAIT, self.responses.message())
            .await
            .expect("no response")
            .unwrap()
            .unwrap()
    }

    pub async fn ack(&mut self, r: &DiscoveryResponse) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Rejects `r` with Envoy's `message`, keeping no version (none was accepted yet).
    pub async fn nack(&mut self, r: &DiscoveryResponse, message: &str) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }
}
