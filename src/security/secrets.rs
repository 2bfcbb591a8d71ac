//! The secrets a proxy authenticated as an identity is sent over SDS: `default` (a fresh key and
//! its certificate for the identity) and `ROOTCA` (the roots every peer is checked against).
//!
//! Every connection gets its own key, as every pod has its own in Istio; renewed halfway through
//! the certificate's life, as istio-agent renews (`SECRET_GRACE_PERIOD_RATIO`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use rcgen::KeyPair;
use tonic::Status;

use crate::ca::{Authority, SpiffeId};
use crate::generate::security::{ROOT_CA, WORKLOAD_CERT};
use crate::xds::{IdentitySecrets, IssueSecrets, Resource, ResourceMap};

pub struct WorkloadSecrets {
    authority: Arc<Authority>,
    ttl: Duration,
}

impl WorkloadSecrets {
    /// Certificates valid for `ttl` (istiod's `DEFAULT_WORKLOAD_CERT_TTL`, 24 h, unless set).
    pub fn new(authority: Arc<Authority>, ttl: Duration) -> WorkloadSecrets {
        WorkloadSecrets { authority, ttl }
    }
}

impl IssueSecrets for WorkloadSecrets {
    fn issue(&self, identity: &SpiffeId) -> Result<IdentitySecrets, Status> {
        let internal = |e: &dyn std::fmt::Display| {
            Status::internal(format!("issuing a certificate for {identity}: {e}"))
        };
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| internal(&e))?;
        let cert = self
            .authority
            .sign_workload_key(&key, identity, self.ttl)
            .map_err(|e| internal(&e))?;
        let inline = |pem: String| {
            Some(DataSource {
                specifier: Some(Specifier::InlineBytes(pem.into_bytes())),
                ..Default::default()
            })
        };
        let workload = Secret {
            name: WORKLOAD_CERT.into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(cert.cert_chain.concat()),
                private_key: inline(key.serialize_pem()),
                ..Default::default()
            })),
        };
        let roots = Secret {
            name: ROOT_CA.into(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(self.authority.root_pem().to_string()),
                    ..Default::default()
                },
            )),
        };
        let resources: ResourceMap = [workload, roots]
            .into_iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Arc::new(Resource::encode(s.name.clone(), &s)),
                )
            })
            .collect();
        let now = SystemTime::now();
        let life = cert.not_after.duration_since(now).unwrap_or_default();
        Ok(IdentitySecrets {
            resources: Arc::new(resources),
            refresh_at: now + life / 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    fn pem_bytes(s: &Secret) -> Vec<u8> {
        match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                match &t.certificate_chain.as_ref().unwrap().specifier {
                    Some(Specifier::InlineBytes(b)) => b.clone(),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_issue_is_a_new_key_for_the_identity_with_the_roots() {
        let authority = Arc::new(Authority::generate("cluster.local").unwrap());
        let secrets = WorkloadSecrets::new(authority.clone(), Duration::from_secs(3600));
        let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/sleep".parse().unwrap();
        let a = secrets.issue(&id).unwrap();
        let b = secrets.issue(&id).unwrap();
        assert_eq!(
            a.resources.keys().collect::<Vec<_>>(),
            [ROOT_CA, WORKLOAD_CERT]
        );
        assert_ne!(
            a.resources[WORKLOAD_CERT].hash, b.resources[WORKLOAD_CERT].hash,
            "a new key every time"
        );
        assert_eq!(
            a.resources[ROOT_CA].hash, b.resources[ROOT_CA].hash,
            "the roots are the same bytes"
        );

        let workload: Secret = a.resources[WORKLOAD_CERT].decode().unwrap();
        let pem = pem_bytes(&workload);
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [GeneralName::URI("spiffe://cluster.local/ns/foo/sa/sleep")]
        );
        let left = a.refresh_at.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(1700) && left <= Duration::from_secs(1800),
            "renewed at half life: {left:?}"
        );
    }
}
