//! Kubernetes service-account tokens, checked as istiod checks them: a TokenReview for the
//! audience `istio-ca`, whose user must be `system:serviceaccount:<namespace>:<name>`.
//!
//! Answers are kept for a minute (by the token's hash, never the token), so a proxy that
//! reconnects, or opens its CA and xDS streams together, costs the API server one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use tonic::Status;

/// The audience istio-agent's tokens are minted for.
pub const AUDIENCE: &str = "istio-ca";
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; the cache is emptied when full (it only saves API calls).
const CACHE_MAX: usize = 10_000;
const USER_PREFIX: &str = "system:serviceaccount:";

pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<u64, (Instant, String, String)>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> TokenReviewer {
        TokenReviewer {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token's `(namespace, service account)`, or why it is refused.
    pub async fn review(&self, token: &str) -> Result<(String, String), Status> {
        let key = xxhash_rust::xxh3::xxh3_64(token.as_bytes());
        if let Some((at, ns, sa)) = self.lock().get(&key).cloned()
            && at.elapsed() < CACHE_TTL
        {
            return Ok((ns, sa));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!("TokenReview failed: {e}");
                Status::unavailable(format!(
                    "the Kubernetes API could not review the token: {e}"
                ))
            })?;
        let (ns, sa) = identity_of(&reviewed).map_err(Status::unauthenticated)?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), ns.clone(), sa.clone()));
        Ok((ns, sa))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, String, String)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a TokenReview's answer: authenticated, for `istio-ca` (when the server says which
/// audiences it checked), and a service account's.
pub fn identity_of(review: &TokenReview) -> Result<(String, String), String> {
    let status = review
        .status
        .as_ref()
        .ok_or("the TokenReview has no status")?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return Err(format!("the token was refused: {why}"));
    }
    if let Some(audiences) = &status.audiences
        && !audiences.iter().any(|a| a == AUDIENCE)
    {
        return Err(format!(
            "the token is not for the audience {AUDIENCE:?} (it is for {audiences:?})"
        ));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let rest = user
        .strip_prefix(USER_PREFIX)
        .ok_or_else(|| format!("user {user:?} is not a service account"))?;
    let (ns, sa) = rest
        .split_once(':')
        .ok_or_else(|| format!("user {user:?} is not system:serviceaccount:<namespace>:<name>"))?;
    Ok((ns.to_string(), sa.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn answered(authenticated: bool, user: &str, audiences: Option<Vec<&str>>) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                user: Some(UserInfo {
                    username: Some(user.into()),
                    ..Default::default()
                }),
                audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
                error: (!authenticated).then(|| "token expired".to_string()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_account_for_istio_ca_is_accepted() {
        let ok = answered(
            true,
            "system:serviceaccount:foo:sleep",
            Some(vec!["istio-ca"]),
        );
        assert_eq!(
            identity_of(&ok).unwrap(),
            ("foo".to_string(), "sleep".to_string())
        );
        assert!(identity_of(&answered(true, "system:serviceaccount:foo:sleep", None)).is_ok());
    }

    #[test]
    fn refusals_say_why() {
        assert!(
            identity_of(&answered(false, "", None))
                .unwrap_err()
                .contains("token expired")
        );
        assert!(
            identity_of(&answered(
                true,
                "system:serviceaccount:foo:sleep",
                Some(vec!["api"])
            ))
            .unwrap_err()
            .contains("istio-ca")
        );
        assert!(
            identity_of(&answered(true, "jane", None))
                .unwrap_err()
                .contains("not a service account")
        );
    }
}
