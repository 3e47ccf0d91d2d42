//! The work-stealing executor: worker threads that run processes.
//!
//! Structure (tokio's multi-thread scheduler, on `crossbeam-deque`):
//! - each worker owns a FIFO [`Worker`] deque plus a one-task **LIFO slot**; a process woken
//!   by a message sent from this worker goes into the slot, so the receiver runs next on
//!   the same core while the message is still in cache (ping-pong stays on one worker);
//! - processes spawned on a worker go on its **spawn stack** (a LIFO deque), run newest
//!   first, and are stolen oldest first: work-first fork-join as in Cilk. A tree of
//!   processes (skynet) then runs depth first on each worker, so it keeps O(depth x
//!   fan-out) processes alive instead of a whole level (a million, ~500 MB of RSS, most
//!   of the run spent in page faults), while a thief takes the biggest subtree;
//! - a global [`Injector`] takes work from outside the workers (other threads, the timer
//!   driver, the first spawn from `main`), and a second one the tasks the I/O driver thread
//!   wakes for ready sources (see "I/O hand-off" below);
//! - idle workers steal half of another worker's deque.
//!
//! Fairness: the LIFO slot is used at most [`MAX_LIFO_POLLS_PER_TICK`] times in a row, the
//! injector is checked first every [`GLOBAL_QUEUE_INTERVAL`] ticks, the FIFO queue before
//! the spawn stack every [`FIFO_BEFORE_SPAWNS_INTERVAL`] ticks, and the oldest spawn before
//! the newest every [`OLDEST_SPAWN_INTERVAL`] ticks, so neither local ping-pong, nor a busy
//! local queue, nor a process that keeps spawning starves the rest.
//!
//! Parking protocol ("searching" rule): a worker with no work first becomes *searching*
//! (at most half the workers search at once), spins briefly, then registers itself as idle
//! and parks on its own condvar. A producer that queues work wakes one idle worker only when
//! no worker is searching; a searcher that finds work and was the last searcher wakes
//! another. A worker re-checks every queue after registering as idle (with a SeqCst fence on
//! both sides), so a push that raced its decision to park is never missed. A searcher whose
//! re-check finds work stays a searcher: producers that saw it searching woke nobody, so
//! when it takes a task it must chain the wake-up like any searcher that found work.
//!
//! I/O hand-off: the I/O driver thread wakes one task per arriving packet, and the worker
//! that picked it up (woken for it, or still searching) then woke a second worker, which
//! found nothing: one futex wake and context switch per packet per node on the remote-call
//! path. So tasks woken by the I/O driver ([`handing_off_io`]) go to an injector of their
//! own, and a searcher that found its task there wakes another worker only if more work is
//! still queued. Every other task keeps the chained wake-up.
//!
//! Shutdown: `shutdown` sets a flag and unparks everyone; workers drop what is left in their
//! queues (the process table still owns every process, and the runtime stops them).

use std::cell::{Cell, OnceCell};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use parking_lot::{Condvar, Mutex};

use crate::stats::{bump_owned, bump_shared, Counters};

/// A unit of work: a process (or anything else that can be run once per wake).
pub(crate) trait Runnable: Send + Sync + 'static {
    /// Runs one turn. Called by exactly one worker at a time (see `task_state`).
    fn run(self: Arc<Self>);
}

pub(crate) type Task = Arc<dyn Runnable>;

/// How many times in a row a worker may take the LIFO slot before it looks at its queue.
/// tokio uses 3: enough for request/response pairs, small enough that a ping-pong pair
/// cannot starve the queue behind it.
pub const MAX_LIFO_POLLS_PER_TICK: u32 = 3;

/// Every this many ticks a worker takes from the global injector before its own queue, so
/// work arriving from outside is not starved by local work. tokio's default is 31 (a prime,
/// so it does not resonate with other periodic work).
pub const GLOBAL_QUEUE_INTERVAL: u32 = 31;

/// Every this many ticks a worker takes from its FIFO queue (woken and yielded processes)
/// before its spawn stack, so a process that keeps spawning cannot starve processes that
/// are ready to run. Prime, like [`GLOBAL_QUEUE_INTERVAL`], and different from it.
pub const FIFO_BEFORE_SPAWNS_INTERVAL: u32 = 7;

/// Every this many ticks a worker runs the *oldest* process on its spawn stack first, so a
/// spawn that sits under an endless stream of newer ones still runs (each waits at most this
/// many ticks per spawn older than it), even with no other worker to steal it. Prime.
pub const OLDEST_SPAWN_INTERVAL: u32 = 61;

/// How many times a worker with nothing to do re-checks the queues, yielding its thread
/// between checks, before it parks. A futex park/unpark round trip costs ~7 µs here, while a
/// yield-and-check costs well under 1 µs, so a short spin saves wake-ups in message
/// exchanges between workers.
const SPINS_BEFORE_PARK: u32 = 16;

/// Where a scheduled task goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Schedule {
    /// Woken by a message or signal: the LIFO slot when on a worker of this executor.
    Woken,
    /// Newly spawned: the top of the spawn stack, and another worker may be woken to steal.
    Spawned,
    /// Used up its budget or woke itself: the back of the local queue, no extra wake-up.
    Yielded,
}

struct Sleeper {
    notified: Mutex<bool>,
    condvar: Condvar,
}

