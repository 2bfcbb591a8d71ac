//! Encoded Envoy resources as the JSON Envoy's own `/config_dump` prints: proto3 canonical
//! JSON with the original (snake_case) field names, default values left out, enums by name,
//! 64-bit integers as strings, durations as `"10s"` or `"1.500s"`, and every `Any` (nested
//! ones such as an HCM's `typed_config` too) expanded as `{"@type": ..., ...fields}`.
//!
//! The message types come from a `FileDescriptorSet` that `build.rs` compiles from the `.proto`
//! files envoy-types ships; a type outside it (see the roots in `build.rs`) is an error that
//! names it.

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// Also what gRPC server reflection serves (`crate::xds::reflection`): one set, embedded once.
pub(crate) static DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

const ANY: &str = "google.protobuf.Any";

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptor set did not load: a build problem, not bad input.
    #[error("envoy descriptors: {0}")]
    Descriptors(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("decoding {type_name}: {source}")]
    Decode {
        type_name: String,
        source: prost::DecodeError,
    },
    /// Serializing failed; a nested `Any` of a type outside the pool ends here, naming it.
    #[error("serializing {type_name}: {source}")]
    Serialize {
        type_name: String,
        source: serde_json::Error,
    },
}

/// An encoded `google.protobuf.Any` as JSON, `"@type"` first.
pub fn any_to_json(any_bytes: &[u8]) -> Result<Value, JsonError> {
    let pool = pool()?;
    let any = Any::decode(any_bytes).map_err(|source| decode_error(ANY, source))?;
    let payload = message_by_url(pool, &any.type_url)?;
    // Decode the payload here so a malformed one is a `Decode` error naming its type; the
    // serializer below decodes it again to print it.
    DynamicMessage::decode(payload.clone(), any.value.as_slice())
        .map_err(|source| decode_error(payload.full_name(), source))?;
    let any_desc = message_by_name(pool, ANY)?;
    let message =
        DynamicMessage::decode(any_desc, any_bytes).map_err(|source| decode_error(ANY, source))?;
    // serde_json's map orders keys, and "@" sorts before every field name.
    serialize(&message, payload.full_name())
}

/// An encoded message of the fully qualified `type_name` (`envoy.config.cluster.v3.Cluster`)
/// as JSON.
pub fn message_to_json(type_name: &str, bytes: &[u8]) -> Result<Value, JsonError> {
    let desc = message_by_name(pool()?, type_name)?;
    let message =
        DynamicMessage::decode(desc, bytes).map_err(|source| decode_error(type_name, source))?;
    serialize(&message, type_name)
}

/// The options Envoy's config_dump prints with.
fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(true)
}

fn serialize(message: &DynamicMessage, type_name: &str) -> Result<Value, JsonError> {
    message
        .serialize_with_options(serde_json::value::Serializer, &options())
        .map_err(|source| JsonError::Serialize {
            type_name: type_name.to_owned(),
            source,
        })
}

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))
}

fn message_by_url(pool: &DescriptorPool, type_url: &str) -> Result<MessageDescriptor, JsonError> {
    type_url
        .rsplit_once('/')
        .and_then(|(_, name)| pool.get_message_by_name(name))
        .ok_or_else(|| JsonError::UnknownType(type_url.to_owned()))
}

