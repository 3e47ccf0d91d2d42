//! The mailbox of one process: a bounded user lane, an unbounded system lane, and a FIFO
//! queue of senders waiting for room.
//!
//! # Roles
//!
//! * **Senders** (any number of threads/tasks, through an `Arc<Mailbox>`): `try_send`,
//!   `send`, `send_signal`.
//! * **The receiver** (exactly one: the process that owns the mailbox): `try_recv`,
//!   `poll_recv`, `recv`. Only one receiver waker is stored; a second concurrent receiver
//!   would overwrite it and could miss wake-ups. That is a liveness bug in the caller,
//!   never a memory-safety one: all state sits behind one lock (the crate's only `unsafe`
//!   is that lock's `RawMutex` implementation, in `spin`).
//! * **The closer** (normally the scheduler, when the process ends): `close`.
//!
//! # State
//!
//! Everything lives in `Inner` behind one mutex (`crate::sync::Mutex`: a spin-then-yield
//! lock, or loom's under `--cfg loom`). No user code (message drops, wakers' `wake`) runs while the
//! lock is held: wakers are taken out under the lock and woken after it is released, and
//! `close` moves the queues out before dropping them, so a `Drop` impl of a message may
//! itself use the mailbox without deadlocking.
//!
//! Senders waiting in [`Mailbox::send`] are entries of `Inner::waiters`, keyed by a
//! per-mailbox id; the message stays inside the [`SendFut`] until room is *granted*.
//! A grant is a reserved slot of the user lane. Grants are handed out from the front of
//! the queue, so the granted waiters are always a prefix of it, of length
//! `Inner::granted`.
//!
//! # Invariants (asserted after every operation in debug builds and loom models)
//!
//! 1. **Capacity is never exceeded:** `user.len() + granted <= capacity`. Reserved slots
//!    count as used.
//! 2. **FIFO grant:** `waiters[..granted]` hold grants, `waiters[granted..]` do not, and
//!    room is granted only to `waiters[granted]`, the oldest sender not yet served.
//! 3. **No idle room while someone waits:** if an ungranted waiter exists then
//!    `user.len() + granted == capacity`. Every event that frees a slot (the receiver
//!    popping a user message, a granted waiter being dropped) immediately grants it to the
//!    next waiter. Hence "there is unreserved room" implies "nobody is waiting", and
//!    `try_send` (or a fresh `send`) that finds unreserved room takes it without
//!    overtaking anyone; when a sender is waiting, `try_send` returns `Full`.
//! 4. **Closed is terminal:** after `close`, every queue is empty, `granted == 0`, no
//!    waker is stored, and every push fails with the value given back.
//! 5. **No forgotten grant:** a granted waiter that still holds its waker (a deferred
//!    wake-up) exists only while `Mailbox::deferred` is set, so the next `wake_deferred`
//!    or parking `poll_recv_deferring` wakes it.
//!
//! # Protocol of a waiting sender ([`SendFut`])
//!
//! * First poll: closed → `Err(Closed(msg))`; unreserved room → push, done. Otherwise
//!   append a waiter `{id, waker}` and return `Pending`.
//! * Grant (by the receiver or by a cancelled granted waiter): `granted += 1`, the
//!   waiter's waker is taken and woken outside the lock.
//! * Later polls: closed → `Err(Closed(msg))` (close already emptied the queue); granted →
//!   remove the entry, `granted -= 1`, push the message into the slot it reserved; not
//!   granted → refresh the waker, `Pending`.
//! * Drop while queued (**cancel safety**): the entry is removed. If it held a grant, the
//!   grant is released and passed at once to the next ungranted waiter, whose waker is
//!   woken, so no capacity and no wake-up is lost. The message is dropped with the future,
//!   never delivered.
//! * Close: the queue is emptied and every still-stored waker is woken; each future then
//!   resolves to `Err(Closed(msg))` with its own message.
//!
//! # Receiver
//!
//! `poll_recv` pops the system lane first, then the user lane (control before data:
//! signals are never stuck behind user messages). Popping a user message frees a slot, granted as above.
//!
//! **Deferred grant wake-ups** ([`Mailbox::poll_recv_deferring`]): a receiver that works
//! in turns (a scheduler's process) may grant freed slots without waking the grantees at
//! once, and wake them all at the end of its turn ([`Mailbox::wake_deferred`]) or before
//! it parks (its own `Pending` path does it). The grant itself is immediate, so capacity and
//! FIFO order are exactly as above; only the wake-up is batched. A full mailbox with
//! waiting senders then costs one wake-up per sender per turn instead of one per message,
//! and a woken sender finds the room of a whole turn. Invariant 5 below keeps such a grant
//! from being forgotten. If both lanes are empty
//! the receiver's waker is stored; every push to either lane takes it and wakes it
//! outside the lock. After close, `poll_recv` returns `Received::Closed`.
//!
//! Cost: `try_send` on a non-full mailbox and `try_recv` take the lock once and allocate
//! only when a `VecDeque` grows. Finding a waiter by id is a linear scan of the waiter
//! queue, whose length is the number of blocked senders (small in practice).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
// The dead-letter counter is a process-wide statistic read with `Relaxed` ordering; it
// does not synchronise anything, so it stays a std atomic even under loom (loom atomics
// cannot live in a `static`).
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use crate::error::{SendError, TrySendError};
use crate::sync::{AtomicBool, Mutex, MutexGuard};

