//! Per-connection, per-type bookkeeping shared by SotW and delta: what the proxy asked for, what
//! it holds from us (name → content hash), and where the last response stands. Everything a
//! "should we send?" decision needs, with no transport in it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use tracing::warn;

use super::connection::{AckState, Nack, Subscription, TypeStatus, unix_ms};
use super::{ProxyResources, Resource, ResourceMap, TypeUrl};

/// How a request's `response_nonce` relates to what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// No nonce, or nothing sent for the type on this stream (a reconnect): a fresh request.
    Fresh,
    /// Answers the last response sent: an ACK or NACK.
    Current,
    /// Answers an older response; the xDS protocol says ignore it.
    Stale,
}

#[derive(Debug)]
pub(crate) struct TypeState {
    pub url: String,
    /// `None` for types we do not serve; they always get an empty response.
    pub ty: Option<TypeUrl>,
    pub subscription: Subscription,
    /// What the proxy holds from us (or, in delta, told us it holds), name → hash.
    pub held: BTreeMap<String, u64>,
    pub status: TypeStatus,
    /// Names carried by the last response, recorded against a NACK of it.
    last_names: Vec<String>,
}

impl TypeState {
    pub fn new(url: &str) -> TypeState {
        TypeState {
            url: url.to_string(),
            ty: TypeUrl::from_url(url),
            subscription: Subscription::default(),
            held: BTreeMap::new(),
            status: TypeStatus { type_url: url.to_string(), ..Default::default() },
            last_names: Vec::new(),
        }
    }

    /// The resources of this type in `resources` (empty for unknown types).
    pub fn map<'a>(&self, resources: &'a ProxyResources) -> &'a Arc<ResourceMap> {
        static EMPTY: LazyLock<Arc<ResourceMap>> = LazyLock::new(Arc::default);
        match self.ty {
            Some(ty) => resources.get(ty),
            None => &EMPTY,
        }
    }

    /// The resources the subscription selects, in name order.
    pub fn selected<'a>(&self, map: &'a ResourceMap) -> Vec<&'a Arc<Resource>> {
        if self.subscription.wildcard {
            map.values().collect()
        } else {
            self.subscription.names.iter().filter_map(|n| map.get(n)).collect()
        }
    }

    /// Forgets held resources the proxy no longer subscribes to: it dropped them, so a later
    /// re-subscription must send them again.
    pub fn prune_unwanted(&mut self) {
        let sub = &self.subscription;
        self.held.retain(|name, _| sub.covers(name));
    }

    pub fn check_nonce(&self, nonce: &str) -> NonceCheck {
        match &self.status.sent_nonce {
            _ if nonce.is_empty() => NonceCheck::Fresh,
            None => NonceCheck::Fresh,
            Some(sent) if sent == nonce => NonceCheck::Current,
            Some(_) => NonceCheck::Stale,
        }
    }

    pub fn ack(&mut self, version: String) {
        self.status.acked_version = Some(version);
        self.status.state = AckState::Acked;
        self.status.acks += 1;
    }

    /// Records a rejection. Nothing is resent here: `held` keeps the rejected hashes, so the
    /// same config goes out again only when its content or the subscription changes.
    pub fn nack(&mut self, proxy_id: &str, error: String) {
        let version = self.status.sent_version.clone().unwrap_or_default();
        warn!(
            proxy = proxy_id,
            type_url = %self.url,
            version = %version,
            error = %error,
            "proxy rejected config (NACK)"
        );
        self.status.state = AckState::Nacked;
        self.status.nacks += 1;
        self.status.last_nack = Some(Nack {
            version,
            nonce: self.status.sent_nonce.clone().unwrap_or_default(),
            error,
            resources: self.last_names.clone(),
            at_unix_ms: unix_ms(SystemTime::now()),
        });
    }

    pub fn stale(&mut self) {
        self.status.stale += 1;
    }

    /// Records a response about to go out.
    pub fn sent(&mut self, nonce: String, version: String, names: Vec<String>) {
        self.status.sent_nonce = Some(nonce);
        self.status.sent_version = Some(version);
        self.status.state = AckState::Pending;
        self.status.responses += 1;
        self.last_names = names;
    }

    /// The status as the registry shows it.
    pub fn snapshot(&self) -> TypeStatus {
        TypeStatus {
            subscription: self.subscription.clone(),
            resources: self.held.len(),
            ..self.status.clone()
        }
    }
}

/// Hands out nonces unique to a connection. Nonces, unlike versions, may be counters: they
/// only pair a response with its ACK on one stream.
#[derive(Debug)]
pub(crate) struct Nonces {
    prefix: u64,
    next: u64,
}

impl Nonces {
    pub fn new(connection_id: u64) -> Nonces {
        Nonces { prefix: connection_id, next: 0 }
    }

    pub fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.prefix, self.next)
    }
}

/// The registry view of a connection's types.
pub(crate) fn statuses<'a>(
    types: impl IntoIterator<Item = &'a TypeState>,
) -> BTreeMap<String, TypeStatus> {
    types.into_iter().map(|t| (t.url.clone(), t.snapshot())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_checks() {
        let mut s = TypeState::new(TypeUrl::Cluster.url());
        assert_eq!(s.check_nonce(""), NonceCheck::Fresh);
        assert_eq!(s.check_nonce("1-1"), NonceCheck::Fresh, "nothing sent on this stream yet");
        s.sent("1-1".into(), "v".into(), vec![]);
        assert_eq!(s.check_nonce("1-1"), NonceCheck::Current);
        s.sent("1-2".into(), "v2".into(), vec![]);
        assert_eq!(s.check_nonce("1-1"), NonceCheck::Stale);
        assert_eq!(s.check_nonce(""), NonceCheck::Fresh);
    }

    #[test]
    fn nack_keeps_rejected_version_and_names() {
        let mut s = TypeState::new(TypeUrl::Listener.url());
        s.sent("1-1".into(), "abc".into(), vec!["l1".into()]);
        s.nack("p", "bad listener".into());
        let st = s.snapshot();
        assert_eq!(st.state, AckState::Nacked);
        let nack = st.last_nack.unwrap();
        assert_eq!((nack.version.as_str(), nack.error.as_str()), ("abc", "bad listener"));
        assert_eq!(nack.resources, vec!["l1"]);
        s.ack("abc".into());
        assert_eq!(s.snapshot().state, AckState::Acked);
        assert!(s.snapshot().last_nack.is_some(), "the last NACK stays visible");
    }
}
