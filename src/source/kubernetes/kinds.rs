//! One watcher per kind: which API it reads, with which selectors, and how its objects convert.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::KubeOptions;
use super::apply::Event;
use super::convert::{self, Converted, key_of};
use crate::config::Kind;
use crate::config::kube::SlimPod;

/// Secrets that can never be gateway credentials, left on the API server as istiod leaves
/// them: Helm's release records (large, and one per release revision) and service-account
/// tokens.
const SECRET_FIELDS: &str = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Watches `kind` until the event channel closes.
pub async fn watch(kind: Kind, client: Client, options: KubeOptions, tx: mpsc::Sender<Event>) {
    let all = watcher::Config::default();
    match kind {
        Kind::Service => {
            follow(
                kind,
                Api::<core::Service>::all(client),
                all,
                &tx,
                typed(kind),
            )
            .await
        }
        Kind::EndpointSlice => {
            follow(
                kind,
                Api::<discovery::EndpointSlice>::all(client),
                all,
                &tx,
                typed(kind),
            )
            .await
        }
        // Pods dominate a large cluster's sync: decoded into only the fields pilotfish reads.
        Kind::Pod => follow(kind, Api::<SlimPod>::all(client), all, &tx, typed(kind)).await,
        Kind::Namespace => {
            follow(
                kind,
                Api::<core::Namespace>::all(client),
                all,
                &tx,
                typed(kind),
            )
            .await
        }
        Kind::ConfigMap => {
            // Only istiod's mesh config: every other ConfigMap of the cluster is of no use here.
            let api = Api::<core::ConfigMap>::namespaced(client, &options.mesh_namespace);
            let name = format!(
                "metadata.name={}",
                crate::config::mesh_config::CONFIG_MAP_NAME
            );
            follow(kind, api, all.fields(&name), &tx, typed(kind)).await
        }
        Kind::Secret => {
            follow(
                kind,
                Api::<core::Secret>::all(client),
                all.fields(SECRET_FIELDS),
                &tx,
                typed(kind),
            )
            .await
        }
        istio => {
            watch_custom(istio, client, options, &tx).await;
            Ended::Closed
        }
    };
}

fn typed<K, E>(kind: Kind) -> impl Fn(K) -> Option<Converted>
where
    K: Resource,
    crate::config::Object: TryFrom<K, Error = E>,
    E: convert::FieldError,
{
    move |object| Some(convert::typed(kind, object))
}

enum Ended {
    /// The event channel closed: the source is shutting down.
    Closed,
    /// The API answered 404: the kind's CRD is gone.
    NotFound,
}

/// Istio kinds are custom resources: found by discovery at the most stable version pilotfish
/// reads, and looked for again while their CRD is not installed (or after it is removed).
async fn watch_custom(kind: Kind, client: Client, options: KubeOptions, tx: &mpsc::Sender<Event>) {
    let (group, _) = kind.group_versions();
    let mut reported_missing = false;
    loop {
        match resolve(&client, kind).await {
            Ok(Some(resource)) => {
                tracing::info!("watching {kind}s ({})", resource.api_version);
                reported_missing = false;
                let types = TypeMeta {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                };
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                let convert = |mut object: DynamicObject| {
                    // List items of some API servers carry no apiVersion/kind: the parser needs them.
                    object.types.get_or_insert_with(|| types.clone());
                    convert::dynamic(kind, object)
                };
                match follow(kind, api, watcher::Config::default(), tx, convert).await {
                    Ended::Closed => return,
                    Ended::NotFound => tracing::warn!(
                        "the {kind} CRD was removed; serving no {kind}s until it is back"
                    ),
                }
            }
            Ok(None) => {
                if !reported_missing {
                    tracing::warn!(
                        "the {kind} CRD ({group}) is not installed; serving no {kind}s until it is"
                    );
                    reported_missing = true;
                }
                if tx.send(Event::Missing(kind)).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("looking up the {kind} API ({group}): {e}; retrying"),
        }
        tokio::time::sleep(options.missing_crd_retry).await;
    }
}

/// The newest version of `kind`'s group that both the cluster serves and pilotfish reads;
/// `None` when the CRD is not installed.
async fn resolve(client: &Client, kind: Kind) -> Result<Option<ApiResource>, kube::Error> {
    let (group, versions) = kind.group_versions();
    let api_group = match kube::discovery::oneshot::group(client, group).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // `versions` is newest first, as `Kind::group_versions` lists them.
    Ok(versions.iter().find_map(|version| {
        api_group
            .versioned_resources(version)
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r.kind == kind.name())
    }))
}

/// Feeds one watcher's events to the apply task until the channel closes or the API is gone.
async fn follow<K>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    tx: &mpsc::Sender<Event>,
    convert: impl Fn(K) -> Option<Converted>,
) -> Ended
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut failing = false;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("watching {kind}s again");
                }
                event
            }
            Err(e) if is_not_found(&e) => return Ended::NotFound,
            Err(e) => {
                // Logged once per outage; the watcher backs off and retries, and the store keeps
                // serving what it has.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        "watching {kind}s: {e}; retrying, the last objects read keep being served"
                    );
                } else {
                    tracing::debug!("watching {kind}s: {e}");
                }
                continue;
            }
        };
        let event = match event {
            watcher::Event::Init => Event::Listing(kind),
            watcher::Event::InitApply(object) => match convert(object) {
                Some(c) => Event::Listed(c),
                None => continue,
            },
            watcher::Event::InitDone => Event::ListDone(kind),
            watcher::Event::Apply(object) => match convert(object) {
                Some(c) => Event::Upsert(c),
                None => continue,
            },
            watcher::Event::Delete(object) => Event::Delete(key_of(kind, &object)),
        };
        if tx.send(event).await.is_err() {
            return Ended::Closed;
        }
    }
    Ended::Closed
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}
