//! Mutual TLS between sidecars, as istiod sets it up: upstream, a DestinationRule's `tls`
//! (ISTIO_MUTUAL, MUTUAL, SIMPLE, DISABLE) or, without one, auto-mTLS to the endpoints that have
//! a sidecar (`security.istio.io/tlsMode: istio`); downstream, the inbound chains
//! PeerAuthentication asks for (`sidecar/inbound.rs`).
//!
//! Certificates come over SDS from the TLS xDS port, so only a proxy that authenticated there
//! can take part: its clusters are the *secure* variant. A proxy on the plaintext port gets
//! clusters that never refer to a secret it would wait for forever.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{cluster::TransportSocketMatch, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, transport_socket::ConfigType, DataSource, Metadata, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value};
use envoy_types::util::pack_any;

use super::security::{sds_secret, ROOT_CA, WORKLOAD_CERT};
use crate::config::istio::destination_rule::{ClientTlsMode, ClientTlsSettings};
use crate::config::istio::DestinationRule;
use crate::index::services::Labels;
use crate::index::{Resolution, Service};

/// The pod label istio's injector sets on workloads with a sidecar.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Where Envoy looks for an endpoint's transport socket match.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The ALPN istiod's sidecars offer in-mesh; inbound chains match it.
pub const ALPN_IN_MESH: &[&str] = &["istio-peer-exchange", "istio"];
/// What an inbound mTLS chain accepts (istiod's `mtlsHTTPALPNs` and `mtlsTCPALPNs`).
pub const INBOUND_MTLS_ALPNS: &[&str] = &["istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"];
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// Whether an endpoint has a sidecar to talk mTLS with.
pub fn has_sidecar(labels: &Labels) -> bool {
    labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")
}

/// The endpoint metadata auto-mTLS matches on: `{tlsMode: istio}` for endpoints with a sidecar.
pub fn endpoint_metadata(labels: &Labels) -> Option<Metadata> {
    has_sidecar(labels).then(|| Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_istio())].into_iter().collect(),
        ..Default::default()
    })
}

fn tls_mode_istio() -> Struct {
    Struct { fields: [("tlsMode".to_string(), Value { kind: Some(Kind::StringValue("istio".into())) })].into_iter().collect() }
}

/// Who the proxy can be in a TLS handshake: `Some` only for a proxy sent its certificate.
#[derive(Debug, Clone, Copy)]
pub struct Secure<'a> {
    pub trust_domain: &'a str,
}