pub(crate) struct Executor {
    injector: Injector<Task>,
    /// Tasks the I/O driver thread woke ([`handing_off_io`]).
    io_injector: Injector<Task>,
    stealers: Box<[Stealer<Task>]>,
    /// Thieves' ends of the workers' spawn stacks (they take the oldest spawn).
    spawn_stealers: Box<[Stealer<Task>]>,
    sleepers: Box<[Sleeper]>,
    /// Indices of parked workers. `num_idle` mirrors its length for lock-free reads.
    idle: Mutex<Vec<usize>>,
    num_idle: AtomicUsize,
    num_searching: AtomicUsize,
    shutdown: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// One block per worker, written only by that worker (see `stats`).
    counters: Box<[Counters]>,
    /// Work counted on threads that are not workers.
    outside: Counters,
}

/// The state a worker thread keeps for itself. Only its own thread touches `local`,
/// `spawned`, `lifo`, `lifo_polls`, `tick` and `searching`.
struct WorkerCtx {
    exec: Arc<Executor>,
    index: usize,
    local: Worker<Task>,
    /// Processes spawned on this worker, newest on top.
    spawned: Worker<Task>,
    lifo: Cell<Option<Task>>,
    lifo_polls: Cell<u32>,
    tick: Cell<u32>,
    searching: Cell<bool>,
    /// Set when this worker, searching, took a task from the I/O injector; cleared when it
    /// starts searching and when it stops.
    took_io: Cell<bool>,
    rng: Cell<u32>,
}

thread_local! {
    static CURRENT: OnceCell<WorkerCtx> = const { OnceCell::new() };
    /// The address of this thread's `CURRENT` worker while its loop runs, else null. A raw
    /// pointer has no destructor, so reading it is one thread-local load; `CURRENT` (a type
    /// with a destructor) costs a call and a lazy-registration check on every access, and
    /// every wake and spawn asks which worker it is on.
    static WORKER: Cell<*const WorkerCtx> = const { Cell::new(std::ptr::null()) };
    /// True while this thread (the I/O driver) dispatches readiness ([`handing_off_io`]).
    static IO_HANDOFF: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, the I/O driver thread waking the tasks that wait on ready sources: a task it
/// wakes goes to its executor's I/O injector, and the worker that takes it from there wakes
/// a second one only if more work is queued (see the module doc, "I/O hand-off").
pub(crate) fn handing_off_io<R>(f: impl FnOnce() -> R) -> R {
    /// Clears the flag on return and on unwind.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IO_HANDOFF.with(|h| h.set(false));
        }
    }
    IO_HANDOFF.with(|h| h.set(true));
    let _reset = Reset;
    f()
}

/// Publishes a worker in `WORKER` for as long as it lives, unwinding included.
struct Published;

impl Published {
    fn new(ctx: &WorkerCtx) -> Self {
        WORKER.with(|w| w.set(ctx));
        Published
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(std::ptr::null()));
    }
}

/// Calls `f` with this thread's worker, if the thread is one and its loop is running.
#[inline]
#[allow(unsafe_code)] // Reading the worker through its thread-local address; see SAFETY.
fn with_worker<R>(f: impl FnOnce(Option<&WorkerCtx>) -> R) -> R {
    let ptr = WORKER.with(Cell::get);
    // SAFETY: `WORKER` is non-null only while a `Published` guard lives: `Executor::start`'s
    // worker closure creates it pointing at the `WorkerCtx` inside this thread's `CURRENT` (a
    // `OnceCell` that is set once, never moved and dropped only at thread exit) and drops it,
    // resetting the pointer to null, before that closure returns or unwinds. Only this thread reads its own `WORKER`, and the reference does not outlive
    // `f`, which runs within that window.
    f(unsafe { ptr.as_ref() })
}

impl Executor {
    /// Starts `workers` threads named `{name}-worker-{i}`.
    pub(crate) fn start(name: &str, workers: usize) -> std::io::Result<Arc<Executor>> {
        let workers = workers.max(1);
        let locals: Vec<Worker<Task>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let spawn_stacks: Vec<Worker<Task>> = (0..workers).map(|_| Worker::new_lifo()).collect();
        let exec = Arc::new(Executor {
            injector: Injector::new(),
            io_injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            spawn_stealers: spawn_stacks.iter().map(Worker::stealer).collect(),
            sleepers: (0..workers)
                .map(|_| Sleeper {
                    notified: Mutex::new(false),
                    condvar: Condvar::new(),
                })
                .collect(),
            idle: Mutex::new(Vec::with_capacity(workers)),
            num_idle: AtomicUsize::new(0),
            num_searching: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            counters: (0..workers).map(|_| Counters::default()).collect(),
            outside: Counters::default(),
        });
        let mut threads = Vec::with_capacity(workers);
        for (index, (local, spawned)) in locals.into_iter().zip(spawn_stacks).enumerate() {
            let exec2 = exec.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-worker-{index}"))
                .spawn(move || {
                    CURRENT.with(|cell| {
                        let ctx = WorkerCtx {
                            exec: exec2,
                            index,
                            local,
                            spawned,
                            lifo: Cell::new(None),
                            lifo_polls: Cell::new(0),
                            tick: Cell::new(0),
                            searching: Cell::new(false),
                            took_io: Cell::new(false),
                            rng: Cell::new(0x9E37_79B9 ^ (index as u32 + 1)),
                        };
                        if cell.set(ctx).is_err() {
                            panic!("a thread can only be one worker");
                        }
                        let ctx = cell.get().expect("just set");
                        let _published = Published::new(ctx);
                        ctx.run_loop();
                        ctx.drain();
                    })
                })?;
            threads.push(handle);
        }
        *exec.threads.lock() = threads;
        Ok(exec)
    }

