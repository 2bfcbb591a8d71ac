//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go (and so istiod) does it.
//!
//! Every replica serves xDS; only writes to the cluster (webhook caBundle, status, root-cert
//! ConfigMaps) are gated on [`Leadership::is_leader`]. Leadership is held only until the local
//! renew deadline — measured from the last successful renew with a monotonic clock — so a
//! replica cut off from the API server stops writing before its lease expires and another
//! replica can take it over. Writes to the Lease use optimistic concurrency: of two
//! candidates writing the same resourceVersion, the API server lets exactly one win.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a lease lasts, how long a leader keeps trying to renew it, and how often
/// candidates try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long others wait after the last renew before taking the lease over.
    pub lease_duration: Duration,
    /// How long after its last successful renew the leader stops acting as leader. Shorter
    /// than `lease_duration`, so it has stopped before anyone else can start.
    pub renew_deadline: Duration,
    /// How often the lease is renewed, or tried for.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    /// istiod's (and client-go's) defaults.
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(15),
            retry_period: Duration::from_secs(5),
        }
    }
}

impl LeaseTimings {
    fn validate(&self) -> Result<(), Error> {
        let LeaseTimings {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if retry_period.is_zero() {
            return Err(Error::Timings("retry_period must be more than zero".into()));
        }
        if renew_deadline <= retry_period {
            return Err(Error::Timings(format!(
                "renew_deadline ({renew_deadline:?}) must be longer than retry_period ({retry_period:?})"
            )));
        }
        if lease_duration <= renew_deadline {
            return Err(Error::Timings(format!(
                "lease_duration ({lease_duration:?}) must be longer than renew_deadline ({renew_deadline:?})"
            )));
        }
        self.lease_duration_seconds().map(|_| ())
    }

    /// The lease duration as the Lease records it: whole seconds, rounded up so others never
    /// wait less than we assume.
    fn lease_duration_seconds(&self) -> Result<i32, Error> {
        let seconds = self.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(seconds).map_err(|_| {
            Error::Timings(format!(
                "lease_duration ({:?}) is too long",
                self.lease_duration
            ))
        })
    }
}

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub namespace: String,
    pub lease_name: String,
    /// This replica: its pod name (`POD_NAME`) or hostname.
    pub identity: String,
    pub timings: LeaseTimings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election timings: {0}")]
    Timings(String),
    #[error("reading Lease {lease}: {source}")]
    Read { lease: String, source: kube::Error },
    #[error("writing Lease {lease}: {source}")]
    Write { lease: String, source: kube::Error },
    #[error("Lease {lease}: no answer from the API server within {timeout:?}")]
    Timeout { lease: String, timeout: Duration },
}

/// Whether this replica may write to the cluster. Cheap to clone; every clone sees the same
/// state.
#[derive(Debug, Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When leadership lapses unless renewed; `None` when not leader.
    deadline: Mutex<Option<Instant>>,
    published: watch::Sender<bool>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::new()
    }
}

