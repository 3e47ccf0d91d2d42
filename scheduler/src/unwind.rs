//! Turning panics into values: the runner catches a panicking process body, and layers
//! above (actors, objects) catch a panicking handler with [`CatchUnwind`] so they can run
//! `terminate` or restart in place.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The message of a panic payload (`&str` or `String`; anything else is named as such).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Polls a future inside `catch_unwind`: a panic during a poll ends it with
/// `Err(panic message)`. Takes an `Unpin` future so that callers can pin on the stack
/// (`catch_unwind_future(pin!(fut))`) and pay no allocation per handler call.
pub struct CatchUnwind<F>(F);

/// Wraps `fut` so that a panic in it becomes `Err(message)`.
pub fn catch_unwind_future<F: Future + Unpin>(fut: F) -> CatchUnwind<F> {
    CatchUnwind(fut)
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}
