//! Resource bodies for CSDS (`exclude_resource_contents: false`): what the connection's proxy
//! gets from the current snapshot, as istiod computes its config dump. Secrets leave with their
//! private key replaced: CSDS is a debug surface, not a way to read credentials.

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::xds::{Resource, TypeUrl};

/// What a redacted key reads, as Envoy's admin `/config_dump` prints sensitive fields.
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, thiserror::Error)]
#[error("resource {name:?} of {type_url}: {source}")]
pub struct BodyError {
    pub type_url: String,
    pub name: String,
    pub source: prost::DecodeError,
}

/// One encoded resource as the `Any` CSDS carries, secrets redacted.
pub fn body(ty: TypeUrl, resource: &Resource) -> Result<Any, BodyError> {
    let error = |source| BodyError {
        type_url: ty.url().to_string(),
        name: resource.name.clone(),
        source,
    };
    let mut any = Any::decode(resource.any.as_ref()).map_err(error)?;
    if ty == TypeUrl::Secret {
        let mut secret = Secret::decode(any.value.as_slice()).map_err(error)?;
        redact(&mut secret);
        any.value = secret.encode_to_vec();
    }
    Ok(any)
}

/// Replaces the inline contents of every secret field (private keys, session ticket keys,
/// generic secrets); a file name or environment variable is only a pointer and stays.
pub fn redact(secret: &mut Secret) {
    match &mut secret.r#type {
        Some(secret::Type::TlsCertificate(cert)) => {
            redact_source(&mut cert.private_key);
            redact_source(&mut cert.password);
        }
        Some(secret::Type::SessionTicketKeys(keys)) => {
            keys.keys.iter_mut().for_each(redact_inline);
        }
        Some(secret::Type::GenericSecret(generic)) => redact_source(&mut generic.secret),
        Some(secret::Type::ValidationContext(_)) | None => {}
    }
}

fn redact_source(source: &mut Option<DataSource>) {
    if let Some(source) = source {
        redact_inline(source);
    }
}

fn redact_inline(source: &mut DataSource) {
    if matches!(
        source.specifier,
        Some(Specifier::InlineBytes(_) | Specifier::InlineString(_))
    ) {
        source.specifier = Some(Specifier::InlineString(REDACTED.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::TlsCertificate;

    fn inline(bytes: &[u8]) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
            ..Default::default()
        })
    }

    #[test]
    fn a_secret_body_keeps_its_chain_and_loses_its_key() {
        let secret = Secret {
            name: "kubernetes://istio-system/gw-cert".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(b"CHAIN"),
                private_key: inline(b"KEY"),
                ..Default::default()
            })),
        };
        let resource = Resource::encode(secret.name.clone(), &secret);
        let any = body(TypeUrl::Secret, &resource).unwrap();
        assert_eq!(any.type_url, TypeUrl::Secret.url());
        let back = Secret::decode(any.value.as_slice()).unwrap();
        let Some(secret::Type::TlsCertificate(cert)) = back.r#type else {
            panic!("not a certificate: {back:?}");
        };
        assert_eq!(cert.certificate_chain, inline(b"CHAIN"));
        assert_eq!(
            cert.private_key.unwrap().specifier,
            Some(Specifier::InlineString(REDACTED.into()))
        );
        assert!(!any.value.windows(3).any(|w| w == b"KEY"));
    }

    #[test]
    fn a_key_file_name_is_not_redacted() {
        let file = Some(DataSource {
            specifier: Some(Specifier::Filename("/etc/certs/key.pem".into())),
            ..Default::default()
        });
        let mut secret = Secret {
            name: "file".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                private_key: file.clone(),
                ..Default::default()
            })),
        };
        redact(&mut secret);
        let Some(secret::Type::TlsCertificate(cert)) = secret.r#type else {
            panic!("type changed");
        };
        assert_eq!(cert.private_key, file);
    }

    #[test]
    fn other_types_pass_through_unchanged() {
        let cluster = envoy_types::pb::envoy::config::cluster::v3::Cluster {
            name: "outbound|80||a.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let resource = Resource::encode(cluster.name.clone(), &cluster);
        let any = body(TypeUrl::Cluster, &resource).unwrap();
        assert_eq!(any.encode_to_vec(), resource.any.to_vec());
    }
}
