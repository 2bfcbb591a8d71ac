//! `manifests/addons/`: the Prometheus objects parse as their Kubernetes types with no unknown
//! field; its scrape jobs, played on example pods, find pilotfish on the port the istiod
//! Deployment serves `/metrics` on and a proxy on the port and path `pilotfish bootstrap`
//! opens; and every `pilot_*` / `citadel_*` / `process_*` series the Grafana dashboard queries is one the
//! live metrics registry exports, so neither can drift from the code unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .map(|doc| {
            serde_saphyr::from_str::<Value>(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn prometheus_objects() -> Vec<Value> {
    yaml_docs(&manifests().join("addons/prometheus.yaml"))
}

/// `value` as `T`, failing on any field `T` does not have.
fn typed<T: DeserializeOwned>(value: &Value) -> T {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value.clone(), |p| unknown.push(p.to_string()))
        .unwrap_or_else(|e| panic!("{}: {e}", value["kind"]));
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    assert!(
        unknown.is_empty(),
        "{}: unknown fields {unknown:?}",
        value["kind"]
    );
    typed
}

#[test]
fn prometheus_objects_are_known_kinds_with_known_fields() {
    let mut kinds = BTreeSet::new();
    for object in prometheus_objects() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "ServiceAccount" => drop(typed::<ServiceAccount>(&object)),
            "ClusterRole" => drop(typed::<ClusterRole>(&object)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&object)),
            "ConfigMap" => drop(typed::<ConfigMap>(&object)),
            "Deployment" => drop(typed::<Deployment>(&object)),
            "Service" => drop(typed::<Service>(&object)),
            other => panic!("prometheus.yaml: unexpected kind {other:?}"),
        }
        assert!(kinds.insert(kind.clone()), "two {kind}s");
    }
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}

/// The `prometheus.yml` of the ConfigMap, and the Deployment's mount of it.
fn scrape_config() -> Value {
    let objects = prometheus_objects();
    let map: ConfigMap = typed(objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap());
    let deployment: Deployment = typed(objects.iter().find(|o| o["kind"] == "Deployment").unwrap());
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let volume =
        pod.volumes.unwrap_or_default().into_iter().find(|v| {
            v.config_map.as_ref().map(|c| c.name.as_str()) == map.metadata.name.as_deref()
        });
    let mount_name = volume.expect("the ConfigMap is a volume").name;
    let container = &pod.containers[0];
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == mount_name);
    let file = format!(
        "{}/prometheus.yml",
        mount.expect("the volume is mounted").mount_path
    );
    let args = container.args.clone().unwrap_or_default();
    assert!(args.contains(&format!("--config.file={file}")), "{args:?}");
    let text = &map.data.unwrap()["prometheus.yml"];
    serde_saphyr::from_str(text).unwrap()
}

fn job(config: &Value, name: &str) -> Value {
    let jobs = config["scrape_configs"].as_array().unwrap();
    jobs.iter()
        .find(|j| j["job_name"] == name)
        .unwrap_or_else(|| panic!("no scrape job {name}"))
        .clone()
}

