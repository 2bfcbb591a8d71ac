//! ADS load: N simulated gateway proxies against the real `pilotfish` binary in its own
//! process. Measures the time until every proxy has ACKed CDS, EDS, LDS and RDS, the server's
//! memory and CPU for it, and how long a one-file route or endpoint change takes to reach the
//! last proxy, checking that only the changed type (and, for EDS, the one changed assignment)
//! is sent.
//!
//! ```text
//! cargo bench --bench xds_load -- [--clients N] [--services M] [--mode sotw|delta] [--changes K] [--timeout SECS]
//! ```

#[path = "xds_load/client.rs"]
mod client;
#[path = "xds_load/fixture.rs"]
mod fixture;
#[path = "xds_load/server.rs"]
mod server;
#[path = "xds_load/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use client::{CDS, ClientStats, EDS, LDS, Mode, Progress, RDS, TYPES};
use fixture::{Fixture, Pending};
use server::{Memory, Server};

/// Longer than the server's debounce (100 ms), so each change is the first after a quiet
/// period and goes out at once; also how long we watch for stray responses after one.
const QUIET: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(5);

struct Args {
    clients: usize,
    services: usize,
    mode: Mode,
    changes: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { clients: 1000, services: 1000, mode: Mode::Sotw, changes: 5, timeout: Duration::from_secs(120) };
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
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; usage: xds_load [--clients N] [--services M] [--mode sotw|delta] [--changes K] [--timeout SECS]"
            ),
        }
    }
    if args.clients == 0 || args.services == 0 {
        bail!("--clients and --services must be positive");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

/// One file change and what followed it.
struct Change {
    kind: &'static str,
    /// From the rename to the last proxy's ACK of the new version, and to the median one's.
    last: Duration,
    median: Duration,
    /// Responses and resources received in all, per type, from the rename until a quiet
    /// period after the last ACK.
    responses: [u64; 4],
    resources: [u64; 4],
    /// Per proxy, of the changed type: fewest and most responses, and resources.
    per_client_responses: (u64, u64),
    per_client_resources: (u64, u64),
    /// Distinct new versions ACKed across proxies (1 when they all agree).
    versions: usize,
}

impl Change {
    /// Only the changed type was sent, one response per proxy, carrying `resources` each.
    fn expected(&self, ty: usize, resources: Option<u64>) -> bool {
        let others_silent = (0..4).filter(|t| *t != ty).all(|t| self.responses[t] == 0);
        let one_each = self.per_client_responses == (1, 1);
        let sized = resources.is_none_or(|r| self.per_client_resources == (r, r));
        others_silent && one_each && sized && self.versions == 1
    }
}

async fn run(args: Args) -> Result<()> {
    let n = args.clients;
    let fd_limit = server::raise_fd_limit(n as u64 + 256)?;
    let dir = tempfile::Builder::new().prefix("xds-load-").tempdir()?;
    let fixture = Fixture::write(dir.path(), args.services)?;
    let spawned = Instant::now();
    let mut srv = Server::spawn(dir.path(), args.timeout)?;
    let load_time = spawned.elapsed();
    let pid = srv.pid();
    let proc_pid = pid.to_string();
    tokio::time::sleep(QUIET).await;
    let baseline = server::memory(&proc_pid)?;
    let (server_cpu0, own_cpu0) = (server::cpu_seconds(pid)?, server::own_cpu_seconds());
    eprintln!("xds_load: {n} {:?} clients, {} services, server pid {pid} on {}", args.mode, args.services, srv.addr);

    let stats: Vec<Arc<ClientStats>> = (0..n).map(|_| Arc::default()).collect();
    let start = Instant::now();
    let tasks: Vec<_> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(client::run(i, srv.addr, args.mode, Arc::clone(s))))
        .collect();
    wait_for(&stats, &mut srv, args.timeout, "connect-all", |_, p| p.converged_at.is_some()).await?;
    let converged = sorted(stats.iter().filter_map(|s| s.progress().converged_at.map(|t| t - start)));
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
    let retries: u64 = stats.iter().map(|s| s.retries.load(std::sync::atomic::Ordering::Relaxed)).sum();

    // A converged fleet should hear nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = diff_totals(&at_connect, &stats.iter().map(|s| s.counts()).collect::<Vec<_>>());

    let mut changes = Vec::new();
    for k in 1..=args.changes {
        tokio::time::sleep(QUIET).await;
        let route = fixture.route_change(k)?;
        changes.push(measure(&stats, &mut srv, args.timeout, "route", RDS, route).await?);
        tokio::time::sleep(QUIET).await;
        let endpoint = fixture.endpoint_change((k * 37) % args.services, k)?;
        changes.push(measure(&stats, &mut srv, args.timeout, "endpoint", EDS, endpoint).await?);
    }
    let at_end = server::memory(&proc_pid)?;
    srv.check_alive()?;
    for task in &tasks {
        task.abort();
    }

    let report = Report { args: &args, fd_limit, load_time, baseline, after_connect, at_end, connect_all, converged, server_cpu, own_cpu, at_connect, wanted, clusters, retries, idle, changes, log: srv.log() };
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
            .map(|t| format!("{}={}", TYPES[t], p.acked[t].as_ref().map_or("-", |a| a.version.as_str())))
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
    kind: &'static str,
    ty: usize,
    change: Pending,
) -> Result<Change> {
    let before: Vec<([[u64; 4]; 2], Option<String>)> = stats
        .iter()
        .map(|s| (s.counts(), s.progress().acked[ty].as_ref().map(|a| a.version.clone())))
        .collect();
    let t0 = Instant::now();
    change.commit()?;
    let label = format!("{kind} change");
    wait_for(stats, srv, timeout, &label, |i, p| p.acked[ty].as_ref().map(|a| &a.version) != before[i].1.as_ref())
        .await?;
    tokio::time::sleep(QUIET).await;
    let mut acks = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    let (mut responses, mut resources) = ([0u64; 4], [0u64; 4]);
    let (mut per_responses, mut per_resources) = ((u64::MAX, 0), (u64::MAX, 0));
    for (s, (counts, _)) in stats.iter().zip(&before) {
        let p = s.progress();
        let ack = p.acked[ty].as_ref().context("ACK vanished")?;
        acks.push(ack.at.saturating_duration_since(t0));
        versions.insert(ack.version.clone());
        let now = s.counts();
        for t in 0..4 {
            responses[t] += now[0][t] - counts[0][t];
            resources[t] += now[1][t] - counts[1][t];
        }
        let (r, x) = (now[0][ty] - counts[0][ty], now[1][ty] - counts[1][ty]);
        per_responses = (per_responses.0.min(r), per_responses.1.max(r));
        per_resources = (per_resources.0.min(x), per_resources.1.max(x));
    }
    let acks = sorted(acks);
    Ok(Change {
        kind,
        last: acks.last().copied().unwrap_or_default(),
        median: acks[acks.len() / 2],
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
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

struct Report<'a> {
    args: &'a Args,
    fd_limit: u64,
    load_time: Duration,
    baseline: Memory,
    after_connect: Memory,
    at_end: Memory,
    connect_all: Duration,
    converged: Vec<Duration>,
    server_cpu: f64,
    own_cpu: f64,
    at_connect: Vec<[[u64; 4]; 2]>,
    wanted: Vec<(usize, usize)>,
    clusters: u64,
    retries: u64,
    idle: [u64; 4],
    changes: Vec<Change>,
    log: Vec<String>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report<'_> {
    fn kind(&self, kind: &str) -> Vec<&Change> {
        self.changes.iter().filter(|c| c.kind == kind).collect()
    }

    /// Median and worst of the last-proxy latencies of one kind of change.
    fn latency(&self, kind: &str) -> (Duration, Duration) {
        let lasts = sorted(self.kind(kind).iter().map(|c| c.last));
        (lasts.get(lasts.len() / 2).copied().unwrap_or_default(), lasts.last().copied().unwrap_or_default())
    }

    fn print(&self) {
        let a = self.args;
        let n = a.clients as u64;
        let range = |t: usize| {
            let v = self.at_connect.iter().map(|c| c[0][t]);
            (v.clone().min().unwrap_or(0), v.max().unwrap_or(0))
        };
        let per_client: Vec<String> = (0..4)
            .map(|t| match range(t) {
                (lo, hi) if lo == hi => format!("{lo}"),
                (lo, hi) => format!("{lo}–{hi}"),
            })
            .collect();
        let eds_wanted = self.wanted.iter().map(|w| w.0).min().unwrap_or(0);
        let rds_wanted = self.wanted.iter().map(|w| w.1).min().unwrap_or(0);
        let route_ok = self.kind("route").iter().all(|c| c.expected(RDS, None));
        let eds_ok = self.kind("endpoint").iter().all(|c| c.expected(EDS, Some(1)));
        let (route_median, route_max) = self.latency("route");
        let (eds_median, eds_max) = self.latency("endpoint");
        let per_conn = self.after_connect.rss_kib.saturating_sub(self.baseline.rss_kib) as f64 / n as f64;
        let mode = format!("{:?}", a.mode).to_lowercase();
        let warnings = self.log.iter().filter(|l| !l.contains("config loaded")).count();

        println!("\n### xds_load: {mode}, {} clients, {} services\n", a.clients, a.services);
        println!("| metric | value |\n|---|---|");
        let row = |k: &str, v: String| println!("| {k} | {v} |");
        row("resources per client (CDS / EDS names / LDS / RDS names)", format!("{} / {eds_wanted} / {} / {rds_wanted}", self.clusters, self.at_connect[0][1][LDS]));
        row("config load (spawn → ready)", ms(self.load_time));
        row("**connect-all** (start → last client ACKed all 4 types)", ms(self.connect_all));
        row("per-client convergence p50 / p99", format!("{} / {}", ms(percentile(&self.converged, 0.5)), ms(percentile(&self.converged, 0.99))));
        row("server CPU during connect-all (utime+stime)", format!("{:.2} s ({:.2} cores avg)", self.server_cpu, self.server_cpu / self.connect_all.as_secs_f64()));
        row("client (bench process) CPU during connect-all", format!("{:.2} s", self.own_cpu));
        row("server VmRSS / VmHWM, baseline (config loaded, no client)", format!("{} / {}", mib(self.baseline.rss_kib), mib(self.baseline.hwm_kib)));
        row("server VmRSS / VmHWM after connect-all", format!("{} / {}", mib(self.after_connect.rss_kib), mib(self.after_connect.hwm_kib)));
        row("server RSS per connection ((after − baseline) / N)", format!("{per_conn:.1} KiB"));
        row("server VmRSS / VmHWM at the end", format!("{} / {}", mib(self.at_end.rss_kib), mib(self.at_end.hwm_kib)));
        row("connection attempts retried (failed before any response)", format!("{}", self.retries));
        row("responses per client at connect-all (CDS/EDS/LDS/RDS)", per_client.join(" / "));
        row("responses in 1 s idle after connect-all (CDS/EDS/LDS/RDS)", format!("{:?}", self.idle));
        row(&format!("**route change** → last ACK, median / max of {}", self.kind("route").len()), format!("{} / {}", ms(route_median), ms(route_max)));
        row("route change sent only RDS, 1 response per client, 1 version", if route_ok { "yes".into() } else { "**NO** (see below)".into() });
        row(&format!("**endpoint change** → last ACK, median / max of {}", self.kind("endpoint").len()), format!("{} / {}", ms(eds_median), ms(eds_max)));
        row("endpoint change sent only EDS, 1 response with 1 assignment per client", if eds_ok { "yes".into() } else { "**NO** (see below)".into() });
        row("server log lines at warn or above", format!("{warnings}"));

        println!("\n| change | last ACK | median ACK | responses CDS/EDS/LDS/RDS (all clients) | resources CDS/EDS/LDS/RDS (all clients) | resources of changed type per client | versions |\n|---|---|---|---|---|---|---|");
        for c in &self.changes {
            let per = c.per_client_resources;
            println!(
                "| {} | {} | {} | {:?} | {:?} | {}–{} | {} |",
                c.kind, ms(c.last), ms(c.median), c.responses, c.resources, per.0, per.1, c.versions
            );
        }
        for line in self.log.iter().filter(|l| !l.contains("config loaded")).take(20) {
            println!("server: {line}");
        }
        let summary = json!({
            "bench": "xds_load",
            "mode": mode,
            "clients": a.clients,
            "services": a.services,
            "fd_limit": self.fd_limit,
            "clusters_per_client": self.clusters,
            "eds_names_per_client": eds_wanted,
            "config_load_ms": self.load_time.as_secs_f64() * 1e3,
            "connect_all_ms": self.connect_all.as_secs_f64() * 1e3,
            "converge_p50_ms": percentile(&self.converged, 0.5).as_secs_f64() * 1e3,
            "converge_p99_ms": percentile(&self.converged, 0.99).as_secs_f64() * 1e3,
            "server_cpu_s": self.server_cpu,
            "client_cpu_s": self.own_cpu,
            "baseline": self.baseline,
            "after_connect": self.after_connect,
            "at_end": self.at_end,
            "idle_responses": self.idle,
            "route_change_last_ack_ms": self.kind("route").iter().map(|c| c.last.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "endpoint_change_last_ack_ms": self.kind("endpoint").iter().map(|c| c.last.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "route_change_only_rds": route_ok,
            "endpoint_change_only_one_eds": eds_ok,
            "server_warnings": warnings,
            "connect_retries": self.retries,
        });
        println!("\n{summary}");
    }
}
