//! Commit tickets: a one-shot result slot that can be waited on by blocking or polled as a
//! `Future`.
//!
//! Protocol: the writer thread calls [`TicketInner::resolve`] exactly once per ticket (a second
//! call is a bug and panics). Waiters either block on the condvar ([`CommitTicket::wait`]) or
//! register a `Waker` ([`Future::poll`]). The result and the wakers live under one mutex, so a
//! waker registered before `resolve` is always woken and one registered after sees the result
//! (no lost wake-up). No async runtime is involved: any executor may poll the future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StorageError};

#[derive(Default)]
struct Slot {
    result: Option<Result<()>>,
    /// Wakers of pending `poll`s; usually zero or one (a ticket may be shared by clones).
    wakers: Vec<Waker>,
}

/// The writer's side of a ticket.
#[derive(Default)]
pub(crate) struct TicketInner {
    slot: Mutex<Slot>,
    done: Condvar,
}

impl TicketInner {
    pub(crate) fn new() -> Arc<TicketInner> {
        Arc::new(TicketInner::default())
    }

    pub(crate) fn resolved(result: Result<()>) -> Arc<TicketInner> {
        let t = TicketInner::new();
        t.resolve(result);
        t
    }

    /// Stores the outcome and wakes every waiter.
    pub(crate) fn resolve(&self, result: Result<()>) {
        let wakers = {
            let mut slot = self.slot.lock();
            assert!(
                slot.result.is_none(),
                "commit ticket resolved twice; previous = {:?}",
                slot.result
            );
            slot.result = Some(result);
            std::mem::take(&mut slot.wakers)
        };
        // Wakers first: once a blocking waiter returns, every future waiter has been woken.
        for w in wakers {
            w.wake();
        }
        self.done.notify_all();
    }
}

/// A handle on one handed-over write set; resolves to `Ok(())` once that set (and every earlier
/// set of the same keyspace) is durable, or to the error that made its commit fail.
///
/// Obtained from [`Keyspace::commit`](crate::Keyspace::commit). Wait with [`wait`](Self::wait)
/// (blocking) or `.await` it (it implements `Future`, with no runtime of its own). Cloning gives
/// another handle on the same outcome.
#[derive(Clone)]
pub struct CommitTicket {
    pub(crate) inner: Arc<TicketInner>,
}

impl std::fmt::Debug for CommitTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitTicket")
            .field("result", &self.try_result())
            .finish()
    }
}

impl CommitTicket {
    /// Blocks the calling thread until the outcome is known.
    pub fn wait(&self) -> Result<()> {
        let mut slot = self.inner.slot.lock();
        loop {
            if let Some(r) = &slot.result {
                return r.clone();
            }
            self.inner.done.wait(&mut slot);
        }
    }

    /// Like [`wait`](Self::wait) but gives up after `timeout`, returning `None`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<()>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut slot = self.inner.slot.lock();
        loop {
            if let Some(r) = &slot.result {
                return Some(r.clone());
            }
            if self.inner.done.wait_until(&mut slot, deadline).timed_out() {
                return slot.result.clone();
            }
        }
    }

    /// The outcome if already known, without blocking.
    pub fn try_result(&self) -> Option<Result<()>> {
        self.inner.slot.lock().result.clone()
    }

    /// Whether the outcome is known.
    pub fn is_done(&self) -> bool {
        self.inner.slot.lock().result.is_some()
    }
}

impl Future for CommitTicket {
    type Output = Result<(), StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.inner.slot.lock();
        if let Some(r) = &slot.result {
            return Poll::Ready(r.clone());
        }
        if !slot.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            slot.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
