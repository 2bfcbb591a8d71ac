//! The service registry: every service pilotfish knows, with its ports and endpoints, from
//! Kubernetes Services (endpoints from EndpointSlices, or in file mode from the Pods a Service
//! selects when it has no EndpointSlice, as the endpoint controller would) and ServiceEntries
//! (inline endpoints, or WorkloadEntries and Pods their `workloadSelector` picks).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::security;
use crate::config::istio::security::MtlsMode;
use crate::config::istio::service_entry::{Location, Resolution as SeResolution};
use crate::config::istio::{ServiceEntry, WorkloadEntry};
use crate::config::kube::{self, TargetPort};
use crate::config::{KindSpec, ObjectKey};
use crate::diagnostic::Diagnostic;
use crate::model::{MeshConfig, Protocol};
use crate::store::{Entry, Snapshot};

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
    /// Target ports on which the workload's PeerAuthentication says DISABLE: though it has a
    /// sidecar, clients must not use mTLS there (istiod drops its `tlsMode` for them).
    pub plaintext_ports: Vec<u16>,
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
pub fn build(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Arc<Service>> {
    let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    let mut add = |svc: Service, diagnostics: &mut Vec<Diagnostic>| {
        if let Some(first) = services.get(&svc.hostname) {
            diagnostics.push(
                Diagnostic::warning(
                    "",
                    format!(
                        "host {} is already defined by {}; ignored here",
                        svc.hostname, first.origin
                    ),
                )
                .on(&svc.origin),
            );
        } else {
            services.insert(svc.hostname.clone(), Arc::new(svc));
        }
    };

    let mut slices: HashMap<(&str, &str), Vec<&kube::EndpointSlice>> = HashMap::new();
    for (entry, slice) in snapshot.typed::<kube::EndpointSlice>() {
        slices
            .entry((&entry.object.meta.namespace, &slice.service_name))
            .or_default()
            .push(slice);
    }
    for (entry, svc) in snapshot.typed::<kube::Service>() {
        let meta = &entry.object.meta;
        let found = slices
            .get(&(meta.namespace.as_str(), meta.name.as_str()))
            .map(Vec::as_slice);
        add(kube_service(snapshot, mesh, entry, svc, found), diagnostics);
    }
    let workload_entries = workload_entries(snapshot);
    for (entry, se) in snapshot.typed::<ServiceEntry>() {
        for svc in service_entry_services(snapshot, mesh, entry, se, &workload_entries) {
            add(svc, diagnostics);
        }
    }
    services
}

/// `previous`, built from `before`, brought up to `snapshot` when only Pods and EndpointSlices
/// changed between them (the caller checks): the services whose endpoints those changes can
/// touch are built again, and every other keeps its `Arc`, so what is generated from it can be
/// kept too. Returns the services and the hostnames whose service changed.
pub fn update(
    previous: &BTreeMap<String, Arc<Service>>,
    before: &Snapshot,
    snapshot: &Snapshot,
    mesh: &MeshConfig,
) -> (BTreeMap<String, Arc<Service>>, Vec<String>) {
    let touched = Touched::between(before, snapshot);
    let mut services = previous.clone();
    let mut changed = Vec::new();
    let mut replace = |svc: Service, changed: &mut Vec<String>| {
        // Only the service that won its hostname is replaced (see `build`).
        let Some(old) = services
            .get_mut(&svc.hostname)
            .filter(|old| old.origin == svc.origin)
        else {
            return;
        };
        if **old != svc {
            changed.push(svc.hostname.clone());
            *old = Arc::new(svc);
        }
    };
    for (namespace, name) in &touched.kube_services {
        let key = ObjectKey {
            kind: kube::Service::KIND,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let Some(entry) = snapshot.get(&key) else {
            continue;
        };
        let Some(svc) = entry.object.spec::<kube::Service>() else {
            continue;
        };
        let slices: Vec<&kube::EndpointSlice> = snapshot
            .in_namespace(kube::EndpointSlice::KIND, namespace)
            .filter_map(|e| e.object.spec::<kube::EndpointSlice>())
            .filter(|slice| slice.service_name == *name)
            .collect();
        let slices = (!slices.is_empty()).then_some(slices.as_slice());
        replace(
            kube_service(snapshot, mesh, entry, svc, slices),
            &mut changed,
        );
    }
    let workload_entries = if touched.service_entries.is_empty() {
        Vec::new()
    } else {
        workload_entries(snapshot)
    };
    for key in &touched.service_entries {
        let Some(entry) = snapshot.get(key) else {
            continue;
        };
        let Some(se) = entry.object.spec::<ServiceEntry>() else {
            continue;
        };
        for svc in service_entry_services(snapshot, mesh, entry, se, &workload_entries) {
            replace(svc, &mut changed);
        }
    }
    (services, changed)
}

/// The Services and ServiceEntries whose endpoints Pod and EndpointSlice changes can touch.
#[derive(Default)]
struct Touched {
    /// Kubernetes Services by (namespace, name).
    kube_services: BTreeSet<(String, String)>,
    service_entries: BTreeSet<ObjectKey>,
}

impl Touched {
    fn between(before: &Snapshot, snapshot: &Snapshot) -> Touched {
        let mut touched = Touched::default();
        for (old, new) in snapshot.changes(before, kube::EndpointSlice::KIND) {
            for entry in [old, new].into_iter().flatten() {
                if let Some(slice) = entry.object.spec::<kube::EndpointSlice>() {
                    touched.kube_services.insert((
                        entry.object.meta.namespace.clone(),
                        slice.service_name.clone(),
                    ));
                }
            }
        }
        // A Pod reaches a service through a slice naming it (its labels and service account),
        // or through a selector matching its labels before or after the change.
        let mut pods: BTreeMap<&str, (HashSet<&str>, Vec<&Labels>)> = BTreeMap::new();
        for (old, new) in snapshot.changes(before, kube::Pod::KIND) {
            for entry in [old, new].into_iter().flatten() {
                let (names, labels) = pods
                    .entry(entry.object.meta.namespace.as_str())
                    .or_default();
                names.insert(entry.object.meta.name.as_str());
                labels.push(&entry.object.meta.labels);
            }
        }
        for (namespace, (names, labels)) in pods {
            let selected = |selector: &Labels| labels.iter().any(|l| selects(selector, l));
            for (entry, slice) in snapshot
                .in_namespace(kube::EndpointSlice::KIND, namespace)
                .filter_map(typed::<kube::EndpointSlice>)
            {
                if slice
                    .endpoints
                    .iter()
                    .any(|ep| ep.pod.as_deref().is_some_and(|p| names.contains(p)))
                {
                    touched.kube_services.insert((
                        entry.object.meta.namespace.clone(),
                        slice.service_name.clone(),
                    ));
                }
            }
            for (entry, svc) in snapshot
                .in_namespace(kube::Service::KIND, namespace)
                .filter_map(typed::<kube::Service>)
            {
                if svc.selector.as_ref().is_some_and(selected) {
                    touched.kube_services.insert((
                        entry.object.meta.namespace.clone(),
                        entry.object.meta.name.clone(),
                    ));
                }
            }
            for (entry, se) in snapshot
                .in_namespace(ServiceEntry::KIND, namespace)
                .filter_map(typed::<ServiceEntry>)
            {
                if se
                    .workload_selector
                    .as_ref()
                    .is_some_and(|s| selected(&s.labels))
                {
                    touched.service_entries.insert(entry.object.key());
                }
            }
        }
        touched
    }
}

fn typed<T: KindSpec + 'static>(entry: &Arc<Entry>) -> Option<(&Arc<Entry>, &T)> {
    entry.object.spec::<T>().map(|spec| (entry, spec))
}

/// A Kubernetes Service: endpoints from its EndpointSlices, or without any, from the Pods its
/// selector picks, as the endpoint controller would (file mode has no controller).
fn kube_service(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    entry: &Arc<Entry>,
    svc: &kube::Service,
    slices: Option<&[&kube::EndpointSlice]>,
) -> Service {
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
    let pods = Pods {
        snapshot,
        namespace: &meta.namespace,
        root: &mesh.root_namespace,
    };
    let endpoints = match slices {
        Some(found) => slice_endpoints(svc, found, &pods),
        None => svc
            .selector
            .as_ref()
            .map(|sel| pod_endpoints(svc, sel, &pods))
            .unwrap_or_default(),
    };
    let (resolution, endpoints) = match (&svc.external_name, svc.service_type.as_str()) {
        (Some(name), "ExternalName") => (Resolution::Dns, dns_endpoints(name, &ports)),
        _ => (Resolution::Eds, endpoints),
    };
    Service {
        hostname: format!(
            "{}.{}.svc.{}",
            meta.name, meta.namespace, mesh.domain_suffix
        ),
        namespace: meta.namespace.clone(),
        origin: entry.object.key(),
        ports,
        resolution,
        addresses: svc.cluster_ip.iter().cloned().collect(),
        mesh_external: false,
        endpoints,
        export_to: ExportTo::of_annotation(
            meta.annotations.get(SERVICE_EXPORT_TO_ANNOTATION),
            &meta.namespace,
            &mesh.default_service_export_to,
        ),
    }
}

fn workload_entries(snapshot: &Snapshot) -> Vec<(&str, &WorkloadEntry)> {
    snapshot
        .typed::<WorkloadEntry>()
        .map(|(e, we)| (e.object.meta.namespace.as_str(), we))
        .collect()
}

/// A ServiceEntry's services, one per host.
fn service_entry_services(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    entry: &Arc<Entry>,
    se: &ServiceEntry,
    workload_entries: &[(&str, &WorkloadEntry)],
) -> Vec<Service> {
    let ns = &entry.object.meta.namespace;
    let ports: Vec<ServicePort> = se
        .ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone(),
                port: u16::try_from(p.number).ok()?,
                protocol: Protocol::parse(&p.protocol),
            })
        })
        .collect();
    let resolution = match se.resolution {
        SeResolution::Static => Resolution::Eds,
        SeResolution::Dns => Resolution::Dns,
        SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
        SeResolution::None => Resolution::Passthrough,
    };
    let pods = Pods {
        snapshot,
        namespace: ns,
        root: &mesh.root_namespace,
    };
    se.hosts
        .iter()
        .map(|host| Service {
            hostname: host.clone(),
            namespace: ns.clone(),
            origin: entry.object.key(),
            ports: ports.clone(),
            resolution,
            addresses: se.addresses.clone(),
            mesh_external: se.location == Location::MeshExternal,
            endpoints: se_endpoints(se, host, &ports, ns, workload_entries, &pods, resolution),
            export_to: ExportTo::parse(&se.export_to, ns, &mesh.default_service_export_to),
        })
        .collect()
}

