//! The shard layer's durable state in the node's LMDB environment (through cairn-storage).
//!
//! Layout of the `raft` table (documented byte by byte in `storage/DESIGN.md`):
//! `C` → cluster record; `S‖shard‖h` hard state; `S‖shard‖c` conf state; `S‖shard‖a` applied
//! index; `S‖shard‖t` truncated state; `S‖shard‖l‖index` log entries. Values are MessagePack
//! of our own structs (never protobuf). Keyspaces live in the store's ordinary tables, tagged
//! with their shard in `shard_index`.
//!
//! [`LmdbLog::persist`] writes a whole round in one `Store::shard_write` transaction: one
//! fsync for every shard's appends, hard states and applied write sets.

use std::collections::BTreeMap;

use cairn_storage::{DecodedWriteSet, ShardData, ShardTxn, StorageError, Store, WriteSetData};
use serde::{Deserialize, Serialize};

use crate::config::ShardConfig;
use crate::core::{Apply, ShardRound};
use crate::durable::{write_round, RoundWriter};
use crate::log::{ShardState, WireHardState};
use crate::types::ShardId;
use crate::wire::{WireConfState, WireEntry, WireSnapshot};

const CLUSTER: &[u8] = b"C";

/// The cluster's fixed shape, stored at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Number of shards.
    pub shards: u32,
    /// Replication factor.
    pub replication: u32,
}

fn key(shard: ShardId, kind: u8) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[0] = b'S';
    k[1..5].copy_from_slice(&shard.0.to_be_bytes());
    k[5] = kind;
    k
}

fn entry_key(shard: ShardId, index: u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..6].copy_from_slice(&key(shard, b'l'));
    k[6..].copy_from_slice(&index.to_be_bytes());
    k
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("encoding our own structs cannot fail")
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StorageError> {
    rmp_serde::from_slice(b).map_err(|e| StorageError::Decode(e.to_string()))
}

/// The shard layer's view of the node's store.
#[derive(Clone, Debug)]
pub struct LmdbLog {
    store: Store,
}

struct Writer<'a, 't> {
    t: &'a mut ShardTxn<'t>,
}

impl RoundWriter for Writer<'_, '_> {
    type Error = StorageError;

    fn destroy(&mut self, shard: ShardId) -> Result<(), StorageError> {
        // Every row of the shard: `S‖shard‖kind…` for all kinds (entries included).
        self.t
            .raft_delete_range(&key(shard, 0), &key(shard, 0xFF))?;
        self.t.clear_shard(shard.0)
    }

    fn install_snapshot(&mut self, shard: ShardId, s: &WireSnapshot) -> Result<(), StorageError> {
        let data: ShardData = if s.data.is_empty() {
            ShardData::default()
        } else {
            dec(&s.data)?
        };
        self.t.install_shard(shard.0, &data)?;
        self.t
            .raft_delete_range(&entry_key(shard, 0), &entry_key(shard, u64::MAX))?;
        self.t
            .raft_put(&key(shard, b't'), &enc(&(s.index, s.term)))?;
        self.t.raft_put(&key(shard, b'c'), &enc(&s.conf_state))?;
        self.t.raft_put(&key(shard, b'a'), &enc(&s.index))
    }

    fn append(&mut self, shard: ShardId, entries: &[WireEntry]) -> Result<(), StorageError> {
        self.t.raft_delete_range(
            &entry_key(shard, entries[0].index),
            &entry_key(shard, u64::MAX),
        )?;
        // One buffer for the round's entries of this shard (LMDB copies each row).
        let mut row =
            Vec::with_capacity(entries.iter().map(|e| e.data.len()).max().unwrap_or(0) + 48);
        for e in entries {
            row.clear();
            rmp_serde::encode::write(&mut row, e).expect("encoding our own structs cannot fail");
            self.t.raft_put(&entry_key(shard, e.index), &row)?;
        }
        Ok(())
    }

    fn hard_state(&mut self, shard: ShardId, hs: &WireHardState) -> Result<(), StorageError> {
        self.t.raft_put(&key(shard, b'h'), &enc(hs))
    }

    fn conf_state(&mut self, shard: ShardId, cs: &WireConfState) -> Result<(), StorageError> {
        self.t.raft_put(&key(shard, b'c'), &enc(cs))
    }

