//! Reading names out of encoded resources without decoding them: the simulated proxies must
//! stay cheap, since they share the machine with the server they measure.

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field, string};

const HCM_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// `envoy.config.cluster.v3.Cluster.DiscoveryType.EDS`.
const EDS: u64 = 3;

/// Field 1 (a string) of an encoded message: the name of a Cluster, Listener and
/// RouteConfiguration, the `cluster_name` of a ClusterLoadAssignment. Encoders write fields in
/// tag order, so this reads a few bytes and stops.
pub fn name(mut buf: &[u8]) -> Result<String> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        if tag == 1 {
            let mut name = String::new();
            string::merge(wire_type, &mut name, &mut buf, DecodeContext::default())?;
            return Ok(name);
        }
        skip_field(wire_type, tag, &mut buf, DecodeContext::default())?;
    }
    bail!("resource has no name (field 1)")
}

/// The EDS service name of an encoded Cluster (`eds_cluster_config.service_name`, else its
/// name), or `None` if the cluster is not of type EDS. Reads fields 1–3 only:
/// `name = 1`, `type = 2`, `eds_cluster_config = 3 { eds_config = 1, service_name = 2 }`.
pub fn eds_service_name(mut buf: &[u8]) -> Result<Option<String>> {
    let (mut name, mut service_name, mut eds) = (String::new(), String::new(), false);
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match (tag, wire_type) {
            (1, _) => string::merge(wire_type, &mut name, &mut buf, DecodeContext::default())?,
            (2, WireType::Varint) => eds = decode_varint(&mut buf)? == EDS,
            (3, WireType::LengthDelimited) => {
                let len = usize::try_from(decode_varint(&mut buf)?)?;
                let mut inner = buf.get(..len).context("truncated eds_cluster_config")?;
                buf = &buf[len..];
                while !inner.is_empty() {
                    let (tag, wire_type) = decode_key(&mut inner)?;
                    if tag == 2 {
                        string::merge(
                            wire_type,
                            &mut service_name,
                            &mut inner,
                            DecodeContext::default(),
                        )?;
                    } else {
                        skip_field(wire_type, tag, &mut inner, DecodeContext::default())?;
                    }
                }
            }
            (tag, _) if tag > 3 => break,
            (tag, wire_type) => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
        }
    }
    Ok(eds.then_some(if service_name.is_empty() {
        name
    } else {
        service_name
    }))
}

/// The RDS route config names a Listener's HTTP connection managers point at. A proxy here
/// has few listeners (a gateway one, a sidecar three or four), so each is decoded in full.
pub fn rds_names(any: &Any) -> Result<Vec<String>> {
    let listener = Listener::decode(any.value.as_slice())?;
    let mut names = Vec::new();
    for chain in listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref())
    {
        for filter in &chain.filters {
            let Some(ConfigType::TypedConfig(config)) = &filter.config_type else {
                continue;
            };
            if config.type_url != HCM_URL {
                continue;
            }
            let hcm = HttpConnectionManager::decode(config.value.as_slice())?;
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                names.push(rds.route_config_name);
            }
        }
    }
    Ok(names)
}
