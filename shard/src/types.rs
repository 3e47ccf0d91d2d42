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
