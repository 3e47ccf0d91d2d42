//! Storage for replicated shards (`cairn-shard`): the Raft tables and shard-scoped keyspaces.
//!
//! `cairn-shard` persists one *round* of many shards' Raft work — log appends, hard states,
//! applied write sets with their applied index, snapshot installs — in ONE LMDB write
//! transaction committed with one durable flush ([`Store::shard_write`]). This module is that
//! transaction's vocabulary; it knows nothing about Raft itself:
//!
//! * the `raft` table is an ordered byte map whose keys `cairn-shard` lays out (see
//!   `storage/DESIGN.md`);
//! * [`ShardTxn::apply`] applies a replicated [`WriteSetData`] to a keyspace exactly as the
//!   group-commit writer applies a local write set (same `data`/`alarms` rows, same prefix for
//!   the same name — the registry is shared with [`Store::keyspace`]), and records the keyspace
//!   in the `shard_index` table so that a shard's keyspaces are enumerable;
//! * [`ShardRead::export_shard`] / [`ShardTxn::install_shard`] move a shard's keyspaces and
//!   alarms as a snapshot; [`ShardTxn::clear_shard`] drops them (replica removed).
//!
//! # Invariants
//! * Everything a round writes is in one LMDB transaction: after a crash a round is wholly
//!   present or wholly absent, so a shard's applied index always matches its keyspaces.
//! * A keyspace belongs to at most one shard (the object layer maps `(class, key)` to one
//!   shard); `shard_index` rows are written with the keyspace's first replicated write.
//! * The writer thread and these transactions are serialized by LMDB's writer lock; a
//!   keyspace must not receive both local commits and replicated applies.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::lmdb::{ReadTxn, Table, WriteTxn};
use crate::store::{alarm_index_key, apply_parts, register, KsShared, Store};
use crate::writeset::{decode_u64, WriteSet};
use crate::{MAX_KEY_LEN, MAX_NAME_LEN};

/// The writes of one handled message of one keyspace, as they travel inside a Raft entry.
///
/// Values are already encoded (MessagePack), exactly as the keyspace stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSetData {
    /// The keyspace (named process / object) written.
    pub keyspace: String,
    /// `delete_all` before the entries.
    pub clear: bool,
    /// User key → encoded value, or `None` for a deletion (as MessagePack `bin`).
    #[serde(with = "crate::serde_bin::entries")]
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Alarm change: `Some(None)` deletes it, `Some(Some(ms))` sets it (unix ms).
    /// Encoded as nil, the time, or `false` for a deletion (see `alarm_op`).
    #[serde(with = "alarm_op")]
    pub alarm: Option<Option<u64>>,
}

/// The encoding of [`WriteSetData::alarm`]: nil (no change), the time (set), `false`
/// (delete). serde's own `Option<Option<_>>` encodes a deletion as nil in MessagePack, so
/// a replicated object's alarm deletions were read back as "no change" and never applied
/// (a fired or given-up alarm stayed stored and was delivered again). Entries written
/// before still decode (nil, a time); their lost deletions cannot be told apart.
mod alarm_op {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        op: &Option<Option<u64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match op {
            None => s.serialize_none(),
            Some(Some(ms)) => s.serialize_u64(*ms),
            Some(None) => s.serialize_bool(false),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<u64>>, D::Error> {
        d.deserialize_any(Op)
    }

    struct Op;

    impl<'de> Visitor<'de> for Op {
        type Value = Option<Option<u64>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("nil, an alarm time, or false")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Op)
        }

        fn visit_u64<E>(self, ms: u64) -> Result<Self::Value, E> {
            Ok(Some(Some(ms)))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Self::Value, E> {
            u64::try_from(ms)
                .map(|ms| Some(Some(ms)))
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &self))
        }

        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            if b {
                Err(E::invalid_value(de::Unexpected::Bool(b), &self))
            } else {
                Ok(Some(None))
            }
        }
    }
}

impl WriteSetData {
    /// Refuses a set no replica could apply (the same way on every replica).
    fn check(&self) -> Result<()> {
        check_set(&self.keyspace, self.entries.iter().map(|(k, _)| k.len()))
    }
}

