//! The CLI side of CSDS: one unary fetch from a running control plane.

use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse};

#[derive(Debug, thiserror::Error)]
pub enum CsdsClientError {
    #[error("xDS address {address:?}: {source}")]
    Address {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("connecting to the CSDS service at {address}: {source}")]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("CSDS FetchClientStatus at {address}: {source}")]
    Fetch {
        address: String,
        source: Box<tonic::Status>,
    },
}

/// Every proxy connected to the plaintext xDS port at `address` (`host:port`).
pub async fn fetch(address: &str) -> Result<ClientStatusResponse, CsdsClientError> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url).map_err(|source| {
        CsdsClientError::Address {
            address: address.into(),
            source,
        }
    })?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| CsdsClientError::Connect {
            address: address.into(),
            source,
        })?;
    let response = ClientStatusDiscoveryServiceClient::new(channel)
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .map_err(|e| CsdsClientError::Fetch {
            address: address.into(),
            source: Box::new(e),
        })?;
    Ok(response.into_inner())
}
