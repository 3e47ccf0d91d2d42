//! What a node's shard layer shows to its operators: counters bumped by the driver where
//! things happen, and a map of the shards this node hosts, refreshed by the driver.
//!
//! [`ShardStats`] is shared (`Arc`) between the driver process, which writes it, and any
//! reader (the node's metrics registry, its status page), which takes a
//! [`ShardStatsSnapshot`] without asking the driver anything — a scrape never waits for a
//! Raft round. Invariants:
//! * Counters only grow and are relaxed atomics; the commit-latency histogram is a
//!   `cairn_storage::latency` histogram. Recording one proposal costs two clock reads and a
//!   few atomic adds in the driver.
//! * The shard map ([`ShardView`]s) is replaced whole, at most every [`MAP_REFRESH`] and
//!   whenever this node starts or stops serving a shard; it is never more than that stale.
//!   Its size is bounded by the cluster's shard count (fixed at creation), never by input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_scheduler::NodeId;
use cairn_storage::latency::{Histogram, HistogramSnapshot};
use parking_lot::Mutex;

use crate::types::ShardId;

/// How often the driver refreshes the shard map at most (besides serving changes).
pub const MAP_REFRESH: Duration = Duration::from_millis(250);

/// This node's role in one shard it hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRole {
    /// The shard's Raft leader.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter standing for election.
    Candidate,
    /// A non-voting replica catching up (being added).
    Learner,
}

impl ShardRole {
    /// `"leader"`, `"follower"`, `"candidate"` or `"learner"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardRole::Leader => "leader",
            ShardRole::Follower => "follower",
            ShardRole::Candidate => "candidate",
            ShardRole::Learner => "learner",
        }
    }

    /// One letter for compact listings: `L` leader, `F` follower, `C` candidate, `l`
    /// learner.
    pub fn letter(self) -> char {
        match self {
            ShardRole::Leader => 'L',
            ShardRole::Follower => 'F',
            ShardRole::Candidate => 'C',
            ShardRole::Learner => 'l',
        }
    }
}

/// One hosted shard as this node's replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    /// The shard.
    pub shard: ShardId,
    /// This node's role in it.
    pub role: ShardRole,
    /// The Raft term this replica is in.
    pub term: u64,
    /// The leader this replica knows (a hint when not the leader itself).
    pub leader: Option<NodeId>,
    /// The voters.
    pub voters: Vec<NodeId>,
    /// The learners (replicas being added).
    pub learners: Vec<NodeId>,
    /// On the leader: how many entries the furthest-behind follower lacks (0 elsewhere).
    pub lag: u64,
}

/// A node's shard counters and map at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStatsSnapshot {
    /// Shards this node leads.
    pub led: usize,
    /// Shards this node hosts without leading them.
    pub followed: usize,
    /// Proposals (write sets) committed with this node as leader.
    pub commits: u64,
    /// Proposals refused, not committed, or whose fate is unknown.
    pub failed_proposals: u64,
    /// Proposal to commit (applied here) of each committed proposal.
    pub commit_latency: HistogramSnapshot,
    /// Times this node saw a hosted shard's leader change (a first known leader counts).
    pub leader_changes: u64,
    /// The most entries any follower of a shard led here lacks.
    pub follower_lag: u64,
    /// Every hosted shard, by shard id.
    pub shards: Vec<ShardView>,
}

/// The live counters and map (see the module docs).
#[derive(Default)]
pub struct ShardStats {
    commits: AtomicU64,
    failed_proposals: AtomicU64,
    commit_latency: Histogram,
    leader_changes: AtomicU64,
    map: Mutex<Vec<ShardView>>,
}

impl std::fmt::Debug for ShardStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStats").finish_non_exhaustive()
    }
}

impl ShardStats {
    /// A proposal committed `latency` after it was proposed.
    pub(crate) fn committed(&self, latency: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_latency.record(latency);
    }

    /// A proposal that did not commit (or whose fate is unknown).
    pub(crate) fn failed(&self) {
        self.failed_proposals.fetch_add(1, Ordering::Relaxed);
    }

    /// A hosted shard's known leader changed.
    pub(crate) fn leader_changed(&self) {
        self.leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the shard map.
    pub(crate) fn set_map(&self, shards: Vec<ShardView>) {
        *self.map.lock() = shards;
    }

    /// The counters and the map now.
    pub fn snapshot(&self) -> ShardStatsSnapshot {
        let shards = self.map.lock().clone();
        let led = shards
            .iter()
            .filter(|s| s.role == ShardRole::Leader)
            .count();
        ShardStatsSnapshot {
            led,
            followed: shards.len() - led,
            commits: self.commits.load(Ordering::Relaxed),
            failed_proposals: self.failed_proposals.load(Ordering::Relaxed),
            commit_latency: self.commit_latency.snapshot(),
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            follower_lag: shards.iter().map(|s| s.lag).max().unwrap_or(0),
            shards,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shard: u32, role: ShardRole, lag: u64) -> ShardView {
        ShardView {
            shard: ShardId(shard),
            role,
            term: 1,
            leader: Some(NodeId(1)),
            voters: vec![NodeId(1), NodeId(2)],
            learners: vec![],
            lag,
        }
    }

    #[test]
    fn a_snapshot_counts_roles_and_the_worst_lag() {
        let stats = ShardStats::default();
        stats.committed(Duration::from_millis(3));
        stats.committed(Duration::from_millis(5));
        stats.failed();
        stats.leader_changed();
        stats.set_map(vec![
            view(0, ShardRole::Leader, 4),
            view(1, ShardRole::Follower, 0),
            view(2, ShardRole::Leader, 9),
            view(3, ShardRole::Learner, 0),
        ]);
        let s = stats.snapshot();
        assert_eq!((s.led, s.followed), (2, 2));
        assert_eq!((s.commits, s.failed_proposals, s.leader_changes), (2, 1, 1));
        assert_eq!(s.commit_latency.count(), 2);
        assert_eq!(s.commit_latency.sum_us, 8_000);
        assert_eq!(s.follower_lag, 9);
        assert_eq!(s.shards.len(), 4);
    }
}
