//! The leader reports every NACK on the Istio objects it was traced to, where `kubectl
//! describe` and `kubectl get -o yaml` show it: a Warning Event (reason `ProxyRejected`) on each
//! object, and a status condition on the Istio ones.
//!
//! The condition follows istiod's status distribution, which reports on `status.conditions`
//! (IstioStatus) a condition of type `Reconciled`; a rejected object gets `Reconciled` with
//! status `False`, reason `ProxyRejected` and the Event's message. Other conditions on the
//! object are kept (istiod's `patchMergeKey=type`): the list is read and written back with ours
//! replaced, as CRDs take merge patches only.
//!
//! Thousands of sidecars NACK the same route at once: each (object, Envoy error) is written at
//! most once per [`WINDOW`], whatever the number of proxies, in a bounded table.
//!
//! Only the leader writes (one replica, so no duplicates); the NACKs of proxies connected to
//! other replicas are logged and counted there, not written.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::config::{Kind, ObjectKey};
use crate::xds::connection::Rejection;

/// How long the same (object, error) is written only once.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// At most this many (object, error) pairs are remembered.
pub const REMEMBERED: usize = 4096;
pub const REASON: &str = "ProxyRejected";
pub const CONDITION: &str = "Reconciled";
const COMPONENT: &str = "pilotfish";
/// Kubernetes caps an Event's message at 1 KiB.
const MESSAGE_LIMIT: usize = 1024;

/// Which (object, error) pairs were written in the last [`WINDOW`].
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    capacity: usize,
    written: HashMap<(ObjectKey, String), Instant>,
}

