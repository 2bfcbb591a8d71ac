//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: istio-agent's (and ztunnel's) way
//! to a workload certificate. The certificate is for the authenticated caller; the CSR gives
//! only the key, and an `ImpersonatedIdentity` in the metadata is not honoured.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::authenticate::Authenticator;
use super::proto::istio_certificate_service_server::IstioCertificateService;
use super::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::ca::{Authority, CaError};
use crate::xds::Peer;
use crate::xds::service::bearer_token;

pub struct CaService {
    authority: Arc<Authority>,
    authenticator: Arc<Authenticator>,
}

impl CaService {
    pub fn new(authority: Arc<Authority>, authenticator: Arc<Authenticator>) -> CaService {
        CaService {
            authority,
            authenticator,
        }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let metrics = crate::metrics::global();
        metrics.csr.inc();
        let cert = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.identity.clone());
        let bearer = bearer_token(&request.metadata().clone().into_headers());
        let caller = self.authenticator.caller(cert, bearer).await?;
        let request = request.into_inner();
        if request
            .metadata
            .as_ref()
            .is_some_and(|m| m.fields.contains_key("ImpersonatedIdentity"))
        {
            tracing::info!(%caller, "CSR asks to impersonate another identity; signing for the caller only");
        }
        let ttl = u64::try_from(request.validity_duration).map_err(|_| {
            Status::invalid_argument(format!(
                "validity_duration {}: negative",
                request.validity_duration
            ))
        })?;
        let signed = self
            .authority
            .sign_workload(request.csr.as_bytes(), &caller, Duration::from_secs(ttl))
            .map_err(|e| {
                tracing::info!(%caller, "refused a CSR: {e}");
                match e {
                    CaError::Csr(_) | CaError::Request(_) => {
                        Status::invalid_argument(e.to_string())
                    }
                    other => Status::internal(other.to_string()),
                }
            })?;
        tracing::debug!(%caller, "signed a workload certificate");
        metrics.cert_issued.inc();
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: signed.cert_chain,
        }))
    }
}
