//! The driver thread: timers and I/O readiness for the scheduler.
//!
//! One thread per node owns a [`mio::Poll`] and runs until [`DriverHandle::shutdown`]. It
//! serves two things, both through `Waker`s and cheap callbacks, never by running user code
//! for long:
//!
//! * **Timers**, kept in the sans-IO hashed timing wheel of [`crate::wheel`] (Varghese &
//!   Lauck scheme 6, 1 ms ticks counted from the driver's start `origin`).
//! * **I/O readiness** for sources registered with mio; each registration gets a
//!   [`ScheduledIo`] holding its readiness bits and the wakers of the tasks waiting on it.
//!
//! # Thread roles
//!
//! * *Driver thread* (spawned by [`Driver::start`]): the only caller of `Poll::poll` and of
//!   [`Wheel::advance`]; runs timer actions and wakes I/O waiters.
//! * *Any thread* (through a [`DriverHandle`], [`TimerHandle`], [`Sleep`] or
//!   [`ScheduledIo`]): inserts and cancels timers, registers and deregisters sources, polls
//!   readiness. They share the wheel with the driver behind one `parking_lot::Mutex`
//!   (`Inner::timers`) and the registrations behind another (`Inner::ios`).
//!
//! # The driver loop
//!
//! 1. Under the timers lock, `advance` the wheel to the current tick (the real clock read
//!    once, rounded *down* to a tick) and take the due entries; release the lock.
//! 2. For each due entry, re-read the clock: if it is still before the entry's deadline
//!    (cannot happen with the rounding below, but it is cheap to be sure), re-insert it;
//!    otherwise move its state PENDING→FIRED and, if that succeeded, run the action under
//!    `catch_unwind` (a panic is logged with `tracing::error!` and the driver goes on).
//! 3. Under the timers lock, compute the next deadline and record that the driver is going
//!    to sleep until it (`Park::Until`, or `Park::Forever` with no timers); release the lock.
//! 4. `Poll::poll` with that timeout; then set `Park::Awake`, dispatch I/O events, repeat.
//!
//! # Wake-ups
//!
//! A timer inserted while the driver sleeps past its deadline (the new tick is earlier than
//! the recorded `Park::Until`, or the driver sleeps forever) calls the [`mio::Waker`] and
//! sets `Park::Awake` so later inserts do not wake it again; the driver recomputes its
//! timeout in step 3 anyway. The insert and the check happen under the timers lock, and the
//! driver records `Park` under the same lock before polling, so no insert is missed: a wake
//! that lands between step 3 and `poll` makes `poll` return at once (the waker is sticky).
//!
//! # Shutdown order
//!
//! [`DriverHandle::shutdown`] sets `shutdown` under the timers lock, wakes the driver and
//! joins it (unless called from the driver thread itself, e.g. from a timer action). The
//! driver, seeing the flag, leaves the loop, then: drains the wheel, marks every pending timer
//! DROPPED and drops the actions *without running them* (outside the lock); then marks every
//! registration shut down and wakes its waiters, whose polls then return an error. Timers
//! inserted after shutdown are dropped at once. Shutdown is idempotent. Dropping every
//! handle does *not* stop the driver: call `shutdown`.
//!
//! # Invariants
//!
//! * **Never early.** An action runs only when `Instant::now() >= deadline`: deadlines round
//!   *up* to a tick, the clock rounds *down*, and the real clock is re-checked before firing.
//!   Resolution is about 1 ms ([`crate::wheel::TICK`]) plus scheduling latency.
//! * **Cancel is exact.** A timer's state moves once, by compare-and-swap, from PENDING to
//!   FIRED (driver, right before running the action), CANCELLED ([`TimerHandle::cancel`]) or
//!   DROPPED (shutdown). `cancel` returns `true` iff its swap won, i.e. iff it prevented the
//!   action from running; the cancelled entry is removed from the wheel at once.
//! * **No lost readiness.** Each event bumps the registration's `tick`;
//!   [`ScheduledIo::clear_readiness`] clears bits only if no event arrived since the
//!   [`ReadyEvent`] was observed (as tokio's `ScheduledIo` does), so readiness that arrives
//!   between a read and its `WouldBlock` is kept.
//! * **No stale events.** A mio token is a slab index plus generation bits; an event whose
//!   token does not match the registration now in that slot is ignored.
//! * **Wakers are woken outside locks**, so a waker that re-polls or registers cannot
//!   deadlock with the driver.

use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Registry, Token};
use parking_lot::Mutex;
use slab::Slab;

use crate::wheel::{TimerKey, Wheel};

/// Capacity of the mio event buffer per `poll`. More ready sources than this are simply
/// picked up by the next `poll` (mio is edge-triggered but keeps undelivered events);
/// 1024 matches tokio's default and is a few tens of KiB.
const EVENTS_CAPACITY: usize = 1024;

/// Token of the driver's [`mio::Waker`]; no registration token can equal it (see
/// [`MAX_REGISTRATIONS`]).
const WAKE_TOKEN: Token = Token(usize::MAX);

