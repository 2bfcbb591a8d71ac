//! The fake API server, exercised through the real `kube::Client`, discovery and the
//! kube-runtime watcher — the code paths pilotfish runs against a cluster.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, GoneMode};

/// Polls `condition` until it holds; panics with `what` after 3 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A kube-runtime reflector over `api`: the store a controller would read.
fn mirror<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config));
    let task = tokio::spawn(stream.for_each(|_| std::future::ready(())));
    (reader, task)
}

/// Name → `data.v` of every ConfigMap in the store.
fn contents(store: &reflector::Store<ConfigMap>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|cm| {
            (
                cm.name_any(),
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("v"))
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"v": value}})
}

fn lists(server: &FakeApiServer, plural: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains(plural) && !p.contains("watch="))
        .count()
}

fn api_status(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn the_watcher_sees_creates_updates_and_deletes() {
    let server = FakeApiServer::start().await;
    server
        .apply(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x"}}),
        )
        .unwrap();
    let (store, _task) = mirror(Api::<Pod>::all(server.client()), watcher::Config::default());
    let labels = |store: &reflector::Store<Pod>| {
        let mut pods: Vec<(String, String)> = store
            .state()
            .iter()
            .map(|p| {
                (
                    p.name_any(),
                    p.labels().get("v").cloned().unwrap_or_default(),
                )
            })
            .collect();
        pods.sort();
        pods
    };
    eventually("the initial list", || {
        labels(&store) == [("a".into(), String::new())]
    })
    .await;

    server
        .apply(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "y"}}),
        )
        .unwrap();
    server
        .apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"v": "2"}}}))
        .unwrap();
    eventually("the add and the update", || {
        labels(&store) == [("a".into(), "2".into()), ("b".into(), String::new())]
    })
    .await;

    server.delete("v1", "Pod", Some("x"), "a").unwrap();
    eventually("the delete", || {
        labels(&store) == [("b".into(), String::new())]
    })
    .await;
    assert_eq!(
        lists(&server, "/pods"),
        1,
        "no re-list was needed: {:?}",
        server.requests()
    );
}

#[tokio::test]
async fn lists_page_through_one_consistent_snapshot() {
    let server = FakeApiServer::start().await;
    for i in 0..5 {
        server.apply(config_map(&format!("cm{i}"), "old")).unwrap();
    }
    let api = Api::<ConfigMap>::namespaced(server.client(), "default");
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    // Changes between pages are not seen by the rest of the list: it reads at the first
    // page's resourceVersion, as etcd does.
    server.apply(config_map("cm4", "new")).unwrap();
    server.apply(config_map("cm9", "new")).unwrap();
    server
        .delete("v1", "ConfigMap", Some("default"), "cm3")
        .unwrap();
    let mut items = first.items;
    let mut token = first.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        items.extend(page.items);
        token = page.metadata.continue_;
    }
    let seen: Vec<(String, String)> = items
        .iter()
        .map(|cm| {
            (
                cm.name_any(),
                cm.data.clone().unwrap_or_default()["v"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = (0..5)
        .map(|i| (format!("cm{i}"), "old".to_string()))
        .collect();
    assert_eq!(seen, want);

    let now = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        now.items.iter().map(|cm| cm.name_any()).collect::<Vec<_>>(),
        ["cm0", "cm1", "cm2", "cm4", "cm9"]
    );
}

#[tokio::test]
async fn the_watcher_pages_its_initial_list() {
    let server = FakeApiServer::start().await;
    for i in 0..5 {
        server.apply(config_map(&format!("cm{i}"), "x")).unwrap();
    }
    let (store, _task) = mirror(
        Api::<ConfigMap>::all(server.client()),
        watcher::Config::default().page_size(2),
    );
    eventually("the paged list", || store.state().len() == 5).await;
    let pages: Vec<String> = server
        .requests()
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.contains("limit=2"))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(
        pages[1].contains("continue=") && pages[2].contains("continue="),
        "{pages:?}"
    );
}

#[tokio::test]
async fn an_expired_continue_token_is_gone() {
    let server = FakeApiServer::start().await;
    for i in 0..3 {
        server.apply(config_map(&format!("cm{i}"), "x")).unwrap();
    }
    let api = Api::<ConfigMap>::all(server.client());
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    server.apply(config_map("cm0", "y")).unwrap();
    server.compact();
    let token = first.metadata.continue_.unwrap();
    let error = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_status(error), (410, "Expired".to_string()));
}

