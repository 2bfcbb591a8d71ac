//! What pilotfish does in a cluster beside serving config, as istiod does: every replica
//! competes for a Lease; the CA root lives in Secret `istio-ca-secret` (created by the leader);
//! every replica serves the validating webhook with a certificate from that root; and the
//! leader alone keeps the ValidatingWebhookConfiguration trusting it.

pub mod rejections;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::secret::{self, LoadOptions};
use crate::ca::{Authority, plugged, root_cert};
use crate::leader::{self, Candidate, Leadership, LeaseTimings};
use crate::store::Snapshot;
use crate::webhook::{self, ca_bundle};

/// The Lease replicas compete for. pilotfish's own, so it never contends with an istiod that
/// is still running during a migration.
pub const LEASE_NAME: &str = "pilotfish-leader";

#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The control plane's namespace: the Lease, the CA Secret and the `istiod` Service.
    pub namespace: String,
    /// This replica's name in the election (the pod name).
    pub identity: String,
    /// The Service the webhook is reached through.
    pub service: String,
    /// Organization of a generated CA root.
    pub trust_domain: String,
    /// DNS suffix of the Service's names on the webhook certificate.
    pub domain_suffix: String,
    pub lease: LeaseTimings,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        OperatorOptions {
            namespace: webhook::DEFAULT_NAMESPACE.into(),
            identity: "pilotfish".into(),
            service: webhook::DEFAULT_SERVICE.into(),
            trust_domain: crate::ca::DEFAULT_TRUST_DOMAIN.into(),
            domain_suffix: "cluster.local".into(),
            lease: LeaseTimings::default(),
        }
    }
}

/// The running election and webhook; they stop when `stopping` turns true (the leader then
/// hands its Lease over at once).
pub struct Operator {
    pub leadership: Leadership,
    authority: watch::Receiver<Option<Arc<Authority>>>,
    tasks: Vec<JoinHandle<()>>,
    /// What [`Operator::report_rejections`] starts with.
    client: kube::Client,
    identity: String,
    stopping: watch::Receiver<bool>,
}

impl Operator {
    /// `config` is the store's snapshots: the namespaces the root is distributed to.
    pub fn start(
        client: kube::Client,
        options: OperatorOptions,
        webhook: Option<TcpListener>,
        config: watch::Receiver<Arc<Snapshot>>,
        stopping: watch::Receiver<bool>,
    ) -> Operator {
        let leadership = Leadership::new();
        let (own_client, identity, own_stopping) =
            (client.clone(), options.identity.clone(), stopping.clone());
        let candidate = Candidate {
            namespace: options.namespace.clone(),
            lease_name: LEASE_NAME.into(),
            identity: options.identity.clone(),
            timings: options.lease,
        };
        let election = leader::run(
            client.clone(),
            candidate,
            leadership.clone(),
            stopped(stopping.clone()),
        );
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = election.await {
                tracing::error!("{e}; this replica will never write to the cluster");
            }
        })];
        let (authority_tx, authority) = watch::channel(None);
        let loading = load_authority(
            client.clone(),
            options.clone(),
            leadership.clone(),
            authority_tx,
        );
        let stop_loading = stopped(stopping.clone());
        tasks.push(tokio::spawn(async move {
            // A follower waits for the leader's Secret: a drain must not wait for it.
            tokio::select! {
                () = loading => {}
                () = stop_loading => {}
            }
        }));
        tasks.push(tokio::spawn(distribute_root(
            client.clone(),
            authority.clone(),
            config,
            leadership.clone(),
            stopping.clone(),
        )));
        if let Some(listener) = webhook {
            tasks.push(tokio::spawn(run_webhook(
                client,
                options,
                listener,
                leadership.clone(),
                authority.clone(),
                stopping,
            )));
        }
        Operator {
            leadership,
            authority,
            tasks,
            client: own_client,
            identity,
            stopping: own_stopping,
        }
    }

    /// While this replica leads, reports each NACK received on `rejections` (from
    /// `Connections::subscribe_rejections`) on the objects it was traced to: an Event and a
    /// status condition (`operator::rejections`).
    pub fn report_rejections(
        &mut self,
        rejections: tokio::sync::broadcast::Receiver<crate::xds::connection::Rejection>,
    ) {
        let writer = rejections::Writer::new(self.client.clone(), &self.identity);
        let leadership = self.leadership.clone();
        self.tasks.push(tokio::spawn(rejections::run(
            writer,
            rejections,
            move || leadership.is_leader(),
            stopped(self.stopping.clone()),
        )));
    }

    /// The CA once loaded: `cacerts` if the cluster has it, else `istio-ca-secret` (the leader
    /// creates it; the others wait for it).
    pub fn authority(&self) -> watch::Receiver<Option<Arc<Authority>>> {
        self.authority.clone()
    }
}