/// User messages dropped by [`Mailbox::close`] (or by dropping an unclosed mailbox),
/// over the whole OS process.
static DEAD_LETTERS: AtomicU64 = AtomicU64::new(0);

/// How many user messages have been dropped undelivered because their mailbox was closed
/// (or dropped) while they were queued, process-wide, since start-up.
pub fn dead_letters() -> u64 {
    DEAD_LETTERS.load(Ordering::Relaxed)
}

/// What the receiver got from [`Mailbox::try_recv`] / [`Mailbox::poll_recv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<M, S> {
    /// A system signal; always delivered before any queued user message.
    Signal(S),
    /// A user message.
    Message(M),
    /// The mailbox is closed: nothing more will ever arrive.
    Closed,
}

/// Whether to check the module invariants after each operation: in debug builds and in
/// loom models (which run in release mode for speed).
const CHECK_INVARIANTS: bool = cfg!(any(debug_assertions, loom));

/// Identifies one waiting [`SendFut`] within its mailbox. Never reused by a mailbox.
type WaiterId = u64;

/// A sender queued for room in the user lane.
struct Waiter {
    id: WaiterId,
    /// The waker to call when this waiter is granted room or the mailbox closes; taken
    /// (`None`) once the grant has been signalled.
    waker: Option<Waker>,
}

/// Everything behind the mailbox lock. See the module docs for the invariants.
struct Inner<M, S> {
    /// The bounded user lane. Pushed by senders, popped by the receiver.
    user: VecDeque<M>,
    /// The unbounded system lane. Pushed by senders of signals, popped by the receiver.
    system: VecDeque<S>,
    /// Senders waiting for room, oldest first. `waiters[..granted]` hold a reserved slot.
    waiters: VecDeque<Waiter>,
    /// Number of granted waiters (a prefix of `waiters`) = reserved user-lane slots.
    granted: usize,
    /// Next id handed to a waiter.
    next_waiter_id: WaiterId,
    /// Waker of the receiver, stored by `poll_recv` when both lanes are empty.
    rx_waker: Option<Waker>,
    /// Set once by `close`; never cleared.
    closed: bool,
}

impl<M, S> Inner<M, S> {
    /// Whether a slot is free that nobody has reserved.
    fn has_room(&self, capacity: usize) -> bool {
        self.user.len() + self.granted < capacity
    }

