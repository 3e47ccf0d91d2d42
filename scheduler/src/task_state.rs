//! The scheduling state of one process: whether it is idle, queued, running, or done.
//!
//! Protocol (each transition is one atomic operation):
//!
//! ```text
//!            wake                run starts             run ends (Pending)
//!   IDLE ───────────▶ SCHEDULED ───────────▶ RUNNING ───────────────────▶ IDLE
//!                                             │  ▲ │
//!                                       wake  │  │ │ run ends, was notified
//!                                             ▼  │ ▼
//!                                          NOTIFIED ──────────▶ SCHEDULED (re-queued)
//!   any state ── run ends (Ready) / forced stop ──▶ DONE   (wakes are ignored from then on)
//! ```
//!
//! Invariants: a process is in a run queue at most once (only `IDLE → SCHEDULED` and
//! `NOTIFIED → SCHEDULED` enqueue it); a wake that arrives while it runs is never lost
//! (`RUNNING → NOTIFIED` makes the runner re-queue it); only the thread that moved the
//! state to `RUNNING` polls the body, so the body is never polled concurrently.
//!
//! [`RunCell`] turns that last invariant into the only way to reach the body: it pairs the
//! state with the body in an `UnsafeCell`, and hands out access only through a [`Running`]
//! (the thread that won `SCHEDULED → RUNNING`) or a [`Stopped`] (the thread that moved a
//! process that was not running to `DONE`). No lock is taken to poll a process.

// The one `unsafe` of the run path: the body cell, whose exclusivity the state guarantees.
#![allow(unsafe_code)]

use crate::sync::{AtomicU8, Ordering, UnsafeCell};

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

pub(crate) struct TaskState(AtomicU8);

impl TaskState {
    /// A new process starts scheduled: its creator enqueues it once.
    pub(crate) fn new_scheduled() -> Self {
        TaskState(AtomicU8::new(SCHEDULED))
    }

    /// Records a wake-up. Returns true when the caller must enqueue the process.
    pub(crate) fn wake(&self) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let next = match cur {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                SCHEDULED | NOTIFIED | DONE => return false,
                actual => panic!("inconsistent task state; actual = {actual}"),
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next == SCHEDULED,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Claims the right to run the process. Returns false if it already finished (a stale
    /// queue entry after a forced stop).
    pub(crate) fn start_run(&self) -> bool {
        match self
            .0
            .compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(DONE) => false,
            Err(actual) => panic!("inconsistent task state at run start; actual = {actual}"),
        }
    }

    /// Ends a run whose body returned `Pending`. Returns true when a wake arrived during the
    /// run, in which case the state is `SCHEDULED` again and the caller must re-enqueue.
    pub(crate) fn end_run(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(NOTIFIED) => {
                self.0.store(SCHEDULED, Ordering::Release);
                true
            }
            Err(actual) => panic!("inconsistent task state at run end; actual = {actual}"),
        }
    }

    /// Marks the process finished; later wakes are ignored.
    pub(crate) fn complete(&self) {
        self.0.store(DONE, Ordering::Release);
    }

    /// Moves a process that is not running to `DONE`. Returns false if it is running (its
    /// runner owns it) or already done.
    fn stop(&self) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            match cur {
                IDLE | SCHEDULED => {}
                RUNNING | NOTIFIED | DONE => return false,
                actual => panic!("inconsistent task state at stop; actual = {actual}"),
            }
            match self
                .0
                .compare_exchange_weak(cur, DONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) == DONE
    }
}

/// A body that only the thread holding the run may touch (see the module docs).
///
/// `T` may be unsized (a `dyn` body at the end of a process's allocation).
pub(crate) struct RunCell<T: ?Sized> {
    state: TaskState,
    body: UnsafeCell<T>,
}

