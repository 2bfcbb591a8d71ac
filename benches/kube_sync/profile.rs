//! Where the time of the sync and of a change goes, step by step and one step at a time (no
//! profiler is available): the fake serving the lists on its own (raw pages, as the watchers
//! request them), JSON decoding into the watchers' types (what `kube` does with each page),
//! conversion and validation into store objects (what the watchers do), the store, and the
//! index and push context `serve` builds — then the same build after one EndpointSlice change.
//! Each step runs the same public code `serve` runs; run while pilotfish is idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::core::ObjectList;
use pilotfish::config::kube::SlimPod;
use pilotfish::config::{Kind, Object};
use pilotfish::model::MeshConfig;
use pilotfish::store::{Change, Entry, SourceId, Store};
use pilotfish::xds::Snapshot as _;
use serde::de::DeserializeOwned;

use super::cluster::Shape;
use super::fake_apiserver::FakeApiServer;

/// The watchers' page size (kube-runtime's default).
const PAGE: usize = 500;

#[derive(Debug, Default)]
pub struct Breakdown {
    /// Every page of the Pods, Services, EndpointSlices and Namespaces, serially: the fake's
    /// work plus loopback HTTP, nothing decoded.
    pub fake_lists: Duration,
    pub pages: usize,
    pub bytes: usize,
    /// Of which the Pods' pages.
    pub fake_pod_lists: Duration,
    pub pod_pages: usize,
    /// JSON text → objects as the watchers decode them (Pods into `SlimPod`, the rest into
    /// k8s-openapi types); of which the Pods.
    pub decode: Duration,
    pub decode_pods: Duration,
    /// k8s-openapi objects → validated store objects (Istio kinds: JSON → parser → validation).
    pub convert: Duration,
    pub objects: usize,
    /// Into a store, published.
    pub store: Duration,
    /// `index::services::build` alone, `Index::build` (which includes it), and
    /// `push::build` (index and push context) on the first revision.
    pub services: Duration,
    pub index: Duration,
    pub first_context: Duration,
    /// After one EndpointSlice changed: `Index::build_after` (what `push::build` does with
    /// the previous context), and `push::build` with the previous context.
    pub change_index: Duration,
    pub change_context: Duration,
    /// Everything one sidecar is sent, computed in the first revision (cold: the revision's
    /// clusters and endpoints included) and in the changed one (what follows a push).
    pub first_proxy: Duration,
    pub change_proxy: Duration,
}

/// A kind's pages as the watcher lists them: `limit=500`, then `continue`.
async fn list_pages(client: &kube::Client, path: &str) -> Result<Vec<String>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let uri = match &next {
            None => format!("{path}?limit={PAGE}"),
            Some(token) => format!("{path}?limit={PAGE}&continue={}", token.replace('/', "%2F")),
        };
        let request = axum::http::Request::get(uri).body(Vec::new())?;
        let text = client
            .request_text(request)
            .await
            .with_context(|| format!("listing {path}"))?;
        next = continue_token(&text);
        pages.push(text);
        if next.is_none() {
            return Ok(pages);
        }
    }
}

/// The list's `metadata.continue`, found without parsing the page: the fake writes `metadata`
/// after `items`, and no item has a `continue` key.
fn continue_token(page: &str) -> Option<String> {
    const KEY: &str = "\"continue\":\"";
    let start = page.rfind(KEY)? + KEY.len();
    let len = page[start..].find('"')?;
    Some(page[start..start + len].to_string()).filter(|t| !t.is_empty())
}

/// Each page decoded, then its objects converted, then the page's k8s-openapi objects dropped,
/// as the watcher goes: only the store objects stay.
fn decode_and_convert<K>(
    pages: &[String],
    decode: &mut Duration,
    convert: &mut Duration,
) -> Result<Vec<Entry>>
where
    K: DeserializeOwned + Clone,
    Object: TryFrom<K>,
    <Object as TryFrom<K>>::Error: std::fmt::Debug,
{
    let mut entries = Vec::new();
    for page in pages {
        let list: ObjectList<K> = timed(decode, || serde_json::from_str(page))?;
        entries.extend(timed(convert, || into_entries(list.items))?);
    }
    Ok(entries)
}

/// As the watcher's conversion does: the object, validated, without its resourceVersion.
fn entry(mut object: Object) -> Result<Entry> {
    object.meta.resource_version.clear();
    if let Some(error) = pilotfish::validate::validate(&object)
        .into_iter()
        .find(|d| d.is_error())
    {
        return Err(anyhow!("{} is invalid: {error}", object.key()));
    }
    Ok(Entry {
        object: Arc::new(object),
        origin: None,
        source: SourceId::Kubernetes,
    })
}

