//! The response body of an ADS stream: one gRPC frame per response, written straight from it,
//! and the status trailers when the stream ends.
//!
//! tonic's encoder keeps one buffer per stream and reuses it, so every connection would hold a
//! buffer as large as its largest response (a full CDS) for as long as it lives. Here each
//! message gets a buffer of exactly its size, freed once h2 has written it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame};
use tonic::Status;
use tonic::codegen::http::HeaderMap;

use super::codec::WireResponse;

/// gRPC's message prefix: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

pub struct GrpcBody<S> {
    responses: S,
    done: bool,
}

impl<S> GrpcBody<S> {
    pub fn new(responses: S) -> Self {
        GrpcBody {
            responses,
            done: false,
        }
    }
}

impl<S, R> Body for GrpcBody<S>
where
    S: Stream<Item = Result<R, Status>> + Unpin,
    R: WireResponse,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match Pin::new(&mut self.responses).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        let status = match next {
            Some(Ok(response)) => match frame(&response) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// One length-prefixed gRPC message in a buffer of exactly its size.
pub fn frame(response: &impl WireResponse) -> Result<Bytes, Status> {
    let len = response.encoded_len();
    let prefix_len = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("response of {len} bytes")))?;
    let mut buf = Vec::with_capacity(PREFIX + len);
    buf.push(0);
    buf.extend_from_slice(&prefix_len.to_be_bytes());
    response.encode_raw(&mut buf);
    Ok(Bytes::from(buf))
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only a status whose message cannot be a header value lands here: send the code alone.
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::codec::SotwResponse;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use http_body_util::BodyExt;
    use prost::Message;

    #[tokio::test]
    async fn frames_then_ok_trailers() {
        let response = SotwResponse {
            version_info: "v1".into(),
            nonce: "n1".into(),
            type_url: "type.googleapis.com/x".into(),
            ..Default::default()
        };
        let stream = futures_util::stream::iter(vec![Ok::<_, Status>(response)]);
        let mut body = GrpcBody::new(stream);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first[0], 0, "not compressed");
        let len = u32::from_be_bytes([first[1], first[2], first[3], first[4]]) as usize;
        assert_eq!(len, first.len() - PREFIX);
        let decoded = DiscoveryResponse::decode(&first[PREFIX..]).unwrap();
        assert_eq!(
            (decoded.version_info.as_str(), decoded.nonce.as_str()),
            ("v1", "n1")
        );
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_its_status() {
        let stream = futures_util::stream::iter(vec![Err::<SotwResponse, _>(
            Status::invalid_argument("no node"),
        )]);
        let mut body = GrpcBody::new(stream);
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "3");
        assert_eq!(
            trailers.get("grpc-message").unwrap(),
            "no%20node",
            "percent-encoded, as gRPC requires"
        );
    }
}
