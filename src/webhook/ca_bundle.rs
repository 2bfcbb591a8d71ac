//! Keeps the ValidatingWebhookConfiguration pointing at pilotfish's CA, as istiod's webhook
//! controller does: every webhook in it that calls our Service gets our root as `caBundle`,
//! and once the API server is seen rejecting invalid config through the webhook,
//! `failurePolicy: Fail`. The manifest ships `Ignore`, so config can be written while no
//! replica serves yet; switching to `Fail` before the webhook is reachable would block every
//! Istio write in the cluster.
//!
//! Only the leader writes, checked right before each write. Writes are a PUT of the object as
//! read (all its fields kept), carrying its resourceVersion, so a concurrent change is never
//! overwritten: the API server answers 409 and the next pass starts from the new object.
//! Passes run at start, on becoming leader, when the object changes, and every `resync`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Is this replica the leader? Asked before every write.
pub type IsLeader = Arc<dyn Fn() -> bool + Send + Sync>;

/// Which configuration to keep, for which Service, how often.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ValidatingWebhookConfiguration (`istio-validator-istio-system`).
    pub config_name: String,
    /// The Service whose webhooks are ours, and the namespace of both it and pilotfish.
    pub service: String,
    pub namespace: String,
    /// A full pass this often even without events.
    pub resync: Duration,
    /// How soon to look again after a failed or partial pass.
    pub retry: Duration,
    /// How often leadership is polled, to start a pass on becoming leader.
    pub leader_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_name: super::DEFAULT_CONFIG_NAME.into(),
            service: super::DEFAULT_SERVICE.into(),
            namespace: super::DEFAULT_NAMESPACE.into(),
            resync: Duration::from_secs(30),
            retry: Duration::from_secs(2),
            leader_poll: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("ValidatingWebhookConfiguration {0} not found")]
    NotFound(String),
    #[error(
        "ValidatingWebhookConfiguration {name}: no webhook calls Service {namespace}/{service}"
    )]
    NoWebhook {
        name: String,
        namespace: String,
        service: String,
    },
    #[error("ValidatingWebhookConfiguration {name}: {source}")]
    Api { name: String, source: kube::Error },
    #[error(
        "ValidatingWebhookConfiguration {name}: not switching to failurePolicy Fail yet: {reason}"
    )]
    NotReady { name: String, reason: String },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing to do (or not the leader).
    UpToDate,
    /// A write was made; the next pass follows soon, to take the next step or confirm.
    Written,
}

/// How many of `webhooks` call `service` in `namespace`, and how many of those change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub ours: usize,
    pub changed: usize,
}

fn is_ours(webhook: &Value, service: &str, namespace: &str) -> bool {
    let svc = &webhook["clientConfig"]["service"];
    svc["name"].as_str() == Some(service) && svc["namespace"].as_str() == Some(namespace)
}

fn ours_mut<'a>(
    config: &'a mut Value,
    service: &'a str,
    namespace: &'a str,
) -> impl Iterator<Item = &'a mut Value> + 'a {
    let webhooks = config
        .get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .map(|w| w.iter_mut());
    webhooks
        .into_iter()
        .flatten()
        .filter(move |w| is_ours(w, service, namespace))
}

/// Sets `caBundle` (base64 of `root_pem`) on our webhooks in `config` (the object as JSON).
pub fn set_ca_bundle(
    config: &mut Value,
    service: &str,
    namespace: &str,
    root_pem: &str,
) -> Changed {
    let wanted = ByteString(root_pem.as_bytes().to_vec());
    let mut out = Changed::default();
    for webhook in ours_mut(config, service, namespace) {
        out.ours += 1;
        let current = webhook["clientConfig"]
            .get("caBundle")
            .cloned()
            .map(serde_json::from_value::<ByteString>);
        if !matches!(current, Some(Ok(ref c)) if *c == wanted) {
            webhook["clientConfig"]["caBundle"] = json!(wanted);
            out.changed += 1;
        }
    }
    out
}

