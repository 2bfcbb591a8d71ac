//! What the TLS xDS port adds to a stream: the caller's verified identity, and the secrets that
//! identity is due. The plaintext port has neither, and its proxies are never sent a secret.
//!
//! How a caller is authenticated (client certificate, service-account token) and how secrets
//! are made (the CA) are the caller's business, behind [`Authenticate`] and [`IssueSecrets`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tonic::Status;
use tonic::codegen::BoxFuture;

use super::{ProxyResources, ResourceMap, TypeUrl};
use crate::ca::SpiffeId;
use crate::model::Proxy;

/// What a TLS connection knows of its peer: `tonic` puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The SPIFFE id of a client certificate that TLS verified against the mesh roots.
    pub identity: Option<SpiffeId>,
}

pub trait Authenticate: Send + Sync + 'static {
    /// The caller's identity: its verified client certificate's, else its bearer token's
    /// (`authorization: Bearer …`). Neither is `Status::unauthenticated`.
    fn authenticate(
        &self,
        client_cert: Option<SpiffeId>,
        bearer: Option<String>,
    ) -> BoxFuture<SpiffeId, Status>;
}

pub trait IssueSecrets: Send + Sync + 'static {
    /// The secrets `identity` gets for being who it is: its certificate and key, the roots.
    fn issue(&self, identity: &SpiffeId) -> Result<IdentitySecrets, Status>;
}

/// One issue of an identity's secrets, good until `refresh_at` (well before they expire).
#[derive(Debug, Clone)]
pub struct IdentitySecrets {
    pub resources: Arc<ResourceMap>,
    pub refresh_at: SystemTime,
}

/// Authentication and secrets: present on the TLS port only.
#[derive(Clone)]
pub struct Security {
    pub authenticate: Arc<dyn Authenticate>,
    pub secrets: Arc<dyn IssueSecrets>,
}

/// As istiod's `checkConnectionIdentity`: a proxy may only claim the namespace (and service
/// account, when it names one) it authenticated as, since its config and secrets follow them.
pub fn check_identity(proxy: &Proxy, identity: &SpiffeId) -> Result<(), String> {
    if proxy.namespace != identity.namespace() {
        return Err(format!(
            "the proxy says namespace {:?}, but authenticated as {identity}",
            proxy.namespace
        ));
    }
    let account = &proxy.metadata.service_account;
    if !account.is_empty() && account != identity.service_account() {
        return Err(format!(
            "the proxy says SERVICE_ACCOUNT {account:?}, but authenticated as {identity}"
        ));
    }
    Ok(())
}

/// A proxy's resources as sent: the config's secrets (gateway credentials) with the identity's
/// own, or — for an unauthenticated proxy — no secrets at all.
pub fn with_secrets(
    base: &Arc<ProxyResources>,
    own: Option<&IdentitySecrets>,
) -> Arc<ProxyResources> {
    let config = base.get(TypeUrl::Secret);
    match own {
        None if config.is_empty() => Arc::clone(base),
        None => {
            let mut r = ProxyResources::clone(base);
            r.set(TypeUrl::Secret, ResourceMap::new());
            Arc::new(r)
        }
        Some(own) => {
            // Every secure connection gets its own copy; the versions of the shared maps are
            // computed once, in the shared value, before it is copied (else each copy would hash
            // a thousand names per type, per connection, per push).
            for ty in TypeUrl::ALL.into_iter().filter(|t| *t != TypeUrl::Secret) {
                base.version(ty);
            }
            let mut merged = ResourceMap::clone(config);
            merged.extend(
                own.resources
                    .iter()
                    .map(|(k, v)| (k.clone(), Arc::clone(v))),
            );
            let mut r = ProxyResources::clone(base);
            r.set(TypeUrl::Secret, merged);
            Arc::new(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::Resource;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

    fn secret(name: &str) -> Arc<Resource> {
        Arc::new(Resource::encode(
            name,
            &Secret {
                name: name.into(),
                ..Default::default()
            },
        ))
    }

    fn proxy(id: &str, account: &str) -> Proxy {
        let mut p = Proxy::from_id(id).unwrap();
        p.metadata.service_account = account.into();
        p
    }

    #[test]
    fn a_proxy_claims_only_its_own_namespace_and_account() {
        let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/sleep".parse().unwrap();
        assert!(
            check_identity(
                &proxy(
                    "sidecar~10.0.0.1~sleep-1.foo~foo.svc.cluster.local",
                    "sleep"
                ),
                &id
            )
            .is_ok()
        );
        assert!(
            check_identity(
                &proxy("sidecar~10.0.0.1~sleep-1.foo~foo.svc.cluster.local", ""),
                &id
            )
            .is_ok()
        );
        let other_ns = check_identity(
            &proxy("sidecar~10.0.0.1~x-1.bar~bar.svc.cluster.local", "sleep"),
            &id,
        )
        .unwrap_err();
        assert!(other_ns.contains("\"bar\""), "{other_ns}");
        let other_sa = check_identity(
            &proxy("sidecar~10.0.0.1~x-1.foo~foo.svc.cluster.local", "httpbin"),
            &id,
        )
        .unwrap_err();
        assert!(other_sa.contains("\"httpbin\""), "{other_sa}");
    }

    #[test]
    fn unauthenticated_proxies_get_no_secrets_and_others_get_their_own() {
        let mut base = ProxyResources::default();
        base.set(
            TypeUrl::Secret,
            [("kubernetes://cert".to_string(), secret("kubernetes://cert"))].into(),
        );
        let base = Arc::new(base);
        assert!(with_secrets(&base, None).get(TypeUrl::Secret).is_empty());
        let own = IdentitySecrets {
            resources: Arc::new([("default".to_string(), secret("default"))].into()),
            refresh_at: SystemTime::now(),
        };
        let got = with_secrets(&base, Some(&own));
        assert_eq!(
            got.get(TypeUrl::Secret).keys().collect::<Vec<_>>(),
            ["default", "kubernetes://cert"]
        );
        let plain = Arc::new(ProxyResources::default());
        assert!(
            Arc::ptr_eq(&with_secrets(&plain, None), &plain),
            "nothing to strip: shared as is"
        );
    }
}
