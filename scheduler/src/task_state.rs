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

use crate::sync::{AtomicU8, Ordering};

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

    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) == DONE
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
