//! What a sidecar sees and how its config is shared: exportTo, the Sidecar resource (egress,
//! ingress, outbound traffic policy), the mesh ConfigMap, DestinationRule precedence by proxy
//! namespace, the cache key, and revisions that change only endpoints.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use pilotfish::generate::consistency;
use pilotfish::model::mesh::OutboundTrafficMode;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::source::watch;
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};

mod sidecar_world;
use sidecar_world::*;

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
    assert!(
        !rc.virtual_hosts
            .iter()
            .any(|v| v.name.starts_with("secret."))
    );
    assert_eq!(
        route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")),
        ["outbound|9080|v1|ratings.default.svc.cluster.local"]
    );
    assert_eq!(consistency::check(&r), Vec::<String>::new());
    // The namespace it is exported to sees both, and there the VirtualService private to it
    // comes before the public `default/ratings`, as in istiod.
    let there = Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap();
    let r = resources(&w, &there);
    assert!(r.get(TypeUrl::Cluster).contains_key(secret));
    let rc = route_config(&r, "9080");
    assert!(
        rc.virtual_hosts
            .iter()
            .any(|v| v.name == "secret.other.svc.cluster.local:9080")
    );
    assert_eq!(
        route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")),
        ["outbound|9080||reviews.other.svc.cluster.local"]
    );
}

