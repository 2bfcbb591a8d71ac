//! An in-process Kubernetes API server for tests and benchmarks: plain HTTP/1.1 on
//! 127.0.0.1, the real wire format (discovery, lists with pagination, chunked watch streams,
//! `Status` errors, optimistic concurrency), so the real `kube::Client` and kube-runtime
//! watcher code paths run against it. Faults — compaction (410), dropped watches, failures,
//! latency, a hung server — are injected by the test, globally or per [`Endpoint`].
//!
//! Self-contained: benches include this file with `#[path]`, so it depends only on crates of
//! pilotfish's Cargo.toml, and its submodules are named by explicit paths.
#![allow(dead_code)]

#[path = "fake_apiserver/crds.rs"]
mod crds;
#[path = "fake_apiserver/objects.rs"]
mod objects;
#[path = "fake_apiserver/openapi.rs"]
mod openapi;
#[path = "fake_apiserver/patch.rs"]
mod patch;
#[path = "fake_apiserver/resources.rs"]
mod resources;
#[path = "fake_apiserver/rest.rs"]
mod rest;
#[path = "fake_apiserver/select.rs"]
mod select;
#[path = "fake_apiserver/status.rs"]
mod status;
#[path = "fake_apiserver/store.rs"]
mod store;
#[path = "fake_apiserver/watch.rs"]
mod watch;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use objects::Place;
use resources::{Registry, ResourceType};
use store::{Store, WatchMessage};

pub use status::ApiError;

/// How a watch from an expired resourceVersion is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneMode {
    /// `200 OK` and one `ERROR` event carrying a 410 `Status`: what the real server (watch
    /// cache or etcd) sends.
    Event,
    /// A `410 Gone` response to the watch request itself.
    Http,
}

#[derive(Debug, Clone)]
struct Settings {
    bookmark_interval: Duration,
    gone_mode: GoneMode,
}

/// Events kept for watches to resume from; older resourceVersions get 410.
const HISTORY: usize = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Injected faults, applied to every request before it is served.
struct Faults {
    failures: Mutex<VecDeque<u16>>,
    latency: Mutex<Duration>,
    paused: tokio::sync::watch::Sender<bool>,
}

