//! One shard's Raft log as raft-rs reads it: an in-memory mirror of what is durable.
//!
//! [`ShardLog`] implements `raft::Storage`. It holds the hard state, the configuration, the
//! truncated state (index and term of the last entry compacted away or covered by a
//! snapshot) and the entries after it. The core updates it only after the round that wrote
//! the same things to disk is durable, so raft-rs never reads an entry that a crash could
//! lose. Recovery rebuilds it from the durable [`ShardState`].
//!
//! Snapshots are produced outside (they read the state machine): when raft-rs asks for one
//! and no prepared snapshot is recent enough, `snapshot()` records the wish and answers
//! `SnapshotTemporarilyUnavailable`; the core reports the wish, the node exports the shard
//! and hands the data back ([`MultiRaft::provide_snapshot`](crate::MultiRaft::provide_snapshot)),
//! and raft-rs retries on its next heartbeat response.

// eraftpb's generated structs carry private-ish bookkeeping fields (unknown fields, cached
// size); filling them field by field from `default()` reads clearer than struct literals.
#![allow(clippy::field_reassign_with_default)]

use std::cell::Cell;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

use crate::types::ShardId;
use crate::wire::{WireConfState, WireEntry};

/// Term, vote and commit index, in our encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHardState {
    #[allow(missing_docs)]
    pub term: u64,
    #[allow(missing_docs)]
    pub vote: u64,
    #[allow(missing_docs)]
    pub commit: u64,
}

impl WireHardState {
    pub(crate) fn from_hard_state(h: &HardState) -> Self {
        WireHardState {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
        }
    }

    pub(crate) fn to_hard_state(self) -> HardState {
        let mut h = HardState::default();
        h.term = self.term;
        h.vote = self.vote;
        h.commit = self.commit;
        h
    }
}

/// Everything durable about one shard's replica, as recovery reads it back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardState {
    /// The shard.
    pub shard: ShardId,
    /// Term, vote, commit.
    pub hard_state: WireHardState,
    /// Voters and learners.
    pub conf_state: WireConfState,
    /// `(index, term)` of the last entry no longer in the log (0, 0 for none).
    pub truncated: (u64, u64),
    /// The last entry applied to the keyspaces.
    pub applied: u64,
    /// The log after `truncated`, in index order.
    pub entries: Vec<WireEntry>,
}

/// A shard's log for raft-rs (see the module docs).
#[derive(Debug, Default)]
pub struct ShardLog {
    hard_state: HardState,
    conf_state: ConfState,
    truncated: (u64, u64),
    entries: Vec<Entry>,
    prepared: Option<Snapshot>,
    /// A snapshot handed out must be at least this recent: the index of the last applied
    /// configuration change (see [`ShardLog::set_min_snapshot`]).
    min_snapshot: u64,
    /// Set when raft-rs asked for a snapshot we did not have.
    snapshot_wanted: Cell<bool>,
}

impl ShardLog {
    /// From recovered durable state.
    pub fn from_state(s: &ShardState) -> ShardLog {
        let entries = s
            .entries
            .iter()
            .map(|e| e.to_entry().expect("entries on disk are our own encoding"))
            .collect();
        ShardLog {
            hard_state: s.hard_state.to_hard_state(),
            conf_state: s.conf_state.to_conf_state(),
            truncated: s.truncated,
            entries,
            prepared: None,
            min_snapshot: s.applied,
            snapshot_wanted: Cell::new(false),
        }
    }

