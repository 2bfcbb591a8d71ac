//! ADS load: N simulated proxies against the real `pilotfish` binary in its own process.
//! Measures the time until every proxy has ACKed CDS, EDS, LDS and RDS, the server's memory and
//! CPU for it, and how long a one-file route or endpoint change takes to reach the last proxy
//! it concerns, checking that only the changed type (and, for EDS, the one changed assignment)
//! is sent, and only to the proxies that see the changed service.
//!
//! Gateways (default): M ServiceEntries behind one ingress Gateway ([`fixture`]). Sidecars
//! (`--proxy sidecar`): M Kubernetes Services over K namespaces, each with its Deployment's
//! Pods, one simulated sidecar per Pod ([`mesh`]); `--scoped` adds a Sidecar per namespace
//! (egress `./*`, `istio-system/*`), `--scoped-root` one mesh-wide default in istio-system.
//! `--shared-labels` is an experiment: every sidecar of a namespace reports the same labels,
//! which shows what generating outbound config per namespace rather than per Deployment gives.
//!
//! ```text
//! cargo bench --bench xds_load -- [--clients N] [--services M] [--mode sotw|delta] [--changes K] [--timeout SECS]
//!     [--proxy gateway|sidecar] [--namespaces K] [--scoped | --scoped-root] [--shared-labels]
//!     [--pause SECS]
//! ```
//!
//! `--pause` waits after the server has loaded its config (and printed its pid) before the
//! first client connects, so a profiler can attach to the server, e.g. `heaptrack -p PID`.

#[path = "xds_load/client.rs"]
mod client;
#[path = "xds_load/fixture.rs"]
mod fixture;
#[path = "xds_load/mesh.rs"]
mod mesh;
#[path = "xds_load/report.rs"]
mod report;
#[path = "xds_load/server.rs"]
mod server;
#[path = "xds_load/tls.rs"]
mod tls;
#[path = "xds_load/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use client::{CDS, ClientStats, EDS, Mode, Progress, RDS, TYPES};
use envoy_types::pb::envoy::config::core::v3::Node;
use fixture::{Fixture, Pending};
use mesh::{Mesh, Scoping};
use report::Report;
use server::Server;

/// Longer than the server's debounce (100 ms), so each change is the first after a quiet
/// period and goes out at once; also how long we watch for stray responses after one.
const QUIET: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyKind {
    Gateway,
    Sidecar,
}

struct Args {
    clients: usize,
    services: usize,
    mode: Mode,
    changes: usize,
    timeout: Duration,
    proxy: ProxyKind,
    namespaces: usize,
    scoping: Scoping,
    shared_labels: bool,
    /// Seconds between the server being ready and the first connect: time to attach a
    /// profiler (`heaptrack -p PID`, `perf record -p PID`) to the server.
    pause: Duration,
    /// Connect over the TLS port with client certificates (and get certificates over SDS).
    tls: bool,
}

