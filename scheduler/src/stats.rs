//! Counters of the scheduler's work, read by [`crate::Handle::stats`] (metrics, status pages).
//!
//! Recording must not slow the hot paths (a poll, a spawn, an exit happen millions of times a
//! second in the benchmarks), so every worker owns one cache-line-aligned block of counters
//! that only its own thread writes, with a plain relaxed load and store (no read-modify-write,
//! no shared cache line). Readers on other threads sum the blocks; a reader may see a count a
//! few increments old, never a torn or lost one. Work done on threads that are not workers
//! (`block_on`, the driver, `main`) goes to one shared block with `fetch_add`.
//!
//! `Full` answers are rare by nature (a refused send), so they use one shared counter.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::exit::ExitReason;

/// One thread's counters. Aligned to two cache lines so neighbouring workers' blocks never
/// share one (adjacent-line prefetch pulls pairs of 64-byte lines).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) polls: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) spawns: AtomicU64,
    /// Exits by [`ExitKind`] index.
    pub(crate) exits: [AtomicU64; ExitKind::COUNT],
}

/// Adds one to a counter written only by the calling thread.
#[inline]
pub(crate) fn bump_owned(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Adds one to a counter any thread may write.
#[inline]
pub(crate) fn bump_shared(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn add_into(&self, out: &mut SchedulerStats) {
        out.polls += self.polls.load(Ordering::Relaxed);
        out.steals += self.steals.load(Ordering::Relaxed);
        out.parks += self.parks.load(Ordering::Relaxed);
        out.spawns += self.spawns.load(Ordering::Relaxed);
        for (total, count) in out.exits.iter_mut().zip(&self.exits) {
            *total += count.load(Ordering::Relaxed);
        }
    }
}

/// Sums blocks of counters into a snapshot (the gauges are filled in by the caller).
pub(crate) fn sum<'a>(blocks: impl IntoIterator<Item = &'a Counters>) -> SchedulerStats {
    let mut out = SchedulerStats::default();
    for block in blocks {
        block.add_into(&mut out);
    }
    out
}

/// How a process ended, as counted (a bounded label set: messages are not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// `Normal`.
    Normal,
    /// `Shutdown`.
    Shutdown,
    /// `Killed` (or `Kill`).
    Killed,
    /// `Panic(_)`.
    Panic,
    /// `Error(_)`.
    Error,
    /// Anything else (`NoConnection`, `NoProc`, `NameConflict`).
    Other,
}

impl ExitKind {
    /// How many kinds there are.
    pub const COUNT: usize = 6;
    /// Every kind, in index order.
    pub const ALL: [ExitKind; Self::COUNT] = [
        ExitKind::Normal,
        ExitKind::Shutdown,
        ExitKind::Killed,
        ExitKind::Panic,
        ExitKind::Error,
        ExitKind::Other,
    ];

    /// The kind of `reason`.
    pub fn of(reason: &ExitReason) -> ExitKind {
        match reason {
            ExitReason::Normal => ExitKind::Normal,
            ExitReason::Shutdown => ExitKind::Shutdown,
            ExitReason::Kill | ExitReason::Killed => ExitKind::Killed,
            ExitReason::Panic(_) => ExitKind::Panic,
            ExitReason::Error(_) => ExitKind::Error,
            _ => ExitKind::Other,
        }
    }

    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Normal => "normal",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Killed => "killed",
            ExitKind::Panic => "panic",
            ExitKind::Error => "error",
            ExitKind::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of the scheduler's counters ([`crate::Handle::stats`]). Counters only grow;
/// `processes` and `run_queue` are gauges read at snapshot time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Worker threads.
    pub workers: usize,
    /// Live processes.
    pub processes: usize,
    /// Processes queued to run (every worker's queues and the injector), not counting the
    /// one-task LIFO slots.
    pub run_queue: usize,
    /// Process turns run (one poll of a process body each).
    pub polls: u64,
    /// Tasks a worker took from another worker's queues or the injector while searching.
    pub steals: u64,
    /// Times a worker found nothing to do and went to sleep.
    pub parks: u64,
    /// Processes spawned.
    pub spawns: u64,
    /// Processes exited, by [`ExitKind`] index.
    pub exits: [u64; ExitKind::COUNT],
    /// Local `try_send`s answered `Full` (the receiver's mailbox had no room).
    pub full_refusals: u64,
}

impl SchedulerStats {
    /// Exits of one kind.
    pub fn exits_of(&self, kind: ExitKind) -> u64 {
        self.exits[kind.index()]
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::ExitKind;
    use crate::{Ctx, ExitReason, Message, Runtime};

    /// Spawns, polls and exits are counted, exits by reason.
    #[test]
    fn spawns_polls_and_exits_by_reason_are_counted() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let before = rt.stats();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10u32 {
            let tx = tx.clone();
            rt.spawn(move |_ctx: Ctx<()>| async move {
                let _ = tx.send(());
                if i < 3 {
                    Err::<(), _>(std::io::Error::other("boom"))
                } else {
                    Ok(())
                }
            });
        }
        for _ in 0..10 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        // The exit is counted just after the body returns: wait for the table to empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while rt.process_count() != before.processes && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let after = rt.stats();
        assert_eq!(after.spawns - before.spawns, 10);
        assert!(after.polls - before.polls >= 10);
        assert_eq!(
            after.exits_of(ExitKind::Normal) - before.exits_of(ExitKind::Normal),
            7
        );
        assert_eq!(
            after.exits_of(ExitKind::Error) - before.exits_of(ExitKind::Error),
            3
        );
        assert_eq!(after.workers, 2);
        rt.shutdown();
    }

    /// A `try_send` to a full mailbox is counted as a `Full` refusal.
    #[test]
    fn a_try_send_to_a_full_mailbox_is_counted() {
        let rt = Runtime::builder()
            .workers(1)
            .mailbox_capacity(1)
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = rt.spawn(move |mut ctx: Ctx<u32>| async move {
            // Never receives until told: the mailbox fills.
            let _ = rx;
            let _ = ctx.handle().sleep(Duration::from_secs(60)).await;
            while let Some(Message::User(_)) = ctx.recv().await {}
        });
        let before = rt.stats().full_refusals;
        stuck.try_send(1).unwrap();
        assert!(stuck.try_send(2).is_err());
        assert!(stuck.try_send(3).is_err());
        assert_eq!(rt.stats().full_refusals - before, 2);
        drop(tx);
        rt.exit(stuck.pid(), ExitReason::Kill);
        rt.shutdown();
    }
}