    /// Grants a free slot to the oldest ungranted waiter, if there is both. Returns the
    /// waker to wake once the lock is released.
    fn grant_next(&mut self, capacity: usize) -> Option<Waker> {
        if self.has_room(capacity) && self.granted < self.waiters.len() {
            let waiter = &mut self.waiters[self.granted];
            self.granted += 1;
            waiter.waker.take()
        } else {
            None
        }
    }

    /// Grants a free slot to the oldest ungranted waiter, if there is both, leaving its
    /// waker in place for a later `take_deferred`. Returns whether it granted.
    fn grant_next_deferred(&mut self, capacity: usize) -> bool {
        if self.has_room(capacity) && self.granted < self.waiters.len() {
            self.granted += 1;
            true
        } else {
            false
        }
    }

    /// Takes the wakers of granted waiters that have not been woken yet.
    fn take_deferred(&mut self) -> Wakers {
        let granted = self.granted;
        let mut wakers = Wakers::default();
        for waker in self
            .waiters
            .iter_mut()
            .take(granted)
            .filter_map(|w| w.waker.take())
        {
            wakers.push(waker);
        }
        wakers
    }

    /// Appends a user message; returns the receiver's waker to wake after unlocking.
    #[inline]
    fn push_user(&mut self, msg: M) -> Option<Waker> {
        self.user.push_back(msg);
        self.rx_waker.take()
    }

    /// Position of a waiter in the queue.
    fn position(&self, id: WaiterId) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }

    /// `pop` for a receiver that defers grant wake-ups: a freed slot is granted at once, its
    /// grantee is woken later (see the module docs). Sets `deferred` (under the lock).
    #[inline]
    fn pop_deferring(&mut self, capacity: usize, deferred: &AtomicBool) -> Option<Received<M, S>> {
        if let Some(sig) = self.system.pop_front() {
            return Some(Received::Signal(sig));
        }
        if let Some(msg) = self.user.pop_front() {
            if self.granted < self.waiters.len() && self.grant_next_deferred(capacity) {
                deferred.store(true, Ordering::Relaxed);
            }
            return Some(Received::Message(msg));
        }
        if self.closed {
            return Some(Received::Closed);
        }
        None
    }

    /// Pops the next item for the receiver: signals first, then user messages. A popped
    /// user message frees a slot, which goes to the next waiter (its waker is returned).
    fn pop(&mut self, capacity: usize) -> (Option<Received<M, S>>, Option<Waker>) {
        if let Some(sig) = self.system.pop_front() {
            return (Some(Received::Signal(sig)), None);
        }
        if let Some(msg) = self.user.pop_front() {
            let grantee = self.grant_next(capacity);
            return (Some(Received::Message(msg)), grantee);
        }
        if self.closed {
            return (Some(Received::Closed), None);
        }
        (None, None)
    }

    /// Checks the invariants listed in the module docs (debug builds and loom models).
    /// `deferred`: the mailbox's deferred wake-up flag.
    fn debug_check(&self, capacity: usize, deferred: bool) {
        if !CHECK_INVARIANTS {
            return;
        }
        assert!(
            self.user.len() + self.granted <= capacity,
            "mailbox over capacity: {} queued + {} reserved > {capacity}",
            self.user.len(),
            self.granted
        );
        assert!(
            self.granted <= self.waiters.len(),
            "more grants ({}) than waiters ({})",
            self.granted,
            self.waiters.len()
        );
        assert!(
            self.granted == self.waiters.len() || !self.has_room(capacity),
            "room left idle while a sender waits"
        );
        assert!(
            deferred
                || self
                    .waiters
                    .iter()
                    .take(self.granted)
                    .all(|w| w.waker.is_none()),
            "a granted waiter was not woken and no deferred wake-up is pending"
        );
        assert!(
            !self.closed
                || (self.user.is_empty()
                    && self.system.is_empty()
                    && self.waiters.is_empty()
                    && self.granted == 0
                    && self.rx_waker.is_none()),
            "closed mailbox still holds state"
        );
    }
}

