//! The `DownstreamTlsContext` of a Gateway server that terminates TLS, as istiod's
//! `buildGatewayListenerTLSContext` builds it, every certificate over SDS on the ADS stream:
//!
//! - `ISTIO_MUTUAL`: the proxy's own certificate (`default`) and the mesh roots (`ROOTCA`),
//!   client certificates required and matched against `subjectAltNames`, typed by their form;
//! - `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL` with `credentialName(s)`: `kubernetes://<name>` for
//!   each, and for the mutual modes `kubernetes://<name>-cacert` (with `subjectAltNames`,
//!   `verifyCertificateSpki`, `verifyCertificateHash`) to verify clients with; the protocol
//!   versions and cipher suites of the server apply (not to `ISTIO_MUTUAL`, as in istiod).
//!
//! The Secrets those names stand for come with the context: a credential that cannot be served
//! fails the server, so no listener waits on a secret that will never come.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsParameters,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::google::protobuf::BoolValue;

use crate::config::istio::gateway::{ServerTls, ServerTlsMode};
use crate::generate::credentials::{self, CredentialError, CredentialRef};
use crate::generate::security::{
    ROOT_CA, WORKLOAD_CERT, combined_validation, matching_sans, sds_secret,
};
use crate::index::Index;
use crate::validate::CIPHER_SUITES;
use crate::xds::Resource;

/// ALPN of a terminating HTTPS server (istiod's `ALPNHttp`), and of TLS servers but
/// `ISTIO_MUTUAL` ones.
pub const ALPN_HTTP: &[&str] = &["h2", "http/1.1"];
/// ALPN of an `ISTIO_MUTUAL` TLS (not HTTPS) server: istiod adds its metadata-exchange protocol.
pub const ALPN_MUTUAL_TCP: &[&str] = &["istio-peer-exchange", "h2", "http/1.1"];

/// A terminating server's TLS context and the Secrets (gateway credentials) it refers to.
pub struct Termination {
    pub context: DownstreamTlsContext,
    pub secrets: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{field} {credential:?}: {source}")]
    Credential {
        field: &'static str,
        credential: String,
        source: Box<CredentialError>,
    },
    #[error("mode {0:?} does not terminate TLS")]
    NotTerminating(ServerTlsMode),
    #[error("no credentialName: pilotfish serves server certificates from Secrets only")]
    NoCredential,
}

/// The TLS context of a server terminating TLS with `tls`, for a gateway proxy in
/// `proxy_namespace` (where credentials are looked up).
pub fn terminate(
    index: &Index,
    proxy_namespace: &str,
    tls: &ServerTls,
    alpn: &[&str],
) -> Result<Termination, TlsError> {
    let mut common = CommonTlsContext {
        alpn_protocols: alpn.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    let mut secrets = Vec::new();
    let require_client_certificate = match tls.mode {
        ServerTlsMode::IstioMutual => {
            common.tls_certificate_sds_secret_configs = vec![sds_secret(WORKLOAD_CERT)];
            common.validation_context_type = Some(combined_validation(
                matching_sans(&tls.subject_alt_names),
                ROOT_CA,
            ));
            true
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let (field, names) = if tls.credential_names.is_empty() {
                ("credentialName", std::slice::from_ref(&tls.credential_name))
            } else {
                ("credentialNames", tls.credential_names.as_slice())
            };
            if names.iter().all(String::is_empty) {
                return Err(TlsError::NoCredential);
            }
            let fail = |credential: &str, source| TlsError::Credential {
                field,
                credential: credential.into(),
                source: Box::new(source),
            };
            let mut first = None;
            for name in names {
                let credential =
                    CredentialRef::parse(name, proxy_namespace).map_err(|e| fail(name, e))?;
                secrets
                    .push(credentials::certificate(index, &credential).map_err(|e| fail(name, e))?);
                common
                    .tls_certificate_sds_secret_configs
                    .push(sds_secret(&credential.sds_name));
                first.get_or_insert(credential);
            }
            let mutual = tls.mode != ServerTlsMode::Simple;
            if let (true, Some(credential)) = (mutual, first) {
                // Clients are verified with the CA of the (first) credential, as istiod does.
                secrets.push(
                    credentials::ca_certificate(index, &credential)
                        .map_err(|e| fail(&names[0], e))?,
                );
                let defaults = CertificateValidationContext {
                    verify_certificate_spki: tls.verify_certificate_spki.clone(),
                    verify_certificate_hash: tls.verify_certificate_hash.clone(),
                    ..matching_sans(&tls.subject_alt_names)
                };
                common.validation_context_type =
                    Some(combined_validation(defaults, &credential.ca_sds_name()));
            }
            // Unlike istiod, SIMPLE's subjectAltNames are not sent: a validation context with SANs
            // but no CA is one Envoy rejects, and SIMPLE asks for no client certificate anyway.
            common.tls_params = tls_params(tls);
            tls.mode == ServerTlsMode::Mutual
        }
        mode @ (ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough) => {
            return Err(TlsError::NotTerminating(mode));
        }
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: require_client_certificate,
        }),
        ..Default::default()
    };
    Ok(Termination { context, secrets })
}

/// The server's protocol versions and cipher suites (those Envoy knows, each once: istiod's
/// `FilterCipherSuites`; validation warns about the others). `None` when it sets neither.
fn tls_params(tls: &ServerTls) -> Option<TlsParameters> {
    let mut cipher_suites: Vec<String> = Vec::new();
    for suite in &tls.cipher_suites {
        if CIPHER_SUITES.contains(&suite.as_str()) && !cipher_suites.contains(suite) {
            cipher_suites.push(suite.clone());
        }
    }
    let params = TlsParameters {
        tls_minimum_protocol_version: protocol(&tls.min_protocol_version) as i32,
        tls_maximum_protocol_version: protocol(&tls.max_protocol_version) as i32,
        cipher_suites,
        ..Default::default()
    };
    (params != TlsParameters::default()).then_some(params)
}

/// Istio's `TLSV1_2` as Envoy's; unset or unknown is `TLS_AUTO`.
fn protocol(version: &str) -> TlsProtocol {
    match version {
        "TLSV1_0" => TlsProtocol::TlSv10,
        "TLSV1_1" => TlsProtocol::TlSv11,
        "TLSV1_2" => TlsProtocol::TlSv12,
        "TLSV1_3" => TlsProtocol::TlSv13,
        _ => TlsProtocol::TlsAuto,
    }
}
