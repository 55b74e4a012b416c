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

/// The client sent its body too slowly: it paused longer than `body_read_timeout` between two
/// pieces, or fell below `body_min_rate` on average once that much time had passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadTimeout {
    #[error("the client paused too long while sending the request body")]
    Pause,
    #[error("the client sent the request body more slowly than body_min_rate")]
    TooSlow,
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, with a deadline between pieces and a
    /// minimum average rate, so a slow client cannot hold an upstream connection open forever
    /// (a pause bound alone lets a client trickle one byte at a time without end).
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        limits: BodyLimits,
        // How much of the body has come, and how long it has been waited for: only time spent
        // waiting on the client counts, not time the upstream took to read what came.
        received: u64,
        waited: Duration,
        waiting_since: Option<Instant>,
        // Made on the first wait only: most requests have no body or arrive whole.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

/// How slowly a client may send its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    /// The longest pause between two pieces.
    pub(crate) pause: Duration,
    /// Bytes per second the body must average, over the time spent waiting for it, once that
    /// time is past `pause`; 0 for no minimum.
    pub(crate) min_rate: u64,
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, limits: BodyLimits) -> RequestBody<B> {
        RequestBody {
            inner,
            limits,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            deadline: None,
        }
    }
}

impl BodyLimits {
    /// When a body must have sent more, waiting since `since` after `waited` spent waiting for
    /// its first `received` bytes; and which limit that is.
    fn due(self, received: u64, waited: Duration, since: Instant) -> (Instant, BodyReadTimeout) {
        let pause = (since + self.pause, BodyReadTimeout::Pause);
        if self.min_rate == 0 {
            return pause;
        }
        // At `min_rate`, `received` bytes may take this long, after the grace of one pause.
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        let allowed = (self.pause + earned).saturating_sub(waited);
        let rate = (since + allowed, BodyReadTimeout::TooSlow);
        if rate.0 < pause.0 { rate } else { pause }
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
                if let Some(since) = this.waiting_since.take() {
                    *this.waited += since.elapsed();
                }
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    *this.received += data.len() as u64;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                let (due, limit) = this.limits.due(*this.received, *this.waited, since);
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(limit)))),
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body that sends one byte every `every`, `total` bytes in all.
    struct Trickle {
        ticks: tokio::time::Interval,
        left: usize,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            std::task::ready!(self.ticks.poll_tick(cx));
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    fn trickle(every: Duration, total: usize) -> Trickle {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Trickle { ticks, left: total }
    }

    async fn read(body: &mut RequestBody<Trickle>) -> Result<u64, BodyReadTimeout> {
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => read += frame.into_data().map_or(0, |data| data.len() as u64),
                Err(error) => return Err(*error.downcast::<BodyReadTimeout>().expect("a timeout")),
            }
        }
        Ok(read)
    }

    const LIMITS: BodyLimits = BodyLimits {
        pause: Duration::from_secs(1),
        min_rate: 100,
    };

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_below_the_minimum_rate_is_cut_off_after_the_grace() {
        let started = Instant::now();
        // 4 bytes a second, each pause well within the second allowed.
        let mut body = RequestBody::new(trickle(Duration::from_millis(250), 1_000), LIMITS);
        assert_eq!(read(&mut body).await, Err(BodyReadTimeout::TooSlow));
        let took = started.elapsed();
        assert!(
            took > Duration::from_secs(1) && took < Duration::from_millis(1_500),
            "cut off after {took:?}, not just after the one-second grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_rate_passes_and_a_pause_is_bounded_on_its_own() {
        // 200 bytes a second for 3 seconds.
        let mut fast = RequestBody::new(trickle(Duration::from_millis(5), 600), LIMITS);
        assert_eq!(read(&mut fast).await, Ok(600));

        let no_minimum = BodyLimits {
            min_rate: 0,
            ..LIMITS
        };
        let mut slow = RequestBody::new(trickle(Duration::from_millis(250), 20), no_minimum);
        assert_eq!(
            read(&mut slow).await,
            Ok(20),
            "without a minimum, only pauses count"
        );
        let mut stalled = RequestBody::new(trickle(Duration::from_secs(2), 1), no_minimum);
        assert_eq!(read(&mut stalled).await, Err(BodyReadTimeout::Pause));
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_upstream_takes_to_read_does_not_count_against_the_client() {
        let mut body = RequestBody::new(trickle(Duration::from_millis(10), 10), LIMITS);
        for _ in 0..10 {
            // Ten bytes over fifty seconds, but each was there whenever it was asked for.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let frame = body.frame().await.expect("a frame").expect("data");
            assert_eq!(frame.into_data().map_or(0, |data| data.len()), 1);
        }
        assert!(body.frame().await.is_none());
    }
}