    pub(crate) fn num_workers(&self) -> usize {
        self.stealers.len()
    }

    /// Queues a task. On one of this executor's workers it stays local; elsewhere it goes to
    /// the injector and an idle worker is woken.
    pub(crate) fn schedule(self: &Arc<Self>, task: Task, how: Schedule) {
        let task = with_worker(|worker| match worker {
            Some(ctx) if Arc::ptr_eq(&ctx.exec, self) => {
                ctx.push_local(task, how);
                None
            }
            _ => Some(task),
        });
        if let Some(task) = task {
            if IO_HANDOFF.with(Cell::get) {
                self.io_injector.push(task);
            } else {
                self.injector.push(task);
            }
            self.notify_parked();
        }
    }

    /// Wakes one parked worker if nobody is searching for work already.
    fn notify_parked(&self) {
        fence(Ordering::SeqCst);
        if self.num_searching.load(Ordering::SeqCst) != 0
            || self.num_idle.load(Ordering::SeqCst) == 0
        {
            return;
        }
        let index = {
            let mut idle = self.idle.lock();
            // Re-check under the lock: another producer may have woken the last sleeper.
            if self.num_searching.load(Ordering::SeqCst) != 0 {
                return;
            }
            let Some(index) = idle.pop() else { return };
            self.num_idle.fetch_sub(1, Ordering::SeqCst);
            // The woken worker starts out searching; counting it now keeps other producers
            // from waking a second worker for the same task.
            self.num_searching.fetch_add(1, Ordering::SeqCst);
            index
        };
        self.unpark(index);
    }