// SAFETY: `body` is reached only through `Running` or `Stopped`. A `Running` exists only on
// the thread whose `start_run` moved the state `SCHEDULED → RUNNING`, and until its
// `end`/`complete`; no other `start_run` can succeed meanwhile (the state is `RUNNING` or
// `NOTIFIED`, never `SCHEDULED`), and `stop` refuses those states. A `Stopped` exists only
// on the thread whose `stop` moved the state to `DONE`, from which nothing starts a run.
// So at most one thread accesses `body` at a time, and the state's AcqRel transitions
// order one holder's accesses before the next's. `T: Send` because the body moves between
// the threads that run it. (Loom checks this: `loom_run_cell_is_exclusive`.)
unsafe impl<T: ?Sized + Send> Sync for RunCell<T> {}

impl<T> RunCell<T> {
    /// A body whose process starts `SCHEDULED` (its creator enqueues it once).
    pub(crate) fn new(body: T) -> Self {
        RunCell {
            state: TaskState::new_scheduled(),
            body: UnsafeCell::new(body),
        }
    }
}

impl<T: ?Sized> RunCell<T> {
    pub(crate) fn state(&self) -> &TaskState {
        &self.state
    }

    /// Claims the run (`SCHEDULED → RUNNING`); `None` if the process already finished.
    #[inline]
    pub(crate) fn start(&self) -> Option<Running<'_, T>> {
        self.state.start_run().then_some(Running { cell: self })
    }

    /// Claims a process that is not running, for good (`→ DONE`); `None` if it is running
    /// or done already.
    pub(crate) fn stop(&self) -> Option<Stopped<'_, T>> {
        self.state.stop().then_some(Stopped { cell: self })
    }
}

/// Held by the one thread running the process; gives it the body.
pub(crate) struct Running<'a, T: ?Sized> {
    cell: &'a RunCell<T>,
}

impl<T: ?Sized> Running<'_, T> {
    /// The body, for as long as this run lasts.
    #[inline]
    pub(crate) fn with_body<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: this thread holds the run (see `RunCell`'s `Sync`), and the `&mut self`
        // borrow keeps the reference from outliving it or being taken twice.
        self.cell.body.with_mut(|body| f(unsafe { &mut *body }))
    }

    /// Ends a run whose body is still pending. True: a wake came during the run and the
    /// caller must enqueue the process again.
    #[inline]
    pub(crate) fn end(self) -> bool {
        self.cell.state.end_run()
    }

    /// Ends the process's last run: wakes are ignored from now on.
    pub(crate) fn complete(self) {
        self.cell.state.complete();
    }
}

/// Held by the thread that stopped a process that was not running; gives it the body.
pub(crate) struct Stopped<'a, T: ?Sized> {
    cell: &'a RunCell<T>,
}