/// [`WriteSetData::check`] on a set's parts.
fn check_set(keyspace: &str, mut key_lens: impl Iterator<Item = usize>) -> Result<()> {
    if keyspace.is_empty() || keyspace.len() > MAX_NAME_LEN {
        return Err(StorageError::BadName {
            len: keyspace.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(len) = key_lens.find(|&len| len > MAX_KEY_LEN) {
        return Err(StorageError::KeyTooLarge {
            len,
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// A [`WriteSetData`] decoded from its MessagePack encoding for [`ShardTxn::apply_decoded`]:
/// its keyspace name, keys and values read in place from the encoding (no allocation per
/// key and value), or, for an encoding that cannot be borrowed from (payloads written as
/// arrays of integers before `bin`), decoded into a [`WriteSetData`].
#[derive(Debug)]
pub struct DecodedWriteSet<'a>(Decoded<'a>);

#[derive(Debug)]
enum Decoded<'a> {
    Borrowed(WriteSetRef<'a>),
    Owned(WriteSetData),
}

/// [`WriteSetData`]'s encoding, borrowed.
#[derive(Debug, Deserialize)]
struct WriteSetRef<'a> {
    keyspace: &'a str,
    clear: bool,
    #[serde(borrow)]
    entries: RefEntries<'a>,
    #[serde(with = "alarm_op")]
    alarm: Option<Option<u64>>,
}

/// One borrowed `(key, value or deletion)` of a [`WriteSetRef`].
type RefEntry<'a> = (&'a [u8], Option<&'a [u8]>);

/// A [`WriteSetRef`]'s entries: a set of one entry (most handlers write one key) is held
/// inline. Every replica decodes every set; a `Vec` here was one allocation per set per
/// replica.
#[derive(Debug)]
enum RefEntries<'a> {
    /// Up to one entry, inline.
    Inline(Option<RefEntry<'a>>),
    /// Two or more.
    Heap(Vec<RefEntry<'a>>),
}

impl<'a> RefEntries<'a> {
    fn as_slice(&self) -> &[RefEntry<'a>] {
        match self {
            RefEntries::Inline(one) => one.as_slice(),
            RefEntries::Heap(all) => all,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RefEntries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<RefEntry<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RefEntries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of (key, value) pairs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RefEntries<'a>, A::Error> {
                let Some(first) = seq.next_element::<RefEntry<'a>>()? else {
                    return Ok(RefEntries::Inline(None));
                };
                let Some(second) = seq.next_element::<RefEntry<'a>>()? else {
                    return Ok(RefEntries::Inline(Some(first)));
                };
                // Bounded: a lying length header cannot make us reserve more than this.
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024) + 2);
                all.push(first);
                all.push(second);
                while let Some(e) = seq.next_element::<RefEntry<'a>>()? {
                    all.push(e);
                }
                Ok(RefEntries::Heap(all))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

impl<'a> DecodedWriteSet<'a> {
    /// Decodes `bytes` (a [`WriteSetData`] encoded with `rmp_serde`); `Decode` if they are
    /// not one.
    pub fn decode(bytes: &'a [u8]) -> Result<DecodedWriteSet<'a>> {
        match rmp_serde::from_slice::<WriteSetRef<'a>>(bytes) {
            Ok(set) => Ok(DecodedWriteSet(Decoded::Borrowed(set))),
            Err(_) => rmp_serde::from_slice::<WriteSetData>(bytes)
                .map(|set| DecodedWriteSet(Decoded::Owned(set)))
                .map_err(|e| StorageError::Decode(e.to_string())),
        }
    }

    /// Whether the set was read in place (not copied into a [`WriteSetData`]).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.0, Decoded::Borrowed(_))
    }
}

impl WriteSetData {
    /// `set`, a write set of keyspace `name`, as it travels.
    pub(crate) fn of(name: &str, set: &WriteSet) -> WriteSetData {
        WriteSetData {
            keyspace: name.to_owned(),
            clear: set.clear,
            entries: set
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            alarm: set.alarm,
        }
    }
}

/// One keyspace of a shard snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceData {
    /// Its name.
    pub name: String,
    /// `(user key, encoded value)` in key order (as MessagePack `bin`).
    #[serde(with = "crate::serde_bin::rows")]
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Its alarm (unix ms), if set.
    pub alarm: Option<u64>,
}

/// All keyspaces (and their alarms) of one shard: a snapshot's state-machine data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    /// In name order.
    pub keyspaces: Vec<KeyspaceData>,
}

fn shard_index_key(shard: u32, prefix: &[u8; 8]) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&shard.to_be_bytes());
    k[4..].copy_from_slice(prefix);
    k
}

