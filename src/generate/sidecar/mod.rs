//! Sidecar proxies (node type `sidecar`): istiod's listeners, route configs and local clusters.
//!
//! - outbound ([`outbound`]): a listener `0.0.0.0_<port>` per HTTP service port, sharing the
//!   route config `"<port>"` ([`routes`]); a `tcp_proxy` listener `<vip>_<port>` per TCP
//!   service port; `virtualOutbound` on 15001 hands captured connections to them and sends the
//!   rest to `PassthroughCluster` (ALLOW_ANY);
//! - inbound ([`inbound`]): `virtualInbound` on 15006 with a filter chain per port of the
//!   services this workload backs, to `inbound|<port>||` clusters on 127.0.0.1, and the
//!   passthrough chain to `InboundPassthroughCluster`.
//!
//! Outbound config depends on the proxy's namespace, labels (`sourceLabels`), DNS domain
//! (short host names) and interception mode; inbound config on the ports its IPs serve.
//! [`ProxyKey`] holds all of it, so the caller can share one generation between equal proxies.

mod filters;
mod inbound;
mod outbound;
mod routes;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::istio::VirtualService;
use crate::config::KindSpec;
use crate::index::Index;
use crate::model::Proxy;
use crate::store::{Entry, Snapshot};
use crate::xds::ResourceMap;

use super::names;
pub use inbound::{local_clusters, InboundPort};

pub use routes::{host_matches, virtual_host_domains};

/// How traffic reaches the sidecar (istio-agent's `INTERCEPTION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interception {
    /// iptables sends traffic to 15001/15006; per-service listeners are not bound (istiod's
    /// `bind_to_port: false`), as the app owns those ports in the pod. The default.
    Redirect,
    /// No capture: the app connects to the listeners themselves, so outbound `0.0.0.0_<port>`
    /// listeners are bound.
    None,
}

impl Interception {
    pub fn of(proxy: &Proxy) -> Interception {
        if proxy.metadata.interception_mode.eq_ignore_ascii_case("NONE") { Interception::None } else { Interception::Redirect }
    }
}

/// Everything of a proxy that sidecar generation reads: equal keys get equal config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    namespace: String,
    labels: BTreeMap<String, String>,
    dns_domain: String,
    interception: Interception,
    /// What the proxy's IPs serve, rather than the IPs: replicas of a workload share one key.
    pub inbound: Vec<InboundPort>,
}

impl ProxyKey {
    pub fn of(index: &Index, proxy: &Proxy) -> ProxyKey {
        let interception = Interception::of(proxy);
        ProxyKey {
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
            dns_domain: proxy.dns_domain.clone(),
            interception,
            // Without capture nothing reaches `virtualInbound`, so it is not built.
            inbound: if interception == Interception::Redirect { inbound::ports(index, proxy) } else { Vec::new() },
        }
    }
}

/// A VirtualService that applies to sidecars (`gateways` empty or naming `mesh`), its hosts
/// resolved to FQDNs in its namespace.
pub struct MeshVirtualService<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a VirtualService,
    hosts: Vec<String>,
}

impl MeshVirtualService<'_> {
    fn applies_to(&self, service_host: &str) -> bool {
        self.hosts.iter().any(|h| host_matches(h, service_host))
    }
}

/// The mesh VirtualServices among `entries` (any kinds), in the order given (namespace/name
/// when they come from a store snapshot). For the same host, the first wins: istiod picks the
/// oldest, which files do not record.
pub fn mesh_virtual_services<'a>(index: &Index, entries: &'a [Arc<Entry>]) -> Vec<MeshVirtualService<'a>> {
    entries
        .iter()
        .filter_map(|e| {
            let spec = e.object.spec::<VirtualService>()?;
            let for_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
            let namespace = e.object.meta.namespace.as_str();
            for_mesh.then(|| MeshVirtualService {
                namespace,
                name: &e.object.meta.name,
                spec,
                hosts: spec.hosts.iter().map(|h| index.mesh.fqdn(h, namespace).into_owned()).collect(),
            })
        })
        .collect()
}

/// Every VirtualService of a store snapshot, for [`mesh_virtual_services`].
pub fn virtual_service_entries(snapshot: &Snapshot) -> Vec<Arc<Entry>> {
    snapshot.entries(VirtualService::KIND).cloned().collect()
}

/// A sidecar's listeners and route configs. Its clusters are the shared outbound ones plus
/// [`local_clusters`].
#[derive(Debug, Default)]
pub struct SidecarConfig {
    pub listeners: ResourceMap,
    pub routes: ResourceMap,
}

/// Listeners and route configs for the proxy `key` describes (`proxy` is one such proxy).
pub fn build(index: &Index, proxy: &Proxy, key: &ProxyKey, mesh_vs: &[MeshVirtualService]) -> SidecarConfig {
    let mut out = SidecarConfig::default();
    outbound::build(index, proxy, mesh_vs, &mut out);
    if key.interception == Interception::Redirect {
        out.listeners.insert(names::VIRTUAL_INBOUND.into(), Arc::new(inbound::virtual_inbound(&key.inbound)));
    }
    out
}