/// Wakers collected under the lock and woken after it: a few inline (a full mailbox has few
/// waiting senders, and this runs once per receiver turn), the rest in a `Vec`.
#[derive(Default)]
struct Wakers {
    inline: [Option<Waker>; 4],
    more: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, waker: Waker) {
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(waker),
            None => self.more.push(waker),
        }
    }

    /// Wakes them all. Called only after the mailbox lock is released.
    fn wake_all(self) {
        self.inline.into_iter().flatten().for_each(Waker::wake);
        self.more.into_iter().for_each(Waker::wake);
    }
}

/// Wakes `waker` if there is one. Called only after the mailbox lock is released.
#[inline]
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The bounded mailbox of one process, plus its unbounded system lane.
///
/// Shared as `Arc<Mailbox<M, S>>` by every sender and the one receiver. `M` is the user
/// message type, `S` the signal type (defined by the scheduler). See the
/// [module docs](self) for the protocol and its invariants.
pub struct Mailbox<M, S> {
    /// Maximum number of user messages queued plus slots reserved by waiting senders.
    /// Immutable.
    capacity: usize,
    /// Set when a grant's wake-up was deferred (`poll_recv_deferring`); cleared by the
    /// receiver when it wakes them. Written and read by the receiver only (senders never
    /// clear a deferred grant's waker), so `Relaxed` suffices.
    deferred: AtomicBool,
    inner: Mutex<Inner<M, S>>,
}