/// `[lo, hi)` of `shard`'s rows in `shard_index`.
fn shard_bounds(shard: u32) -> ([u8; 4], Vec<u8>) {
    let hi = match shard.checked_add(1) {
        Some(n) => n.to_be_bytes().to_vec(),
        None => vec![0xFF; 13],
    };
    (shard.to_be_bytes(), hi)
}

/// The prefixes of `shard`'s keyspaces through any transaction's scan.
fn shard_prefixes(
    scan: impl FnOnce(&[u8], &[u8], &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>,
    shard: u32,
) -> Result<Vec<[u8; 8]>> {
    let (lo, hi) = shard_bounds(shard);
    let mut out = Vec::new();
    scan(&lo, &hi, &mut |k, _| {
        let mut p = [0u8; 8];
        p.copy_from_slice(&k[4..12]);
        out.push(p);
        true
    })?;
    Ok(out)
}

/// The end (exclusive) of a keyspace's rows in `data`.
fn data_end(prefix: &[u8; 8]) -> Vec<u8> {
    match u64::from_be_bytes(*prefix).checked_add(1) {
        Some(n) => n.to_be_bytes().to_vec(),
        None => vec![0xFF; 9],
    }
}

/// A read snapshot for the shard layer.
pub struct ShardRead<'s> {
    r: ReadTxn<'s>,
}

impl std::fmt::Debug for ShardRead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRead").finish_non_exhaustive()
    }
}

impl ShardRead<'_> {
    /// A `raft` table row.
    pub fn raft_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.r.get(Table::Raft, key)?.map(<[u8]>::to_vec))
    }

    /// Visits `raft` rows `lo <= key < hi` in key order until `f` returns `false`.
    pub fn raft_scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.r.scan(Table::Raft, lo, Some(hi), false, f)
    }

    /// Every keyspace of `shard` with its rows and alarm (a snapshot's data).
    pub fn export_shard(&self, shard: u32) -> Result<ShardData> {
        let prefixes = shard_prefixes(
            |lo, hi, f| self.r.scan(Table::ShardIndex, lo, Some(hi), false, f),
            shard,
        )?;
        let mut keyspaces = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let name = match self.r.get(Table::Prefixes, &p)? {
                Some(n) => String::from_utf8_lossy(n).into_owned(),
                None => continue,
            };
            let mut rows = Vec::new();
            self.r
                .scan(Table::Data, &p, Some(&data_end(&p)), false, |k, v| {
                    rows.push((k[8..].to_vec(), v.to_vec()));
                    true
                })?;
            let alarm = self.r.get(Table::Alarms, &p)?.map(decode_u64);
            keyspaces.push(KeyspaceData { name, rows, alarm });
        }
        keyspaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ShardData { keyspaces })
    }

    /// Alarms of `shard`'s keyspaces due at or before `now_ms`, as `(keyspace, at_ms)`,
    /// earliest first: what the shard's leader fires.
    pub fn due_alarms(&self, shard: u32, now_ms: u64) -> Result<Vec<(String, u64)>> {
        let mut due = Vec::new();
        let hi = now_ms.saturating_add(1).to_be_bytes();
        self.r
            .scan(Table::AlarmIndex, &[], Some(&hi), false, |k, _| {
                let mut p = [0u8; 8];
                p.copy_from_slice(&k[8..16]);
                due.push((decode_u64(&k[..8]), p));
                true
            })?;
        let mut out = Vec::new();
        for (at, p) in due {
            if self
                .r
                .get(Table::ShardIndex, &shard_index_key(shard, &p))?
                .is_some()
            {
                if let Some(n) = self.r.get(Table::Prefixes, &p)? {
                    out.push((String::from_utf8_lossy(n).into_owned(), at));
                }
            }
        }
        Ok(out)
    }
}

/// One shard-layer write transaction (see [`Store::shard_write`]).
pub struct ShardTxn<'s> {
    store: &'s Store,
    w: WriteTxn<'s>,
    /// Keyspaces whose `names` rows this transaction writes; marked registered on commit.
    registered: Vec<Arc<KsShared>>,
    /// Keyspaces this transaction already resolved and wrote a `shard_index` row for: by
    /// name, `(shard, prefix)`. A round applies many sets of few keyspaces; each paid a
    /// registry lookup (on a follower, which holds no activation: an LMDB read and a new
    /// registry entry) and a `shard_index` write per set.
    indexed: std::collections::HashMap<String, (u32, [u8; 8])>,
    /// The keyspaces of `indexed`, alive for the transaction.
    keep: Vec<Arc<KsShared>>,
}

