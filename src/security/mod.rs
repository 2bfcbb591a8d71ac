//! Who may have what: the TLS xDS port (istiod's 15012) and the CA API on it, the
//! authentication of its callers, and the secrets an authenticated proxy is sent.
//!
//! - [`tls_port`]: TLS with a certificate from the CA; a client certificate the CA issued is
//!   verified and its SPIFFE id passed to every request ([`crate::xds::Peer`]);
//! - [`authenticate`]: a caller is its client certificate's identity, else its bearer token's
//!   (a Kubernetes service-account token checked with a TokenReview, [`token_review`]);
//! - [`secrets`]: a stock Envoy cannot write a CSR, so pilotfish makes its key and certificate
//!   (`default`) and sends them with the roots (`ROOTCA`) over ADS;
//! - [`ca_service`]: `istio.v1.auth.IstioCertificateService`, for istio-agent and ztunnel.

pub mod authenticate;
pub mod ca_service;
pub mod secrets;
pub mod tls_port;
pub mod token_review;

/// The generated code of `proto/istio/security/v1alpha1/ca.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

pub use authenticate::Authenticator;
pub use secrets::WorkloadSecrets;
