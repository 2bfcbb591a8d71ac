//! Who a caller of the TLS port is, as istiod's authenticators decide: a client certificate the
//! mesh CA issued (TLS has verified it; its SPIFFE id must be of this trust domain), else a
//! Kubernetes service-account token for the audience `istio-ca`, checked with a TokenReview.
//! The identity never comes from anything else the caller says.

use std::sync::Arc;

use tonic::Status;
use tonic::codegen::BoxFuture;

use super::token_review::TokenReviewer;
use crate::ca::SpiffeId;
use crate::xds::Authenticate;

pub struct Authenticator {
    trust_domain: String,
    /// `None` without a cluster: there is nobody to ask about a token.
    tokens: Option<Arc<TokenReviewer>>,
}

impl Authenticator {
    pub fn new(
        trust_domain: impl Into<String>,
        tokens: Option<Arc<TokenReviewer>>,
    ) -> Authenticator {
        Authenticator {
            trust_domain: trust_domain.into(),
            tokens,
        }
    }

    pub async fn caller(
        &self,
        client_cert: Option<SpiffeId>,
        bearer: Option<String>,
    ) -> Result<SpiffeId, Status> {
        if let Some(id) = client_cert {
            if id.trust_domain() != self.trust_domain {
                return Err(Status::unauthenticated(format!(
                    "client certificate {id}: trust domain {:?} is not this mesh's {:?}",
                    id.trust_domain(),
                    self.trust_domain
                )));
            }
            return Ok(id);
        }
        match (bearer, &self.tokens) {
            (Some(token), Some(reviewer)) => {
                let (namespace, account) = reviewer.review(&token).await?;
                SpiffeId::new(&self.trust_domain, namespace, account).map_err(|e| {
                    Status::unauthenticated(format!("the token's service account: {e}"))
                })
            }
            (Some(_), None) => Err(Status::unauthenticated(
                "bearer tokens are checked only in Kubernetes mode; present a client certificate from the mesh CA",
            )),
            (None, _) => Err(Status::unauthenticated(
                "no client certificate from the mesh CA and no `authorization: Bearer` service-account token",
            )),
        }
    }
}

impl Authenticate for Authenticator {
    fn authenticate(
        &self,
        client_cert: Option<SpiffeId>,
        bearer: Option<String>,
    ) -> BoxFuture<SpiffeId, Status> {
        let this = Authenticator {
            trust_domain: self.trust_domain.clone(),
            tokens: self.tokens.clone(),
        };
        Box::pin(async move { this.caller(client_cert, bearer).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_certificate_of_this_mesh_is_the_identity() {
        let auth = Authenticator::new("cluster.local", None);
        let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/sleep".parse().unwrap();
        assert_eq!(
            auth.caller(Some(id.clone()), Some("ignored".into()))
                .await
                .unwrap(),
            id
        );
        let foreign: SpiffeId = "spiffe://other.mesh/ns/foo/sa/sleep".parse().unwrap();
        let err = auth.caller(Some(foreign), None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("other.mesh"), "{}", err.message());
    }

    #[tokio::test]
    async fn without_a_certificate_a_token_needs_a_cluster() {
        let auth = Authenticator::new("cluster.local", None);
        let err = auth.caller(None, Some("eyJ...".into())).await.unwrap_err();
        assert!(
            err.message().contains("Kubernetes mode"),
            "{}",
            err.message()
        );
        let err = auth.caller(None, None).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
