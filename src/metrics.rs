//! Prometheus metrics under istiod's names, label names and units, so its dashboards and alerts
//! keep working (see istio's `pilot/pkg/xds/monitoring.go`, `pilot/pkg/model/push_context.go`
//! and `security/pkg/server/ca/monitoring.go`).
//!
//! One process-wide registry: the events happen deep inside connection tasks, and threading a
//! handle through every constructor would buy nothing. The per-response metrics are atomics
//! created up front for each xDS type, so the hot path takes no lock.
//!
//! istiod exposes counters without the `_total` suffix (`pilot_xds_pushes`, not
//! `pilot_xds_pushes_total`), which `prometheus-client` always appends to its `Counter`; ours
//! are [`Count`]s, encoded under the bare name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::xds::TypeUrl;

mod process;

/// The `Content-Type` of what [`Metrics::encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// istiod's buckets for push and convergence times, in seconds.
const TIME_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const PUSH_CONTEXT_BUCKETS: [f64; 6] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0];
/// 10K, 1M, 4M (gRPC's default limit), 10M, 40M.
const SIZE_BUCKETS: [f64; 6] = [
    1.0,
    10_000.0,
    1_000_000.0,
    4_000_000.0,
    10_000_000.0,
    40_000_000.0,
];

/// Counters registered as [`Count`]; their `# TYPE` line is rewritten to `counter`.
const COUNTERS: [&str; 6] = [
    "pilotfish_xds_rejected_objects",
    "pilot_xds_pushes",
    "pilot_total_xds_rejects",
    "citadel_server_csr_count",
    "citadel_server_success_cert_issuance_count",
    "pilot_total_xds_internal_errors",
];