/// Low bits of a registration token: its slab index. 2^24 (16 M) simultaneous registrations
/// is far beyond any node's socket count, and leaves the high bits for the generation even
/// on 32-bit targets.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
/// One index short of the mask, so that no token is [`WAKE_TOKEN`] (all ones).
const MAX_REGISTRATIONS: usize = INDEX_MASK;
/// High bits of a registration token: a generation, bumped per registration, so an event
/// for a deregistered source cannot reach a new registration that reused its slab slot.
const GENERATION_MASK: usize = usize::MAX >> INDEX_BITS;

// Timer states (`TimerShared::state`). Moves only from PENDING, exactly once.
/// Not yet fired nor cancelled.
const PENDING: u8 = 0;
/// The driver won the race: the action is running or has run.
const FIRED: u8 = 1;
/// `TimerHandle::cancel` won the race: the action was dropped unrun.
const CANCELLED: u8 = 2;
/// The driver shut down first: the action was dropped unrun.
const DROPPED: u8 = 3;

/// A timer action: runs once on the driver thread. Must be cheap (wake a waker, enqueue a
/// message).
pub type Action = Box<dyn FnOnce() + Send + 'static>;

/// Starts driver threads.
#[derive(Debug)]
pub struct Driver {
    _private: (),
}

impl Driver {
    /// Spawns a driver thread named `name` and returns a handle to it.
    pub fn start(name: &str) -> io::Result<DriverHandle> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        let inner = Arc::new(Inner {
            origin: Instant::now(),
            registry,
            waker,
            timers: Mutex::new(Timers {
                wheel: Wheel::new(),
                park: Park::Awake,
                shutdown: false,
            }),
            ios: Mutex::new(Ios {
                slab: Slab::new(),
                next_generation: 0,
            }),
            thread: Mutex::new(None),
        });
        let driver_inner = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(poll, &driver_inner))?;
        *inner.thread.lock() = Some(thread);
        Ok(DriverHandle { inner })
    }
}

/// A handle to a running driver. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct DriverHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle").finish_non_exhaustive()
    }
}

/// State shared by the driver thread and every handle.
struct Inner {
    /// Tick 0. Set once at start.
    origin: Instant,
    /// Clone of the poll's registry, for registering from any thread.
    registry: Registry,
    /// Interrupts the driver's `poll`.
    waker: mio::Waker,
    timers: Mutex<Timers>,
    ios: Mutex<Ios>,
    /// The driver thread, taken by the first `shutdown`.
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Everything behind the timers lock.
struct Timers {
    wheel: Wheel<TimerEntry>,
    /// What the driver is doing about sleep. Written by the driver before `poll` and by an
    /// inserter that wakes it.
    park: Park,
    /// Set once by `shutdown`; after it no entry is inserted.
    shutdown: bool,
}

/// The driver's sleep, as recorded under the timers lock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Park {
    /// Running, or already woken: it recomputes its timeout before sleeping again.
    Awake,
    /// Sleeping until this tick.
    Until(u64),
    /// Sleeping with no timer pending.
    Forever,
}

/// What the wheel stores for one timer.
struct TimerEntry {
    shared: Arc<TimerShared>,
    action: Action,
}

/// The part of a timer shared by its handle and its wheel entry.
struct TimerShared {
    /// PENDING, FIRED, CANCELLED or DROPPED.
    state: AtomicU8,
    deadline: Instant,
    /// The entry's current key in the wheel. Only written with the timers lock held
    /// (lock order: `Inner::timers`, then this).
    key: Mutex<Option<TimerKey>>,
}

impl Inner {
    /// The tick at or after `deadline` (rounds up, so firing at that tick is never early).
    fn deadline_tick(&self, deadline: Instant) -> u64 {
        let since = deadline.saturating_duration_since(self.origin);
        let ms = since.as_nanos().div_ceil(TICK_NANOS);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// The tick `now` is in (rounds down).
    fn now_tick(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.origin).as_nanos() / TICK_NANOS;
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + Duration::from_millis(tick)
    }

    /// Inserts `entry` unless shut down; wakes the driver if it sleeps past the deadline.
    /// Returns the entry back if the driver is shut down.
    fn insert_timer(&self, entry: TimerEntry) -> Result<(), TimerEntry> {
        let tick = self.deadline_tick(entry.shared.deadline);
        let mut timers = self.timers.lock();
        if timers.shutdown {
            return Err(entry);
        }
        let shared = Arc::clone(&entry.shared);
        let key = timers.wheel.insert(tick, entry);
        *shared.key.lock() = Some(key);
        let wake = match timers.park {
            Park::Awake => false,
            Park::Until(sleep_tick) => tick < sleep_tick,
            Park::Forever => true,
        };
        if wake {
            timers.park = Park::Awake;
            drop(timers);
            if let Err(error) = self.waker.wake() {
                tracing::error!(%error, "failed to wake the driver for an earlier timer");
            }
        }
        Ok(())
    }
}

/// One tick ([`crate::wheel::TICK`]) in nanoseconds.
const TICK_NANOS: u128 = crate::wheel::TICK.as_nanos();

