//! Kubernetes sync: how long pilotfish takes to list a large cluster from the API server and
//! be ready to serve it, and how long an EndpointSlice change takes to reach the proxies that
//! see it (issue 4's targets: under 2 s for 10,000 Services, 50,000 endpoints and 1,000
//! VirtualServices; under 100 ms for the change).
//!
//! Everything runs in this process, through the real code paths: the in-process fake API
//! server (`tests/support/fake_apiserver.rs`, plain HTTP on loopback) serves the cluster of
//! [`cluster`]; `pilotfish::serve` lists it with the real `kube::Client` and kube-runtime
//! watchers; simulated sidecars (`xds_load`'s clients: wildcard CDS and LDS, then EDS and RDS,
//! ACKing like Envoy) connect over ADS. Each runs on threads of its own name — pilotfish on a
//! runtime with one worker per core, the fake and the clients on one worker each — so the CPU
//! of each is read from `/proc` apart; they still share the machine's cores.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench kube_sync -- [--services M] [--namespaces K]
//!     [--replicas R] [--virtual-services V] [--clients N] [--unscoped] [--changes C] [--debounce-ms D]
//!     [--timeout SECS]
//! ```
//!
//! Measured: from calling `serve` to `/ready` answering 200 (every kind listed, the store
//! published, the first push context built); peak RSS during that (VmHWM, reset after the fake
//! was populated) and RSS after it; then, with N sidecars connected (a Sidecar per namespace
//! unless `--unscoped`), C times: a Pod is added (not timed), then its endpoint is added to its
//! Service's EndpointSlice through the fake, and the time until the last sidecar that sees the
//! Service has ACKed the new EDS version — checking that only EDS was sent, one assignment, only
//! to those sidecars, and that the served assignment holds the new endpoint.

#[path = "xds_load/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "kube_sync/cluster.rs"]
mod cluster;
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "xds_load/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "kube_sync/observe.rs"]
mod observe;
#[path = "kube_sync/probe.rs"]
mod probe;
#[path = "kube_sync/profile.rs"]
mod profile;
#[path = "kube_sync/report.rs"]
mod report;
#[path = "xds_load/tls.rs"]
#[allow(dead_code)]
mod tls;
#[path = "xds_load/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;

use client::{CDS, ClientStats, EDS, LDS, Mode};
use cluster::Shape;
use fake_apiserver::FakeApiServer;
use observe::{CLIENT_THREADS, Cpu, FAKE_THREADS, Memory, PILOTFISH_THREADS, Request, Timeline};
use pilotfish::serve::{ConfigSource, Listeners, ServeOptions};
use pilotfish::source::kubernetes::KubeOptions;

/// Longer than the debounce window, so each change is the first after a quiet period and is
/// pushed at once; also how long stray responses are watched for after one.
const QUIET: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(2);
/// What `push.rs` logs once it has built a revision's push context, just before publishing it.
const PUSHED: &str = "config indexed; pushing";

pub struct Args {
    shape: Shape,
    changes: usize,
    debounce: Duration,
    timeout: Duration,
}

const USAGE: &str = "usage: kube_sync [--services M] [--namespaces K] [--replicas R] [--virtual-services V] [--clients N] [--unscoped] [--changes C] [--debounce-ms D] [--timeout SECS]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        shape: Shape {
            services: 10_000,
            namespaces: 20,
            replicas: 5,
            virtual_services: 1_000,
            clients: 200,
            scoped: true,
        },
        changes: 10,
        debounce: Duration::from_millis(100),
        timeout: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--services" => args.shape.services = value()?.parse()?,
            "--namespaces" => args.shape.namespaces = value()?.parse()?,
            "--replicas" => args.shape.replicas = value()?.parse()?,
            "--virtual-services" => args.shape.virtual_services = value()?.parse()?,
            "--clients" => args.shape.clients = value()?.parse()?,
            "--unscoped" => args.shape.scoped = false,
            "--changes" => args.changes = value()?.parse()?,
            "--debounce-ms" => args.debounce = Duration::from_millis(value()?.parse()?),
            "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    args.shape.check()?;
    if args.debounce >= QUIET {
        bail!(
            "--debounce-ms must be below {} ms, the pause between changes",
            QUIET.as_millis()
        );
    }
    Ok(args)
}