const USAGE: &str = "usage: xds_load [--clients N] [--services M] [--mode sotw|delta] [--changes K] [--timeout SECS] [--proxy gateway|sidecar] [--namespaces K] [--scoped | --scoped-root] [--shared-labels] [--pause SECS] [--tls]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        clients: 1000,
        services: 1000,
        mode: Mode::Sotw,
        changes: 5,
        timeout: Duration::from_secs(120),
        proxy: ProxyKind::Gateway,
        namespaces: 10,
        scoping: Scoping::None,
        shared_labels: false,
        pause: Duration::ZERO,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clients" => args.clients = value()?.parse()?,
            "--services" => args.services = value()?.parse()?,
            "--changes" => args.changes = value()?.parse()?,
            "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "sotw" => Mode::Sotw,
                    "delta" => Mode::Delta,
                    other => bail!("--mode {other}: expected sotw or delta"),
                }
            }
            "--proxy" => {
                args.proxy = match value()?.as_str() {
                    "gateway" => ProxyKind::Gateway,
                    "sidecar" => ProxyKind::Sidecar,
                    other => bail!("--proxy {other}: expected gateway or sidecar"),
                }
            }
            "--namespaces" => args.namespaces = value()?.parse()?,
            "--scoped" => args.scoping = Scoping::Namespace,
            "--scoped-root" => args.scoping = Scoping::Root,
            "--shared-labels" => args.shared_labels = true,
            "--pause" => args.pause = Duration::from_secs(value()?.parse()?),
            "--tls" => args.tls = true,
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if args.clients == 0 || args.services == 0 || args.namespaces == 0 {
        bail!("--clients, --services and --namespaces must be positive");
    }
    if args.proxy == ProxyKind::Gateway && (args.scoping != Scoping::None || args.shared_labels) {
        bail!("--scoped, --scoped-root and --shared-labels apply to --proxy sidecar");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// The config served and the proxies driven at it.
enum Workload {
    Gateways(Fixture),
    Sidecars(Mesh),
}

impl Workload {
    fn node(&self, client: usize) -> Node {
        match self {
            Workload::Gateways(_) => fixture::gateway_node(client),
            Workload::Sidecars(mesh) => mesh.node(client),
        }
    }

    /// Change `k` of the routes, and which clients it concerns.
    fn route_change(&self, k: usize, clients: usize) -> Result<(Pending, String, Vec<bool>)> {
        match self {
            Workload::Gateways(f) => {
                Ok((f.route_change(k)?, "ingress".into(), vec![true; clients]))
            }
            Workload::Sidecars(mesh) => {
                let (pending, service) = mesh.route_change(k)?;
                let target = format!("svc-{service}.ns-{}", mesh.namespace_of(service));
                Ok((
                    pending,
                    target,
                    (0..clients).map(|c| mesh.sees(c, service)).collect(),
                ))
            }
        }
    }

    /// Change `k` of one service's endpoints, and which clients it concerns.
    fn endpoint_change(
        &self,
        k: usize,
        services: usize,
        clients: usize,
    ) -> Result<(Pending, String, Vec<bool>)> {
        let service = (k * 37) % services;
        match self {
            Workload::Gateways(f) => Ok((
                f.endpoint_change(service, k)?,
                fixture::host(service),
                vec![true; clients],
            )),
            Workload::Sidecars(mesh) => {
                let target = format!("svc-{service}.ns-{}", mesh.namespace_of(service));
                Ok((
                    mesh.endpoint_change(service, k)?,
                    target,
                    (0..clients).map(|c| mesh.sees(c, service)).collect(),
                ))
            }
        }
    }
}

/// One file change and what followed it.
struct Change {
    kind: &'static str,
    /// The changed object's service, and how many clients see it (so should hear of it).
    target: String,
    expected_clients: usize,
    /// Expected clients that received the changed type; other clients that received anything.
    reached: usize,
    stray_clients: usize,
    stray_responses: [u64; 4],
    /// Server CPU from the rename until the quiet period after the last ACK.
    server_cpu: f64,
    /// From the rename to the last proxy's ACK of the new version, and to the median one's.
    last: Duration,
    median: Duration,
    /// Responses and resources the expected clients received, per type, from the rename until
    /// a quiet period after the last ACK.
    responses: [u64; 4],
    resources: [u64; 4],
    /// Per proxy, of the changed type: fewest and most responses, and resources.
    per_client_responses: (u64, u64),
    per_client_resources: (u64, u64),
    /// Distinct new versions ACKed across proxies (1 when they all agree).
    versions: usize,
}

impl Change {
    /// Only the changed type was sent, one response per concerned proxy, carrying `resources`
    /// each, and nothing to the others. `one_version`: every concerned proxy subscribes to the
    /// same names, so they must all agree on the new version.
    fn expected(&self, ty: usize, resources: Option<u64>, one_version: bool) -> bool {
        let others_silent = (0..4).filter(|t| *t != ty).all(|t| self.responses[t] == 0);
        let one_each = self.per_client_responses == (1, 1);
        let sized = resources.is_none_or(|r| self.per_client_resources == (r, r));
        let versions = !one_version || self.versions == 1;
        others_silent && one_each && sized && versions && self.stray_clients == 0
    }
}

/// The NAMESPACE a node's metadata claims.
fn node_namespace(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Option<String> {
    let value = node.metadata.as_ref()?.fields.get("NAMESPACE")?;
    match &value.kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(ns)) => Some(ns.clone()),
        _ => None,
    }
}