/// The Pods of one namespace, read from the snapshot where they are (ordered by name).
struct Pods<'a> {
    snapshot: &'a Snapshot,
    namespace: &'a str,
    root: &'a str,
}

impl<'a> Pods<'a> {
    /// Of `ports` (the endpoint's target ports), those its PeerAuthentication disables mTLS on;
    /// only asked of pods with a sidecar.
    fn plaintext_ports(&self, labels: &Labels, ports: impl IntoIterator<Item = u16>) -> Vec<u16> {
        if !security::has_sidecar(labels) {
            return Vec::new();
        }
        let policies = security::peer_authentications(
            self.snapshot,
            self.root,
            security::Workload {
                namespace: self.namespace,
                labels,
            },
        );
        if policies.is_empty() {
            return Vec::new();
        }
        ports
            .into_iter()
            .filter(|p| security::mtls_mode(&policies, *p) == MtlsMode::Disable)
            .collect()
    }

    fn get(&self, name: &str) -> Option<(&'a Labels, &'a kube::Pod)> {
        let key = ObjectKey {
            kind: kube::Pod::KIND,
            namespace: self.namespace.to_string(),
            name: name.to_string(),
        };
        let entry = self.snapshot.get(&key)?;
        Some((&entry.object.meta.labels, entry.object.spec::<kube::Pod>()?))
    }