fn runtime(name: &str, workers: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    Ok(builder.thread_name(name).enable_all().build()?)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let timeline = Timeline::install()?;
    let fake_rt = runtime(FAKE_THREADS, Some(1))?;
    let client_rt = runtime(CLIENT_THREADS, Some(1))?;
    let server_rt = runtime(PILOTFISH_THREADS, None)?;
    let result = server_rt.block_on(run(&args, &timeline, fake_rt.handle(), client_rt.handle()));
    for rt in [client_rt, server_rt, fake_rt] {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    result
}

/// The initial sync, as measured.
pub struct Sync {
    pub populate: Duration,
    pub populated: cluster::Populated,
    /// RSS with the fake populated, before pilotfish starts (the fake's objects, the runtimes).
    pub before: Memory,
    pub ready: Duration,
    /// From the start of `serve`: every kind listed (the store's first revision), and the first
    /// push context built ("config loaded").
    pub listed: Option<Duration>,
    pub loaded: Option<Duration>,
    /// VmHWM since the fake was populated, and RSS at ready.
    pub after: Memory,
    pub cpu: Cpu,
    pub requests: Vec<Request>,
    pub started: Instant,
}

/// One EndpointSlice change and what followed it.
pub struct Change {
    pub service: usize,
    pub expected_clients: usize,
    /// Expected clients that got an EDS response; other clients that got anything.
    pub reached: usize,
    pub stray_clients: usize,
    /// Responses per type to the expected clients.
    pub responses: [u64; 4],
    /// EDS responses and assignments per expected client: fewest and most.
    pub per_client_responses: (u64, u64),
    pub per_client_resources: (u64, u64),
    /// Responses to anyone while the new Pod (step 1, not timed) was added.
    pub pod_step_responses: u64,
    /// From the slice write to the last (median) expected proxy's ACK of the new EDS version.
    pub last: Duration,
    pub median: Duration,
    /// From the slice write to pilotfish's "config indexed; pushing", and the build time it logs.
    pub indexed: Option<Duration>,
    pub build: Option<Duration>,
    pub cpu: Cpu,
    /// The new endpoint is in the assignment served afterwards, with the R old ones.
    pub served: bool,
    pub probe: Vec<String>,
}

impl Change {
    pub fn exact(&self) -> bool {
        let only_eds = (0..4).filter(|t| *t != EDS).all(|t| self.responses[t] == 0);
        only_eds
            && self.per_client_responses == (1, 1)
            && self.per_client_resources == (1, 1)
            && self.reached == self.expected_clients
            && self.stray_clients == 0
    }
}

pub struct Fleet {
    pub connect_all: Duration,
    pub after: Memory,
    pub cpu: Cpu,
    /// Resources per proxy at connect-all (CDS, EDS, LDS, RDS): fewest and most.
    pub resources: [(u64, u64); 4],
    pub idle_responses: u64,
    pub retries: u64,
}

async fn run(args: &Args, timeline: &Timeline, fake_rt: &Handle, client_rt: &Handle) -> Result<()> {
    let shape = &args.shape;
    let fake = Arc::new(fake_rt.spawn(FakeApiServer::start()).await?);
    eprintln!(
        "kube_sync: populating the fake API server ({} Services, {} namespaces)…",
        shape.services, shape.namespaces
    );
    let t = Instant::now();
    let populated = shape.populate(&fake)?;
    let populate = t.elapsed();

    let (sync, xds_addr) =
        initial_sync(args, timeline, &fake, client_rt, populate, populated).await?;
    eprintln!(
        "kube_sync: ready after {:.2} s; connecting {} sidecars…",
        sync.ready.as_secs_f64(),
        shape.clients
    );

    let stats: Vec<Arc<ClientStats>> = (0..shape.clients).map(|_| Arc::default()).collect();
    let fleet = connect(args, xds_addr, client_rt, &stats).await?;

    let mut changes = Vec::new();
    for k in 1..=args.changes {
        changes.push(endpoint_change(args, timeline, &fake, xds_addr, &stats, k).await?);
    }
    let at_end = observe::memory()?;
    let warnings = timeline.warnings(sync.started);
    eprintln!("kube_sync: timing each step of the sync and of a change on its own…");
    let breakdown = profile::run(&fake, shape).await?;
    let report = report::Report {
        args,
        sync: &sync,
        fleet: &fleet,
        changes: &changes,
        at_end,
        warnings: &warnings,
        breakdown: &breakdown,
    };
    report.print();
    if let Some(c) = changes.iter().find(|c| !c.exact() || !c.served) {
        bail!(
            "EndpointSlice change of svc-{} was not pushed exactly (see the table)",
            c.service
        );
    }
    Ok(())
}

/// Starts `serve` and waits for `/ready`.
async fn initial_sync(
    args: &Args,
    timeline: &Timeline,
    fake: &Arc<FakeApiServer>,
    follower_rt: &Handle,
    populate: Duration,
    populated: cluster::Populated,
) -> Result<(Sync, SocketAddr)> {
    let before = observe::memory()?;
    observe::reset_peak()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let follower = {
        let fake = fake.clone();
        // Not on the fake's runtime: its CPU is the fake's own.
        follower_rt.spawn(observe::follow_requests(
            move || fake.requests(),
            requests.clone(),
        ))
    };
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (xds_addr, status_addr) = (xds.local_addr()?, status.local_addr()?);
    let options = ServeOptions {
        debounce: args.debounce,
        ..ServeOptions::new(ConfigSource::Kubernetes {
            client: fake.client(),
            options: KubeOptions::default(),
            operator: Default::default(),
        })
    };

    let cpu0 = Cpu::now()?;
    let started = Instant::now();
    let server = tokio::spawn(pilotfish::serve::serve(
        options,
        Listeners {
            status: Some(status),
            ..Listeners::new(xds)
        },
        pilotfish::xds::Connections::new(),
        std::future::pending(),
    ));
    loop {
        if server.is_finished() {
            bail!("serve ended before it was ready: {:?}", server.await);
        }
        if started.elapsed() > args.timeout {
            bail!(
                "not ready after {:?}; requests so far: {}",
                args.timeout,
                fake.requests().len()
            );
        }
        if ready(status_addr).await.unwrap_or(false) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let ready = started.elapsed();
    let cpu = Cpu::now()?.since(cpu0);
    let after = observe::memory()?;
    follower.abort();
    let since =
        |line: Option<observe::Logged>| line.map(|l| l.at.saturating_duration_since(started));
    let sync = Sync {
        populate,
        populated,
        before,
        ready,
        listed: since(timeline.first(started, "listed every kind")),
        loaded: since(timeline.first(started, "config loaded")),
        after,
        cpu,
        requests: std::mem::take(&mut *requests.lock().unwrap_or_else(|p| p.into_inner())),
        started,
    };
    Ok((sync, xds_addr))
}

/// `GET /ready` answers 200.
async fn ready(addr: SocketAddr) -> Result<bool> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nhost: pilotfish\r\nconnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.starts_with(b"HTTP/1.1 200"))
}

