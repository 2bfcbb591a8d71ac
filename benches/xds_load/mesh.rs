//! The config the benchmark serves to sidecars: a mesh of M Kubernetes Services spread over K
//! namespaces, each the front of a Deployment whose Pods (file mode: the Service selects them,
//! as the endpoint controller would) are the simulated sidecars, a mesh VirtualService in each
//! namespace, and optionally the Sidecar resources that scope what each proxy sees.
//!
//! One file per Service (the Service and its Pods), so that scaling one Deployment up is one
//! file rename.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use envoy_types::pb::envoy::config::core::v3::Node;

use super::fixture::{Pending, sidecar_node, write};

/// Which Sidecar resources narrow what each proxy sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoping {
    /// None: every proxy sees every Service.
    None,
    /// A Sidecar `default` in each namespace, egress `./*` and `istio-system/*`.
    Namespace,
    /// One mesh-wide default Sidecar in the root namespace with the same egress (`.` is the
    /// proxy's own namespace there).
    Root,
}

/// The egress of every Sidecar here: the proxy's own namespace and the control plane's.
const EGRESS: &str = "  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n";

pub struct Mesh {
    dir: PathBuf,
    services: usize,
    namespaces: usize,
    /// Pods per Deployment: enough for one per client.
    replicas: usize,
    scoping: Scoping,
    /// An experiment, not a real mesh: every sidecar of a namespace says it carries the labels
    /// of the namespace's first Deployment, so proxies differ only by namespace and pilotfish
    /// generates one outbound config per namespace instead of one per Deployment.
    shared_labels: bool,
}