impl<M, S> Mailbox<M, S> {
    /// Default capacity of a process mailbox.
    ///
    /// A guess to be tuned by benchmarks: large enough to absorb a burst from many
    /// senders without making them wait (backpressure should be the exception, not the
    /// norm), small enough that a stuck process holds at most 1024 messages before its
    /// senders slow down. An idle mailbox allocates nothing, so the figure costs memory
    /// only when a backlog actually forms.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// Creates an empty, open mailbox holding at most `capacity` user messages.
    ///
    /// Allocates nothing until the first message arrives.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0: such a mailbox could never accept a user message.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity >= 1,
            "Mailbox::new: capacity must be at least 1 (got 0); a zero-capacity mailbox \
             could never accept a user message"
        );
        Mailbox {
            capacity,
            deferred: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                user: VecDeque::new(),
                system: VecDeque::new(),
                waiters: VecDeque::new(),
                granted: 0,
                next_waiter_id: 0,
                rx_waker: None,
                closed: false,
            }),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, Inner<M, S>> {
        self.inner.lock()
    }

    /// Maximum number of queued user messages.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of user messages queued now (signals are not counted).
    pub fn len(&self) -> usize {
        self.lock().user.len()
    }

    /// Whether no user message is queued (signals are not counted).
    pub fn is_empty(&self) -> bool {
        self.lock().user.is_empty()
    }

    /// Number of signals queued in the system lane now.
    pub fn signal_len(&self) -> usize {
        self.lock().system.len()
    }

    /// Number of [`send`](Self::send) futures queued for room, including those already
    /// granted a slot that have not been polled since.
    pub fn waiting_senders(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Enqueues a user message if there is room nobody else is waiting for.
    ///
    /// Returns `Full(msg)` if the lane is at capacity or a sender is already waiting in
    /// [`send`](Self::send) (a `try_send` never overtakes a waiting sender), and
    /// `Closed(msg)` after [`close`](Self::close).
    #[inline]
    pub fn try_send(&self, msg: M) -> Result<(), TrySendError<M>> {
        let mut inner = self.lock();
        if inner.closed || !inner.has_room(self.capacity) {
            let closed = inner.closed;
            drop(inner);
            return Err(if closed {
                TrySendError::Closed(msg)
            } else {
                TrySendError::Full(msg)
            });
        }
        let rx = inner.push_user(msg);
        inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
        drop(inner);
        wake(rx);
        Ok(())
    }

    /// Enqueues a user message, waiting for room if the lane is full.
    ///
    /// Waiting senders are granted room in the order they started waiting. The future is
    /// cancel-safe: dropping it before it completes never delivers the message, and a
    /// slot it had been granted passes to the next waiting sender. If the mailbox closes,
    /// it resolves to `Err(SendError::Closed(msg))` with the message.
    pub fn send(&self, msg: M) -> SendFut<'_, M, S> {
        SendFut {
            mailbox: self,
            msg: Some(msg),
            waiter: None,
        }
    }

    /// Enqueues a signal on the system lane. The lane is unbounded and never full; the
    /// signal is given back only if the mailbox is closed.
    pub fn send_signal(&self, sig: S) -> Result<(), S> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(sig);
        }
        inner.system.push_back(sig);
        let rx = inner.rx_waker.take();
        drop(inner);
        wake(rx);
        Ok(())
    }

    /// Takes the next signal, or else the next user message, without waiting.
    ///
    /// Returns `None` if both lanes are empty and the mailbox is open, and
    /// `Some(Received::Closed)` once it is closed. Receiver only.
    pub fn try_recv(&self) -> Option<Received<M, S>> {
        let mut inner = self.lock();
        let (received, grantee) = inner.pop(self.capacity);
        inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
        drop(inner);
        wake(grantee);
        if received.is_none() {
            // Nothing left: grants deferred by `poll_recv_deferring` go out now.
            self.wake_deferred();
        }
        received
    }

    /// Polls for the next signal, or else the next user message.
    ///
    /// `Pending` stores the receiver's waker, woken by the next push to either lane or by
    /// [`close`](Self::close). Returns `Ready(Received::Closed)` once closed. Receiver
    /// only: a single waker is stored, see the [module docs](self).
    #[inline]
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Received<M, S>> {
        let mut inner = self.lock();
        // The common case first: no signal, a user message, nobody waiting for room.
        if inner.system.is_empty() && inner.granted == inner.waiters.len() {
            if let Some(msg) = inner.user.pop_front() {
                inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
                drop(inner);
                return Poll::Ready(Received::Message(msg));
            }
        }
        let (received, grantee) = inner.pop(self.capacity);
        let Some(received) = received else {
            match &inner.rx_waker {
                Some(stored) if stored.will_wake(cx.waker()) => {}
                _ => inner.rx_waker = Some(cx.waker().clone()),
            }
            drop(inner);
            // Parking: grants deferred by an earlier `poll_recv_deferring` go out now.
            self.wake_deferred();
            return Poll::Pending;
        };
        inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
        drop(inner);
        wake(grantee);
        Poll::Ready(received)
    }

    /// [`poll_recv`](Self::poll_recv) for a receiver that works in turns: a slot freed by
    /// the message it takes is granted to the next waiting sender at once, but that sender
    /// is woken only by [`wake_deferred`](Self::wake_deferred) (the end of the receiver's
    /// turn) or when this returns `Pending` (the receiver parks). Capacity and FIFO order
    /// are those of `poll_recv`; only wake-ups are batched. Receiver only.
    #[inline]
    pub fn poll_recv_deferring(&self, cx: &mut Context<'_>) -> Poll<Received<M, S>> {
        let mut inner = self.lock();
        if let Some(received) = inner.pop_deferring(self.capacity, &self.deferred) {
            inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
            drop(inner);
            return Poll::Ready(received);
        }
        // About to park: the senders granted so far must not wait for our next turn.
        let woken = if self.deferred.load(Ordering::Relaxed) {
            self.deferred.store(false, Ordering::Relaxed);
            Some(inner.take_deferred())
        } else {
            None
        };
        match &inner.rx_waker {
            Some(stored) if stored.will_wake(cx.waker()) => {}
            _ => inner.rx_waker = Some(cx.waker().clone()),
        }
        inner.debug_check(self.capacity, false);
        drop(inner);
        if let Some(woken) = woken {
            woken.wake_all();
        }
        Poll::Pending
    }

    /// Wakes the senders granted room by [`poll_recv_deferring`](Self::poll_recv_deferring)
    /// and not woken yet. One relaxed load when there are none. Receiver only.
    #[inline]
    pub fn wake_deferred(&self) {
        if self.deferred.load(Ordering::Relaxed) {
            self.wake_deferred_now();
        }
    }

    #[cold]
    fn wake_deferred_now(&self) {
        let mut inner = self.lock();
        self.deferred.store(false, Ordering::Relaxed);
        let woken = inner.take_deferred();
        inner.debug_check(self.capacity, false);
        drop(inner);
        woken.wake_all();
    }

    /// A future resolving to the next signal or user message, or `Closed`
    /// (see [`poll_recv`](Self::poll_recv)). Receiver only.
    pub fn recv(&self) -> RecvFut<'_, M, S> {
        RecvFut { mailbox: self }
    }

    /// Closes the mailbox only if no user message is queued and no sender is waiting for
    /// room (checked and closed under one lock acquisition); returns whether it is closed
    /// now. Queued signals are dropped. Used to evict an idle process without losing a
    /// message that raced the decision: a sender either got in first (and this returns
    /// false) or gets `Closed(msg)` back.
    pub fn close_if_empty(&self) -> bool {
        self.close_if(|inner| inner.user.is_empty() && inner.waiters.is_empty())
            .is_some()
    }

    /// Closes the mailbox. Idempotent.
    ///
    /// Drops queued user messages (counted as dead letters, see [`dead_letters`]) and
    /// queued signals, wakes every waiting sender (each resolves to
    /// `Err(SendError::Closed(msg))` with its message) and the receiver (which then gets
    /// `Received::Closed`). Returns how many user messages this call dropped: 0 if the
    /// mailbox was already closed.
    pub fn close(&self) -> usize {
        self.close_if(|_| true).unwrap_or(0)
    }

    /// Closes if `ready` holds (under the lock). `None`: not closed; `Some(n)`: closed, `n`
    /// user messages dropped by this call (0 if it was closed already).
    fn close_if(&self, ready: impl FnOnce(&Inner<M, S>) -> bool) -> Option<usize> {
        let mut inner = self.lock();
        if inner.closed {
            return Some(0);
        }
        if !ready(&inner) {
            return None;
        }
        inner.closed = true;
        let user = mem::take(&mut inner.user);
        let system = mem::take(&mut inner.system);
        let waiters = mem::take(&mut inner.waiters);
        inner.granted = 0;
        let rx = inner.rx_waker.take();
        inner.debug_check(self.capacity, self.deferred.load(Ordering::Relaxed));
        drop(inner);

        let dropped = user.len();
        // Most mailboxes close empty (every process's exit closes its mailbox): touch the
        // process-wide counter, shared by every worker, only when something was dropped.
        if dropped > 0 || !system.is_empty() || !waiters.is_empty() {
            DEAD_LETTERS.fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::debug!(
                dead_letters = dropped,
                dropped_signals = system.len(),
                waiting_senders = waiters.len(),
                "mailbox closed"
            );
        }
        // Run the messages' destructors outside the lock.
        drop(user);
        drop(system);
        for waiter in waiters {
            wake(waiter.waker);
        }
        wake(rx);
        Some(dropped)
    }
}

