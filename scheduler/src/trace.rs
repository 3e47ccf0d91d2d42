//! The request a piece of work belongs to: one id, drawn by the gateway for an HTTP request
//! (or by anyone who calls [`in_request`]), followed through the calls that request makes,
//! on this node and across the mesh.
//!
//! Owns the thread's *current request* (`0` is none). It is set only while a future wrapped
//! by [`in_request`] is polled, or inside [`with_request`], and the previous value is always
//! restored, so a worker thread never leaks one request's id into another's work.
//!
//! How the id travels: the mesh reads [`current_request`] when it encodes a message and
//! puts it in the frame, and the receiving node makes it current while it decodes that
//! message, so a `Reply` inside (the callee's end of a remote call) keeps the same id on the
//! other node ([`crate::Reply::request_id`]). A callee that wants its logs and its own calls
//! to carry the id runs its work in `in_request(reply.request_id(), ...)`. On one node the
//! id is not captured by anything implicitly (a plain local call pays nothing for it): a
//! caller whose callee needs it passes it in its message, as the HTTP path does.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// The request the running code works for, if any.
#[inline]
pub fn current_request() -> Option<u64> {
    let id = CURRENT.with(Cell::get);
    (id != 0).then_some(id)
}

/// Runs `f` with `request` current (`None`: with none), restoring the previous one after.
pub fn with_request<R>(request: Option<u64>, f: impl FnOnce() -> R) -> R {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let previous = CURRENT.with(|c| c.replace(request.unwrap_or(0)));
    let _restore = Restore(previous);
    f()
}

/// `future`, with `request` current while it is polled.
pub fn in_request<F: Future>(request: Option<u64>, future: F) -> InRequest<F> {
    InRequest {
        request,
        future: Box::pin(future),
    }
}

/// A future run for one request (see [`in_request`]).
pub struct InRequest<F> {
    request: Option<u64>,
    future: Pin<Box<F>>,
}

impl<F> std::fmt::Debug for InRequest<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InRequest")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let request = self.request;
        with_request(request, || self.future.as_mut().poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_request_is_scoped_and_restored() {
        assert_eq!(current_request(), None);
        with_request(Some(7), || {
            assert_eq!(current_request(), Some(7));
            with_request(None, || assert_eq!(current_request(), None));
            assert_eq!(current_request(), Some(7));
            // A local reply captures nothing (only one decoded from a frame does).
            let (reply, _rx) = crate::Reply::<u32>::pair();
            assert_eq!(reply.request_id(), None);
        });
        assert_eq!(current_request(), None);
    }

    #[test]
    fn a_wrapped_future_sees_its_request_only_while_polled() {
        let mut fut = in_request(Some(9), async { current_request() });
        let waker = std::task::Waker::noop();
        let got = Pin::new(&mut fut).poll(&mut Context::from_waker(waker));
        assert_eq!(got, Poll::Ready(Some(9)));
        assert_eq!(current_request(), None);
    }
}