#[test]
fn registry_only_blocks_unknown_hosts() {
    let mesh = MeshConfig {
        outbound_traffic_policy: OutboundTrafficMode::RegistryOnly,
        ..MeshConfig::default()
    };
    let r = resources(&world_with("", mesh), &reviews_proxy());
    let rc = route_config(&r, "9080");
    assert!(!rc.virtual_hosts.iter().any(|v| v.name == "allow_any"));
    let block = vhost(&rc, "block_all");
    assert_eq!(block.domains, ["*"]);
    let Some(Action::DirectResponse(d)) = &block.routes[0].action else {
        panic!("{block:?}")
    };
    assert_eq!(d.status, 502);
    assert_eq!(
        tcp_proxy_clusters(&listener(&r, "virtualOutbound")),
        ["BlackHoleCluster", "BlackHoleCluster"]
    );
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
        .filter_map(|n| {
            n.strip_prefix("outbound|")
                .and_then(|n| n.rsplit('|').next())
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn a_sidecar_resource_limits_what_a_proxy_sees() {
    let w = world_with(SCOPED, MeshConfig::default());
    // The namespace-wide Sidecar of `default`: only `default`'s services.
    let r = resources(&w, &reviews_proxy());
    let expected = ["legacy-db", "mongodb", "ratings", "reviews", "tcp-echo"]
        .map(|s| format!("{s}.default.svc.cluster.local"));
    assert_eq!(cluster_hosts(&r), expected.into_iter().collect());
    let rc = route_config(&r, "9080");
    assert!(
        !rc.virtual_hosts.iter().any(|v| v.name.contains(".other.")),
        "{:?}",
        rc.virtual_hosts
    );
    assert!(rc.virtual_hosts.iter().any(|v| v.name == "allow_any"));
    assert_eq!(consistency::check(&r), Vec::<String>::new());

    // A workload selector wins over the namespace-wide Sidecar, with its own policy.
    let ratings = proxy(
        "10.1.0.7",
        "ratings-v1",
        &[("app", "ratings"), ("version", "v1")],
    );
    let r = resources(&w, &ratings);
    assert_eq!(
        cluster_hosts(&r),
        BTreeSet::from(["ratings.default.svc.cluster.local".to_string()])
    );
    assert!(
        route_config(&r, "9080")
            .virtual_hosts
            .iter()
            .any(|v| v.name == "block_all")
    );
    assert!(
        r.get(TypeUrl::Cluster).contains_key("inbound|8080||"),
        "the inbound side is not scoped"
    );

    // The root namespace's Sidecar is the default elsewhere, `.` being the proxy's namespace.
    let other = Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap();
    assert_eq!(
        cluster_hosts(&resources(&w, &other)),
        BTreeSet::from(["reviews.other.svc.cluster.local".to_string()])
    );
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
    let r = resources(
        &world_with(config_map, MeshConfig::default()),
        &reviews_proxy(),
    );
    assert!(
        route_config(&r, "9080")
            .virtual_hosts
            .iter()
            .any(|v| v.name == "block_all")
    );
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
    let ratings = proxy(
        "10.1.0.7",
        "ratings-v1",
        &[("app", "ratings"), ("version", "v1")],
    );
    let r = resources(&w, &ratings);
    // The ingress ports replace the service's 8080, each to its default endpoint.
    let chains: Vec<String> = listener(&r, "virtualInbound")
        .filter_chains
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        chains,
        [
            "virtualInbound-blackhole",
            "0.0.0.0_9080",
            "0.0.0.0_9443",
            "virtualInbound"
        ]
    );
    let endpoint = |name: &str| {
        let c: Cluster = r.get(TypeUrl::Cluster)[name].decode().unwrap();
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        let ep = &c.load_assignment.unwrap().endpoints[0].lb_endpoints[0];
        format!("{ep:?}")
    };
    assert!(
        endpoint("inbound|9080||").contains("\"127.0.0.1\"")
            && endpoint("inbound|9080||").contains("PortValue(8080)")
    );
    assert!(
        endpoint("inbound|9443||").contains("\"10.1.0.7\""),
        "0.0.0.0 is the pod's own address"
    );
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
    let other = resources(
        &w,
        &Proxy::from_id("sidecar~10.1.0.20~x.other~other.svc.cluster.local").unwrap(),
    );
    let ratings = |r: &ProxyResources| {
        let mut v: Vec<String> = names(r, TypeUrl::Cluster)
            .into_iter()
            .filter(|n| n.ends_with("|ratings.default.svc.cluster.local"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ratings(&mine),
        [
            "outbound|9080|v1|ratings.default.svc.cluster.local",
            "outbound|9080|v2|ratings.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        ratings(&other),
        [
            "outbound|9080|v3|ratings.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local"
        ]
    );
    let lb = |r: &ProxyResources| {
        r.get(TypeUrl::Cluster)["outbound|9080||ratings.default.svc.cluster.local"]
            .decode::<Cluster>()
            .unwrap()
            .lb_policy
    };
    assert_ne!(lb(&mine), lb(&other));
    // The private rule's subset exists for default's proxies only.
    assert!(
        mine.get(TypeUrl::Cluster)
            .contains_key("outbound|27017|primary|mongodb.default.svc.cluster.local")
    );
    assert!(
        !other
            .get(TypeUrl::Cluster)
            .contains_key("outbound|27017|primary|mongodb.default.svc.cluster.local")
    );
    // Each gets the endpoints of its own subsets, consistently.
    assert!(
        other
            .get(TypeUrl::ClusterLoadAssignment)
            .contains_key("outbound|9080|v3|ratings.default.svc.cluster.local")
    );
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
    assert!(
        listeners.contains(&"127.0.0.1_9080".to_string())
            && !listeners.contains(&"0.0.0.0_9080".to_string()),
        "{listeners:?}"
    );
    assert_eq!(
        listener(&r, "127.0.0.1_9080").bind_to_port.map(|b| b.value),
        Some(true)
    );
    let rc = route_config(&r, "127.0.0.1_9080");
    let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        hosts,
        ["ratings.default.svc.cluster.local:9080", "allow_any"]
    );
    assert_eq!(names(&r, TypeUrl::RouteConfiguration), ["127.0.0.1_9080"]);
    assert_eq!(
        tcp_proxy_clusters(&listener(&r, "127.0.0.2_27017")),
        ["outbound|27017||mongodb.default.svc.cluster.local"]
    );
    assert_eq!(consistency::check(&r), Vec::<String>::new());

    // Captured, the HTTP one is 0.0.0.0_9080 again, unbound, with route config "9080".
    let r = resources(&w, &reviews_proxy());
    assert_eq!(
        listener(&r, "0.0.0.0_9080").bind_to_port.map(|b| b.value),
        Some(false)
    );
    let hosts: Vec<String> = route_config(&r, "9080")
        .virtual_hosts
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(
        hosts,
        ["ratings.default.svc.cluster.local:9080", "allow_any"]
    );
}

#[test]
fn proxies_share_a_generation_unless_source_labels_tell_them_apart() {
    let context = world().context;
    // The ratings VirtualService matches `sourceLabels: {app: productpage}`: only `app` counts.
    let a = proxy(
        "10.1.0.30",
        "x-1",
        &[
            ("app", "reviews"),
            ("version", "v1"),
            ("pod-template-hash", "abc"),
        ],
    );
    let b = proxy(
        "10.1.0.31",
        "y-1",
        &[
            ("app", "reviews"),
            ("version", "v9"),
            ("pod-template-hash", "def"),
        ],
    );
    let c = proxy("10.1.0.32", "z-1", &[("app", "productpage")]);
    let (ra, rb, rc) = (
        context.resources_for(&a),
        context.resources_for(&b),
        context.resources_for(&c),
    );
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
    for ty in [
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
        TypeUrl::Cluster,
    ] {
        assert!(Arc::ptr_eq(before.get(ty), after.get(ty)), "{ty:?} rebuilt");
    }
    assert!(!Arc::ptr_eq(
        before.get(TypeUrl::ClusterLoadAssignment),
        after.get(TypeUrl::ClusterLoadAssignment)
    ));
    // A routing change is built anew.
    let third = pilotfish::push::build(
        &snapshot(&moved.replace("port: 27017}]}", "port: 27018}]}")),
        &mesh,
        Some(&second),
    );
    assert!(!Arc::ptr_eq(
        after.get(TypeUrl::Listener),
        third.resources_for(&p).get(TypeUrl::Listener)
    ));
}
