//! The synchronization primitives the scheduler's lock-free parts use: std's, or loom's
//! under `--cfg loom` so the same code is model-checked (tokio's `src/loom` shim).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, Ordering};