#[tokio::test]
async fn compaction_makes_the_watcher_relist_and_converge() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("a", "1")).unwrap();
    server.apply(config_map("b", "1")).unwrap();
    let (store, _task) = mirror(
        Api::<ConfigMap>::all(server.client()),
        watcher::Config::default(),
    );
    eventually("the first list", || {
        contents(&store) == expected(&[("a", "1"), ("b", "1")])
    })
    .await;
    eventually("the watch", || server.open_watches() == 1).await;

    // The open watch is told 410 (an ERROR event) and the watcher lists again.
    server.compact();
    server.apply(config_map("c", "1")).unwrap();
    eventually("convergence after the 410", || {
        contents(&store) == expected(&[("a", "1"), ("b", "1"), ("c", "1")])
    })
    .await;
    assert_eq!(lists(&server, "/configmaps"), 2, "{:?}", server.requests());

    // The watch is cut while the server cannot be reached and the history is compacted
    // meanwhile: resuming from the old resourceVersion is refused, and the watcher re-lists.
    eventually("the new watch", || server.open_watches() == 1).await;
    server.pause();
    server.drop_watches();
    server
        .delete("v1", "ConfigMap", Some("default"), "a")
        .unwrap();
    server.apply(config_map("b", "2")).unwrap();
    server.compact();
    server.resume();
    eventually("convergence after the second 410", || {
        contents(&store) == expected(&[("b", "2"), ("c", "1")])
    })
    .await;
    assert_eq!(lists(&server, "/configmaps"), 3, "{:?}", server.requests());
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_as_an_event_or_a_response() {
    let server = FakeApiServer::start().await;
    let created = server.apply(config_map("a", "1")).unwrap();
    let old = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    server.apply(config_map("a", "2")).unwrap();
    server.compact();
    let api = Api::<ConfigMap>::all(server.client());

    let mut events = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        events.try_next().await.unwrap().is_none(),
        "the stream ends after the ERROR event"
    );

    server.set_gone_mode(GoneMode::Http);
    let error = api
        .watch(&WatchParams::default(), &old)
        .await
        .err()
        .expect("the watch request is refused");
    assert_eq!(api_status(error), (410, "Expired".to_string()));

    // The current version is not expired.
    let current = server.resource_version().to_string();
    assert!(api.watch(&WatchParams::default(), &current).await.is_ok());
}

#[tokio::test]
async fn a_bounded_history_expires_old_versions() {
    let server = FakeApiServer::start().await;
    server.set_history_limit(2);
    let first = server.apply(config_map("a", "0")).unwrap();
    for i in 1..4 {
        server.apply(config_map("a", &i.to_string())).unwrap();
    }
    let api = Api::<ConfigMap>::all(server.client());
    let old = first["metadata"]["resourceVersion"].as_str().unwrap();
    let mut events = api
        .watch(&WatchParams::default(), old)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(events.try_next().await.unwrap(), Some(WatchEvent::Error(s)) if s.code == 410)
    );

    // Within the history, a watch replays what happened since.
    let recent = (server.resource_version() - 1).to_string();
    let mut events = api
        .watch(&WatchParams::default(), &recent)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(cm)) => assert_eq!(cm.data.unwrap()["v"], "3"),
        other => panic!("expected the last change replayed, got {other:?}"),
    }
}

