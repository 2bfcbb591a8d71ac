//! Per-proxy generation cost, on the configs behind istiod's own generation benchmarks
//! (pilot/pkg/xds/testdata/benchmarks, run by pilot/pkg/xds/bench_test.go), built here in code
//! so the benchmark carries its own fixtures:
//!
//! - `gateways`: a router bound to 1,000 Gateways and VirtualServices. istiod's published
//!   per-proxy costs: RouteGeneration 22.5 ms, ClusterGeneration 7.6 ms, InitPushContext 11.9 ms.
//! - `http`: a sidecar and 100 HTTP ServiceEntries (MESH_INTERNAL, one VIP each). istiod:
//!   RouteGeneration 330 µs.
//! - `virtualservice`: a sidecar, 100 ServiceEntries and a VirtualService for each (two URI
//!   matches, a rewrite). istiod: RouteGeneration 1.03 ms.
//!
//! The proxy is istiod's: IP 1.1.1.1, id `v0.default`, namespace `default`, label
//! `istio.io/benchmark: "true"`; objects without a namespace go to `default`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pilotfish::config::parse::parse_text;
use pilotfish::generate::{PushContext, cluster, endpoint, gateway, sidecar};
use pilotfish::index::Index;
use pilotfish::index::scope::Scope;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::store::{self, Entry};
use pilotfish::xds::{ProxyResources, Snapshot, TypeUrl};

/// istiod's gateways benchmark, rendered: per i, a ServiceEntry, a Gateway with an HTTP and an
/// HTTPS server for three hosts, and a VirtualService routing a prefix to the ServiceEntry.
fn gateways_config(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: proxy-service-instance, namespace: default}\nspec:\n  hosts: [example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1, labels: {istio.io/benchmark: \"true\"}}]\n",
    );
    for i in 0..n {
        let hosts = format!(
            "[random-a-{i}.host.example, random-b-{i}.host.example, random-c-{i}.host.example]"
        );
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: gateway}}\nspec:\n  hosts: {hosts}\n  gateways: [gateway/gateway-{i}]\n  http:\n  - match: [{{uri: {{prefix: /route-{i}}}}}]\n    route: [{{destination: {{host: random-{i}.host.example}}}}]\n\
             ---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gateway-{i}, namespace: gateway}}\nspec:\n  selector: {{istio.io/benchmark: \"true\"}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: {hosts}\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {{mode: ISTIO_MUTUAL}}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: service-{i}, namespace: default}}\nspec:\n  hosts: [random-{i}.host.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 1.2.3.4}}]\n"
        );
    }
    y
}

/// istiod's `http` benchmark (http.yaml), rendered: the ServiceEntry the proxy (1.1.1.1) is an
/// endpoint of, and `n` MESH_INTERNAL HTTP ServiceEntries, each with a VIP
/// `240.240.<i/255>.<i%255>` and one endpoint `240.241.<i/255>.<i%255>`.
fn http_config(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: proxy-service-instance, namespace: default}\nspec:\n  hosts: [example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints: [{address: 1.1.1.1, labels: {security.istio.io/tlsMode: istio}}]\n",
    );
    for i in 0..n {
        let (hi, lo) = (i / 255, i % 255);
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: service-{i}, namespace: default}}\nspec:\n  addresses: [240.240.{hi}.{lo}]\n  hosts: [random-{i}.host.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints: [{{address: 240.241.{hi}.{lo}, labels: {{security.istio.io/tlsMode: istio}}}}]\n"
        );
    }
    y
}

/// istiod's `virtualservice` benchmark (virtualservice.yaml), rendered: the proxy's
/// ServiceEntry, and per i a ServiceEntry (no VIP, MESH_EXTERNAL by default) with a
/// VirtualService whose one route matches a prefix or a regex, rewrites the URI and routes to it.
fn virtualservice_config(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: proxy-service-instance, namespace: default}\nspec:\n  hosts: [example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1}]\n",
    );
    for i in 0..n {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: default}}\nspec:\n  hosts: [random-{i}.host.example]\n  http:\n  - name: match-route\n    match: [{{uri: {{prefix: /foo}}}}, {{uri: {{regex: /bar}}}}]\n    rewrite: {{uri: /new-url}}\n    route: [{{destination: {{host: random-{i}.host.example}}}}]\n\
             ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: service-{i}, namespace: default}}\nspec:\n  hosts: [random-{i}.host.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 1.2.3.4}}]\n"
        );
    }
    y
}

