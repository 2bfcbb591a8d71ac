//! Mutual TLS between sidecars, as istiod sets it up: upstream, a DestinationRule's `tls`
//! (ISTIO_MUTUAL, MUTUAL, SIMPLE, DISABLE) or, without one, auto-mTLS to the endpoints that have
//! a sidecar (`security.istio.io/tlsMode: istio`); downstream, the inbound chains
//! PeerAuthentication asks for (`sidecar/inbound.rs`).
//!
//! Certificates come over SDS from the TLS xDS port, so only a proxy that authenticated there
//! can take part: its clusters are the *secure* variant. A proxy on the plaintext port gets
//! clusters that never refer to a secret it would wait for forever.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::TransportSocketMatch};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Metadata, TransportSocket, data_source::Specifier, transport_socket::ConfigType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};
use envoy_types::util::pack_any;

use super::security::{ROOT_CA, WORKLOAD_CERT, combined_validation, matching_sans, sds_secret};
use crate::config::istio::DestinationRule;
use crate::config::istio::destination_rule::{ClientTlsMode, ClientTlsSettings};
pub use crate::index::security::{TLS_MODE_LABEL, has_sidecar};
use crate::index::services::Labels;
use crate::index::{Resolution, Service};

/// Where Envoy looks for an endpoint's transport socket match.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The ALPN istiod's sidecars offer in-mesh; inbound chains match it.
pub const ALPN_IN_MESH: &[&str] = &["istio-peer-exchange", "istio"];
/// What an inbound mTLS chain accepts (istiod's `mtlsHTTPALPNs` and `mtlsTCPALPNs`).
pub const INBOUND_MTLS_ALPNS: &[&str] = &[
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// The endpoint metadata auto-mTLS matches on: `{tlsMode: istio}` for endpoints with a sidecar.
pub fn endpoint_metadata(labels: &Labels) -> Option<Metadata> {
    has_sidecar(labels).then(|| Metadata {
        filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_istio())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
}

fn tls_mode_istio() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// Who the proxy can be in a TLS handshake: `Some` only for a proxy sent its certificate.
#[derive(Debug, Clone, Copy)]
pub struct Secure<'a> {
    pub trust_domain: &'a str,
}

/// Applies the upstream TLS of `tls` (the DestinationRule's, merged for the subset) to an
/// outbound cluster of `service`. ISTIO_MUTUAL and auto-mTLS only for a [`Secure`] proxy.
pub fn apply_upstream(
    c: &mut Cluster,
    service: &Service,
    port: u16,
    subset: &str,
    tls: Option<&ClientTlsSettings>,
    secure: Option<Secure<'_>>,
) {
    match tls.and_then(|t| t.mode) {
        Some(ClientTlsMode::Disable) => {}
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            if let Some(t) = tls {
                c.transport_socket = Some(tls_socket(originated(t)));
            }
        }
        Some(ClientTlsMode::IstioMutual) => {
            if let Some(secure) = secure {
                let sni = tls
                    .map(|t| t.sni.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let sans = tls
                    .map(|t| t.subject_alt_names.clone())
                    .filter(|s| !s.is_empty());
                let ctx = istio_mutual(
                    sni.unwrap_or_else(|| istio_sni(port, subset, &service.hostname)),
                    sans.unwrap_or_else(|| service_identities(service, secure)),
                );
                c.transport_socket = Some(tls_socket(ctx));
            }
        }
        None => {
            // Auto-mTLS: only where some endpoint has a sidecar; the others stay plaintext.
            let auto = service.resolution == Resolution::Eds
                && !service.mesh_external
                && service.endpoints.iter().any(|e| has_sidecar(&e.labels));
            if let (true, Some(secure)) = (auto, secure) {
                let ctx = istio_mutual(
                    istio_sni(port, subset, &service.hostname),
                    service_identities(service, secure),
                );
                c.transport_socket_matches = vec![
                    TransportSocketMatch {
                        name: "tlsMode-istio".into(),
                        r#match: Some(tls_mode_istio()),
                        transport_socket: Some(tls_socket(ctx)),
                    },
                    TransportSocketMatch {
                        name: "tlsMode-disabled".into(),
                        r#match: Some(Struct::default()),
                        transport_socket: Some(TransportSocket {
                            name: "envoy.transport_sockets.raw_buffer".into(),
                            config_type: Some(ConfigType::TypedConfig(pack_any(
                                RawBuffer::default(),
                            ))),
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
    let istio_mutual =
        |t: Option<&ClientTlsSettings>| t.and_then(|t| t.mode) == Some(ClientTlsMode::IstioMutual);
    service.endpoints.iter().any(|e| has_sidecar(&e.labels))
        || dr.is_some_and(|d| {
            istio_mutual(d.traffic_policy.as_ref().and_then(|p| p.tls.as_ref()))
                || d.subsets
                    .iter()
                    .any(|s| istio_mutual(s.traffic_policy.as_ref().and_then(|p| p.tls.as_ref())))
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
                format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    secure.trust_domain, service.namespace, e.service_account
                )
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
            validation_context_type: Some(combined_validation(matching_sans(&sans), ROOT_CA)),
            alpn_protocols: ALPN_IN_MESH.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        sni,
        ..Default::default()
    }
}

/// SIMPLE and MUTUAL origination from files on the proxy, as istiod writes them for sidecars.
fn originated(t: &ClientTlsSettings) -> UpstreamTlsContext {
    let file = |path: &str| {
        (!path.is_empty()).then(|| DataSource {
            specifier: Some(Specifier::Filename(path.to_string())),
            ..Default::default()
        })
    };
    let mut common = CommonTlsContext::default();
    if t.mode == Some(ClientTlsMode::Mutual) {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: file(&t.client_certificate),
            private_key: file(&t.private_key),
            ..Default::default()
        }];
    }
    if !t.insecure_skip_verify.unwrap_or(false)
        && (!t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty())
    {
        common.validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: file(&t.ca_certificates),
                crl: file(&t.ca_crl),
                ..matching_sans(&t.subject_alt_names)
            },
        ));
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone(),
        ..Default::default()
    }
}

fn tls_socket<M: prost::Name>(ctx: M) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(ctx))),
    }
}

