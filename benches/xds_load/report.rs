//! The report printed at the end of a run: a Markdown table of the metrics, one row per change,
//! and a JSON summary line for scripts.

use std::time::Duration;

use serde_json::json;

use super::client::{CDS, EDS, LDS, RDS};
use super::mesh::Scoping;
use super::server::Memory;
use super::{Args, Change, ProxyKind, sorted};

pub struct Report<'a> {
    pub args: &'a Args,
    pub fd_limit: u64,
    pub load_time: Duration,
    pub baseline: Memory,
    pub after_connect: Memory,
    /// After the 1 s idle that follows connect-all.
    pub steady: Memory,
    pub at_end: Memory,
    pub connect_all: Duration,
    pub converged: Vec<Duration>,
    pub server_cpu: f64,
    pub own_cpu: f64,
    pub at_connect: Vec<[[u64; 4]; 2]>,
    pub wanted: Vec<(usize, usize)>,
    pub clusters: u64,
    pub retries: u64,
    pub idle: [u64; 4],
    pub changes: Vec<Change>,
    pub csds: Csds,
    pub log: Vec<String>,
}

/// CSDS against the converged fleet (see `measure_csds`).
pub struct Csds {
    pub status_time: Duration,
    pub status_bytes: usize,
    pub config_time: Duration,
    pub config_bytes: usize,
    pub resources: usize,
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
        (
            lasts.get(lasts.len() / 2).copied().unwrap_or_default(),
            lasts.last().copied().unwrap_or_default(),
        )
    }

    pub fn print(&self) {
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
        let span = |v: Vec<u64>| match (v.iter().min(), v.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => format!("{lo}"),
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            _ => "-".into(),
        };
        let eds_wanted = self.wanted.iter().map(|w| w.0).min().unwrap_or(0);
        let resources = format!(
            "{} / {} / {} / {}",
            span(self.at_connect.iter().map(|c| c[1][CDS]).collect()),
            span(self.wanted.iter().map(|w| w.0 as u64).collect()),
            span(self.at_connect.iter().map(|c| c[1][LDS]).collect()),
            span(self.wanted.iter().map(|w| w.1 as u64).collect()),
        );
        let one_version = a.proxy == ProxyKind::Gateway;
        let route_ok = self
            .kind("route")
            .iter()
            .all(|c| c.expected(RDS, None, one_version));
        let eds_ok = self
            .kind("endpoint")
            .iter()
            .all(|c| c.expected(EDS, Some(1), one_version));
        let (route_median, route_max) = self.latency("route");
        let (eds_median, eds_max) = self.latency("endpoint");
        let per_conn = self
            .after_connect
            .rss_kib
            .saturating_sub(self.baseline.rss_kib) as f64
            / n as f64;
        let mode = format!("{:?}", a.mode).to_lowercase();
        let proxy = format!("{:?}", a.proxy).to_lowercase();
        let scoping = match a.scoping {
            Scoping::None => "none".to_string(),
            Scoping::Namespace => "a Sidecar per namespace".to_string(),
            Scoping::Root => "a root-namespace default Sidecar".to_string(),
        };
        let warnings = self
            .log
            .iter()
            .filter(|l| !l.contains("config loaded"))
            .count();
        let concerned = |kind: &str| {
            let v: Vec<u64> = self
                .kind(kind)
                .iter()
                .map(|c| c.expected_clients as u64)
                .collect();
            span(v)
        };

        match a.proxy {
            ProxyKind::Gateway => println!(
                "\n### xds_load: {mode}, {} gateways, {} services\n",
                a.clients, a.services
            ),
            ProxyKind::Sidecar => println!(
                "\n### xds_load: {mode}, {} sidecars, {} services in {} namespaces, scoping: {scoping}{}\n",
                a.clients,
                a.services,
                a.namespaces,
                if a.shared_labels {
                    ", labels shared per namespace (experiment)"
                } else {
                    ""
                }
            ),
        }
        println!("| metric | value |\n|---|---|");
        let row = |k: &str, v: String| println!("| {k} | {v} |");
        row(
            "resources per client (CDS / EDS names / LDS / RDS names)",
            resources,
        );
        row("config load (spawn → ready)", ms(self.load_time));
        row(
            "**connect-all** (start → last client ACKed all 4 types)",
            ms(self.connect_all),
        );
        row(
            "per-client convergence p50 / p99",
            format!(
                "{} / {}",
                ms(percentile(&self.converged, 0.5)),
                ms(percentile(&self.converged, 0.99))
            ),
        );
        row(
            "server CPU during connect-all (utime+stime)",
            format!(
                "{:.2} s ({:.2} cores avg)",
                self.server_cpu,
                self.server_cpu / self.connect_all.as_secs_f64()
            ),
        );
        row(
            "client (bench process) CPU during connect-all",
            format!("{:.2} s", self.own_cpu),
        );
        row(
            "server VmRSS / VmHWM, baseline (config loaded, no client)",
            format!(
                "{} / {}",
                mib(self.baseline.rss_kib),
                mib(self.baseline.hwm_kib)
            ),
        );
        row(
            "server VmRSS / VmHWM after connect-all",
            format!(
                "{} / {}",
                mib(self.after_connect.rss_kib),
                mib(self.after_connect.hwm_kib)
            ),
        );
        row(
            "server VmRSS / VmHWM steady (1 s idle after connect-all)",
            format!(
                "{} / {}",
                mib(self.steady.rss_kib),
                mib(self.steady.hwm_kib)
            ),
        );
        row(
            "server RSS per connection ((after − baseline) / N)",
            format!("{per_conn:.1} KiB"),
        );
        row(
            "server VmRSS / VmHWM at the end",
            format!(
                "{} / {}",
                mib(self.at_end.rss_kib),
                mib(self.at_end.hwm_kib)
            ),
        );
        row(
            "connection attempts retried (failed before any response)",
            format!("{}", self.retries),
        );
        row(
            "responses per client at connect-all (CDS/EDS/LDS/RDS)",
            per_client.join(" / "),
        );
        row(
            "responses in 1 s idle after connect-all (CDS/EDS/LDS/RDS)",
            format!("{:?}", self.idle),
        );
        row(
            &format!(
                "**route change** → last ACK, median / max of {}",
                self.kind("route").len()
            ),
            format!("{} / {}", ms(route_median), ms(route_max)),
        );
        row(
            "route change: clients concerned (see the service)",
            concerned("route"),
        );
        row(
            "route change sent only RDS, 1 response per concerned client, nothing to others",
            if route_ok {
                "yes".into()
            } else {
                "**NO** (see below)".into()
            },
        );
        row(
            &format!(
                "**endpoint change** → last ACK, median / max of {}",
                self.kind("endpoint").len()
            ),
            format!("{} / {}", ms(eds_median), ms(eds_max)),
        );
        row(
            "endpoint change: clients concerned (see the service)",
            concerned("endpoint"),
        );
        row(
            "endpoint change sent only EDS, 1 response with 1 assignment per concerned client, nothing to others",
            if eds_ok {
                "yes".into()
            } else {
                "**NO** (see below)".into()
            },
        );
        let c = &self.csds;
        row(
            "CSDS: every proxy's status, no bodies (`proxy-status`)",
            format!(
                "{} ({:.1} KiB)",
                ms(c.status_time),
                c.status_bytes as f64 / 1024.0
            ),
        );
        row(
            "CSDS: one proxy's config with bodies (`proxy-config`)",
            format!(
                "{} ({} resources, {:.1} KiB)",
                ms(c.config_time),
                c.resources,
                c.config_bytes as f64 / 1024.0
            ),
        );
        row("server log lines at warn or above", format!("{warnings}"));

        println!(
            "\n| change | of | concerned clients | reached | last ACK | median ACK | responses CDS/EDS/LDS/RDS (concerned) | resources CDS/EDS/LDS/RDS (concerned) | changed type per client: responses, resources | versions | other clients that heard anything (responses CDS/EDS/LDS/RDS) | server CPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for c in &self.changes {
            let (per_r, per_x) = (c.per_client_responses, c.per_client_resources);
            println!(
                "| {} | {} | {} | {} | {} | {} | {:?} | {:?} | {}–{}, {}–{} | {} | {} {:?} | {:.3} s |",
                c.kind,
                c.target,
                c.expected_clients,
                c.reached,
                ms(c.last),
                ms(c.median),
                c.responses,
                c.resources,
                per_r.0,
                per_r.1,
                per_x.0,
                per_x.1,
                c.versions,
                c.stray_clients,
                c.stray_responses,
                c.server_cpu
            );
        }
        for line in self
            .log
            .iter()
            .filter(|l| !l.contains("config loaded"))
            .take(20)
        {
            println!("server: {line}");
        }
        let summary = json!({
            "bench": "xds_load",
            "mode": mode,
            "proxy": proxy,
            "namespaces": a.namespaces,
            "scoping": scoping,
            "shared_labels": a.shared_labels,
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
            "steady": self.steady,
            "at_end": self.at_end,
            "idle_responses": self.idle,
            "route_change_last_ack_ms": self.kind("route").iter().map(|c| c.last.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "endpoint_change_last_ack_ms": self.kind("endpoint").iter().map(|c| c.last.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "route_change_only_rds": route_ok,
            "endpoint_change_only_one_eds": eds_ok,
            "route_change_server_cpu_s": self.kind("route").iter().map(|c| c.server_cpu).collect::<Vec<_>>(),
            "endpoint_change_server_cpu_s": self.kind("endpoint").iter().map(|c| c.server_cpu).collect::<Vec<_>>(),
            "endpoint_change_concerned_clients": self.kind("endpoint").iter().map(|c| c.expected_clients).collect::<Vec<_>>(),
            "endpoint_change_stray_clients": self.kind("endpoint").iter().map(|c| c.stray_clients).collect::<Vec<_>>(),
            "server_warnings": warnings,
            "connect_retries": self.retries,
        });
        println!("\n{summary}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}
