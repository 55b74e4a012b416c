//! Bodies in both directions, streamed: nothing is buffered on the way through unless a filter
//! asked to read the body, and then only up to its limit. The client's body comes in whatever
//! type its connection delivers it in; the pipeline bounds how long it may pause.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gateway_upstream::UpstreamBody;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use tokio::time::{Instant, Sleep};

/// What the gateway sends a client: an upstream's body as it arrives (after whatever part of it
/// the filters read), or one the gateway made.
pub type ResponseBody = Either<Prefixed<UpstreamBody>, Full<Bytes>>;

pin_project_lite::pin_project! {
    /// A body with some bytes in front of the rest: the part the gateway read for the filters.
    /// Read whole, it is only those bytes; not read at all, only the rest.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> Prefixed<B> {
    /// A body of which nothing has been read.
    pub fn new(body: B) -> Prefixed<B> {
        Prefixed {
            prefix: None,
            rest: Some(body),
        }
    }

    /// The body becomes exactly these bytes, whatever it was.
    pub(crate) fn replace(&mut self, bytes: Bytes) {
        self.prefix = (!bytes.is_empty()).then_some(bytes);
        self.rest = None;
    }
}

impl<B> Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads the body for the filters if it is no longer than `limit`: `Some` with the whole
    /// body, which it then is; `None` if it is announced or found longer, and then what was read
    /// stays in front of the rest, to stream on untouched. Trailers of a body read whole are
    /// dropped: the body is sent on with a length, which cannot carry them.
    pub(crate) async fn read_whole(&mut self, limit: usize) -> Result<Option<Bytes>, B::Error> {
        if self.size_hint().lower() > limit as u64 {
            return Ok(None);
        }
        let Some(rest) = self.rest.as_mut() else {
            return Ok(Some(self.prefix.clone().unwrap_or_default()));
        };
        let mut read = BytesMut::new();
        if let Some(prefix) = self.prefix.take() {
            read.extend_from_slice(&prefix);
        }
        while let Some(frame) = rest.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            read.extend_from_slice(&data);
            if read.len() > limit {
                self.prefix = Some(read.freeze());
                return Ok(None);
            }
        }
        let whole = read.freeze();
        self.replace(whole.clone());
        Ok(Some(whole))
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        let before = self.prefix.as_ref().map_or(0, |prefix| prefix.len() as u64);
        let Some(rest) = &self.rest else {
            return SizeHint::with_exact(before);
        };
        let hint = rest.size_hint();
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower() + before);
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper + before);
        }
        sum
    }
}

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

    /// A body in pieces, of unknown length.
    struct Pieces(std::collections::VecDeque<&'static [u8]>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|piece| Ok(Frame::data(Bytes::from_static(piece)))),
            )
        }
    }

    async fn all_of<B: Body<Data = Bytes> + Unpin>(body: B) -> Vec<u8>
    where
        B::Error: std::fmt::Debug,
    {
        body.collect().await.expect("a body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole_and_sent_with_its_length() {
        let mut body = Prefixed::new(Pieces([&b"abc"[..], b"def"].into()));
        assert_eq!(
            body.read_whole(6).await,
            Ok(Some(Bytes::from_static(b"abcdef")))
        );
        assert_eq!(body.size_hint().exact(), Some(6));
        assert_eq!(all_of(body).await, b"abcdef");

        let mut empty = Prefixed::new(Pieces([].into()));
        assert_eq!(empty.read_whole(6).await, Ok(Some(Bytes::new())));
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_streams_on_whole_with_what_was_read_in_front() {
        let mut body = Prefixed::new(Pieces([&b"abc"[..], b"def", b"ghi"].into()));
        assert_eq!(body.read_whole(4).await, Ok(None));
        assert_eq!(all_of(body).await, b"abcdefghi");

        // Announced too long: not read at all.
        let mut announced = Prefixed::new(Full::new(Bytes::from_static(b"0123456789")));
        assert_eq!(announced.read_whole(4).await, Ok(None));
        assert_eq!(announced.size_hint().exact(), Some(10));
        assert_eq!(all_of(announced).await, b"0123456789");
    }

    #[tokio::test]
    async fn a_replaced_body_is_exactly_the_new_bytes() {
        let mut body = Prefixed::new(Pieces([&b"abc"[..]].into()));
        body.replace(Bytes::from_static(b"xy"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(all_of(body).await, b"xy");
    }
}