impl<M, S> Drop for Mailbox<M, S> {
    /// Dropping an unclosed mailbox closes it, so its queued user messages are counted
    /// as dead letters rather than vanishing silently.
    fn drop(&mut self) {
        self.close();
    }
}

impl<M, S> fmt::Debug for Mailbox<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Mailbox")
            .field("capacity", &self.capacity)
            .field("len", &inner.user.len())
            .field("signals", &inner.system.len())
            .field("waiting_senders", &inner.waiters.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

/// Future returned by [`Mailbox::send`]. See the [module docs](self) for its protocol.
#[must_use = "futures do nothing unless polled; dropping a SendFut drops its message"]
pub struct SendFut<'a, M, S> {
    mailbox: &'a Mailbox<M, S>,
    /// The message; `None` once the future has completed.
    msg: Option<M>,
    /// Our id while we are queued in `Inner::waiters`.
    waiter: Option<WaiterId>,
}

// The future is never pinned structurally: `msg` is moved in and out by value.
impl<M, S> Unpin for SendFut<'_, M, S> {}

impl<M, S> Future for SendFut<'_, M, S> {
    type Output = Result<(), SendError<M>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let capacity = this.mailbox.capacity;
        let Some(msg) = this.msg.take() else {
            panic!("SendFut polled after completion");
        };
        let mut inner = this.mailbox.lock();
        if inner.closed {
            // `close` emptied the waiter queue; nothing to remove.
            this.waiter = None;
            return Poll::Ready(Err(SendError::Closed(msg)));
        }
        let granted = match this.waiter {
            None => {
                if inner.has_room(capacity) {
                    true
                } else {
                    // Invariant 3: no unreserved room, so we cannot be granted now.
                    let id = inner.next_waiter_id;
                    inner.next_waiter_id += 1;
                    inner.waiters.push_back(Waiter {
                        id,
                        waker: Some(cx.waker().clone()),
                    });
                    this.waiter = Some(id);
                    false
                }
            }
            Some(id) => {
                let pos = inner.position(id).unwrap_or_else(|| {
                    panic!("inconsistent mailbox state: send waiter {id} missing while open")
                });
                if pos < inner.granted {
                    inner.waiters.remove(pos);
                    inner.granted -= 1;
                    this.waiter = None;
                    true
                } else {
                    let waiter = &mut inner.waiters[pos];
                    match &waiter.waker {
                        Some(stored) if stored.will_wake(cx.waker()) => {}
                        _ => waiter.waker = Some(cx.waker().clone()),
                    }
                    false
                }
            }
        };
        if !granted {
            this.msg = Some(msg);
            return Poll::Pending;
        }
        let rx = inner.push_user(msg);
        inner.debug_check(capacity, this.mailbox.deferred.load(Ordering::Relaxed));
        drop(inner);
        wake(rx);
        Poll::Ready(Ok(()))
    }
}