impl Leadership {
    pub fn new() -> Self {
        Leadership {
            inner: Arc::new(Inner {
                deadline: Mutex::new(None),
                published: watch::Sender::new(false),
            }),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True only while the lease is held and the renew deadline has not passed: checked
    /// against the clock on every call, so it turns false at the deadline even while the
    /// election task is stuck waiting for the API server.
    pub fn is_leader(&self) -> bool {
        self.deadline()
            .is_some_and(|deadline| Instant::now() < deadline)
    }

    /// Leadership changes. The value can lag [`Leadership::is_leader`] by a scheduling
    /// delay; a write must still check `is_leader` right before it is made.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.published.subscribe()
    }

    pub async fn wait_until_leader(&self) {
        let mut changes = self.subscribe();
        // Err only when every sender is gone, and `self` holds one.
        let _ = changes.wait_for(|leader| *leader).await;
    }

    /// Records a successful renew; true when this makes us leader.
    fn renewed(&self, deadline: Instant) -> bool {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(deadline);
        !self.inner.published.send_replace(true)
    }

    /// Stops being leader at once; true when we were.
    fn step_down(&self) -> bool {
        self.inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.inner.published.send_replace(false)
    }

    /// Completes when the renew deadline passes (never, when not leader).
    async fn lapsed(&self) {
        match self.deadline() {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// What one try for the lease found.
#[derive(Debug)]
enum Outcome {
    /// We hold it, renewed at this instant (taken before the renew time was written).
    Held(Instant),
    /// Someone else holds it, unexpired.
    HeldBy(String),
    /// Someone else wrote the Lease between our read and our write.
    Conflict,
}

struct Elector {
    api: Api<Lease>,
    candidate: Candidate,
    leadership: Leadership,
    /// The holder last logged, so a follower logs each change of leader once.
    observed_holder: Option<String>,
    /// Whether the last try failed, so an outage is logged once.
    failing: bool,
}

/// Competes for the Lease until `shutdown` completes, then releases it if held. Fails only
/// on invalid timings: an API server that is down, slow or refusing just means leadership
/// is lost (or never gained) after the deadline, and the next try comes a retry period later.
pub async fn run(
    client: Client,
    candidate: Candidate,
    leadership: Leadership,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    candidate.timings.validate()?;
    let api = Api::namespaced(client, &candidate.namespace);
    let mut elector = Elector {
        api,
        candidate,
        leadership,
        observed_holder: None,
        failing: false,
    };
    tokio::pin!(shutdown);
    let timings = elector.candidate.timings;
    'election: loop {
        let result = {
            let attempt =
                tokio::time::timeout(timings.renew_deadline, elector.try_acquire_or_renew());
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break 'election,
                    result = &mut attempt => break result,
                    _ = elector.leadership.lapsed() => elector.lapse(),
                }
            }
        };
        let result = result.unwrap_or_else(|_| {
            Err(Error::Timeout {
                lease: elector.lease(),
                timeout: timings.renew_deadline,
            })
        });
        elector.record(result);
        let next_try = tokio::time::sleep(timings.retry_period);
        tokio::pin!(next_try);
        loop {
            tokio::select! {
                _ = &mut shutdown => break 'election,
                _ = &mut next_try => break,
                _ = elector.leadership.lapsed() => elector.lapse(),
            }
        }
    }
    elector.release().await;
    Ok(())
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a lease held by someone else may be taken: its holder did not renew it within
/// its duration.
fn expired(spec: &LeaseSpec, now: Timestamp, default_seconds: i32) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(default_seconds));
    renewed
        .0
        .as_millisecond()
        .saturating_add(seconds.saturating_mul(1000))
        <= now.as_millisecond()
}

impl Elector {
    fn lease(&self) -> String {
        format!("{}/{}", self.candidate.namespace, self.candidate.lease_name)
    }

    fn write_error(&self, source: kube::Error) -> Error {
        Error::Write {
            lease: self.lease(),
            source,
        }
    }