impl std::fmt::Debug for ShardTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardTxn").finish_non_exhaustive()
    }
}

impl ShardTxn<'_> {
    /// Writes a `raft` table row.
    pub fn raft_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.w.put(Table::Raft, key, value)
    }

    /// Reads a `raft` table row (including this transaction's writes).
    pub fn raft_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.w.get(Table::Raft, key)?.map(<[u8]>::to_vec))
    }

    /// Deletes `raft` rows `lo <= key < hi`; returns how many.
    pub fn raft_delete_range(&mut self, lo: &[u8], hi: &[u8]) -> Result<u64> {
        self.w.delete_range(Table::Raft, lo, hi)
    }

    fn shard_keyspace(&mut self, shard: u32, name: &str) -> Result<Arc<KsShared>> {
        let w = &self.w;
        let ks = self.store.inner.keyspace_shared(name, || {
            Ok(w.get(Table::Names, name.as_bytes())?.map(decode_u64))
        })?;
        if !ks.registered.load(Ordering::Acquire) {
            register(&mut self.w, &ks)?;
            self.registered.push(Arc::clone(&ks));
        }
        self.w
            .put(Table::ShardIndex, &shard_index_key(shard, &ks.prefix), &[])?;
        Ok(ks)
    }

    /// Applies a replicated write set to its keyspace, as a member of `shard`.
    pub fn apply(&mut self, shard: u32, set: &WriteSetData) -> Result<()> {
        set.check()?;
        let prefix = self.shard_prefix(shard, &set.keyspace)?;
        // Straight from the decoded set: no copy of its keys and values into a `WriteSet`.
        apply_parts(
            &mut self.w,
            &prefix,
            set.clear,
            set.entries.iter().map(|(k, v)| (&k[..], v.as_deref())),
            set.alarm,
        )
    }

    /// [`apply`](Self::apply) of a set decoded in place from its encoding: the same checks
    /// and the same writes, without the set's keys and values copied out of the entry.
    pub fn apply_decoded(&mut self, shard: u32, set: &DecodedWriteSet<'_>) -> Result<()> {
        let set = match &set.0 {
            Decoded::Owned(set) => return self.apply(shard, set),
            Decoded::Borrowed(set) => set,
        };
        let entries = set.entries.as_slice();
        check_set(set.keyspace, entries.iter().map(|(k, _)| k.len()))?;
        let prefix = self.shard_prefix(shard, set.keyspace)?;
        apply_parts(
            &mut self.w,
            &prefix,
            set.clear,
            entries.iter().copied(),
            set.alarm,
        )
    }

    /// The prefix of keyspace `name` of `shard`, registered (and indexed under the shard)
    /// in this transaction on its first write.
    fn shard_prefix(&mut self, shard: u32, name: &str) -> Result<[u8; 8]> {
        Ok(match self.indexed.get(name) {
            Some(&(s, prefix)) if s == shard => prefix,
            _ => {
                let ks = self.shard_keyspace(shard, name)?;
                self.indexed.insert(name.to_owned(), (shard, ks.prefix));
                // Kept for the transaction: its `registered` flag is set on commit.
                self.keep.push(ks);
                self.keep.last().expect("just pushed").prefix
            }
        })
    }

    /// Deletes every keyspace of `shard` (rows and alarms) and its `shard_index` rows. The
    /// `names` rows stay, so a name keeps its prefix on this node.
    pub fn clear_shard(&mut self, shard: u32) -> Result<()> {
        let prefixes = {
            let w = &self.w;
            shard_prefixes(
                |lo, hi, f| w.scan(Table::ShardIndex, lo, Some(hi), f),
                shard,
            )?
        };
        for p in prefixes {
            self.w.delete_range(Table::Data, &p, &data_end(&p))?;
            if let Some(at) = self.w.get(Table::Alarms, &p)?.map(decode_u64) {
                self.w.delete(Table::AlarmIndex, &alarm_index_key(at, &p))?;
                self.w.delete(Table::Alarms, &p)?;
            }
        }
        let (lo, hi) = shard_bounds(shard);
        self.w.delete_range(Table::ShardIndex, &lo, &hi)?;
        // Their `shard_index` rows are gone: a later apply writes them again.
        self.indexed.retain(|_, (s, _)| *s != shard);
        Ok(())
    }

    /// Replaces `shard`'s keyspaces with `data` (a snapshot install).
    pub fn install_shard(&mut self, shard: u32, data: &ShardData) -> Result<()> {
        self.clear_shard(shard)?;
        for ks in &data.keyspaces {
            let set = WriteSetData {
                keyspace: ks.name.clone(),
                clear: false,
                entries: ks
                    .rows
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
                alarm: ks.alarm.map(Some),
            };
            self.apply(shard, &set)?;
        }
        Ok(())
    }
}

