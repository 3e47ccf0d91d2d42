//! Commit routes: a keyspace whose commits go somewhere other than the node's group-commit
//! writer — for a replicated object, to its shard (`cairn-shard` proposes the set; the shard
//! applies it to every replica's store, this one included).
//!
//! [`Keyspace::route_commits`] installs a [`CommitRoute`] on a keyspace (shared by all its
//! handles). From then on [`Keyspace::commit`] (and `sync`, built on it) hands each pending
//! set to the route instead of the writer. Explicit commits therefore take the same path as
//! the object layer's implicit ones: nothing is written around the shard.
//!
//! # Invariants
//! * A routed set stays in the keyspace's in-flight list (reads see it: read-your-writes)
//!   until the route reports its outcome through [`RoutedCommit::finish`]; then its ticket
//!   resolves and it leaves the list together with every earlier set (a set reported
//!   before an earlier one stays listed until that one leaves, so the earlier set's older
//!   values never shadow it). A [`RoutedCommit`] dropped unfinished fails its set (a
//!   route cannot lose a ticket).
//! * Failures poison the keyspace as a failed local commit does: every set handed over after
//!   the failed one (built on its writes) and not yet finished fails too
//!   (`EarlierCommitFailed`), the pending writes are discarded, and the next `commit` fails
//!   at once. A set handed over *before* the failed one still stands on its own outcome,
//!   even when the route reports it after the failure (a shard refuses an oversized set at
//!   once while earlier ones are still being replicated).
//! * Sets of one keyspace are handed to the route in commit order, synchronously inside
//!   `commit`: a route that queues them in that order keeps them ordered.
//! * [`Keyspace::sync`] on a routed keyspace first asks [`CommitRoute::blocking_allowed`]: a
//!   route whose commits need the caller's own thread to make progress (a shard driven by the
//!   scheduler the caller runs on) refuses with [`StorageError::NotReplicated`] instead of
//!   blocking that thread on itself; `commit().await` is the way there.

use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::keyspace::Keyspace;
use crate::replica::WriteSetData;
use crate::store::{fail, finish_set};
use crate::ticket::{CommitTicket, TicketInner};

/// Where a keyspace's commits go instead of the group-commit writer (see the module doc).
pub trait CommitRoute: Send + Sync + 'static {
    /// Commits `set` (e.g. proposes it to the keyspace's shard) and reports the outcome
    /// through `done`: `Ok` only once the set is durable *and* applied to this store.
    fn commit(&self, set: WriteSetData, done: RoutedCommit);

    /// Whether the calling thread may block until a routed set finishes
    /// ([`Keyspace::sync`]); `Err` says why not (e.g. "inside an object's handler: await
    /// `commit()` instead"). Blocking is allowed unless a route says otherwise.
    fn blocking_allowed(&self) -> Result<()> {
        Ok(())
    }
}

/// The outcome slot of one routed set: see [`RoutedCommit::finish`].
pub struct RoutedCommit {
    ks: Keyspace,
    seq: u64,
    ticket: Option<Arc<TicketInner>>,
}

impl std::fmt::Debug for RoutedCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedCommit")
            .field("keyspace", &self.ks.name())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl RoutedCommit {
    /// Reports the set's outcome: it leaves the in-flight list and its ticket resolves. A
    /// set handed over before an earlier set's failure fails even if `result` is `Ok`.
    pub fn finish(mut self, result: Result<()>) {
        self.settle(result);
    }

    fn settle(&mut self, result: Result<()>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let core = &self.ks.store.core;
        match result {
            Ok(()) => finish_set(core, &self.ks.ks, self.seq, &ticket),
            Err(e) => fail(core, &self.ks.ks, self.seq, &ticket, e),
        }
    }
}

impl Drop for RoutedCommit {
    fn drop(&mut self) {
        self.settle(Err(StorageError::NotReplicated(
            "the commit route dropped the write set".into(),
        )));
    }
}

impl Keyspace {
    /// Sends this keyspace's commits (from every handle on it) to `route` from now on, or
    /// back to the group-commit writer with `None`. See the module doc.
    pub fn route_commits(&self, route: Option<Arc<dyn CommitRoute>>) {
        self.ks.state.lock().route = route;
    }

