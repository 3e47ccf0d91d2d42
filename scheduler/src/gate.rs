//! Output gates (Durable Objects' semantics): while a gate is active on the current thread,
//! everything a handler sends — messages through an [`ActorRef`](crate::ActorRef), answers
//! through a [`Reply`](crate::Reply) — is held instead of delivered. The caller releases the
//! held output once the handler's writes are durable, or drops it if the commit failed (a
//! dropped `Reply` answers its caller with `NoReply`, never with a claim of a write that did
//! not happen).
//!
//! A gate is active only while [`Gate::poll_within`] polls the gated future, on that thread:
//! the gate's buffer is moved into a thread-local for the poll and back after it, so nested
//! processes and other threads are never affected. Requests made with `call` bypass the gate
//! (the handler waits for their answers; holding them would deadlock).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A held delivery, run when released.
pub(crate) type Held = Box<dyn FnOnce() -> HeldSend + Send>;

/// What a released delivery does: nothing more, or an async send that waits for room.
pub enum HeldSend {
    /// Already delivered (or given up).
    Done,
    /// A message that must wait for room in a full mailbox.
    Wait(HeldFuture),
}

thread_local! {
    static ACTIVE: RefCell<Option<Vec<Held>>> = const { RefCell::new(None) };
    /// Mirrors `ACTIVE.is_some()`. A `Cell<bool>` has no destructor, so reading it is one
    /// load (no lazy destructor registration to check): every `send` asks.
    static GATED: Cell<bool> = const { Cell::new(false) };
}

/// Installs `new` as this thread's gate buffer; returns the one it replaces.
fn replace_active(new: Option<Vec<Held>>) -> Option<Vec<Held>> {
    GATED.with(|gated| gated.set(new.is_some()));
    ACTIVE.with(|active| std::mem::replace(&mut *active.borrow_mut(), new))
}

/// Holds `deliver` if a gate is active on this thread; otherwise gives it back to run now.
pub(crate) fn hold(deliver: Held) -> Result<(), Held> {
    ACTIVE.with(|active| match active.borrow_mut().as_mut() {
        Some(buffer) => {
            buffer.push(deliver);
            Ok(())
        }
        None => Err(deliver),
    })
}

/// Whether a gate is active on this thread (the caller is inside a gated handler).
#[inline]
pub fn is_active() -> bool {
    GATED.with(Cell::get)
}

/// Holds an arbitrary delivery in the active gate: `fut` is awaited, in order with the rest of
/// the held output, when the gate's output is released, and dropped unpolled if it is
/// discarded. Gives `fut` back if no gate is active. Layers above the scheduler use this for
/// sends that must resolve their target at release time (e.g. to an object that may have been
/// evicted meanwhile).
pub fn hold_future(fut: HeldFuture) -> Result<(), HeldFuture> {
    if !is_active() {
        return Err(fut);
    }
    let held: Held = Box::new(move || HeldSend::Wait(fut));
    if hold(held).is_err() {
        unreachable!("a gate is active on this thread");
    }
    Ok(())
}

/// A delivery held by [`hold_future`].
pub type HeldFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `f` with no gate active (for requests that must leave at once).
#[inline]
pub(crate) fn bypass<R>(f: impl FnOnce() -> R) -> R {
    if !is_active() {
        return f();
    }
    let saved = replace_active(None);
    let out = f();
    replace_active(saved);
    out
}

/// A gate owned by one handler runner.
#[derive(Default)]
pub struct Gate {
    held: Vec<Held>,
}

impl Gate {
    /// A gate with nothing held.
    pub fn new() -> Self {
        Gate::default()
    }

    /// Polls `fut` with this gate active: its sends are held here.
    pub fn poll_within<F: Future + ?Sized>(
        &mut self,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        /// Puts the outer gate (if any) back, and the buffer into the gate, even if the poll
        /// panics: a caught panic never leaves this thread's sends captured.
        struct Restore<'g> {
            gate: &'g mut Gate,
            outer: Option<Vec<Held>>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let outer = self.outer.take();
                self.gate.held = replace_active(outer).unwrap_or_default();
            }
        }
        let outer = replace_active(Some(std::mem::take(&mut self.held)));
        let _restore = Restore { gate: self, outer };
        fut.poll(cx)
    }

    /// Takes what is held so far.
    pub fn take(&mut self) -> HeldOutput {
        HeldOutput {
            held: std::mem::take(&mut self.held),
        }
    }

    /// Number of held deliveries.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Output held by a gate. [`HeldOutput::release`] delivers it in order; dropping it discards
/// it (replies then resolve their callers with `NoReply`).
pub struct HeldOutput {
    held: Vec<Held>,
}

impl HeldOutput {
    /// Delivers everything in the order it was sent, waiting for room where a mailbox is
    /// full (backpressure, as the handler's own `send().await` would have).
    pub async fn release(self) {
        for deliver in self.held {
            if let HeldSend::Wait(fut) = deliver() {
                fut.await;
            }
        }
    }

    /// Number of held deliveries.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl std::fmt::Debug for HeldOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldOutput({} held)", self.held.len())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::task::Waker;

    #[test]
    fn a_panicking_gated_poll_leaves_no_gate_active() {
        let mut gate = Gate::new();
        let mut fut = std::pin::pin!(async {
            let held: Held = Box::new(|| HeldSend::Done);
            assert!(hold(held).is_ok(), "held inside the gate");
            panic!("handler panics");
        });
        let mut cx = Context::from_waker(Waker::noop());
        let polled = catch_unwind(AssertUnwindSafe(|| gate.poll_within(fut.as_mut(), &mut cx)));
        assert!(polled.is_err());
        assert!(!is_active(), "the thread's sends are no longer captured");
        assert_eq!(
            gate.len(),
            1,
            "what was held before the panic stays in the gate"
        );
    }

    #[test]
    fn hold_future_without_a_gate_gives_the_future_back() {
        assert!(hold_future(Box::pin(async {})).is_err());
    }
}
