//! Gateway generation from a directory of YAML, checked with plain values: istiod's names,
//! a consistent snapshot, sharing between proxies, and pushes that carry only what changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};
use pilotfish::generate::consistency;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::source::watch;
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};

const GATEWAY_ID: &str =
    "router~10.0.0.1~istio-ingressgateway-7d8f.istio-system~istio-system.svc.cluster.local";

fn gateway_proxy() -> Proxy {
    Proxy::from_id(GATEWAY_ID)
        .unwrap()
        .with_labels(BTreeMap::from([(
            "istio".to_string(),
            "ingressgateway".to_string(),
        )]))
}

fn load(dir: &Path) -> Arc<pilotfish::generate::PushContext> {
    load_after(dir, None)
}

fn load_after(
    dir: &Path,
    previous: Option<&Arc<pilotfish::generate::PushContext>>,
) -> Arc<pilotfish::generate::PushContext> {
    let (snapshot, diagnostics) = watch::read_once(dir).unwrap();
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    pilotfish::push::build(&snapshot, &MeshConfig::default(), previous)
}

fn bookinfo() -> Arc<pilotfish::generate::PushContext> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bookinfo"))
}

fn names(r: &ProxyResources, ty: TypeUrl) -> Vec<String> {
    r.get(ty).keys().cloned().collect()
}

#[test]
fn bookinfo_gateway_gets_istiods_names() {
    let resources = bookinfo().resources_for(&gateway_proxy());
    assert_eq!(names(&resources, TypeUrl::Listener), vec!["0.0.0.0_8080"]);
    assert_eq!(
        names(&resources, TypeUrl::RouteConfiguration),
        vec!["http.8080"]
    );
    let clusters = names(&resources, TypeUrl::Cluster);
    for expected in [
        "outbound|9080||productpage.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "BlackHoleCluster",
    ] {
        assert!(
            clusters.contains(&expected.to_string()),
            "{expected} missing from {clusters:?}"
        );
    }

    let routes: RouteConfiguration = resources.get(TypeUrl::RouteConfiguration)["http.8080"]
        .decode()
        .unwrap();
    let [vhost] = &routes.virtual_hosts[..] else {
        panic!("{routes:?}")
    };
    assert_eq!(vhost.name, "*:8080");
    assert_eq!(vhost.domains, vec!["*"]);
    assert_eq!(
        vhost.routes.len(),
        5,
        "one route per match of the bookinfo VirtualService"
    );
    for route in &vhost.routes {
        let Some(Action::Route(action)) = &route.action else {
            panic!("{route:?}")
        };
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster(
                "outbound|9080||productpage.default.svc.cluster.local".into()
            ))
        );
    }
}

#[test]
fn subsets_select_endpoints_by_pod_labels() {
    let resources = bookinfo().resources_for(&gateway_proxy());
    let eds = resources.get(TypeUrl::ClusterLoadAssignment);
    let addresses = |name: &str| -> Vec<String> {
        let cla: ClusterLoadAssignment = eds[name].decode().unwrap();
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|e| match &e.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => ep.address.clone(),
                _ => None,
            })
            .map(|a| format!("{a:?}"))
            .collect()
    };
    let all = addresses("outbound|9080||reviews.default.svc.cluster.local");
    let v2 = addresses("outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(all.len(), 3);
    assert_eq!(v2.len(), 1);
    assert!(v2[0].contains("127.0.10.4"), "{v2:?}");
    assert!(addresses("outbound|9080|v2|ratings.default.svc.cluster.local").is_empty());
}

#[test]
fn the_snapshot_is_consistent() {
    let context = bookinfo();
    let problems = consistency::check(&context.resources_for(&gateway_proxy()));
    assert!(problems.is_empty(), "{problems:#?}");
    let sidecar =
        Proxy::from_id("sidecar~127.0.10.3~reviews-v1.default~default.svc.cluster.local").unwrap();
    assert!(consistency::check(&context.resources_for(&sidecar)).is_empty());
}