impl<M, S> Drop for SendFut<'_, M, S> {
    fn drop(&mut self) {
        let Some(id) = self.waiter.take() else {
            return;
        };
        let capacity = self.mailbox.capacity;
        let mut inner = self.mailbox.lock();
        // Absent if `close` already emptied the queue.
        let Some(pos) = inner.position(id) else {
            return;
        };
        inner.waiters.remove(pos);
        let next = if pos < inner.granted {
            // We held a reserved slot: release it and pass it on (cancel safety).
            inner.granted -= 1;
            inner.grant_next(capacity)
        } else {
            None
        };
        inner.debug_check(capacity, self.mailbox.deferred.load(Ordering::Relaxed));
        drop(inner);
        wake(next);
        // `self.msg` is dropped after this, outside the lock.
    }
}

impl<M, S> fmt::Debug for SendFut<'_, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFut")
            .field("done", &self.msg.is_none())
            .field("waiter", &self.waiter)
            .finish()
    }
}

/// Future returned by [`Mailbox::recv`]; resolves like [`Mailbox::poll_recv`].
#[must_use = "futures do nothing unless polled"]
pub struct RecvFut<'a, M, S> {
    mailbox: &'a Mailbox<M, S>,
}

impl<M, S> Future for RecvFut<'_, M, S> {
    type Output = Received<M, S>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.mailbox.poll_recv(cx)
    }
}

impl<M, S> fmt::Debug for RecvFut<'_, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Mailbox;

    #[test]
    fn empty_mailbox_preallocates_nothing() {
        let mailbox: Mailbox<u64, u64> = Mailbox::new(1 << 20);
        let inner = mailbox.lock();
        assert_eq!(inner.user.capacity(), 0);
        assert_eq!(inner.system.capacity(), 0);
        assert_eq!(inner.waiters.capacity(), 0);
    }
}
