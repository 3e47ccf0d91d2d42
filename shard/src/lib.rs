//! # cairn-shard — replicated shards (Multi-Raft)
//!
//! The key space is cut into a fixed number of shards ([`ShardConfig::shards`], stored at
//! cluster creation); `(class, key)` maps to one shard ([`placement::shard_of`]). Each shard is
//! a Raft group (raft-rs 0.7) of up to [`ShardConfig::replication`] replicas. Only the shard's
//! leader, while it holds a lease, may acknowledge anything for the shard's objects.
//!
//! Pieces:
//! - [`MultiRaft`] (`core`): the sans-IO state machine owning one `RawNode` per hosted shard;
//!   rounds batch every shard's appends and applies into one storage transaction.
//! - [`ShardLog`] (`log`): raft-rs's `Storage` over an in-memory mirror of the durable log.
//! - [`LmdbLog`] (`lmdb_log`): the durable state in the node's LMDB store.
//! - `wire`: the serde forms that cross the network and the disk (never protobuf bytes).
//! - `placement`, `rebalance`, `leadership`: pure target replica sets, the next conf change,
//!   and each shard's preferred leader (leadership is spread over the nodes).
//! - [`driver`]: a scheduler process per node that runs the core over a [`driver::ShardTransport`].
//! - [`stats`]: the driver's counters and shard map, read by the node's metrics and status page.
//! - [`tombstone`]: telling a replica removed while cut off that it is no longer a member.
//!
//! See `shard/DESIGN.md` for the reasons and the safety argument.

mod config;
mod core;
pub mod driver;
mod durable;
pub mod leadership;
mod lmdb_log;
mod log;
pub mod placement;
pub mod rebalance;
mod slog_bridge;
pub mod stats;
pub mod tombstone;
mod types;
pub mod wire;

pub use crate::config::*;
pub use crate::core::{
    bootstrap_states, member_shards, Apply, MultiRaft, Outcome, Output, ProposeError, Round,
    ShardEvent, ShardRound,
};
pub use crate::durable::{write_round, RoundWriter};
pub use crate::lmdb_log::{encode_write_set, ClusterRecord, LmdbLog};
pub use crate::log::{ShardLog, ShardState, WireHardState};
pub use crate::slog_bridge::{logger as raft_logger, TracingDrain};
pub use crate::types::{Fence, ProposalId, ShardId, Time};
pub use raft::StateRole;
