//! `pilotfish proxy-config`: one proxy's resources, read from CSDS with their bodies, printed
//! as `istioctl proxy-config` prints them. Everything here works on the JSON of a CSDS
//! `ClientConfig` (see [`client_config_json`]), so each table is tested with plain values.
//!
//! Columns follow istioctl's, minus what only the proxy knows: endpoints have no OUTLIER CHECK
//! (Envoy's runtime state), and secrets are those the control plane sends from its snapshot
//! (gateway credentials), never the per-connection workload certificate.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::service::status::v3::ClientConfig;
use prost::Message;
use serde_json::{Value, json};

pub use super::tabwriter::render;
use crate::debug::json::{JsonError, message_to_json};
use crate::xds::TypeUrl;

/// What `proxy-config` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secrets,
}

impl Kind {
    pub fn type_url(self) -> TypeUrl {
        match self {
            Kind::Listeners => TypeUrl::Listener,
            Kind::Routes => TypeUrl::RouteConfiguration,
            Kind::Clusters => TypeUrl::Cluster,
            Kind::Endpoints => TypeUrl::ClusterLoadAssignment,
            Kind::Secrets => TypeUrl::Secret,
        }
    }
}

/// A CSDS `ClientConfig` as JSON: bodies expanded (`xds_config` with `"@type"`), timestamps in
/// RFC 3339, as Envoy prints them.
pub fn client_config_json(config: &ClientConfig) -> Result<Value, JsonError> {
    message_to_json(
        "envoy.service.status.v3.ClientConfig",
        &config.encode_to_vec(),
    )
}