    /// Whether commits of this keyspace go to a [`CommitRoute`].
    pub fn is_routed(&self) -> bool {
        self.ks.state.lock().route.is_some()
    }

    /// `Err` if this keyspace's route forbids blocking the calling thread on a commit
    /// (see [`CommitRoute::blocking_allowed`]).
    pub(crate) fn may_block(&self) -> Result<()> {
        let route = self.ks.state.lock().route.clone();
        route.map_or(Ok(()), |r| r.blocking_allowed())
    }

    /// Whether sets of this keyspace were handed over and have not finished yet.
    pub fn has_in_flight(&self) -> bool {
        !self.ks.state.lock().inflight.is_empty()
    }

    /// `commit` through `route`: called with the pending set already taken out as `set`,
    /// numbered `seq` and listed in flight with `ticket`.
    pub(crate) fn hand_to_route(
        &self,
        route: &Arc<dyn CommitRoute>,
        set: WriteSetData,
        seq: u64,
        ticket: Arc<TicketInner>,
    ) -> CommitTicket {
        let done = RoutedCommit {
            ks: self.clone(),
            seq,
            ticket: Some(Arc::clone(&ticket)),
        };
        route.commit(set, done);
        CommitTicket { inner: ticket }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Config, Store};

    /// A route that keeps what it is given; the test decides each set's fate.
    #[derive(Default)]
    struct Held(Mutex<Vec<(WriteSetData, RoutedCommit)>>);

    impl CommitRoute for Held {
        fn commit(&self, set: WriteSetData, done: RoutedCommit) {
            self.0.lock().unwrap().push((set, done));
        }
    }

    fn routed() -> (tempfile::TempDir, Store, Keyspace, Arc<Held>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let ks = store.keyspace("counter/a").unwrap();
        let held = Arc::new(Held::default());
        ks.route_commits(Some(Arc::clone(&held) as Arc<dyn CommitRoute>));
        (dir, store, ks, held)
    }