/// Connects every sidecar and waits until each has ACKed CDS, EDS, LDS and RDS.
async fn connect(
    args: &Args,
    xds_addr: SocketAddr,
    client_rt: &Handle,
    stats: &[Arc<ClientStats>],
) -> Result<Fleet> {
    let cpu0 = Cpu::now()?;
    let start = Instant::now();
    for (i, s) in stats.iter().enumerate() {
        client_rt.spawn(client::run(
            i,
            xds_addr,
            Mode::Sotw,
            args.shape.node(i),
            s.clone(),
            None,
        ));
    }
    wait_for(stats, args.timeout, "connect-all", |_, p| {
        p.converged_at.is_some()
    })
    .await?;
    let connect_all = stats
        .iter()
        .filter_map(|s| s.progress().converged_at)
        .max()
        .map_or(Duration::ZERO, |t| t - start);
    let cpu = Cpu::now()?.since(cpu0);
    let after = observe::memory()?;
    let at_connect: Vec<[[u64; 4]; 2]> = stats.iter().map(|s| s.counts()).collect();
    let wanted: Vec<(u64, u64)> = stats
        .iter()
        .map(|s| s.progress())
        .map(|p| (p.eds_wanted as u64, p.rds_wanted as u64))
        .collect();
    let span = |v: Vec<u64>| {
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    let resources = [
        span(at_connect.iter().map(|c| c[1][CDS]).collect()),
        span(wanted.iter().map(|w| w.0).collect()),
        span(at_connect.iter().map(|c| c[1][LDS]).collect()),
        span(wanted.iter().map(|w| w.1).collect()),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_responses: u64 = stats
        .iter()
        .zip(&at_connect)
        .map(|(s, before)| (0..4).map(|t| s.counts()[0][t] - before[0][t]).sum::<u64>())
        .sum();
    let retries = stats
        .iter()
        .map(|s| s.retries.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    Ok(Fleet {
        connect_all,
        after,
        cpu,
        resources,
        idle_responses,
        retries,
    })
}

/// Polls the clients until `done` holds for every one; fails on a client error or after `timeout`.
async fn wait_for(
    stats: &[Arc<ClientStats>],
    timeout: Duration,
    what: &str,
    done: impl Fn(usize, &client::Progress) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut pending = 0;
        for (i, s) in stats.iter().enumerate() {
            let p = s.progress();
            if let Some(e) = &p.error {
                bail!("{what}: client {i} failed: {e}");
            }
            if !done(i, &p) {
                pending += 1;
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{what}: {pending} of {} clients not done after {timeout:?}",
                stats.len()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn total_responses(stats: &[Arc<ClientStats>]) -> u64 {
    stats
        .iter()
        .map(|s| s.counts()[0].iter().sum::<u64>())
        .sum()
}

/// Change `k`: a new Pod of one Service (not timed), then its endpoint added to the Service's
/// EndpointSlice (timed until the last sidecar that sees the Service has ACKed it).
async fn endpoint_change(
    args: &Args,
    timeline: &Timeline,
    fake: &FakeApiServer,
    xds_addr: SocketAddr,
    stats: &[Arc<ClientStats>],
    k: usize,
) -> Result<Change> {
    let shape = &args.shape;
    let service = shape.changed_service(k);
    let expect: Vec<bool> = (0..stats.len()).map(|c| shape.sees(c, service)).collect();
    let api =
        |e: fake_apiserver::ApiError| anyhow::anyhow!("writing to the fake API server: {e:?}");

    let before_pod = total_responses(stats);
    let pod_written = Instant::now();
    fake.apply(shape.new_pod(service, k)).map_err(api)?;
    // The Pod is a new revision: wait until it has been pushed, then for a quiet period longer
    // than the debounce window, so that the slice change is a lone change, pushed at once.
    let pushed = async {
        while timeline.first(pod_written, PUSHED).is_none() {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(args.timeout, pushed)
        .await
        .with_context(|| format!("change {k}: the new Pod was never pushed"))?;
    tokio::time::sleep(QUIET).await;
    let pod_step_responses = total_responses(stats) - before_pod;

    let before: Vec<([[u64; 4]; 2], Option<String>)> = stats
        .iter()
        .map(|s| {
            (
                s.counts(),
                s.progress().acked[EDS].as_ref().map(|a| a.version.clone()),
            )
        })
        .collect();
    let cpu0 = Cpu::now()?;
    let t0 = Instant::now();
    fake.apply(shape.grown_slice(service, k)).map_err(api)?;
    let label = format!("EndpointSlice change {k} (svc-{service})");
    wait_for(stats, args.timeout, &label, |i, p| {
        !expect[i] || p.acked[EDS].as_ref().map(|a| &a.version) != before[i].1.as_ref()
    })
    .await?;
    tokio::time::sleep(QUIET).await;
    let cpu = Cpu::now()?.since(cpu0);

    let (mut acks, mut responses) = (Vec::new(), [0u64; 4]);
    let (mut per_responses, mut per_resources) = ((u64::MAX, 0), (u64::MAX, 0));
    let (mut reached, mut stray_clients) = (0, 0);
    for ((s, (counts, _)), &expected) in stats.iter().zip(&before).zip(&expect) {
        let now = s.counts();
        let heard = |t: usize| now[0][t] - counts[0][t];
        if !expected {
            stray_clients += usize::from((0..4).any(|t| heard(t) > 0));
            continue;
        }
        let ack = s.progress().acked[EDS].clone().context("an ACK vanished")?;
        acks.push(ack.at.saturating_duration_since(t0));
        for (t, r) in responses.iter_mut().enumerate() {
            *r += heard(t);
        }
        let (r, x) = (heard(EDS), now[1][EDS] - counts[1][EDS]);
        reached += usize::from(r > 0);
        per_responses = (per_responses.0.min(r), per_responses.1.max(r));
        per_resources = (per_resources.0.min(x), per_resources.1.max(x));
    }
    acks.sort();
    let indexed = timeline.first(t0, PUSHED);

    // A sidecar that is not one of the clients, in the Service's namespace, reads what is served.
    let probe = probe::endpoints(
        xds_addr,
        shape.probe_node(service),
        &shape.eds_cluster(service),
    )
    .await?;
    let new_endpoint = format!("{}:9080", shape.scaled_pod_ip(k));
    let served = probe.len() == shape.replicas + 1 && probe.contains(&new_endpoint);

    Ok(Change {
        service,
        expected_clients: acks.len(),
        reached,
        stray_clients,
        responses,
        per_client_responses: per_responses,
        per_client_resources: per_resources,
        pod_step_responses,
        last: acks.last().copied().unwrap_or_default(),
        median: acks.get(acks.len() / 2).copied().unwrap_or_default(),
        indexed: indexed.as_ref().map(|l| l.at.saturating_duration_since(t0)),
        build: indexed.as_ref().and_then(|l| l.duration("elapsed")),
        cpu,
        served,
        probe,
    })
}
