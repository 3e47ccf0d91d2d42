//! [`Body`]: the one body type of requests and responses crossing the [`crate::Dispatcher`]
//! seam.
//!
//! A request body streams from the socket as the handler reads it, and counts what it has
//! read against the configured limit: past it, the read fails with
//! [`BodyError::TooLarge`] and the body's [`BodyWatch`] records it, so the gateway answers
//! 413 whatever the handler made of the error; likewise a malformed or cut-off body is
//! answered 400. (A `Content-Length` over the limit is refused before any handler runs.)

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

/// A request or response body: empty, fully in memory, streaming from a client, or any
/// other [`http_body::Body`] boxed.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(Limited),
    Boxed(BoxBody<Bytes, BodyError>),
}

/// A client's body with its size limit.
struct Limited {
    body: hyper::body::Incoming,
    remaining: u64,
    limit: u64,
    watch: BodyWatch,
}

/// How reading a request body went, shared by the body and the gateway, which answers
/// for the client's fault whatever the handler made of the error.
#[derive(Clone, Debug, Default)]
pub(crate) struct BodyWatch(Arc<AtomicU8>);

/// What [`BodyWatch`] saw (its `u8` states).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// Nothing wrong (so far).
    None = 0,
    /// The body went past the limit: 413.
    TooLarge = 1,
    /// The body was malformed or cut off by the client: 400.
    Broken = 2,
}

impl BodyWatch {
    /// The first fault seen.
    pub(crate) fn fault(&self) -> BodyFault {
        match self.0.load(Ordering::Acquire) {
            0 => BodyFault::None,
            1 => BodyFault::TooLarge,
            _ => BodyFault::Broken,
        }
    }

    fn record(&self, fault: BodyFault) {
        let _ = self
            .0
            .compare_exchange(0, fault as u8, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The request body is larger than the gateway's `max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The client's connection failed or sent a malformed body.
    #[error("reading the request body failed: {0}")]
    Transport(#[from] hyper::Error),
    /// A boxed body's own error.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Body {
    /// No bytes.
    pub fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// Any body, boxed (e.g. a stream the handler produces).
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Body {
            kind: Kind::Boxed(body.map_err(|e| BodyError::Other(e.into())).boxed()),
        }
    }

    /// A client's streaming body, limited to `limit` bytes.
    pub(crate) fn incoming(body: hyper::body::Incoming, limit: u64, watch: BodyWatch) -> Self {
        Body {
            kind: Kind::Incoming(Limited {
                body,
                remaining: limit,
                limit,
                watch,
            }),
        }
    }

    /// Reads the whole body into memory (bounded by the request limit for client bodies).
    pub async fn collect(self) -> Result<Bytes, BodyError> {
        Ok(BodyExt::collect(self).await?.to_bytes())
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Incoming(_) => "incoming",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body {
            kind: Kind::Full(Some(bytes)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::from(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
            Kind::Incoming(limited) => {
                let frame = match ready!(Pin::new(&mut limited.body).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => {
                        limited.watch.record(BodyFault::Broken);
                        return Poll::Ready(Some(Err(error.into())));
                    }
                };
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > limited.remaining {
                        limited.remaining = 0;
                        limited.watch.record(BodyFault::TooLarge);
                        return Poll::Ready(Some(Err(BodyError::TooLarge {
                            limit: limited.limit,
                        })));
                    }
                    limited.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(limited) => limited.body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(limited) => limited.body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_empty_bodies_collect_to_their_bytes() {
        let got = cairn_scheduler::block_on(Body::from("hello").collect()).unwrap();
        assert_eq!(got, Bytes::from_static(b"hello"));
        let got = cairn_scheduler::block_on(Body::empty().collect()).unwrap();
        assert!(got.is_empty());
        let wrapped = Body::wrap(http_body_util::Full::new(Bytes::from_static(b"w")));
        assert_eq!(cairn_scheduler::block_on(wrapped.collect()).unwrap(), "w");
    }

    #[test]
    fn size_hints_are_exact_for_in_memory_bodies() {
        use http_body::Body as _;
        assert_eq!(Body::from("abc").size_hint().exact(), Some(3));
        assert_eq!(Body::empty().size_hint().exact(), Some(0));
        assert!(Body::empty().is_end_stream());
    }
}