/// Prometheus's relabelling (`keep`, `drop`, `replace`, `labelmap`) over one discovered
/// target; `None` when the target is dropped. Regexes are anchored, as Prometheus's are.
fn relabel(job: &Value, mut labels: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    if let Some(path) = job["metrics_path"].as_str() {
        labels.insert("__metrics_path__".into(), path.into());
    }
    labels
        .entry("__metrics_path__".into())
        .or_insert_with(|| "/metrics".into());
    for rule in job["relabel_configs"].as_array().unwrap() {
        let action = rule["action"].as_str().unwrap_or("replace");
        let regex = Regex::new(&format!(
            "^(?:{})$",
            rule["regex"].as_str().unwrap_or("(.*)")
        ))
        .unwrap();
        let source: Vec<&str> = rule["source_labels"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|l| labels.get(l.as_str().unwrap()).map_or("", String::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let value = source.join(";");
        match action {
            "keep" if !regex.is_match(&value) => return None,
            "drop" if regex.is_match(&value) => return None,
            "keep" | "drop" => {}
            "replace" => {
                if let Some(caps) = regex.captures(&value) {
                    let mut out = String::new();
                    caps.expand(rule["replacement"].as_str().unwrap_or("$1"), &mut out);
                    labels.insert(rule["target_label"].as_str().unwrap().into(), out);
                }
            }
            "labelmap" => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter_map(|(k, v)| regex.captures(k).map(|c| (c[1].to_string(), v.clone())))
                    .collect();
                labels.extend(mapped);
            }
            other => panic!("relabel action {other} not modelled"),
        }
    }
    Some(labels)
}

/// What Kubernetes pod discovery says of one container port of a running pod.
fn pod_target(
    ip: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    port: (&str, i32),
) -> BTreeMap<String, String> {
    let sanitize = |k: &str| k.replace(['.', '/', '-'], "_");
    let mut t = BTreeMap::from([
        ("__address__".to_string(), format!("{ip}:{}", port.1)),
        ("__meta_kubernetes_namespace".into(), "istio-system".into()),
        ("__meta_kubernetes_pod_name".into(), "pod-0".into()),
        ("__meta_kubernetes_pod_ip".into(), ip.into()),
        ("__meta_kubernetes_pod_phase".into(), "Running".into()),
        (
            "__meta_kubernetes_pod_container_port_name".into(),
            port.0.into(),
        ),
    ]);
    for (k, v) in labels {
        t.insert(
            format!("__meta_kubernetes_pod_label_{}", sanitize(k)),
            v.to_string(),
        );
    }
    for (k, v) in annotations {
        t.insert(
            format!("__meta_kubernetes_pod_annotation_{}", sanitize(k)),
            v.to_string(),
        );
    }
    t
}

fn istiod_deployment() -> Deployment {
    let doc = yaml_docs(&manifests().join("istiod/30-deployment.yaml")).remove(0);
    typed(&doc)
}

#[test]
fn the_pilotfish_job_scrapes_metrics_on_the_monitoring_port_serve_listens_on() {
    let deployment = istiod_deployment();
    let template = deployment.spec.unwrap().template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    let container = template.spec.unwrap().containers.remove(0);
    let args = container.args.unwrap();
    let monitoring = args
        .iter()
        .position(|a| a == "--monitoring-address")
        .map(|i| &args[i + 1])
        .unwrap();
    let monitoring_port: i32 = monitoring.rsplit_once(':').unwrap().1.parse().unwrap();
    let labels: Vec<(&str, &str)> = pod_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let job = job(&scrape_config(), "pilotfish");
    let kept: Vec<_> = container
        .ports
        .unwrap()
        .iter()
        .filter_map(|p| {
            let target = pod_target(
                "10.0.0.7",
                &labels,
                &[],
                (p.name.as_deref().unwrap(), p.container_port),
            );
            relabel(&job, target)
        })
        .collect();
    assert_eq!(kept.len(), 1, "one target per istiod pod: {kept:?}");
    assert_eq!(
        kept[0]["__address__"],
        format!("10.0.0.7:{monitoring_port}")
    );
    assert_eq!(
        kept[0]["app"], "istiod",
        "the dashboard selects app=\"istiod\""
    );
    // Another pod in istio-system with the same port name is not pilotfish.
    let other = pod_target(
        "10.0.0.8",
        &[("app", "prometheus")],
        &[],
        ("http-monitoring", monitoring_port),
    );
    assert!(relabel(&job, other).is_none());
    assert_eq!(kept[0]["__metrics_path__"], "/metrics");
}

#[tokio::test]
async fn the_scraped_path_is_served_on_the_monitoring_port() {
    use tower::ServiceExt;
    let path = job(&scrape_config(), "pilotfish")["metrics_path"]
        .as_str()
        .unwrap()
        .to_string();
    let request = axum::http::Request::get(&path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = pilotfish::status::monitoring_router()
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
}

#[test]
fn proxies_are_scraped_where_their_annotations_point() {
    let job = job(&scrape_config(), "kubernetes-pods");
    let port = pilotfish::bootstrap::DEFAULT_STATS_PORT.to_string();
    let annotations = [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", port.as_str()),
        ("prometheus.io/path", pilotfish::bootstrap::STATS_PATH),
    ];
    let labels = [("app", "reviews"), ("version", "v1")];
    for (ip, address) in [
        ("10.1.2.3", format!("10.1.2.3:{port}")),
        ("fd00::5", format!("[fd00::5]:{port}")),
    ] {
        // The app's own port: the annotation, not the discovered port, decides.
        let target = pod_target(ip, &labels, &annotations, ("http", 9080));
        let t = relabel(&job, target).unwrap_or_else(|| panic!("{ip} dropped"));
        assert_eq!(t["__address__"], address);
        assert_eq!(t["__metrics_path__"], pilotfish::bootstrap::STATS_PATH);
        assert_eq!(t["app"], "reviews");
        assert_eq!(t["version"], "v1");
    }
    let unannotated = pod_target("10.1.2.4", &labels, &[], ("http", 9080));
    assert!(relabel(&job, unannotated).is_none());
    let mut finished = pod_target("10.1.2.5", &labels, &annotations, ("http", 9080));
    finished.insert("__meta_kubernetes_pod_phase".into(), "Succeeded".into());
    assert!(relabel(&job, finished).is_none());
}

fn dashboard() -> Value {
    let path = manifests().join("addons/grafana-dashboard-pilotfish.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every query of every panel, rows' nested panels included, with its panel's title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{title}: a target without expr"));
                out.push((title.to_string(), expr.to_string()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The series names the live registry exports: each metric's `# TYPE` name, and for a
/// histogram its `_bucket`, `_sum` and `_count` series.
fn exported_series() -> BTreeSet<String> {
    let metrics = pilotfish::metrics::global();
    // A labelled family prints nothing, not even `# TYPE`, until one label set exists; a proxy
    // connecting creates `pilot_xds`'s. Adding 0 creates it without counting anyone.
    metrics.xds_clients_add("1.28.0", 0);
    let text = metrics.encode().unwrap();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        } else {
            series.insert(name.to_string());
        }
    }
    series
}

#[test]
fn every_control_plane_series_the_dashboard_queries_is_exported() {
    let exported = exported_series();
    assert!(exported.contains("pilot_xds_pushes"), "{exported:?}");
    let name = Regex::new(r"\b(?:pilot|citadel|process)_[a-z0-9_]+").unwrap();
    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for (title, expr) in queries(&dashboard()) {
        for m in name.find_iter(&expr) {
            queried.insert(m.as_str().to_string());
            if !exported.contains(m.as_str()) {
                unknown.push(format!("{title:?}: {}", m.as_str()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "queried but not exported: {unknown:?}\nexported: {exported:?}"
    );
    // The dashboard covers the push pipeline, its errors, convergence and the CA.
    for needed in [
        "pilot_xds",
        "pilot_xds_pushes",
        "pilot_total_xds_rejects",
        "pilot_proxy_convergence_time_bucket",
        "pilot_xds_push_time_bucket",
        "pilot_xds_config_size_bytes_bucket",
        "citadel_server_csr_count",
        "process_resident_memory_bytes",
    ] {
        assert!(
            queried.contains(needed),
            "no panel queries {needed}: {queried:?}"
        );
    }
}

#[test]
fn dashboard_panels_use_the_datasource_variable_and_fit_the_grid() {
    let dashboard = dashboard();
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut ids = BTreeSet::new();
    let variable = Regex::new(r"\$([a-z_]+)").unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id at {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title} overflows the 24-column grid");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for var in variable.captures_iter(expr) {
                let var = &var[1];
                assert!(
                    var.starts_with("__") || variables.contains(var),
                    "{title}: ${var} is not a dashboard variable"
                );
            }
        }
    }
    assert!(variables.contains("datasource"));
}
