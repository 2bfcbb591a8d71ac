//! Which Istio objects went into one generated resource: what a NACK of it is traced to.
//!
//! Worked out only when a proxy rejects a response (rare), from the index the rejected config
//! came from, by decoding istiod's resource names (`names.rs`) and asking the index the same
//! questions generation asks. Generation itself records nothing and costs nothing more.

use std::cell::OnceCell;
use std::collections::BTreeSet;

use super::credentials::CredentialRef;
use super::names;
use crate::config::istio::Gateway;
use crate::config::istio::gateway::Server;
use crate::config::{Kind, ObjectKey};
use crate::index::scope::{Scope, sidecar_for};
use crate::index::security::{self, Workload};
use crate::index::{Index, Typed};
use crate::model::{NodeType, Protocol, Proxy};
use crate::xds::TypeUrl;

/// The objects behind the resources `names` of type `type_url` sent to `proxy`, each once,
/// sorted; none for names that decode to none (built-in clusters, unknown types). A sidecar's
/// scope is worked out once for all the names.
pub fn sources(index: &Index, proxy: &Proxy, type_url: &str, names: &[String]) -> Vec<ObjectKey> {
    let mut out = BTreeSet::new();
    let scope = OnceCell::new();
    let scope = || scope.get_or_init(|| Scope::of(index, &proxy.namespace, &proxy.labels));
    for name in names {
        match TypeUrl::from_url(type_url) {
            Some(TypeUrl::Cluster | TypeUrl::ClusterLoadAssignment) => {
                cluster(index, proxy, name, &mut out)
            }
            Some(TypeUrl::RouteConfiguration) => match proxy.node_type {
                NodeType::Router => gateway_routes(index, proxy, name, &mut out),
                NodeType::Sidecar => sidecar_routes(scope(), name, &mut out),
            },
            Some(TypeUrl::Listener) => match proxy.node_type {
                NodeType::Router => gateway_listener(index, proxy, name, &mut out),
                NodeType::Sidecar => sidecar_listener(index, proxy, scope, name, &mut out),
            },
            Some(TypeUrl::Secret) => secret(index, proxy, name, &mut out),
            None => {}
        }
    }
    out.into_iter().collect()
}

fn key_of<T>(typed: &Typed<T>) -> ObjectKey {
    typed.entry.object.key()
}

/// `outbound|port|subset|host`: the service of the host, and the DestinationRule that applies
/// to it for this proxy (a gateway's shared lookup, or a sidecar's from its namespace).
fn cluster(index: &Index, proxy: &Proxy, name: &str, out: &mut BTreeSet<ObjectKey>) {
    let Some(host) = names::outbound_cluster_host(name) else {
        return;
    };
    if let Some(service) = index.service(host) {
        out.insert(service.origin.clone());
    }
    let rule = match proxy.node_type {
        NodeType::Router => index.destination_rule(host),
        NodeType::Sidecar => index.destination_rule_for(&proxy.namespace, host),
    };
    out.extend(rule.map(key_of));
}

/// The proxy's Gateways, each with its servers on `port`.
fn gateway_servers<'a>(
    index: &'a Index,
    proxy: &Proxy,
    port: u32,
) -> Vec<(&'a Typed<Gateway>, Vec<&'a Server>)> {
    super::gateway::select(index, proxy)
        .into_iter()
        .map(|gw| {
            let servers = gw
                .spec()
                .servers
                .iter()
                .filter(|s| s.port.number == port)
                .collect::<Vec<_>>();
            (gw, servers)
        })
        .filter(|(_, servers)| !servers.is_empty())
        .collect()
}