/// The faster of two runs: the first may pay for memory the process has not touched yet.
fn best_of_two(f: impl Fn()) -> Duration {
    (0..2)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *total += start.elapsed();
    out
}

fn into_entries<K>(objects: Vec<K>) -> Result<Vec<Entry>>
where
    Object: TryFrom<K>,
    <Object as TryFrom<K>>::Error: std::fmt::Debug,
{
    objects
        .into_iter()
        .map(|o| entry(Object::try_from(o).map_err(|e| anyhow!("converting: {e:?}"))?))
        .collect()
}

pub async fn run(fake: &FakeApiServer, shape: &Shape) -> Result<Breakdown> {
    let mut b = Breakdown::default();
    let client = fake.client();
    let start = Instant::now();
    let pods = list_pages(&client, "/api/v1/pods").await?;
    b.fake_pod_lists = start.elapsed();
    b.pod_pages = pods.len();
    let services = list_pages(&client, "/api/v1/services").await?;
    let slices = list_pages(&client, "/apis/discovery.k8s.io/v1/endpointslices").await?;
    let namespaces = list_pages(&client, "/api/v1/namespaces").await?;
    b.fake_lists = start.elapsed();
    for pages in [&pods, &services, &slices, &namespaces] {
        b.pages += pages.len();
        b.bytes += pages.iter().map(String::len).sum::<usize>();
    }

    // Twice, the faster counted: the first run may pay for memory not touched before.
    let (mut decode, mut convert) = (Duration::MAX, Duration::ZERO);
    let mut entries = Vec::new();
    for _ in 0..2 {
        let (mut d, mut c) = (Duration::ZERO, Duration::ZERO);
        entries = decode_and_convert::<SlimPod>(&pods, &mut d, &mut c)?;
        (decode, convert) = if d < decode {
            (d, c)
        } else {
            (decode, convert)
        };
    }
    b.decode_pods = decode;
    drop(pods);
    entries.extend(decode_and_convert::<core::Service>(
        &services,
        &mut decode,
        &mut convert,
    )?);
    entries.extend(decode_and_convert::<discovery::EndpointSlice>(
        &slices,
        &mut decode,
        &mut convert,
    )?);
    entries.extend(decode_and_convert::<core::Namespace>(
        &namespaces,
        &mut decode,
        &mut convert,
    )?);
    b.decode = decode;
    for (api_version, kind) in [
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("networking.istio.io/v1", "Sidecar"),
    ] {
        for value in fake.list(api_version, kind, None) {
            let parsed = timed(&mut convert, || {
                pilotfish::config::parse::parse_object(value)
            });
            let (object, _) = parsed
                .map_err(|d| anyhow!("parsing a {kind}: {d}"))?
                .with_context(|| format!("a {kind} was skipped"))?;
            entries.push(timed(&mut convert, || entry(object))?);
        }
    }
    b.convert = convert;
    b.objects = entries.len();

    let mesh = MeshConfig::default();
    let mut store = Store::new();
    let start = Instant::now();
    for kind in Kind::ALL {
        let of_kind: Vec<Entry> = entries
            .iter()
            .filter(|e| e.object.kind() == kind)
            .cloned()
            .collect();
        store.replace_kind(SourceId::Kubernetes, kind, of_kind);
    }
    store.publish();
    let first = store.snapshot();
    b.store = start.elapsed();

    b.services = best_of_two(|| {
        drop(pilotfish::index::services::build(
            &first,
            &mesh,
            &mut Vec::new(),
        ))
    });
    b.index = best_of_two(|| drop(pilotfish::index::Index::build(&first, &mesh)));
    b.first_context = best_of_two(|| drop(pilotfish::push::build(&first, &mesh, None)));
    let context = pilotfish::push::build(&first, &mesh, None);
    let service = shape.changed_service(shape.services);
    let proxy = pilotfish::model::Proxy::from_node(Some(&shape.probe_node(service)))?;
    let start = Instant::now();
    drop(context.resources_for(&proxy));
    b.first_proxy = start.elapsed();

    let slice: discovery::EndpointSlice =
        serde_json::from_value(shape.grown_slice(service, 9_999))?;
    store.apply(Change::Upsert(entry(
        Object::try_from(slice).map_err(|e| anyhow!("converting: {e:?}"))?,
    )?));
    store.publish();
    let changed = store.snapshot();
    b.change_index = best_of_two(|| {
        drop(pilotfish::index::Index::build_after(
            &changed,
            &mesh,
            context.index(),
        ))
    });
    b.change_context =
        best_of_two(|| drop(pilotfish::push::build(&changed, &mesh, Some(&context))));
    let after = pilotfish::push::build(&changed, &mesh, Some(&context));
    let start = Instant::now();
    drop(after.resources_for(&proxy));
    b.change_proxy = start.elapsed();
    drop((after, context));
    Ok(b)
}
