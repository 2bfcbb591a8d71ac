//! Checks what pilotfish serves, not only that it sent something: a fresh sidecar asks for one
//! cluster's assignment over ADS and reads the endpoint addresses out of it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::core::v3::{Node, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

const EDS_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The endpoint addresses (`ip:port`) of `cluster` as served to `node`.
pub async fn endpoints(addr: SocketAddr, node: Node, cluster: &str) -> Result<Vec<String>> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .context("probe: connecting")?
        .max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: EDS_URL.into(),
        resource_names: vec![cluster.to_string()],
        ..Default::default()
    })?;
    let mut responses = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .with_context(|| format!("probe: no EDS response for {cluster} within 10 s"))??
        .context("probe: the stream ended")?;
    let mut addresses = Vec::new();
    for any in &response.resources {
        let assignment = ClusterLoadAssignment::decode(any.value.as_slice())?;
        if assignment.cluster_name != cluster {
            continue;
        }
        for lb in assignment.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(socket)) =
                endpoint.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let port = match socket.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            addresses.push(format!("{}:{port}", socket.address));
        }
    }
    addresses.sort();
    Ok(addresses)
}