    fn selected<'s>(
        &'s self,
        selector: &'s Labels,
    ) -> impl Iterator<Item = (&'a Labels, &'a kube::Pod)> + 's {
        self.snapshot
            .in_namespace(kube::Pod::KIND, self.namespace)
            .filter_map(|e| Some((&e.object.meta.labels, e.object.spec::<kube::Pod>()?)))
            .filter(move |(labels, _)| selects(selector, labels))
    }
}

fn slice_endpoints(
    svc: &kube::Service,
    slices: &[&kube::EndpointSlice],
    pods: &Pods<'_>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let mut ports = BTreeMap::new();
        for sp in &svc.ports {
            // EndpointSlice ports carry the Service port's name; a single unnamed port matches too.
            let found =
                slice
                    .ports
                    .iter()
                    .find(|p| p.name == sp.name)
                    .or(match slice.ports.as_slice() {
                        [only] if svc.ports.len() == 1 => Some(only),
                        _ => None,
                    });
            if let Some(p) = found {
                ports.insert(sp.port, p.port);
            }
        }
        for ep in &slice.endpoints {
            let pod = ep.pod.as_deref().and_then(|name| pods.get(name));
            // One copy of the Pod's labels for all its addresses.
            let labels: Arc<Labels> = pod.map(|(l, _)| Arc::new(l.clone())).unwrap_or_default();
            let plaintext_ports = pods.plaintext_ports(&labels, ports.values().copied());
            for address in &ep.addresses {
                out.push(Endpoint {
                    plaintext_ports: plaintext_ports.clone(),
                    address: address.clone(),
                    ports: ports.clone(),
                    labels: labels.clone(),
                    ready: ep.ready,
                    // Kubernetes gives the zone; the region comes from Node labels, which
                    // pilotfish does not read yet.
                    locality: ep
                        .zone
                        .as_ref()
                        .map(|z| format!("/{z}"))
                        .unwrap_or_default(),
                    weight: 1,
                    service_account: pod
                        .map(|(_, p)| p.service_account.clone())
                        .unwrap_or_default(),
                });
            }
        }
    }
    out
}