/// Sets `failurePolicy: Fail` on our webhooks in `config`.
pub fn set_fail_closed(config: &mut Value, service: &str, namespace: &str) -> Changed {
    let mut out = Changed::default();
    for webhook in ours_mut(config, service, namespace) {
        out.ours += 1;
        if webhook["failurePolicy"] != "Fail" {
            webhook["failurePolicy"] = json!("Fail");
            out.changed += 1;
        }
    }
    out
}

/// The reconciler: options, the API, and what it has learnt.
pub struct CaBundle {
    options: Options,
    client: kube::Client,
    configs: Api<DynamicObject>,
    root_pem: String,
    is_leader: IsLeader,
    /// Set once the API server was seen denying invalid config through the webhook; as with
    /// istiod it is not checked again.
    webhook_proven: bool,
}

fn config_resource() -> ApiResource {
    ApiResource::erase::<ValidatingWebhookConfiguration>(&())
}

impl CaBundle {
    pub fn new(
        client: kube::Client,
        options: Options,
        root_pem: String,
        is_leader: IsLeader,
    ) -> CaBundle {
        let configs = Api::all_with(client.clone(), &config_resource());
        CaBundle {
            options,
            client,
            configs,
            root_pem,
            is_leader,
            webhook_proven: false,
        }
    }

    fn api_error(&self, source: kube::Error) -> CaBundleError {
        CaBundleError::Api {
            name: self.options.config_name.clone(),
            source,
        }
    }

    /// One pass: at most one write (the caBundle first, then the failure policy).
    pub async fn reconcile(&mut self) -> Result<Pass, CaBundleError> {
        if !(self.is_leader)() {
            return Ok(Pass::UpToDate);
        }
        let name = self.options.config_name.clone();
        let (service, namespace) = (self.options.service.clone(), self.options.namespace.clone());
        let config = self
            .configs
            .get_opt(&name)
            .await
            .map_err(|e| self.api_error(e))?;
        let mut config = config.ok_or_else(|| CaBundleError::NotFound(name.clone()))?;
        let bundle = set_ca_bundle(&mut config.data, &service, &namespace, &self.root_pem);
        if bundle.ours == 0 {
            return Err(CaBundleError::NoWebhook {
                name,
                namespace,
                service,
            });
        }
        if bundle.changed > 0 {
            self.write(&config).await?;
            tracing::info!(
                "set caBundle of {} webhook(s) in ValidatingWebhookConfiguration {name}",
                bundle.changed
            );
            return Ok(Pass::Written);
        }
        if set_fail_closed(&mut config.data, &service, &namespace).changed == 0 {
            return Ok(Pass::UpToDate);
        }
        if !self.webhook_proven {
            self.prove_webhook()
                .await
                .map_err(|reason| CaBundleError::NotReady {
                    name: name.clone(),
                    reason,
                })?;
            self.webhook_proven = true;
            tracing::info!(
                "the API server rejects invalid config through the webhook; switching {name} to failurePolicy Fail"
            );
        }
        self.write(&config).await?;
        tracing::info!("set failurePolicy Fail in ValidatingWebhookConfiguration {name}");
        Ok(Pass::Written)
    }

    async fn write(&self, config: &DynamicObject) -> Result<(), CaBundleError> {
        // Leadership may have moved while the object was read or the webhook probed.
        if !(self.is_leader)() {
            return Ok(());
        }
        self.configs
            .replace(&self.options.config_name, &PostParams::default(), config)
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(())
    }

    /// istiod's readiness check: a dry-run create of an invalid Gateway must be denied by a
    /// webhook. Until then, the API server cannot reach this webhook (or does not trust it yet).
    async fn prove_webhook(&self) -> Result<(), String> {
        let resource = ApiResource {
            group: "networking.istio.io".into(),
            version: "v1alpha3".into(),
            api_version: "networking.istio.io/v1alpha3".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.options.namespace, &resource);
        let mut gateway = DynamicObject::new("", &resource).data(json!({ "spec": {} }));
        gateway.metadata = ObjectMeta {
            generate_name: Some("pilotfish-webhook-check-".into()),
            ..ObjectMeta::default()
        };
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match api.create(&params, &gateway).await {
            Ok(_) => Err("a dry run of an invalid Gateway was admitted".into()),
            Err(kube::Error::Api(status)) if status.message.contains("denied the request") => {
                Ok(())
            }
            // As istiod: without the Gateway CRD (or with a webhook that cannot dry-run) the
            // check cannot be made, so it is not waited for.
            Err(kube::Error::Api(status))
                if status.code == 404 || status.message.contains("does not support dry run") =>
            {
                tracing::warn!(
                    "cannot check the webhook with a dry-run Gateway ({}); assuming it is reachable",
                    status.message
                );
                Ok(())
            }
            Err(e) => Err(format!(
                "a dry run of an invalid Gateway failed for another reason: {e}"
            )),
        }
    }

