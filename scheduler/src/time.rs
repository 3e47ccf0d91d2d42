//! Timers for processes: `send_after`, `send_interval`, deadlines for futures.
//!
//! All timers live in the driver's hashed timing wheel (see `wheel` and `driver`); actions
//! run on the driver thread and only enqueue a message or wake a task. A timer message that
//! finds the mailbox full is retried every [`FULL_MAILBOX_RETRY`] rather than dropped; one
//! whose process has exited is counted as a dead letter and logged.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor_ref::{ActorRef, SendError};
use crate::driver::{DriverHandle, Sleep, TimerHandle};
use crate::runtime::Handle;

/// How soon a timer message that found its mailbox full is tried again.
pub const FULL_MAILBOX_RETRY: Duration = Duration::from_millis(1);

/// Runs `fut` until `deadline`: `Some(output)`, or `None` if the deadline passed first.
///
/// The timer is armed only if `fut` is still pending after one yield: the first time it is
/// pending, the task wakes itself and gives its worker up once. A local callee woken by our
/// request sits in the worker's LIFO slot, so it usually answers during that yield and the
/// common local call never touches the timing wheel (measured with callgrind on
/// `cairn-bench --child call --workers 1 --scale 0.02`; see the commit message).
///
/// That first poll, the one followed by the yield, is given a no-op waker: the task is
/// polled again after the yield whatever `fut` does, so a waker stored by `fut` then
/// (a reply slot's, a mailbox's) would only be cloned, woken while the task is already
/// queued, and dropped — two reference-count changes and a wake on every local call. The
/// second poll hands `fut` the real waker, as the `Future` contract asks of the latest
/// poll.
pub(crate) async fn with_deadline<F: Future>(
    driver: &DriverHandle,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    until(driver, deadline, pin!(fut)).await
}

/// [`with_deadline`] over a future its caller pinned: the poll loop itself, not a future
/// of its own, so a caller that is an `async fn` anyway ([`Handle::timeout`], the calls of
/// `ActorRef` and `NamedRef`) polls `fut` through one state machine less on every poll.
pub(crate) fn until<'a, F: Future + ?Sized>(
    driver: &'a DriverHandle,
    deadline: Instant,
    fut: Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + 'a {
    until_inner(driver, deadline, fut, true)
}

/// [`until`] without its look at `fut` before the yield: for a future that is rarely ready
/// that early, such as a local call's answer just after the request was pushed (the
/// callee has not run yet on this worker; on another it may have, and then the answer is
/// taken one yield later). Saves a poll of `fut` (for a reply: a lock of its slot) per
/// call.
pub(crate) fn until_after_yield<'a, F: Future + ?Sized>(
    driver: &'a DriverHandle,
    deadline: Instant,
    fut: Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + 'a {
    until_inner(driver, deadline, fut, false)
}

fn until_inner<'a, F: Future + ?Sized>(
    driver: &'a DriverHandle,
    deadline: Instant,
    mut fut: Pin<&'a mut F>,
    look_first: bool,
) -> impl Future<Output = Option<F::Output>> + 'a {
    // Made only once the yield did not suffice: a `Sleep` holds a driver handle (a count on
    // the driver shared by every worker), which the common call never needs.
    let mut sleep: Option<Sleep> = None;
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if !yielded {
            if look_first {
                let mut first = Context::from_waker(Waker::noop());
                if let Poll::Ready(v) = fut.as_mut().poll(&mut first) {
                    return Poll::Ready(Some(v));
                }
            }
            yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        let armed = sleep.get_or_insert_with(|| driver.sleep_until(deadline));
        if Pin::new(armed).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
}

/// A pending `send_after` or `send_interval`; cancel it with [`TimerRef::cancel`].
///
/// **Dropping a `TimerRef` does not cancel the timer**, as with Erlang's timer
/// references: `send_after(..)` with its ref thrown away still delivers, and an interval
/// whose ref is dropped ticks until its target exits. Keep the ref to cancel.
pub struct TimerRef {
    inner: Arc<Mutex<TimerSlot>>,
}

struct TimerSlot {
    cancelled: bool,
    current: Option<TimerHandle>,
}

impl TimerRef {
    /// Stops the timer. Returns true if it was still active (for `send_after`: the message
    /// will not be sent). After this returns, no further message is delivered.
    pub fn cancel(&self) -> bool {
        let mut slot = self.inner.lock();
        if slot.cancelled {
            return false;
        }
        slot.cancelled = true;
        // A pending timer handle means its delivery has not run yet: `deliver` clears
        // `current` under this lock before sending, and checks `cancelled` first. So even if
        // the driver has already started the action, it will now drop the message: the
        // cancel prevented it. (`TimerHandle::cancel` alone would say false in that window.)
        slot.current.take().is_some_and(|t| {
            t.cancel();
            true
        })
    }
}

impl std::fmt::Debug for TimerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerRef")
    }
}

