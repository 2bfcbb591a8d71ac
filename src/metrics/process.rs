//! The `process_*` metrics every Prometheus client library exports, which istiod's dashboards
//! chart its memory and CPU with. They are read from `/proc` when scraped, so they cost nothing
//! between scrapes. Linux only: elsewhere they stay zero.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Handles on the gauges, refreshed by [`ProcessMetrics::refresh`].
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    cpu_seconds: Gauge<f64, AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    start_time_seconds: Gauge<f64, AtomicU64>,
}

/// What `/proc/self/stat` says, in the units the metrics use.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    /// Seconds after boot.
    started_after_boot: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

impl ProcessMetrics {
    pub fn register(registry: &mut Registry) -> ProcessMetrics {
        let m = ProcessMetrics::default();
        registry.register(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            m.resident_bytes.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            m.virtual_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors.",
            m.open_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            m.start_time_seconds.clone(),
        );
        m
    }

    /// Reads `/proc` now; a file that cannot be read leaves its gauges as they were.
    pub fn refresh(&self) {
        let (ticks, page) = clock_ticks_and_page_size();
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s, ticks, page))
        {
            self.cpu_seconds.set(stat.cpu_seconds);
            self.resident_bytes.set(saturating_i64(stat.resident_bytes));
            self.virtual_bytes.set(saturating_i64(stat.virtual_bytes));
            if let Some(boot) = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| boot_time(&s))
            {
                self.start_time_seconds.set(boot + stat.started_after_boot);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(saturating_i64(fds.count() as u64));
        }
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(target_os = "linux")]
fn clock_ticks_and_page_size() -> (f64, u64) {
    // SAFETY: sysconf only reads a constant of the running system.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        if ticks > 0 { ticks as f64 } else { 100.0 },
        u64::try_from(page).unwrap_or(4096),
    )
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks_and_page_size() -> (f64, u64) {
    (100.0, 4096)
}

/// `/proc/self/stat`: the fields after the command name (which may hold spaces and parens, so
/// the split is at its last `)`); utime and stime are fields 14 and 15, starttime 22, vsize 23
/// and rss (pages) 24, counting from 1.
fn parse_stat(stat: &str, ticks_per_second: f64, page_size: u64) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
        started_after_boot: field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// The boot time (`btime`, seconds since the epoch) in `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| s as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a paren, as a process may name itself.
        let stat = "4242 (tokio) worker) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    8 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(stat, 100.0, 4096),
            Some(Stat {
                cpu_seconds: 3.0,
                started_after_boot: 123.45,
                virtual_bytes: 104_857_600,
                resident_bytes: 2560 * 4096,
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1", 100.0, 4096), None);
    }

    #[test]
    fn boot_time_is_btime() {
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1.7e9)
        );
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reports_memory_and_descriptors() {
        let mut registry = Registry::default();
        let m = ProcessMetrics::register(&mut registry);
        m.refresh();
        assert!(m.resident_bytes.get() > 0);
        assert!(m.virtual_bytes.get() >= m.resident_bytes.get());
        assert!(m.open_fds.get() > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = m.start_time_seconds.get();
        assert!(
            started > now - 3600.0 && started <= now + 1.0,
            "{started} vs {now}"
        );
    }
}
