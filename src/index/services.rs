//! The service registry: every service pilotfish knows, with its ports and endpoints, from
//! Kubernetes Services (endpoints from EndpointSlices, or in file mode from the Pods a Service
//! selects when it has no EndpointSlice, as the endpoint controller would) and ServiceEntries
//! (inline endpoints, or WorkloadEntries and Pods their `workloadSelector` picks).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::config::istio::service_entry::{Location, Resolution as SeResolution};
use crate::config::istio::{ServiceEntry, WorkloadEntry};
use crate::config::kube::{self, TargetPort};
use crate::config::ObjectKey;
use crate::diagnostic::Diagnostic;
use crate::model::{MeshConfig, Protocol};
use crate::store::Snapshot;

use super::visibility::{ExportTo, SERVICE_EXPORT_TO_ANNOTATION};

pub type Labels = BTreeMap<String, String>;

/// How a proxy finds a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Resolution {
    /// Endpoints sent over EDS (Kubernetes services, STATIC ServiceEntries).
    Eds,
    /// Envoy resolves the endpoints' host names (STRICT_DNS).
    Dns,
    /// Envoy resolves one host name per connection (LOGICAL_DNS).
    DnsRoundRobin,
    /// Traffic goes where the client sent it (ORIGINAL_DST).
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// An IP, or a host name for DNS resolution.
    pub address: String,
    /// Service port → the port this endpoint listens on for it.
    pub ports: BTreeMap<u16, u16>,
    pub labels: Arc<Labels>,
    pub ready: bool,
    /// `region/zone/subzone`, or empty.
    pub locality: String,
    pub weight: u32,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// The FQDN: `<name>.<ns>.svc.<suffix>` or the ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    /// The Kubernetes Service or ServiceEntry this came from.
    pub origin: ObjectKey,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub addresses: Vec<String>,
    pub mesh_external: bool,
    pub endpoints: Vec<Endpoint>,
    /// Which namespaces' proxies see the service.
    pub export_to: ExportTo,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Whether `labels` carries every pair of `selector`.
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Builds every service, keyed by hostname. A hostname defined twice keeps the first
/// (Kubernetes Services before ServiceEntries, then by namespace/name) with a warning.
pub fn build(snapshot: &Snapshot, mesh: &MeshConfig, diagnostics: &mut Vec<Diagnostic>) -> BTreeMap<String, Arc<Service>> {
    let pods = PodIndex::new(snapshot);
    let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    let mut add = |svc: Service, diagnostics: &mut Vec<Diagnostic>| {
        if let Some(first) = services.get(&svc.hostname) {
            diagnostics.push(
                Diagnostic::warning("", format!("host {} is already defined by {}; ignored here", svc.hostname, first.origin))
                    .on(&svc.origin),
            );
        } else {
            services.insert(svc.hostname.clone(), Arc::new(svc));
        }
    };

    let mut slices: HashMap<(&str, &str), Vec<&kube::EndpointSlice>> = HashMap::new();
    for (entry, slice) in snapshot.typed::<kube::EndpointSlice>() {
        slices.entry((&entry.object.meta.namespace, &slice.service_name)).or_default().push(slice);
    }
    for (entry, svc) in snapshot.typed::<kube::Service>() {
        let meta = &entry.object.meta;
        let ports: Vec<ServicePort> = svc
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.port,
                protocol: kube::port_protocol(&p.name, p.app_protocol.as_deref(), &p.protocol),
            })
            .collect();
        let endpoints = match slices.get(&(meta.namespace.as_str(), meta.name.as_str())) {
            Some(found) => slice_endpoints(svc, found, &pods, &meta.namespace),
            None => svc.selector.as_ref().map(|sel| pod_endpoints(svc, sel, &pods, &meta.namespace)).unwrap_or_default(),
        };
        let (resolution, endpoints) = match (&svc.external_name, svc.service_type.as_str()) {
            (Some(name), "ExternalName") => (Resolution::Dns, dns_endpoints(name, &ports)),
            _ => (Resolution::Eds, endpoints),
        };
        add(
            Service {
                hostname: format!("{}.{}.svc.{}", meta.name, meta.namespace, mesh.domain_suffix),
                namespace: meta.namespace.clone(),
                origin: entry.object.key(),
                ports,
                resolution,
                addresses: svc.cluster_ip.iter().cloned().collect(),
                mesh_external: false,
                endpoints,
                export_to: ExportTo::of_annotation(meta.annotations.get(SERVICE_EXPORT_TO_ANNOTATION), &meta.namespace, &mesh.default_service_export_to),
            },
            diagnostics,
        );
    }

    let workload_entries: Vec<(&str, &WorkloadEntry)> = snapshot
        .typed::<WorkloadEntry>()
        .map(|(e, we)| (e.object.meta.namespace.as_str(), we))
        .collect();
    for (entry, se) in snapshot.typed::<ServiceEntry>() {
        let ns = &entry.object.meta.namespace;
        let ports: Vec<ServicePort> = se
            .ports
            .iter()
            .filter_map(|p| {
                Some(ServicePort { name: p.name.clone(), port: u16::try_from(p.number).ok()?, protocol: Protocol::parse(&p.protocol) })
            })
            .collect();
        let resolution = match se.resolution {
            SeResolution::Static => Resolution::Eds,
            SeResolution::Dns => Resolution::Dns,
            SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
            SeResolution::None => Resolution::Passthrough,
        };
        for host in &se.hosts {
            let endpoints = se_endpoints(se, host, &ports, ns, &workload_entries, &pods, resolution);
            add(
                Service {
                    hostname: host.clone(),
                    namespace: ns.clone(),
                    origin: entry.object.key(),
                    ports: ports.clone(),
                    resolution,
                    addresses: se.addresses.clone(),
                    mesh_external: se.location == Location::MeshExternal,
                    endpoints,
                    export_to: ExportTo::parse(&se.export_to, ns, &mesh.default_service_export_to),
                },
                diagnostics,
            );
        }
    }
    services
}

