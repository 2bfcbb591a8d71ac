//! Sidecar proxies (node type `sidecar`): istiod's listeners, route configs and local clusters.
//!
//! - outbound ([`outbound`]): a listener `0.0.0.0_<port>` per HTTP service port in the proxy's
//!   scope, sharing the route config `"<port>"` ([`routes`]); a listener `<vip>_<port>` per TCP
//!   or TLS service port ([`l4`]: `tcp`/`tls` routes); a Sidecar's egress listeners with a port;
//!   `virtualOutbound` on 15001 hands captured connections to them and sends the rest to
//!   `PassthroughCluster` (ALLOW_ANY) or `BlackHoleCluster` (REGISTRY_ONLY);
//! - inbound ([`inbound`]): `virtualInbound` on 15006 with a filter chain per port the workload
//!   serves (or per Sidecar ingress port), to `inbound|<port>||` clusters, and the passthrough
//!   chain to `InboundPassthroughCluster`; without capture, Sidecar ingress listeners bound.
//!
//! Config depends on the proxy's namespace, the Sidecar that applies, the labels `sourceLabels`
//! name, its DNS domain (short host names), interception mode, and the ports its IPs serve.
//! [`ProxyKey`] holds all of it, so the caller can share one generation between equal proxies.

mod filters;
mod inbound;
mod l4;
mod outbound;
mod routes;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::Index;
use crate::index::scope::{self, Scope};
use crate::index::security::Workload;
use crate::index::telemetry::Side;
use crate::model::Proxy;
use crate::xds::ResourceMap;

use super::names;
pub use inbound::{InboundPolicies, InboundPort, local_clusters};
pub use routes::virtual_host_domains;

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
        if proxy
            .metadata
            .interception_mode
            .eq_ignore_ascii_case("NONE")
        {
            Interception::None
        } else {
            Interception::Redirect
        }
    }
}

/// Everything of a proxy that sidecar generation reads: equal keys get equal config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    namespace: String,
    /// The Sidecar that applies (`namespace/name`): all that its workload selectors read of
    /// the labels.
    sidecar: Option<String>,
    /// Only the labels some mesh VirtualService's `sourceLabels` name: proxies that differ in
    /// others (every Deployment's `app`, `pod-template-hash`…) share one generation.
    labels: BTreeMap<String, String>,
    dns_domain: String,
    interception: Interception,
    /// What the proxy's IPs serve, rather than the IPs: replicas of a workload share one key.
    pub inbound: Vec<InboundPort>,
    /// Sent its certificate (authenticated on the TLS port): it can take part in mTLS.
    pub secure: bool,
    /// The security policies that select it, by name: all its inbound side reads of them.
    pub policies: InboundPolicies,
    /// The Telemetry that selects it by label (`namespace/name`); the root namespace's and its
    /// namespace's follow from `namespace`.
    telemetry: Option<String>,
}

impl ProxyKey {
    pub fn of(index: &Index, proxy: &Proxy) -> ProxyKey {
        let interception = Interception::of(proxy);
        let applies = scope::sidecar_for(index, &proxy.namespace, &proxy.labels);
        let sidecar = applies.map(|s| s.spec());
        let inbound = match interception {
            Interception::Redirect => inbound::ports(index, proxy, sidecar),
            // Without capture only a Sidecar's ingress listeners receive anything.
            Interception::None if sidecar.is_some_and(|s| !s.ingress.is_empty()) => {
                inbound::ports(index, proxy, sidecar)
            }
            Interception::None => Vec::new(),
        };
        let labels = if index.source_label_keys.is_empty() {
            BTreeMap::new()
        } else {
            proxy
                .labels
                .iter()
                .filter(|(k, _)| index.source_label_keys.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let policies = InboundPolicies::of(index, proxy, &inbound);
        let telemetry = crate::index::telemetry::applying(
            index.snapshot(),
            &index.mesh.root_namespace,
            Workload {
                namespace: &proxy.namespace,
                labels: &proxy.labels,
            },
        )
        .workload_key();
        ProxyKey {
            telemetry,
            secure: proxy.identity.is_some(),
            policies,
            namespace: proxy.namespace.clone(),
            sidecar: applies.map(|s| s.ns_name()),
            labels,
            dns_domain: proxy.dns_domain.clone(),
            interception,
            inbound,
        }
    }
}

/// A sidecar's listeners and route configs. Its clusters are the shared outbound ones plus
/// [`local_clusters`].
#[derive(Debug, Default)]
pub struct SidecarConfig {
    pub listeners: ResourceMap,
    pub routes: ResourceMap,
}

/// Listeners and route configs for the proxy `key` describes (`proxy` is one such proxy).
pub fn build(index: &Index, proxy: &Proxy, key: &ProxyKey, scope: &Scope) -> SidecarConfig {
    let mut out = SidecarConfig::default();
    outbound::build(index, proxy, scope, &mut out);
    let mut inbound_names = vec![names::VIRTUAL_INBOUND.to_string()];
    match key.interception {
        Interception::Redirect => {
            let listener = inbound::virtual_inbound(index, &key.inbound, &key.policies, key.secure);
            out.listeners
                .insert(names::VIRTUAL_INBOUND.into(), Arc::new(listener));
        }
        Interception::None => {
            for l in inbound::bound_listeners(index, &key.inbound, &key.policies, key.secure) {
                if out.listeners.contains_key(&l.name) {
                    tracing::warn!(listener = %l.name, "Sidecar ingress listener has the address of an outbound one; skipped");
                    continue;
                }
                inbound_names.push(l.name.clone());
                out.listeners.insert(l.name.clone(), Arc::new(l));
            }
        }
    }
    let workload = Workload {
        namespace: &proxy.namespace,
        labels: &proxy.labels,
    };
    let plan = super::telemetry::plan(index, workload, &|host| scope.sees(host));
    super::telemetry::decorate(&mut out.listeners, &plan, |name| {
        if inbound_names.iter().any(|n| n == name) {
            Side::Server
        } else {
            Side::Client
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(app: &str) -> Proxy {
        Proxy::from_id("sidecar~10.0.0.5~a-1.foo~foo.svc.cluster.local")
            .unwrap()
            .with_labels([("app".to_string(), app.to_string())].into_iter().collect())
    }

    fn index(yaml: &str) -> Index {
        Index::from_yaml(yaml)
    }

    #[test]
    fn a_telemetry_selecting_a_workload_separates_its_key() {
        let plain = index("");
        assert_eq!(
            ProxyKey::of(&plain, &proxy("a")),
            ProxyKey::of(&plain, &proxy("b")),
            "labels nothing reads share a key"
        );
        let selected = index(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: foo}\nspec:\n  selector: {matchLabels: {app: a}}\n  accessLogging: [{providers: [{name: envoy}]}]\n",
        );
        let a = ProxyKey::of(&selected, &proxy("a"));
        assert_eq!(a.telemetry.as_deref(), Some("foo/t"));
        assert_ne!(a, ProxyKey::of(&selected, &proxy("b")));
    }
}