impl Mesh {
    pub fn write(
        dir: &Path,
        services: usize,
        namespaces: usize,
        clients: usize,
        scoping: Scoping,
        shared_labels: bool,
    ) -> Result<Mesh> {
        let namespaces = namespaces.min(services);
        let replicas = clients.div_ceil(services);
        let mesh = Mesh {
            dir: dir.to_path_buf(),
            services,
            namespaces,
            replicas,
            scoping,
            shared_labels,
        };
        for i in 0..services {
            write(&mesh.service_path(i), &mesh.service_file(i, None))?;
        }
        for ns in 0..mesh.namespaces {
            write(
                &dir.join(format!("vs-ns-{ns}.yaml")),
                &mesh.virtual_service(ns, 0),
            )?;
            if scoping == Scoping::Namespace {
                let sidecar = format!(
                    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns-{ns}}}\nspec:\n{EGRESS}"
                );
                write(&dir.join(format!("sidecar-ns-{ns}.yaml")), &sidecar)?;
            }
        }
        if scoping == Scoping::Root {
            let sidecar = format!(
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: istio-system}}\nspec:\n{EGRESS}"
            );
            write(&dir.join("sidecar-root.yaml"), &sidecar)?;
        }
        Ok(mesh)
    }

    /// The namespace of Service `i`: contiguous blocks of M/K services.
    pub fn namespace_of(&self, service: usize) -> usize {
        service * self.namespaces / self.services
    }

    /// The Service client `i`'s pod belongs to: clients 0..R are the replicas of service 0, etc.
    pub fn service_of_client(&self, client: usize) -> usize {
        (client / self.replicas) % self.services
    }

    /// Whether client `i` sees (and so should be pushed changes of) Service `s`.
    pub fn sees(&self, client: usize, service: usize) -> bool {
        self.scoping == Scoping::None
            || self.namespace_of(self.service_of_client(client)) == self.namespace_of(service)
    }

    /// The sidecar of pod `i` as istio-agent would introduce it: its IP, pod and namespace in the
    /// node id, the pod's labels, `INSTANCE_IPS`, capture by iptables (REDIRECT).
    pub fn node(&self, client: usize) -> Node {
        let service = self.service_of_client(client);
        let replica = client % self.replicas;
        let ns = format!("ns-{}", self.namespace_of(service));
        let ip = pod_ip(service * self.replicas + replica);
        let pod = pod_name(service, replica);
        let labelled = if self.shared_labels {
            self.first_service(self.namespace_of(service))
        } else {
            service
        };
        let labels = pod_labels(labelled);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sidecar_node(&ip, &pod, &ns, &format!("svc-{service}"), &labels)
    }

    /// A changed route: the first route's prefix of the VirtualService in namespace
    /// `(generation - 1) % K`, which routes that namespace's first Service. Returns the change
    /// and that Service.
    pub fn route_change(&self, generation: usize) -> Result<(Pending, usize)> {
        let ns = (generation - 1) % self.namespaces;
        let pending = self.pending(
            &format!("vs-ns-{ns}.yaml"),
            &self.virtual_service(ns, generation),
        )?;
        Ok((pending, self.first_service(ns)))
    }

    /// A scale-up: Deployment `service` gets one more Pod, with an address unique to
    /// `generation`; no proxy runs in it yet.
    pub fn endpoint_change(&self, service: usize, generation: usize) -> Result<Pending> {
        self.pending(
            &service_file_name(service),
            &self.service_file(service, Some(generation)),
        )
    }

    fn first_service(&self, ns: usize) -> usize {
        (0..self.services)
            .find(|&s| self.namespace_of(s) == ns)
            .unwrap_or(0)
    }

    fn service_path(&self, i: usize) -> PathBuf {
        self.dir.join(service_file_name(i))
    }

    fn pending(&self, file: &str, content: &str) -> Result<Pending> {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        fs::write(&tmp, content)?;
        Ok(Pending {
            tmp,
            dest: self.dir.join(file),
        })
    }

    /// Service `i` (HTTP on 80 to 8080, a cluster IP) and its Deployment's Pods, plus one
    /// more Pod for a scale-up at `generation`.
    fn service_file(&self, i: usize, extra: Option<usize>) -> String {
        let ns = self.namespace_of(i);
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{ns}, labels: {{app: svc-{i}}}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
            i / 256,
            i % 256
        );
        let pods = (0..self.replicas).map(|r| (pod_name(i, r), pod_ip(i * self.replicas + r)));
        let extra = extra.map(|g| {
            (
                format!("svc-{i}-{}-scale{g}", template_hash(i)),
                format!("10.200.{}.{}", (g / 250) % 250, g % 250 + 1),
            )
        });
        for (name, ip) in pods.chain(extra) {
            let labels: Vec<String> = pod_labels(i)
                .iter()
                .map(|(k, v)| format!("{k}: \"{v}\""))
                .collect();
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: ns-{ns}\n  labels: {{{}}}\nspec:\n  serviceAccountName: default\n  containers: [{{name: app, image: bench, ports: [{{containerPort: 8080, name: http}}]}}]\nstatus: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n",
                labels.join(", ")
            );
        }
        y
    }

    /// A mesh VirtualService for the namespace's first Service: a canary prefix, then the rest.
    fn virtual_service(&self, ns: usize, generation: usize) -> String {
        let s = self.first_service(ns);
        let suffix = if generation > 0 {
            format!("-g{generation}")
        } else {
            String::new()
        };
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\nspec:\n  hosts: [svc-{s}]\n  http:\n  - match: [{{uri: {{prefix: /canary{suffix}/}}}}]\n    route: [{{destination: {{host: svc-{s}}}}}]\n    timeout: 5s\n  - route: [{{destination: {{host: svc-{s}}}}}]\n    retries: {{attempts: 2}}\n"
        )
    }
}

fn service_file_name(i: usize) -> String {
    format!("svc-{i:05}.yaml")
}

/// What a ReplicaSet would put in its pods' names and labels, fixed per Deployment.
fn template_hash(service: usize) -> String {
    format!(
        "{:08x}",
        (service as u64).wrapping_mul(0x9e37_79b9) & 0xffff_ffff
    )
}

fn pod_name(service: usize, replica: usize) -> String {
    format!("svc-{service}-{}-{replica}", template_hash(service))
}

/// The labels of a Deployment's pods, as a real injected pod carries them.
fn pod_labels(service: usize) -> Vec<(&'static str, String)> {
    vec![
        ("app", format!("svc-{service}")),
        ("version", "v1".into()),
        ("pod-template-hash", template_hash(service)),
        ("security.istio.io/tlsMode", "istio".into()),
        ("service.istio.io/canonical-name", format!("svc-{service}")),
        ("service.istio.io/canonical-revision", "v1".into()),
    ]
}

/// Pod `n`'s IP, unique across the mesh.
fn pod_ip(n: usize) -> String {
    format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
}