/// A Pod's name, labels and spec.
type PodRef<'a> = (&'a str, Arc<Labels>, &'a kube::Pod);

/// Pods by namespace, for selectors and EndpointSlice `targetRef`s.
struct PodIndex<'a> {
    by_ns: HashMap<&'a str, Vec<PodRef<'a>>>,
}

impl<'a> PodIndex<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut by_ns: HashMap<&str, Vec<_>> = HashMap::new();
        for (entry, pod) in snapshot.typed::<kube::Pod>() {
            let meta = &entry.object.meta;
            by_ns.entry(meta.namespace.as_str()).or_default().push((meta.name.as_str(), Arc::new(meta.labels.clone()), pod));
        }
        PodIndex { by_ns }
    }

    fn get(&self, ns: &str, name: &str) -> Option<&PodRef<'a>> {
        self.by_ns.get(ns)?.iter().find(|(n, _, _)| *n == name)
    }

    fn selected<'s>(&'s self, ns: &str, selector: &'s Labels) -> impl Iterator<Item = &'s PodRef<'a>> {
        self.by_ns.get(ns).into_iter().flatten().filter(move |(_, labels, _)| selects(selector, labels))
    }
}

fn slice_endpoints(svc: &kube::Service, slices: &[&kube::EndpointSlice], pods: &PodIndex<'_>, ns: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let mut ports = BTreeMap::new();
        for sp in &svc.ports {
            // EndpointSlice ports carry the Service port's name; a single unnamed port matches too.
            let found = slice.ports.iter().find(|p| p.name == sp.name).or(match slice.ports.as_slice() {
                [only] if svc.ports.len() == 1 => Some(only),
                _ => None,
            });
            if let Some(p) = found {
                ports.insert(sp.port, p.port);
            }
        }
        for ep in &slice.endpoints {
            let pod = ep.pod.as_deref().and_then(|name| pods.get(ns, name));
            for address in &ep.addresses {
                out.push(Endpoint {
                    address: address.clone(),
                    ports: ports.clone(),
                    labels: pod.map(|(_, l, _)| l.clone()).unwrap_or_default(),
                    ready: ep.ready,
                    // Kubernetes gives the zone; the region comes from Node labels, which
                    // pilotfish does not read yet.
                    locality: ep.zone.as_ref().map(|z| format!("/{z}")).unwrap_or_default(),
                    weight: 1,
                    service_account: pod.map(|(_, _, p)| p.service_account.clone()).unwrap_or_default(),
                });
            }
        }
    }
    out
}

fn pod_endpoints(svc: &kube::Service, selector: &Labels, pods: &PodIndex<'_>, ns: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (_, labels, pod) in pods.selected(ns, selector) {
        if pod.terminating {
            continue;
        }
        let mut ports = BTreeMap::new();
        for sp in &svc.ports {
            let target = match &sp.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => pod.container_ports.iter().find(|c| &c.name == name).map(|c| c.port),
            };
            if let Some(t) = target {
                ports.insert(sp.port, t);
            }
        }
        for ip in &pod.ips {
            out.push(Endpoint {
                address: ip.clone(),
                ports: ports.clone(),
                labels: labels.clone(),
                ready: pod.ready,
                locality: String::new(),
                weight: 1,
                service_account: pod.service_account.clone(),
            });
        }
    }
    out
}

fn dns_endpoints(host: &str, ports: &[ServicePort]) -> Vec<Endpoint> {
    vec![Endpoint {
        address: host.to_string(),
        ports: ports.iter().map(|p| (p.port, p.port)).collect(),
        labels: Arc::default(),
        ready: true,
        locality: String::new(),
        weight: 1,
        service_account: String::new(),
    }]
}

fn workload_endpoint(we: &WorkloadEntry, labels: Arc<Labels>, ports: &[ServicePort]) -> Endpoint {
    Endpoint {
        address: we.address.clone(),
        ports: ports
            .iter()
            .map(|p| (p.port, we.ports.get(&p.name).and_then(|n| u16::try_from(*n).ok()).unwrap_or(p.port)))
            .collect(),
        labels,
        ready: true,
        locality: we.locality.clone(),
        weight: if we.weight == 0 { 1 } else { we.weight },
        service_account: we.service_account.clone(),
    }
}

fn se_endpoints(
    se: &ServiceEntry,
    host: &str,
    ports: &[ServicePort],
    ns: &str,
    workload_entries: &[(&str, &WorkloadEntry)],
    pods: &PodIndex<'_>,
    resolution: Resolution,
) -> Vec<Endpoint> {
    if let Some(selector) = &se.workload_selector {
        let mut out: Vec<Endpoint> = workload_entries
            .iter()
            .filter(|(we_ns, we)| *we_ns == ns && selects(&selector.labels, &we.labels))
            .map(|(_, we)| workload_endpoint(we, Arc::new(we.labels.clone()), ports))
            .collect();
        for (_, labels, pod) in pods.selected(ns, &selector.labels) {
            for ip in &pod.ips {
                out.push(Endpoint {
                    address: ip.clone(),
                    ports: ports.iter().map(|p| (p.port, p.port)).collect(),
                    labels: labels.clone(),
                    ready: pod.ready,
                    locality: String::new(),
                    weight: 1,
                    service_account: pod.service_account.clone(),
                });
            }
        }
        return out;
    }
    if se.endpoints.is_empty() && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
        return dns_endpoints(host, ports);
    }
    se.endpoints.iter().map(|we| workload_endpoint(we, Arc::new(we.labels.clone()), ports)).collect()
}