#[tokio::test]
async fn dropped_watches_resume_without_relisting() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("a", "1")).unwrap();
    let (store, _task) = mirror(
        Api::<ConfigMap>::all(server.client()),
        watcher::Config::default(),
    );
    eventually("the watch", || server.open_watches() == 1).await;
    server.drop_watches();
    server.apply(config_map("b", "1")).unwrap();
    eventually("the change after the drop", || {
        contents(&store) == expected(&[("a", "1"), ("b", "1")])
    })
    .await;
    let watches = server
        .requests()
        .iter()
        .filter(|(_, p)| p.contains("/configmaps?") && p.contains("watch=true"))
        .count();
    assert_eq!(
        (lists(&server, "/configmaps"), watches),
        (1, 2),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn bookmarks_carry_the_newest_resource_version() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    let api = Api::<ConfigMap>::all(server.client());
    let start = server.resource_version().to_string();
    let mut events = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    // A write to another kind moves the global resourceVersion; the bookmark follows it.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
        .unwrap();
    let newest = server.resource_version().to_string();
    let event = tokio::time::timeout(Duration::from_secs(2), events.try_next())
        .await
        .unwrap()
        .unwrap();
    match event {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, newest),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_lists_send_initial_events_then_a_bookmark() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("a", "1")).unwrap();
    let (store, _task) = mirror(
        Api::<ConfigMap>::all(server.client()),
        watcher::Config::default().streaming_lists(),
    );
    eventually("the streamed list", || {
        contents(&store) == expected(&[("a", "1")])
    })
    .await;
    server.apply(config_map("a", "2")).unwrap();
    eventually("the change", || contents(&store) == expected(&[("a", "2")])).await;
    assert!(
        server
            .requests()
            .iter()
            .any(|(_, p)| p.contains("sendInitialEvents=true"))
    );
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let server = FakeApiServer::start().await;
    let secret = |name: &str, kind: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "type": kind});
    server.apply(secret("tls", "kubernetes.io/tls")).unwrap();
    server.apply(secret("helm", "helm.sh/release.v1")).unwrap();
    server
        .apply(secret("token", "kubernetes.io/service-account-token"))
        .unwrap();
    let fields = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";
    let (store, _task) = mirror(
        Api::<Secret>::all(server.client()),
        watcher::Config::default().fields(fields),
    );
    let names = |store: &reflector::Store<Secret>| {
        let mut names: Vec<String> = store.state().iter().map(|s| s.name_any()).collect();
        names.sort();
        names
    };
    eventually("the selected list", || names(&store) == ["tls"]).await;
    // An object that starts matching is added; one that stops matching is deleted.
    server.apply(secret("helm", "Opaque")).unwrap();
    eventually("the secret that now matches", || {
        names(&store) == ["helm", "tls"]
    })
    .await;
    server.apply(secret("tls", "helm.sh/release.v1")).unwrap();
    eventually("the secret that no longer matches", || {
        names(&store) == ["helm"]
    })
    .await;

    let api = Api::<Secret>::namespaced(server.client(), "default");
    let listed = api
        .list(&ListParams::default().labels("app in (token,tls)"))
        .await
        .unwrap();
    let mut listed: Vec<String> = listed.items.iter().map(|s| s.name_any()).collect();
    listed.sort();
    assert_eq!(listed, ["tls", "token"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=helm"))
        .await
        .unwrap();
    assert_eq!(
        by_name
            .items
            .iter()
            .map(|s| s.name_any())
            .collect::<Vec<_>>(),
        ["helm"]
    );
}

fn virtual_service(api_version: &str, name: &str, hosts: &[&str]) -> Value {
    json!({"apiVersion": api_version, "kind": "VirtualService", "metadata": {"name": name, "namespace": "default"}, "spec": {"hosts": hosts}})
}

#[tokio::test]
async fn a_crd_installed_later_becomes_discoverable_and_listable() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let missing = kube::discovery::oneshot::group(&client, "networking.istio.io")
        .await
        .err();
    assert!(
        matches!(
            missing,
            Some(kube::Error::Discovery(
                kube::error::DiscoveryError::MissingApiGroup(_)
            ))
        ),
        "{missing:?}"
    );
    let gvk = |v: &str| GroupVersionKind::gvk("networking.istio.io", v, "VirtualService");
    let api_at = |v: &str| {
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk(v), "virtualservices"),
        )
    };
    assert_eq!(
        api_status(api_at("v1").list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
    assert!(
        server
            .apply(virtual_service("networking.istio.io/v1", "r", &["a"]))
            .is_err()
    );

    server.install_crd(
        "networking.istio.io",
        &["v1alpha3", "v1", "v1beta1"],
        "VirtualService",
        "virtualservices",
        true,
    );
    server
        .apply(virtual_service("networking.istio.io/v1beta1", "r", &["a"]))
        .unwrap();
    let group = kube::discovery::oneshot::group(&client, "networking.istio.io")
        .await
        .unwrap();
    assert_eq!(group.preferred_version_or_latest(), "v1");
    let (resource, caps) = group.recommended_kind("VirtualService").unwrap();
    assert_eq!(
        (resource.plural.as_str(), caps.scope),
        ("virtualservices", kube::discovery::Scope::Namespaced)
    );
    // Every served version reads the same object, in the version asked for.
    for version in ["v1", "v1alpha3"] {
        let listed = api_at(version).list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            listed.items[0].types.as_ref().unwrap().api_version,
            format!("networking.istio.io/{version}")
        );
        assert_eq!(listed.items[0].data["spec"]["hosts"], json!(["a"]));
    }
    let all = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(all.has_group("networking.istio.io") && all.has_group("coordination.k8s.io"));
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar, _) = aggregated.resolve_gvk(&gvk("v1")).unwrap();
    assert_eq!(ar.plural, "virtualservices");
    assert!(
        aggregated
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod"))
            .is_some()
    );

    server.uninstall_crd("networking.istio.io", "virtualservices");
    assert_eq!(
        api_status(api_at("v1").list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
}

#[tokio::test]
async fn custom_resources_have_a_generation_and_a_status_subresource() {
    let server = FakeApiServer::start().await;
    server.install_crd(
        "networking.istio.io",
        &["v1"],
        "VirtualService",
        "virtualservices",
        true,
    );
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let api = Api::<DynamicObject>::namespaced_with(
        server.client(),
        "default",
        &ApiResource::from_gvk(&gvk),
    );
    let created: DynamicObject =
        serde_json::from_value(virtual_service("networking.istio.io/v1", "r", &["a"])).unwrap();
    let created = api.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let status = json!({"status": {"validationMessages": ["ok"]}});
    let with_status = api
        .patch_status("r", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        (with_status.metadata.generation, &with_status.data["status"]),
        (Some(1), &status["status"])
    );

    // A write of the object changes the spec (a new generation) but never the status.
    let mut changed = with_status.clone();
    changed.data["spec"]["hosts"] = json!(["b"]);
    changed.data["status"] = json!({"validationMessages": ["overwritten"]});
    let replaced = api
        .replace("r", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.data["status"], status["status"]);
}

#[tokio::test]
async fn writes_use_optimistic_concurrency() {
    let server = FakeApiServer::start().await;
    let api = Api::<Lease>::namespaced(server.client(), "istio-system");
    assert_eq!(
        api_status(api.get("lock").await.unwrap_err()),
        (404, "NotFound".into())
    );
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("istio-system"));
    assert_eq!(
        api_status(
            api.create(&PostParams::default(), &lease)
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );

    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let updated = api
        .replace("lock", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_ne!(updated.resource_version(), created.resource_version());
    // `mine` still carries the version it read: someone else wrote since.
    assert_eq!(
        api_status(
            api.replace("lock", &PostParams::default(), &mine)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: created.resource_version(),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        api_status(api.delete("lock", &stale).await.unwrap_err()).0,
        409
    );
    // A no-op update writes nothing.
    let same = api
        .replace("lock", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), updated.resource_version());
    api.delete("lock", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("lock").await.unwrap().is_none());
}

#[tokio::test]
async fn patches_merge_json_patch_and_apply() {
    let server = FakeApiServer::start().await;
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "istio-validator"},
        "webhooks": [{"name": "validation.istio.io", "clientConfig": {"service": {"name": "istiod"}}}],
    });
    server.apply(webhook).unwrap();
    let client = server.client();
    let api = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        )),
    );
    let merged = api
        .patch(
            "istio-validator",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels()["a"], "b");

    let ops = json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}]);
    let request = axum::http::Request::patch(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/istio-validator",
    )
    .header("content-type", "application/json-patch+json")
    .body(serde_json::to_vec(&ops).unwrap())
    .unwrap();
    let patched: Value = client.request(request).await.unwrap();
    assert_eq!(patched["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=");
    assert_eq!(
        patched["webhooks"][0]["clientConfig"]["service"]["name"],
        "istiod"
    );

    let bad = json!([{"op": "replace", "path": "/webhooks/5/name", "value": "x"}]);
    let request = axum::http::Request::patch(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/istio-validator",
    )
    .header("content-type", "application/json-patch+json")
    .body(serde_json::to_vec(&bad).unwrap())
    .unwrap();
    let error = client.request::<Value>(request).await.unwrap_err();
    assert_eq!(api_status(error).0, 422);

    let cms = Api::<ConfigMap>::namespaced(client, "default");
    let applied = cms
        .patch(
            "fresh",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"v": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["v"], "1");
    let strategic = cms
        .patch(
            "fresh",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"w": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        strategic.data.unwrap(),
        BTreeMap::from([
            ("v".to_string(), "1".to_string()),
            ("w".to_string(), "2".to_string())
        ])
    );
    let missing = cms
        .patch("absent", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_status(missing).0, 404);
}

