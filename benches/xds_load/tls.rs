//! `--tls`: the proxies connect to the TLS xDS port (15012) with a client certificate from the
//! server's CA, as stock Envoys do in a secure mesh, so the run includes each connection's
//! handshake and the key and certificate pilotfish issues it over SDS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};

/// One TLS client configuration per namespace: the certificate says
/// `spiffe://cluster.local/ns/<ns>/sa/default`, which the node metadata claims.
pub struct ClientTls {
    by_namespace: HashMap<String, Arc<rustls::ClientConfig>>,
}

impl ClientTls {
    /// Reads the CA the server created in `ca_dir` and issues a certificate per namespace.
    pub fn new(ca_dir: &Path, namespaces: impl IntoIterator<Item = String>) -> Result<ClientTls> {
        let authority = pilotfish::ca::file::load_or_create(ca_dir, "cluster.local")?;
        let roots = Arc::new(authority.root_store()?);
        let mut by_namespace = HashMap::new();
        for ns in namespaces {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let id = pilotfish::ca::SpiffeId::new("cluster.local", ns.clone(), "default")?;
            let cert = authority.sign_workload_key(&key, &id, Duration::from_secs(3600))?;
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.cert_chain.concat().as_bytes())
                    .collect::<Result<_, _>>()?;
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(
                chain,
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
            )?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            by_namespace.insert(ns, Arc::new(config));
        }
        Ok(ClientTls { by_namespace })
    }

    /// The configuration for the namespace `node` claims.
    pub fn for_node(&self, node: &Node) -> Option<Arc<rustls::ClientConfig>> {
        let md = node.metadata.as_ref()?;
        let Some(Kind::StringValue(ns)) = md.fields.get("NAMESPACE").and_then(|v| v.kind.as_ref())
        else {
            return None;
        };
        self.by_namespace.get(ns).cloned()
    }
}

/// A channel over TLS to `addr`, checking the server's name `localhost`.
pub async fn connect(
    endpoint: Endpoint,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel> {
    let connector = tokio_rustls::TlsConnector::from(config);
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .context("connecting over TLS")
}
