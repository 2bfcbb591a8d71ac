//! The report printed at the end of a run, in Markdown, ready for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::Duration;

use super::observe::{Logged, Memory, Request};
use super::profile::Breakdown;
use super::{Args, Change, Fleet, Sync};

pub struct Report<'a> {
    pub args: &'a Args,
    pub sync: &'a Sync,
    pub fleet: &'a Fleet,
    pub changes: &'a [Change],
    pub at_end: Memory,
    pub warnings: &'a [Logged],
    pub breakdown: &'a Breakdown,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), ms)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |l| l.split(' ').take(3).collect::<Vec<_>>().join(" "),
    )
}

/// Per listed resource (plural): list pages, first list request, last page request and the
/// watch request that follows the list, from the start of `serve`.
struct Listing {
    pages: usize,
    first: Duration,
    last_page: Duration,
    watch: Option<Duration>,
}

fn listings(sync: &Sync) -> BTreeMap<String, Listing> {
    let mut out: BTreeMap<String, Listing> = BTreeMap::new();
    for Request { at, method, target } in &sync.requests {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if method != "GET" || query.is_empty() {
            continue;
        }
        let resource = path.rsplit('/').next().unwrap_or(path).to_string();
        let at = at.saturating_duration_since(sync.started);
        let watch = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
        let entry = out.entry(resource).or_insert(Listing {
            pages: 0,
            first: at,
            last_page: at,
            watch: None,
        });
        if watch {
            entry.watch.get_or_insert(at);
        } else if query.contains("limit=") || entry.watch.is_none() {
            entry.pages += 1;
            entry.last_page = at;
        }
    }
    out
}