/// Applies the upstream TLS of `tls` (the DestinationRule's, merged for the subset) to an
/// outbound cluster of `service`. ISTIO_MUTUAL and auto-mTLS only for a [`Secure`] proxy.
pub fn apply_upstream(c: &mut Cluster, service: &Service, port: u16, subset: &str, tls: Option<&ClientTlsSettings>, secure: Option<Secure<'_>>) {
    match tls.and_then(|t| t.mode) {
        Some(ClientTlsMode::Disable) => {}
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            if let Some(t) = tls {
                c.transport_socket = Some(tls_socket(originated(t)));
            }
        }
        Some(ClientTlsMode::IstioMutual) => {
            if let Some(secure) = secure {
                let sni = tls.map(|t| t.sni.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
                let sans = tls.map(|t| t.subject_alt_names.clone()).filter(|s| !s.is_empty());
                let ctx = istio_mutual(sni.unwrap_or_else(|| istio_sni(port, subset, &service.hostname)), sans.unwrap_or_else(|| service_identities(service, secure)));
                c.transport_socket = Some(tls_socket(ctx));
            }
        }
        None => {
            // Auto-mTLS: only where some endpoint has a sidecar; the others stay plaintext.
            let auto = service.resolution == Resolution::Eds && !service.mesh_external && service.endpoints.iter().any(|e| has_sidecar(&e.labels));
            if let (true, Some(secure)) = (auto, secure) {
                let ctx = istio_mutual(istio_sni(port, subset, &service.hostname), service_identities(service, secure));
                c.transport_socket_matches = vec![
                    TransportSocketMatch { name: "tlsMode-istio".into(), r#match: Some(tls_mode_istio()), transport_socket: Some(tls_socket(ctx)) },
                    TransportSocketMatch {
                        name: "tlsMode-disabled".into(),
                        r#match: Some(Struct::default()),
                        transport_socket: Some(TransportSocket {
                            name: "envoy.transport_sockets.raw_buffer".into(),
                            config_type: Some(ConfigType::TypedConfig(pack_any(RawBuffer::default()))),
                        }),
                    },
                ];
            }
        }
    }
}

/// Whether a service's clusters can differ for a secure proxy: some endpoint has a sidecar
/// (auto-mTLS), or a rule (or one of its subsets) asks for ISTIO_MUTUAL.
pub fn may_differ(service: &Service, dr: Option<&DestinationRule>) -> bool {
    let istio_mutual = |t: Option<&ClientTlsSettings>| t.and_then(|t| t.mode) == Some(ClientTlsMode::IstioMutual);
    service.endpoints.iter().any(|e| has_sidecar(&e.labels))
        || dr.is_some_and(|d| {
            istio_mutual(d.traffic_policy.as_ref().and_then(|p| p.tls.as_ref()))
                || d.subsets.iter().any(|s| istio_mutual(s.traffic_policy.as_ref().and_then(|p| p.tls.as_ref())))
        })
}

/// istiod's SNI for in-mesh TLS: `outbound_.<port>_.<subset>_.<host>`.
pub fn istio_sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// The SPIFFE ids a service's endpoints run as, which the server's certificate must carry.
fn service_identities(service: &Service, secure: Secure<'_>) -> Vec<String> {
    let ids: BTreeSet<String> = service
        .endpoints
        .iter()
        .filter(|e| !e.service_account.is_empty())
        .map(|e| {
            if e.service_account.starts_with("spiffe://") {
                e.service_account.clone()
            } else {
                format!("spiffe://{}/ns/{}/sa/{}", secure.trust_domain, service.namespace, e.service_account)
            }
        })
        .collect();
    ids.into_iter().collect()
}

/// Client side of ISTIO_MUTUAL: the proxy's certificate, the mesh roots, the peer's identities.
fn istio_mutual(sni: String, sans: Vec<String>) -> UpstreamTlsContext {
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds_secret(WORKLOAD_CERT)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans.iter().map(|s| san(SanType::Uri, s)).collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds_secret(ROOT_CA)),
                ..Default::default()
            })),
            alpn_protocols: ALPN_IN_MESH.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        sni,
        ..Default::default()
    }
}

/// SIMPLE and MUTUAL origination from files on the proxy, as istiod writes them for sidecars.
fn originated(t: &ClientTlsSettings) -> UpstreamTlsContext {
    let file = |path: &str| (!path.is_empty()).then(|| DataSource { specifier: Some(Specifier::Filename(path.to_string())), ..Default::default() });
    let mut common = CommonTlsContext::default();
    if t.mode == Some(ClientTlsMode::Mutual) {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: file(&t.client_certificate),
            private_key: file(&t.private_key),
            ..Default::default()
        }];
    }
    if !t.insecure_skip_verify.unwrap_or(false) && (!t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty()) {
        common.validation_context_type = Some(ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: file(&t.ca_certificates),
            crl: file(&t.ca_crl),
            match_typed_subject_alt_names: t.subject_alt_names.iter().map(|s| san(SanType::Dns, s)).collect(),
            ..Default::default()
        }));
    }
    UpstreamTlsContext { common_tls_context: Some(common), sni: t.sni.clone(), ..Default::default() }
}

fn san(san_type: SanType, value: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher { match_pattern: Some(MatchPattern::Exact(value.to_string())), ..Default::default() }),
        ..Default::default()
    }
}

fn tls_socket<M: prost::Name>(ctx: M) -> TransportSocket {
    TransportSocket { name: TLS_SOCKET.into(), config_type: Some(ConfigType::TypedConfig(pack_any(ctx))) }
}

/// Server side of in-mesh mTLS on an inbound chain: the proxy's certificate, peers checked
/// against the mesh roots, a client certificate required.
pub fn inbound_tls_socket() -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds_secret(WORKLOAD_CERT)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext::default()),
                validation_context_sds_secret_config: Some(sds_secret(ROOT_CA)),
                ..Default::default()
            })),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    tls_socket(ctx)
}
