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

use std::cell::RefCell;
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
    Wait(Pin<Box<dyn Future<Output = ()> + Send>>),
}

thread_local! {
    static ACTIVE: RefCell<Option<Vec<Held>>> = const { RefCell::new(None) };
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

/// Whether a gate is active on this thread.
pub(crate) fn is_active() -> bool {
    ACTIVE.with(|active| active.borrow().is_some())
}

/// Runs `f` with no gate active (for requests that must leave at once).
pub(crate) fn bypass<R>(f: impl FnOnce() -> R) -> R {
    let saved = ACTIVE.with(|active| active.borrow_mut().take());
    let out = f();
    ACTIVE.with(|active| *active.borrow_mut() = saved);
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
        let outer =
            ACTIVE.with(|active| active.borrow_mut().replace(std::mem::take(&mut self.held)));
        let out = fut.poll(cx);
        self.held = ACTIVE
            .with(|active| std::mem::replace(&mut *active.borrow_mut(), outer))
            .unwrap_or_default();
        out
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
