//! The config the benchmark serves to gateways: M ServiceEntries (one file each, so that editing
//! one is cheap), one ingress Gateway and one VirtualService routing prefixes to some of them;
//! and the gateway proxies' identity.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// How many services the VirtualService routes to.
const MAX_ROUTES: usize = 100;

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [\"*\"]
";

pub struct Fixture {
    dir: PathBuf,
    services: usize,
}

/// A file written next to its destination under a hidden name (which pilotfish ignores),
/// waiting to be renamed over it.
pub struct Pending {
    pub tmp: PathBuf,
    pub dest: PathBuf,
}

impl Pending {
    /// The atomic rename: the one file-system event the server sees.
    pub fn commit(self) -> Result<()> {
        fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), self.dest.display()))
    }
}

impl Fixture {
    pub fn write(dir: &Path, services: usize) -> Result<Fixture> {
        let fixture = Fixture {
            dir: dir.to_path_buf(),
            services,
        };
        for i in 0..services {
            write(&fixture.service_path(i), &service_entry(i, None))?;
        }
        write(&dir.join("gateway.yaml"), GATEWAY)?;
        write(
            &dir.join("virtual-service.yaml"),
            &virtual_service(services, 0),
        )?;
        Ok(fixture)
    }

    /// The VirtualService with the first route's prefix changed (`generation` > 0).
    pub fn route_change(&self, generation: usize) -> Result<Pending> {
        self.pending(
            "virtual-service.yaml",
            &virtual_service(self.services, generation),
        )
    }

    /// ServiceEntry `service` with its first endpoint moved to an address unique to
    /// `generation`.
    pub fn endpoint_change(&self, service: usize, generation: usize) -> Result<Pending> {
        let address = format!(
            "10.200.{}.{}",
            (generation / 250) % 250,
            generation % 250 + 1
        );
        self.pending(
            &service_file(service),
            &service_entry(service, Some(&address)),
        )
    }

    fn service_path(&self, i: usize) -> PathBuf {
        self.dir.join(service_file(i))
    }

    fn pending(&self, file: &str, content: &str) -> Result<Pending> {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        write(&tmp, content)?;
        Ok(Pending {
            tmp,
            dest: self.dir.join(file),
        })
    }
}

/// Gateway proxy `i`: a replica of `istio-ingressgateway` in `istio-system`.
pub fn gateway_node(i: usize) -> Node {
    let labels = [("istio", "ingressgateway")];
    node(
        format!(
            "router~10.0.{}.{}~gw-{i}.istio-system~istio-system.svc.cluster.local",
            i / 250,
            i % 250
        ),
        "istio-ingressgateway",
        &labels,
        &[("NAMESPACE", "istio-system")],
    )
}

/// The sidecar of a Kubernetes Pod as istio-agent introduces it: IP, pod and namespace in the
/// node id, the workload's labels, `INSTANCE_IPS`, capture by iptables (REDIRECT).
pub fn sidecar_node(
    ip: &str,
    pod: &str,
    ns: &str,
    workload: &str,
    labels: &[(&str, &str)],
) -> Node {
    node(
        format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
        &format!("{workload}.{ns}"),
        labels,
        &[
            ("NAMESPACE", ns),
            ("INSTANCE_IPS", ip),
            ("INTERCEPTION_MODE", "REDIRECT"),
            ("CLUSTER_ID", "Kubernetes"),
            ("ISTIO_VERSION", "1.27.0"),
            ("WORKLOAD_NAME", workload),
            ("SERVICE_ACCOUNT", "default"),
        ],
    )
}

/// A node as istio-agent sends it: the id, `node.cluster`, `LABELS` and other string metadata.
pub fn node(id: String, cluster: &str, labels: &[(&str, &str)], metadata: &[(&str, &str)]) -> Node {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let labels = Struct {
        fields: labels
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    let mut fields: std::collections::HashMap<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id,
        cluster: cluster.into(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

pub fn write(path: &Path, content: &str) -> Result<()> {
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

fn service_file(i: usize) -> String {
    format!("se-{i:05}.yaml")
}

pub fn host(i: usize) -> String {
    format!("svc-{i}.bench.internal")
}

/// Two endpoints per service, on addresses unique across services.
fn endpoint_address(i: usize, k: usize) -> String {
    let n = i * 2 + k;
    format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
}

fn service_entry(i: usize, first_endpoint: Option<&str>) -> String {
    let first = first_endpoint.map_or_else(|| endpoint_address(i, 0), str::to_string);
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-{i}, namespace: bench}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {first}}}, {{address: {second}}}]
",
        host = host(i),
        second = endpoint_address(i, 1),
    )
}

fn virtual_service(services: usize, generation: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress, namespace: istio-system}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/gateway]
  http:
",
    );
    for j in 0..services.min(MAX_ROUTES) {
        let suffix = if j == 0 && generation > 0 {
            format!("-g{generation}")
        } else {
            String::new()
        };
        let _ = write!(
            y,
            "  - match: [{{uri: {{prefix: /svc-{j}{suffix}/}}}}]\n    route: [{{destination: {{host: {host}, port: {{number: 80}}}}}}]\n",
            host = host(j)
        );
    }
    y
}
