//! What one sidecar sees, as istiod's `SidecarScope`: the services and mesh VirtualServices
//! exported to its namespace and selected by the Sidecar resource that applies to it, and its
//! outbound traffic policy. The generator builds only what is in the scope, so a scoped proxy
//! costs what it can reach, not what the mesh holds.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::services::{Labels, selects};
use super::visibility::ExportTo;
use super::{Index, Service, Typed};
use crate::config::istio::sidecar::{CaptureMode, EgressHost, EgressListener};
use crate::config::istio::{DestinationRule, Sidecar, VirtualService};
use crate::model::Protocol;
use crate::model::host;
use crate::model::mesh::OutboundTrafficMode;
use crate::store::Entry;

/// A VirtualService that applies to sidecars (`gateways` empty or naming `mesh`), its hosts
/// resolved to FQDNs in its namespace.
#[derive(Debug)]
pub struct MeshVirtualService {
    pub entry: Arc<Entry>,
    pub hosts: Vec<String>,
    pub export_to: ExportTo,
}

impl MeshVirtualService {
    pub fn spec(&self) -> &VirtualService {
        self.entry
            .object
            .spec::<VirtualService>()
            .unwrap_or_else(|| unreachable!("built from VirtualServices only"))
    }

    pub fn namespace(&self) -> &str {
        &self.entry.object.meta.namespace
    }

    pub fn name(&self) -> &str {
        &self.entry.object.meta.name
    }

    /// Whether one of its hosts covers `service_host`.
    pub fn applies_to(&self, service_host: &str) -> bool {
        self.hosts.iter().any(|h| host::matches(h, service_host))
    }
}

/// The mesh VirtualServices among `entries`, in the order given (namespace/name from a store
/// snapshot). For the same host the first wins: istiod picks the oldest, which files do not
/// record.
pub fn mesh_virtual_services(
    index_mesh: &crate::model::MeshConfig,
    entries: &[Arc<Entry>],
) -> Vec<Arc<MeshVirtualService>> {
    entries
        .iter()
        .filter_map(|e| {
            let spec = e.object.spec::<VirtualService>()?;
            let for_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
            let namespace = e.object.meta.namespace.as_str();
            for_mesh.then(|| {
                Arc::new(MeshVirtualService {
                    entry: e.clone(),
                    hosts: spec
                        .hosts
                        .iter()
                        .map(|h| index_mesh.fqdn(h, namespace).into_owned())
                        .collect(),
                    export_to: ExportTo::parse(
                        &spec.export_to,
                        namespace,
                        &index_mesh.default_virtual_service_export_to,
                    ),
                })
            })
        })
        .collect()
}

/// Which cluster map a scope needs: the shared one when it sees every service, else one of
/// its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeId {
    Everything,
    /// The proxy namespace (exportTo, `.` and DestinationRule precedence are read against
    /// it) and the Sidecar that applies, if any (`namespace/name`).
    Scoped {
        namespace: String,
        sidecar: Option<String>,
    },
}

#[derive(Debug)]
pub struct Scope {
    pub id: ScopeId,
    /// The services the proxy may reach, in hostname order.
    pub services: Vec<Arc<Service>>,
    /// The mesh VirtualServices that apply to it, in precedence order (the first for a host
    /// routes it).
    pub virtual_services: Vec<Arc<MeshVirtualService>>,
    pub outbound_traffic_policy: OutboundTrafficMode,
    /// The services the catch-all outbound listeners serve: all of `services`, unless the
    /// Sidecar has egress listeners with ports and no catch-all one.
    pub outbound_services: Vec<Arc<Service>>,
    /// The Sidecar's egress listeners with a `port`, each with its own services.
    pub egress_ports: Vec<EgressPort>,
    /// Visible services whose DestinationRule for this proxy is not the one the shared
    /// clusters were built with (a rule in the proxy's namespace, or one not exported to it).
    pub destination_rules: Vec<(Arc<Service>, Option<Typed<DestinationRule>>)>,
}