    /// Whether the replica has a configuration (it was bootstrapped or got a snapshot).
    pub fn initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || !self.conf_state.learners.is_empty()
    }

    /// `(index, term)` of the last entry no longer in the log.
    pub fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }

    /// Appends durable entries, replacing any conflicting suffix.
    pub(crate) fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.truncated.0 && first.index <= self.last() + 1,
            "append at {} to a log of ({}, {}]",
            first.index,
            self.truncated.0,
            self.last()
        );
        self.entries
            .truncate((first.index - self.truncated.0 - 1) as usize);
        self.entries.extend_from_slice(ents);
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub(crate) fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Drops entries up to and including `index` (which must be durably applied).
    pub(crate) fn compact(&mut self, index: u64, term: u64) {
        if index <= self.truncated.0 {
            return;
        }
        let n = ((index - self.truncated.0) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.truncated = (index, term);
    }

    /// Replaces the log with a durable snapshot's metadata.
    pub(crate) fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.entries.clear();
        self.truncated = (meta.index, meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
    }

    /// No snapshot older than `index` may be handed out any more: a configuration change
    /// was applied there. A snapshot from before it carries the old configuration and the
    /// log after it replays the change: a replica removed and added back that installed it
    /// would replay its own removal and destroy itself, while the leader, which counted its
    /// acknowledgements, promotes it to an empty voter.
    pub(crate) fn set_min_snapshot(&mut self, index: u64) {
        self.min_snapshot = self.min_snapshot.max(index);
    }

    /// Makes `snap` what raft-rs gets when it asks for a snapshot.
    pub(crate) fn prepare_snapshot(&mut self, snap: Snapshot) {
        self.snapshot_wanted.set(false);
        self.prepared = Some(snap);
    }

    /// Whether raft-rs asked for a snapshot we could not give (clears the flag).
    pub(crate) fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// The term of `index`, if the log still knows it.
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.truncated.0 {
            return Some(self.truncated.1);
        }
        if index < self.truncated.0 || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.truncated.0 - 1) as usize].term)
    }
}

impl raft::Storage for ShardLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let off = self.truncated.0 + 1;
        let mut ents = self.entries[(low - off) as usize..(high - off) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A snapshot prepared before `to` joined the configuration is useless to it (it
        // would refuse it): ask for a fresh one.
        let includes = |s: &Snapshot| {
            let c = s.get_metadata().get_conf_state();
            c.voters.contains(&to) || c.learners.contains(&to)
        };
        match &self.prepared {
            Some(s)
                if s.get_metadata().index >= request_index
                    && s.get_metadata().index >= self.truncated.0
                    && s.get_metadata().index >= self.min_snapshot
                    && includes(s) =>
            {
                Ok(s.clone())
            }
            _ => {
                self.snapshot_wanted.set(true);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    #[test]
    fn append_replaces_a_conflicting_suffix_and_compaction_keeps_terms() {
        let mut log = ShardLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(2, 2)]);
        assert_eq!(log.last_index().unwrap(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        log.compact(1, 1);
        assert_eq!(log.first_index().unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
        assert!(log.term(0).is_err());
        assert!(log
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(
            log.entries(2, 3, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_missing_snapshot_is_wished_for_then_served() {
        let mut log = ShardLog::default();
        assert!(log.snapshot(0, 2).is_err());
        assert!(log.take_snapshot_wanted());
        assert!(!log.take_snapshot_wanted());
        let mut s = Snapshot::default();
        s.mut_metadata().index = 5;
        s.mut_metadata().mut_conf_state().learners = vec![2];
        log.prepare_snapshot(s);
        assert!(
            log.snapshot(3, 9).is_err(),
            "not for a replica outside its configuration"
        );
        assert_eq!(log.snapshot(3, 2).unwrap().get_metadata().index, 5);
        assert!(log.snapshot(6, 2).is_err());
    }

    #[test]
    fn a_snapshot_older_than_the_last_configuration_change_is_not_served() {
        let mut log = ShardLog::default();
        let mut s = Snapshot::default();
        s.mut_metadata().index = 5;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2];
        log.prepare_snapshot(s.clone());
        assert!(log.snapshot(0, 2).is_ok());
        // Node 2 was removed at 6 and added back at 7: the snapshot at 5 would make it
        // replay its own removal.
        log.set_min_snapshot(7);
        assert!(log.snapshot(0, 2).is_err());
        assert!(log.take_snapshot_wanted(), "a fresh one is asked for");
        s.mut_metadata().index = 7;
        log.prepare_snapshot(s);
        assert_eq!(log.snapshot(0, 2).unwrap().get_metadata().index, 7);
    }
}
