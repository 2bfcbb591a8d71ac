//! Sidecar generation from small YAML, checked with plain values: istiod's listener, route
//! config, virtual host and cluster names, its domains, mesh VirtualServices, TCP and TLS
//! routes, the conflict rules between listeners, and a consistent snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType,
};
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use pilotfish::generate::consistency;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};

mod sidecar_world;
use sidecar_world::*;

#[test]
fn listeners_and_route_configs_have_istiods_names() {
    let r = resources(&world(), &reviews_proxy());
    assert_eq!(
        names(&r, TypeUrl::Listener),
        vec![
            "0.0.0.0_27017",
            "0.0.0.0_9080",
            "10.0.0.40_27017",
            "virtualInbound",
            "virtualOutbound"
        ]
    );
    assert_eq!(names(&r, TypeUrl::RouteConfiguration), vec!["9080"]);
    // tcp-echo (TCP, no VIP) loses 0.0.0.0_9080 to the HTTP services; legacy-db has it on 27017.
    assert_eq!(
        tcp_proxy_clusters(&listener(&r, "0.0.0.0_27017")),
        vec!["outbound|27017||legacy-db.default.svc.cluster.local"]
    );
    assert_eq!(
        tcp_proxy_clusters(&listener(&r, "10.0.0.40_27017")),
        vec!["outbound|27017||mongodb.default.svc.cluster.local"]
    );
    let vhosts: Vec<String> = route_config(&r, "9080")
        .virtual_hosts
        .iter()
        .map(|v| v.name.clone())
        .collect();
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
        [
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        reviews.routes[0].r#match.as_ref().unwrap().headers[0].name,
        "end-user"
    );
    // sourceLabels: the productpage-only route is not in the reviews proxy's config.
    assert_eq!(
        route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")),
        ["outbound|9080|v1|ratings.default.svc.cluster.local"]
    );
    let productpage = proxy("10.1.0.9", "productpage-v1", &[("app", "productpage")]);
    let rc = route_config(&resources(&w, &productpage), "9080");
    assert_eq!(
        route_clusters(vhost(&rc, "ratings.default.svc.cluster.local:9080")),
        [
            "outbound|9080|v2|ratings.default.svc.cluster.local",
            "outbound|9080|v1|ratings.default.svc.cluster.local"
        ]
    );
    // No VirtualService: istiod's default route, named `default`, no timeout.
    let other = vhost(&rc, "reviews.other.svc.cluster.local:9080");
    assert_eq!(other.routes[0].name, "default");
    let Some(Action::Route(action)) = &other.routes[0].action else {
        panic!("{other:?}")
    };
    assert_eq!(
        action.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080||reviews.other.svc.cluster.local".into()
        ))
    );
    assert_eq!(action.timeout.map(|t| (t.seconds, t.nanos)), Some((0, 0)));
}

#[test]
fn virtual_inbound_has_a_chain_per_workload_port_to_a_local_cluster() {
    let ratings = proxy(
        "10.1.0.7",
        "ratings-v1",
        &[("app", "ratings"), ("version", "v1")],
    );
    let r = resources(&world(), &ratings);
    let inbound = listener(&r, "virtualInbound");
    let chains: Vec<&str> = inbound
        .filter_chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        chains,
        ["virtualInbound-blackhole", "0.0.0.0_8080", "virtualInbound"]
    );
    assert_eq!(
        inbound.listener_filters[0].name,
        "envoy.filters.listener.original_dst"
    );
    assert_eq!(
        tcp_proxy_clusters(&inbound),
        ["BlackHoleCluster", "InboundPassthroughCluster"]
    );
    // The target port names the cluster, which connects to the original destination (the pod's
    // IP and that port) from 127.0.0.6, as istiod's does under REDIRECT.
    let local: Cluster = r.get(TypeUrl::Cluster)["inbound|8080||"].decode().unwrap();
    assert_eq!(
        local.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    let bind = local
        .upstream_bind_config
        .and_then(|b| b.source_address)
        .map(|a| a.address);
    assert_eq!(bind.as_deref(), Some("127.0.0.6"));
    for name in ["PassthroughCluster", "InboundPassthroughCluster"] {
        let c: Cluster = r.get(TypeUrl::Cluster)[name].decode().unwrap();
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32
            )),
            "{name}"
        );
    }
    // A proxy that backs no service has only the passthrough chains.
    let stranger = resources(&world(), &proxy("10.9.9.9", "x", &[]));
    assert_eq!(listener(&stranger, "virtualInbound").filter_chains.len(), 2);
    assert!(
        !names(&stranger, TypeUrl::Cluster)
            .iter()
            .any(|n| n.starts_with("inbound|"))
    );
    // Without capture there is nothing to receive: no virtual listeners at all.
    let mut none = ratings.clone();
    none.metadata.interception_mode = "NONE".into();
    let listeners = names(&resources(&world(), &none), TypeUrl::Listener);
    assert!(
        !listeners.iter().any(|n| n.starts_with("virtual")),
        "{listeners:?}"
    );
}

