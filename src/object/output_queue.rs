//! The output queue of one activation: which held output may leave, and when a failed commit
//! forces a re-activation. A pure state machine (no I/O, no storage, no clock): the
//! activation loop feeds it events and performs the steps it returns, so the rules below are
//! unit-tested here and the same machine serves any commit that completes asynchronously (a
//! local fsync today, a replicated log entry later).
//!
//! ## Inputs
//! - [`OutputQueue::handler_finished`]: a handler returned; `wrote` says whether it handed
//!   a write set to the committer, `held` is the output its gate captured. The returned
//!   [`CommitId`] names that write set.
//! - [`OutputQueue::commit_completed`]: the write set `id` is durable, or failed.
//!
//! ## Outputs ([`OutputQueue::next_step`])
//! - [`Step::Release`]: this handler's output may leave; steps come in handler order.
//! - [`Step::Drop`]: this output must never leave (its callers get `NoReply`).
//! - [`Step::Reactivate`]: every write set that was in flight at a failure has completed;
//!   the activation discards its pending writes and re-activates from what is durable.
//!
//! ## Invariants
//! 1. Output is released in the order its handlers finished, each only once its own write
//!    set and every earlier one are durable; a handler that wrote nothing waits only for
//!    the ones before it.
//! 2. After a failed commit, its output and the output of every later handler are dropped,
//!    never released, even if a later write set reports durable (a reply may depend on state
//!    the failed write set was to make durable).
//! 3. Output finished before the failed one is still released (its writes are durable).
//! 4. [`Step::Reactivate`] comes once per failure, after the last write set in flight has
//!    completed, so the new activation reads settled storage; while recovering the activation
//!    handles no message ([`OutputQueue::is_recovering`]).
//! 5. Completions may be reported in any order; only the order of handlers counts.

use std::collections::VecDeque;

/// Names one write set handed to the committer, in the order handlers finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CommitId(u64);

/// What the activation does next (see the module doc).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<H> {
    /// Send this output now.
    Release(H),
    /// Discard this output: its write set, or an earlier one, failed.
    Drop(H),
    /// Discard pending writes and re-activate from durable state.
    Reactivate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    InFlight,
    Durable,
    Failed,
}

/// One finished handler: its output and where its write set stands.
#[derive(Debug)]
struct Entry<H> {
    /// `None` for a handler that wrote nothing.
    commit: Option<CommitId>,
    outcome: Outcome,
    /// Taken when released or dropped.
    held: Option<H>,
}

impl<H> Entry<H> {
    /// Nothing left to wait for.
    fn settled(&self) -> bool {
        self.commit.is_none() || self.outcome != Outcome::InFlight
    }
}

/// Held output queued behind in-flight commits (see the module doc).
#[derive(Debug)]
pub(crate) struct OutputQueue<H> {
    next_commit: u64,
    /// Finished handlers, oldest first, until their output is released (or, while
    /// recovering, until their write set has completed).
    entries: VecDeque<Entry<H>>,
    /// A commit failed; `Reactivate` is due once every entry has settled.
    recovering: bool,
}

impl<H> Default for OutputQueue<H> {
    fn default() -> Self {
        OutputQueue {
            next_commit: 0,
            entries: VecDeque::new(),
            recovering: false,
        }
    }
}

impl<H> OutputQueue<H> {
    /// A handler returned with output `held`; `wrote` is whether its write set went to the
    /// committer. Returns the id to report to [`OutputQueue::commit_completed`].
    pub(crate) fn handler_finished(&mut self, wrote: bool, held: H) -> Option<CommitId> {
        debug_assert!(!self.recovering, "no handler runs while recovering");
        let commit = wrote.then(|| {
            let id = CommitId(self.next_commit);
            self.next_commit += 1;
            id
        });
        self.entries.push_back(Entry {
            commit,
            outcome: Outcome::InFlight,
            held: Some(held),
        });
        commit
    }