async fn run(args: Args) -> Result<()> {
    let n = args.clients;
    let fd_limit = server::raise_fd_limit(n as u64 + 256)?;
    let dir = tempfile::Builder::new().prefix("xds-load-").tempdir()?;
    let workload = match args.proxy {
        ProxyKind::Gateway => Workload::Gateways(Fixture::write(dir.path(), args.services)?),
        ProxyKind::Sidecar => Workload::Sidecars(Mesh::write(
            dir.path(),
            args.services,
            args.namespaces,
            n,
            args.scoping,
            args.shared_labels,
        )?),
    };
    let spawned = Instant::now();
    // Outside the config dir: the directory source would watch it too.
    let ca_tmp = tempfile::Builder::new().prefix("xds-load-ca-").tempdir()?;
    let ca_dir = ca_tmp.path().to_path_buf();
    let mut srv = Server::spawn(
        dir.path(),
        args.timeout,
        args.tls.then_some(ca_dir.as_path()),
    )?;
    let client_tls = match args.tls {
        true => {
            let nodes: Vec<_> = (0..n).map(|i| workload.node(i)).collect();
            let namespaces: std::collections::BTreeSet<String> =
                nodes.iter().filter_map(node_namespace).collect();
            Some(tls::ClientTls::new(&ca_dir, namespaces)?)
        }
        false => None,
    };
    let target = srv.tls_addr.unwrap_or(srv.addr);
    let load_time = spawned.elapsed();
    let pid = srv.pid();
    let proc_pid = pid.to_string();
    eprintln!(
        "xds_load: {n} {:?} {:?} clients, {} services, {:?} scoping, server pid {pid} on {}",
        args.mode, args.proxy, args.services, args.scoping, srv.addr
    );
    tokio::time::sleep(QUIET + args.pause).await;
    let baseline = server::memory(&proc_pid)?;
    let (server_cpu0, own_cpu0) = (server::cpu_seconds(pid)?, server::own_cpu_seconds());

    let stats: Vec<Arc<ClientStats>> = (0..n).map(|_| Arc::default()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let node = workload.node(i);
            let tls = client_tls.as_ref().and_then(|t| t.for_node(&node));
            tokio::spawn(client::run(i, target, args.mode, node, Arc::clone(s), tls))
        })
        .collect();
    wait_for(&stats, &mut srv, args.timeout, "connect-all", |_, p| {
        p.converged_at.is_some()
    })
    .await?;
    let converged = sorted(
        stats
            .iter()
            .filter_map(|s| s.progress().converged_at.map(|t| t - start)),
    );
    let connect_all = converged.last().copied().unwrap_or_default();
    let server_cpu = server::cpu_seconds(pid)? - server_cpu0;
    let own_cpu = server::own_cpu_seconds() - own_cpu0;
    let after_connect = server::memory(&proc_pid)?;
    let at_connect: Vec<[[u64; 4]; 2]> = stats.iter().map(|s| s.counts()).collect();
    let wanted: Vec<(usize, usize)> = stats
        .iter()
        .map(|s| {
            let p = s.progress();
            (p.eds_wanted, p.rds_wanted)
        })
        .collect();
    let clusters = at_connect[0][1][CDS];
    let retries: u64 = stats
        .iter()
        .map(|s| s.retries.load(std::sync::atomic::Ordering::Relaxed))
        .sum();

    // A converged fleet should hear nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = diff_totals(
        &at_connect,
        &stats.iter().map(|s| s.counts()).collect::<Vec<_>>(),
    );
    let steady = server::memory(&proc_pid)?;
    let csds = measure_csds(srv.addr, n, &workload.node(0).id).await?;

    let mut changes = Vec::new();
    for k in 1..=args.changes {
        tokio::time::sleep(QUIET).await;
        let (route, target, expect) = workload.route_change(k, n)?;
        changes.push(
            measure(
                &stats,
                &mut srv,
                args.timeout,
                ("route", RDS),
                route,
                target,
                &expect,
            )
            .await?,
        );
        tokio::time::sleep(QUIET).await;
        let (endpoint, target, expect) = workload.endpoint_change(k, args.services, n)?;
        changes.push(
            measure(
                &stats,
                &mut srv,
                args.timeout,
                ("endpoint", EDS),
                endpoint,
                target,
                &expect,
            )
            .await?,
        );
    }
    let at_end = server::memory(&proc_pid)?;
    srv.check_alive()?;
    for task in &tasks {
        task.abort();
    }

    let report = Report {
        args: &args,
        fd_limit,
        load_time,
        baseline,
        after_connect,
        steady,
        at_end,
        connect_all,
        converged,
        server_cpu,
        own_cpu,
        at_connect,
        wanted,
        clusters,
        retries,
        idle,
        changes,
        csds,
        log: srv.log(),
    };
    report.print();
    drop(srv);
    Ok(())
}

