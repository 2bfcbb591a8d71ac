//! `RouteConfiguration`s assembled from routes encoded once.
//!
//! A gateway serving a VirtualService for three hosts has three virtual hosts carrying the same
//! routes. Building them as protos clones every route per host and encodes each clone; here each
//! VirtualService's routes are encoded once and their bytes spliced into every virtual host.
//! Fields are written in the order prost writes them, so the bytes — and the content hash —
//! are exactly those of prost encoding the same message (a test holds this).

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::xds::Resource;

/// Routes encoded as a run of `VirtualHost.routes` (field 3) entries, ready to splice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedRoutes(Vec<u8>);

impl EncodedRoutes {
    pub fn encode(routes: &[Route]) -> EncodedRoutes {
        let len = routes.iter().map(|r| framed_len(3, r.encoded_len())).sum();
        let mut buf = Vec::with_capacity(len);
        for route in routes {
            encode_key(3, WireType::LengthDelimited, &mut buf);
            encode_varint(route.encoded_len() as u64, &mut buf);
            route.encode_raw(&mut buf);
        }
        EncodedRoutes(buf)
    }

    /// One route given as its encoded `Route` message.
    pub fn from_encoded_route(route: &[u8]) -> EncodedRoutes {
        let mut buf = Vec::with_capacity(framed_len(3, route.len()));
        encode_key(3, WireType::LengthDelimited, &mut buf);
        encode_varint(route.len() as u64, &mut buf);
        buf.extend_from_slice(route);
        EncodedRoutes(buf)
    }
}

/// How a virtual host is named and which domains it matches.
pub enum Naming<'a> {
    /// A gateway's host: named `host:port`, matching `host` and `host:*` (a wildcard host only
    /// itself: Envoy allows one `*` per domain). Written straight into the output, with no
    /// strings built: a gateway can have thousands of these.
    HostPort {
        host: &'a str,
        port: u32,
    },
    Explicit {
        name: String,
        domains: Vec<String>,
    },
}

impl Naming<'_> {
    fn write(&self, buf: &mut Vec<u8>) {
        match self {
            Naming::HostPort { host, port } => {
                let port = port.to_string();
                write_str_parts(1, &[host, ":", &port], buf);
                write_str_parts(2, &[host], buf);
                if !host.contains('*') {
                    write_str_parts(2, &[host, ":*"], buf);
                }
            }
            Naming::Explicit { name, domains } => {
                write_str_parts(1, &[name], buf);
                for d in domains {
                    write_str_parts(2, &[d], buf);
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Naming::HostPort { host, port } => {
                let digits = port.checked_ilog10().unwrap_or(0) as usize + 1;
                str_len(1, host.len() + 1 + digits)
                    + str_len(2, host.len())
                    + if host.contains('*') {
                        0
                    } else {
                        str_len(2, host.len() + 2)
                    }
            }
            Naming::Explicit { name, domains } => {
                str_len(1, name.len()) + domains.iter().map(|d| str_len(2, d.len())).sum::<usize>()
            }
        }
    }
}

/// One virtual host, its routes by reference.
pub struct VirtualHostParts<'a> {
    pub naming: Naming<'a>,
    pub routes: Vec<&'a EncodedRoutes>,
    /// `virtual_host::TlsRequirementType` as its number; 0 (NONE) is not written.
    pub require_tls: i32,
}

impl VirtualHostParts<'_> {
    fn body_len(&self) -> usize {
        self.naming.len()
            + self.routes.iter().map(|r| r.0.len()).sum::<usize>()
            + if self.require_tls != 0 {
                key_len(4) + encoded_len_varint(self.require_tls as u64)
            } else {
                0
            }
    }
}

/// The settings of a route configuration besides its virtual hosts.
pub struct RouteConfigOptions {
    pub validate_clusters: bool,
    pub max_direct_response_body_size_bytes: u32,
}