impl Store {
    /// Runs `f` in one LMDB write transaction and commits it durably (one synchronous commit),
    /// unless `f` fails (then nothing of it is written). Serialized with the group-commit
    /// writer by LMDB's writer lock. Call it from a thread that may block.
    pub fn shard_write<R>(&self, f: impl FnOnce(&mut ShardTxn<'_>) -> Result<R>) -> Result<R> {
        let core = &self.inner.core;
        // Test seam: a commit hold stops shard rounds too (their log appends and applies).
        #[cfg(feature = "testing")]
        core.faults.wait_while_held();
        let mut txn = ShardTxn {
            store: self,
            w: core.env.begin_write()?,
            registered: Vec::new(),
            indexed: std::collections::HashMap::new(),
            keep: Vec::new(),
        };
        let out = f(&mut txn)?;
        let ShardTxn { w, registered, .. } = txn;
        w.commit()?;
        core.count_commit();
        for ks in registered {
            ks.registered.store(true, Ordering::Release);
        }
        Ok(out)
    }

    /// Runs `f` over a read snapshot.
    pub fn shard_read<R>(&self, f: impl FnOnce(&ShardRead<'_>) -> Result<R>) -> Result<R> {
        let r = ShardRead {
            r: self.inner.core.env.begin_read()?,
        };
        f(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn set(name: &str, k: &str, v: u64) -> WriteSetData {
        WriteSetData {
            keyspace: name.into(),
            clear: false,
            entries: vec![(k.as_bytes().to_vec(), Some(rmp_serde::to_vec(&v).unwrap()))],
            alarm: None,
        }
    }

    /// A write set travels in Raft entries as MessagePack: each alarm change (none, set,
    /// delete) must come back as it went.
    #[test]
    fn alarm_changes_survive_the_encoding() {
        for alarm in [None, Some(Some(1_000)), Some(None)] {
            let mut s = set("counter/a", "total", 5);
            s.alarm = alarm;
            let back: WriteSetData =
                rmp_serde::from_slice(&rmp_serde::to_vec(&s).unwrap()).unwrap();
            assert_eq!(back, s, "{alarm:?}");
        }
        // Entries written before: a plain `Option<Option<u64>>` (nil, or the time).
        #[derive(Serialize)]
        struct Before {
            keyspace: String,
            clear: bool,
            entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
            alarm: Option<Option<u64>>,
        }
        for alarm in [None, Some(Some(1_000))] {
            let old = Before {
                keyspace: "counter/a".into(),
                clear: false,
                entries: vec![],
                alarm,
            };
            let back: WriteSetData =
                rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
            assert_eq!(back.alarm, alarm);
        }
    }

    #[test]
    fn a_keyspace_cleared_and_written_again_in_one_round_stays_in_its_shard() {
        // One round: many sets of one keyspace (its `shard_index` row written once), its
        // shard destroyed, then written again (a re-added replica): the row must be back.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        store
            .shard_write(|t| {
                for v in 0..3 {
                    t.apply(2, &set("counter/c", "total", v))?;
                }
                t.clear_shard(2)?;
                t.apply(2, &set("counter/c", "total", 11))?;
                t.apply(2, &set("counter/c", "more", 12))
            })
            .unwrap();
        let data = store.shard_read(|r| r.export_shard(2)).unwrap();
        assert_eq!(data.keyspaces.len(), 1, "{data:?}");
        assert_eq!(data.keyspaces[0].name, "counter/c");
        assert_eq!(data.keyspaces[0].rows.len(), 2);
        let c = store.keyspace("counter/c").unwrap();
        assert_eq!(c.get::<u64>("total").unwrap(), Some(11));
    }

    #[test]
    fn applied_sets_are_read_through_keyspaces_and_exported_per_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        store
            .shard_write(|t| {
                t.apply(3, &set("counter/a", "total", 5))?;
                t.apply(4, &set("counter/b", "total", 7))?;
                t.raft_put(b"k", b"v")
            })
            .unwrap();
        let a = store.keyspace("counter/a").unwrap();
        assert_eq!(a.get::<u64>("total").unwrap(), Some(5));
        let data = store.shard_read(|r| r.export_shard(3)).unwrap();
        assert_eq!(data.keyspaces.len(), 1);
        assert_eq!(data.keyspaces[0].name, "counter/a");
        assert_eq!(
            store.shard_read(|r| r.raft_get(b"k")).unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn a_live_keyspace_handle_sees_replicated_writes_under_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        // Opened before any write: its in-memory prefix must be the one the apply uses.
        let b = store.keyspace("counter/b").unwrap();
        store
            .shard_write(|t| t.apply(1, &set("counter/b", "total", 9)))
            .unwrap();
        assert_eq!(b.get::<u64>("total").unwrap(), Some(9));
    }

    #[test]
    fn install_replaces_the_shard_and_keeps_other_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        store
            .shard_write(|t| {
                t.apply(1, &set("x", "k", 1))?;
                let mut with_alarm = set("y", "k", 2);
                with_alarm.alarm = Some(Some(1_000));
                t.apply(1, &with_alarm)?;
                t.apply(2, &set("z", "k", 3))
            })
            .unwrap();
        let exported = store.shard_read(|r| r.export_shard(1)).unwrap();
        assert_eq!(
            store.shard_read(|r| r.due_alarms(1, 2_000)).unwrap(),
            vec![("y".to_string(), 1_000)]
        );
        let replacement = ShardData {
            keyspaces: vec![KeyspaceData {
                name: "w".into(),
                rows: vec![(b"k".to_vec(), rmp_serde::to_vec(&4u64).unwrap())],
                alarm: None,
            }],
        };
        store
            .shard_write(|t| t.install_shard(1, &replacement))
            .unwrap();
        assert_eq!(
            store.shard_read(|r| r.export_shard(1)).unwrap(),
            replacement
        );
        assert!(store
            .shard_read(|r| r.due_alarms(1, 2_000))
            .unwrap()
            .is_empty());
        assert_eq!(store.keyspace("y").unwrap().get::<u64>("k").unwrap(), None);
        assert_eq!(
            store.keyspace("z").unwrap().get::<u64>("k").unwrap(),
            Some(3)
        );
        // Installing the old export back restores it exactly.
        store
            .shard_write(|t| t.install_shard(1, &exported))
            .unwrap();
        assert_eq!(store.shard_read(|r| r.export_shard(1)).unwrap(), exported);
    }

    #[test]
    fn a_failed_round_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let r: Result<()> = store.shard_write(|t| {
            t.apply(1, &set("x", "k", 1))?;
            t.raft_put(b"log", b"1")?;
            Err(StorageError::Injected)
        });
        assert!(r.is_err());
        assert_eq!(store.shard_read(|r| r.raft_get(b"log")).unwrap(), None);
        assert_eq!(store.keyspace("x").unwrap().get::<u64>("k").unwrap(), None);
    }

    /// A set applied from its encoding, read in place, writes exactly what the decoded
    /// set writes: rows, deletions, `clear`, alarms; an encoding from before `bin` (byte
    /// strings as arrays of integers) is decoded into a copy and applied the same.
    #[test]
    fn a_set_applied_in_place_from_its_encoding_writes_what_the_decoded_set_writes() {
        let mut first = set("counter/a", "total", 5);
        first
            .entries
            .push((b"gone".to_vec(), Some(rmp_serde::to_vec(&1u64).unwrap())));
        first.alarm = Some(Some(1_000));
        let mut second = set("counter/a", "other", 7);
        second.entries.push((b"gone".to_vec(), None));
        let mut cleared = set("counter/b", "x", 1);
        cleared.clear = true;
        cleared.alarm = Some(None);
        let mut three = set("counter/c", "a", 1);
        three.entries.push((b"b".to_vec(), None));
        three
            .entries
            .push((b"c".to_vec(), Some(rmp_serde::to_vec(&3u64).unwrap())));
        let mut none = set("counter/c", "unused", 0);
        none.entries.clear();
        none.alarm = Some(Some(7));
        let sets = [
            first,
            second,
            set("counter/b", "y", 2),
            cleared,
            three,
            none,
        ];

        /// The encoding before `bin`: plain `Vec<u8>`s (arrays of integers).
        #[derive(Serialize)]
        struct Old<'a> {
            keyspace: &'a str,
            clear: bool,
            entries: &'a [(Vec<u8>, Option<Vec<u8>>)],
            #[serde(with = "alarm_op")]
            alarm: Option<Option<u64>>,
        }
        let old = |s: &WriteSetData| {
            rmp_serde::to_vec(&Old {
                keyspace: &s.keyspace,
                clear: s.clear,
                entries: &s.entries,
                alarm: s.alarm,
            })
            .unwrap()
        };
        let export = |apply: &dyn Fn(&mut ShardTxn<'_>, &WriteSetData) -> Result<()>| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), Config::default()).unwrap();
            store
                .shard_write(|t| sets.iter().try_for_each(|s| apply(t, s)))
                .unwrap();
            store.shard_read(|r| r.export_shard(2)).unwrap()
        };
        let decoded = export(&|t, s| t.apply(2, s));
        assert_eq!(decoded.keyspaces.len(), 3);
        let in_place = export(&|t, s| {
            let bytes = rmp_serde::to_vec(s).unwrap();
            let set = DecodedWriteSet::decode(&bytes)?;
            assert!(set.is_borrowed(), "the current encoding is read in place");
            t.apply_decoded(2, &set)
        });
        assert_eq!(in_place, decoded);
        let from_old = export(&|t, s| {
            let bytes = old(s);
            let set = DecodedWriteSet::decode(&bytes)?;
            // (A set without entries has no byte strings: both encodings are the same.)
            assert!(
                !set.is_borrowed() || s.entries.is_empty(),
                "integer arrays cannot be borrowed"
            );
            t.apply_decoded(2, &set)
        });
        assert_eq!(from_old, decoded);
        // Checked like `apply`, and garbage is a decode error.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let mut bad = set("x", "k", 1);
        bad.entries[0].0 = vec![b'a'; MAX_KEY_LEN + 1];
        let bytes = rmp_serde::to_vec(&bad).unwrap();
        let r = store.shard_write(|t| t.apply_decoded(1, &DecodedWriteSet::decode(&bytes)?));
        assert!(matches!(r, Err(StorageError::KeyTooLarge { .. })), "{r:?}");
        assert!(matches!(
            DecodedWriteSet::decode(&[0xc1, 0x00]),
            Err(StorageError::Decode(_))
        ));
    }

    /// Keys of every length up to the limit land under their keyspace, whether the full
    /// key (prefix + key) is built on the stack or, past `SMALL_FULL_KEY`, on the heap.
    #[test]
    fn short_and_long_keys_of_a_replicated_set_are_applied_under_their_keyspace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let keys: Vec<String> = [1, 119, 120, 121, 300, MAX_KEY_LEN]
            .iter()
            .map(|&n| "k".repeat(n))
            .collect();
        let mut s = set("long", &keys[0], 0);
        s.entries.clear();
        for (i, k) in keys.iter().enumerate() {
            s.entries.push((
                k.as_bytes().to_vec(),
                Some(rmp_serde::to_vec(&(i as u64)).unwrap()),
            ));
        }
        let bytes = rmp_serde::to_vec(&s).unwrap();
        store
            .shard_write(|t| t.apply_decoded(4, &DecodedWriteSet::decode(&bytes)?))
            .unwrap();
        let ks = store.keyspace("long").unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                ks.get::<u64>(k).unwrap(),
                Some(i as u64),
                "key of {} bytes",
                k.len()
            );
        }
    }

    #[test]
    fn oversized_keys_in_a_replicated_set_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let mut bad = set("x", "k", 1);
        bad.entries[0].0 = vec![b'a'; MAX_KEY_LEN + 1];
        let r = store.shard_write(|t| t.apply(1, &bad));
        assert!(matches!(r, Err(StorageError::KeyTooLarge { .. })));
    }
}
