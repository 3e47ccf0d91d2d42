//! Writing a round: the order of a [`ShardRound`]'s writes, shared by every backend.
//!
//! A backend ([`LmdbLog`](crate::LmdbLog) on a node, an in-memory one in the simulator)
//! implements the primitive writes of [`RoundWriter`] inside one transaction;
//! [`write_round`] sequences them. Within a shard: destroy, or else snapshot install, log
//! append, hard state, configuration, applied write sets, applied index, compaction.

use crate::core::{Apply, ShardRound};
use crate::log::WireHardState;
use crate::types::ShardId;
use crate::wire::{WireConfState, WireEntry, WireSnapshot};

/// The primitive writes of one round, all inside one atomic transaction.
pub trait RoundWriter {
    /// The backend's error.
    type Error;
    /// Deletes the shard's Raft state and its keyspaces.
    fn destroy(&mut self, shard: ShardId) -> Result<(), Self::Error>;
    /// Replaces the shard's keyspaces with the snapshot's data, empties its log, and stores
    /// the snapshot's index/term as truncated state, its configuration, and its index as
    /// the applied index.
    fn install_snapshot(&mut self, shard: ShardId, snap: &WireSnapshot) -> Result<(), Self::Error>;
    /// Appends entries, deleting any stored entry at or after `entries[0].index` first.
    fn append(&mut self, shard: ShardId, entries: &[WireEntry]) -> Result<(), Self::Error>;
    /// Stores the hard state.
    fn hard_state(&mut self, shard: ShardId, hs: &WireHardState) -> Result<(), Self::Error>;
    /// Stores the configuration.
    fn conf_state(&mut self, shard: ShardId, cs: &WireConfState) -> Result<(), Self::Error>;
    /// Applies one committed entry's proposals to the state machine.
    fn apply(&mut self, shard: ShardId, entry: &Apply) -> Result<(), Self::Error>;
    /// Stores the applied index.
    fn applied(&mut self, shard: ShardId, index: u64) -> Result<(), Self::Error>;
    /// Deletes entries up to `index` and stores `(index, term)` as truncated state.
    fn compact(&mut self, shard: ShardId, index: u64, term: u64) -> Result<(), Self::Error>;
}

/// Writes `shards` through `w` in the documented order.
pub fn write_round<W: RoundWriter>(w: &mut W, shards: &[ShardRound]) -> Result<(), W::Error> {
    for sr in shards {
        if sr.destroy {
            w.destroy(sr.shard)?;
            continue;
        }
        if let Some(s) = &sr.snapshot {
            w.install_snapshot(sr.shard, s)?;
        }
        if !sr.entries.is_empty() {
            w.append(sr.shard, &sr.entries)?;
        }
        if let Some(hs) = &sr.hard_state {
            w.hard_state(sr.shard, hs)?;
        }
        if let Some(cs) = &sr.conf_state {
            w.conf_state(sr.shard, cs)?;
        }
        for a in &sr.apply {
            w.apply(sr.shard, a)?;
        }
        if let Some(i) = sr.applied {
            w.applied(sr.shard, i)?;
        }
        if let Some((i, t)) = sr.compact {
            w.compact(sr.shard, i, t)?;
        }
    }
    Ok(())
}
