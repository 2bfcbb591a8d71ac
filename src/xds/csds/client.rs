//! The CLI side of CSDS: one unary fetch from a running control plane.

use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};

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

/// The answer of the plaintext xDS port at `address` (`host:port`) to `request`.
pub async fn fetch(
    address: &str,
    request: ClientStatusRequest,
) -> Result<ClientStatusResponse, CsdsClientError> {
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
        .fetch_client_status(request)
        .await
        .map_err(|e| CsdsClientError::Fetch {
            address: address.into(),
            source: Box::new(e),
        })?;
    Ok(response.into_inner())
}

/// What `proxy-status` asks: every proxy, no bodies (cheap on the server).
pub fn status_request() -> ClientStatusRequest {
    ClientStatusRequest {
        exclude_resource_contents: true,
        ..Default::default()
    }
}

/// What `proxy-config` asks: the proxy `proxy_id` exactly, with every resource body.
pub fn config_request(proxy_id: &str) -> ClientStatusRequest {
    ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(proxy_id.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        exclude_resource_contents: false,
        ..Default::default()
    }
}