fn snapshot(name: &str, yaml: &str) -> Arc<store::Snapshot> {
    let parsed = parse_text(name, yaml).expect("fixture parses");
    assert!(
        parsed.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        parsed.diagnostics
    );
    store::Snapshot::of(parsed.objects.into_iter().map(Entry::from_file).collect())
}

fn benchmark_labels(extra: Option<usize>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("istio.io/benchmark".to_string(), "true".to_string())]);
    if let Some(i) = extra {
        labels.insert("bench-class".into(), i.to_string());
    }
    labels
}

fn router() -> Proxy {
    Proxy::from_id("router~1.1.1.1~v0.default~default.svc.cluster.local")
        .expect("valid id")
        .with_labels(benchmark_labels(None))
}

/// istiod's benchmark sidecar; `class` adds a label, making a proxy of another class (another
/// deployment) that shares nothing cached per class with the first.
fn sidecar_proxy(class: Option<usize>) -> Proxy {
    Proxy::from_id("sidecar~1.1.1.1~v0.default~default.svc.cluster.local")
        .expect("valid id")
        .with_labels(benchmark_labels(class))
}

fn gateways(c: &mut Criterion) {
    let mesh = MeshConfig::default();
    let snap = snapshot("gateways.yaml", &gateways_config(1000));
    let index = Arc::new(Index::build(&snap, &mesh));
    let proxy = router();
    let selected = gateway::select(&index, &proxy);
    assert_eq!(selected.len(), 1000);
    let built = gateway::build(&index, &proxy, &selected);
    assert_eq!(built.routes.len(), 1, "one route config, http.80");

    let mut group = c.benchmark_group("gateways-1000");
    group.bench_function("index (InitPushContext)", |b| {
        b.iter(|| black_box(Index::build(&snap, &mesh)))
    });
    group.bench_function("routes+listeners per proxy (RouteGeneration)", |b| {
        b.iter(|| {
            black_box(gateway::build(
                &index,
                &proxy,
                &gateway::select(&index, &proxy),
            ))
        })
    });
    group.bench_function("clusters (ClusterGeneration)", |b| {
        b.iter(|| black_box(cluster::build_all(&index)))
    });
    group.bench_function("endpoints", |b| {
        b.iter(|| black_box(endpoint::build_all(&index)))
    });
    group.bench_function("first proxy: everything, uncached", |b| {
        b.iter(|| black_box(PushContext::new(index.clone()).resources_for(&proxy)))
    });
    let context = PushContext::new(index.clone());
    context.resources_for(&proxy);
    group.bench_function("next proxy of the same class (cached)", |b| {
        b.iter(|| black_box(context.resources_for(&proxy)))
    });
    // What a mesh-wide access log (the Telemetry API's usual first use) adds to each class's
    // listeners: they are built, then decoded, given the log, and encoded again.
    let logged = snapshot(
        "gateways-logged.yaml",
        &format!("{}{MESH_ACCESS_LOG}", gateways_config(1000)),
    );
    let logged = Arc::new(Index::build(&logged, &mesh));
    let with_log = gateway::build(&logged, &proxy, &gateway::select(&logged, &proxy));
    assert_ne!(
        with_log.listeners.values().next().map(|l| l.hash),
        built.listeners.values().next().map(|l| l.hash),
        "the access log is in the listener"
    );
    group.bench_function("routes+listeners per proxy, mesh-wide access log", |b| {
        b.iter(|| {
            black_box(gateway::build(
                &logged,
                &proxy,
                &gateway::select(&logged, &proxy),
            ))
        })
    });
    group.finish();
}

/// A root-namespace Telemetry logging every workload's traffic to stdout (Istio's `envoy`
/// provider).
const MESH_ACCESS_LOG: &str = "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging: [{providers: [{name: envoy}]}]\n";

/// Names and total encoded bytes of one type, for the fixture summary.
fn summary(r: &ProxyResources, ty: TypeUrl) -> String {
    let map = r.get(ty);
    let bytes: usize = map.values().map(|x| x.any.len()).sum();
    format!("{} {ty} ({:.1} KB)", map.len(), bytes as f64 / 1e3)
}