impl DriverHandle {
    /// Runs `action` on the driver thread once `Instant::now() >= deadline` (never earlier;
    /// about 1 ms later at best). If the driver is shut down, `action` is dropped unrun.
    pub fn timer_at(&self, deadline: Instant, action: Action) -> TimerHandle {
        let shared = Arc::new(TimerShared {
            state: AtomicU8::new(PENDING),
            deadline,
            key: Mutex::new(None),
        });
        let entry = TimerEntry {
            shared: Arc::clone(&shared),
            action,
        };
        if let Err(entry) = self.inner.insert_timer(entry) {
            shared.state.store(DROPPED, Ordering::Release);
            drop(entry);
        }
        TimerHandle {
            shared,
            inner: Arc::clone(&self.inner),
        }
    }

    /// Runs `action` on the driver thread after `delay`. See [`DriverHandle::timer_at`].
    pub fn timer_after(&self, delay: Duration, action: Action) -> TimerHandle {
        self.timer_at(Instant::now() + delay, action)
    }

    /// A driver timer for `deadline` that wakes `waker` (or the waker given to the latest
    /// [`WakeTimer::poll_fired`]). Cancelled when dropped.
    pub fn wake_at(&self, deadline: Instant, waker: Waker) -> WakeTimer {
        let wake = Arc::new(Mutex::new(WakeState {
            fired: false,
            waker: Some(waker),
        }));
        let action_wake = Arc::clone(&wake);
        let timer = self.timer_at(
            deadline,
            Box::new(move || {
                let waker = {
                    let mut wake = action_wake.lock();
                    wake.fired = true;
                    wake.waker.take()
                };
                // Outside the lock: waking may run the task's scheduling code.
                if let Some(waker) = waker {
                    waker.wake();
                }
            }),
        );
        WakeTimer { timer, wake }
    }

    /// A future that completes once `Instant::now() >= deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            driver: self.clone(),
            deadline,
            armed: None,
        }
    }

    /// A future that completes after `duration`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(Instant::now() + duration)
    }

    /// Registers `source` for `interest`; its readiness is then tracked by the returned
    /// [`ScheduledIo`]. Pair with [`DriverHandle::deregister`].
    pub fn register(
        &self,
        source: &mut impl mio::event::Source,
        interest: Interest,
    ) -> io::Result<Arc<ScheduledIo>> {
        let io = {
            let mut ios = self.inner.ios.lock();
            if ios.slab.len() >= MAX_REGISTRATIONS {
                return Err(io::Error::other("too many I/O registrations"));
            }
            let generation = ios.next_generation;
            ios.next_generation = (generation + 1) & GENERATION_MASK;
            let entry = ios.slab.vacant_entry();
            let token = Token(entry.key() | (generation << INDEX_BITS));
            let io = Arc::new(ScheduledIo::new(token));
            entry.insert(Arc::clone(&io));
            io
        };
        if let Err(error) = self.inner.registry.register(source, io.token, interest) {
            self.inner.ios.lock().remove(io.token);
            return Err(error);
        }
        Ok(io)
    }

    /// Deregisters `source` and shuts `io` down: its current and future waiters get an error.
    pub fn deregister(
        &self,
        source: &mut impl mio::event::Source,
        io: &ScheduledIo,
    ) -> io::Result<()> {
        let result = self.inner.registry.deregister(source);
        self.inner.ios.lock().remove(io.token);
        io.shut_down();
        result
    }

    /// Stops the driver: pending timers are dropped without running, I/O waiters are woken
    /// with an error. Joins the driver thread unless called from it. Idempotent; the first
    /// call joins, later calls return at once.
    pub fn shutdown(&self) {
        {
            let mut timers = self.inner.timers.lock();
            if timers.shutdown {
                return;
            }
            timers.shutdown = true;
        }
        if let Err(error) = self.inner.waker.wake() {
            tracing::error!(%error, "failed to wake the driver for shutdown");
        }
        let thread = self.inner.thread.lock().take();
        if let Some(thread) = thread {
            if thread.thread().id() == thread::current().id() {
                return; // Called from a timer action: the loop ends when the action returns.
            }
            if thread.join().is_err() {
                tracing::error!("driver thread panicked");
            }
        }
    }

    #[cfg(test)]
    fn thread_id(&self) -> Option<thread::ThreadId> {
        self.inner
            .thread
            .lock()
            .as_ref()
            .map(|thread| thread.thread().id())
    }
}

/// Cancels a timer made by [`DriverHandle::timer_at`]. Dropping it does *not* cancel.
pub struct TimerHandle {
    shared: Arc<TimerShared>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerHandle")
            .field("deadline", &self.shared.deadline)
            .field("state", &self.shared.state.load(Ordering::Acquire))
            .finish()
    }
}

impl TimerHandle {
    /// Prevents the action from running. Returns `true` iff this call prevented it: `false`
    /// if it already ran or is running, was cancelled before, or was dropped by shutdown.
    pub fn cancel(&self) -> bool {
        if self
            .shared
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // Free the entry now rather than at its deadline (a cancelled 5 s call timeout
        // should not linger). The key may be stale if the driver already took the entry
        // out; then the driver sees CANCELLED and drops it.
        let removed = {
            let mut timers = self.inner.timers.lock();
            let key = self.shared.key.lock().take();
            key.and_then(|key| timers.wheel.cancel(key))
        };
        drop(removed); // Outside the lock: the action's captures may run arbitrary `Drop`s.
        true
    }

