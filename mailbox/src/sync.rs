//! Synchronisation shim: the spin-then-yield lock of `spin` in normal builds, loom under
//! `--cfg loom`.
//!
//! Everything in this crate that takes part in cross-thread synchronisation goes through
//! this module, so the loom models in `tests/loom.rs` explore the real code (the pattern of
//! tokio's `src/loom/mod.rs`). Both backends expose the same tiny surface: a [`Mutex`]
//! whose `lock` returns the guard directly (no poisoning: a panic while the lock is held
//! cannot leave the inner state half-updated, because no user code runs under it).

#[cfg(not(loom))]
mod imp {
    use crate::spin::SpinYield;

    /// A mutex that cannot be poisoned, on the mailbox's spin-then-yield lock (see `spin`).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(lock_api::Mutex<SpinYield, T>);

    /// The guard returned by [`Mutex::lock`].
    pub(crate) type MutexGuard<'a, T> = lock_api::MutexGuard<'a, SpinYield, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(lock_api::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }
}

#[cfg(loom)]
mod imp {
    /// loom's mutex, with poisoning turned into a panic (a poisoned lock under loom means
    /// a model already panicked).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// The guard returned by [`Mutex::lock`].
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .expect("mailbox lock poisoned: a loom model panicked while holding it")
        }
    }
}

pub(crate) use imp::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicBool;
