//! One-shot reply ports: [`Reply<T>`] travels inside a request message, the caller awaits
//! the other end (Erlang's `{From, Ref}` pair).
//!
//! A `Reply` dropped without an answer (its message was dropped, its handler forgot it, its
//! process died) resolves the caller at once with [`CallError::NoReply`] instead of leaving
//! it to time out.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Why a call returned no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer within the timeout.
    #[error("call timed out")]
    Timeout,
    /// The target process does not exist (or exited before taking the request).
    #[error("no such process")]
    NoProc,
    /// The request was taken but dropped without an answer (the handler ignored it or the
    /// process exited while handling it).
    #[error("the callee dropped the request without replying")]
    NoReply,
    /// The process at that pid takes another message type.
    #[error("the process takes another message type")]
    WrongType,
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sending side is gone (answered or dropped).
    sender_done: bool,
    /// The receiving side is gone: answers are discarded.
    receiver_gone: bool,
}

/// The shared cell behind a reply port (also used for exit watchers).
pub(crate) struct OneShot<T> {
    state: Mutex<State<T>>,
}

impl<T> OneShot<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(OneShot {
            state: Mutex::new(State {
                value: None,
                waker: None,
                sender_done: false,
                receiver_gone: false,
            }),
        })
    }

    /// Stores the value and wakes the receiver. Gives the value back if nobody waits.
    pub(crate) fn complete(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut st = self.state.lock();
            if st.receiver_gone || st.sender_done {
                return Err(value);
            }
            st.value = Some(value);
            st.sender_done = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn sender_dropped(&self) {
        let waker = {
            let mut st = self.state.lock();
            if st.sender_done {
                return;
            }
            st.sender_done = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Polls for the value: `Ready(None)` when the sender went away without one.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.state.lock();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.sender_done {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn try_take(&self) -> Option<T> {
        self.state.lock().value.take()
    }

    fn receiver_dropped(&self) {
        let mut st = self.state.lock();
        st.receiver_gone = true;
        st.value = None;
        st.waker = None;
    }
}

/// The answering end of a request: send exactly one value with [`Reply::send`].
pub struct Reply<T> {
    slot: Option<Arc<OneShot<T>>>,
}

impl<T> Reply<T> {
    /// A reply port and the future that receives its answer.
    pub fn pair() -> (Reply<T>, ReplyReceiver<T>) {
        let slot = OneShot::new();
        (
            Reply {
                slot: Some(slot.clone()),
            },
            ReplyReceiver { slot },
        )
    }

    /// Answers the request. Gives the value back if the caller stopped waiting.
    ///
    /// Inside a gated handler (durable objects) the answer is held until the handler's
    /// writes are durable, and this returns `Ok` at once.
    pub fn send(mut self, value: T) -> Result<(), T>
    where
        T: Send + 'static,
    {
        let Some(slot) = self.slot.take() else {
            return Err(value);
        };
        if crate::gate::is_active() {
            // Re-wrap so that discarding the held output drops a `Reply` (caller: NoReply).
            let reply = Reply { slot: Some(slot) };
            let deliver: crate::gate::Held = Box::new(move || {
                let _ = reply.send_now(value);
                crate::gate::HeldSend::Done
            });
            if let Err(deliver) = crate::gate::hold(deliver) {
                deliver();
            }
            return Ok(());
        }
        slot.complete(value)
    }

    fn send_now(mut self, value: T) -> Result<(), T> {
        match self.slot.take() {
            Some(slot) => slot.complete(value),
            None => Err(value),
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.sender_dropped();
        }
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

/// The caller's end: resolves to the answer, or `NoReply` if the `Reply` was dropped.
pub struct ReplyReceiver<T> {
    slot: Arc<OneShot<T>>,
}

impl<T> ReplyReceiver<T> {
    /// The answer if it has arrived.
    pub fn try_recv(&self) -> Option<T> {
        self.slot.try_take()
    }
}

impl<T> Future for ReplyReceiver<T> {
    type Output = Result<T, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll_take(cx).map(|v| v.ok_or(CallError::NoReply))
    }
}

impl<T> Drop for ReplyReceiver<T> {
    fn drop(&mut self) {
        self.slot.receiver_dropped();
    }
}

impl<T> fmt::Debug for ReplyReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyReceiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn dropped_reply_resolves_the_caller_with_no_reply() {
        let (reply, mut rx) = Reply::<u32>::pair();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        drop(reply);
        assert_eq!(
            Pin::new(&mut rx).poll(&mut cx),
            Poll::Ready(Err(CallError::NoReply))
        );
    }

    #[test]
    fn reply_to_a_gone_caller_gives_the_value_back() {
        let (reply, rx) = Reply::<u32>::pair();
        drop(rx);
        assert_eq!(reply.send(7), Err(7));
    }
}