fn pod_endpoints(svc: &kube::Service, selector: &Labels, pods: &Pods<'_>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (labels, pod) in pods.selected(selector) {
        let labels = Arc::new(labels.clone());
        if pod.terminating {
            continue;
        }
        let mut ports = BTreeMap::new();
        for sp in &svc.ports {
            let target = match &sp.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => pod
                    .container_ports
                    .iter()
                    .find(|c| &c.name == name)
                    .map(|c| c.port),
            };
            if let Some(t) = target {
                ports.insert(sp.port, t);
            }
        }
        let plaintext_ports = pods.plaintext_ports(&labels, ports.values().copied());
        for ip in &pod.ips {
            out.push(Endpoint {
                plaintext_ports: plaintext_ports.clone(),
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
        plaintext_ports: Vec::new(),
    }]
}

fn workload_endpoint(we: &WorkloadEntry, labels: Arc<Labels>, ports: &[ServicePort]) -> Endpoint {
    Endpoint {
        address: we.address.clone(),
        ports: ports
            .iter()
            .map(|p| {
                (
                    p.port,
                    we.ports
                        .get(&p.name)
                        .and_then(|n| u16::try_from(*n).ok())
                        .unwrap_or(p.port),
                )
            })
            .collect(),
        labels,
        ready: true,
        locality: we.locality.clone(),
        weight: if we.weight == 0 { 1 } else { we.weight },
        service_account: we.service_account.clone(),
        plaintext_ports: Vec::new(),
    }
}

fn se_endpoints(
    se: &ServiceEntry,
    host: &str,
    ports: &[ServicePort],
    ns: &str,
    workload_entries: &[(&str, &WorkloadEntry)],
    pods: &Pods<'_>,
    resolution: Resolution,
) -> Vec<Endpoint> {
    if let Some(selector) = &se.workload_selector {
        let mut out: Vec<Endpoint> = workload_entries
            .iter()
            .filter(|(we_ns, we)| *we_ns == ns && selects(&selector.labels, &we.labels))
            .map(|(_, we)| workload_endpoint(we, Arc::new(we.labels.clone()), ports))
            .collect();
        for (labels, pod) in pods.selected(&selector.labels) {
            let labels = Arc::new(labels.clone());
            let plaintext_ports = pods.plaintext_ports(&labels, ports.iter().map(|p| p.port));
            for ip in &pod.ips {
                out.push(Endpoint {
                    plaintext_ports: plaintext_ports.clone(),
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
    if se.endpoints.is_empty() && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
    {
        return dns_endpoints(host, ports);
    }
    se.endpoints
        .iter()
        .map(|we| workload_endpoint(we, Arc::new(we.labels.clone()), ports))
        .collect()
}