/// The VirtualServices bound to `gw` that serve a host of `server` (as `gateway.rs` binds
/// them: the server host's namespace part, then host intersection) and have routes `has`.
fn bound_virtual_services(
    index: &Index,
    gw: &Typed<Gateway>,
    server: &Server,
    has: impl Fn(&crate::config::istio::VirtualService) -> bool,
    out: &mut BTreeSet<ObjectKey>,
) {
    let bound = index
        .virtual_services_by_gateway
        .get(&gw.ns_name())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for vs in bound.iter().filter(|vs| has(vs.spec())) {
        let serves = vs.spec().hosts.iter().any(|vs_host| {
            let vs_host = index.mesh.fqdn(vs_host, vs.namespace());
            server.hosts.iter().any(|server_host| {
                super::gateway::server_admits(server_host, gw.namespace(), vs.namespace(), &vs_host)
                    .is_some()
            })
        });
        if serves {
            out.insert(key_of(vs));
        }
    }
}

/// `http.<port>` (the plain-text HTTP servers of the port) or `https.<port>.<portName>.<gw>.<ns>`
/// (one terminating HTTPS server): the Gateways and the VirtualServices routed there.
fn gateway_routes(index: &Index, proxy: &Proxy, name: &str, out: &mut BTreeSet<ObjectKey>) {
    let port = name
        .strip_prefix("http.")
        .or_else(|| name.strip_prefix("https."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|p| p.parse::<u32>().ok());
    let Some(port) = port else {
        return;
    };
    let plain = name.starts_with("http.");
    for (gw, servers) in gateway_servers(index, proxy, port) {
        for server in servers {
            let http = Protocol::parse(&server.port.protocol).is_http();
            // The same spelling as `gateway.rs` gives a terminating HTTPS server's routes.
            let https_name = format!(
                "https.{port}.{}.{}.{}",
                server.port.name,
                gw.name(),
                gw.namespace()
            );
            if (plain && http) || (!plain && https_name == name) {
                out.insert(key_of(gw));
                bound_virtual_services(index, gw, server, |vs| !vs.http.is_empty(), out);
            }
        }
    }
}

/// `<bind>_<port>`: the Gateways with servers on the port, and the VirtualServices whose
/// `tcp` or `tls` routes its chains carry (HTTP routes are in the route configs).
fn gateway_listener(index: &Index, proxy: &Proxy, name: &str, out: &mut BTreeSet<ObjectKey>) {
    let Some(port) = listener_port(name) else {
        return;
    };
    for (gw, servers) in gateway_servers(index, proxy, u32::from(port)) {
        out.insert(key_of(gw));
        for server in servers {
            if !Protocol::parse(&server.port.protocol).is_http() {
                let l4 = |vs: &crate::config::istio::VirtualService| {
                    !vs.tcp.is_empty() || !vs.tls.is_empty()
                };
                bound_virtual_services(index, gw, server, l4, out);
            }
        }
    }
}

/// `kubernetes://<name>` (or its `-cacert`): the Secret and the Gateways whose servers name it.
fn secret(index: &Index, proxy: &Proxy, name: &str, out: &mut BTreeSet<ObjectKey>) {
    for gw in super::gateway::select(index, proxy) {
        for tls in gw.spec().servers.iter().filter_map(|s| s.tls.as_ref()) {
            let credentials = std::iter::once(&tls.credential_name)
                .chain(&tls.credential_names)
                .filter(|c| !c.is_empty());
            for credential in credentials {
                let Ok(r) = CredentialRef::parse(credential, &proxy.namespace) else {
                    continue;
                };
                if r.sds_name == name || r.ca_sds_name() == name {
                    out.insert(key_of(gw));
                    out.insert(ObjectKey {
                        kind: Kind::Secret,
                        namespace: r.namespace,
                        name: r.name,
                    });
                }
            }
        }
    }
}

/// A sidecar route config `"<port>"`: the mesh VirtualService that routes each service of the
/// proxy's scope on that port (the first that applies, as `sidecar::routes` picks it).
fn sidecar_routes(scope: &Scope, name: &str, out: &mut BTreeSet<ObjectKey>) {
    let Ok(port) = name.parse::<u16>() else {
        return;
    };
    for service in scope.services.iter().filter(|s| s.port(port).is_some()) {
        let routing = scope
            .virtual_services
            .iter()
            .find(|vs| vs.applies_to(&service.hostname));
        out.extend(routing.map(|vs| vs.entry.object.key()));
    }
}

/// `virtualInbound`: the Sidecar and the security policies that apply to the workload;
/// `virtualOutbound`: the Sidecar; `<address>_<port>`: the Sidecar and the mesh
/// VirtualServices whose `tcp`/`tls` routes the per-service chains carry.
fn sidecar_listener<'s>(
    index: &Index,
    proxy: &Proxy,
    scope: impl FnOnce() -> &'s Scope,
    name: &str,
    out: &mut BTreeSet<ObjectKey>,
) {
    out.extend(sidecar_for(index, &proxy.namespace, &proxy.labels).map(key_of));
    if name == names::VIRTUAL_INBOUND {
        let snapshot = index.snapshot();
        let root = index.mesh.root_namespace.as_str();
        let workload = Workload {
            namespace: &proxy.namespace,
            labels: &proxy.labels,
        };
        let key = |kind, ns: &str, name: &str| ObjectKey {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        for (_, p) in security::peer_authentications(snapshot, root, workload) {
            out.insert(key(Kind::PeerAuthentication, p.namespace, p.name));
        }
        let authz: Vec<security::Applied<'_, crate::config::istio::AuthorizationPolicy>> =
            security::applying(snapshot, root, workload);
        out.extend(
            authz
                .iter()
                .map(|a| key(Kind::AuthorizationPolicy, a.namespace, a.name)),
        );
        let authn: Vec<security::Applied<'_, crate::config::istio::RequestAuthentication>> =
            security::applying(snapshot, root, workload);
        out.extend(
            authn
                .iter()
                .map(|a| key(Kind::RequestAuthentication, a.namespace, a.name)),
        );
        return;
    }
    let Some(port) = listener_port(name) else {
        return;
    };
    let address = name.rsplit_once('_').map(|(a, _)| a).unwrap_or_default();
    let scope = scope();
    let on_listener = scope.services.iter().filter(|s| {
        s.port(port).is_some() && (address == "0.0.0.0" || s.addresses.iter().any(|a| a == address))
    });
    for service in on_listener {
        let l4 = scope.virtual_services.iter().find(|vs| {
            vs.applies_to(&service.hostname)
                && (!vs.spec().tcp.is_empty() || !vs.spec().tls.is_empty())
        });
        out.extend(l4.map(|vs| vs.entry.object.key()));
    }
}

/// The port of a `<address>_<port>` listener name.
fn listener_port(name: &str) -> Option<u16> {
    name.rsplit_once('_')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn index(yaml: &str) -> Index {
        Index::from_yaml(yaml)
    }

    fn one(index: &Index, proxy: &Proxy, type_url: &str, name: &str) -> Vec<ObjectKey> {
        sources(index, proxy, type_url, &[name.to_string()])
    }

    fn shown(keys: Vec<ObjectKey>) -> Vec<String> {
        keys.iter().map(ToString::to_string).collect()
    }

    const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {ports: [{name: tcp, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-mine, namespace: front}
spec: {host: reviews.shop.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp: [{route: [{destination: {host: db}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-other, namespace: shop}
spec: {selector: {matchLabels: {app: other}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {}
";

    fn sidecar(namespace: &str) -> Proxy {
        Proxy::from_id(&format!(
            "sidecar~10.1.0.5~web-1.{namespace}~{namespace}.svc.cluster.local"
        ))
        .unwrap()
        .with_labels(BTreeMap::from([("app".to_string(), "web".to_string())]))
    }

    #[test]
    fn a_cluster_is_traced_to_its_service_and_the_rule_for_the_proxy() {
        let index = index(MESH);
        let name = "outbound|9080|v1|reviews.shop.svc.cluster.local";
        for (ty, ns, rule) in [
            (TypeUrl::Cluster, "shop", "DestinationRule shop/reviews"),
            (
                TypeUrl::ClusterLoadAssignment,
                "shop",
                "DestinationRule shop/reviews",
            ),
            // A rule in the proxy's own namespace is the one it gets.
            (
                TypeUrl::Cluster,
                "front",
                "DestinationRule front/reviews-mine",
            ),
        ] {
            assert_eq!(
                shown(one(&index, &sidecar(ns), ty.url(), name)),
                [rule, "Service shop/reviews"],
                "{ty:?} from {ns}"
            );
        }
        let built_in = one(
            &index,
            &sidecar("shop"),
            TypeUrl::Cluster.url(),
            "BlackHoleCluster",
        );
        assert!(built_in.is_empty());
    }

    #[test]
    fn several_names_give_each_object_once() {
        let index = index(MESH);
        let names = [
            "outbound|9080||reviews.shop.svc.cluster.local",
            "outbound|9080|v1|reviews.shop.svc.cluster.local",
            "outbound|5432||db.shop.svc.cluster.local",
            "PassthroughCluster",
        ]
        .map(String::from);
        let found = sources(&index, &sidecar("shop"), TypeUrl::Cluster.url(), &names);
        assert_eq!(
            shown(found),
            [
                "DestinationRule shop/reviews",
                "Service shop/db",
                "Service shop/reviews"
            ]
        );
    }

    #[test]
    fn a_sidecar_route_config_is_traced_to_the_virtual_services_routing_its_port() {
        let index = index(MESH);
        let proxy = sidecar("shop");
        let url = TypeUrl::RouteConfiguration.url();
        assert_eq!(
            shown(one(&index, &proxy, url, "9080")),
            ["VirtualService shop/reviews"]
        );
        assert!(
            one(&index, &proxy, url, "8080").is_empty(),
            "no service on 8080"
        );
    }

    #[test]
    fn sidecar_listeners_are_traced_to_sidecar_policies_and_l4_routes() {
        let index = index(MESH);
        let proxy = sidecar("shop");
        let url = TypeUrl::Listener.url();
        assert_eq!(
            shown(one(&index, &proxy, url, "virtualInbound")),
            [
                "Sidecar shop/default",
                "PeerAuthentication istio-system/default",
                "AuthorizationPolicy shop/allow-web",
            ]
        );
        assert_eq!(
            shown(one(&index, &proxy, url, "0.0.0.0_5432")),
            ["VirtualService shop/db", "Sidecar shop/default"]
        );
    }

    const EDGE: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*.example.com']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['web.example.com']
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: apps}
spec:
  hosts: [web.example.com]
  gateways: [edge/gw]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: apps}
spec:
  hosts: [web.other.org]
  gateways: [edge/gw]
  http: [{route: [{destination: {host: web}}]}]
";

    fn router() -> Proxy {
        Proxy::from_id("router~10.0.0.1~ingress-1.edge~edge.svc.cluster.local")
            .unwrap()
            .with_labels(BTreeMap::from([(
                "istio".to_string(),
                "ingress".to_string(),
            )]))
    }

    #[test]
    fn gateway_resources_are_traced_to_gateways_and_bound_virtual_services() {
        let index = index(EDGE);
        let proxy = router();
        let routes = TypeUrl::RouteConfiguration.url();
        let both = ["Gateway edge/gw", "VirtualService apps/web"];
        assert_eq!(shown(one(&index, &proxy, routes, "http.80")), both);
        assert_eq!(
            shown(one(&index, &proxy, routes, "https.443.https.gw.edge")),
            both
        );
        assert!(one(&index, &proxy, routes, "http.8080").is_empty());
        assert_eq!(
            shown(one(&index, &proxy, TypeUrl::Listener.url(), "0.0.0.0_443")),
            ["Gateway edge/gw"]
        );
        assert_eq!(
            shown(one(
                &index,
                &proxy,
                TypeUrl::Secret.url(),
                "kubernetes://web-cert"
            )),
            ["Gateway edge/gw", "Secret edge/web-cert"]
        );
        let elsewhere =
            Proxy::from_id("router~10.0.0.2~other-1.edge~edge.svc.cluster.local").unwrap();
        assert!(
            one(&index, &elsewhere, routes, "http.80").is_empty(),
            "a proxy the Gateway does not select"
        );
    }
}