/// Server side of in-mesh mTLS on an inbound chain: the proxy's certificate, peers checked
/// against the mesh roots, a client certificate required.
pub fn inbound_tls_socket() -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds_secret(WORKLOAD_CERT)],
            validation_context_type: Some(combined_validation(
                CertificateValidationContext::default(),
                ROOT_CA,
            )),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    tls_socket(ctx)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

    use super::*;

    use crate::generate::{cluster, endpoint};
    use crate::index::Index;

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec: {clusterIP: 10.96.0.10, selector: {app: httpbin}, ports: [{name: http, port: 8000, targetPort: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-1, namespace: foo, labels: {app: httpbin, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: httpbin, containers: [{name: app, image: x}]}
status: {podIP: 10.1.0.1, phase: Running}
"#;

    fn index(extra: &str) -> Index {
        Index::from_yaml(&format!("{MESH}{extra}"))
    }

    const NAME: &str = "outbound|8000||httpbin.foo.svc.cluster.local";
    const SECURE: Secure<'static> = Secure {
        trust_domain: "cluster.local",
    };

    fn cluster_of(index: &Index, secure: Option<Secure<'_>>) -> Cluster {
        let service = &index.services["httpbin.foo.svc.cluster.local"];
        let dr = index.destination_rule(&service.hostname).map(|d| d.spec());
        cluster::service_clusters(service, dr, secure)[NAME]
            .decode()
            .unwrap()
    }

    fn upstream(socket: &TransportSocket) -> UpstreamTlsContext {
        match &socket.config_type {
            Some(ConfigType::TypedConfig(any)) => {
                prost::Message::decode(any.value.as_slice()).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auto_mtls_only_for_a_proxy_with_its_certificate() {
        let index = index("");
        assert!(
            cluster_of(&index, None).transport_socket_matches.is_empty(),
            "no secret would ever come"
        );
        let secure = cluster_of(&index, Some(SECURE));
        let names: Vec<&str> = secure
            .transport_socket_matches
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
        let ctx = upstream(
            secure.transport_socket_matches[0]
                .transport_socket
                .as_ref()
                .unwrap(),
        );
        assert_eq!(ctx.sni, "outbound_.8000_._.httpbin.foo.svc.cluster.local");
        let Some(ValidationContextType::CombinedValidationContext(v)) = &ctx
            .common_tls_context
            .as_ref()
            .unwrap()
            .validation_context_type
        else {
            panic!()
        };
        let sans: Vec<_> = v
            .default_validation_context
            .as_ref()
            .unwrap()
            .match_typed_subject_alt_names
            .iter()
            .map(|m| m.matcher.clone().unwrap().match_pattern)
            .collect();
        assert_eq!(
            sans,
            [Some(MatchPattern::Exact(
                "spiffe://cluster.local/ns/foo/sa/httpbin".into()
            ))]
        );
    }

    #[test]
    fn a_destination_rule_decides_over_auto_mtls() {
        let rule = |mode: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: foo}}\nspec: {{host: httpbin, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n"
            )
        };
        let disabled = cluster_of(&index(&rule("DISABLE")), Some(SECURE));
        assert!(
            disabled.transport_socket.is_none() && disabled.transport_socket_matches.is_empty()
        );
        let mutual = cluster_of(&index(&rule("ISTIO_MUTUAL")), Some(SECURE));
        assert!(mutual.transport_socket.is_some() && mutual.transport_socket_matches.is_empty());
        assert!(
            cluster_of(&index(&rule("ISTIO_MUTUAL")), None)
                .transport_socket
                .is_none(),
            "no certificate, no ISTIO_MUTUAL"
        );
        let simple = cluster_of(&index(&rule("SIMPLE")), None);
        assert_eq!(
            upstream(simple.transport_socket.as_ref().unwrap()).sni,
            "",
            "SIMPLE needs no secret from pilotfish"
        );
    }

    #[test]
    fn endpoints_whose_peer_authentication_disables_mtls_are_not_marked() {
        let assignment = |index: &Index| -> ClusterLoadAssignment {
            endpoint::service_assignments(&index.services["httpbin.foo.svc.cluster.local"], None)
                [NAME]
                .decode()
                .unwrap()
        };
        let marked = assignment(&index(""));
        assert!(marked.endpoints[0].lb_endpoints[0].metadata.is_some());
        let disable = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: DISABLE}}\n";
        assert!(
            assignment(&index(disable)).endpoints[0].lb_endpoints[0]
                .metadata
                .is_none()
        );
        let other_port = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\nspec: {selector: {matchLabels: {app: httpbin}}, portLevelMtls: {81: {mode: DISABLE}}}\n";
        assert!(
            assignment(&index(other_port)).endpoints[0].lb_endpoints[0]
                .metadata
                .is_some(),
            "only port 81 is plaintext"
        );
    }
}
