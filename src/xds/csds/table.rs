//! `pilotfish proxy-status`: a CSDS response as `istioctl proxy-status` prints it, so scripts
//! that read istioctl's table read ours. The columns, the status words and the spacing (Go's
//! tabwriter with padding 5) follow istioctl.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::value::Kind;

use crate::xds::TypeUrl;

pub const HEADER: [&str; 9] = [
    "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
];
const ECDS_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// Go tabwriter's padding in istioctl's writer.
const PADDING: usize = 5;

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

/// The table: every column but the last as wide as its widest cell plus 5 spaces.
pub fn render(rows: &[Row]) -> String {
    let header = Row {
        name: HEADER[0].into(),
        cluster: HEADER[1].into(),
        cds: HEADER[2].into(),
        lds: HEADER[3].into(),
        eds: HEADER[4].into(),
        rds: HEADER[5].into(),
        ecds: HEADER[6].into(),
        istiod: HEADER[7].into(),
        version: HEADER[8].into(),
    };
    let lines: Vec<[&str; 9]> = std::iter::once(&header)
        .chain(rows)
        .map(Row::cells)
        .collect();
    let mut widths = [0usize; 9];
    for cells in &lines {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for cells in &lines {
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] + PADDING - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}