    fn apply(&mut self, shard: ShardId, entry: &Apply) -> Result<(), StorageError> {
        for (_, id, payload) in &entry.proposals {
            // Read in place from the entry (no copy of its keys and values).
            match DecodedWriteSet::decode(payload) {
                // A set that cannot be applied (malformed, over a limit) is skipped the same
                // way on every replica: the entry is committed, the set is not applied.
                Ok(set) => match self.t.apply_decoded(shard.0, &set) {
                    Ok(()) => {}
                    Err(e @ (StorageError::KeyTooLarge { .. } | StorageError::BadName { .. })) => {
                        tracing::warn!(shard = %shard, proposal = id.0, error = %e, "replicated write set refused");
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    tracing::warn!(shard = %shard, proposal = id.0, error = %e, "undecodable write set skipped");
                }
            }
        }
        Ok(())
    }

    fn applied(&mut self, shard: ShardId, index: u64) -> Result<(), StorageError> {
        self.t.raft_put(&key(shard, b'a'), &enc(&index))
    }

    fn compact(&mut self, shard: ShardId, index: u64, term: u64) -> Result<(), StorageError> {
        self.t
            .raft_delete_range(&entry_key(shard, 0), &entry_key(shard, index + 1))?;
        self.t.raft_put(&key(shard, b't'), &enc(&(index, term)))
    }
}

impl LmdbLog {
    /// Over `store`.
    pub fn new(store: Store) -> LmdbLog {
        LmdbLog { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stored cluster record, if this node was ever part of a cluster.
    pub fn cluster(&self) -> Result<Option<ClusterRecord>, StorageError> {
        self.store
            .shard_read(|r| r.raft_get(CLUSTER)?.map(|v| dec(&v)).transpose())
    }

    /// Creates the cluster on this node: stores the record and `states` (from
    /// [`bootstrap_states`](crate::bootstrap_states)). Refuses if a cluster exists.
    pub fn create_cluster(
        &self,
        cfg: &ShardConfig,
        states: &[ShardState],
    ) -> Result<(), StorageError> {
        let record = ClusterRecord {
            shards: cfg.shards,
            replication: cfg.replication as u32,
        };
        self.store.shard_write(|t| {
            if t.raft_get(CLUSTER)?.is_some() {
                return Err(StorageError::Lmdb {
                    code: 0,
                    message: "this data directory already belongs to a cluster".into(),
                });
            }
            t.raft_put(CLUSTER, &enc(&record))?;
            for s in states {
                let mut w = Writer { t: &mut *t };
                w.hard_state(s.shard, &s.hard_state)?;
                w.conf_state(s.shard, &s.conf_state)?;
                w.applied(s.shard, s.applied)?;
                w.t.raft_put(&key(s.shard, b't'), &enc(&s.truncated))?;
                if !s.entries.is_empty() {
                    w.append(s.shard, &s.entries)?;
                }
            }
            Ok(())
        })
    }

    /// Joins a cluster created elsewhere: stores its record (the node hosts no shard until
    /// leaders add it).
    pub fn join_cluster(&self, record: ClusterRecord) -> Result<(), StorageError> {
        self.store
            .shard_write(|t| t.raft_put(CLUSTER, &enc(&record)))
    }

    /// Makes a round durable: one transaction, one fsync.
    pub fn persist(&self, shards: &[ShardRound]) -> Result<(), StorageError> {
        if shards.is_empty() {
            return Ok(());
        }
        self.store
            .shard_write(|t| write_round(&mut Writer { t }, shards))
    }

    /// Reads every hosted shard's durable state back (at start).
    pub fn recover(&self) -> Result<Vec<ShardState>, StorageError> {
        self.store.shard_read(|r| {
            let mut states: BTreeMap<ShardId, ShardState> = BTreeMap::new();
            let mut err = None;
            r.raft_scan(b"S", b"T", |k, v| {
                if k.len() < 6 {
                    return true;
                }
                let shard = ShardId(u32::from_be_bytes(k[1..5].try_into().expect("4 bytes")));
                let s = states.entry(shard).or_insert_with(|| ShardState {
                    shard,
                    ..ShardState::default()
                });
                let res = match k[5] {
                    b'h' => dec(v).map(|x| s.hard_state = x),
                    b'c' => dec(v).map(|x| s.conf_state = x),
                    b'a' => dec(v).map(|x| s.applied = x),
                    b't' => dec(v).map(|x| s.truncated = x),
                    b'l' => dec(v).map(|x| s.entries.push(x)),
                    _ => Ok(()),
                };
                if let Err(e) = res {
                    err = Some(e);
                    return false;
                }
                true
            })?;
            match err {
                Some(e) => Err(e),
                None => Ok(states.into_values().collect()),
            }
        })
    }

    /// Exports `shard`'s keyspaces with the applied index they reflect (one read snapshot),
    /// for [`MultiRaft::provide_snapshot`](crate::MultiRaft::provide_snapshot).
    pub fn export(&self, shard: ShardId) -> Result<(u64, Vec<u8>), StorageError> {
        self.store.shard_read(|r| {
            let applied = r
                .raft_get(&key(shard, b'a'))?
                .map(|v| dec::<u64>(&v))
                .transpose()?
                .unwrap_or(0);
            Ok((applied, enc(&r.export_shard(shard.0)?)))
        })
    }
}

/// Encodes a write set as a proposal payload for an LMDB-backed node.
pub fn encode_write_set(set: &WriteSetData) -> Vec<u8> {
    // Sized up front (keys and values plus their framing): not grown by doubling.
    let size = 16
        + set.keyspace.len()
        + set
            .entries
            .iter()
            .map(|(k, v)| 12 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    rmp_serde::encode::write(&mut buf, set).expect("encoding our own structs cannot fail");
    buf
}