    /// The instant the action is due.
    pub fn deadline(&self) -> Instant {
        self.shared.deadline
    }
}

/// A one-shot driver timer that wakes a task: the building block of [`Sleep`] and of timers
/// built outside this crate (quinn's resettable timer in cairn-net). Cancelled when dropped.
pub struct WakeTimer {
    timer: TimerHandle,
    wake: Arc<Mutex<WakeState>>,
}

/// Shared by a [`WakeTimer`] and its driver action.
struct WakeState {
    /// The driver ran the action (the deadline has passed).
    fired: bool,
    /// Whom the action wakes; taken by the action.
    waker: Option<Waker>,
}

impl WakeTimer {
    /// True once the timer has fired. Otherwise `waker` is the one woken when it fires
    /// (kept as is if it would wake the same task), and the answer is false.
    pub fn poll_fired(&self, waker: &Waker) -> bool {
        let mut wake = self.wake.lock();
        if wake.fired {
            return true;
        }
        if !wake.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            wake.waker = Some(waker.clone());
        }
        false
    }

    /// Takes the waker the timer would wake (to re-arm for an earlier deadline).
    pub fn take_waker(&self) -> Option<Waker> {
        self.wake.lock().waker.take()
    }

    /// The instant the timer fires at.
    pub fn deadline(&self) -> Instant {
        self.timer.deadline()
    }
}

impl std::fmt::Debug for WakeTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeTimer")
            .field("deadline", &self.deadline())
            .field("fired", &self.wake.lock().fired)
            .finish()
    }
}

impl Drop for WakeTimer {
    fn drop(&mut self) {
        self.timer.cancel();
    }
}

/// A future that completes once `Instant::now() >= deadline`. It arms a driver timer on its
/// first `Pending` poll only, and cancels it when dropped. If the driver shuts down before
/// the deadline, it never completes.
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    driver: DriverHandle,
    deadline: Instant,
    armed: Option<WakeTimer>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