    #[test]
    fn a_routed_commit_goes_to_the_route_not_the_writer_and_stays_readable_until_it_finishes() {
        let (_dir, store, ks, held) = routed();
        ks.put("total", &5u64).unwrap();
        let ticket = ks.commit();
        let (set, done) = held.0.lock().unwrap().pop().expect("the route got the set");
        assert_eq!(set.keyspace, "counter/a");
        assert_eq!(set.entries.len(), 1);
        // In flight: the handler still reads its write.
        assert_eq!(ks.get::<u64>("total").unwrap(), Some(5));
        assert!(ks.has_in_flight() && ticket.try_result().is_none());
        // The shard applies it (here: by hand), then reports success.
        store.shard_write(|t| t.apply(0, &set)).unwrap();
        done.finish(Ok(()));
        assert!(matches!(ticket.try_result(), Some(Ok(()))));
        assert!(!ks.has_in_flight());
        assert_eq!(ks.get::<u64>("total").unwrap(), Some(5));
        // Back to the writer: a commit is durable without the route.
        ks.route_commits(None);
        ks.put("total", &6u64).unwrap();
        ks.sync().unwrap();
        assert!(held.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_set_reported_before_an_earlier_one_is_not_shadowed_by_it() {
        let (_dir, store, ks, held) = routed();
        ks.put("total", &1u64).unwrap();
        let first = ks.commit();
        ks.put("total", &2u64).unwrap();
        let second = ks.commit();
        let mut sets = std::mem::take(&mut *held.0.lock().unwrap());
        let (set2, done2) = sets.pop().unwrap();
        let (set1, done1) = sets.pop().unwrap();
        // The shard applies both in order; the route reports the later one first.
        store
            .shard_write(|t| {
                t.apply(0, &set1)?;
                t.apply(0, &set2)
            })
            .unwrap();
        done2.finish(Ok(()));
        assert!(matches!(second.try_result(), Some(Ok(()))));
        // The earlier set is still listed; its older value must not hide the later one.
        assert_eq!(ks.get::<u64>("total").unwrap(), Some(2));
        assert!(ks.has_in_flight());
        done1.finish(Ok(()));
        assert!(matches!(first.try_result(), Some(Ok(()))));
        assert!(!ks.has_in_flight());
        assert_eq!(ks.get::<u64>("total").unwrap(), Some(2));
    }

    /// A route that reports a later set's failure before an earlier set's success: the
    /// earlier set stands (it never read the failed writes), the later one fails, and so
    /// does the next commit (the keyspace is poisoned).
    #[test]
    fn an_earlier_set_reported_after_a_later_ones_failure_still_commits() {
        let (_dir, store, ks, held) = routed();
        ks.put("a", &1u64).unwrap();
        let first = ks.commit();
        ks.put("b", &2u64).unwrap();
        let second = ks.commit();
        ks.put("c", &3u64).unwrap();
        let third = ks.commit();
        let mut sets = std::mem::take(&mut *held.0.lock().unwrap());
        let (_, third_done) = sets.pop().unwrap();
        let (_, second_done) = sets.pop().unwrap();
        let (first_set, first_done) = sets.pop().unwrap();
        second_done.finish(Err(StorageError::NotReplicated("too large".into())));
        assert!(matches!(
            second.try_result(),
            Some(Err(StorageError::NotReplicated(_)))
        ));
        // The route applied the first set (as a shard applies it to this store), then
        // reports it.
        store.shard_write(|t| t.apply(0, &first_set)).unwrap();
        first_done.finish(Ok(()));
        assert!(
            matches!(first.try_result(), Some(Ok(()))),
            "a set handed over before the failed one was failed with it: {:?}",
            first.try_result()
        );
        assert_eq!(ks.get::<u64>("a").unwrap(), Some(1));
        third_done.finish(Ok(()));
        assert!(matches!(
            third.try_result(),
            Some(Err(StorageError::EarlierCommitFailed))
        ));
        assert_eq!(ks.get::<u64>("b").unwrap(), None);
        assert_eq!(ks.get::<u64>("c").unwrap(), None);
        assert!(matches!(
            ks.commit().try_result(),
            Some(Err(StorageError::EarlierCommitFailed))
        ));
    }

    /// A route that forbids blocking the caller.
    struct NoBlocking;

    impl CommitRoute for NoBlocking {
        fn commit(&self, _set: WriteSetData, done: RoutedCommit) {
            done.finish(Ok(()));
        }
        fn blocking_allowed(&self) -> Result<()> {
            Err(StorageError::NotReplicated("await commit() here".into()))
        }
    }

    #[test]
    fn sync_on_a_route_that_forbids_blocking_fails_clearly_and_keeps_the_writes_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let ks = store.keyspace("counter/b").unwrap();
        ks.route_commits(Some(Arc::new(NoBlocking)));
        ks.put("total", &1u64).unwrap();
        assert!(matches!(ks.sync(), Err(StorageError::NotReplicated(_))));
        assert!(ks.has_pending(), "a refused sync hands nothing over");
        // `commit()` still goes through the route.
        assert!(matches!(ks.commit().try_result(), Some(Ok(()))));
    }

    #[test]
    fn a_failed_or_dropped_routed_commit_poisons_the_keyspace_and_hides_its_writes() {
        let (_dir, _store, ks, held) = routed();
        ks.put("total", &1u64).unwrap();
        let first = ks.commit();
        ks.put("total", &2u64).unwrap();
        let second = ks.commit();
        let mut sets = std::mem::take(&mut *held.0.lock().unwrap());
        let (_, second_done) = sets.pop().unwrap();
        let (_, first_done) = sets.pop().unwrap();
        first_done.finish(Err(StorageError::NotReplicated("lost the lease".into())));
        assert!(matches!(
            first.try_result(),
            Some(Err(StorageError::NotReplicated(_)))
        ));
        // The later set fails too, even if its route reports success.
        second_done.finish(Ok(()));
        assert!(matches!(
            second.try_result(),
            Some(Err(StorageError::EarlierCommitFailed))
        ));
        assert_eq!(
            ks.get::<u64>("total").unwrap(),
            None,
            "a failed set is not readable"
        );
        assert!(matches!(
            ks.commit().wait(),
            Err(StorageError::EarlierCommitFailed)
        ));
        // A route that drops a set without an answer fails it.
        ks.discard_pending();
        ks.put("total", &3u64).unwrap();
        let dropped = ks.commit();
        held.0.lock().unwrap().clear();
        assert!(matches!(
            dropped.try_result(),
            Some(Err(StorageError::NotReplicated(_)))
        ));
    }
}
