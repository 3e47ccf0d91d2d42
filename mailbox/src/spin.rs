//! The mailbox's lock: a test-and-test-and-set spin lock that yields its thread when it has
//! spun for a while.
//!
//! Why not parking_lot's mutex: its unlock is an atomic compare-and-swap (it must look for
//! parked waiters), and a mailbox is locked three times per message delivered (the sender's
//! push, the receiver's pop, the receiver's check before it parks). Here unlock is a plain
//! release store, so a message costs three atomic read-modify-writes fewer. Measured on the
//! 2-vCPU machine (benches/cost.py and wall clock, see the commit that introduced it):
//! ping-pong 183 -> 142 ms per million round trips.
//!
//! Why spinning is acceptable: the lock guards a few queue operations and never user code
//! (no message destructor, no waker runs under it; see `mailbox`), so it is held for tens of
//! nanoseconds unless its holder is preempted. A waiter spins with exponential backoff for
//! about a microsecond ([`SPIN_ROUNDS`]), then calls `yield_now` between attempts, which
//! lets a preempted holder on the same CPU run; it never sleeps, and there is no fairness
//! guarantee (none is needed: waiting *senders* are queued FIFO by the mailbox itself, not
//! by this lock).
//!
//! Under `--cfg loom` the same code runs on loom's atomics and `yield_now`, and
//! `loom_spin_lock_excludes` checks mutual exclusion and the release/acquire hand-over.

// Under loom the mailbox locks loom's mutex; only the model below uses this lock.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(loom)]
use loom::thread::yield_now;
#[cfg(not(loom))]
use std::thread::yield_now;

/// Rounds of exponential backoff (1, 2, 4 .. 32 spin-loop hints, ~63 in all) before a
/// waiter starts yielding its thread.
const SPIN_ROUNDS: u32 = 6;

/// A raw spin-then-yield lock for `lock_api::Mutex`.
pub(crate) struct SpinYield(AtomicBool);

impl SpinYield {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        SpinYield(AtomicBool::new(false))
    }

    #[cold]
    fn lock_contended(&self) {
        let mut round = 0;
        loop {
            // Test before test-and-set: spin on a shared read, not on writes.
            if !self.0.load(Ordering::Relaxed) && self.try_acquire() {
                return;
            }
            if round < SPIN_ROUNDS {
                for _ in 0..(1u32 << round) {
                    std::hint::spin_loop();
                }
                round += 1;
            } else {
                yield_now();
            }
        }
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        self.0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock (for the loom model, which drives the raw lock directly).
    #[inline]
    pub(crate) fn acquire(&self) {
        if !self.try_acquire() {
            self.lock_contended();
        }
    }

    /// Releases the lock: a release store, no read-modify-write.
    #[inline]
    pub(crate) fn release(&self) {
        self.0.store(false, Ordering::Release);
    }
}

// SAFETY: `lock_api` requires that at most one holder exists between a successful `lock` or
// `try_lock` and the matching `unlock`. `acquire`/`try_acquire` succeed only by moving the
// flag false -> true with a compare-and-swap, so two callers cannot both succeed while it
// is true; only the holder calls `unlock` (lock_api's guard does, once), which stores
// false. Acquire on the swap and Release on the store order the previous holder's
// accesses to the protected data before the next holder's. (Loom: `loom_spin_lock_excludes`.)
#[cfg(not(loom))]
unsafe impl lock_api::RawMutex for SpinYield {
    #[allow(clippy::declare_interior_mutable_const)] // lock_api's required initialiser
    const INIT: Self = SpinYield(AtomicBool::new(false));
    type GuardMarker = lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        self.acquire();
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.try_acquire()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.release();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::SpinYield;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads increment a counter under the lock: loom's `UnsafeCell` panics on any
    /// concurrent or unordered access, so this checks exclusion and the hand-over.
    #[test]
    fn loom_spin_lock_excludes() {
        loom::model(|| {
            let lock = Arc::new((SpinYield::new(), UnsafeCell::new(0u32)));
            let other = {
                let lock = lock.clone();
                thread::spawn(move || {
                    lock.0.acquire();
                    // SAFETY: the lock is held.
                    lock.1.with_mut(|n| unsafe { *n += 1 });
                    lock.0.release();
                })
            };
            lock.0.acquire();
            // SAFETY: the lock is held.
            lock.1.with_mut(|n| unsafe { *n += 1 });
            lock.0.release();
            other.join().unwrap();
            lock.0.acquire();
            // SAFETY: the lock is held.
            assert_eq!(lock.1.with(|n| unsafe { *n }), 2);
            lock.0.release();
        });
    }
}