impl Sleep {
    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        match &this.armed {
            Some(timer) if timer.poll_fired(cx.waker()) => return Poll::Ready(()),
            Some(_) => {}
            None => this.armed = Some(this.driver.wake_at(this.deadline, cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// The registrations, behind `Inner::ios`.
struct Ios {
    slab: Slab<Arc<ScheduledIo>>,
    /// Generation for the next registration, wrapping within [`GENERATION_MASK`].
    next_generation: usize,
}

impl Ios {
    /// The registration `token` names, if it is still the one in its slot.
    fn get(&self, token: Token) -> Option<&Arc<ScheduledIo>> {
        self.slab
            .get(token.0 & INDEX_MASK)
            .filter(|io| io.token == token)
    }

    fn remove(&mut self, token: Token) {
        if self.get(token).is_some() {
            self.slab.remove(token.0 & INDEX_MASK);
        }
    }
}

/// Which way a task waits on a source.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Readable, read-closed or error.
    Read,
    /// Writable, write-closed or error.
    Write,
}

impl Direction {
    fn mask(self) -> Ready {
        match self {
            Direction::Read => Ready(Ready::READABLE.0 | Ready::READ_CLOSED.0 | Ready::ERROR.0),
            Direction::Write => Ready(Ready::WRITABLE.0 | Ready::WRITE_CLOSED.0 | Ready::ERROR.0),
        }
    }
}

/// A set of readiness bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ready(u8);

impl Ready {
    /// No readiness.
    pub const EMPTY: Ready = Ready(0);
    /// The source is readable.
    pub const READABLE: Ready = Ready(1);
    /// The source is writable.
    pub const WRITABLE: Ready = Ready(1 << 1);
    /// The read half is closed.
    pub const READ_CLOSED: Ready = Ready(1 << 2);
    /// The write half is closed.
    pub const WRITE_CLOSED: Ready = Ready(1 << 3);
    /// The source reported an error.
    pub const ERROR: Ready = Ready(1 << 4);

    fn from_event(event: &mio::event::Event) -> Ready {
        let mut bits = 0;
        for (set, bit) in [
            (event.is_readable(), Ready::READABLE),
            (event.is_writable(), Ready::WRITABLE),
            (event.is_read_closed(), Ready::READ_CLOSED),
            (event.is_write_closed(), Ready::WRITE_CLOSED),
            (event.is_error(), Ready::ERROR),
        ] {
            if set {
                bits |= bit.0;
            }
        }
        Ready(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Readable.
    pub fn is_readable(self) -> bool {
        self.contains(Ready::READABLE)
    }

    /// Writable.
    pub fn is_writable(self) -> bool {
        self.contains(Ready::WRITABLE)
    }

    /// Read half closed.
    pub fn is_read_closed(self) -> bool {
        self.contains(Ready::READ_CLOSED)
    }

    /// Write half closed.
    pub fn is_write_closed(self) -> bool {
        self.contains(Ready::WRITE_CLOSED)
    }

    /// Error.
    pub fn is_error(self) -> bool {
        self.contains(Ready::ERROR)
    }

    fn intersect(self, other: Ready) -> Ready {
        Ready(self.0 & other.0)
    }
}

/// Readiness observed by [`ScheduledIo::poll_readiness`]; hand it back to
/// [`ScheduledIo::clear_readiness`] after the operation returned `WouldBlock`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadyEvent {
    /// The bits that were set, limited to the direction polled.
    pub ready: Ready,
    /// The registration's event count when this was observed.
    tick: u32,
}

/// Readiness state of one registered source, shared by the driver and the tasks using the
/// source. Several tasks may wait in each direction (e.g. a UDP socket shared by a QUIC
/// endpoint's receive and send paths).
pub struct ScheduledIo {
    token: Token,
    state: Mutex<IoState>,
}

impl std::fmt::Debug for ScheduledIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ScheduledIo")
            .field("token", &self.token)
            .field("ready", &state.ready)
            .field("tick", &state.tick)
            .field("shutdown", &state.shutdown)
            .finish_non_exhaustive()
    }
}

/// Behind `ScheduledIo::state`. A plain mutex: simpler than tokio's packed atomic, and
/// readiness changes at most once per event, so it is not contended.
struct IoState {
    ready: Ready,
    /// Bumped (wrapping) by every event; lets `clear_readiness` keep newer readiness.
    tick: u32,
    /// Set by deregistration or driver shutdown; then polls fail.
    shutdown: bool,
    readers: Vec<Waiter>,
    writers: Vec<Waiter>,
    /// Id for the next waiter registered by a [`Readiness`] future (0 is anonymous).
    next_waiter: u64,
}

/// One waiting task.
struct Waiter {
    /// Nonzero for a [`Readiness`] future, which removes its waiter when dropped; 0 for a
    /// raw [`ScheduledIo::poll_readiness`] caller (deduplicated with `Waker::will_wake`).
    id: u64,
    waker: Waker,
}

impl IoState {
    fn waiters(&mut self, direction: Direction) -> &mut Vec<Waiter> {
        match direction {
            Direction::Read => &mut self.readers,
            Direction::Write => &mut self.writers,
        }
    }
}

fn shut_down_error() -> io::Error {
    io::Error::other("I/O driver shut down or source deregistered")
}

impl ScheduledIo {
    fn new(token: Token) -> Self {
        ScheduledIo {
            token,
            state: Mutex::new(IoState {
                ready: Ready::EMPTY,
                tick: 0,
                shutdown: false,
                readers: Vec::new(),
                writers: Vec::new(),
                next_waiter: 1,
            }),
        }
    }

    /// `Ready` with the readiness for `direction` if any, else `Pending` with the task's
    /// waker stored (one per task: re-polling does not pile up wakers). An error after
    /// deregistration or driver shutdown.
    pub fn poll_readiness(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<io::Result<ReadyEvent>> {
        self.poll_waiter(cx, direction, &mut 0)
    }

    /// As `poll_readiness`; `id` names this waiter (0 = anonymous, a fresh id is written
    /// back on first registration when `id` is `u64::MAX`).
    fn poll_waiter(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        id: &mut u64,
    ) -> Poll<io::Result<ReadyEvent>> {
        let mut state = self.state.lock();
        if state.shutdown {
            return Poll::Ready(Err(shut_down_error()));
        }
        let ready = state.ready.intersect(direction.mask());
        if !ready.is_empty() {
            return Poll::Ready(Ok(ReadyEvent {
                ready,
                tick: state.tick,
            }));
        }
        if *id == u64::MAX {
            *id = state.next_waiter;
            state.next_waiter += 1;
        }
        let my_id = *id;
        let waiters = state.waiters(direction);
        let existing = waiters.iter_mut().find(|waiter| {
            waiter.id == my_id && (my_id != 0 || waiter.waker.will_wake(cx.waker()))
        });
        match existing {
            Some(waiter) => {
                if !waiter.waker.will_wake(cx.waker()) {
                    waiter.waker = cx.waker().clone();
                }
            }
            None => waiters.push(Waiter {
                id: my_id,
                waker: cx.waker().clone(),
            }),
        }
        Poll::Pending
    }

    /// Clears the readiness in `event` unless an event arrived since it was observed. Call
    /// after the operation returned `WouldBlock`. Closed and error bits are never cleared.
    pub fn clear_readiness(&self, event: ReadyEvent) {
        let mut state = self.state.lock();
        if state.tick == event.tick {
            let clear = event
                .ready
                .intersect(Ready(Ready::READABLE.0 | Ready::WRITABLE.0));
            state.ready = Ready(state.ready.0 & !clear.0);
        }
    }

    /// Waits until the source is readable (or read-closed, or errored).
    pub fn readable(&self) -> Readiness<'_> {
        Readiness {
            io: self,
            direction: Direction::Read,
            id: u64::MAX,
        }
    }

    /// Waits until the source is writable (or write-closed, or errored).
    pub fn writable(&self) -> Readiness<'_> {
        Readiness {
            io: self,
            direction: Direction::Write,
            id: u64::MAX,
        }
    }

    /// Driver: records an event and wakes the waiters it concerns (outside the lock).
    fn set_readiness(&self, ready: Ready) {
        let mut woken = Vec::new();
        {
            let mut state = self.state.lock();
            state.tick = state.tick.wrapping_add(1);
            state.ready = Ready(state.ready.0 | ready.0);
            for direction in [Direction::Read, Direction::Write] {
                if !ready.intersect(direction.mask()).is_empty() {
                    woken.append(state.waiters(direction));
                }
            }
        }
        for waiter in woken {
            waiter.waker.wake();
        }
    }

    /// Marks this registration dead and wakes every waiter (outside the lock).
    fn shut_down(&self) {
        let woken: Vec<Waiter> = {
            let mut state = self.state.lock();
            state.shutdown = true;
            let mut woken = std::mem::take(&mut state.readers);
            woken.append(&mut state.writers);
            woken
        };
        for waiter in woken {
            waiter.waker.wake();
        }
    }
}

/// Future returned by [`ScheduledIo::readable`] and [`ScheduledIo::writable`]. Removes its
/// waker when dropped.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Readiness<'a> {
    io: &'a ScheduledIo,
    direction: Direction,
    /// `u64::MAX` until first registered as a waiter.
    id: u64,
}