impl Report<'_> {
    pub fn print(&self) {
        let (a, s, f) = (&self.args.shape, self.sync, self.fleet);
        let p = &s.populated;
        println!("\n## kube_sync");
        println!(
            "\n{} Services in {} namespaces, {} Pods and {} endpoints ({} per EndpointSlice), {} VirtualServices + as many DestinationRules, {}; {} sidecars over SotW ADS; debounce {} ms.",
            a.services,
            a.namespaces,
            p.pods,
            p.endpoints,
            a.replicas,
            a.virtual_services,
            if a.scoped {
                "a Sidecar per namespace (egress ./*, istio-system/*)"
            } else {
                "no Sidecar"
            },
            a.clients,
            self.args.debounce.as_millis()
        );
        println!(
            "Machine: {} cores; load average {} at the end. Populating the fake: {} objects in {:.1} s (not timed); one Pod is {} bytes of JSON, one EndpointSlice {}.",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average(),
            p.objects,
            s.populate.as_secs_f64(),
            p.pod_bytes,
            p.slice_bytes
        );

        println!("\n### Initial sync\n");
        println!("| | |\n|---|---|");
        println!("| **`serve` → `/ready` 200** | **{}** |", ms(s.ready));
        println!(
            "| `serve` → every kind listed, the store's first revision | {} |",
            opt_ms(s.listed)
        );
        println!(
            "| `serve` → first push context built (\"config loaded\") | {} |",
            opt_ms(s.loaded)
        );
        println!(
            "| CPU during it: pilotfish / fake API server / total | {:.2} s / {:.2} s / {:.2} s |",
            s.cpu.pilotfish,
            s.cpu.fake,
            s.cpu.pilotfish + s.cpu.fake + s.cpu.clients
        );
        println!(
            "| RSS before `serve` (the fake holding the cluster) | {} |",
            mib(s.before.rss_kib)
        );
        println!(
            "| **peak RSS during the sync** (VmHWM) / RSS at ready | **{}** (+{} over before) / {} (+{}) |",
            mib(s.after.hwm_kib),
            mib(s.after.hwm_kib.saturating_sub(s.before.rss_kib)),
            mib(s.after.rss_kib),
            mib(s.after.rss_kib.saturating_sub(s.before.rss_kib))
        );
        println!(
            "\nRequests to the fake (stamped on arrival, ±2 ms), from the start of `serve`:\n"
        );
        println!(
            "| resource | list pages | first request | last page requested | watch opened |\n|---|---|---|---|---|"
        );
        let mut listings: Vec<(String, Listing)> = listings(s).into_iter().collect();
        listings.sort_by_key(|(_, l)| l.watch.unwrap_or(Duration::MAX));
        for (resource, l) in &listings {
            println!(
                "| {resource} | {} | {} | {} | {} |",
                l.pages,
                ms(l.first),
                ms(l.last_page),
                opt_ms(l.watch)
            );
        }

        println!("\n### Sidecars\n");
        let [cds, eds, lds, rds] = f.resources.map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            }
        });
        println!("| | |\n|---|---|");
        println!("| resources per proxy (CDS / EDS / LDS / RDS) | {cds} / {eds} / {lds} / {rds} |");
        println!(
            "| connect-all (first connect → last proxy ACKed all four types) | {} |",
            ms(f.connect_all)
        );
        println!(
            "| CPU for it: pilotfish / clients | {:.2} s / {:.2} s |",
            f.cpu.pilotfish, f.cpu.clients
        );
        println!(
            "| RSS after connect-all / at the end | {} / {} |",
            mib(f.after.rss_kib),
            mib(self.at_end.rss_kib)
        );
        println!(
            "| responses in 1 s idle after; connection retries | {}; {} |",
            f.idle_responses, f.retries
        );

        println!("\n### EndpointSlice changes\n");
        println!(
            "One endpoint added to one Service's slice; its Pod was added first and pushed (not timed), then {} ms of quiet.\n",
            super::QUIET.as_millis()
        );
        println!(
            "| # | Service | proxies that see it | → last ACK | → median ACK | → \"config indexed\" (of which build) | indexed → last ACK | pilotfish CPU | only EDS, 1 assignment, only to them | served with the new endpoint | responses to the Pod step |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, c) in self.changes.iter().enumerate() {
            println!(
                "| {} | svc-{} (ns-{}) | {} | {} | {} | {} ({}) | {} | {:.3} s | {} | {} | {} |",
                i + 1,
                c.service,
                a.namespace_of(c.service),
                c.expected_clients,
                ms(c.last),
                ms(c.median),
                opt_ms(c.indexed),
                opt_ms(c.build),
                opt_ms(c.indexed.map(|at| c.last.saturating_sub(at))),
                c.cpu.pilotfish,
                if c.exact() {
                    "yes".to_string()
                } else {
                    format!(
                        "NO: {:?} responses, {} reached, {} stray",
                        c.responses, c.reached, c.stray_clients
                    )
                },
                if c.served {
                    "yes".to_string()
                } else {
                    format!("NO: {:?}", c.probe)
                },
                c.pod_step_responses,
            );
        }
        let mut lasts: Vec<Duration> = self.changes.iter().map(|c| c.last).collect();
        lasts.sort();
        let mut builds: Vec<Duration> = self.changes.iter().filter_map(|c| c.build).collect();
        builds.sort();
        let median = |v: &[Duration]| v.get(v.len() / 2).copied();
        println!(
            "\n**Change → last proxy's ACK: median {}, worst {}** (build of the push context: median {}).",
            opt_ms(median(&lasts)),
            opt_ms(lasts.last().copied()),
            opt_ms(median(&builds))
        );
        println!(
            "\nTargets: ready in under 2 s — {}; an EndpointSlice change at the proxies in under 100 ms — {} (worst).",
            if s.ready < Duration::from_secs(2) {
                "met"
            } else {
                "NOT met"
            },
            if lasts
                .last()
                .is_some_and(|l| *l < Duration::from_millis(100))
            {
                "met"
            } else {
                "NOT met"
            },
        );
        self.print_breakdown();
        if !self.warnings.is_empty() {
            println!(
                "\n{} warnings or errors logged; the first:",
                self.warnings.len()
            );
            for w in self.warnings.iter().take(5) {
                println!("- {} {} {}", w.level, w.message, w.fields);
            }
        }
    }

    fn print_breakdown(&self) {
        let b = self.breakdown;
        println!(
            "\n### Where the time goes (each step alone, serially, pilotfish idle; index steps: the faster of two runs)\n"
        );
        println!("| step | time |\n|---|---|");
        println!(
            "| the fake serving every page of Pods, Services, EndpointSlices and Namespaces ({} pages, {:.1} MB), nothing decoded | {} |",
            b.pages,
            b.bytes as f64 / 1e6,
            ms(b.fake_lists)
        );
        println!(
            "| of which the Pods' {} pages | {} |",
            b.pod_pages,
            ms(b.fake_pod_lists)
        );
        println!(
            "| JSON → the watchers' objects (Pods: `SlimPod`, only the fields pilotfish reads); of which the Pods | {}; {} |",
            ms(b.decode),
            ms(b.decode_pods)
        );
        println!(
            "| → validated store objects ({} with the Istio kinds; conversion and webhook checks) | {} |",
            b.objects,
            ms(b.convert)
        );
        println!("| into the store, published | {} |", ms(b.store));
        println!(
            "| `index::services::build` (services and their endpoints) | {} |",
            ms(b.services)
        );
        println!(
            "| `Index::build` (includes the line above) | {} |",
            ms(b.index)
        );
        println!(
            "| **`push::build`, first revision** (index and push context: what `serve` builds before ready) | **{}** |",
            ms(b.first_context)
        );
        println!(
            "| everything one sidecar is sent, first proxy of the revision (its clusters and endpoints included) | {} |",
            ms(b.first_proxy)
        );
        println!(
            "| after one EndpointSlice change: `Index::build_after` / **`push::build` with the previous context** | {} / **{}** |",
            ms(b.change_index),
            ms(b.change_context)
        );
        println!(
            "| after it: everything a sidecar of the namespace is sent, first proxy of the new revision | {} |",
            ms(b.change_proxy)
        );
    }
}
