//! Encoded xDS resources: each is encoded once, hashed, and its bytes shared by every proxy
//! and every response that carries it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::{Message, Name};
use serde::Serialize;

/// The xDS resource types pilotfish serves, in make-before-break push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TypeUrl {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
    Secret,
}

impl TypeUrl {
    /// All types, in the order a push sends them (CDS, EDS, LDS, RDS, SDS).
    pub const ALL: [TypeUrl; 5] = [
        TypeUrl::Cluster,
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
        TypeUrl::Secret,
    ];

    pub const fn url(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    pub fn from_url(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.url() == url)
    }

    /// Short name as Envoy's stats and istiod's logs use it.
    pub const fn short(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "CDS",
            TypeUrl::ClusterLoadAssignment => "EDS",
            TypeUrl::Listener => "LDS",
            TypeUrl::RouteConfiguration => "RDS",
            TypeUrl::Secret => "SDS",
        }
    }

    /// Whether a SotW response must carry every resource of the type (LDS, CDS), rather than
    /// only the named ones that changed.
    pub const fn is_full_state(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Listener)
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// One resource, encoded as a `google.protobuf.Any`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Content hash of the encoded bytes; the resource's version.
    pub hash: u64,
    /// The encoded `google.protobuf.Any` message.
    pub any: Bytes,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Resource({} {:016x} {}B)",
            self.name,
            self.hash,
            self.any.len()
        )
    }
}

impl Resource {
    /// Encodes a message once. Prost encodes maps in a deterministic order, so equal
    /// messages give equal hashes.
    pub fn encode<M: Message + Name>(name: impl Into<String>, message: &M) -> Resource {
        Resource::encode_with::<M>(name, message.encoded_len(), |buf| message.encode_raw(buf))
    }

    /// Builds a resource whose message body (`len` bytes) `write` appends, wrapped in its `Any`
    /// envelope in one buffer: no intermediate copy of what can be a megabyte-sized route
    /// configuration, and room for bodies spliced together from parts encoded earlier.
    pub fn encode_with<M: Name>(
        name: impl Into<String>,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Resource {
        let type_url = M::type_url();
        let mut buf = Vec::with_capacity(type_url.len() + len + 12);
        prost::encoding::string::encode(1, &type_url, &mut buf);
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(len as u64, &mut buf);
        let body_start = buf.len();
        write(&mut buf);
        debug_assert_eq!(
            buf.len() - body_start,
            len,
            "encode_with: body length mismatch"
        );
        Resource {
            name: name.into(),
            hash: hash_bytes(&buf),
            any: Bytes::from(buf),
        }
    }

    /// The version string of this resource (delta xDS, debug output).
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Decodes back into the message (render, tests).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        let any = envoy_types::pb::google::protobuf::Any::decode(self.any.clone())?;
        M::decode(any.value.as_slice())
    }
}

pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The resources of one type, by name.
pub type ResourceMap = BTreeMap<String, Arc<Resource>>;

/// Everything one proxy should have, by type. Proxies that generate the same config share one
/// value, and each `ResourceMap` and `Resource` inside it is shared wider still.
#[derive(Debug, Clone, Default)]
pub struct ProxyResources {
    pub by_type: [Arc<ResourceMap>; 5],
    /// Each type's [`version_of`] its whole map, computed by the first connection that needs it:
    /// every connection sharing this value would otherwise hash the same 1,000 names. The map
    /// is kept with it, so a stale entry (`by_type` replaced after) is recognised, never used.
    versions: [OnceLock<(Arc<ResourceMap>, String)>; 5],
    /// Per type, how its map differs from the previous revision's, when the generator knows.
    pub changes: [Option<Arc<MapChange>>; 5],
}

/// The names whose resource differs between two maps (added, changed or removed), as
/// whoever built `to` from `from` knows them. A connection holding `from` finds what changed
/// for it from these few names, instead of looking up each of the hundreds it subscribes to
/// in both maps — for every connection, on every endpoint change.
#[derive(Debug)]
pub struct MapChange {
    pub from: Arc<ResourceMap>,
    pub to: Arc<ResourceMap>,
    pub names: Vec<String>,
}

impl ProxyResources {
    pub fn get(&self, ty: TypeUrl) -> &Arc<ResourceMap> {
        &self.by_type[ty.index()]
    }

    pub fn set(&mut self, ty: TypeUrl, map: ResourceMap) {
        self.by_type[ty.index()] = Arc::new(map);
        self.versions[ty.index()] = OnceLock::new();
        self.changes[ty.index()] = None;
    }

    /// How `ty`'s map differs from the one before it, if known.
    pub fn change(&self, ty: TypeUrl) -> Option<&MapChange> {
        self.changes[ty.index()].as_deref()
    }

    /// The version of every resource of `ty`, as [`version_of`] gives it, computed once.
    pub fn version(&self, ty: TypeUrl) -> String {
        let map = self.get(ty);
        let (cached, version) =
            self.versions[ty.index()].get_or_init(|| (Arc::clone(map), version_of(map.values())));
        if Arc::ptr_eq(cached, map) {
            version.clone()
        } else {
            version_of(map.values())
        }
    }
}

/// The version of a set of resources: a hash of their names and hashes, so Envoy's version
/// survives a control-plane restart when the content did not change.
pub fn version_of<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for r in resources {
        h.update(r.name.as_bytes());
        h.update(&[0]);
        h.update(&r.hash.to_le_bytes());
    }
    format!("{:016x}", h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn type_urls_round_trip() {
        for t in TypeUrl::ALL {
            assert_eq!(TypeUrl::from_url(t.url()), Some(t));
        }
        assert_eq!(TypeUrl::from_url("type.googleapis.com/nope"), None);
    }

    #[test]
    fn equal_content_equal_hash() {
        let c = Cluster {
            name: "a".into(),
            ..Default::default()
        };
        let r1 = Resource::encode("a", &c);
        let r2 = Resource::encode("a", &c.clone());
        assert_eq!(r1.hash, r2.hash);
        let other = Resource::encode(
            "b",
            &Cluster {
                name: "b".into(),
                ..Default::default()
            },
        );
        assert_ne!(r1.hash, other.hash);
        let back: Cluster = r1.decode().unwrap();
        assert_eq!(back, c);
        // The envelope is exactly what prost writes for the same Any.
        let any = envoy_types::util::pack_any(c.clone());
        assert_eq!(r1.any.as_ref(), any.encode_to_vec().as_slice());
    }

    #[test]
    fn set_version_depends_on_names_and_content() {
        let a = Arc::new(Resource::encode(
            "a",
            &Cluster {
                name: "a".into(),
                ..Default::default()
            },
        ));
        let b = Arc::new(Resource::encode(
            "b",
            &Cluster {
                name: "b".into(),
                ..Default::default()
            },
        ));
        assert_eq!(version_of([&a, &b]), version_of([&a, &b]));
        assert_ne!(version_of([&a, &b]), version_of([&a]));
    }

    #[test]
    fn cached_version_follows_the_map() {
        let a = Arc::new(Resource::encode(
            "a",
            &Cluster {
                name: "a".into(),
                ..Default::default()
            },
        ));
        let mut res = ProxyResources::default();
        res.set(
            TypeUrl::Cluster,
            [("a".to_string(), Arc::clone(&a))].into_iter().collect(),
        );
        assert_eq!(res.version(TypeUrl::Cluster), version_of([&a]));
        res.by_type[TypeUrl::Cluster.index()] = Arc::default();
        assert_eq!(
            res.version(TypeUrl::Cluster),
            version_of([]),
            "a replaced map is rehashed"
        );
    }
}