pub fn encode(
    name: &str,
    virtual_hosts: &[VirtualHostParts],
    options: &RouteConfigOptions,
) -> Resource {
    let bodies: Vec<usize> = virtual_hosts
        .iter()
        .map(VirtualHostParts::body_len)
        .collect();
    // BoolValue { value } and UInt32Value { value } are messages with one field, tag 1.
    let bool_body = if options.validate_clusters { 2 } else { 0 };
    let u32_body = if options.max_direct_response_body_size_bytes != 0 {
        key_len(1) + encoded_len_varint(u64::from(options.max_direct_response_body_size_bytes))
    } else {
        0
    };
    let len = str_len(1, name.len())
        + bodies.iter().map(|b| framed_len(2, *b)).sum::<usize>()
        + framed_len(7, bool_body)
        + framed_len(11, u32_body);
    Resource::encode_with::<RouteConfiguration>(name, len, |buf| {
        if !name.is_empty() {
            prost::encoding::string::encode(1, &name.to_string(), buf);
        }
        for (vh, body) in virtual_hosts.iter().zip(&bodies) {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(*body as u64, buf);
            vh.naming.write(buf);
            for routes in &vh.routes {
                buf.extend_from_slice(&routes.0);
            }
            if vh.require_tls != 0 {
                prost::encoding::int32::encode(4, &vh.require_tls, buf);
            }
        }
        encode_key(7, WireType::LengthDelimited, buf);
        encode_varint(bool_body as u64, buf);
        if options.validate_clusters {
            prost::encoding::bool::encode(1, &true, buf);
        }
        encode_key(11, WireType::LengthDelimited, buf);
        encode_varint(u32_body as u64, buf);
        if options.max_direct_response_body_size_bytes != 0 {
            prost::encoding::uint32::encode(1, &options.max_direct_response_body_size_bytes, buf);
        }
    })
}

fn framed_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

/// A string field of `len` bytes; empty strings are not written, as prost does.
fn str_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { framed_len(tag, len) }
}

/// Writes a string field whose value is the concatenation of `parts`.
fn write_str_parts(tag: u32, parts: &[&str], buf: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{
        DirectResponseAction, RouteMatch, VirtualHost, route::Action, route_match::PathSpecifier,
    };
    use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

    fn route(prefix: &str, status: u32) -> Route {
        Route {
            name: format!("r{status}"),
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            action: Some(Action::DirectResponse(DirectResponseAction {
                status,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn spliced_bytes_equal_prosts_encoding() {
        let a = vec![route("/a", 200), route("/", 404)];
        let b = vec![route("/b", 201)];
        let (ea, eb) = (EncodedRoutes::encode(&a), EncodedRoutes::encode(&b));
        let parts = vec![
            VirtualHostParts {
                naming: Naming::HostPort {
                    host: "x.example",
                    port: 80,
                },
                routes: vec![&ea, &eb],
                require_tls: 0,
            },
            VirtualHostParts {
                naming: Naming::HostPort {
                    host: "*",
                    port: 80,
                },
                routes: vec![&eb],
                require_tls: 1,
            },
            VirtualHostParts {
                naming: Naming::HostPort {
                    host: "*.y.example",
                    port: 65535,
                },
                routes: vec![],
                require_tls: 0,
            },
            VirtualHostParts {
                naming: Naming::Explicit {
                    name: "empty:8".into(),
                    domains: vec![],
                },
                routes: vec![],
                require_tls: 0,
            },
        ];
        for (validate, max) in [(false, 1024 * 1024), (true, 0), (false, 0)] {
            let options = RouteConfigOptions {
                validate_clusters: validate,
                max_direct_response_body_size_bytes: max,
            };
            let spliced = encode("http.80", &parts, &options);
            let expected = RouteConfiguration {
                name: "http.80".into(),
                virtual_hosts: vec![
                    VirtualHost {
                        name: "x.example:80".into(),
                        domains: vec!["x.example".into(), "x.example:*".into()],
                        routes: [a.clone(), b.clone()].concat(),
                        ..Default::default()
                    },
                    VirtualHost {
                        name: "*:80".into(),
                        domains: vec!["*".into()],
                        routes: b.clone(),
                        require_tls: 1,
                        ..Default::default()
                    },
                    VirtualHost {
                        name: "*.y.example:65535".into(),
                        domains: vec!["*.y.example".into()],
                        ..Default::default()
                    },
                    VirtualHost {
                        name: "empty:8".into(),
                        ..Default::default()
                    },
                ],
                validate_clusters: Some(BoolValue { value: validate }),
                max_direct_response_body_size_bytes: Some(UInt32Value { value: max }),
                ..Default::default()
            };
            let built = Resource::encode("http.80", &expected);
            assert_eq!(spliced.any, built.any, "validate={validate} max={max}");
            assert_eq!(spliced.decode::<RouteConfiguration>().unwrap(), expected);
        }
    }
}