/// A Sidecar egress listener with a `port`: a listener of its own for the services its hosts
/// import (in hostname order) that have that port.
#[derive(Debug)]
pub struct EgressPort {
    pub port: u16,
    pub protocol: Protocol,
    /// `bind`, empty when unset.
    pub bind: String,
    /// `captureMode: NONE`: the app connects to the listener itself.
    pub uncaptured: bool,
    pub services: Vec<Arc<Service>>,
}

impl Scope {
    /// The scope of a sidecar in `namespace` with `labels`: what is exported to the namespace,
    /// narrowed by the egress hosts of the Sidecar that applies. As in istiod, the services a
    /// selected VirtualService routes to are imported with it, so its routes never point at
    /// a cluster the proxy lacks.
    pub fn of(index: &Index, namespace: &str, labels: &Labels) -> Scope {
        let sidecar = sidecar_for(index, namespace, labels);
        // Each egress listener's hosts, parsed once; `.` in a root-namespace default means the
        // proxy's namespace, as istiod reads it.
        let listeners: Vec<(&EgressListener, Vec<EgressHost>)> = sidecar
            .map(|s| {
                s.spec()
                    .egress
                    .iter()
                    .map(|l| (l, l.egress_hosts(namespace)))
                    .collect()
            })
            .unwrap_or_default();
        let egress: Option<Vec<&EgressHost>> = (!listeners.is_empty())
            .then(|| listeners.iter().flat_map(|(_, hosts)| hosts).collect());

        let mut virtual_services: Vec<Arc<MeshVirtualService>> = index
            .mesh_virtual_services
            .iter()
            .filter(|vs| vs.export_to.visible_to(namespace))
            .filter(|vs| {
                egress.as_ref().is_none_or(|hosts| {
                    hosts.iter().any(|h| {
                        vs.hosts
                            .iter()
                            .any(|vh| h.matches_virtual_service(vs.namespace(), vh))
                    })
                })
            })
            .cloned()
            .collect();
        // istiod's order for a host: VirtualServices private to the proxy's namespace, then
        // those exported to it by name, then public ones; namespace/name within each.
        virtual_services.sort_by_key(|vs| match &vs.export_to {
            ExportTo::Namespaces(_) if vs.namespace() == namespace => 0,
            ExportTo::Namespaces(_) => 1,
            ExportTo::Public => 2,
        });

        let routed: BTreeSet<String> = virtual_services
            .iter()
            .flat_map(|vs| {
                destination_hosts(vs.spec())
                    .map(|h| index.mesh.fqdn(h, vs.namespace()).into_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let services: Vec<Arc<Service>> = index
            .services
            .values()
            .filter(|s| s.export_to.visible_to(namespace))
            .filter(|s| {
                egress
                    .as_ref()
                    .is_none_or(|hosts| hosts.iter().any(|h| h.matches(&s.namespace, &s.hostname)))
                    || routed.contains(&s.hostname)
            })
            .cloned()
            .collect();

        let destination_rules: Vec<(Arc<Service>, Option<Typed<DestinationRule>>)> = services
            .iter()
            .filter_map(|s| {
                let mine = index.destination_rule_for(namespace, &s.hostname);
                let shared = index.destination_rule(&s.hostname);
                let same = match (mine, shared) {
                    (Some(a), Some(b)) => Arc::ptr_eq(&a.entry, &b.entry),
                    (None, None) => true,
                    _ => false,
                };
                (!same).then(|| (s.clone(), mine.cloned()))
            })
            .collect();
        let imported = |hosts: &[EgressHost]| -> Vec<Arc<Service>> {
            services
                .iter()
                .filter(|s| hosts.iter().any(|h| h.matches(&s.namespace, &s.hostname)))
                .cloned()
                .collect()
        };
        let egress_ports: Vec<EgressPort> = listeners
            .iter()
            .filter_map(|(l, hosts)| {
                let port = l.port.as_ref()?;
                let number = u16::try_from(port.number).ok()?;
                let services = imported(hosts)
                    .into_iter()
                    .filter(|s| s.port(number).is_some())
                    .collect();
                Some(EgressPort {
                    port: number,
                    protocol: Protocol::parse(&port.protocol),
                    bind: l.bind.clone(),
                    uncaptured: l.capture_mode == CaptureMode::None,
                    services,
                })
            })
            .collect();
        let outbound_services = if egress_ports.is_empty() {
            services.clone()
        } else {
            // The catch-all listener's hosts, and what its VirtualServices route to.
            listeners
                .iter()
                .find(|(l, _)| l.port.is_none())
                .map(|(_, hosts)| {
                    let own = imported(hosts);
                    services
                        .iter()
                        .filter(|s| {
                            own.iter().any(|o| Arc::ptr_eq(o, s)) || routed.contains(&s.hostname)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        let id = if services.len() == index.services.len() && destination_rules.is_empty() {
            ScopeId::Everything
        } else {
            ScopeId::Scoped {
                namespace: namespace.to_string(),
                sidecar: sidecar.map(|s| s.ns_name()),
            }
        };
        let mesh_policy = index.mesh.outbound_traffic_policy;
        let outbound_traffic_policy =
            sidecar.map_or(mesh_policy, |s| s.spec().outbound_mode(mesh_policy));
        Scope {
            id,
            services,
            outbound_services,
            egress_ports,
            virtual_services,
            outbound_traffic_policy,
            destination_rules,
        }
    }

    pub fn sees(&self, hostname: &str) -> bool {
        self.services
            .binary_search_by(|s| s.hostname.as_str().cmp(hostname))
            .is_ok()
    }
}

/// The Sidecar that applies to a workload, as istiod picks it: in its namespace the first
/// whose selector matches its labels, else the first without a selector; else the first
/// without a selector in the root namespace (the mesh default).
pub fn sidecar_for<'a>(
    index: &'a Index,
    namespace: &str,
    labels: &Labels,
) -> Option<&'a Typed<Sidecar>> {
    let root = index.mesh.root_namespace.as_str();
    let in_ns = |ns: &str, pick: &dyn Fn(Option<&Labels>) -> bool| {
        index
            .sidecars
            .iter()
            .find(|s| s.namespace() == ns && pick(sidecar_selector(s)))
    };
    in_ns(namespace, &|sel| {
        sel.is_some_and(|sel| selects(sel, labels))
    })
    .or_else(|| in_ns(namespace, &|sel| sel.is_none()))
    .or_else(|| in_ns(root, &|sel| sel.is_none()))
}

/// A Sidecar's workload selector; an empty one selects the whole namespace.
pub fn sidecar_selector(s: &Typed<Sidecar>) -> Option<&Labels> {
    s.spec()
        .workload_selector
        .as_ref()
        .filter(|w| !w.labels.is_empty())
        .map(|w| &w.labels)
}

/// The label keys of every `sourceLabels` in a VirtualService's matches.
pub fn source_label_keys(vs: &VirtualService) -> impl Iterator<Item = &String> {
    let http = vs
        .http
        .iter()
        .flat_map(|r| &r.matches)
        .flat_map(|m| m.source_labels.keys());
    let tcp = vs
        .tcp
        .iter()
        .flat_map(|r| &r.matches)
        .flat_map(|m| m.source_labels.keys());
    let tls = vs
        .tls
        .iter()
        .flat_map(|r| &r.matches)
        .flat_map(|m| m.source_labels.keys());
    http.chain(tcp).chain(tls)
}

/// Every destination host a VirtualService routes or mirrors to, as written.
fn destination_hosts(vs: &VirtualService) -> impl Iterator<Item = &str> {
    let http = vs.http.iter().flat_map(|r| {
        r.route
            .iter()
            .map(|d| &d.destination)
            .chain(r.mirror.iter())
            .chain(r.mirrors.iter().map(|m| &m.destination))
    });
    let l4 = vs
        .tcp
        .iter()
        .flat_map(|r| &r.route)
        .chain(vs.tls.iter().flat_map(|r| &r.route))
        .map(|d| &d.destination);
    http.chain(l4).map(|d| d.host.as_str())
}