/// The entries of `kind` in a `ClientConfig` JSON that carry a body.
fn entries(kind: Kind, config: &Value) -> Vec<&Value> {
    let url = kind.type_url().url();
    config["generic_xds_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["type_url"] == url && g.get("xds_config").is_some())
        .collect()
}

/// The section of Envoy's admin `/config_dump` for `kind`: its `@type`, and each resource
/// wrapped as Envoy wraps dynamic resources (version, last update, body).
pub fn config_dump(kind: Kind, config: &Value) -> Value {
    let (dump, list) = match kind {
        Kind::Listeners => ("ListenersConfigDump", "dynamic_listeners"),
        Kind::Routes => ("RoutesConfigDump", "dynamic_route_configs"),
        Kind::Clusters => ("ClustersConfigDump", "dynamic_active_clusters"),
        Kind::Endpoints => ("EndpointsConfigDump", "dynamic_endpoint_configs"),
        Kind::Secrets => ("SecretsConfigDump", "dynamic_active_secrets"),
    };
    let items: Vec<Value> = entries(kind, config)
        .into_iter()
        .map(|g| {
            let mut state = json!({ "version_info": g["version_info"].clone() });
            if let Some(at) = g.get("last_updated") {
                state["last_updated"] = at.clone();
            }
            let body = g["xds_config"].clone();
            match kind {
                Kind::Listeners => {
                    state["listener"] = body;
                    json!({ "name": g["name"].clone(), "active_state": state })
                }
                Kind::Routes => with(state, "route_config", body),
                Kind::Clusters => with(state, "cluster", body),
                Kind::Endpoints => with(state, "endpoint_config", body),
                Kind::Secrets => {
                    state["name"] = g["name"].clone();
                    with(state, "secret", body)
                }
            }
        })
        .collect();
    json!({
        "@type": format!("type.googleapis.com/envoy.admin.v3.{dump}"),
        list: items,
    })
}

fn with(mut object: Value, key: &str, value: Value) -> Value {
    object[key] = value;
    object
}

/// The table of `kind`, header first.
pub fn rows(kind: Kind, config: &Value) -> Vec<Vec<String>> {
    let bodies = entries(kind, config);
    let (header, mut rows): (&[&str], Vec<Vec<String>>) = match kind {
        Kind::Listeners => (
            &["ADDRESSES", "PORT", "MATCH", "DESTINATION"],
            bodies
                .iter()
                .flat_map(|g| listener_rows(&g["xds_config"]))
                .collect(),
        ),
        Kind::Routes => (
            &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
            bodies
                .iter()
                .flat_map(|g| route_rows(&g["xds_config"]))
                .collect(),
        ),
        Kind::Clusters => (
            &[
                "SERVICE FQDN",
                "PORT",
                "SUBSET",
                "DIRECTION",
                "TYPE",
                "DESTINATION RULE",
            ],
            bodies
                .iter()
                .map(|g| cluster_row(&g["xds_config"]))
                .collect(),
        ),
        Kind::Endpoints => (
            &["ENDPOINT", "STATUS", "CLUSTER"],
            bodies
                .iter()
                .flat_map(|g| endpoint_rows(&g["xds_config"]))
                .collect(),
        ),
        Kind::Secrets => (
            &[
                "RESOURCE NAME",
                "TYPE",
                "STATUS",
                "VALID CERT",
                "SERIAL NUMBER",
                "NOT AFTER",
                "NOT BEFORE",
            ],
            bodies.iter().map(|g| secret_row(g)).collect(),
        ),
    };
    rows.sort();
    let mut out = vec![header.iter().map(|h| h.to_string()).collect()];
    out.append(&mut rows);
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_static(s: String) -> String {
    if s.is_empty() { "STATIC".into() } else { s }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// `name.namespace` of the Istio object in a resource's `metadata.filter_metadata.istio.config`
/// (`/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews`), as istioctl's
/// `describeManagement`; empty when there is none.
fn istio_config(resource: &Value) -> String {
    let path = text(&resource["metadata"]["filter_metadata"]["istio"]["config"]);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() >= i + 4 => format!("{}.{}", parts[i + 3], parts[i + 1]),
        _ => String::new(),
    }
}

/// `outbound|9080|v1|reviews.default.svc.cluster.local` split into its parts; any other name
/// is its own FQDN with `-` for the rest, as istioctl prints it.
fn cluster_row(cluster: &Value) -> Vec<String> {
    let name = text(&cluster["name"]);
    // The JSON leaves the default enum value out; a custom `cluster_type` reads STATIC in
    // istioctl too (the enum's value).
    let kind = or_static(text(&cluster["type"]));
    let parts: Vec<&str> = name.split('|').collect();
    let (fqdn, port, subset, direction) = match parts.as_slice() {
        [direction, port, subset, fqdn] => (
            fqdn.to_string(),
            port.to_string(),
            or_dash(subset.to_string()),
            direction.to_string(),
        ),
        _ => (name.clone(), "-".into(), "-".into(), "-".into()),
    };
    vec![fqdn, port, subset, direction, kind, istio_config(cluster)]
}

/// One line per filter chain: the listener's addresses and port, what the chain matches, and
/// where it sends traffic.
fn listener_rows(listener: &Value) -> Vec<Vec<String>> {
    let socket = |a: &Value| {
        let s = &a["socket_address"];
        (text(&s["address"]), text(&s["port_value"]))
    };
    let (address, port) = socket(&listener["address"]);
    let mut addresses = vec![address];
    for extra in listener["additional_addresses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        addresses.push(socket(&extra["address"]).0);
    }
    let addresses = addresses.join(",");
    let port = if port.is_empty() { "0".into() } else { port };
    let chains: Vec<&Value> = listener["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(listener.get("default_filter_chain"))
        .collect();
    chains
        .into_iter()
        .map(|chain| {
            vec![
                addresses.clone(),
                port.clone(),
                chain_match(&chain["filter_chain_match"]),
                destination(chain),
            ]
        })
        .collect()
}

/// istioctl's `describeMatch`: the chain's conditions, `; `-separated, or `ALL`.
fn chain_match(m: &Value) -> String {
    let list = |field: &str| {
        m[field]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect::<Vec<_>>()
            .join(",")
    };
    let ranges = |field: &str| {
        m[field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{}/{}", text(&r["address_prefix"]), text(&r["prefix_len"])))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut conditions = Vec::new();
    for (label, value) in [
        ("SNI", list("server_names")),
        ("Trans", text(&m["transport_protocol"])),
        ("App", list("application_protocols")),
        ("Addr", ranges("prefix_ranges")),
        ("DPort", text(&m["destination_port"])),
    ] {
        if !value.is_empty() {
            conditions.push(format!("{label}: {value}"));
        }
    }
    if conditions.is_empty() {
        "ALL".into()
    } else {
        conditions.join("; ")
    }
}

/// istioctl's `describeRouteDestination`: the RDS route, inline routes, or the TCP cluster.
fn destination(chain: &Value) -> String {
    for filter in chain["filters"].as_array().into_iter().flatten() {
        let config = &filter["typed_config"];
        let ty = text(&config["@type"]);
        if ty.ends_with(".HttpConnectionManager") {
            if let Some(rds) = config.get("rds") {
                return format!("Route: {}", text(&rds["route_config_name"]));
            }
            let routes = &config["route_config"];
            return format!("Inline Route: {}", text(&routes["name"]));
        }
        if ty.ends_with(".TcpProxy") {
            if let Some(cluster) = config.get("cluster") {
                return format!("Cluster: {}", text(cluster));
            }
            return "Cluster: (weighted)".into();
        }
    }
    "Non-HTTP/Non-TCP".into()
}

/// One line per route of every virtual host.
fn route_rows(config: &Value) -> Vec<Vec<String>> {
    let name = text(&config["name"]);
    let mut out = Vec::new();
    for host in config["virtual_hosts"].as_array().into_iter().flatten() {
        let domains = domains(&host["domains"]);
        for route in host["routes"].as_array().into_iter().flatten() {
            out.push(vec![
                name.clone(),
                text(&host["name"]),
                domains.clone(),
                route_match(&route["match"]),
                or_404(route),
            ]);
        }
    }
    out
}

/// The route's VirtualService, or `404` for the catch-all that answers 404 (as istioctl).
fn or_404(route: &Value) -> String {
    let vs = istio_config(route);
    if vs.is_empty() && text(&route["direct_response"]["status"]) == "404" {
        "404".into()
    } else {
        vs
    }
}

/// istioctl's `describeRouteDomains`: hosts without their `:port` twins; past the first, a
/// count.
fn domains(domains: &Value) -> String {
    let all: Vec<String> = domains.as_array().into_iter().flatten().map(text).collect();
    let mut seen = BTreeSet::new();
    let unique: Vec<&str> = all
        .iter()
        .map(|d| match d.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.is_empty() => {
                host
            }
            _ => d.as_str(),
        })
        .filter(|d| seen.insert(*d))
        .collect();
    match unique.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} + {} more...", rest.len()),
    }
}

/// istioctl's `describeRouteMatch` for the usual matchers.
fn route_match(m: &Value) -> String {
    if let Some(prefix) = m.get("prefix") {
        let prefix = text(prefix);
        return if prefix == "/" {
            "/*".into()
        } else {
            format!("{prefix}*")
        };
    }
    if let Some(path) = m.get("path") {
        return text(path);
    }
    if let Some(prefix) = m.get("path_separated_prefix") {
        return format!("{}/*", text(prefix));
    }
    if let Some(re) = m.get("safe_regex") {
        return format!("regex {}", text(&re["regex"]));
    }
    String::new()
}

/// One line per endpoint: its address and the health the control plane sent. Envoy treats an
/// endpoint sent without a status as healthy, and istioctl shows it so.
fn endpoint_rows(assignment: &Value) -> Vec<Vec<String>> {
    let cluster = text(&assignment["cluster_name"]);
    let mut out = Vec::new();
    for locality in assignment["endpoints"].as_array().into_iter().flatten() {
        for lb in locality["lb_endpoints"].as_array().into_iter().flatten() {
            let address = &lb["endpoint"]["address"];
            let endpoint = if let Some(s) = address.get("socket_address") {
                format!("{}:{}", text(&s["address"]), text(&s["port_value"]))
            } else if let Some(pipe) = address.get("pipe") {
                format!("unix://{}", text(&pipe["path"]))
            } else {
                text(&address["envoy_internal_address"]["server_listener_name"])
            };
            let status = match text(&lb["health_status"]).as_str() {
                "" | "UNKNOWN" => "HEALTHY".to_string(),
                other => other.to_string(),
            };
            out.push(vec![endpoint, status, cluster.clone()]);
        }
    }
    out
}

/// A secret: its name, what it holds, whether the proxy runs it, and its first certificate.
fn secret_row(entry: &Value) -> Vec<String> {
    let secret = &entry["xds_config"];
    let (kind, pem) = if let Some(cert) = secret.get("tls_certificate") {
        ("Cert Chain", &cert["certificate_chain"])
    } else if let Some(ca) = secret.get("validation_context") {
        ("CA", &ca["trusted_ca"])
    } else {
        ("Other", &Value::Null)
    };
    let status = match text(&entry["config_status"]).as_str() {
        "SYNCED" => "ACTIVE".to_string(),
        other => or_dash(other.to_string()),
    };
    let cert = certificate(pem);
    let (valid, serial, not_after, not_before) = match cert {
        Some(c) => (c.valid.to_string(), c.serial, c.not_after, c.not_before),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    vec![
        text(&entry["name"]),
        kind.into(),
        status,
        valid,
        serial,
        not_after,
        not_before,
    ]
}

struct Certificate {
    valid: bool,
    serial: String,
    not_after: String,
    not_before: String,
}

/// The first certificate of an inline PEM data source (`inline_bytes` is base64 in JSON).
fn certificate(source: &Value) -> Option<Certificate> {
    let pem = match (source.get("inline_bytes"), source.get("inline_string")) {
        (Some(b), _) => crate::base64::decode(&text(b))?,
        (None, Some(s)) => text(s).into_bytes(),
        _ => return None,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    let stamp = |t: &x509_parser::time::ASN1Time| rfc3339(t.timestamp());
    Some(Certificate {
        valid: validity.is_valid(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_after: stamp(&validity.not_after),
        not_before: stamp(&validity.not_before),
    })
}

/// Seconds since the epoch as RFC 3339 (`google.protobuf.Timestamp`'s JSON form).
fn rfc3339(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

#[cfg(test)]
#[path = "proxy_config_tests.rs"]
mod tests;