/// Delivers `msg`, retrying later if the mailbox is full. Runs with the slot locked, so a
/// concurrent `cancel` either prevents the delivery or waits for it.
fn deliver<M: Send + 'static>(
    driver: DriverHandle,
    slot: Arc<Mutex<TimerSlot>>,
    to: ActorRef<M>,
    msg: M,
    on_delivered: impl FnOnce(&mut TimerSlot) + Send + 'static,
) {
    let mut guard = slot.lock();
    if guard.cancelled {
        return;
    }
    guard.current = None;
    match to.try_send(msg) {
        Ok(()) => on_delivered(&mut guard),
        Err(SendError::Full(msg)) => {
            let (d2, s2) = (driver.clone(), slot.clone());
            guard.current = Some(driver.timer_at(
                Instant::now() + FULL_MAILBOX_RETRY,
                Box::new(move || deliver(d2, s2, to, msg, on_delivered)),
            ));
        }
        Err(_) => {
            guard.cancelled = true;
            tracing::debug!(pid = %to.pid(), "timer message to an exited process dropped");
        }
    }
}

/// Arms the next tick of an interval: at `at`, `make` builds the message, which is
/// delivered; once it is, the tick after is armed (so a full mailbox delays the next tick
/// instead of queueing ticks up).
fn arm_interval<M, F>(
    driver: DriverHandle,
    slot: Arc<Mutex<TimerSlot>>,
    to: ActorRef<M>,
    mut make: F,
    at: Instant,
    every: Duration,
) -> TimerHandle
where
    M: Send + 'static,
    F: FnMut() -> M + Send + 'static,
{
    let (d2, s2) = (driver.clone(), slot.clone());
    driver.timer_at(
        at,
        Box::new(move || {
            let next = at + every;
            let (d3, s3, to2) = (d2.clone(), s2.clone(), to.clone());
            let msg = make();
            deliver(d2, s2, to, msg, move |slot| {
                slot.current = Some(arm_interval(d3, s3, to2, make, next, every));
            });
        }),
    )
}

impl Handle {
    /// Sends `msg` to `to` after `delay` (never earlier). Dropping the returned
    /// [`TimerRef`] does not cancel it.
    pub fn send_after<M: Send + 'static>(
        &self,
        delay: Duration,
        to: &ActorRef<M>,
        msg: M,
    ) -> TimerRef {
        let slot = Arc::new(Mutex::new(TimerSlot {
            cancelled: false,
            current: None,
        }));
        let driver = self.shared.driver.clone();
        let (d2, s2, to) = (driver.clone(), slot.clone(), to.clone());
        let mut guard = slot.lock();
        guard.current = Some(driver.timer_at(
            Instant::now() + delay,
            Box::new(move || deliver(d2, s2, to, msg, |_| {})),
        ));
        drop(guard);
        TimerRef { inner: slot }
    }

    /// Sends a clone of `msg` to `to` every `every`, first after one period. Deadlines are
    /// `start + k·every`, so delays do not accumulate; a late tick is not doubled up.
    /// Dropping the returned [`TimerRef`] does not stop it; [`TimerRef::cancel`] does, and
    /// so does the target's exit.
    pub fn send_interval<M: Clone + Send + 'static>(
        &self,
        every: Duration,
        to: &ActorRef<M>,
        msg: M,
    ) -> TimerRef {
        self.send_interval_with(every, to, move || msg.clone())
    }

    /// Like [`Handle::send_interval`], but each tick's message is built by `make`, so the
    /// message type needs no `Clone` (it may hold a [`crate::Reply`] in other variants).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cairn_scheduler::{Message, Reply, Runtime};
    ///
    /// enum Msg { Tick, Count(Reply<u32>) } // not `Clone`: `Reply` is one-shot
    ///
    /// let rt = Runtime::builder().workers(1).build().unwrap();
    /// let ticker = rt.spawn(|mut ctx| async move {
    ///     let mut ticks = 0;
    ///     while let Some(Message::User(msg)) = ctx.recv().await {
    ///         match msg {
    ///             Msg::Tick => ticks += 1,
    ///             Msg::Count(reply) if ticks >= 3 => { let _ = reply.send(ticks); }
    ///             Msg::Count(reply) => drop(reply),
    ///         }
    ///     }
    /// });
    /// let timer = rt.send_interval_with(Duration::from_millis(1), &ticker, || Msg::Tick);
    /// while rt.block_on(ticker.call(Msg::Count, Duration::from_secs(1))).is_err() {}
    /// assert!(timer.cancel());
    /// ```
    pub fn send_interval_with<M, F>(&self, every: Duration, to: &ActorRef<M>, make: F) -> TimerRef
    where
        M: Send + 'static,
        F: FnMut() -> M + Send + 'static,
    {
        let every = every.max(Duration::from_millis(1));
        let slot = Arc::new(Mutex::new(TimerSlot {
            cancelled: false,
            current: None,
        }));
        let driver = self.shared.driver.clone();
        let mut guard = slot.lock();
        guard.current = Some(arm_interval(
            driver,
            slot.clone(),
            to.clone(),
            make,
            Instant::now() + every,
            every,
        ));
        drop(guard);
        TimerRef { inner: slot }
    }
}

/// The deadline of [`Handle::timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

impl Handle {
    /// Runs `fut` for at most `duration`; the timer is armed only if `fut` is not ready at
    /// once.
    pub async fn timeout<F: Future>(
        &self,
        duration: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        until(&self.shared.driver, Instant::now() + duration, pin!(fut))
            .await
            .ok_or(Elapsed)
    }
}