type TypeLabel = [(&'static str, &'static str); 1];
type VersionLabel = [(&'static str, String); 1];
/// `type`, `kind`, `namespace`, `name` of a rejected object.
type RejectedObjectLabels = [(&'static str, String); 4];

/// A monotonic counter encoded under its bare name, as istiod's are.
#[derive(Debug, Clone, Default)]
pub struct Count(Arc<AtomicU64>);

impl Count {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Count {
    // `Unknown` is the one type the encoder adds no suffix to; see `COUNTERS`.
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram of atomics: `prometheus-client`'s takes a mutex per observation, and the
/// response-size one is observed for every response sent.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound plus `+Inf`; not cumulative.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// `f64` bits.
    sum: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram(Arc::new(HistogramInner {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let h = &self.0;
        let i = h
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(h.bounds.len());
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        // `fetch_update` only fails when the closure returns `None`, which it never does.
        let _ = h
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let bounds = h.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(h.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // Bucket counts are read one by one; `count` is their sum so the exposition agrees.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The per-response metrics of one xDS type.
#[derive(Debug, Clone)]
pub struct XdsTypeMetrics {
    /// `pilot_xds_pushes{type}`: responses sent.
    pub pushes: Count,
    /// `pilot_total_xds_rejects{type}`: NACKs.
    pub rejects: Count,
    /// `pilot_xds_config_size_bytes{type}`.
    pub config_size: AtomicHistogram,
}

/// The registry and a handle on every metric in it.
pub struct Metrics {
    registry: Registry,
    process: process::ProcessMetrics,
    xds_clients: Family<VersionLabel, Gauge>,
    types: [XdsTypeMetrics; TypeUrl::ALL.len()],
    /// `pilot_xds_push_time`: building a push context (pilotfish generates once per push, not
    /// per proxy, so this is the whole of a push's work).
    pub push_time: AtomicHistogram,
    /// `pilot_pushcontext_init_seconds`: the same measurement, under istiod's other name for it.
    pub push_context_init: AtomicHistogram,
    /// `pilot_proxy_convergence_time`: from a response's send to the proxy's ACK of it.
    pub convergence: AtomicHistogram,
    /// `pilot_debounce_time`: from the first change of a push to the push; zero for a change
    /// after a quiet period, which is pushed at once.
    pub debounce: AtomicHistogram,
    /// `pilot_total_xds_internal_errors`: the server failed a proxy for reasons of its own
    /// (issuing its certificate, reading a resource it built), not the proxy's.
    pub internal_errors: Count,
    pub services: Gauge,
    pub virtual_services: Gauge,
    /// `citadel_server_csr_count`: CreateCertificate calls.
    pub csr: Count,
    /// `citadel_server_success_cert_issuance_count`.
    pub cert_issued: Count,
    /// `pilotfish_xds_rejected_objects{type,kind,namespace,name}`: NACKs traced to each Istio
    /// object (istiod counts NACKs by type only). One series per object that was ever
    /// rejected, which the config bounds.
    rejected_objects: Family<RejectedObjectLabels, Count>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let process = process::ProcessMetrics::register(&mut registry);
        let xds_clients = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS.",
            xds_clients.clone(),
        );
        let pushes = Family::<TypeLabel, Count>::default();
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds.",
            pushes.clone(),
        );
        let rejects = Family::<TypeLabel, Count>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy.",
            rejects.clone(),
        );
        let sizes =
            Family::<TypeLabel, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
                || AtomicHistogram::new(&SIZE_BUCKETS),
            );
        registry.register_with_unit(
            "pilot_xds_config_size",
            "Distribution of configuration sizes pushed to clients",
            Unit::Bytes,
            sizes.clone(),
        );
        let types = TypeUrl::ALL.map(|ty| {
            let label = [("type", metric_type(ty))];
            XdsTypeMetrics {
                pushes: pushes.get_or_create(&label).clone(),
                rejects: rejects.get_or_create(&label).clone(),
                config_size: sizes.get_or_create(&label).clone(),
            }
        });
        let push_time = AtomicHistogram::new(&TIME_BUCKETS);
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            push_time.clone(),
        );
        let push_context_init = AtomicHistogram::new(&PUSH_CONTEXT_BUCKETS);
        registry.register(
            "pilot_pushcontext_init_seconds",
            "Total time in seconds Pilot takes to init pushContext.",
            push_context_init.clone(),
        );
        let convergence = AtomicHistogram::new(&CONVERGENCE_BUCKETS);
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration.",
            convergence.clone(),
        );
        let debounce = AtomicHistogram::new(&TIME_BUCKETS);
        registry.register(
            "pilot_debounce_time",
            "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.",
            debounce.clone(),
        );
        let internal_errors = Count::default();
        registry.register(
            "pilot_total_xds_internal_errors",
            "Total number of internal XDS errors in pilot.",
            internal_errors.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "pilot_services",
            "Total services known to pilot.",
            services.clone(),
        );
        let virtual_services = Gauge::default();
        registry.register(
            "pilot_virt_services",
            "Total virtual services known to pilot.",
            virtual_services.clone(),
        );
        let csr = Count::default();
        registry.register(
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server.",
            csr.clone(),
        );
        let cert_issued = Count::default();
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded.",
            cert_issued.clone(),
        );
        let rejected_objects = Family::<RejectedObjectLabels, Count>::default();
        registry.register(
            "pilotfish_xds_rejected_objects",
            "xDS responses rejected by proxies, by the Istio object the rejected resources came from.",
            rejected_objects.clone(),
        );
        Metrics {
            rejected_objects,
            registry,
            process,
            xds_clients,
            types,
            push_time,
            push_context_init,
            convergence,
            debounce,
            internal_errors,
            services,
            virtual_services,
            csr,
            cert_issued,
        }
    }

    /// The metrics of one xDS type: an index into `types`, built in `TypeUrl::ALL` order.
    pub fn xds_type(&self, ty: TypeUrl) -> &XdsTypeMetrics {
        let i = match ty {
            TypeUrl::Cluster => 0,
            TypeUrl::ClusterLoadAssignment => 1,
            TypeUrl::Listener => 2,
            TypeUrl::RouteConfiguration => 3,
            TypeUrl::Secret => 4,
        };
        &self.types[i]
    }

    /// A proxy of `istio_version` (its `ISTIO_VERSION` metadata) connected (`+1`) or left (`-1`).
    pub fn xds_clients_add(&self, istio_version: &str, delta: i64) {
        self.xds_clients
            .get_or_create(&[("version", istio_version.to_string())])
            .inc_by(delta);
    }

    /// Connected proxies of `istio_version`.
    pub fn xds_clients(&self, istio_version: &str) -> i64 {
        self.xds_clients
            .get_or_create(&[("version", istio_version.to_string())])
            .get()
    }

    /// A proxy rejected a response of `ty` built from `object`.
    pub fn rejected_object(&self, ty: TypeUrl, object: &crate::config::ObjectKey) {
        self.rejected_objects
            .get_or_create(&rejected_object_labels(ty, object))
            .inc();
    }

    /// How many rejections of `ty` were traced to `object`.
    pub fn rejected_objects(&self, ty: TypeUrl, object: &crate::config::ObjectKey) -> u64 {
        self.rejected_objects
            .get_or_create(&rejected_object_labels(ty, object))
            .get()
    }

    /// A push context was built in `elapsed`, with these counts from its index.
    pub fn pushed(&self, elapsed: Duration, services: usize, virtual_services: usize) {
        self.push_time.observe(elapsed.as_secs_f64());
        self.push_context_init.observe(elapsed.as_secs_f64());
        self.services
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.virtual_services
            .set(i64::try_from(virtual_services).unwrap_or(i64::MAX));
    }

    /// Everything, in the Prometheus text format (0.0.4) istiod serves.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.process.refresh();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        // A float counter the crate has no type for: registered as a gauge, typed here.
        text = text.replacen(
            "# TYPE process_cpu_seconds_total gauge\n",
            "# TYPE process_cpu_seconds_total counter\n",
            1,
        );
        for name in COUNTERS {
            text = text.replacen(
                &format!("# TYPE {name} untyped\n"),
                &format!("# TYPE {name} counter\n"),
                1,
            );
        }
        Ok(text)
    }
}

fn rejected_object_labels(ty: TypeUrl, object: &crate::config::ObjectKey) -> RejectedObjectLabels {
    [
        ("type", metric_type(ty).to_string()),
        ("kind", object.kind.name().to_string()),
        ("namespace", object.namespace.clone()),
        ("name", object.name.clone()),
    ]
}

/// istiod's `type` label value (`v3.GetMetricType`).
pub fn metric_type(ty: TypeUrl) -> &'static str {
    match ty {
        TypeUrl::Cluster => "cds",
        TypeUrl::ClusterLoadAssignment => "eds",
        TypeUrl::Listener => "lds",
        TypeUrl::RouteConfiguration => "rds",
        TypeUrl::Secret => "sds",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// One sample line of the text format.
    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        let Some((name, labels)) = series.split_once('{') else {
            return (series.to_string(), vec![], value);
        };
        let labels = labels.strip_suffix('}').unwrap();
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (
                    k.to_string(),
                    v.strip_prefix('"')
                        .unwrap()
                        .strip_suffix('"')
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        (name.to_string(), labels, value)
    }

    /// Every sample of the exposition, checking each belongs to the family its `# TYPE` named.
    fn parse(text: &str) -> Vec<Sample> {
        let mut family: Option<(String, String)> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&ty), "{line}");
                family = Some((name.to_string(), ty.to_string()));
            } else if line.starts_with("# HELP ") {
                continue;
            } else {
                let sample = parse_sample(line);
                let (name, ty) = family.as_ref().unwrap();
                let ok = match ty.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| sample.0 == format!("{name}{s}")),
                    _ => &sample.0 == name,
                };
                assert!(ok, "sample {line} outside family {name} ({ty})");
                samples.push(sample);
            }
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    #[test]
    fn exposition_has_istiods_names_labels_and_types() {
        let m = Metrics::new();
        m.xds_type(TypeUrl::Listener).pushes.inc();
        m.xds_type(TypeUrl::Listener).config_size.observe(20_000.0);
        m.xds_type(TypeUrl::Cluster).rejects.inc();
        m.xds_clients_add("1.28.0", 1);
        m.pushed(Duration::from_millis(50), 7, 3);
        m.convergence.observe(0.2);
        m.csr.inc();
        let text = m.encode().unwrap();
        assert!(text.contains("# TYPE pilot_xds_pushes counter\n"), "{text}");
        assert!(
            text.contains("# TYPE pilot_xds_config_size_bytes histogram\n"),
            "{text}"
        );
        let samples = parse(&text);
        assert_eq!(
            value(&samples, "pilot_xds_pushes", &[("type", "lds")]),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "pilot_xds_pushes", &[("type", "cds")]),
            Some(0.0)
        );
        assert_eq!(
            value(&samples, "pilot_total_xds_rejects", &[("type", "cds")]),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "pilot_xds", &[("version", "1.28.0")]),
            Some(1.0)
        );
        assert_eq!(value(&samples, "pilot_services", &[]), Some(7.0));
        assert_eq!(value(&samples, "pilot_virt_services", &[]), Some(3.0));
        assert_eq!(value(&samples, "citadel_server_csr_count", &[]), Some(1.0));
        assert_eq!(
            value(&samples, "citadel_server_success_cert_issuance_count", &[]),
            Some(0.0)
        );
        // 20 kB falls above the 10K bucket and within 1M; buckets are cumulative.
        assert_eq!(
            value(
                &samples,
                "pilot_xds_config_size_bytes_bucket",
                &[("type", "lds"), ("le", "10000")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "pilot_xds_config_size_bytes_bucket",
                &[("type", "lds"), ("le", "1e+06")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "pilot_xds_config_size_bytes_count",
                &[("type", "lds")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "pilot_xds_push_time_bucket", &[("le", "0.1")]),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "pilot_xds_push_time_bucket", &[("le", "0.01")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "pilot_proxy_convergence_time_bucket",
                &[("le", "+Inf")]
            ),
            Some(1.0)
        );
        assert!(
            value(&samples, "pilot_proxy_convergence_time_sum", &[])
                .is_some_and(|s| (s - 0.2).abs() < 1e-9)
        );
        // istiod's counters have no `_total`; only the conventional process CPU counter does.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if line.contains("_total ") || line.contains("_total{") {
                assert!(line.starts_with("process_cpu_seconds_total "), "{line}");
            }
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }

    #[test]
    fn histogram_counts_values_past_the_last_bound_in_inf() {
        let h = AtomicHistogram::new(&TIME_BUCKETS);
        h.observe(100.0);
        h.observe(0.001);
        assert_eq!(h.count(), 2);
        assert!((h.sum() - 100.001).abs() < 1e-9);
        assert_eq!(h.0.buckets[TIME_BUCKETS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.0.buckets[0].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn clients_gauge_goes_back_down() {
        let m = Metrics::new();
        m.xds_clients_add("", 1);
        m.xds_clients_add("", 1);
        m.xds_clients_add("", -1);
        assert_eq!(m.xds_clients(""), 1);
    }
}