impl Future for Readiness<'_> {
    type Output = io::Result<ReadyEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.io.poll_waiter(cx, this.direction, &mut this.id)
    }
}

impl Drop for Readiness<'_> {
    fn drop(&mut self) {
        if self.id != u64::MAX {
            let id = self.id;
            let removed: Vec<Waiter> = {
                let mut state = self.io.state.lock();
                let waiters = state.waiters(self.direction);
                let mut removed = Vec::new();
                if let Some(i) = waiters.iter().position(|waiter| waiter.id == id) {
                    removed.push(waiters.swap_remove(i));
                }
                removed
            };
            drop(removed); // Waker drops outside the lock.
        }
    }
}

/// The driver thread's body.
fn run(mut poll: mio::Poll, inner: &Inner) {
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    let mut due = Vec::new();
    loop {
        // 1. Take due timers.
        {
            let now_tick = inner.now_tick(Instant::now());
            let mut timers = inner.timers.lock();
            if timers.shutdown {
                break;
            }
            timers.wheel.advance(now_tick, &mut |entry| due.push(entry));
        }
        // 2. Fire them (or re-insert one that would be early).
        for entry in due.drain(..) {
            fire(inner, entry);
        }
        // 3. Decide how long to sleep.
        let timeout = {
            let mut timers = inner.timers.lock();
            if timers.shutdown {
                break;
            }
            match timers.wheel.next_deadline() {
                Some(tick) => {
                    timers.park = Park::Until(tick);
                    Some(
                        inner
                            .instant_of(tick)
                            .saturating_duration_since(Instant::now()),
                    )
                }
                None => {
                    timers.park = Park::Forever;
                    None
                }
            }
        };
        // 4. Sleep, then dispatch I/O.
        let polled = poll.poll(&mut events, timeout);
        inner.timers.lock().park = Park::Awake;
        if let Err(error) = polled {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(%error, "driver poll failed; stopping the driver");
            inner.timers.lock().shutdown = true;
            break;
        }
        // A task woken here goes to its executor's I/O injector: the worker that takes it
        // wakes a second one only if more work is queued (the executor's "I/O hand-off").
        crate::executor::handing_off_io(|| {
            for event in events.iter() {
                if event.token() == WAKE_TOKEN {
                    continue;
                }
                let io = inner.ios.lock().get(event.token()).cloned();
                if let Some(io) = io {
                    io.set_readiness(Ready::from_event(event));
                }
            }
        });
    }
    shut_down_all(inner);
}

/// Runs one due timer entry on the driver thread, or re-inserts it if it would be early.
fn fire(inner: &Inner, entry: TimerEntry) {
    if Instant::now() < entry.shared.deadline {
        // Defensive: the tick rounding makes this unreachable, but never-early is the
        // contract, so re-check the real clock.
        let shared = Arc::clone(&entry.shared);
        let mut timers = inner.timers.lock();
        if shared.state.load(Ordering::Acquire) == PENDING && !timers.shutdown {
            let tick = inner.deadline_tick(shared.deadline);
            let key = timers.wheel.insert(tick, entry);
            *shared.key.lock() = Some(key);
            return;
        }
        drop(timers);
        drop(entry);
        return;
    }
    if entry
        .shared
        .state
        .compare_exchange(PENDING, FIRED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return; // Cancelled while we held it: drop unrun.
    }
    if catch_unwind(AssertUnwindSafe(entry.action)).is_err() {
        tracing::error!("timer action panicked; the driver continues");
    }
}

