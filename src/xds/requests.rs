//! Requests off the wire: gRPC length-prefixed frames from the HTTP/2 body, decoded with prost.
//!
//! tonic's `Streaming` keeps a buffer as large as the largest request a stream ever sent, for
//! the stream's life. An Envoy's EDS request names every cluster it has (a sidecar that sees a
//! thousand services sends 100 KiB and more), so that buffer would be most of a connection's
//! memory. This decoder drops a buffer that grew past [`KEEP_CAPACITY`] once it holds no
//! unread bytes: the next request allocates what it needs, and an idle proxy holds little.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use futures_util::Stream;
use http_body::Body;
use tonic::Status;
use tonic::codegen::StdError;

/// What a stream keeps between requests.
const KEEP_CAPACITY: usize = 8 * 1024;
/// The largest request accepted (tonic's default).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
const HEADER: usize = 5;

pub struct Requests<B, M> {
    body: B,
    buf: BytesMut,
    done: bool,
    message: PhantomData<fn() -> M>,
}

impl<B, M> Requests<B, M> {
    pub fn new(body: B) -> Self {
        Requests {
            body,
            buf: BytesMut::new(),
            done: false,
            message: PhantomData,
        }
    }

    /// The next whole message in the buffer, if there is one.
    fn next_message(&mut self) -> Result<Option<M>, Status>
    where
        M: prost::Message + Default,
    {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not accepted",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes; the limit is {MAX_MESSAGE}"
            )));
        }
        if self.buf.len() < HEADER + len {
            self.buf.reserve(HEADER + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let message = M::decode(&self.buf[..len])
            .map_err(|e| Status::internal(format!("undecodable request: {e}")))?;
        self.buf.advance(len);
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        Ok(Some(message))
    }
}

impl<B, M> Stream for Requests<B, M>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<StdError>,
    M: prost::Message + Default,
{
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.next_message() {
                Ok(Some(m)) => return Poll::Ready(Some(Ok(m))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                // The client went away (or reset the stream): the stream simply ends.
                Some(Err(_)) | None => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "request stream ended inside a message",
                        ))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use prost::Message;

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A body that delivers `bytes` in chunks of `chunk`.
    fn body(
        bytes: Vec<u8>,
        chunk: usize,
    ) -> impl Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = bytes
            .chunks(chunk)
            .map(|c| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn messages_split_across_frames_decode_and_a_large_buffer_is_let_go() {
        let big = DiscoveryRequest {
            resource_names: (0..2000)
                .map(|i| format!("outbound|9080||svc-{i}.ns.svc.cluster.local"))
                .collect(),
            ..Default::default()
        };
        let small = DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        };
        let mut bytes = framed(&big);
        bytes.extend(framed(&small));
        let mut requests: Requests<_, DiscoveryRequest> = Requests::new(body(bytes, 1000));
        assert_eq!(requests.next().await.unwrap().unwrap(), big);
        assert_eq!(requests.next().await.unwrap().unwrap(), small);
        assert!(
            requests.buf.capacity() <= KEEP_CAPACITY,
            "{}",
            requests.buf.capacity()
        );
        assert!(requests.next().await.is_none());
    }

    #[tokio::test]
    async fn a_truncated_or_compressed_message_is_an_error() {
        let mut truncated = framed(&DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        });
        truncated.pop();
        let mut requests: Requests<_, DiscoveryRequest> = Requests::new(body(truncated, 3));
        assert!(requests.next().await.unwrap().is_err());
        let mut requests: Requests<_, DiscoveryRequest> =
            Requests::new(body(vec![1, 0, 0, 0, 0], 5));
        assert_eq!(
            requests.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }
}
