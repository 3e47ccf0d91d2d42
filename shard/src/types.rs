//! Small shared types.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's monotonic clock reading: time since an arbitrary origin of that node's clock.
/// The core never reads a clock itself; every input carries `now`.
pub type Time = Duration;

/// A shard: one Raft group. `0..ShardConfig::shards`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Names one proposal of this node (unique per [`MultiRaft`](crate::MultiRaft) instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProposalId(pub u64);

/// Orders one proposer's proposals (an object activation's write sets) through a shard:
/// every proposal of one `chain` is appended in leader term `term`, in submission order,
/// and none is appended after one of the chain was refused or dropped. Within one term a
/// leader's log is one contiguous run, so a later proposal of the chain can commit only if
/// every earlier one did (the per-object fence that lets an object pipeline its commits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// Unique per chain on this node (a restarted activation starts a new chain).
    pub chain: u64,
    /// The leader term every proposal of the chain must be appended in.
    pub term: u64,
}