#[test]
fn virtual_outbound_uses_the_original_destination() {
    let outbound = listener(&resources(&world(), &reviews_proxy()), "virtualOutbound");
    assert_eq!(outbound.use_original_dst.map(|b| b.value), Some(true));
    assert_eq!(
        tcp_proxy_clusters(&outbound),
        ["BlackHoleCluster", "PassthroughCluster"]
    );
}

#[test]
fn per_service_listeners_are_bound_only_without_capture() {
    let w = world();
    let bound = |p: &Proxy, name: &str| {
        listener(&resources(&w, p), name)
            .bind_to_port
            .map(|b| b.value)
    };
    let redirect = reviews_proxy();
    assert_eq!(bound(&redirect, "0.0.0.0_9080"), Some(false));
    let mut none = reviews_proxy();
    none.metadata.interception_mode = "NONE".into();
    assert_eq!(bound(&none, "0.0.0.0_9080"), Some(true));
    assert_eq!(
        bound(&none, "10.0.0.40_27017"),
        Some(false),
        "a VIP is never bound"
    );
}

#[test]
fn the_snapshot_is_consistent_and_every_cluster_referenced_is_served() {
    let w = world();
    for p in [
        reviews_proxy(),
        proxy("10.1.0.7", "ratings-v1", &[("app", "ratings")]),
    ] {
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
    let replica = proxy(
        "10.1.0.8",
        "reviews-v1-x",
        &[("app", "reviews"), ("version", "v1")],
    );
    let hash = |r: &ProxyResources| r.get(TypeUrl::RouteConfiguration)["9080"].hash;
    assert_eq!(hash(&r), hash(&context.resources_for(&replica)));
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
    assert_eq!(
        mongo.filter_chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .prefix_ranges[0]
            .address_prefix,
        "10.0.0.40"
    );
    // sourceLabels: productpage's default chain is the first route.
    let productpage = proxy("10.1.0.9", "productpage-v1", &[("app", "productpage")]);
    assert_eq!(
        tcp_proxy_clusters(&listener(&resources(&w, &productpage), "10.0.0.40_27017"))
            .last()
            .unwrap(),
        "outbound|9080||reviews.default.svc.cluster.local"
    );

    // TLS: a chain per SNI set (the equal second one dropped, as Envoy would reject it), the
    // service's own cluster as default, and the TLS inspector to read the SNI.
    let edge = listener(&r, "10.0.0.60_443");
    assert_eq!(
        tcp_proxy_clusters(&edge),
        [
            "outbound|9080||reviews.default.svc.cluster.local",
            "outbound|443||edge.default.svc.cluster.local"
        ]
    );
    assert_eq!(
        edge.filter_chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .server_names,
        ["a.example.com", "edge.default.svc.cluster.local"]
    );
    assert_eq!(
        edge.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert_eq!(consistency::check(&r), Vec::<String>::new());
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
    assert_eq!(
        tcp_proxy_clusters(&l),
        ["outbound|5432||legacy.internal", "PassthroughCluster"]
    );
    let range = &l.filter_chains[0]
        .filter_chain_match
        .as_ref()
        .unwrap()
        .prefix_ranges[0];
    assert_eq!(
        (
            range.address_prefix.as_str(),
            range.prefix_len.map(|p| p.value)
        ),
        ("192.168.0.0", Some(16))
    );
    assert_eq!(l.filter_chains[1].filter_chain_match, None);
}
