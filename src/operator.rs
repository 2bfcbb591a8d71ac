//! What pilotfish does in a cluster beside serving config, as istiod does: every replica
//! competes for a Lease; the CA root lives in Secret `istio-ca-secret` (created by the leader);
//! every replica serves the validating webhook with a certificate from that root; and the
//! leader alone keeps the ValidatingWebhookConfiguration trusting it.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::secret::{self, LoadOptions};
use crate::leader::{self, Candidate, Leadership, LeaseTimings};
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
    tasks: Vec<JoinHandle<()>>,
}

impl Operator {
    pub fn start(client: kube::Client, options: OperatorOptions, webhook: Option<TcpListener>, stopping: watch::Receiver<bool>) -> Operator {
        let leadership = Leadership::new();
        let candidate = Candidate {
            namespace: options.namespace.clone(),
            lease_name: LEASE_NAME.into(),
            identity: options.identity.clone(),
            timings: options.lease,
        };
        let election = leader::run(client.clone(), candidate, leadership.clone(), stopped(stopping.clone()));
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = election.await {
                tracing::error!("{e}; this replica will never write to the cluster");
            }
        })];
        if let Some(listener) = webhook {
            tasks.push(tokio::spawn(run_webhook(client, options, listener, leadership.clone(), stopping)));
        }
        Operator { leadership, tasks }
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

/// Waits for the CA root (a follower waits for the leader to create it), then serves the
/// webhook and keeps its configuration's caBundle.
async fn run_webhook(client: kube::Client, options: OperatorOptions, listener: TcpListener, leadership: Leadership, stopping: watch::Receiver<bool>) {
    let load = LoadOptions { namespace: options.namespace.clone(), trust_domain: options.trust_domain.clone(), ..LoadOptions::default() };
    let is_leader = leadership.clone();
    let authority = match secret::load_or_create(client.clone(), &load, move || is_leader.is_leader()).await {
        Ok(authority) => Arc::new(authority),
        Err(e) => {
            tracing::error!("{e}; the validating webhook is not served");
            return;
        }
    };
    let dns_names = webhook::service_dns_names(&options.service, &options.namespace, &options.domain_suffix);
    let root_pem = authority.root_pem().to_string();
    let server = tokio::spawn(webhook::server::serve(listener, authority, dns_names, stopped(stopping.clone())));
    let bundle_options = ca_bundle::Options { service: options.service.clone(), namespace: options.namespace.clone(), ..Default::default() };
    let is_leader: ca_bundle::IsLeader = Arc::new(move || leadership.is_leader());
    ca_bundle::CaBundle::new(client, bundle_options, root_pem, is_leader).run(stopped(stopping)).await;
    match server.await {
        Ok(Err(e)) => tracing::error!("validating webhook: {e}"),
        Err(e) if e.is_panic() => tracing::error!("validating webhook: {e}"),
        _ => {}
    }
}