    /// The write set `id` completed: `durable` if it is on disk, false if it failed.
    /// An id this queue does not hold (already settled) is ignored.
    pub(crate) fn commit_completed(&mut self, id: CommitId, durable: bool) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.commit == Some(id)) {
            if entry.outcome == Outcome::InFlight {
                entry.outcome = if durable {
                    Outcome::Durable
                } else {
                    Outcome::Failed
                };
            }
        }
    }

    /// The next step to perform, or `None` until another input arrives. Call it until it
    /// returns `None` after every input.
    pub(crate) fn next_step(&mut self) -> Option<Step<H>> {
        if !self.recovering {
            let front = self.entries.front()?;
            match (front.commit, front.outcome) {
                (None, _) | (Some(_), Outcome::Durable) => {
                    let entry = self.entries.pop_front().expect("front exists");
                    return entry.held.map(Step::Release);
                }
                (Some(_), Outcome::InFlight) => return None,
                (Some(_), Outcome::Failed) => self.recovering = true,
            }
        }
        // Recovering: drop every output still held, then wait for the write sets in flight.
        if let Some(held) = self.entries.iter_mut().find_map(|e| e.held.take()) {
            return Some(Step::Drop(held));
        }
        while self.entries.front().is_some_and(Entry::settled) {
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            self.recovering = false;
            return Some(Step::Reactivate);
        }
        None
    }

    /// The oldest write set still in flight: the one whose completion to wait for next.
    pub(crate) fn awaited(&self) -> Option<CommitId> {
        self.entries
            .iter()
            .find(|e| !e.settled())
            .and_then(|e| e.commit)
    }

    /// A commit failed and the activation waits for the rest to complete before it
    /// re-activates; it takes no message meanwhile.
    pub(crate) fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Finished handlers whose output is still held (or whose commit is in flight).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing held and nothing in flight (eviction may proceed).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(q: &mut OutputQueue<&'static str>) -> Vec<Step<&'static str>> {
        std::iter::from_fn(|| q.next_step()).collect()
    }

    #[test]
    fn output_is_released_in_handler_order_as_each_commit_becomes_durable() {
        let mut q = OutputQueue::default();
        let a = q.handler_finished(true, "a").unwrap();
        let b = q.handler_finished(true, "b").unwrap();
        let c = q.handler_finished(true, "c").unwrap();
        assert_eq!(steps(&mut q), vec![]);
        assert_eq!(q.awaited(), Some(a));
        q.commit_completed(a, true);
        assert_eq!(steps(&mut q), vec![Step::Release("a")]);
        assert_eq!(q.awaited(), Some(b));
        q.commit_completed(b, true);
        q.commit_completed(c, true);
        assert_eq!(steps(&mut q), vec![Step::Release("b"), Step::Release("c")]);
        assert!(q.is_empty());
        assert_eq!(q.awaited(), None);
    }

    #[test]
    fn completions_in_any_order_release_in_handler_order() {
        // Every order in which four commits may report back.
        let orders = permutations(&[0, 1, 2, 3]);
        assert_eq!(orders.len(), 24);
        for order in orders {
            let mut q = OutputQueue::default();
            let names = ["a", "b", "c", "d"];
            let ids: Vec<_> = names
                .iter()
                .map(|n| q.handler_finished(true, *n).unwrap())
                .collect();
            let mut released = Vec::new();
            for &i in &order {
                q.commit_completed(ids[i], true);
                for step in steps(&mut q) {
                    match step {
                        Step::Release(h) => released.push(h),
                        other => panic!("order {order:?}: unexpected {other:?}"),
                    }
                }
                // Released so far: exactly the prefix whose commits all completed.
                let done = (0..4).take_while(|j| order[..=pos(&order, i)].contains(j));
                assert_eq!(released, done.map(|j| names[j]).collect::<Vec<_>>());
            }
            assert_eq!(released, names);
        }
    }

    #[test]
    fn a_handler_without_writes_releases_after_everything_before_it() {
        let mut q = OutputQueue::default();
        // Nothing before it: released at once.
        assert_eq!(q.handler_finished(false, "read"), None);
        assert_eq!(steps(&mut q), vec![Step::Release("read")]);
        // Behind a commit: waits for it.
        let w = q.handler_finished(true, "write").unwrap();
        assert_eq!(q.handler_finished(false, "read after write"), None);
        assert_eq!(steps(&mut q), vec![]);
        assert_eq!(q.awaited(), Some(w));
        q.commit_completed(w, true);
        assert_eq!(
            steps(&mut q),
            vec![Step::Release("write"), Step::Release("read after write")]
        );
    }

    #[test]
    fn a_failed_commit_drops_its_output_and_all_later_output_then_reactivates() {
        let mut q = OutputQueue::default();
        let a = q.handler_finished(true, "a").unwrap();
        let b = q.handler_finished(true, "b").unwrap();
        assert_eq!(q.handler_finished(false, "read"), None);
        let c = q.handler_finished(true, "c").unwrap();
        q.commit_completed(a, false);
        assert_eq!(
            steps(&mut q),
            vec![
                Step::Drop("a"),
                Step::Drop("b"),
                Step::Drop("read"),
                Step::Drop("c")
            ]
        );
        assert!(q.is_recovering());
        // Re-activation waits for the write sets still in flight.
        assert_eq!(q.awaited(), Some(b));
        q.commit_completed(b, false);
        assert_eq!(steps(&mut q), vec![]);
        assert_eq!(q.awaited(), Some(c));
        // Even a later set that reports durable does not release its output.
        q.commit_completed(c, true);
        assert_eq!(steps(&mut q), vec![Step::Reactivate]);
        assert!(!q.is_recovering());
        assert!(q.is_empty());
        assert_eq!(steps(&mut q), vec![]);
    }

    #[test]
    fn output_finished_before_a_failed_commit_is_still_released() {
        let mut q = OutputQueue::default();
        let a = q.handler_finished(true, "a").unwrap();
        let b = q.handler_finished(true, "b").unwrap();
        // The later one fails first; the earlier one is still in flight.
        q.commit_completed(b, false);
        assert_eq!(steps(&mut q), vec![]);
        assert!(!q.is_recovering());
        q.commit_completed(a, true);
        assert_eq!(
            steps(&mut q),
            vec![Step::Release("a"), Step::Drop("b"), Step::Reactivate]
        );
    }

    #[test]
    fn the_queue_serves_new_handlers_after_a_reactivation() {
        let mut q = OutputQueue::default();
        let a = q.handler_finished(true, "a").unwrap();
        q.commit_completed(a, false);
        assert_eq!(steps(&mut q), vec![Step::Drop("a"), Step::Reactivate]);
        let b = q.handler_finished(true, "b").unwrap();
        assert_ne!(a, b, "ids are never reused");
        // A stale report about the failed set changes nothing.
        q.commit_completed(a, true);
        assert_eq!(steps(&mut q), vec![]);
        q.commit_completed(b, true);
        assert_eq!(steps(&mut q), vec![Step::Release("b")]);
    }

    fn pos(order: &[usize], i: usize) -> usize {
        order.iter().position(|&x| x == i).unwrap()
    }

    fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for (i, &first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first);
                out.push(p);
            }
        }
        out
    }
}
