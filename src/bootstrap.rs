//! The Envoy bootstrap that points a stock Envoy at pilotfish over ADS.
//!
//! What `pilotfish bootstrap` prints. A proxy identifies itself the way istio-agent would: the
//! Istio node id, and node metadata with `NAMESPACE`, `LABELS` (the workload's labels, which is
//! how a Gateway's selector finds a gateway Envoy) and `INSTANCE_IPS`. Everything else —
//! listeners, routes, clusters, endpoints — comes over ADS from the `xds-grpc` cluster, which
//! must speak HTTP/2 (gRPC); without it Envoy's ADS stream is reset on every attempt.
//!
//! Optionally it also opens istio-proxy's Prometheus (15090) and health (15021) ports
//! ([`ports`]), so scrape configs and probes written for Istio find a stock Envoy too.
//!
//! Pure: no I/O, no transport; the CLI parses flags with [`parse_labels`] and
//! [`parse_xds_address`] and prints [`bootstrap`]'s value.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::model::Proxy;

mod ports;

pub use ports::{
    DEFAULT_HEALTH_PORT, DEFAULT_STATS_PORT, DataPlanePorts, HEALTH_CLUSTER, HEALTH_PATH,
    STATS_CLUSTER, STATS_PATH,
};

/// The name of the static cluster that carries ADS.
pub const XDS_CLUSTER: &str = "xds-grpc";

