//! Discovery responses written by hand, so a resource's `Any` bytes — encoded once per snapshot
//! and shared by every proxy — are copied onto the wire, never decoded and re-encoded per
//! client ([`super::body::GrpcBody`] frames them). Requests arrive decoded with prost as usual.

use std::sync::Arc;

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::Resource;

/// A State-of-the-World `envoy.service.discovery.v3.DiscoveryResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub nonce: String,
    /// `control_plane.identifier`; Envoy logs it with the config it received.
    pub control_plane: Option<Arc<str>>,
}

/// A delta `envoy.service.discovery.v3.DeltaDiscoveryResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaResponse {
    pub system_version_info: String,
    /// Each goes out as a `Resource { name, version: Resource::version(), resource: any }`.
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub nonce: String,
    pub removed_resources: Vec<String>,
    pub control_plane: Option<Arc<str>>,
}

/// A response this codec can write: its exact length first, so the gRPC frame is sized once.
pub trait WireResponse {
    fn encoded_len(&self) -> usize;
    fn encode_raw(&self, buf: &mut impl BufMut);
}

// Fields are written in tag order, as prost writes them, so the bytes equal prost's and the
// tests can compare them directly.

impl WireResponse for SotwResponse {
    fn encoded_len(&self) -> usize {
        string_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| bytes_len(2, r.any.len()))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
            + control_plane_len(6, self.control_plane.as_deref())
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.version_info, buf);
        for r in &self.resources {
            put_bytes(2, &r.any, buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
        put_control_plane(6, self.control_plane.as_deref(), buf);
    }
}

impl WireResponse for DeltaResponse {
    fn encoded_len(&self) -> usize {
        string_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|r| bytes_len(2, delta_resource_len(r)))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| bytes_len(6, n.len()))
                .sum::<usize>()
            + control_plane_len(7, self.control_plane.as_deref())
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.system_version_info, buf);
        for r in &self.resources {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(delta_resource_len(r) as u64, buf);
            // envoy.service.discovery.v3.Resource: version=1, resource=2, name=3.
            put_bytes(1, &hex16(r.hash), buf);
            put_bytes(2, &r.any, buf);
            put_string(3, &r.name, buf);
        }
        put_string(4, &self.type_url, buf);
        put_string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            put_bytes(6, name.as_bytes(), buf);
        }
        put_control_plane(7, self.control_plane.as_deref(), buf);
    }
}

/// The version string is 16 hex digits (`Resource::version`).
const VERSION_LEN: usize = 16;

/// `Resource::version` without the allocation: this runs once per resource per response.
fn hex16(hash: u64) -> [u8; VERSION_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; VERSION_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn delta_resource_len(r: &Resource) -> usize {
    string_len(3, &r.name) + bytes_len(1, VERSION_LEN) + bytes_len(2, r.any.len())
}

/// Length of a length-delimited field; proto3 omits empty strings.
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        bytes_len(tag, s.len())
    }
}

fn bytes_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_bytes(tag, s.as_bytes(), buf);
    }
}

fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// `config.core.v3.ControlPlane { identifier = 1 }`.
fn control_plane_len(tag: u32, identifier: Option<&str>) -> usize {
    identifier.map_or(0, |id| bytes_len(tag, string_len(1, id)))
}

fn put_control_plane(tag: u32, identifier: Option<&str>, buf: &mut impl BufMut) {
    if let Some(id) = identifier {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(string_len(1, id) as u64, buf);
        put_string(1, id, buf);
    }
}

/// Encodes a response to bytes outside of gRPC (tests, debug endpoints).
pub fn to_bytes(response: &impl WireResponse) -> Vec<u8> {
    let mut buf = Vec::with_capacity(response.encoded_len());
    response.encode_raw(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::ControlPlane;
    use envoy_types::pb::envoy::service::discovery::v3 as pb;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    const CDS: &str = crate::xds::TypeUrl::Cluster.url();

    fn cluster(name: &str) -> Arc<Resource> {
        Arc::new(Resource::encode(
            name,
            &Cluster {
                name: name.into(),
                ..Default::default()
            },
        ))
    }

    fn any(r: &Resource) -> Any {
        Any::decode(r.any.clone()).unwrap()
    }

    #[test]
    fn sotw_matches_prost() {
        let (a, b) = (cluster("a"), cluster("b"));
        let ours = SotwResponse {
            version_info: "v1".into(),
            resources: vec![a.clone(), b.clone()],
            type_url: CDS.into(),
            nonce: "7".into(),
            control_plane: Some("pilotfish".into()),
        };
        let theirs = pb::DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![any(&a), any(&b)],
            type_url: CDS.into(),
            nonce: "7".into(),
            control_plane: Some(ControlPlane {
                identifier: "pilotfish".into(),
            }),
            ..Default::default()
        };
        let bytes = to_bytes(&ours);
        assert_eq!(bytes.len(), ours.encoded_len());
        assert_eq!(
            pb::DiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            theirs
        );
        assert_eq!(bytes, theirs.encode_to_vec());
    }

    #[test]
    fn empty_sotw_matches_prost() {
        let ours = SotwResponse {
            type_url: "type.googleapis.com/x".into(),
            ..Default::default()
        };
        let theirs = pb::DiscoveryResponse {
            type_url: "type.googleapis.com/x".into(),
            ..Default::default()
        };
        assert_eq!(to_bytes(&ours), theirs.encode_to_vec());
    }

    #[test]
    fn hex_version_matches_resource_version() {
        for hash in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let r = Resource {
                name: String::new(),
                hash,
                any: Default::default(),
            };
            assert_eq!(hex16(hash).as_slice(), r.version().as_bytes());
        }
    }

    #[test]
    fn delta_matches_prost() {
        let a = cluster("a");
        let ours = DeltaResponse {
            system_version_info: "sys".into(),
            resources: vec![a.clone()],
            type_url: CDS.into(),
            nonce: "n".into(),
            removed_resources: vec!["gone".into(), "also-gone".into()],
            control_plane: Some("pilotfish".into()),
        };
        let theirs = pb::DeltaDiscoveryResponse {
            system_version_info: "sys".into(),
            resources: vec![pb::Resource {
                name: "a".into(),
                version: a.version(),
                resource: Some(any(&a)),
                ..Default::default()
            }],
            type_url: CDS.into(),
            nonce: "n".into(),
            removed_resources: vec!["gone".into(), "also-gone".into()],
            control_plane: Some(ControlPlane {
                identifier: "pilotfish".into(),
            }),
            ..Default::default()
        };
        let bytes = to_bytes(&ours);
        assert_eq!(bytes.len(), ours.encoded_len());
        assert_eq!(
            pb::DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            theirs
        );
        assert_eq!(bytes, theirs.encode_to_vec());
    }
}