/// After the loop: drop pending timers unrun and fail every registration's waiters.
fn shut_down_all(inner: &Inner) {
    let mut pending = Vec::new();
    {
        let mut timers = inner.timers.lock();
        timers.shutdown = true;
        timers
            .wheel
            .advance(u64::MAX, &mut |entry| pending.push(entry));
    }
    for entry in &pending {
        // A concurrent `cancel` may have won; either way the action does not run.
        let _ = entry.shared.state.compare_exchange(
            PENDING,
            DROPPED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    drop(pending);
    let ios: Vec<Arc<ScheduledIo>> = inner.ios.lock().slab.drain().collect();
    for io in ios {
        io.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::mpsc;
    use std::task::Wake;

    /// Hang guard for waits on something that must happen; never reached when green.
    const HANG_GUARD: Duration = Duration::from_secs(10);

    /// How late a timer may fire in the wake-up test. The failure being tested would be
    /// ~10 s late; 100 ms leaves room for two shared, loaded CI cores.
    const LATENESS_BOUND: Duration = Duration::from_millis(100);

    /// A waker that counts wake-ups and unparks the test thread.
    struct CountingWaker {
        woken: AtomicUsize,
        thread: thread::Thread,
    }

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.fetch_add(1, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker {
            woken: AtomicUsize::new(0),
            thread: thread::current(),
        });
        (Arc::clone(&counter), Waker::from(counter))
    }

    /// Parks until `done()` holds; panics after [`HANG_GUARD`].
    fn park_until(mut done: impl FnMut() -> bool) {
        let give_up = Instant::now() + HANG_GUARD;
        while !done() {
            let now = Instant::now();
            assert!(now < give_up, "hang guard expired");
            thread::park_timeout(give_up - now);
        }
    }

    /// Minimal executor: polls `future` on this thread, parking between wake-ups.
    fn block_on<F: Future>(future: F) -> F::Output {
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        let give_up = Instant::now() + HANG_GUARD;
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            let now = Instant::now();
            assert!(now < give_up, "hang guard expired");
            thread::park_timeout(give_up - now);
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x % bound
        }
    }

    #[test]
    fn timers_never_fire_early() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 250;
        let driver = Driver::start("test-driver").unwrap();
        let (tx, rx) = mpsc::channel();
        let inserters: Vec<_> = (0..THREADS)
            .map(|seed| {
                let driver = driver.clone();
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut rng = XorShift(0x2545_F491_4F6C_DD1D + seed);
                    for _ in 0..PER_THREAD {
                        let micros = rng.below(50_001);
                        let deadline = Instant::now() + Duration::from_micros(micros);
                        let tx = tx.clone();
                        driver.timer_at(
                            deadline,
                            Box::new(move || {
                                let _ = tx.send((Instant::now() >= deadline, deadline));
                            }),
                        );
                    }
                })
            })
            .collect();
        for inserter in inserters {
            inserter.join().unwrap();
        }
        for _ in 0..THREADS * PER_THREAD {
            let (on_time, deadline) = rx.recv_timeout(HANG_GUARD).expect("timer did not fire");
            assert!(on_time, "timer for {deadline:?} fired early");
        }
        driver.shutdown();
    }

    #[test]
    fn cancel_before_fire_returns_true_and_action_never_runs() {
        let driver = Driver::start("test-driver").unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let ran_in_action = Arc::clone(&ran);
        let start = Instant::now();
        let timer = driver.timer_at(
            start + Duration::from_millis(30),
            Box::new(move || ran_in_action.store(true, Ordering::SeqCst)),
        );
        assert!(timer.cancel());
        assert!(!timer.cancel(), "a second cancel prevents nothing");
        assert_eq!(driver.inner.timers.lock().wheel.len(), 0, "entry freed");
        // A later timer on the same (ordered) driver thread: once it ran, the cancelled
        // one would have run too.
        let (tx, rx) = mpsc::channel();
        driver.timer_at(
            start + Duration::from_millis(60),
            Box::new(move || tx.send(()).unwrap()),
        );
        rx.recv_timeout(HANG_GUARD).unwrap();
        assert!(!ran.load(Ordering::SeqCst));
        driver.shutdown();
    }

    #[test]
    fn cancel_after_fire_returns_false() {
        let driver = Driver::start("test-driver").unwrap();
        let (tx, rx) = mpsc::channel();
        let timer = driver.timer_at(Instant::now(), Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(HANG_GUARD).unwrap();
        assert!(!timer.cancel());
        driver.shutdown();
    }

    #[test]
    fn earlier_timer_inserted_while_driver_sleeps_fires_on_time() {
        let driver = Driver::start("test-driver").unwrap();
        let late = Instant::now() + Duration::from_secs(60);
        driver.timer_at(late, Box::new(|| {}));
        // Wait until the driver is asleep on the late timer (observed, not guessed).
        let give_up = Instant::now() + HANG_GUARD;
        while !matches!(driver.inner.timers.lock().park, Park::Until(_)) {
            assert!(Instant::now() < give_up, "hang guard expired");
            thread::yield_now();
        }
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + Duration::from_millis(5);
        driver.timer_at(deadline, Box::new(move || tx.send(Instant::now()).unwrap()));
        let fired_at = rx.recv_timeout(HANG_GUARD).unwrap();
        assert!(fired_at >= deadline);
        assert!(
            fired_at - deadline < LATENESS_BOUND,
            "fired {:?} late",
            fired_at - deadline
        );
        driver.shutdown();
    }

    #[test]
    fn panicking_action_does_not_kill_the_driver() {
        let driver = Driver::start("test-driver").unwrap();
        driver.timer_at(
            Instant::now(),
            Box::new(|| panic!("action panics on purpose")),
        );
        let (tx, rx) = mpsc::channel();
        driver.timer_after(
            Duration::from_millis(2),
            Box::new(move || tx.send(()).unwrap()),
        );
        rx.recv_timeout(HANG_GUARD).unwrap();
        driver.shutdown();
    }

    #[test]
    fn sleep_wakes_its_task_at_the_deadline() {
        let driver = Driver::start("test-driver").unwrap();
        let sleep = driver.sleep(Duration::from_millis(20));
        let deadline = sleep.deadline();
        block_on(sleep);
        assert!(Instant::now() >= deadline);
        driver.shutdown();
    }

    #[test]
    fn sleep_arms_on_first_pending_poll_and_cancels_on_drop() {
        let driver = Driver::start("test-driver").unwrap();
        let mut sleep = driver.sleep(Duration::from_secs(60));
        let pending = || driver.inner.timers.lock().wheel.len();
        assert_eq!(pending(), 0, "creating a Sleep arms nothing");
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        assert_eq!(pending(), 1, "armed once");
        drop(sleep);
        assert_eq!(pending(), 0, "dropping cancels");
        driver.shutdown();
    }

    #[test]
    fn two_tasks_waiting_for_readable_are_both_woken() {
        let driver = Driver::start("test-driver").unwrap();
        let mut receiver = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let io = driver.register(&mut receiver, Interest::READABLE).unwrap();

        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let mut first_wait = io.readable();
        let mut second_wait = io.readable();
        let mut first_cx = Context::from_waker(&first_waker);
        let mut second_cx = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut first_wait).poll(&mut first_cx).is_pending());
        assert!(Pin::new(&mut second_wait).poll(&mut second_cx).is_pending());

        sender
            .send_to(b"ping", receiver.local_addr().unwrap())
            .unwrap();
        park_until(|| {
            first.woken.load(Ordering::SeqCst) > 0 && second.woken.load(Ordering::SeqCst) > 0
        });
        let Poll::Ready(Ok(event)) = Pin::new(&mut first_wait).poll(&mut first_cx) else {
            panic!("first waiter not ready");
        };
        assert!(event.ready.is_readable());
        assert!(matches!(
            Pin::new(&mut second_wait).poll(&mut second_cx),
            Poll::Ready(Ok(_))
        ));

        // Read until WouldBlock, then clear: the next wait is pending again.
        let mut buf = [0; 16];
        assert_eq!(receiver.recv(&mut buf).unwrap(), 4);
        assert_eq!(
            receiver.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        io.clear_readiness(event);
        assert!(io
            .poll_readiness(&mut first_cx, Direction::Read)
            .is_pending());

        driver.deregister(&mut receiver, &io).unwrap();
        assert!(matches!(
            io.poll_readiness(&mut first_cx, Direction::Read),
            Poll::Ready(Err(_))
        ));
        driver.shutdown();
    }

    #[test]
    fn clear_readiness_keeps_readiness_that_arrived_after_the_observation() {
        let io = ScheduledIo::new(Token(0));
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        io.set_readiness(Ready::READABLE);
        let Poll::Ready(Ok(event)) = io.poll_readiness(&mut cx, Direction::Read) else {
            panic!("not ready");
        };
        io.set_readiness(Ready::READABLE); // Arrives between the read and the clear.
        io.clear_readiness(event);
        assert!(io.poll_readiness(&mut cx, Direction::Read).is_ready());
    }

    #[test]
    fn dropped_readiness_future_removes_its_waker() {
        let io = ScheduledIo::new(Token(0));
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = io.readable();
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        assert_eq!(
            io.state.lock().readers.len(),
            1,
            "re-polling does not pile up"
        );
        drop(wait);
        assert!(io.state.lock().readers.is_empty());
        io.set_readiness(Ready::READABLE);
        assert_eq!(counter.woken.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stale_token_does_not_reach_a_new_registration() {
        let mut ios = Ios {
            slab: Slab::new(),
            next_generation: 0,
        };
        let old = Token(0);
        ios.slab.insert(Arc::new(ScheduledIo::new(old)));
        ios.remove(old);
        let new = Token(1 << INDEX_BITS); // Same slot, next generation.
        ios.slab.insert(Arc::new(ScheduledIo::new(new)));
        assert!(ios.get(old).is_none());
        assert!(ios.get(new).is_some());
    }

    #[test]
    fn shutdown_joins_the_thread_and_drops_pending_actions_unrun() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        let driver = Driver::start("test-driver").unwrap();
        let thread_id = driver.thread_id().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let (ran_in_action, guard) = (Arc::clone(&ran), SetOnDrop(Arc::clone(&dropped)));
        let timer = driver.timer_after(
            Duration::from_secs(60),
            Box::new(move || {
                let _guard = guard;
                ran_in_action.store(true, Ordering::SeqCst);
            }),
        );
        driver.shutdown();
        assert!(driver.thread_id().is_none(), "thread joined");
        assert_ne!(thread_id, thread::current().id());
        assert!(dropped.load(Ordering::SeqCst), "pending action dropped");
        assert!(!ran.load(Ordering::SeqCst), "pending action not run");
        assert!(!timer.cancel(), "shutdown, not cancel, prevented it");
        driver.shutdown(); // Idempotent.

        let late_dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&late_dropped));
        let late = driver.timer_at(Instant::now(), Box::new(move || drop(guard)));
        assert!(
            late_dropped.load(Ordering::SeqCst),
            "dropped at once after shutdown"
        );
        assert!(!late.cancel());
    }
}