fn message_by_name(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor, JsonError> {
    pool.get_message_by_name(name)
        .ok_or_else(|| JsonError::UnknownType(name.to_owned()))
}

fn decode_error(type_name: &str, source: prost::DecodeError) -> JsonError {
    JsonError::Decode {
        type_name: type_name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::{Resource, TypeUrl};
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::config::core::v3::{
        Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
        config_source, socket_address,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
    };
    use envoy_types::pb::google::protobuf::{Duration, UInt64Value};
    use envoy_types::util::pack_any;
    use serde_json::json;

    fn secs(seconds: i64, nanos: i32) -> Option<Duration> {
        Some(Duration { seconds, nanos })
    }

    fn mk_hcm(route_config_name: &str) -> HttpConnectionManager {
        HttpConnectionManager {
            stat_prefix: "inbound_0.0.0.0_8080".into(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                route_config_name: route_config_name.into(),
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    resource_api_version: ApiVersion::V3 as i32,
                    ..Default::default()
                }),
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    Router::default(),
                ))),
                ..Default::default()
            }],
            stream_idle_timeout: secs(10, 0),
            request_timeout: secs(1, 500_000_000),
            ..Default::default()
        }
    }

    fn mk_listener(name: &str, port: u32, typed_config: Any) -> Listener {
        Listener {
            name: name.into(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(typed_config)),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn listener_with_hcm_prints_like_config_dump() {
        let listener = mk_listener("0.0.0.0_8080", 8080, pack_any(mk_hcm("8080")));
        let resource = Resource::encode("0.0.0.0_8080", &listener);
        let json = any_to_json(&resource.any).unwrap();

        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "@type");
        assert_eq!(
            json["@type"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(json["name"], "0.0.0.0_8080");
        assert_eq!(json["address"]["socket_address"]["port_value"], json!(8080));
        assert_eq!(json["address"]["socket_address"]["address"], "0.0.0.0");

        let filter = &json["filter_chains"][0]["filters"][0];
        assert_eq!(
            filter["name"],
            "envoy.filters.network.http_connection_manager"
        );
        let hcm = &filter["typed_config"];
        assert_eq!(
            hcm["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        assert_eq!(hcm["stat_prefix"], "inbound_0.0.0.0_8080");
        assert_eq!(hcm["rds"]["route_config_name"], "8080");
        assert_eq!(
            hcm["rds"]["config_source"],
            json!({"ads": {}, "resource_api_version": "V3"})
        );
        assert_eq!(hcm["stream_idle_timeout"], "10s");
        assert_eq!(hcm["request_timeout"], "1.500s");
        assert_eq!(
            hcm["http_filters"][0]["typed_config"],
            json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"})
        );
        // Defaults are left out, as config_dump leaves them out.
        assert!(hcm.get("codec_type").is_none());
        assert!(
            json.get("filter_chains").unwrap()[0]
                .get("filter_chain_match")
                .is_none()
        );
    }

    #[test]
    fn cluster_enums_by_name_and_64_bit_ints_as_strings() {
        let cluster = Cluster {
            name: "outbound|80||reviews.default.svc.cluster.local".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            lb_policy: cluster::LbPolicy::LeastRequest as i32,
            connect_timeout: secs(10, 0),
            ..Default::default()
        };
        let json = any_to_json(&Resource::encode(&cluster.name, &cluster).any).unwrap();
        assert_eq!(json["lb_policy"], "LEAST_REQUEST");
        assert_eq!(json["type"], "EDS");
        assert_eq!(json["connect_timeout"], "10s");

        let ring_hash = Cluster {
            name: "ring".into(),
            lb_policy: cluster::LbPolicy::RingHash as i32,
            lb_config: Some(cluster::LbConfig::RingHashLbConfig(
                cluster::RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value { value: 1024 }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let json = message_to_json(
            "envoy.config.cluster.v3.Cluster",
            &ring_hash.encode_to_vec(),
        )
        .unwrap();
        assert!(json.get("@type").is_none());
        assert_eq!(json["lb_policy"], "RING_HASH");
        assert_eq!(json["ring_hash_lb_config"]["minimum_ring_size"], "1024");
    }

    #[test]
    fn unknown_type_url_is_named() {
        let url = "type.googleapis.com/istio.nope.v1.Thing";
        let any = Any {
            type_url: url.into(),
            value: vec![],
        }
        .encode_to_vec();
        let err = any_to_json(&any).unwrap_err();
        assert!(
            matches!(&err, JsonError::UnknownType(u) if u == url),
            "{err:?}"
        );
        assert!(err.to_string().contains(url), "{err}");

        let err = any_to_json(
            &Any {
                type_url: "no-slash".into(),
                value: vec![],
            }
            .encode_to_vec(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, JsonError::UnknownType(u) if u == "no-slash"),
            "{err:?}"
        );

        let err = message_to_json("istio.nope.v1.Thing", &[]).unwrap_err();
        assert!(matches!(&err, JsonError::UnknownType(u) if u == "istio.nope.v1.Thing"));
    }

    #[test]
    fn unknown_nested_type_is_named() {
        let nested = Any {
            type_url: "type.googleapis.com/istio.nope.v1.Thing".into(),
            value: vec![],
        };
        let listener = mk_listener("l", 80, nested);
        let err = any_to_json(&Resource::encode("l", &listener).any).unwrap_err();
        assert!(matches!(err, JsonError::Serialize { .. }), "{err:?}");
        assert!(err.to_string().contains("istio.nope.v1.Thing"), "{err}");
    }

    #[test]
    fn malformed_bytes_are_decode_errors() {
        let err = any_to_json(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            matches!(&err, JsonError::Decode { type_name, .. } if type_name == ANY),
            "{err:?}"
        );

        let any = Any {
            type_url: TypeUrl::Listener.url().into(),
            value: vec![0x0a, 0x05, b'a'],
        };
        let err = any_to_json(&any.encode_to_vec()).unwrap_err();
        assert!(
            matches!(&err, JsonError::Decode { type_name, .. } if type_name == "envoy.config.listener.v3.Listener"),
            "{err:?}"
        );
    }
}
