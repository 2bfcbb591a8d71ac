//! Per-proxy generation cost for a gateway bound to 1,000 Gateways and VirtualServices: the
//! shape of istiod's `gateways` benchmark (pilot/pkg/xds/testdata/benchmarks/gateways.yaml),
//! built here in code so the benchmark carries its own fixture.
//!
//! istiod's published per-proxy costs for it: RouteGeneration 22.5 ms, ClusterGeneration
//! 7.6 ms, InitPushContext 11.9 ms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pilotfish::config::parse::parse_text;
use pilotfish::generate::{cluster, endpoint, gateway, PushContext};
use pilotfish::index::Index;
use pilotfish::model::{MeshConfig, Proxy};
use pilotfish::store::{self, Entry};
use pilotfish::xds::Snapshot;

/// istiod's gateways benchmark, rendered: per i, a ServiceEntry, a Gateway with an HTTP and an
/// HTTPS server for three hosts, and a VirtualService routing a prefix to the ServiceEntry.
fn gateways_config(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: proxy-service-instance, namespace: default}\nspec:\n  hosts: [example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1, labels: {istio.io/benchmark: \"true\"}}]\n",
    );
    for i in 0..n {
        let hosts = format!("[random-a-{i}.host.example, random-b-{i}.host.example, random-c-{i}.host.example]");
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: gateway}}\nspec:\n  hosts: {hosts}\n  gateways: [gateway/gateway-{i}]\n  http:\n  - match: [{{uri: {{prefix: /route-{i}}}}}]\n    route: [{{destination: {{host: random-{i}.host.example}}}}]\n\
             ---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gateway-{i}, namespace: gateway}}\nspec:\n  selector: {{istio.io/benchmark: \"true\"}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: {hosts}\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {{mode: ISTIO_MUTUAL}}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: service-{i}, namespace: default}}\nspec:\n  hosts: [random-{i}.host.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 1.2.3.4}}]\n"
        );
    }
    y
}

fn snapshot(n: usize) -> Arc<store::Snapshot> {
    let parsed = parse_text("gateways.yaml", &gateways_config(n)).expect("fixture parses");
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{:?}", parsed.diagnostics);
    store::Snapshot::of(parsed.objects.into_iter().map(Entry::from_file).collect())
}

fn proxy() -> Proxy {
    Proxy::from_id("router~1.1.1.1~v0.default~default.svc.cluster.local")
        .expect("valid id")
        .with_labels(BTreeMap::from([("istio.io/benchmark".to_string(), "true".to_string())]))
}

fn bench(c: &mut Criterion) {
    let mesh = MeshConfig::default();
    let snap = snapshot(1000);
    let index = Arc::new(Index::build(&snap, &mesh));
    let proxy = proxy();
    let selected = gateway::select(&index, &proxy);
    assert_eq!(selected.len(), 1000);
    let built = gateway::build(&index, &proxy, &selected);
    assert_eq!(built.routes.len(), 1, "one route config, http.80");

    let mut group = c.benchmark_group("gateways-1000");
    group.bench_function("index (InitPushContext)", |b| b.iter(|| black_box(Index::build(&snap, &mesh))));
    group.bench_function("routes+listeners per proxy (RouteGeneration)", |b| {
        b.iter(|| black_box(gateway::build(&index, &proxy, &gateway::select(&index, &proxy))))
    });
    group.bench_function("clusters (ClusterGeneration)", |b| b.iter(|| black_box(cluster::build_all(&index))));
    group.bench_function("endpoints", |b| b.iter(|| black_box(endpoint::build_all(&index))));
    group.bench_function("first proxy: everything, uncached", |b| {
        b.iter(|| black_box(PushContext::new(index.clone()).resources_for(&proxy)))
    });
    let context = PushContext::new(index.clone());
    context.resources_for(&proxy);
    group.bench_function("next proxy of the same class (cached)", |b| b.iter(|| black_box(context.resources_for(&proxy))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
