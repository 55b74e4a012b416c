//! Bodies in both directions, streamed: nothing is buffered on the way through.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::server::http1::StreamingBody;
use crate::upstream::UpstreamBody;

/// What the gateway sends a client: an upstream's body as it arrives, or one the gateway made.
pub type ResponseBody = Either<UpstreamBody, Full<Bytes>>;

/// A response body the gateway made itself.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Right(Full::new(bytes.into()))
}

/// The client paused longer than `body_read_timeout` between two pieces of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client paused too long while sending the request body")]
pub struct BodyReadTimeout;

/// A client's request body as its connection delivers it.
pub enum ClientBody {
    /// Read whole with the head, or none at all; `None` once taken.
    Whole(Option<Bytes>),
    /// An HTTP/1 body still arriving, read off the connection by the connection's task.
    Http1(StreamingBody),
    Http2(Incoming),
}

impl ClientBody {
    pub fn whole(bytes: Bytes) -> ClientBody {
        ClientBody::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Whole(bytes) => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Whole(bytes) => bytes.is_none(),
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, with a deadline between pieces so a slow
    /// client cannot hold an upstream connection open forever.
    pub struct RequestBody {
        #[pin]
        inner: ClientBody,
        timeout: Duration,
        // Made on the first wait only: most requests have no body or arrive whole.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl RequestBody {
    pub fn new(inner: ClientBody, timeout: Duration) -> RequestBody {
        RequestBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.deadline = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let deadline = this.deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