/// The sidecar groups: what istiod's RouteGeneration and ClusterGeneration time for one
/// sidecar, and what pilotfish's server actually pays per proxy.
fn sidecar_group(c: &mut Criterion, name: &str, yaml: &str, expect_vhosts: usize) {
    let mesh = MeshConfig::default();
    let snap = snapshot(&format!("{name}.yaml"), yaml);
    let context = pilotfish::push::build(&snap, &mesh, None);
    let index = context.index().clone();
    assert!(
        index.diagnostics.is_empty(),
        "{name}: {:?}",
        index.diagnostics
    );
    let proxy = sidecar_proxy(None);

    // What the proxy is sent, checked once: istiod's shapes for this config.
    let r = context.resources_for(&proxy);
    let routes = r.get(TypeUrl::RouteConfiguration);
    let route_config: envoy_types::pb::envoy::config::route::v3::RouteConfiguration = routes
        .get("80")
        .expect("route config \"80\"")
        .decode()
        .expect("decodes");
    assert_eq!(
        route_config.virtual_hosts.len(),
        expect_vhosts,
        "{name}: one virtual host per service, and allow_any"
    );
    assert!(
        r.get(TypeUrl::Listener).contains_key("0.0.0.0_80"),
        "{name}: outbound listener"
    );
    assert!(
        r.get(TypeUrl::Cluster).contains_key("inbound|80||"),
        "{name}: 1.1.1.1 serves port 80"
    );
    eprintln!(
        "{name}: sidecar gets {}, {}, {}, {}",
        summary(&r, TypeUrl::Listener),
        summary(&r, TypeUrl::RouteConfiguration),
        summary(&r, TypeUrl::Cluster),
        summary(&r, TypeUrl::ClusterLoadAssignment)
    );

    let key = sidecar::ProxyKey::of(&index, &proxy);
    let scope = Scope::of(&index, &proxy.namespace, &proxy.labels);

    let mut group = c.benchmark_group(format!("{name}-100"));
    group.bench_function("index (InitPushContext)", |b| {
        b.iter(|| black_box(Index::build(&snap, &mesh)))
    });
    group.bench_function("scope + key of the proxy (SetSidecarScope)", |b| {
        b.iter(|| {
            black_box((
                Scope::of(&index, &proxy.namespace, &proxy.labels),
                sidecar::ProxyKey::of(&index, &proxy),
            ))
        })
    });
    group.bench_function("routes+listeners per proxy, cold (RouteGeneration)", |b| {
        b.iter(|| black_box(sidecar::build(&index, &proxy, &key, &scope)))
    });
    group.bench_function(
        "clusters, shared, once per revision (ClusterGeneration)",
        |b| b.iter(|| black_box(cluster::build_all(&index))),
    );
    let shared = cluster::build_all(&index);
    group.bench_function("clusters per proxy: shared map + local clusters", |b| {
        b.iter(|| {
            let mut clusters = shared.clone();
            clusters.extend(sidecar::local_clusters(&key.inbound));
            black_box(clusters)
        })
    });
    group.bench_function("endpoints, shared, once per revision", |b| {
        b.iter(|| black_box(endpoint::build_all(&index)))
    });
    group.bench_function("first proxy of a revision: everything, uncached", |b| {
        b.iter(|| black_box(PushContext::new(index.clone()).resources_for(&proxy)))
    });
    // What the server pays for the first proxy of a new class (deployment) once the revision's
    // clusters and endpoints exist: scope, key, listeners and routes, from `resources_for`.
    group.bench_function("new class in a warm revision (resources_for)", |b| {
        // `iter_batched_ref`: the context is dropped outside the timing.
        b.iter_batched_ref(
            || {
                let warm = PushContext::new(index.clone());
                warm.resources_for(&sidecar_proxy(Some(1)));
                warm
            },
            |warm| black_box(warm.resources_for(&proxy)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("next proxy of the same class (cached)", |b| {
        b.iter(|| black_box(context.resources_for(&proxy)))
    });
    group.finish();
}

fn sidecars(c: &mut Criterion) {
    sidecar_group(c, "http", &http_config(100), 102);
    sidecar_group(c, "virtualservice", &virtualservice_config(100), 102);
}

criterion_group!(benches, gateways, sidecars);
criterion_main!(benches);