    fn unpark(&self, index: usize) {
        let sleeper = &self.sleepers[index];
        *sleeper.notified.lock() = true;
        sleeper.condvar.notify_one();
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty()
            || !self.io_injector.is_empty()
            || self.stealers.iter().any(|s| !s.is_empty())
            || self.spawn_stealers.iter().any(|s| !s.is_empty())
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Stops the workers and joins them. Tasks still queued are dropped. Idempotent; must not
    /// be called from a worker thread of this executor.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for sleeper in self.sleepers.iter() {
            *sleeper.notified.lock() = true;
            sleeper.condvar.notify_all();
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        for injector in [&self.injector, &self.io_injector] {
            loop {
                match injector.steal() {
                    Steal::Success(task) => drop(task),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
    }

    /// Adds one to the counter `pick` selects: in the calling worker's own block, or in the
    /// shared block off the workers.
    #[inline]
    pub(crate) fn count(self: &Arc<Self>, pick: impl FnOnce(&Counters) -> &AtomicU64) {
        with_worker(|worker| match worker {
            Some(ctx) if Arc::ptr_eq(&ctx.exec, self) => {
                bump_owned(pick(&self.counters[ctx.index]))
            }
            _ => bump_shared(pick(&self.outside)),
        })
    }

    /// Every block of counters (for a snapshot).
    pub(crate) fn counter_blocks(&self) -> impl Iterator<Item = &Counters> {
        self.counters.iter().chain(std::iter::once(&self.outside))
    }

    /// Processes queued to run: the injector and every worker's queue and spawn stack.
    pub(crate) fn queued(&self) -> usize {
        self.injector.len()
            + self.io_injector.len()
            + self.stealers.iter().map(Stealer::len).sum::<usize>()
            + self.spawn_stealers.iter().map(Stealer::len).sum::<usize>()
    }

    /// True when the calling thread is one of this executor's workers.
    pub(crate) fn on_worker(self: &Arc<Self>) -> bool {
        with_worker(|worker| worker.is_some_and(|ctx| Arc::ptr_eq(&ctx.exec, self)))
    }
}

/// Queues `task` on the calling thread's worker if that worker belongs to the executor at
/// address `exec`; otherwise gives it back (the caller then uses [`Executor::schedule`]).
/// The address is only compared, never followed, so the caller need not hold a reference
/// count on the executor (a process reaches it through its own fields, which it is about to
/// move into the queue).
#[inline]
pub(crate) fn schedule_on_current<T: Runnable>(
    exec: *const Executor,
    task: Arc<T>,
    how: Schedule,
) -> Result<(), Arc<T>> {
    with_worker(|worker| match worker {
        Some(ctx) if std::ptr::eq(Arc::as_ptr(&ctx.exec), exec) => {
            ctx.push_local(task, how);
            Ok(())
        }
        _ => Err(task),
    })
}

impl WorkerCtx {
    #[inline]
    fn push_local(&self, task: Task, how: Schedule) {
        match how {
            Schedule::Woken => {
                if let Some(prev) = self.lifo.replace(Some(task)) {
                    self.local.push(prev);
                    self.exec.notify_parked();
                }
            }
            Schedule::Spawned => {
                self.spawned.push(task);
                self.exec.notify_parked();
            }
            Schedule::Yielded => self.local.push(task),
        }
    }

    fn run_loop(&self) {
        let exec = &*self.exec;
        let counters = &exec.counters[self.index];
        while !exec.is_shutdown() {
            if let Some(task) = self.next_task() {
                self.stop_searching();
                bump_owned(&counters.polls);
                task.run();
                continue;
            }
            if let Some(task) = self.search() {
                self.stop_searching();
                bump_owned(&counters.steals);
                bump_owned(&counters.polls);
                task.run();
                continue;
            }
            self.park();
        }
    }

    /// Next task from this worker's own sources, honouring the fairness intervals.
    fn next_task(&self) -> Option<Task> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if self.lifo_polls.get() < MAX_LIFO_POLLS_PER_TICK {
            if let Some(task) = self.lifo.take() {
                self.lifo_polls.set(self.lifo_polls.get() + 1);
                return Some(task);
            }
        } else if let Some(task) = self.lifo.take() {
            self.local.push(task);
        }
        self.lifo_polls.set(0);
        if tick % GLOBAL_QUEUE_INTERVAL == 0 {
            if let Some(task) = self.steal_from_injector() {
                return Some(task);
            }
        }
        if tick % FIFO_BEFORE_SPAWNS_INTERVAL == 0 {
            if let Some(task) = self.local.pop() {
                return Some(task);
            }
        }
        if tick % OLDEST_SPAWN_INTERVAL == 0 {
            if let Some(task) = self.steal_oldest_spawn() {
                return Some(task);
            }
        }
        self.spawned
            .pop()
            .or_else(|| self.local.pop())
            .or_else(|| self.steal_from_injector())
    }

    /// The bottom of this worker's own spawn stack (what a thief would take).
    #[cold]
    #[inline(never)]
    fn steal_oldest_spawn(&self) -> Option<Task> {
        loop {
            match self.exec.spawn_stealers[self.index].steal() {
                Steal::Success(task) => return Some(task),
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    /// A task from the injectors, noting when it came from the I/O one. Which one is tried
    /// first alternates with the tick, so a stream of packets cannot starve the other
    /// injector (timer-woken tasks, sends from outside), nor the reverse.
    fn steal_from_injector(&self) -> Option<Task> {
        let exec = &*self.exec;
        let io_first = self.tick.get() & 1 == 1;
        if !io_first {
            if let Some(task) = self.steal_from(&exec.injector) {
                return Some(task);
            }
        }
        if let Some(task) = self.steal_from(&exec.io_injector) {
            self.took_io.set(true);
            return Some(task);
        }
        if io_first {
            return self.steal_from(&exec.injector);
        }
        None
    }

    /// A task from `injector`, and up to half of the rest into the local queue. A worker that
    /// is not searching and brought more than its own task wakes another for them: the
    /// producers may have counted on a searcher that looked while the batch was in flight
    /// (invisible in both queues) and then parked, and this worker runs its task first.
    /// A searcher leaves that to `stop_searching`.
    fn steal_from(&self, injector: &Injector<Task>) -> Option<Task> {
        let before = self.local.len();
        loop {
            match injector.steal_batch_and_pop(&self.local) {
                Steal::Success(task) => {
                    if !self.searching.get() && self.local.len() > before {
                        self.exec.notify_parked();
                    }
                    return Some(task);
                }
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    /// Becomes a searcher (if fewer than half the workers are) and steals, spinning a little.
    fn search(&self) -> Option<Task> {
        if !self.searching.get() {
            let searching = self.exec.num_searching.load(Ordering::SeqCst);
            if 2 * searching >= self.exec.num_workers() {
                return None;
            }
            self.exec.num_searching.fetch_add(1, Ordering::SeqCst);
            self.searching.set(true);
            self.took_io.set(false);
        }
        for _ in 0..SPINS_BEFORE_PARK {
            if let Some(task) = self.steal_once() {
                return Some(task);
            }
            if self.exec.is_shutdown() {
                return None;
            }
            std::thread::yield_now();
        }
        None
    }

    fn steal_once(&self) -> Option<Task> {
        if let Some(task) = self.steal_from_injector() {
            return Some(task);
        }
        let n = self.exec.stealers.len();
        // xorshift: a random start spreads thieves over victims.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        let start = x as usize % n;
        for i in 0..n {
            let victim = (start + i) % n;
            if victim == self.index {
                continue;
            }
            // The oldest spawns first: in a tree they are the biggest subtrees.
            loop {
                match self.exec.spawn_stealers[victim].steal_batch_and_pop(&self.spawned) {
                    Steal::Success(task) => return Some(task),
                    Steal::Empty => break,
                    Steal::Retry => continue,
                }
            }
            loop {
                match self.exec.stealers[victim].steal_batch_and_pop(&self.local) {
                    Steal::Success(task) => return Some(task),
                    Steal::Empty => break,
                    Steal::Retry => continue,
                }
            }
        }
        None
    }

    /// Leaves the searching state; the last searcher to find work wakes another worker,
    /// since where there was one task there are often more. One that found a task the I/O
    /// driver thread woke wakes another only if more work is still queued: the driver
    /// wakes one task per arriving packet, and a second worker woken for it finds nothing.
    fn stop_searching(&self) {
        if self.searching.replace(false) {
            let took_io = self.took_io.replace(false);
            if self.exec.num_searching.fetch_sub(1, Ordering::SeqCst) == 1 {
                if took_io {
                    // Pairs with the producers' fence in `notify_parked`: a producer that saw
                    // this worker still searching woke nobody, and its task is visible here.
                    fence(Ordering::SeqCst);
                    if !self.exec.has_work() {
                        return;
                    }
                }
                self.exec.notify_parked();
            }
        }
    }

    fn park(&self) {
        let exec = &*self.exec;
        {
            let mut idle = exec.idle.lock();
            idle.push(self.index);
            exec.num_idle.fetch_add(1, Ordering::SeqCst);
        }
        let was_searching = self.searching.replace(false);
        if was_searching {
            exec.num_searching.fetch_sub(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        if exec.has_work()
            || exec.is_shutdown()
            || !self.local.is_empty()
            || !self.spawned.is_empty()
        {
            let mut idle = exec.idle.lock();
            if let Some(pos) = idle.iter().position(|&i| i == self.index) {
                idle.swap_remove(pos);
                exec.num_idle.fetch_sub(1, Ordering::SeqCst);
                drop(idle);
                if was_searching {
                    // Still a searcher: a producer that saw us searching woke nobody and
                    // counts on us. Leaving as a searcher (`stop_searching`) chains the
                    // wake-up for the rest of its work; taking the task as a plain worker
                    // would strand it (the I/O hand-off stress test's stall: both tasks of
                    // a hand-off queued while we searched, we took one, the other waited).
                    exec.num_searching.fetch_add(1, Ordering::SeqCst);
                    self.searching.set(true);
                    self.took_io.set(false);
                }
                return;
            }
            // A producer already popped us and counted us as searching: take its wake-up.
        }
        bump_owned(&exec.counters[self.index].parks);
        let sleeper = &exec.sleepers[self.index];
        let mut notified = sleeper.notified.lock();
        while !*notified {
            sleeper.condvar.wait(&mut notified);
        }
        *notified = false;
        drop(notified);
        if exec.is_shutdown() {
            return;
        }
        // Woken by `notify_parked`, which removed us from `idle` and counted us searching.
        self.searching.set(true);
        self.took_io.set(false);
    }

    fn drain(&self) {
        drop(self.lifo.take());
        while let Some(task) = self.local.pop().or_else(|| self.spawned.pop()) {
            drop(task);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{ActorRef, Ctx, Handle, Message, Runtime};

    /// A node of a process tree: spawns `fanout` children per level down to `depth`, leaves
    /// record how many processes are alive, every node reports to its parent and exits.
    fn tree(ctx: Ctx<u64>, parent: ActorRef<u64>, depth: u32, peak: Arc<AtomicUsize>) -> TreeFut {
        Box::pin(async move {
            let mut ctx = ctx;
            if depth == 0 {
                let alive = ctx.handle().process_count();
                peak.fetch_max(alive, Ordering::Relaxed);
                let _ = parent.send(1).await;
                return;
            }
            for _ in 0..10 {
                let (me, peak) = (ctx.me(), peak.clone());
                ctx.handle().spawn(move |c| tree(c, me, depth - 1, peak));
            }
            let mut leaves = 0;
            for _ in 0..10 {
                match ctx.recv().await {
                    Some(Message::User(n)) => leaves += n,
                    _ => return,
                }
            }
            let _ = parent.send(leaves).await;
        })
    }

    type TreeFut = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

    /// Where the executor's queued tasks are, for a stalled test's message.
    fn queues_snapshot(exec: &super::Executor) -> String {
        format!(
            "idle {:?}, searching {}, injector {}, io injector {}, locals {:?}, spawn stacks {:?}",
            exec.idle.lock(),
            exec.num_searching.load(Ordering::SeqCst),
            exec.injector.len(),
            exec.io_injector.len(),
            exec.stealers.iter().map(|s| s.len()).collect::<Vec<_>>(),
            exec.spawn_stealers
                .iter()
                .map(|s| s.len())
                .collect::<Vec<_>>(),
        )
    }

    /// Waits (yielding) until every worker of `handle`'s executor is parked.
    fn until_all_parked(handle: &Handle) {
        let exec = &handle.shared.exec;
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while exec.num_idle.load(Ordering::SeqCst) < exec.num_workers() {
            assert!(std::time::Instant::now() < give_up, "workers never parked");
            std::thread::yield_now();
        }
    }

    /// The I/O hand-off must not lose a wake-up: `workers` tasks woken in one hand-off (as
    /// the driver thread wakes them for ready sockets) must all run *at the same time*, one
    /// per worker. Each round wakes all of them from a non-worker thread inside
    /// `handing_off_io`; each, once running, blocks its worker until all have started. Half
    /// the rounds start with every worker parked (the hand-off's own wake path), half while
    /// workers may still be searching (the producer-versus-searcher race). If a worker woken
    /// for the first task did not wake another for the rest (its "only if more work is
    /// queued" check wrong, or its fence missing), a round stalls and the test fails. So it
    /// does if a searcher whose park re-check finds the hand-off takes its task as a plain
    /// worker (`park`): that stalled about 1 run in 30 under load with the I/O hand-off and
    /// 1 in 60 in the executor before it (a port of this test with plain sends). With two
    /// tasks no batch steal moves one into a local queue (half of two is the one popped), so
    /// no steal in flight can hide a task from a parking worker.
    fn io_hand_off_rounds(workers: usize, rounds: u64) {
        let rt = Runtime::builder().workers(workers).build().unwrap();
        let tasks = workers as u64;
        let started = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let diag = Arc::new(parking_lot::Mutex::new(String::new()));
        let actors: Vec<ActorRef<u64>> = (0..tasks)
            .map(|_| {
                let (started, stalled, done_tx) =
                    (started.clone(), stalled.clone(), done_tx.clone());
                let (diag, handle) = (diag.clone(), rt.handle());
                rt.spawn(move |mut ctx: Ctx<u64>| async move {
                    while let Some(Message::User(round)) = ctx.recv().await {
                        started.fetch_add(1, Ordering::SeqCst);
                        // Block this worker until every task of the round runs (each on a
                        // worker of its own).
                        let give_up = std::time::Instant::now() + Duration::from_secs(20);
                        while started.load(Ordering::SeqCst) < tasks * (round + 1) {
                            if std::time::Instant::now() > give_up {
                                *diag.lock() = queues_snapshot(&handle.shared.exec);
                                stalled.store(true, Ordering::SeqCst);
                                break;
                            }
                            std::thread::yield_now();
                        }
                        let _ = done_tx.send(round);
                    }
                })
            })
            .collect();
        for round in 0..rounds {
            if round % 2 == 0 {
                until_all_parked(&rt.handle());
            }
            super::handing_off_io(|| {
                for actor in &actors {
                    actor.try_send(round).unwrap();
                }
            });
            for _ in 0..tasks {
                let done = done_rx.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(done, round);
            }
            assert!(
                !stalled.load(Ordering::SeqCst),
                "round {round}: the tasks of one hand-off did not all run at once: {}",
                diag.lock()
            );
        }
        rt.shutdown();
    }

    /// A stream of I/O hand-offs must not starve a process woken from outside through the
    /// other injector. Two processes keep the I/O injector non-empty forever: each, when it
    /// runs, has a non-worker thread wake the other inside `handing_off_io` (so there is
    /// always one of them in that injector when the worker looks). Each of 100 messages to a
    /// witness, sent from the test thread, must still be answered. If the worker always
    /// tried the I/O injector first, the witness would never run.
    #[test]
    fn a_stream_of_io_hand_offs_does_not_starve_the_other_injector() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (peer_tx, peer_rx) = std::sync::mpsc::channel::<ActorRef<u64>>();
        let bouncer = |stop: Arc<AtomicBool>, peer: std::sync::mpsc::Receiver<ActorRef<u64>>| {
            move |mut ctx: Ctx<u64>| async move {
                let Ok(peer) = peer.recv() else { return };
                while let Some(Message::User(n)) = ctx.recv().await {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let peer = peer.clone();
                    std::thread::spawn(move || super::handing_off_io(|| peer.try_send(n + 1)))
                        .join()
                        .unwrap()
                        .unwrap();
                }
            }
        };
        let (b_tx, b_rx) = std::sync::mpsc::channel::<ActorRef<u64>>();
        let a = rt.spawn(bouncer(stop.clone(), b_rx));
        let b = rt.spawn(bouncer(stop.clone(), peer_rx));
        b_tx.send(b.clone()).unwrap();
        peer_tx.send(a.clone()).unwrap();
        a.try_send(0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let witness = rt.spawn(move |mut ctx: Ctx<u32>| async move {
            while let Some(Message::User(i)) = ctx.recv().await {
                let _ = tx.send(i);
            }
        });
        for i in 0..100 {
            witness.try_send(i).unwrap();
            let answered = rx.recv_timeout(Duration::from_secs(30));
            if answered != Ok(i) {
                stop.store(true, Ordering::Relaxed);
                panic!("message {i} to the witness: {answered:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        rt.shutdown();
    }

    #[test]
    fn two_tasks_in_one_io_hand_off_run_on_both_workers() {
        io_hand_off_rounds(2, 2_000);
    }

    #[test]
    fn four_tasks_in_one_io_hand_off_run_on_four_workers() {
        io_hand_off_rounds(4, 1_000);
    }

    fn run_tree(handle: &Handle, depth: u32) -> (u64, usize) {
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let root_peak = peak.clone();
        handle.spawn(move |mut ctx: Ctx<u64>| async move {
            let me = ctx.me();
            ctx.handle().spawn(move |c| tree(c, me, depth, root_peak));
            if let Some(Message::User(leaves)) = ctx.recv().await {
                let _ = tx.send(leaves);
            }
        });
        let leaves = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        (leaves, peak.load(Ordering::Relaxed))
    }

    /// Spawns go on a LIFO spawn stack: a tree runs depth first, so few processes are alive
    /// at once: about depth x fan-out (~50), plus the subtrees opened by the oldest-first
    /// pick every OLDEST_SPAWN_INTERVAL ticks (~320 measured). Breadth first: a whole level,
    /// 10,000.
    #[test]
    fn a_process_tree_runs_depth_first_on_one_worker() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let (leaves, peak) = run_tree(&rt.handle(), 4);
        assert_eq!(leaves, 10_000);
        assert!(
            peak <= 1_000,
            "{peak} processes alive at once: not depth first"
        );
        rt.shutdown();
    }

    /// With two workers the tree is split by stealing (oldest spawn first) and still
    /// completes with every leaf counted.
    #[test]
    fn a_process_tree_completes_on_two_workers() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let (leaves, _) = run_tree(&rt.handle(), 4);
        assert_eq!(leaves, 10_000);
        rt.shutdown();
    }

    /// Every process spawns two more (depth first, the stack grows by one per run) until
    /// 50,000 have been spawned; the first process spawned sits at the bottom of the spawn
    /// stack and must run long before the storm is over (OLDEST_SPAWN_INTERVAL). Without
    /// the interval it runs last, after all 50,000.
    #[test]
    fn a_spawn_storm_does_not_starve_the_oldest_spawn() {
        const STORM: usize = 50_000;
        fn storm(ctx: Ctx<()>, spawned: Arc<AtomicUsize>) -> TreeFut {
            Box::pin(async move {
                for _ in 0..2 {
                    if spawned.fetch_add(1, Ordering::Relaxed) >= STORM {
                        return;
                    }
                    let spawned = spawned.clone();
                    ctx.handle().spawn(move |c| storm(c, spawned));
                }
            })
        }
        let rt = Runtime::builder().workers(1).build().unwrap();
        let spawned = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let witness_count = spawned.clone();
        rt.spawn(move |ctx: Ctx<()>| async move {
            // The witness first (the bottom of the stack), then the storm on top of it.
            ctx.handle().spawn(move |_c: Ctx<()>| async move {
                let _ = tx.send(witness_count.load(Ordering::Relaxed));
            });
            ctx.handle().spawn(move |c| storm(c, spawned));
        });
        let seen = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(
            seen < 5_000,
            "the oldest spawn ran only after {seen} newer spawns"
        );
        rt.shutdown();
    }

    /// A chain of processes, each spawning the next, keeps the spawn stack non-empty
    /// forever; a process that keeps waking itself (so it lands in the FIFO queue once it
    /// has used the LIFO slot MAX_LIFO_POLLS_PER_TICK times) must still get to run:
    /// FIFO_BEFORE_SPAWNS_INTERVAL. Without it this test hangs.
    #[test]
    fn a_spawn_chain_does_not_starve_a_ready_process() {
        fn chain(ctx: Ctx<()>, stop: Arc<AtomicBool>) -> TreeFut {
            Box::pin(async move {
                if !stop.load(Ordering::Relaxed) {
                    ctx.handle().spawn(move |c| chain(c, stop));
                }
            })
        }
        let rt = Runtime::builder().workers(1).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let chain_stop = stop.clone();
        rt.spawn(move |mut ctx: Ctx<u32>| async move {
            let me = ctx.me();
            ctx.handle().spawn(move |c| chain(c, chain_stop));
            me.try_send(0).unwrap();
            while let Some(Message::User(n)) = ctx.recv().await {
                if n == 1_000 {
                    stop.store(true, Ordering::Relaxed);
                    let _ = tx.send(n);
                    return;
                }
                me.try_send(n + 1).unwrap();
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(1_000));
        rt.shutdown();
    }
}

/// Loom models of the I/O hand-off rule (`stop_searching` with `took_io`) against the I/O
/// driver thread (`schedule` + `notify_parked`) and workers going to park (`park`). The
/// executor runs on crossbeam and parking_lot, which loom cannot instrument, so this is a
/// step-for-step replica of those functions over loom's primitives, with the I/O injector
/// reduced to a count of queued tasks; each step names the function it stands for.
///
/// The scene: two workers, the driver thread pushes two tasks (notifying after each), and a
/// worker that takes a task runs it for good (it looks at no queue again, like the stress
/// test's tasks, which wait for each other). Both tasks must be taken, so a worker sleeping
/// while a task is queued is a lost wake-up: loom reports it as a deadlock. Once both are
/// taken the last taker shuts down and wakes everyone, so a worker idle for want of work
/// is not one.
///
/// Each of these makes a model fail: no fence in `stop_searching` (the driver sees a
/// searcher and wakes nobody, the searcher misses the task); no `has_work` re-check there (a
/// searcher that took one task never wakes anyone for the other); a searcher whose park
/// re-check finds work leaving the searching state (the stress test's stall: the driver
/// counted on it, it takes one task as a plain worker and nobody wakes for the other).
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    const TASKS: usize = 2;

    struct Sleeper {
        notified: Mutex<bool>,
        condvar: Condvar,
    }

    struct Model {
        /// Tasks in the I/O injector.
        io_queued: AtomicUsize,
        /// Tasks taken (each by a worker that then runs it for good).
        taken: AtomicUsize,
        idle: Mutex<Vec<usize>>,
        num_idle: AtomicUsize,
        num_searching: AtomicUsize,
        shutdown: AtomicBool,
        sleepers: [Sleeper; 2],
    }

    /// Where a worker starts.
    #[derive(Clone, Copy)]
    enum Start {
        /// Searching (counted in `num_searching`).
        Searching,
        /// Parked: in `idle`, asleep on its condvar.
        Parked,
        /// Busy with earlier work, neither searching nor idle.
        Busy,
    }

    impl Model {
        fn new(starts: [Start; 2]) -> Self {
            let sleeper = || Sleeper {
                notified: Mutex::new(false),
                condvar: Condvar::new(),
            };
            let parked: Vec<usize> = (0..2)
                .filter(|&i| matches!(starts[i], Start::Parked))
                .collect();
            let searching = starts
                .iter()
                .filter(|s| matches!(s, Start::Searching))
                .count();
            Model {
                io_queued: AtomicUsize::new(0),
                taken: AtomicUsize::new(0),
                num_idle: AtomicUsize::new(parked.len()),
                idle: Mutex::new(parked),
                num_searching: AtomicUsize::new(searching),
                shutdown: AtomicBool::new(false),
                sleepers: [sleeper(), sleeper()],
            }
        }

        /// `Executor::has_work`.
        fn has_work(&self) -> bool {
            self.io_queued.load(SeqCst) != 0
        }

        /// A steal from the I/O injector.
        fn try_take(&self) -> bool {
            let mut queued = self.io_queued.load(SeqCst);
            while queued != 0 {
                match self
                    .io_queued
                    .compare_exchange(queued, queued - 1, SeqCst, SeqCst)
                {
                    Ok(_) => return true,
                    Err(actual) => queued = actual,
                }
            }
            false
        }

        /// `Executor::unpark`.
        fn unpark(&self, index: usize) {
            *self.sleepers[index].notified.lock().unwrap() = true;
            self.sleepers[index].condvar.notify_one();
        }

        /// `Executor::notify_parked`.
        fn notify_parked(&self) {
            fence(SeqCst);
            if self.num_searching.load(SeqCst) != 0 || self.num_idle.load(SeqCst) == 0 {
                return;
            }
            let index = {
                let mut idle = self.idle.lock().unwrap();
                if self.num_searching.load(SeqCst) != 0 {
                    return;
                }
                let Some(index) = idle.pop() else { return };
                self.num_idle.fetch_sub(1, SeqCst);
                self.num_searching.fetch_add(1, SeqCst);
                index
            };
            self.unpark(index);
        }

        /// `WorkerCtx::stop_searching` after a task from the I/O injector.
        fn stop_searching_after_io_task(&self, searching: bool) {
            if searching && self.num_searching.fetch_sub(1, SeqCst) == 1 {
                fence(SeqCst);
                if !self.has_work() {
                    return;
                }
                self.notify_parked();
            }
        }

        /// The task a worker took runs for good; the last one shuts the model down
        /// (`Executor::shutdown`).
        fn run_for_good(&self) {
            if self.taken.fetch_add(1, SeqCst) + 1 == TASKS {
                self.shutdown.store(true, SeqCst);
                for index in 0..2 {
                    self.unpark(index);
                }
            }
        }

        /// `WorkerCtx::run_loop` with `next_task`/`search` reduced to one steal each turn
        /// and `park` in full.
        fn worker(&self, me: usize, start: Start) {
            let mut searching = matches!(start, Start::Searching);
            let mut asleep = matches!(start, Start::Parked);
            loop {
                if asleep {
                    let sleeper = &self.sleepers[me];
                    let mut notified = sleeper.notified.lock().unwrap();
                    while !*notified {
                        notified = sleeper.condvar.wait(notified).unwrap();
                    }
                    *notified = false;
                    drop(notified);
                    if self.shutdown.load(SeqCst) {
                        return;
                    }
                    // Woken by `notify_parked`, which counted us searching.
                    searching = true;
                    asleep = false;
                }
                if self.try_take() {
                    self.stop_searching_after_io_task(searching);
                    self.run_for_good();
                    return;
                }
                // `park`.
                {
                    let mut idle = self.idle.lock().unwrap();
                    idle.push(me);
                    self.num_idle.fetch_add(1, SeqCst);
                }
                let was_searching = searching;
                if searching {
                    searching = false;
                    self.num_searching.fetch_sub(1, SeqCst);
                }
                fence(SeqCst);
                if self.has_work() || self.shutdown.load(SeqCst) {
                    let mut idle = self.idle.lock().unwrap();
                    if let Some(pos) = idle.iter().position(|&i| i == me) {
                        idle.swap_remove(pos);
                        self.num_idle.fetch_sub(1, SeqCst);
                        drop(idle);
                        if self.shutdown.load(SeqCst) {
                            return;
                        }
                        if was_searching {
                            // Stays a searcher (see `WorkerCtx::park`).
                            self.num_searching.fetch_add(1, SeqCst);
                            searching = true;
                        }
                        continue;
                    }
                    // Popped by a producer already: take its wake-up.
                }
                asleep = true;
            }
        }
    }

    /// Runs the scene with the workers starting as `starts`.
    fn scene(starts: [Start; 2]) {
        loom::model(move || {
            let model = Arc::new(Model::new(starts));
            let driver = {
                let model = model.clone();
                thread::spawn(move || {
                    // `Executor::schedule` under `handing_off_io`: push, then notify.
                    for _ in 0..TASKS {
                        model.io_queued.fetch_add(1, SeqCst);
                        model.notify_parked();
                    }
                })
            };
            let other = {
                let model = model.clone();
                thread::spawn(move || model.worker(1, starts[1]))
            };
            model.worker(0, starts[0]);
            driver.join().unwrap();
            other.join().unwrap();
            assert_eq!(model.taken.load(SeqCst), TASKS);
        });
    }

    /// The stress test's stalled round: one worker searching when the hand-off comes, the
    /// other asleep.
    #[test]
    fn loom_io_hand_off_a_searcher_and_a_sleeper() {
        scene([Start::Searching, Start::Parked]);
    }

    /// One worker searching, the other finishing earlier work and then parking.
    #[test]
    fn loom_io_hand_off_a_searcher_and_a_busy_worker() {
        scene([Start::Searching, Start::Busy]);
    }

    /// Both asleep (the stress test's even rounds): the first task's wake-up must chain.
    #[test]
    fn loom_io_hand_off_two_sleepers() {
        scene([Start::Parked, Start::Parked]);
    }
}