async fn load_authority(
    client: kube::Client,
    options: OperatorOptions,
    leadership: Leadership,
    loaded: watch::Sender<Option<Arc<Authority>>>,
) {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &options.namespace);
    match secrets.get_opt(plugged::SECRET_NAME).await {
        Ok(Some(secret)) => match plugged::from_secret(&secret, &options.namespace) {
            Ok(authority) => {
                tracing::info!(
                    "signing with the plugged-in CA from Secret {}",
                    plugged::SECRET_NAME
                );
                loaded.send_replace(Some(Arc::new(authority)));
                return;
            }
            Err(e) => tracing::error!("{e}; falling back to {}", secret::SECRET_NAME),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "reading Secret {}: {e}; using {}",
            plugged::SECRET_NAME,
            secret::SECRET_NAME
        ),
    }
    let load = LoadOptions {
        namespace: options.namespace.clone(),
        trust_domain: options.trust_domain.clone(),
        ..LoadOptions::default()
    };
    match secret::load_or_create(client, &load, move || leadership.is_leader()).await {
        Ok(authority) => {
            loaded.send_replace(Some(Arc::new(authority)));
        }
        Err(e) => tracing::error!("{e}; the webhook and the TLS xDS port are not served"),
    }
}

/// How long a drain waits for the election and webhook to wind down (the Lease release is
/// one API call).
const FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Operator {
    /// Waits for the tasks to end after `stopping` turned true, so a leader's Lease is released
    /// (and another replica takes over at once) rather than left to expire.
    pub async fn finish(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(FINISH_TIMEOUT, task).await.is_err() {
                tracing::warn!("the election or webhook did not stop within {FINISH_TIMEOUT:?}");
                abort.abort();
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
fn stopped(mut stopping: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    }
}

/// Once the CA is loaded, the leader keeps its root in every namespace's `istio-ca-root-cert`.
async fn distribute_root(
    client: kube::Client,
    mut authority: watch::Receiver<Option<Arc<Authority>>>,
    config: watch::Receiver<Arc<Snapshot>>,
    leadership: Leadership,
    stopping: watch::Receiver<bool>,
) {
    let found = authority
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|a| a.clone());
    let Some(authority) = found else { return };
    let distributing = root_cert::distribute(
        client,
        authority.root_pem().to_string(),
        config,
        move || leadership.is_leader(),
    );
    tokio::select! {
        () = distributing => {}
        () = stopped(stopping) => {}
    }
}

/// Waits for the CA root (a follower waits for the leader to create it), then serves the
/// webhook and keeps its configuration's caBundle.
async fn run_webhook(
    client: kube::Client,
    options: OperatorOptions,
    listener: TcpListener,
    leadership: Leadership,
    mut authority: watch::Receiver<Option<Arc<Authority>>>,
    stopping: watch::Receiver<bool>,
) {
    let found = authority
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|a| a.clone());
    let Some(authority) = found else { return };
    let dns_names =
        webhook::service_dns_names(&options.service, &options.namespace, &options.domain_suffix);
    let root_pem = authority.root_pem().to_string();
    let server = tokio::spawn(webhook::server::serve(
        listener,
        authority,
        dns_names,
        stopped(stopping.clone()),
    ));
    let bundle_options = ca_bundle::Options {
        service: options.service.clone(),
        namespace: options.namespace.clone(),
        ..Default::default()
    };
    let is_leader: ca_bundle::IsLeader = Arc::new(move || leadership.is_leader());
    ca_bundle::CaBundle::new(client, bundle_options, root_pem, is_leader)
        .run(stopped(stopping))
        .await;
    match server.await {
        Ok(Err(e)) => tracing::error!("validating webhook: {e}"),
        Err(e) if e.is_panic() => tracing::error!("validating webhook: {e}"),
        _ => {}
    }
}