/// Polls the clients until `done` holds for every one, failing fast on a client error or a
/// dead server, and with a diagnosis after `timeout`.
async fn wait_for(
    stats: &[Arc<ClientStats>],
    srv: &mut Server,
    timeout: Duration,
    what: &str,
    done: impl Fn(usize, &Progress) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        for (i, s) in stats.iter().enumerate() {
            let (failed, finished) = {
                let p = s.progress();
                (p.error.is_some(), done(i, &p))
            };
            if failed {
                bail!("{what}: client {i} failed\n{}", diagnose(stats, &[i]));
            }
            if !finished {
                pending.push(i);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        srv.check_alive()?;
        if start.elapsed() > timeout {
            bail!(
                "{what}: {} of {} clients not done after {timeout:?}\n{}\nserver log:\n{}",
                pending.len(),
                stats.len(),
                diagnose(stats, &pending),
                srv.log().join("\n")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a few stuck clients saw, for a report a server developer can act on.
fn diagnose(stats: &[Arc<ClientStats>], clients: &[usize]) -> String {
    let mut out = String::new();
    for &i in clients.iter().take(5) {
        let [responses, resources] = stats[i].counts();
        let p = stats[i].progress().clone();
        let acked: Vec<String> = (0..4)
            .map(|t| {
                format!(
                    "{}={}",
                    TYPES[t],
                    p.acked[t].as_ref().map_or("-", |a| a.version.as_str())
                )
            })
            .collect();
        out += &format!(
            "  client {i}: responses {responses:?} resources {resources:?} (CDS, EDS, LDS, RDS); acked {}; EDS held {}/{}; RDS wanted {}; error {:?}\n",
            acked.join(" "),
            p.eds_held,
            p.eds_wanted,
            p.rds_wanted,
            p.error
        );
    }
    out
}

async fn measure(
    stats: &[Arc<ClientStats>],
    srv: &mut Server,
    timeout: Duration,
    (kind, ty): (&'static str, usize),
    change: Pending,
    target: String,
    expect: &[bool],
) -> Result<Change> {
    let before: Vec<([[u64; 4]; 2], Option<String>)> = stats
        .iter()
        .map(|s| {
            (
                s.counts(),
                s.progress().acked[ty].as_ref().map(|a| a.version.clone()),
            )
        })
        .collect();
    let cpu0 = server::cpu_seconds(srv.pid())?;
    let t0 = Instant::now();
    change.commit()?;
    let label = format!("{kind} change of {target}");
    wait_for(stats, srv, timeout, &label, |i, p| {
        !expect[i] || p.acked[ty].as_ref().map(|a| &a.version) != before[i].1.as_ref()
    })
    .await?;
    tokio::time::sleep(QUIET).await;
    let server_cpu = server::cpu_seconds(srv.pid())? - cpu0;
    let mut acks = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    let (mut responses, mut resources, mut stray_responses) = ([0u64; 4], [0u64; 4], [0u64; 4]);
    let (mut per_responses, mut per_resources) = ((u64::MAX, 0), (u64::MAX, 0));
    let (mut reached, mut stray_clients) = (0, 0);
    for ((s, (counts, _)), &expected) in stats.iter().zip(&before).zip(expect) {
        let now = s.counts();
        if !expected {
            let heard: Vec<u64> = (0..4).map(|t| now[0][t] - counts[0][t]).collect();
            if heard.iter().any(|&r| r > 0) {
                stray_clients += 1;
            }
            for t in 0..4 {
                stray_responses[t] += heard[t];
            }
            continue;
        }
        let p = s.progress();
        let ack = p.acked[ty].as_ref().context("ACK vanished")?;
        acks.push(ack.at.saturating_duration_since(t0));
        versions.insert(ack.version.clone());
        for t in 0..4 {
            responses[t] += now[0][t] - counts[0][t];
            resources[t] += now[1][t] - counts[1][t];
        }
        let (r, x) = (now[0][ty] - counts[0][ty], now[1][ty] - counts[1][ty]);
        if r > 0 {
            reached += 1;
        }
        per_responses = (per_responses.0.min(r), per_responses.1.max(r));
        per_resources = (per_resources.0.min(x), per_resources.1.max(x));
    }
    let acks = sorted(acks);
    Ok(Change {
        kind,
        target,
        expected_clients: acks.len(),
        reached,
        stray_clients,
        stray_responses,
        server_cpu,
        last: acks.last().copied().unwrap_or_default(),
        median: acks.get(acks.len() / 2).copied().unwrap_or_default(),
        responses,
        resources,
        per_client_responses: per_responses,
        per_client_resources: per_resources,
        versions: versions.len(),
    })
}

fn sorted(items: impl IntoIterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = items.into_iter().collect();
    v.sort();
    v
}

fn diff_totals(before: &[[[u64; 4]; 2]], after: &[[[u64; 4]; 2]]) -> [u64; 4] {
    let mut out = [0; 4];
    for (b, a) in before.iter().zip(after) {
        for t in 0..4 {
            out[t] += a[0][t] - b[0][t];
        }
    }
    out
}

/// What `proxy-status` and `proxy-config` cost against the converged fleet: CSDS over the
/// plaintext port, every proxy's status without bodies, then one proxy's config with them.
async fn measure_csds(
    addr: std::net::SocketAddr,
    n: usize,
    proxy_id: &str,
) -> Result<report::Csds> {
    use pilotfish::xds::csds::client;
    use prost::Message;
    let address = addr.to_string();
    let start = Instant::now();
    let status = client::fetch(&address, client::status_request()).await?;
    let status_time = start.elapsed();
    if status.config.len() != n {
        bail!("CSDS listed {} proxies, not {n}", status.config.len());
    }
    let start = Instant::now();
    let config = client::fetch(&address, client::config_request(proxy_id)).await?;
    let config_time = start.elapsed();
    let resources = config
        .config
        .first()
        .map_or(0, |c| c.generic_xds_configs.len());
    if resources == 0 {
        bail!("CSDS with bodies returned nothing for {proxy_id}");
    }
    Ok(report::Csds {
        status_time,
        status_bytes: status.encoded_len(),
        config_time,
        config_bytes: config.encoded_len(),
        resources,
    })
}