/// Envoy's admin port when none is given (istio-proxy's).
pub const DEFAULT_ADMIN_PORT: u16 = 15000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("xDS address {0:?} is not HOST:PORT (IPv6 as [ADDR]:PORT)")]
    MalformedAddress(String),
    #[error("xDS address {address:?}: port {port:?} is not in 1-65535")]
    BadPort { address: String, port: String },
    #[error("label {0:?} is not KEY=VALUE")]
    MalformedLabel(String),
    #[error("label key is empty in {0:?}")]
    EmptyLabelKey(String),
    #[error("{first} and {second} are both {port}: each needs its own port")]
    PortClash {
        first: &'static str,
        second: &'static str,
        port: u16,
    },
    #[error(
        "admin_port 0 (ephemeral) cannot be routed to: stats_port and health_port need a fixed admin port, or 0 to be off"
    )]
    EphemeralAdmin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Istio node id, `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    pub node_id: String,
    /// `node.cluster`: the service cluster name Envoy reports in stats and logs.
    pub cluster: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// `HOST:PORT` of pilotfish's ADS server; `[ADDR]:PORT` for IPv6.
    pub xds_address: String,
    pub admin_port: u16,
    /// istio-proxy's stats and health listeners, on the pod's wildcard address.
    pub ports: DataPlanePorts,
    /// TLS to the xDS server (its 15012): only then is the proxy sent certificates.
    pub tls: Option<XdsTls>,
}

/// How a stock Envoy proves who it is on the TLS xDS port. There is no istio-agent beside it,
/// so the credential is in the bootstrap: a client certificate the mesh CA issued
/// (`pilotfish ca issue`), or a service-account token sent as gRPC initial metadata (in a pod,
/// the projected token for audience `istio-ca`, read when the bootstrap is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTls {
    /// The mesh root the server's certificate is checked against.
    pub root_cert: String,
    /// The name checked on the server's certificate (`istiod.istio-system.svc`).
    pub server_name: String,
    /// `(cert-chain.pem, key.pem)` paths of a client certificate.
    pub client_cert: Option<(String, String)>,
    /// A bearer token for `authorization` metadata.
    pub token: Option<String>,
}

impl BootstrapOptions {
    /// Options with the namespace and cluster derived from the node id as istio-agent does
    /// (`ingress-gw.istio-system` → namespace `istio-system`, cluster `ingress-gw.istio-system`),
    /// no labels, the default admin port and no stats/health ports (those are wildcard ports,
    /// which only one Envoy per network namespace can own; the CLI turns them on). Ids that do not parse keep `default` / the raw id.
    pub fn for_node(node_id: &str, xds_address: &str) -> BootstrapOptions {
        let (namespace, cluster) = match Proxy::from_id(node_id) {
            Ok(p) => {
                let workload = p.workload.split('.').next().unwrap_or_default().to_string();
                let cluster = if workload.is_empty() {
                    p.namespace.clone()
                } else {
                    format!("{workload}.{}", p.namespace)
                };
                (p.namespace, cluster)
            }
            Err(_) => ("default".to_string(), node_id.to_string()),
        };
        BootstrapOptions {
            node_id: node_id.to_string(),
            cluster,
            namespace,
            labels: BTreeMap::new(),
            xds_address: xds_address.to_string(),
            admin_port: DEFAULT_ADMIN_PORT,
            ports: DataPlanePorts::OFF,
            tls: None,
        }
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) into host and port.
pub fn parse_xds_address(address: &str) -> Result<(String, u16), BootstrapError> {
    let malformed = || BootstrapError::MalformedAddress(address.to_string());
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(malformed)?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or_else(malformed)?;
        if host.contains(':') {
            // A bare IPv6 address: ambiguous without brackets.
            return Err(malformed());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(malformed());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| BootstrapError::BadPort {
            address: address.to_string(),
            port: port.to_string(),
        })?;
    Ok((host.to_string(), port))
}

/// Parses `--labels k=v,k2=v2`; an empty string is no labels.
pub fn parse_labels(spec: &str) -> Result<BTreeMap<String, String>, BootstrapError> {
    let mut labels = BTreeMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| BootstrapError::MalformedLabel(pair.to_string()))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(BootstrapError::EmptyLabelKey(pair.to_string()));
        }
        labels.insert(k.to_string(), v.trim().to_string());
    }
    Ok(labels)
}

/// The bootstrap as JSON (Envoy accepts JSON for `-c` and `--config-yaml`).
///
/// An `xds_address` that is not `HOST:PORT`, or data-plane ports that clash with each other
/// or the admin port, are errors.
pub fn bootstrap(opts: &BootstrapOptions) -> Result<Value, BootstrapError> {
    let (host, port) = parse_xds_address(&opts.xds_address)?;
    opts.ports.check(opts.admin_port)?;
    let mut clusters = vec![xds_cluster(&host, port, opts.tls.as_ref())];
    clusters.extend(opts.ports.clusters(opts.admin_port));
    let mut static_resources = json!({ "clusters": clusters });
    let listeners = opts.ports.listeners();
    if !listeners.is_empty() {
        static_resources["listeners"] = Value::Array(listeners);
    }
    Ok(json!({
        "node": node(opts),
        "admin": {
            "address": socket_address("127.0.0.1", opts.admin_port),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service(opts.tls.as_ref())],
            },
            "cds_config": ads_source(),
            "lds_config": ads_source(),
        },
        "static_resources": static_resources,
        "layered_runtime": {
            "layers": [
                // As Istio's bootstrap: RBAC matches service accounts and namespaces by regex,
                // and Envoy's default program-size limit (100) refuses the longer ones.
                { "name": "global config", "static_layer": { "re2.max_program_size.error_level": 32768 } },
                // Lets `POST /runtime_modify` on the admin port change runtime keys.
                { "name": "admin", "admin_layer": {} },
            ],
        },
    }))
}

fn node(opts: &BootstrapOptions) -> Value {
    let mut metadata = serde_json::Map::new();
    metadata.insert("NAMESPACE".into(), json!(opts.namespace));
    metadata.insert("LABELS".into(), json!(opts.labels));
    // istio-agent reports the pod IPs; the id's IP field is the same list, `,`-separated.
    if let Ok(proxy) = Proxy::from_id(&opts.node_id)
        && !proxy.ip_addresses.is_empty()
    {
        metadata.insert("INSTANCE_IPS".into(), json!(proxy.ip_addresses.join(",")));
    }
    json!({
        "id": opts.node_id,
        "cluster": opts.cluster,
        "metadata": metadata,
    })
}

fn ads_source() -> Value {
    json!({ "ads": {}, "resource_api_version": "V3" })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

fn grpc_service(tls: Option<&XdsTls>) -> Value {
    let mut service = json!({ "envoy_grpc": { "cluster_name": XDS_CLUSTER } });
    if let Some(token) = tls.and_then(|t| t.token.as_ref()) {
        service["initial_metadata"] =
            json!([{ "key": "authorization", "value": format!("Bearer {token}") }]);
    }
    service
}

/// Envoy's upstream TLS to the xDS server: the mesh root, the server's name, h2 by ALPN, and
/// the client certificate if there is one.
fn xds_transport_socket(tls: &XdsTls) -> Value {
    let mut common = json!({
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": { "filename": tls.root_cert },
            "match_typed_subject_alt_names": [{ "san_type": "DNS", "matcher": { "exact": tls.server_name } }],
        },
    });
    if let Some((chain, key)) = &tls.client_cert {
        common["tls_certificates"] = json!([{ "certificate_chain": { "filename": chain }, "private_key": { "filename": key } }]);
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": common,
        },
    })
}

fn xds_cluster(host: &str, port: u16, tls: Option<&XdsTls>) -> Value {
    // An IP needs no resolver; a name is re-resolved so a moved control plane is found.
    let is_ip = host.parse::<IpAddr>().is_ok();
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{ "endpoint": { "address": socket_address(host, port) } }],
            }],
        },
        // ADS is one long-lived gRPC stream: keep it alive, never cap its requests.
        "upstream_connection_options": {
            "tcp_keepalive": { "keepalive_time": 300 },
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {},
                },
            },
        },
    });
    if !is_ip {
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(tls) = tls {
        cluster["transport_socket"] = xds_transport_socket(tls);
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW_ID: &str = "router~127.0.0.1~ingress-gw.istio-system~istio-system.svc.cluster.local";

    fn gateway_opts() -> BootstrapOptions {
        BootstrapOptions {
            labels: parse_labels("istio=ingressgateway,app=gw").unwrap(),
            admin_port: 15100,
            ..BootstrapOptions::for_node(GW_ID, "127.0.0.1:15010")
        }
    }

    #[test]
    fn node_carries_id_cluster_namespace_labels_and_ips() {
        let b = bootstrap(&gateway_opts()).unwrap();
        let node = &b["node"];
        assert_eq!(node["id"], GW_ID);
        assert_eq!(node["cluster"], "ingress-gw.istio-system");
        assert_eq!(node["metadata"]["NAMESPACE"], "istio-system");
        assert_eq!(
            node["metadata"]["LABELS"],
            json!({"istio": "ingressgateway", "app": "gw"})
        );
        assert_eq!(node["metadata"]["INSTANCE_IPS"], "127.0.0.1");
    }

    #[test]
    fn admin_listens_on_loopback_at_the_given_port() {
        let b = bootstrap(&gateway_opts()).unwrap();
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15100);
    }

    #[test]
    fn ads_is_grpc_v3_through_the_xds_cluster() {
        let b = bootstrap(&gateway_opts()).unwrap();
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "GRPC");
        assert_eq!(ads["transport_api_version"], "V3");
        assert_eq!(
            ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            XDS_CLUSTER
        );
        for source in ["cds_config", "lds_config"] {
            assert_eq!(
                b["dynamic_resources"][source],
                json!({"ads": {}, "resource_api_version": "V3"}),
                "{source}"
            );
        }
    }

    #[test]
    fn over_tls_the_proxy_checks_the_server_and_proves_who_it_is() {
        let mut opts = gateway_opts();
        assert!(
            bootstrap(&opts).unwrap()["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
        opts.tls = Some(XdsTls {
            root_cert: "/etc/mesh/root-cert.pem".into(),
            server_name: "istiod.istio-system.svc".into(),
            client_cert: Some((
                "/etc/mesh/cert-chain.pem".into(),
                "/etc/mesh/key.pem".into(),
            )),
            token: Some("eyJ.token".into()),
        });
        let b = bootstrap(&opts).unwrap();
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "istiod.istio-system.svc");
        let common = &tls["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"],
            "/etc/mesh/root-cert.pem"
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "istiod.istio-system.svc"
        );
        assert_eq!(
            common["tls_certificates"][0]["private_key"]["filename"],
            "/etc/mesh/key.pem"
        );
        let service = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert_eq!(
            service["initial_metadata"],
            json!([{"key": "authorization", "value": "Bearer eyJ.token"}])
        );
    }

    #[test]
    fn xds_cluster_is_static_http2_for_an_ip() {
        let b = bootstrap(&gateway_opts()).unwrap();
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 1);
        let c = &clusters[0];
        assert_eq!(c["name"], XDS_CLUSTER);
        assert_eq!(c["type"], "STATIC");
        assert!(c.get("dns_lookup_family").is_none());
        let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(
            addr["socket_address"],
            json!({"address": "127.0.0.1", "port_value": 15010})
        );
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            opts["@type"],
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        assert_eq!(
            opts["explicit_http_config"],
            json!({"http2_protocol_options": {}})
        );
    }

    #[test]
    fn xds_cluster_resolves_a_hostname() {
        let b = bootstrap(&BootstrapOptions::for_node(
            GW_ID,
            "istiod.istio-system.svc:15010",
        ))
        .unwrap();
        let c = &b["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STRICT_DNS");
        assert_eq!(c["dns_lookup_family"], "V4_PREFERRED");
        let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(addr["socket_address"]["address"], "istiod.istio-system.svc");
    }

    #[test]
    fn xds_cluster_accepts_bracketed_ipv6() {
        let b = bootstrap(&BootstrapOptions::for_node(GW_ID, "[::1]:15012")).unwrap();
        let c = &b["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STATIC");
        let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(
            addr["socket_address"],
            json!({"address": "::1", "port_value": 15012})
        );
    }

    #[test]
    fn empty_labels_are_an_empty_map_not_absent() {
        let b = bootstrap(&BootstrapOptions::for_node(GW_ID, "127.0.0.1:15010")).unwrap();
        assert_eq!(b["node"]["metadata"]["LABELS"], json!({}));
        assert_eq!(
            b["admin"]["address"]["socket_address"]["port_value"],
            DEFAULT_ADMIN_PORT
        );
    }

    #[test]
    fn namespace_and_cluster_default_from_the_node_id() {
        let o = BootstrapOptions::for_node(
            "sidecar~10.1.0.5~reviews-v1-abc.default~default.svc.cluster.local",
            "127.0.0.1:15010",
        );
        assert_eq!(o.namespace, "default");
        assert_eq!(o.cluster, "reviews-v1-abc.default");
        let odd = BootstrapOptions::for_node("my-envoy", "127.0.0.1:15010");
        assert_eq!(odd.namespace, "default");
        assert_eq!(odd.cluster, "my-envoy");
        let b = bootstrap(&odd).unwrap();
        assert!(b["node"]["metadata"].get("INSTANCE_IPS").is_none());
    }

    #[test]
    fn parses_xds_addresses() {
        assert_eq!(
            parse_xds_address("127.0.0.1:15010").unwrap(),
            ("127.0.0.1".into(), 15010)
        );
        assert_eq!(
            parse_xds_address("[::1]:15010").unwrap(),
            ("::1".into(), 15010)
        );
        assert_eq!(
            parse_xds_address("istiod:15012").unwrap(),
            ("istiod".into(), 15012)
        );
        assert!(matches!(
            parse_xds_address("127.0.0.1"),
            Err(BootstrapError::MalformedAddress(_))
        ));
        assert!(matches!(
            parse_xds_address("::1:15010"),
            Err(BootstrapError::MalformedAddress(_))
        ));
        assert!(matches!(
            parse_xds_address(":15010"),
            Err(BootstrapError::MalformedAddress(_))
        ));
        assert!(matches!(
            parse_xds_address("h:0"),
            Err(BootstrapError::BadPort { .. })
        ));
        assert!(matches!(
            parse_xds_address("h:99999"),
            Err(BootstrapError::BadPort { .. })
        ));
    }

    #[test]
    fn parses_labels() {
        assert!(parse_labels("").unwrap().is_empty());
        let l = parse_labels(" istio = ingressgateway , version=v1,empty=").unwrap();
        assert_eq!(l.get("istio").map(String::as_str), Some("ingressgateway"));
        assert_eq!(l.get("version").map(String::as_str), Some("v1"));
        assert_eq!(l.get("empty").map(String::as_str), Some(""));
        assert!(matches!(
            parse_labels("istio"),
            Err(BootstrapError::MalformedLabel(_))
        ));
        assert!(matches!(
            parse_labels("=x"),
            Err(BootstrapError::EmptyLabelKey(_))
        ));
    }

    #[test]
    fn istio_ports_add_stats_and_health_listeners_routed_to_the_admin() {
        let opts = BootstrapOptions {
            ports: DataPlanePorts::ISTIO,
            ..gateway_opts()
        };
        let b = bootstrap(&opts).unwrap();
        let statics = &b["static_resources"];
        let listeners: Vec<(&Value, &Value)> = statics["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (&l["name"], &l["address"]["socket_address"]["port_value"]))
            .collect();
        assert_eq!(
            listeners,
            [
                (&json!(STATS_CLUSTER), &json!(DEFAULT_STATS_PORT)),
                (&json!(HEALTH_CLUSTER), &json!(DEFAULT_HEALTH_PORT)),
            ]
        );
        let clusters = statics["clusters"].as_array().unwrap();
        let names: Vec<&Value> = clusters.iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [XDS_CLUSTER, STATS_CLUSTER, HEALTH_CLUSTER]);
        for c in &clusters[1..] {
            let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"];
            // The admin stays on loopback; only the two routes reach it.
            assert_eq!(*addr, b["admin"]["address"]["socket_address"], "{c}");
        }
    }

    #[test]
    fn without_ports_there_are_no_static_listeners() {
        let b = bootstrap(&gateway_opts()).unwrap();
        assert!(b["static_resources"].get("listeners").is_none());
    }

    #[test]
    fn a_port_clash_is_an_error_naming_both_fields() {
        let opts = BootstrapOptions {
            ports: DataPlanePorts::from_flags(15100, 15021),
            ..gateway_opts()
        };
        let err = bootstrap(&opts).unwrap_err();
        assert_eq!(
            err,
            BootstrapError::PortClash {
                first: "admin_port",
                second: "stats_port",
                port: 15100
            }
        );
    }

    #[test]
    fn a_malformed_xds_address_is_an_error() {
        let opts = BootstrapOptions::for_node(GW_ID, "nope");
        let err = bootstrap(&opts).unwrap_err();
        assert!(
            err.to_string().contains("\"nope\" is not HOST:PORT"),
            "{err}"
        );
    }
}
