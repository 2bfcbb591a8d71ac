//! `pilotfish proxy-status`: a CSDS response as `istioctl proxy-status` prints it, so scripts
//! that read istioctl's table read ours. The columns, the status words and the spacing (Go's
//! tabwriter with padding 5) follow istioctl.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::value::Kind;

use crate::metrics::metric_type;
use crate::xds::TypeUrl;

pub const HEADER: [&str; 9] = [
    "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
];
const ECDS_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// One proxy's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub cluster: String,
    pub cds: String,
    pub lds: String,
    pub eds: String,
    pub rds: String,
    pub ecds: String,
    pub istiod: String,
    pub version: String,
}

impl Row {
    fn cells(&self) -> [&str; 9] {
        [
            &self.name,
            &self.cluster,
            &self.cds,
            &self.lds,
            &self.eds,
            &self.rds,
            &self.ecds,
            &self.istiod,
            &self.version,
        ]
    }
}

/// The rows of a response, sorted by name as istioctl sorts them; `istiod` names the control
/// plane that answered.
pub fn rows(response: &ClientStatusResponse, istiod: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = response.config.iter().map(|c| row(c, istiod)).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn row(config: &ClientConfig, istiod: &str) -> Row {
    let node = config.node.clone().unwrap_or_default();
    let of = |url: &str| {
        config
            .generic_xds_configs
            .iter()
            .find(|g| g.type_url == url)
            .map(word)
            .unwrap_or_default()
    };
    Row {
        name: proxy_name(&node.id),
        cluster: metadata(&node, "CLUSTER_ID"),
        cds: of(TypeUrl::Cluster.url()),
        lds: of(TypeUrl::Listener.url()),
        eds: of(TypeUrl::ClusterLoadAssignment.url()),
        rds: of(TypeUrl::RouteConfiguration.url()),
        ecds: of(ECDS_URL),
        istiod: istiod.to_string(),
        version: metadata(&node, "ISTIO_VERSION"),
    }
}

/// istioctl's word for a type's status; a NACK reads NACKED, as in Istio's documentation.
fn word(config: &GenericXdsConfig) -> String {
    match ConfigStatus::try_from(config.config_status).unwrap_or(ConfigStatus::Unknown) {
        ConfigStatus::Unknown => "IGNORED",
        ConfigStatus::NotSent => "NOT SENT",
        ConfigStatus::Synced => "SYNCED",
        ConfigStatus::Stale => "STALE",
        ConfigStatus::Error => "NACKED",
    }
    .to_string()
}

/// `pod.namespace` out of an Istio node id (`sidecar~10.0.0.1~pod.namespace~domain`), as
/// istiod names proxies; any other id as it is.
fn proxy_name(node_id: &str) -> String {
    let parts: Vec<&str> = node_id.split('~').collect();
    match parts.as_slice() {
        [_, _, name, _] if !name.is_empty() => name.to_string(),
        _ => node_id.to_string(),
    }
}

fn metadata(node: &Node, key: &str) -> String {
    let value = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .and_then(|v| v.kind.as_ref());
    match value {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

/// One line per rejected type: which proxy rejected which version and why — Envoy's error and
/// the objects it was traced to, as CSDS carries them. istioctl shows only NACKED; these lines
/// go beside the table (on stderr), so the table itself stays istioctl's.
pub fn rejections(response: &ClientStatusResponse) -> Vec<String> {
    let mut lines: Vec<String> = response
        .config
        .iter()
        .flat_map(|config| {
            let name = proxy_name(&config.node.as_ref().map_or("", |n| n.id.as_str()));
            config
                .generic_xds_configs
                .iter()
                .filter(|g| g.config_status == ConfigStatus::Error as i32)
                .map(move |g| {
                    let ty = TypeUrl::from_url(&g.type_url)
                        .map_or(g.type_url.clone(), |t| metric_type(t).to_uppercase());
                    let (version, details) = g
                        .error_state
                        .as_ref()
                        .map_or(("", ""), |e| (e.version_info.as_str(), e.details.as_str()));
                    format!("{name} rejected {ty} version {version}: {details}")
                })
        })
        .collect();
    lines.sort();
    lines
}

/// The table, header first, laid out as istioctl's.
pub fn render(rows: &[Row]) -> String {
    let lines: Vec<Vec<String>> = std::iter::once(HEADER.map(String::from).to_vec())
        .chain(rows.iter().map(|r| r.cells().map(String::from).to_vec()))
        .collect();
    super::tabwriter::render(&lines)
}