impl Dedup {
    pub fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            window,
            capacity: capacity.max(1),
            written: HashMap::new(),
        }
    }

    /// Whether `object` rejected with `error` at `now` is to be written: not written within the
    /// window. Full, the table forgets expired pairs, then the oldest.
    pub fn admit(&mut self, object: &ObjectKey, error: &str, now: Instant) -> bool {
        let key = (object.clone(), error.to_string());
        if let Some(at) = self.written.get(&key)
            && now.saturating_duration_since(*at) < self.window
        {
            return false;
        }
        if self.written.len() >= self.capacity && !self.written.contains_key(&key) {
            let window = self.window;
            self.written
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if self.written.len() >= self.capacity
                && let Some(oldest) = self
                    .written
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                self.written.remove(&oldest);
            }
        }
        self.written.insert(key, now);
        true
    }

    pub fn len(&self) -> usize {
        self.written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// The Event's and the condition's message: proxy, xDS type, Envoy's error, cut to 1 KiB.
pub fn message(rejection: &Rejection) -> String {
    let ty = rejection
        .type_url
        .rsplit('.')
        .next()
        .unwrap_or(&rejection.type_url);
    let mut text = format!(
        "proxy {} rejected {ty}: {}",
        rejection.proxy_id, rejection.error
    );
    if text.len() > MESSAGE_LIMIT {
        let mut cut = MESSAGE_LIMIT - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The API resource of a kind: its group, first served version and plural.
fn api_resource(kind: Kind) -> ApiResource {
    let (group, versions) = kind.group_versions();
    let version = versions.first().copied().unwrap_or("v1");
    let plural = crate::rbac::resource_name(kind);
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.name().to_string(),
        plural,
    }
}

/// Istio's own kinds carry an IstioStatus; Kubernetes kinds (Secret, Service) get the Event only.
fn has_istio_status(kind: Kind) -> bool {
    kind.group_versions().0.ends_with("istio.io")
}

/// Writes Events and conditions for rejections, deduplicated.
pub struct Writer {
    client: Client,
    /// The replica, as `reportingInstance`.
    instance: String,
    dedup: Dedup,
}

impl Writer {
    pub fn new(client: Client, instance: &str) -> Writer {
        Writer {
            client,
            instance: instance.to_string(),
            dedup: Dedup::new(WINDOW, REMEMBERED),
        }
    }

    /// Reports `rejection` on each object it was traced to and not reported on within the
    /// window. Failures are logged with the object; a later rejection tries again.
    pub async fn write(&mut self, rejection: &Rejection) {
        let text = message(rejection);
        for object in &rejection.sources {
            if !self.dedup.admit(object, &rejection.error, Instant::now()) {
                continue;
            }
            if let Err(e) = self.event(object, &text).await {
                tracing::warn!(%object, error = %e, "creating the ProxyRejected Event failed");
            }
            if has_istio_status(object.kind)
                && let Err(e) = self.condition(object, &text).await
            {
                tracing::warn!(%object, error = %e, "setting the {CONDITION} condition failed");
            }
        }
    }

    async fn event(&self, object: &ObjectKey, text: &str) -> Result<Event, kube::Error> {
        let resource = api_resource(object.kind);
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // kubectl's and client-go's spelling: the object's name, a unique suffix.
                name: Some(format!("{}.{:x}", object.name, now.as_nanosecond())),
                namespace: Some(object.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(resource.api_version),
                kind: Some(resource.kind),
                namespace: Some(object.namespace.clone()),
                name: Some(object.name.clone()),
                ..Default::default()
            },
            type_: Some("Warning".into()),
            reason: Some(REASON.into()),
            message: Some(text.to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &object.namespace);
        events.create(&PostParams::default(), &event).await
    }

    async fn condition(&self, object: &ObjectKey, text: &str) -> Result<(), kube::Error> {
        let resource = api_resource(object.kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &object.namespace, &resource);
        let current = api.get_status(&object.name).await?;
        let conditions = with_condition(
            current.data.pointer("/status/conditions"),
            rejected_condition(text, Timestamp::now()),
        );
        let patch = json!({ "status": { "conditions": conditions } });
        api.patch_status(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// `Reconciled: False`, reason `ProxyRejected`.
fn rejected_condition(text: &str, now: Timestamp) -> Value {
    let now = serde_json::to_value(Time(now)).unwrap_or(Value::Null);
    json!({
        "type": CONDITION,
        "status": "False",
        "reason": REASON,
        "message": text,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    })
}

/// `existing` conditions with the one of `condition`'s type replaced by it (or it appended).
fn with_condition(existing: Option<&Value>, condition: Value) -> Vec<Value> {
    let mut out: Vec<Value> = existing
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|c| c.get("type") != condition.get("type"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out.push(condition);
    out
}

/// Reports every rejection published while this replica leads, until `stop` resolves.
pub async fn run(
    mut writer: Writer,
    mut rejections: broadcast::Receiver<Rejection>,
    is_leader: impl Fn() -> bool,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            received = rejections.recv() => match received {
                Ok(rejection) if is_leader() => writer.write(&rejection).await,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => tracing::warn!(
                    missed,
                    "NACKs arrived faster than they could be reported; some got no Event"
                ),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_same_object_and_error_is_written_once_per_window() {
        let mut dedup = Dedup::new(Duration::from_secs(300), 10);
        let t0 = Instant::now();
        let vs = key(Kind::VirtualService, "reviews");
        assert!(dedup.admit(&vs, "bad route", t0));
        assert!(!dedup.admit(&vs, "bad route", t0 + Duration::from_secs(299)));
        assert!(dedup.admit(&vs, "another error", t0 + Duration::from_secs(1)));
        assert!(dedup.admit(&key(Kind::DestinationRule, "reviews"), "bad route", t0));
        assert!(dedup.admit(&vs, "bad route", t0 + Duration::from_secs(300)));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut dedup = Dedup::new(Duration::from_secs(300), 3);
        let t0 = Instant::now();
        for i in 0..10u64 {
            let at = t0 + Duration::from_secs(i);
            assert!(dedup.admit(&key(Kind::VirtualService, &format!("vs{i}")), "e", at));
            assert!(dedup.len() <= 3, "{} remembered", dedup.len());
        }
        // The oldest were forgotten, the newest still hold.
        let late = t0 + Duration::from_secs(10);
        assert!(!dedup.admit(&key(Kind::VirtualService, "vs9"), "e", late));
        assert!(dedup.admit(&key(Kind::VirtualService, "vs0"), "e", late));
    }

    #[test]
    fn plurals_and_versions_are_the_apiservers() {
        let cases = [
            (
                Kind::VirtualService,
                "networking.istio.io/v1",
                "virtualservices",
            ),
            (
                Kind::ServiceEntry,
                "networking.istio.io/v1",
                "serviceentries",
            ),
            (
                Kind::AuthorizationPolicy,
                "security.istio.io/v1",
                "authorizationpolicies",
            ),
            (Kind::Telemetry, "telemetry.istio.io/v1", "telemetries"),
            (Kind::Secret, "v1", "secrets"),
        ];
        for (kind, api_version, plural) in cases {
            let r = api_resource(kind);
            assert_eq!(
                (r.api_version.as_str(), r.plural.as_str()),
                (api_version, plural)
            );
        }
        assert!(has_istio_status(Kind::Gateway) && !has_istio_status(Kind::Secret));
    }

    #[test]
    fn our_condition_replaces_its_type_and_keeps_the_others() {
        let existing = json!([
            {"type": "Reconciled", "status": "True"},
            {"type": "Other", "status": "True"},
        ]);
        let out = with_condition(Some(&existing), rejected_condition("m", Timestamp::now()));
        let shown: Vec<(&str, &str)> = out
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(shown, [("Other", "True"), ("Reconciled", "False")]);
        assert_eq!(out[1]["reason"], REASON);
    }

    #[test]
    fn messages_name_the_proxy_and_type_and_stay_under_the_limit() {
        let mut rejection = Rejection {
            proxy_id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
            error: "bad regex".into(),
            sources: vec![],
        };
        assert_eq!(
            message(&rejection),
            "proxy sidecar~10.0.0.1~a.default~default.svc.cluster.local rejected RouteConfiguration: bad regex"
        );
        rejection.error = "é".repeat(2000);
        let long = message(&rejection);
        assert!(long.len() <= MESSAGE_LIMIT && long.ends_with("..."));
    }
}
