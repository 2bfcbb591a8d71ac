//! One HTTP(S) GET of a JWKS or an OpenID discovery document: a fresh connection per fetch (as
//! istiod, which disables keep-alive), a few redirects followed, the body capped.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body::Body as _;
use hyper::Uri;
use hyper::header::{ACCEPT, HOST, LOCATION, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::JwksError;

/// Redirects followed before giving up (Go's client, istiod's, follows 10).
const MAX_REDIRECTS: usize = 5;
/// How much of an error response's body goes into the error.
const ERROR_BODY_CHARS: usize = 100;

/// What a GET needs besides the URI.
pub(super) struct Client<'a> {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Built at the first HTTPS fetch (reading the platform's roots is slow); `Err` when no
    /// roots could be loaded, which fails HTTPS fetches only.
    pub tls: &'a OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    pub extra_roots: &'a [CertificateDer<'static>],
}

impl Client<'_> {
    /// The body of `uri`, within the timeout (which covers redirects too).
    pub async fn get(&self, uri: &str) -> Result<String, JwksError> {
        match tokio::time::timeout(self.timeout, self.get_following(uri)).await {
            Ok(result) => result,
            Err(_) => Err(JwksError::Timeout {
                uri: uri.into(),
                after: self.timeout,
            }),
        }
    }

    async fn get_following(&self, first: &str) -> Result<String, JwksError> {
        let mut uri = parse(first)?;
        for _ in 0..=MAX_REDIRECTS {
            match self.get_once(&uri).await? {
                Fetched::Body(body) => return Ok(body),
                Fetched::Redirect(location) => uri = resolve(&uri, &location)?,
            }
        }
        Err(JwksError::TooManyRedirects { uri: first.into() })
    }

    async fn get_once(&self, uri: &Uri) -> Result<Fetched, JwksError> {
        let io_error = |reason: String| JwksError::Io {
            uri: uri.to_string(),
            reason,
        };
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| io_error(format!("connect: {e}")))?;
        let stream: Box<dyn Stream> = if https {
            let config = self
                .tls
                .get_or_init(|| super::tls_config(self.extra_roots))
                .clone()
                .map_err(io_error)?;
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| io_error(format!("server name {host:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await;
            Box::new(tls.map_err(|e| io_error(format!("TLS: {e}")))?)
        } else {
            Box::new(tcp)
        };

        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, axum::body::Body>(TokioIo::new(stream))
                .await
                .map_err(|e| io_error(format!("HTTP: {e}")))?;
        let connection = AbortOnDrop(tokio::spawn(connection));
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(HOST, uri.authority().map_or("", |a| a.as_str()))
            .header(USER_AGENT, "pilotfish")
            .header(ACCEPT, "application/json")
            .body(axum::body::Body::empty())
            .map_err(|e| io_error(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| io_error(format!("HTTP: {e}")))?;

        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok());
            if let Some(location) = location {
                return Ok(Fetched::Redirect(location.to_string()));
            }
        }
        if let Some(len) = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<u64>().ok())
            && len > self.max_body_bytes as u64
        {
            return Err(JwksError::TooLarge {
                uri: uri.to_string(),
                limit: self.max_body_bytes,
            });
        }
        let body = read_capped(response.into_body(), self.max_body_bytes, uri).await?;
        drop(connection);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let mut body: String = text.chars().take(ERROR_BODY_CHARS).collect();
            if text.chars().count() > ERROR_BODY_CHARS {
                body.push('…');
            }
            return Err(JwksError::Status {
                uri: uri.to_string(),
                status: status.as_u16(),
                body,
            });
        }
        String::from_utf8(body)
            .map(Fetched::Body)
            .map_err(|_| JwksError::Invalid {
                uri: uri.to_string(),
                reason: "not UTF-8".into(),
            })
    }
}

enum Fetched {
    Body(String),
    Redirect(String),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Stops driving the connection when the fetch ends or times out, instead of leaving a task
/// behind on a server that stalls.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_capped(
    mut body: hyper::body::Incoming,
    limit: usize,
    uri: &Uri,
) -> Result<Vec<u8>, JwksError> {
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| JwksError::Io {
            uri: uri.to_string(),
            reason: format!("body: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(JwksError::TooLarge {
                    uri: uri.to_string(),
                    limit,
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// An absolute `http://` or `https://` URI with a host.
pub(super) fn parse(uri: &str) -> Result<Uri, JwksError> {
    let invalid = |reason: String| JwksError::InvalidUri {
        uri: uri.into(),
        reason,
    };
    let parsed: Uri = uri.parse().map_err(|e| invalid(format!("{e}")))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("scheme must be http or https".into())),
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok(parsed)
}

/// A `Location`: absolute, or a path on the same server.
fn resolve(base: &Uri, location: &str) -> Result<Uri, JwksError> {
    if location.starts_with('/') && !location.starts_with("//") {
        let (scheme, authority) = (
            base.scheme_str().unwrap_or("http"),
            base.authority().map_or("", |a| a.as_str()),
        );
        return parse(&format!("{scheme}://{authority}{location}"));
    }
    parse(location)
}