impl<T: ?Sized> Stopped<'_, T> {
    pub(crate) fn with_body<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: `stop` moved the state to `DONE` from a state without a runner, and
        // nothing leaves `DONE`, so this thread is the body's only user from now on.
        self.cell.body.with_mut(|body| f(unsafe { &mut *body }))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wake_while_running_requeues_exactly_once() {
        let s = TaskState::new_scheduled();
        assert!(s.start_run());
        assert!(!s.wake(), "running: no enqueue");
        assert!(!s.wake(), "already notified: no enqueue");
        assert!(s.end_run(), "notified during run: re-enqueue");
        assert!(!s.wake(), "already scheduled");
        assert!(s.start_run());
        assert!(!s.end_run());
        assert!(s.wake(), "idle: enqueue");
    }

    #[test]
    fn run_cell_gives_the_body_to_one_runner_or_one_stopper() {
        let cell = RunCell::new(0u32);
        let mut run = cell.start().expect("created scheduled");
        run.with_body(|b| *b += 1);
        assert!(
            cell.stop().is_none(),
            "a running process cannot be stopped from outside"
        );
        assert!(!cell.state().wake(), "running: the runner re-queues");
        assert!(run.end(), "woken during the run");
        let mut stopped = cell.stop().expect("scheduled, not running: stoppable");
        assert_eq!(stopped.with_body(|b| *b), 1);
        assert!(cell.start().is_none(), "a stopped process never runs again");
        assert!(cell.stop().is_none(), "and is stopped once");
        assert!(!cell.state().wake());
    }

    #[test]
    fn wake_after_complete_is_ignored() {
        let s = TaskState::new_scheduled();
        assert!(s.start_run());
        s.complete();
        assert!(!s.wake());
        assert!(s.is_done());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// Two concurrent wakers and a runner: the process is enqueued at most once at a time and
    /// the last wake is always followed by a run (never lost).
    #[test]
    fn loom_concurrent_wakes_enqueue_once_and_are_never_lost() {
        loom::model(|| {
            let state = Arc::new(TaskState::new_scheduled());
            let queued = Arc::new(AtomicUsize::new(1)); // created scheduled
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let (state, queued) = (state.clone(), queued.clone());
                    thread::spawn(move || {
                        if state.wake() {
                            assert_eq!(queued.fetch_add(1, Ordering::SeqCst), 0, "double enqueue");
                        }
                    })
                })
                .collect();
            // The runner's first run races the two wakes.
            assert_eq!(queued.fetch_sub(1, Ordering::SeqCst), 1);
            assert!(state.start_run());
            if state.end_run() {
                assert_eq!(queued.fetch_add(1, Ordering::SeqCst), 0, "double enqueue");
            }
            let mut runs = 1;
            for w in wakers {
                w.join().unwrap();
            }
            // Whatever was enqueued gets run; a wake is never left without a run after it.
            while queued.load(Ordering::SeqCst) == 1 {
                queued.store(0, Ordering::SeqCst);
                assert!(state.start_run());
                assert!(!state.end_run(), "no wakers left");
                runs += 1;
            }
            assert!(runs >= 1);
            // Every wake happened before the final run ended: the state is idle.
            assert!(state.wake(), "idle at the end, so a new wake enqueues");
        });
    }

    /// A runner (two runs), a waker and a stopper race on a `RunCell`: loom's `UnsafeCell`
    /// panics if two of them ever touch the body at once, and every body access happens
    /// either in a run or after the stop, never both for the same moment.
    #[test]
    fn loom_run_cell_is_exclusive() {
        loom::model(|| {
            let cell = Arc::new(RunCell::new(0u32));
            let waker = {
                let cell = cell.clone();
                thread::spawn(move || cell.state().wake())
            };
            let stopper = {
                let cell = cell.clone();
                thread::spawn(move || match cell.stop() {
                    Some(mut stopped) => stopped.with_body(|b| {
                        *b += 100;
                        true
                    }),
                    None => false,
                })
            };
            let mut runs = 0;
            // The creator's run, then one more if a wake asked for it.
            let mut queued = true;
            while queued {
                queued = false;
                if let Some(mut run) = cell.start() {
                    run.with_body(|b| *b += 1);
                    runs += 1;
                    queued = run.end();
                }
            }
            let woke = waker.join().unwrap();
            let stopped = stopper.join().unwrap();
            if woke && !stopped {
                if let Some(mut run) = cell.start() {
                    run.with_body(|b| *b += 1);
                    runs += 1;
                    assert!(!run.end());
                }
            }
            let total = match cell.stop() {
                Some(mut s) => s.with_body(|b| *b),
                None => {
                    assert!(stopped, "only a stopped cell refuses a second stop here");
                    100 + runs
                }
            };
            assert_eq!(total, runs + if stopped { 100 } else { 0 });
        });
    }

    #[test]
    fn loom_wake_after_complete_is_ignored() {
        loom::model(|| {
            let state = Arc::new(TaskState::new_scheduled());
            let s2 = state.clone();
            let t = thread::spawn(move || s2.wake());
            assert!(state.start_run());
            state.complete();
            let enqueued = t.join().unwrap();
            // A wake before completion could only mark NOTIFIED (no enqueue): never enqueued.
            assert!(!enqueued);
            assert!(!state.wake());
        });
    }
}
