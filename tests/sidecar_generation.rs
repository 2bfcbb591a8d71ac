//! Sidecar generation from small YAML, checked with plain values: istiod's listener, route
//! config, virtual host and cluster names, its domains, mesh VirtualServices, the conflict rules
//! between listeners, and a consistent snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier, RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use pilotfish::generate::{consistency, PushContext};
use pilotfish::model::mesh::OutboundTrafficMode;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::source::watch;
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};
use prost::Message;

const PLATFORM: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.0.0.31, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {clusterIP: 10.0.0.32, selector: {app: ratings}, ports: [{name: http, port: 9080, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: other}
spec: {clusterIP: 10.0.0.33, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: mongodb, namespace: default}
spec: {clusterIP: 10.0.0.40, selector: {app: mongodb}, ports: [{name: tcp, port: 27017}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy-db, namespace: default}
spec: {clusterIP: None, selector: {app: legacy}, ports: [{name: tcp, port: 27017}]}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: default}
spec: {clusterIP: None, selector: {app: echo}, ports: [{name: tcp, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: default, labels: {app: ratings, version: v1}}
spec: {containers: [{name: app, image: x}]}
status: {phase: Running, podIP: 10.1.0.7}
"#;

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-gateway-only, namespace: default}
spec:
  hosts: [reviews]
  gateways: [some-gateway]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  gateways: [mesh]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - route: [{destination: {host: ratings, subset: v1}}]
"#;

struct World {
    context: Arc<PushContext>,
}

fn world() -> World {
    world_with("", MeshConfig::default())
}

/// The platform and routing above, plus `extra` YAML, under `mesh`.
fn world_with(extra: &str, mesh: MeshConfig) -> World {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("platform.yaml"), PLATFORM).unwrap();
    std::fs::write(tmp.path().join("routing.yaml"), ROUTING).unwrap();
    std::fs::write(tmp.path().join("extra.yaml"), extra).unwrap();
    let (snapshot, diagnostics) = watch::read_once(tmp.path()).unwrap();
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    World { context: pilotfish::push::build(&snapshot, &mesh, None) }
}

fn proxy(ip: &str, pod: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy::from_id(&format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"))
        .unwrap()
        .with_labels(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>())
}

fn reviews_proxy() -> Proxy {
    proxy("10.1.0.5", "reviews-v1", &[("app", "reviews"), ("version", "v1")])
}

/// Everything a sidecar is sent, as the xDS server gets it.
fn resources(w: &World, p: &Proxy) -> Arc<ProxyResources> {
    w.context.resources_for(p)
}

fn names(r: &ProxyResources, ty: TypeUrl) -> Vec<String> {
    r.get(ty).keys().cloned().collect()
}

fn route_config(r: &ProxyResources, name: &str) -> RouteConfiguration {
    r.get(TypeUrl::RouteConfiguration)[name].decode().unwrap()
}

fn listener(r: &ProxyResources, name: &str) -> Listener {
    r.get(TypeUrl::Listener)[name].decode().unwrap()
}

fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no virtual host {name} in {rc:?}"))
}

fn route_clusters(vh: &VirtualHost) -> Vec<String> {
    vh.routes
        .iter()
        .filter_map(|r| match &r.action {
            Some(Action::Route(a)) => match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn tcp_proxy_clusters(l: &Listener) -> Vec<String> {
    l.filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("TcpProxy") => {
                match TcpProxy::decode(any.value.as_slice()).ok()?.cluster_specifier {
                    Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Some(c),
                    Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                        Some(w.clusters.iter().map(|c| format!("{}*{}", c.name, c.weight)).collect::<Vec<_>>().join(" "))
                    }
                    None => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn listeners_and_route_configs_have_istiods_names() {
    let r = resources(&world(), &reviews_proxy());
    assert_eq!(
        names(&r, TypeUrl::Listener),
        vec!["0.0.0.0_27017", "0.0.0.0_9080", "10.0.0.40_27017", "virtualInbound", "virtualOutbound"]
    );
    assert_eq!(names(&r, TypeUrl::RouteConfiguration), vec!["9080"]);
    // tcp-echo (TCP, no VIP) loses 0.0.0.0_9080 to the HTTP services; legacy-db has it on 27017.
    assert_eq!(tcp_proxy_clusters(&listener(&r, "0.0.0.0_27017")), vec!["outbound|27017||legacy-db.default.svc.cluster.local"]);
    assert_eq!(tcp_proxy_clusters(&listener(&r, "10.0.0.40_27017")), vec!["outbound|27017||mongodb.default.svc.cluster.local"]);
    let vhosts: Vec<String> = route_config(&r, "9080").virtual_hosts.iter().map(|v| v.name.clone()).collect();
    assert_eq!(
        vhosts,
        vec![
            "ratings.default.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local:9080",
            "reviews.other.svc.cluster.local:9080",
            "allow_any",
        ]
    );
}

#[test]
fn domains_are_istiods_for_same_and_other_namespace() {
    let r = resources(&world(), &reviews_proxy());
    let rc = route_config(&r, "9080");
    assert_eq!(
        vhost(&rc, "reviews.default.svc.cluster.local:9080").domains,
        [
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local:9080",
            "reviews",
            "reviews:9080",
            "reviews.default.svc",
            "reviews.default.svc:9080",
            "reviews.default",
            "reviews.default:9080",
            "10.0.0.31",
            "10.0.0.31:9080",
        ]
    );
    assert_eq!(
        vhost(&rc, "reviews.other.svc.cluster.local:9080").domains,
        [
            "reviews.other.svc.cluster.local",
            "reviews.other.svc.cluster.local:9080",
            "reviews.other",
            "reviews.other:9080",
            "reviews.other.svc",
            "reviews.other.svc:9080",
            "10.0.0.33",
            "10.0.0.33:9080",
        ]
    );
    let allow_any = vhost(&rc, "allow_any");
    assert_eq!(allow_any.domains, ["*"]);
    assert_eq!(route_clusters(allow_any), ["PassthroughCluster"]);
}

#[test]
fn mesh_virtual_services_route_and_others_get_the_default_route() {
    let w = world();
    let rc = route_config(&resources(&w, &reviews_proxy()), "9080");
    // The gateway-only VirtualService for reviews (first by name) does not apply to sidecars.
    let reviews = vhost(&rc, "reviews.default.svc.cluster.local:9080");
    assert_eq!(
        route_clusters(reviews),
        ["outbound|9080|v2|reviews.default.svc.cluster.local", "outbound|9080|v1|reviews.default.svc.cluster.local"]
    );
    assert_eq!(reviews.routes[0].r#match.as_ref().unwrap().headers[0].name, "end-user");
    // sourceLabels: the productpage-only route is not in the reviews proxy's config.
    assert_eq!(route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")), ["outbound|9080|v1|ratings.default.svc.cluster.local"]);
    let productpage = proxy("10.1.0.9", "productpage-v1", &[("app", "productpage")]);
    let rc = route_config(&resources(&w, &productpage), "9080");
    assert_eq!(
        route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")),
        ["outbound|9080|v2|ratings.default.svc.cluster.local", "outbound|9080|v1|ratings.default.svc.cluster.local"]
    );
    // No VirtualService: istiod's default route, named `default`, no timeout.
    let other = vhost(&rc, "reviews.other.svc.cluster.local:9080");
    assert_eq!(other.routes[0].name, "default");
    let Some(Action::Route(action)) = &other.routes[0].action else { panic!("{other:?}") };
    assert_eq!(action.cluster_specifier, Some(ClusterSpecifier::Cluster("outbound|9080||reviews.other.svc.cluster.local".into())));
    assert_eq!(action.timeout.map(|t| (t.seconds, t.nanos)), Some((0, 0)));
}

#[test]
fn virtual_inbound_has_a_chain_per_workload_port_to_a_local_cluster() {
    let ratings = proxy("10.1.0.7", "ratings-v1", &[("app", "ratings"), ("version", "v1")]);
    let r = resources(&world(), &ratings);
    let inbound = listener(&r, "virtualInbound");
    let chains: Vec<&str> = inbound.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(chains, ["virtualInbound-blackhole", "0.0.0.0_8080", "virtualInbound"]);
    assert_eq!(inbound.listener_filters[0].name, "envoy.filters.listener.original_dst");
    assert_eq!(tcp_proxy_clusters(&inbound), ["BlackHoleCluster", "InboundPassthroughCluster"]);
    // The target port names the cluster, which connects to the original destination (the pod's
    // IP and that port) from 127.0.0.6, as istiod's does under REDIRECT.
    let local: Cluster = r.get(TypeUrl::Cluster)["inbound|8080||"].decode().unwrap();
    assert_eq!(local.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)));
    let bind = local.upstream_bind_config.and_then(|b| b.source_address).map(|a| a.address);
    assert_eq!(bind.as_deref(), Some("127.0.0.6"));
    for name in ["PassthroughCluster", "InboundPassthroughCluster"] {
        let c: Cluster = r.get(TypeUrl::Cluster)[name].decode().unwrap();
        assert_eq!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)), "{name}");
    }
    // A proxy that backs no service has only the passthrough chains.
    let stranger = resources(&world(), &proxy("10.9.9.9", "x", &[]));
    assert_eq!(listener(&stranger, "virtualInbound").filter_chains.len(), 2);
    assert!(!names(&stranger, TypeUrl::Cluster).iter().any(|n| n.starts_with("inbound|")));
    // Without capture there is nothing to receive: no virtual listeners at all.
    let mut none = ratings.clone();
    none.metadata.interception_mode = "NONE".into();
    let listeners = names(&resources(&world(), &none), TypeUrl::Listener);
    assert!(!listeners.iter().any(|n| n.starts_with("virtual")), "{listeners:?}");
}

#[test]
fn virtual_outbound_uses_the_original_destination() {
    let outbound = listener(&resources(&world(), &reviews_proxy()), "virtualOutbound");
    assert_eq!(outbound.use_original_dst.map(|b| b.value), Some(true));
    assert_eq!(tcp_proxy_clusters(&outbound), ["BlackHoleCluster", "PassthroughCluster"]);
}

#[test]
fn per_service_listeners_are_bound_only_without_capture() {
    let w = world();
    let bound = |p: &Proxy, name: &str| listener(&resources(&w, p), name).bind_to_port.map(|b| b.value);
    let redirect = reviews_proxy();
    assert_eq!(bound(&redirect, "0.0.0.0_9080"), Some(false));
    let mut none = reviews_proxy();
    none.metadata.interception_mode = "NONE".into();
    assert_eq!(bound(&none, "0.0.0.0_9080"), Some(true));
    assert_eq!(bound(&none, "10.0.0.40_27017"), Some(false), "a VIP is never bound");
}

#[test]
fn the_snapshot_is_consistent_and_every_cluster_referenced_is_served() {
    let w = world();
    for p in [reviews_proxy(), proxy("10.1.0.7", "ratings-v1", &[("app", "ratings")])] {
        let r = resources(&w, &p);
        assert_eq!(consistency::check(&r), Vec::<String>::new());
        let served: BTreeSet<String> = names(&r, TypeUrl::Cluster).into_iter().collect();
        let mut referenced: Vec<String> = Vec::new();
        for name in names(&r, TypeUrl::Listener) {
            let l = listener(&r, &name);
            referenced.extend(tcp_proxy_clusters(&l));
            for f in l.filter_chains.iter().flat_map(|c| &c.filters) {
                assert!(!f.name.starts_with("istio."), "{name} sends {}", f.name);
            }
        }
        for vh in route_config(&r, "9080").virtual_hosts {
            referenced.extend(route_clusters(&vh));
        }
        for c in referenced {
            assert!(served.contains(&c), "{c} is referenced but not served");
        }
    }
}

#[test]
fn push_context_serves_sidecars_a_consistent_config() {
    let context = world().context;
    let p = reviews_proxy();
    let r = context.resources_for(&p);
    assert_eq!(consistency::check(&r), Vec::<String>::new());
    assert!(names(&r, TypeUrl::Listener).contains(&"0.0.0.0_9080".to_string()));
    assert_eq!(names(&r, TypeUrl::RouteConfiguration), ["9080"]);
    // Equal proxies share one generation; a replica (another IP) gets the same outbound side.
    assert!(Arc::ptr_eq(&r, &context.resources_for(&reviews_proxy())));
    let replica = proxy("10.1.0.8", "reviews-v1-x", &[("app", "reviews"), ("version", "v1")]);
    let hash = |r: &ProxyResources| r.get(TypeUrl::RouteConfiguration)["9080"].hash;
    assert_eq!(hash(&r), hash(&context.resources_for(&replica)));
}

#[test]
fn export_to_hides_services_and_virtual_services_from_other_namespaces() {
    let private = r#"
apiVersion: v1
kind: Service
metadata: {name: secret, namespace: other, annotations: {networking.istio.io/exportTo: "."}}
spec: {clusterIP: 10.0.0.50, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other-ratings, namespace: other}
spec:
  hosts: [ratings.default.svc.cluster.local]
  exportTo: [other]
  http: [{route: [{destination: {host: reviews.other.svc.cluster.local}}]}]
"#;
    let w = world_with(private, MeshConfig::default());
    let r = resources(&w, &reviews_proxy());
    let secret = "outbound|9080||secret.other.svc.cluster.local";
    assert!(!r.get(TypeUrl::Cluster).contains_key(secret));
    let rc = route_config(&r, "9080");
    assert!(!rc.virtual_hosts.iter().any(|v| v.name.starts_with("secret.")));
    assert_eq!(route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")), ["outbound|9080|v1|ratings.default.svc.cluster.local"]);
    assert_eq!(consistency::check(&r), Vec::<String>::new());
    // The namespace it is exported to sees both, and there the VirtualService private to it
    // comes before the public `default/ratings`, as in istiod.
    let there = Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap();
    let r = resources(&w, &there);
    assert!(r.get(TypeUrl::Cluster).contains_key(secret));
    let rc = route_config(&r, "9080");
    assert!(rc.virtual_hosts.iter().any(|v| v.name == "secret.other.svc.cluster.local:9080"));
    assert_eq!(route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")), ["outbound|9080||reviews.other.svc.cluster.local"]);
}

#[test]
fn registry_only_blocks_unknown_hosts() {
    let mesh = MeshConfig { outbound_traffic_policy: OutboundTrafficMode::RegistryOnly, ..MeshConfig::default() };
    let r = resources(&world_with("", mesh), &reviews_proxy());
    let rc = route_config(&r, "9080");
    assert!(!rc.virtual_hosts.iter().any(|v| v.name == "allow_any"));
    let block = vhost(&rc, "block_all");
    assert_eq!(block.domains, ["*"]);
    let Some(Action::DirectResponse(d)) = &block.routes[0].action else { panic!("{block:?}") };
    assert_eq!(d.status, 502);
    assert_eq!(tcp_proxy_clusters(&listener(&r, "virtualOutbound")), ["BlackHoleCluster", "BlackHoleCluster"]);
}

const SCOPED: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings-only, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ["./ratings.default.svc.cluster.local"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
"#;

fn cluster_hosts(r: &ProxyResources) -> BTreeSet<String> {
    names(r, TypeUrl::Cluster)
        .iter()
        .filter_map(|n| n.strip_prefix("outbound|").and_then(|n| n.rsplit('|').next()).map(str::to_string))
        .collect()
}

#[test]
fn a_sidecar_resource_limits_what_a_proxy_sees() {
    let w = world_with(SCOPED, MeshConfig::default());
    // The namespace-wide Sidecar of `default`: only `default`'s services.
    let r = resources(&w, &reviews_proxy());
    let expected = ["legacy-db", "mongodb", "ratings", "reviews", "tcp-echo"].map(|s| format!("{s}.default.svc.cluster.local"));
    assert_eq!(cluster_hosts(&r), expected.into_iter().collect());
    let rc = route_config(&r, "9080");
    assert!(!rc.virtual_hosts.iter().any(|v| v.name.contains(".other.")), "{:?}", rc.virtual_hosts);
    assert!(rc.virtual_hosts.iter().any(|v| v.name == "allow_any"));
    assert_eq!(consistency::check(&r), Vec::<String>::new());

    // A workload selector wins over the namespace-wide Sidecar, with its own policy.
    let ratings = proxy("10.1.0.7", "ratings-v1", &[("app", "ratings"), ("version", "v1")]);
    let r = resources(&w, &ratings);
    assert_eq!(cluster_hosts(&r), BTreeSet::from(["ratings.default.svc.cluster.local".to_string()]));
    assert!(route_config(&r, "9080").virtual_hosts.iter().any(|v| v.name == "block_all"));
    assert!(r.get(TypeUrl::Cluster).contains_key("inbound|8080||"), "the inbound side is not scoped");

    // The root namespace's Sidecar is the default elsewhere, `.` being the proxy's namespace.
    let other = Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap();
    assert_eq!(cluster_hosts(&resources(&w, &other)), BTreeSet::from(["reviews.other.svc.cluster.local".to_string()]));
}

#[test]
fn a_scoped_proxy_imports_what_its_virtual_services_route_to() {
    let extra = format!(
        "{SCOPED}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongodb-elsewhere, namespace: default}
spec:
  hosts: [mongodb]
  tcp: [{route: [{destination: {host: reviews.other.svc.cluster.local}}]}]
"#
    );
    let r = resources(&world_with(&extra, MeshConfig::default()), &reviews_proxy());
    assert!(cluster_hosts(&r).contains("reviews.other.svc.cluster.local"));
}

#[test]
fn the_istio_config_map_sets_the_outbound_traffic_policy() {
    let config_map = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
"#;
    let r = resources(&world_with(config_map, MeshConfig::default()), &reviews_proxy());
    assert!(route_config(&r, "9080").virtual_hosts.iter().any(|v| v.name == "block_all"));
}

#[test]
fn tcp_and_tls_routes_of_mesh_virtual_services() {
    let extra = r#"
apiVersion: v1
kind: Service
metadata: {name: edge, namespace: default}
spec: {clusterIP: 10.0.0.60, ports: [{name: tls, port: 443}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongodb, namespace: default}
spec:
  hosts: [mongodb]
  tcp:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews}}]
  - match: [{destinationSubnets: [10.0.0.40/32]}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - route:
    - {destination: {host: mongodb}, weight: 80}
    - {destination: {host: legacy-db}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [edge.default.svc.cluster.local, "*.example.com"]
  tls:
  - match: [{sniHosts: [a.example.com, edge.default.svc.cluster.local]}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
  - match: [{sniHosts: [edge.default.svc.cluster.local, a.example.com]}]
    route: [{destination: {host: ratings}}]
"#;
    let w = world_with(extra, MeshConfig::default());
    let r = resources(&w, &reviews_proxy());
    let mongo = listener(&r, "10.0.0.40_27017");
    // The subnet chain, then the weighted default.
    assert_eq!(
        tcp_proxy_clusters(&mongo),
        [
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|27017||mongodb.default.svc.cluster.local*80 outbound|27017||legacy-db.default.svc.cluster.local*20"
        ]
    );
    assert_eq!(mongo.filter_chains[0].filter_chain_match.as_ref().unwrap().prefix_ranges[0].address_prefix, "10.0.0.40");
    // sourceLabels: productpage's default chain is the first route.
    let productpage = proxy("10.1.0.9", "productpage-v1", &[("app", "productpage")]);
    assert_eq!(tcp_proxy_clusters(&listener(&resources(&w, &productpage), "10.0.0.40_27017")).last().unwrap(), "outbound|9080||reviews.default.svc.cluster.local");

    // TLS: a chain per SNI set (the equal second one dropped, as Envoy would reject it), the
    // service's own cluster as default, and the TLS inspector to read the SNI.
    let edge = listener(&r, "10.0.0.60_443");
    assert_eq!(tcp_proxy_clusters(&edge), ["outbound|9080||reviews.default.svc.cluster.local", "outbound|443||edge.default.svc.cluster.local"]);
    assert_eq!(edge.filter_chains[0].filter_chain_match.as_ref().unwrap().server_names, ["a.example.com", "edge.default.svc.cluster.local"]);
    assert_eq!(edge.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    assert_eq!(consistency::check(&r), Vec::<String>::new());
}

#[test]
fn sidecar_ingress_listeners_define_the_inbound_side() {
    let ingress = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9443, protocol: TCP, name: tcp}
    defaultEndpoint: 0.0.0.0:9443
"#;
    let w = world_with(ingress, MeshConfig::default());
    let ratings = proxy("10.1.0.7", "ratings-v1", &[("app", "ratings"), ("version", "v1")]);
    let r = resources(&w, &ratings);
    // The ingress ports replace the service's 8080, each to its default endpoint.
    let chains: Vec<String> = listener(&r, "virtualInbound").filter_chains.iter().map(|c| c.name.clone()).collect();
    assert_eq!(chains, ["virtualInbound-blackhole", "0.0.0.0_9080", "0.0.0.0_9443", "virtualInbound"]);
    let endpoint = |name: &str| {
        let c: Cluster = r.get(TypeUrl::Cluster)[name].decode().unwrap();
        assert_eq!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)));
        let ep = &c.load_assignment.unwrap().endpoints[0].lb_endpoints[0];
        format!("{ep:?}")
    };
    assert!(endpoint("inbound|9080||").contains("\"127.0.0.1\"") && endpoint("inbound|9080||").contains("PortValue(8080)"));
    assert!(endpoint("inbound|9443||").contains("\"10.1.0.7\""), "0.0.0.0 is the pod's own address");
    assert!(!r.get(TypeUrl::Cluster).contains_key("inbound|8080||"));

    // Without capture they are listeners of their own, bound to the pod's IP.
    let mut none = ratings.clone();
    none.metadata.interception_mode = "NONE".into();
    let r = resources(&w, &none);
    let bound = listener(&r, "10.1.0.7_9080");
    assert_eq!(bound.bind_to_port, None, "bound (Envoy's default)");
    assert!(!names(&r, TypeUrl::Listener).contains(&"virtualInbound".to_string()));
    assert_eq!(consistency::check(&r), Vec::<String>::new());
}

#[test]
fn destination_rules_apply_by_the_proxy_namespace_and_export_to() {
    // `other` has its own rule for default's ratings (a v3 subset, round robin); default's own
    // rule is private to default.
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-from-other, namespace: other}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-private, namespace: default}
spec:
  host: mongodb
  exportTo: ["."]
  subsets: [{name: primary, labels: {role: primary}}]
"#;
    let w = world_with(extra, MeshConfig::default());
    let mine = resources(&w, &reviews_proxy());
    let other = resources(&w, &Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap());
    let ratings = |r: &ProxyResources| {
        let mut v: Vec<String> = names(r, TypeUrl::Cluster).into_iter().filter(|n| n.ends_with("|ratings.default.svc.cluster.local")).collect();
        v.sort();
        v
    };
    assert_eq!(ratings(&mine), ["outbound|9080|v1|ratings.default.svc.cluster.local", "outbound|9080|v2|ratings.default.svc.cluster.local", "outbound|9080||ratings.default.svc.cluster.local"]);
    assert_eq!(ratings(&other), ["outbound|9080|v3|ratings.default.svc.cluster.local", "outbound|9080||ratings.default.svc.cluster.local"]);
    let lb = |r: &ProxyResources| r.get(TypeUrl::Cluster)["outbound|9080||ratings.default.svc.cluster.local"].decode::<Cluster>().unwrap().lb_policy;
    assert_ne!(lb(&mine), lb(&other));
    // The private rule's subset exists for default's proxies only.
    assert!(mine.get(TypeUrl::Cluster).contains_key("outbound|27017|primary|mongodb.default.svc.cluster.local"));
    assert!(!other.get(TypeUrl::Cluster).contains_key("outbound|27017|primary|mongodb.default.svc.cluster.local"));
    // Each gets the endpoints of its own subsets, consistently.
    assert!(other.get(TypeUrl::ClusterLoadAssignment).contains_key("outbound|9080|v3|ratings.default.svc.cluster.local"));
    assert_eq!(consistency::check(&other), Vec::<String>::new());
    assert_eq!(consistency::check(&mine), Vec::<String>::new());
}

#[test]
fn sidecar_egress_listeners_with_a_port_are_their_own() {
    let egress = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: [./ratings.default.svc.cluster.local]
  - port: {number: 27017, protocol: TCP, name: tcp}
    bind: 127.0.0.2
    hosts: [./mongodb.default.svc.cluster.local]
  - hosts: ["./*"]
"#;
    let w = world_with(egress, MeshConfig::default());
    let mut p = reviews_proxy();
    p.metadata.interception_mode = "NONE".into();
    let r = resources(&w, &p);
    let listeners = names(&r, TypeUrl::Listener);
    // Without capture the HTTP one binds 127.0.0.1 and routes only ratings; it replaces the
    // catch-all's 0.0.0.0_9080, which could not bind beside it.
    assert!(listeners.contains(&"127.0.0.1_9080".to_string()) && !listeners.contains(&"0.0.0.0_9080".to_string()), "{listeners:?}");
    assert_eq!(listener(&r, "127.0.0.1_9080").bind_to_port.map(|b| b.value), Some(true));
    let rc = route_config(&r, "127.0.0.1_9080");
    let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(hosts, ["ratings.default.svc.cluster.local:9080", "allow_any"]);
    assert_eq!(names(&r, TypeUrl::RouteConfiguration), ["127.0.0.1_9080"]);
    assert_eq!(tcp_proxy_clusters(&listener(&r, "127.0.0.2_27017")), ["outbound|27017||mongodb.default.svc.cluster.local"]);
    assert_eq!(consistency::check(&r), Vec::<String>::new());

    // Captured, the HTTP one is 0.0.0.0_9080 again, unbound, with route config "9080".
    let r = resources(&w, &reviews_proxy());
    assert_eq!(listener(&r, "0.0.0.0_9080").bind_to_port.map(|b| b.value), Some(false));
    let hosts: Vec<String> = route_config(&r, "9080").virtual_hosts.iter().map(|v| v.name.clone()).collect();
    assert_eq!(hosts, ["ratings.default.svc.cluster.local:9080", "allow_any"]);
}

#[test]
fn proxies_share_a_generation_unless_source_labels_tell_them_apart() {
    let context = world().context;
    // The ratings VirtualService matches `sourceLabels: {app: productpage}`: only `app` counts.
    let a = proxy("10.1.0.30", "x-1", &[("app", "reviews"), ("version", "v1"), ("pod-template-hash", "abc")]);
    let b = proxy("10.1.0.31", "y-1", &[("app", "reviews"), ("version", "v9"), ("pod-template-hash", "def")]);
    let c = proxy("10.1.0.32", "z-1", &[("app", "productpage")]);
    let (ra, rb, rc) = (context.resources_for(&a), context.resources_for(&b), context.resources_for(&c));
    assert!(Arc::ptr_eq(&ra, &rb));
    assert!(!Arc::ptr_eq(&ra, &rc));
    assert_ne!(route_config(&ra, "9080"), route_config(&rc, "9080"));
}

#[test]
fn an_endpoint_change_keeps_listeners_and_routes_and_changes_endpoints() {
    let snapshot = |platform: &str| {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("platform.yaml"), platform).unwrap();
        std::fs::write(tmp.path().join("routing.yaml"), ROUTING).unwrap();
        watch::read_once(tmp.path()).unwrap().0
    };
    let mesh = MeshConfig::default();
    let first = pilotfish::push::build(&snapshot(PLATFORM), &mesh, None);
    let p = reviews_proxy();
    let before = first.resources_for(&p);
    let moved = PLATFORM.replace("podIP: 10.1.0.6", "podIP: 10.1.0.16");
    let second = pilotfish::push::build(&snapshot(&moved), &mesh, Some(&first));
    let after = second.resources_for(&p);
    for ty in [TypeUrl::Listener, TypeUrl::RouteConfiguration, TypeUrl::Cluster] {
        assert!(Arc::ptr_eq(before.get(ty), after.get(ty)), "{ty:?} rebuilt");
    }
    assert!(!Arc::ptr_eq(before.get(TypeUrl::ClusterLoadAssignment), after.get(TypeUrl::ClusterLoadAssignment)));
    // A routing change is built anew.
    let third = pilotfish::push::build(&snapshot(&moved.replace("port: 27017}]}", "port: 27018}]}")), &mesh, Some(&second));
    assert!(!Arc::ptr_eq(after.get(TypeUrl::Listener), third.resources_for(&p).get(TypeUrl::Listener)));
}

#[test]
fn a_service_entry_for_address_ranges_takes_only_those_destinations() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-range, namespace: default}
spec:
  hosts: [legacy.internal]
  addresses: [192.168.0.0/16]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: NONE
"#;
    let r = resources(&world_with(extra, MeshConfig::default()), &reviews_proxy());
    let l = listener(&r, "0.0.0.0_5432");
    assert_eq!(tcp_proxy_clusters(&l), ["outbound|5432||legacy.internal", "PassthroughCluster"]);
    let range = &l.filter_chains[0].filter_chain_match.as_ref().unwrap().prefix_ranges[0];
    assert_eq!((range.address_prefix.as_str(), range.prefix_len.map(|p| p.value)), ("192.168.0.0", Some(16)));
    assert_eq!(l.filter_chains[1].filter_chain_match, None);
}