    /// Runs passes until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let fields = format!("metadata.name={}", self.options.config_name);
        let mut events = watcher(
            self.configs.clone(),
            watcher::Config::default().fields(&fields),
        )
        .default_backoff()
        .boxed();
        let mut leader_poll = tokio::time::interval(self.options.leader_poll);
        let mut was_leader = false;
        let mut next = Instant::now();
        let mut last_error = String::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(next) => {
                    next = Instant::now() + match self.reconcile().await {
                        Ok(Pass::UpToDate) => {
                            last_error.clear();
                            self.options.resync
                        }
                        Ok(Pass::Written) => Duration::ZERO,
                        Err(e) => {
                            // Logged when it changes, not on every retry.
                            let text = e.to_string();
                            if text != last_error {
                                tracing::warn!("{text}; retrying");
                                last_error = text;
                            }
                            self.options.retry
                        }
                    };
                }
                event = events.next() => match event {
                    Some(Ok(_)) => next = Instant::now(),
                    Some(Err(e)) => tracing::debug!("watching ValidatingWebhookConfiguration {}: {e}", self.options.config_name),
                    None => return,
                },
                _ = leader_poll.tick() => {
                    let leader = (self.is_leader)();
                    if leader && !was_leader {
                        next = Instant::now();
                    }
                    was_leader = leader;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Value {
        json!({
            "webhooks": [
                {"name": "rev.validation.istio.io", "failurePolicy": "Ignore",
                 "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system", "path": "/validate", "port": 443}}},
                {"name": "other.example.com", "failurePolicy": "Ignore",
                 "clientConfig": {"service": {"name": "other", "namespace": "istio-system"}, "caBundle": "Zm9v"}},
                {"name": "elsewhere.istio.io",
                 "clientConfig": {"service": {"name": "istiod", "namespace": "istio-canary"}}}
            ]
        })
    }

    #[test]
    fn the_bundle_goes_only_to_webhooks_calling_our_service_and_only_when_it_differs() {
        let mut c = config();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            set_ca_bundle(&mut c, "istiod", "istio-system", pem),
            Changed {
                ours: 1,
                changed: 1
            }
        );
        let written: ByteString =
            serde_json::from_value(c["webhooks"][0]["clientConfig"]["caBundle"].clone()).unwrap();
        assert_eq!(written.0, pem.as_bytes());
        assert_eq!(c["webhooks"][1]["clientConfig"]["caBundle"], "Zm9v");
        assert!(c["webhooks"][2]["clientConfig"].get("caBundle").is_none());
        assert_eq!(
            set_ca_bundle(&mut c, "istiod", "istio-system", pem),
            Changed {
                ours: 1,
                changed: 0
            }
        );
        assert_eq!(
            set_ca_bundle(&mut c, "istiod", "istio-system", "another root"),
            Changed {
                ours: 1,
                changed: 1
            }
        );
    }

    #[test]
    fn fail_closed_touches_only_our_webhooks() {
        let mut c = config();
        assert_eq!(
            set_fail_closed(&mut c, "istiod", "istio-system"),
            Changed {
                ours: 1,
                changed: 1
            }
        );
        assert_eq!(c["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(c["webhooks"][1]["failurePolicy"], "Ignore");
        assert_eq!(
            set_fail_closed(&mut c, "istiod", "istio-system"),
            Changed {
                ours: 1,
                changed: 0
            }
        );
        assert_eq!(
            set_fail_closed(&mut c, "nobody", "istio-system"),
            Changed::default()
        );
    }
}