#[test]
fn a_proxy_that_selects_no_gateway_gets_no_listeners() {
    let other = Proxy::from_id(GATEWAY_ID)
        .unwrap()
        .with_labels(BTreeMap::from([(
            "istio".to_string(),
            "egressgateway".to_string(),
        )]));
    let resources = bookinfo().resources_for(&other);
    assert!(resources.get(TypeUrl::Listener).is_empty());
    assert!(!resources.get(TypeUrl::Cluster).is_empty());
}

#[test]
fn replicas_share_one_generation_and_clusters_are_shared_by_all() {
    // A sidecar's cluster map adds its local clusters, but the outbound clusters in it are the
    // very resources every other proxy is sent, encoded once.
    let context = bookinfo();
    let a = context.resources_for(&gateway_proxy());
    let mut replica = gateway_proxy();
    replica.id =
        "router~10.0.0.2~istio-ingressgateway-9x2k.istio-system~istio-system.svc.cluster.local"
            .into();
    assert!(Arc::ptr_eq(&a, &context.resources_for(&replica)));
    let sidecar =
        Proxy::from_id("sidecar~127.0.10.3~reviews-v1.default~default.svc.cluster.local").unwrap();
    let s = context.resources_for(&sidecar);
    for (name, cluster) in a.get(TypeUrl::Cluster).iter() {
        assert!(
            Arc::ptr_eq(cluster, &s.get(TypeUrl::Cluster)[name]),
            "{name}"
        );
    }
    assert!(s.get(TypeUrl::Cluster).contains_key("inbound|9080||"));
    let replica =
        Proxy::from_id("sidecar~127.0.10.4~reviews-v2.default~default.svc.cluster.local").unwrap();
    assert!(Arc::ptr_eq(
        s.get(TypeUrl::Cluster),
        context.resources_for(&replica).get(TypeUrl::Cluster)
    ));
}

#[test]
fn an_endpoint_change_changes_only_endpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bookinfo");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let first = load(tmp.path());
    let before = first.resources_for(&gateway_proxy());
    let platform = tmp.path().join("platform.yaml");
    let text = std::fs::read_to_string(&platform)
        .unwrap()
        .replace("podIP: 127.0.10.4", "podIP: 127.0.10.44");
    std::fs::write(&platform, text).unwrap();
    let after = load_after(tmp.path(), Some(&first)).resources_for(&gateway_proxy());

    // What did not change is the very same Arc, so the server can skip it by pointer.
    for ty in [
        TypeUrl::Cluster,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
    ] {
        assert!(
            Arc::ptr_eq(before.get(ty), after.get(ty)),
            "{ty} map was rebuilt"
        );
    }
    let (eds_before, eds_after) = (
        before.get(TypeUrl::ClusterLoadAssignment),
        after.get(TypeUrl::ClusterLoadAssignment),
    );
    assert!(!Arc::ptr_eq(eds_before, eds_after));
    let shared = eds_after
        .iter()
        .filter(|(name, r)| Arc::ptr_eq(r, &eds_before[*name]))
        .count();
    assert_eq!(
        shared,
        eds_after.len() - 2,
        "all but the two changed assignments are shared"
    );

    for ty in [
        TypeUrl::Cluster,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
    ] {
        assert_eq!(before.get(ty), after.get(ty), "{ty} changed");
    }
    let changed: Vec<&str> = after
        .get(TypeUrl::ClusterLoadAssignment)
        .iter()
        .filter(|(name, r)| before.get(TypeUrl::ClusterLoadAssignment)[*name].hash != r.hash)
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        changed,
        vec![
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local"
        ]
    );
    let cluster: Cluster =
        after.get(TypeUrl::Cluster)["outbound|9080|v2|reviews.default.svc.cluster.local"]
            .decode()
            .unwrap();
    assert_eq!(
        cluster.name,
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
}
