//! What the benchmark reads besides the proxies: pilotfish's own log lines with the instant
//! they were emitted (so the timed path can be split without instrumenting `src/`), when each
//! request reached the fake API server, and this process's memory and per-thread CPU from
//! `/proc`. Each part of the process runs on threads of its own name (see `main`), so CPU
//! splits by thread name.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One log line of pilotfish (or a warning of anything).
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub level: Level,
    pub message: String,
    /// The other fields, `name=value` separated by spaces.
    pub fields: String,
}

/// Every line logged since [`Timeline::install`].
#[derive(Clone, Default)]
pub struct Timeline {
    lines: Arc<Mutex<Vec<Logged>>>,
}

struct Recorder(Timeline);

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, "{}={value:?} ", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = Logged {
            at: Instant::now(),
            level: *event.metadata().level(),
            message: fields.message,
            fields: fields.rest,
        };
        lock(&self.0.lines).push(line);
    }
}

impl Timeline {
    /// Records pilotfish at info and everything else at warn, for the whole process.
    pub fn install() -> Result<Timeline> {
        let timeline = Timeline::default();
        let filter = tracing_subscriber::EnvFilter::new("warn,pilotfish=info");
        let subscriber =
            tracing_subscriber::registry().with(Recorder(timeline.clone()).with_filter(filter));
        tracing::subscriber::set_global_default(subscriber)
            .context("installing the log recorder")?;
        Ok(timeline)
    }

    /// The first line at or after `since` whose message starts with `prefix`.
    pub fn first(&self, since: Instant, prefix: &str) -> Option<Logged> {
        lock(&self.lines)
            .iter()
            .find(|l| l.at >= since && l.message.starts_with(prefix))
            .cloned()
    }

    /// Warnings and errors logged at or after `since`.
    pub fn warnings(&self, since: Instant) -> Vec<Logged> {
        lock(&self.lines)
            .iter()
            .filter(|l| l.at >= since && l.level <= Level::WARN)
            .cloned()
            .collect()
    }
}

impl Logged {
    /// A `Duration` field as `tracing` prints it with `?` (`812.3µs`, `12.5ms`, `1.2s`).
    pub fn duration(&self, name: &str) -> Option<Duration> {
        let value = self
            .fields
            .split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))?;
        let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
            .into_iter()
            .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, scale)))?;
        number
            .parse::<f64>()
            .ok()
            .map(|n| Duration::from_secs_f64(n * scale))
    }
}

/// A request to the fake API server, as first seen by [`follow_requests`].
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    pub target: String,
}

/// Polls the fake's request log every millisecond until aborted, stamping each new request.
/// The stamp is late by at most the poll period plus scheduling (the fake logs no times).
pub async fn follow_requests(
    requests: impl Fn() -> Vec<(String, String)>,
    out: Arc<Mutex<Vec<Request>>>,
) {
    let mut seen = 0;
    loop {
        let all = requests();
        let now = Instant::now();
        let new: Vec<Request> = all[seen.min(all.len())..]
            .iter()
            .map(|(method, target)| Request {
                at: now,
                method: method.clone(),
                target: target.clone(),
            })
            .collect();
        seen = all.len();
        lock(&out).extend(new);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// VmRSS and VmHWM of this process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory() -> Result<Memory> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/self/status"))?;
        let kib = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("bad line {line:?}"))?;
        Ok(kib.parse()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so the next reading is the peak from now.
pub fn reset_peak() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting VmHWM through /proc/self/clear_refs")
}

/// User + system CPU seconds so far of this process's live threads named `name`.
pub fn thread_cpu(name: &str) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A thread may exit between listing and reading: skip it.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        // Fields after the parenthesised name start at field 3 (state); utime is 14, stime 15.
        let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields.get(i).context("short /proc stat")?.parse::<u64>()?;
        }
    }
    Ok(ticks as f64 / hz)
}

/// CPU seconds of each part of the process, read together.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub pilotfish: f64,
    pub fake: f64,
    pub clients: f64,
}

pub const PILOTFISH_THREADS: &str = "pilotfish";
pub const FAKE_THREADS: &str = "fake-apiserver";
pub const CLIENT_THREADS: &str = "ads-clients";

impl Cpu {
    pub fn now() -> Result<Cpu> {
        Ok(Cpu {
            pilotfish: thread_cpu(PILOTFISH_THREADS)?,
            fake: thread_cpu(FAKE_THREADS)?,
            clients: thread_cpu(CLIENT_THREADS)?,
        })
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            pilotfish: self.pilotfish - before.pilotfish,
            fake: self.fake - before.fake,
            clients: self.clients - before.clients,
        }
    }
}