    /// One round of client-go's algorithm: read the Lease; create it if absent; renew it if
    /// ours; take it over if its holder let it expire; write with the resourceVersion read.
    async fn try_acquire_or_renew(&self) -> Result<Outcome, Error> {
        let name = &self.candidate.lease_name;
        let current = self.api.get_opt(name).await.map_err(|source| Error::Read {
            lease: self.lease(),
            source,
        })?;
        let duration_seconds = self.candidate.timings.lease_duration_seconds()?;
        let identity = &self.candidate.identity;
        let Some(current) = current else {
            let renewed = Instant::now();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Held(renewed)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Conflict),
                Err(e) => Err(self.write_error(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(identity.as_str());
        if let Some(holder) = holder.filter(|_| !ours)
            && !expired(&spec, Timestamp::now(), duration_seconds)
        {
            return Ok(Outcome::HeldBy(holder));
        }
        // Taken before the renew time is written, so our deadline never outlasts what others
        // compute from that renew time.
        let renewed = Instant::now();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = LeaseSpec {
            holder_identity: Some(identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if ours {
                spec.acquire_time.clone().or_else(|| Some(now()))
            } else {
                Some(now())
            },
            renew_time: Some(now()),
            lease_transitions: Some(if ours {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        };
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(next),
        };
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Outcome::Held(renewed)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Conflict),
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn record(&mut self, result: Result<Outcome, Error>) {
        let lease = self.lease();
        match result {
            Ok(outcome) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("Lease {lease}: reaching the API server again");
                }
                match outcome {
                    Outcome::Held(renewed) => {
                        let deadline = renewed + self.candidate.timings.renew_deadline;
                        if deadline <= Instant::now() {
                            // The answer came too late to act on: whoever reads the Lease may
                            // already consider it ours, but we do not write on it.
                            tracing::warn!(
                                "Lease {lease}: renewed, but the answer came after the renew deadline"
                            );
                        } else if self.leadership.renewed(deadline) {
                            tracing::info!(
                                "Lease {lease}: {} is now the leader",
                                self.candidate.identity
                            );
                        }
                        self.observed_holder = Some(self.candidate.identity.clone());
                    }
                    Outcome::HeldBy(holder) => {
                        if self.leadership.step_down() {
                            tracing::warn!(
                                "Lease {lease}: leadership lost to {holder}; no more writes from this replica"
                            );
                        }
                        if self.observed_holder.as_ref() != Some(&holder) {
                            tracing::info!("Lease {lease}: the leader is {holder}");
                            self.observed_holder = Some(holder);
                        }
                    }
                    Outcome::Conflict => {
                        // Someone else wrote first; the next read shows who holds it.
                        tracing::debug!("Lease {lease}: another replica wrote it first");
                    }
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        "{e}; retrying every {:?}",
                        self.candidate.timings.retry_period
                    );
                } else {
                    tracing::debug!("{e}");
                }
            }
        }
    }

    /// The renew deadline passed without a successful renew.
    fn lapse(&self) {
        if self.leadership.step_down() {
            tracing::warn!(
                "Lease {}: not renewed within {:?}; no more writes from this replica until it is renewed",
                self.lease(),
                self.candidate.timings.renew_deadline
            );
        }
    }

    /// Stops writing, then hands the lease back so another replica takes over at once instead
    /// of waiting for it to expire.
    async fn release(&self) {
        let was_leader = self.leadership.step_down();
        // A leader whose renew deadline lapsed may still be the holder on the server.
        if !was_leader && self.observed_holder.as_deref() != Some(self.candidate.identity.as_str())
        {
            return;
        }
        let lease = self.lease();
        let timeout = self.candidate.timings.renew_deadline;
        match tokio::time::timeout(timeout, self.try_release()).await {
            Ok(Ok(true)) => {
                tracing::info!("Lease {lease}: released by {}", self.candidate.identity)
            }
            Ok(Ok(false)) => {
                tracing::info!("Lease {lease}: already held by another replica; nothing to release")
            }
            Ok(Err(e)) => tracing::warn!("{e}; the lease expires on its own"),
            Err(_) => tracing::warn!(
                "Lease {lease}: releasing took longer than {timeout:?}; the lease expires on its own"
            ),
        }
    }

    async fn try_release(&self) -> Result<bool, Error> {
        let name = &self.candidate.lease_name;
        let current = self.api.get_opt(name).await.map_err(|source| Error::Read {
            lease: self.lease(),
            source,
        })?;
        let Some(current) = current else {
            return Ok(false);
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.candidate.identity.as_str()) {
            return Ok(false);
        }
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..spec
        };
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(released),
        };
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(lease: u64, renew: u64, retry: u64) -> LeaseTimings {
        LeaseTimings {
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
        }
    }

    #[test]
    fn timings_must_let_the_leader_stop_before_the_lease_expires() {
        assert!(LeaseTimings::default().validate().is_ok());
        assert!(timings(1000, 500, 100).validate().is_ok());
        let error = timings(1000, 1000, 100).validate().unwrap_err().to_string();
        assert!(error.contains("lease_duration"), "{error}");
        let error = timings(1000, 100, 100).validate().unwrap_err().to_string();
        assert!(error.contains("renew_deadline"), "{error}");
        assert!(timings(1000, 500, 0).validate().is_err());
    }

    #[test]
    fn the_lease_duration_is_recorded_in_whole_seconds_rounded_up() {
        assert_eq!(timings(1000, 500, 100).lease_duration_seconds().unwrap(), 1);
        assert_eq!(timings(1500, 500, 100).lease_duration_seconds().unwrap(), 2);
    }

    #[test]
    fn a_lease_expires_its_duration_after_the_last_renew() {
        let renewed = Timestamp::from_second(1_000).unwrap();
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(10),
            ..LeaseSpec::default()
        };
        let at = |second: i64| Timestamp::from_second(second).unwrap();
        assert!(!expired(&spec, at(1_009), 30));
        assert!(expired(&spec, at(1_010), 30));
        // A holder that never recorded a renew time cannot hold the lease.
        assert!(expired(
            &LeaseSpec {
                renew_time: None,
                ..spec
            },
            at(0),
            30
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_the_renew_deadline_without_the_election_task() {
        let leadership = Leadership::new();
        let mut changes = leadership.subscribe();
        assert!(!leadership.is_leader());
        assert!(leadership.renewed(Instant::now() + Duration::from_millis(500)));
        assert!(leadership.is_leader() && *changes.borrow_and_update());
        assert!(
            !leadership.renewed(Instant::now() + Duration::from_millis(500)),
            "a renew is not a new term"
        );
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(leadership.is_leader());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!leadership.is_leader());
        assert!(
            leadership.step_down(),
            "the published state turns false when the task notices"
        );
        assert!(!*changes.borrow_and_update());
    }
}