#[tokio::test]
async fn injected_failures_latency_and_pauses() {
    let server = FakeApiServer::start().await;
    let api = Api::<Namespace>::all(server.client());
    server.fail_next(2, 500);
    for _ in 0..2 {
        assert_eq!(
            api_status(api.list(&ListParams::default()).await.unwrap_err()),
            (500, "InternalError".into())
        );
    }
    assert!(api.list(&ListParams::default()).await.is_ok());

    server.set_latency(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.set_latency(Duration::ZERO);

    server.pause();
    let hung = tokio::spawn(async move {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!hung.is_finished(), "a request to a paused server hangs");
    server.resume();
    assert_eq!(hung.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn endpoints_fail_independently() {
    let server = FakeApiServer::start().await;
    let cut = server.endpoint().await;
    cut.pause();
    let cut_api = Api::<Namespace>::all(cut.client());
    let hung = tokio::spawn(async move { cut_api.list(&ListParams::default()).await.is_ok() });
    // The main endpoint still answers, and sees writes made while the other is cut.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
        .unwrap();
    let listed = Api::<Namespace>::all(server.client())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(!hung.is_finished());
    cut.resume();
    assert!(hung.await.unwrap());
}

#[tokio::test]
async fn the_kubeconfig_reaches_the_server() {
    let server = FakeApiServer::start().await;
    server.apply(config_map("from-kubeconfig", "1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig(dir.path())).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let cm = Api::<ConfigMap>::default_namespaced(client)
        .get("from-kubeconfig")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["v"], "1");
}