impl Faults {
    fn new() -> Self {
        Faults {
            failures: Mutex::default(),
            latency: Mutex::default(),
            paused: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Hangs while paused, then waits out the latency.
    async fn delay(&self) {
        let mut paused = self.paused.subscribe();
        // Err only when the sender is gone, which cannot happen while `self` lives.
        let _ = paused.wait_for(|p| !*p).await;
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    fn take_failure(&self) -> Option<ApiError> {
        lock(&self.failures).pop_front().map(ApiError::injected)
    }

    fn fail_next(&self, n: usize, code: u16) {
        lock(&self.failures).extend(std::iter::repeat_n(code, n));
    }
}

struct Shared {
    registry: Mutex<Registry>,
    store: Arc<Mutex<Store>>,
    settings: Mutex<Settings>,
    requests: Mutex<Vec<(String, String)>>,
    /// Faults of every endpoint.
    faults: Faults,
    address: SocketAddr,
    /// Service-account tokens TokenReviews know: token → (user, audiences).
    tokens: Mutex<HashMap<String, (String, Vec<String>)>>,
}

#[derive(Clone)]
struct Context {
    shared: Arc<Shared>,
    local: Arc<Faults>,
}

async fn handle(
    State(cx): State<Context>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.to_string());
    lock(&cx.shared.requests).push((method.to_string(), target));
    cx.shared.faults.delay().await;
    cx.local.delay().await;
    if let Some(error) = cx
        .local
        .take_failure()
        .or_else(|| cx.shared.faults.take_failure())
    {
        return rest::error_response(&error);
    }
    rest::respond(
        &cx.shared,
        rest::Request {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: &body,
        },
    )
}

/// One address of the server. Every endpoint serves the same objects; faults injected on
/// an endpoint hit only its clients, so a test can cut one replica off from the API server
/// while another still reaches it.
pub struct Endpoint {
    address: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Endpoint {
    fn serve(shared: Arc<Shared>, listener: TcpListener) -> Endpoint {
        let address = listener
            .local_addr()
            .expect("the fake API server's listener has an address");
        let faults = Arc::new(Faults::new());
        let app = Router::new().fallback(handle).with_state(Context {
            shared,
            local: faults.clone(),
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake API server on {address}: {e}");
            }
        });
        Endpoint {
            address,
            faults,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client of this endpoint, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let url: axum::http::Uri = self
            .url()
            .parse()
            .expect("the fake API server's URL parses");
        kube::Client::try_from(kube::Config::new(url))
            .expect("a kube client for the fake API server")
    }

    /// Writes a kubeconfig for this endpoint to `dir/kubeconfig` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        self.write_kubeconfig(&path)
            .expect("writing the fake API server's kubeconfig");
        path
    }

    /// Writes a kubeconfig for this endpoint (context `fake`, namespace `default`) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// The next `n` requests to this endpoint fail with `code` (e.g. 500).
    pub fn fail_next(&self, n: usize, code: u16) {
        self.faults.fail_next(n, code);
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.faults.latency) = latency;
    }

    /// Requests to this endpoint hang until [`Endpoint::resume`].
    pub fn pause(&self) {
        self.faults.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.faults.paused.send_replace(false);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct FakeApiServer {
    shared: Arc<Shared>,
    main: Endpoint,
}

/// `apiVersion` as (group, version).
/// Istio's networking kinds and their plurals, as its CRDs declare them.
pub const ISTIO_NETWORKING: [(&str, &str); 6] = [
    ("Gateway", "gateways"),
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("ServiceEntry", "serviceentries"),
    ("WorkloadEntry", "workloadentries"),
    ("Sidecar", "sidecars"),
];

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        Self::start_on(0)
            .await
            .expect("binding the fake API server to 127.0.0.1:0")
    }

    /// Starts on `127.0.0.1:port` (0: a free port).
    pub async fn start_on(port: u16) -> std::io::Result<FakeApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::builtin()),
            store: Arc::new(Mutex::new(Store::new(HISTORY))),
            settings: Mutex::new(Settings {
                bookmark_interval: Duration::from_secs(1),
                gone_mode: GoneMode::Event,
            }),
            requests: Mutex::default(),
            faults: Faults::new(),
            address,
            tokens: Mutex::default(),
        });
        let main = Endpoint::serve(shared.clone(), listener);
        Ok(FakeApiServer { shared, main })
    }

    /// Another address onto this server, with faults of its own.
    pub async fn endpoint(&self) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a fake API server endpoint");
        Endpoint::serve(self.shared.clone(), listener)
    }

    pub fn url(&self) -> String {
        self.main.url()
    }

    pub fn client(&self) -> kube::Client {
        self.main.client()
    }

    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.main.kubeconfig(dir)
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        self.main.write_kubeconfig(path)
    }

    /// The main endpoint, to inject faults on it alone.
    pub fn main_endpoint(&self) -> &Endpoint {
        &self.main
    }

    /// Serves a custom resource from now on (replacing its definition if installed).
    pub fn install_crd(
        &self,
        group: &str,
        versions: &[&str],
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        let mut versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        resources::sort_versions(&mut versions);
        lock(&self.shared.registry).install(ResourceType {
            group: group.into(),
            versions,
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            custom: true,
            short_names: Vec::new(),
            categories: Vec::new(),
        });
    }

    /// Removes a custom resource as deleting its CRD does: every object is deleted (watches
    /// see the deletions), open watches end, and the API answers 404 from then on.
    pub fn uninstall_crd(&self, group: &str, plural: &str) {
        crds::uninstall(&self.shared, group, plural);
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<(ResourceType, String), ApiError> {
        let (group, version) = split_api_version(api_version);
        let registry = lock(&self.shared.registry);
        let resource = registry.by_kind(group, version, kind).ok_or_else(|| {
            ApiError::not_found(
                "the server could not find the requested resource",
                &format!("{api_version} {kind}"),
            )
        })?;
        Ok((resource.clone(), version.to_string()))
    }

    /// Creates or replaces `object` by apiVersion, kind, namespace (default `default`) and
    /// name, unconditionally; returns it as stored.
    pub fn apply(&self, object: Value) -> Result<Value, ApiError> {
        let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_string);
        let api_version = field("apiVersion")
            .ok_or_else(|| ApiError::bad_request("apiVersion: Required value"))?;
        let kind = field("kind").ok_or_else(|| ApiError::bad_request("kind: Required value"))?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("{kind}: metadata.name: Required value")))?
            .to_string();
        let (resource, version) = self.resource(&api_version, &kind)?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let place = Place {
            resource: &resource,
            version: &version,
            namespace: resource.namespaced.then_some(namespace.as_str()),
        };
        let mut store = lock(&self.shared.store);
        let written = if store.get(&resource.key(), &place.key(&name)).is_some() {
            let mut object = object;
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("resourceVersion");
            }
            objects::update(&mut store, place, &name, object, objects::Part::Main, false)
        } else {
            objects::create(&mut store, place, object)
        }?;
        drop(store);
        if crds::is_crd(&resource) {
            crds::installed(&self.shared, &written);
        }
        Ok(written)
    }

    /// Writes only `status` of an existing object, as a controller's status update does.
    pub fn apply_status(&self, object: Value) -> Result<Value, ApiError> {
        let field = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (resource, version) = self.resource(&field("/apiVersion"), &field("/kind"))?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let place = Place {
            resource: &resource,
            version: &version,
            namespace: resource.namespaced.then_some(namespace.as_str()),
        };
        objects::update(
            &mut lock(&self.shared.store),
            place,
            &field("/metadata/name"),
            object,
            objects::Part::Status,
            false,
        )
    }

    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (resource, version) = self.resource(api_version, kind)?;
        let place = Place {
            resource: &resource,
            version: &version,
            namespace: namespace.filter(|_| resource.namespaced),
        };
        let deleted = objects::delete(&mut lock(&self.shared.store), place, name, None)?;
        if crds::is_crd(&resource) {
            crds::deleted(&self.shared, &deleted);
        }
        Ok(deleted)
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (resource, _) = self.resource(api_version, kind).ok()?;
        let key = (
            namespace
                .filter(|_| resource.namespaced)
                .unwrap_or_default()
                .to_string(),
            name.to_string(),
        );
        let mut object = lock(&self.shared.store)
            .get(&resource.key(), &key)
            .cloned()?;
        object["apiVersion"] = Value::String(api_version.to_string());
        Some(object)
    }

    /// Every object of a kind (in `namespace`, if given), ordered by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok((resource, _)) = self.resource(api_version, kind) else {
            return Vec::new();
        };
        let objects = lock(&self.shared.store).all(&resource.key());
        objects
            .into_iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, mut object)| {
                object["apiVersion"] = Value::String(api_version.to_string());
                object
            })
            .collect()
    }

    /// The newest resourceVersion: the one the last write stamped.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Expires every resourceVersion before now, as an etcd compaction does: open watches
    /// get a 410 `ERROR` event, and resuming from an older version (or continuing a list
    /// begun before) is refused with 410.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Aborts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        lock(&self.shared.store).close_watches(None, || WatchMessage::Abort);
    }

    /// Watches whose client is still connected.
    pub fn open_watches(&self) -> usize {
        lock(&self.shared.store).open_watches()
    }

    /// Bookmark period of watches that asked for bookmarks (default 1 s); applies to
    /// watches opened afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        lock(&self.shared.settings).bookmark_interval = interval;
    }

    pub fn set_gone_mode(&self, mode: GoneMode) {
        lock(&self.shared.settings).gone_mode = mode;
    }

    /// How many changes watches can resume across (default 10 000).
    pub fn set_history_limit(&self, limit: usize) {
        lock(&self.shared.store).set_history_limit(limit);
    }

    /// The next `n` requests, to any endpoint, fail with `code`.
    pub fn fail_next(&self, n: usize, code: u16) {
        self.shared.faults.fail_next(n, code);
    }

    /// A token TokenReviews accept, as `user` (`system:serviceaccount:<ns>:<name>`), valid
    /// for `audiences`.
    pub fn add_token(&self, token: &str, user: &str, audiences: &[&str]) {
        let entry = (
            user.to_string(),
            audiences.iter().map(|a| a.to_string()).collect(),
        );
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), entry);
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.faults.latency) = latency;
    }

    /// Every request, to any endpoint, hangs until [`FakeApiServer::resume`].
    pub fn pause(&self) {
        self.shared.faults.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.shared.faults.paused.send_replace(false);
    }

    /// Every request received so far, as (method, path and query), in arrival order.
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }
}
