//! Bodies in both directions, streamed: nothing is buffered on the way through. The client's
//! body comes in whatever type its connection delivers it in; the pipeline only bounds how long
//! it may pause.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway_upstream::UpstreamBody;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use tokio::time::{Instant, Sleep};

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

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, with a deadline between pieces so a slow
    /// client cannot hold an upstream connection open forever.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        // Made on the first wait only: most requests have no body or arrive whole.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> RequestBody<B> {
        RequestBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
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
