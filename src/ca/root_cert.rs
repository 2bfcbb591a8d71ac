//! istiod's root distribution: the ConfigMap `istio-ca-root-cert` (`root-cert.pem`) in every
//! namespace, which istio-agent and proxyless clients mount to trust the control plane and
//! their peers. Written by the leader only, right after checking it still leads; a namespace
//! already holding the root is left alone, so a steady cluster costs no writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::config::Kind;
use crate::store::Snapshot;

pub const CONFIG_MAP_NAME: &str = "istio-ca-root-cert";
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Every namespace is checked again this often, so an edited or deleted ConfigMap comes back.
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps `root_pem` in every namespace of the store's snapshots while `is_leader()`, until
/// `namespaces` closes.
pub async fn distribute(
    client: kube::Client,
    root_pem: String,
    mut namespaces: watch::Receiver<Arc<Snapshot>>,
    is_leader: impl Fn() -> bool,
) {
    // Namespaces known to hold the root; forgotten at every resync to catch edits.
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let wanted: Vec<String> = namespaces
            .borrow_and_update()
            .entries(Kind::Namespace)
            .map(|e| e.object.meta.name.clone())
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|ns| !done.contains(*ns)).collect();
        for ns in missing {
            if !is_leader() {
                done.clear();
                break;
            }
            match ensure(&client, ns, &root_pem).await {
                Ok(()) => {
                    done.insert(ns.clone());
                }
                Err(e) => tracing::warn!("ConfigMap {ns}/{CONFIG_MAP_NAME}: {e}; retrying"),
            }
        }
        done.retain(|ns| wanted.contains(ns));
        tokio::select! {
            changed = namespaces.changed() => if changed.is_err() { return },
            _ = resync.tick() => done.clear(),
        }
    }
}

/// Creates or corrects one namespace's ConfigMap.
async fn ensure(client: &kube::Client, namespace: &str, root_pem: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let wanted = |existing: Option<ConfigMap>| ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some([("istio.io/config".to_string(), "true".to_string())].into()),
            resource_version: existing.and_then(|e| e.metadata.resource_version),
            ..Default::default()
        },
        data: Some([(ROOT_CERT_KEY.to_string(), root_pem.to_string())].into()),
        ..Default::default()
    };
    match api.get_opt(CONFIG_MAP_NAME).await? {
        Some(existing)
            if existing
                .data
                .as_ref()
                .and_then(|d| d.get(ROOT_CERT_KEY))
                .is_some_and(|r| r == root_pem) =>
        {
            Ok(())
        }
        Some(existing) => {
            api.replace(
                CONFIG_MAP_NAME,
                &PostParams::default(),
                &wanted(Some(existing)),
            )
            .await?;
            tracing::info!("updated the root in ConfigMap {namespace}/{CONFIG_MAP_NAME}");
            Ok(())
        }
        None => {
            api.create(&PostParams::default(), &wanted(None)).await?;
            tracing::debug!("created ConfigMap {namespace}/{CONFIG_MAP_NAME}");
            Ok(())
        }
    }
}
