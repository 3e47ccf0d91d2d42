//! Keyspaces: one per named process, with an implicit transaction (the pending write set).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StorageError};
use crate::lmdb::ReadTxn;
use crate::replica::WriteSetData;
use crate::store::{from_ms, snapshot, to_ms, InFlight, KsShared, NoRoom, StoreInner};
use crate::ticket::{CommitTicket, TicketInner};
use crate::writeset::{get_alarm_raw, get_raw, list_raw, prefix_successor, Range, WriteSet};
use crate::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The storage of one named process: sees only its own keys.
///
/// Every write (`put`, `delete`, `delete_all`, `set_alarm`, ...) goes to the keyspace's
/// *pending write set*; every read sees the pending set and the sets handed to the writer but
/// not yet committed (read-your-writes), over the committed data. [`commit`](Self::commit)
/// hands the pending set to the group-commit writer and returns a [`CommitTicket`] that
/// resolves once it is durable. The object layer calls it once per handled message, which makes
/// each message's writes one atomic transaction.
///
/// Cheap to clone; clones (and other handles on the same name obtained while one is alive)
/// share the pending set. A keyspace is meant to be driven by one actor at a time.
#[derive(Clone)]
pub struct Keyspace {
    pub(crate) store: Arc<StoreInner>,
    pub(crate) ks: Arc<KsShared>,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace")
            .field("name", &self.ks.name)
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

/// Options of [`Keyspace::list`]. All bounds are user keys compared as bytes.
///
/// ```
/// # use cairn_storage::ListOptions;
/// let opts = ListOptions::new().prefix("user:").start_after("user:17").limit(10);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with these bytes.
    pub prefix: Option<Vec<u8>>,
    /// Only keys `>=` this (inclusive). Exclusive with `start_after`.
    pub start: Option<Vec<u8>>,
    /// Only keys `>` this (exclusive). Exclusive with `start`.
    pub start_after: Option<Vec<u8>>,
    /// Only keys `<` this (exclusive).
    pub end: Option<Vec<u8>>,
    /// Descending byte order (the bounds keep their meaning; `limit` counts from the top).
    pub reverse: bool,
    /// At most this many pairs.
    pub limit: Option<usize>,
}

impl ListOptions {
    /// Everything, ascending.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, p: impl AsRef<[u8]>) -> Self {
        self.prefix = Some(p.as_ref().to_vec());
        self
    }
    /// Sets [`start`](Self::start).
    pub fn start(mut self, k: impl AsRef<[u8]>) -> Self {
        self.start = Some(k.as_ref().to_vec());
        self
    }
    /// Sets [`start_after`](Self::start_after).
    pub fn start_after(mut self, k: impl AsRef<[u8]>) -> Self {
        self.start_after = Some(k.as_ref().to_vec());
        self
    }
    /// Sets [`end`](Self::end).
    pub fn end(mut self, k: impl AsRef<[u8]>) -> Self {
        self.end = Some(k.as_ref().to_vec());
        self
    }
    /// Sets [`reverse`](Self::reverse).
    pub fn reverse(mut self, r: bool) -> Self {
        self.reverse = r;
        self
    }
    /// Sets [`limit`](Self::limit).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    fn to_range(&self) -> Result<Range> {
        for k in [&self.prefix, &self.start, &self.start_after, &self.end]
            .into_iter()
            .flatten()
        {
            check_key(k)?;
        }
        if self.start.is_some() && self.start_after.is_some() {
            return Err(StorageError::ConflictingListOptions);
        }
        let mut lo = Vec::new();
        let after = self.start_after.as_ref().map(|k| {
            let mut k = k.clone();
            k.push(0); // the immediate successor of `k` in byte order
            k
        });
        for b in [&self.prefix, &self.start, &after].into_iter().flatten() {
            if *b > lo {
                lo.clone_from(b);
            }
        }
        let mut hi = self.end.clone();
        if let Some(ps) = self.prefix.as_deref().and_then(prefix_successor) {
            if hi.as_ref().is_none_or(|h| ps < *h) {
                hi = Some(ps);
            }
        }
        Ok(Range {
            lo,
            hi,
            reverse: self.reverse,
            limit: self.limit.unwrap_or(usize::MAX),
        })
    }
}

fn check_key(k: &[u8]) -> Result<()> {
    if k.len() > MAX_KEY_LEN {
        return Err(StorageError::KeyTooLarge {
            len: k.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let bytes = rmp_serde::to_vec_named(v).map_err(|e| StorageError::Encode(e.to_string()))?;
    if bytes.len() > MAX_VALUE_LEN {
        return Err(StorageError::ValueTooLarge {
            len: bytes.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    rmp_serde::from_slice(b).map_err(|e| StorageError::Decode(e.to_string()))
}

/// Where an operation reads through and writes to: the keyspace's pending set, or an explicit
/// transaction's local set on top of it.
trait Target {
    fn write(&self, f: impl FnOnce(&mut WriteSet));
    fn view<R>(
        &self,
        f: impl FnOnce(&[&WriteSet], &ReadTxn<'_>, &[u8; 8]) -> Result<R>,
    ) -> Result<R>;
}

fn view_with<R>(
    ks: &Keyspace,
    local: Option<&WriteSet>,
    f: impl FnOnce(&[&WriteSet], &ReadTxn<'_>, &[u8; 8]) -> Result<R>,
) -> Result<R> {
    let (layers, rtxn) = snapshot(&ks.store.core, &ks.ks)?;
    let mut refs: Vec<&WriteSet> = Vec::with_capacity(layers.len() + 1);
    refs.extend(local);
    refs.extend(layers.iter().map(|a| &**a));
    f(&refs, &rtxn, &ks.ks.prefix)
}

impl Target for Keyspace {
    fn write(&self, f: impl FnOnce(&mut WriteSet)) {
        let mut st = self.ks.state.lock();
        f(Arc::make_mut(&mut st.pending));
    }
    fn view<R>(
        &self,
        f: impl FnOnce(&[&WriteSet], &ReadTxn<'_>, &[u8; 8]) -> Result<R>,
    ) -> Result<R> {
        view_with(self, None, f)
    }
}

fn op_get<T: DeserializeOwned>(x: &impl Target, key: &[u8]) -> Result<Option<T>> {
    check_key(key)?;
    x.view(|l, r, p| get_raw(l, r, p, key))?
        .map(|b| decode(&b))
        .transpose()
}

fn op_get_many<T: DeserializeOwned, K: AsRef<[u8]>>(
    x: &impl Target,
    keys: impl IntoIterator<Item = K>,
) -> Result<Vec<Option<T>>> {
    let keys: Vec<K> = keys.into_iter().collect();
    for k in &keys {
        check_key(k.as_ref())?;
    }
    let raw = x.view(|l, r, p| {
        keys.iter()
            .map(|k| get_raw(l, r, p, k.as_ref()))
            .collect::<Result<Vec<_>>>()
    })?;
    raw.into_iter()
        .map(|b| b.map(|b| decode(&b)).transpose())
        .collect()
}

fn op_put<T: Serialize + ?Sized>(x: &impl Target, key: &[u8], value: &T) -> Result<()> {
    check_key(key)?;
    let v = encode(value)?;
    x.write(|w| w.put(key.to_vec(), v));
    Ok(())
}

fn op_put_many<'a, K: AsRef<[u8]>, T: Serialize + ?Sized + 'a>(
    x: &impl Target,
    entries: impl IntoIterator<Item = (K, &'a T)>,
) -> Result<()> {
    // Validate and encode everything first: an over-limit entry writes nothing.
    let encoded = entries
        .into_iter()
        .map(|(k, v)| {
            check_key(k.as_ref())?;
            Ok((k.as_ref().to_vec(), encode(v)?))
        })
        .collect::<Result<Vec<_>>>()?;
    x.write(|w| {
        for (k, v) in encoded {
            w.put(k, v);
        }
    });
    Ok(())
}

fn op_delete_many<K: AsRef<[u8]>>(
    x: &impl Target,
    keys: impl IntoIterator<Item = K>,
) -> Result<usize> {
    let keys: Vec<K> = keys.into_iter().collect();
    for k in &keys {
        check_key(k.as_ref())?;
    }
    let existing = x.view(|l, r, p| {
        let mut existing: Vec<&[u8]> = Vec::new();
        for k in &keys {
            let k = k.as_ref();
            if !existing.contains(&k) && get_raw(l, r, p, k)?.is_some() {
                existing.push(k);
            }
        }
        Ok(existing)
    })?;
    let n = existing.len();
    if n > 0 {
        x.write(|w| {
            for k in existing {
                w.delete(k.to_vec());
            }
        });
    }
    Ok(n)
}

fn op_list<T: DeserializeOwned>(x: &impl Target, opts: &ListOptions) -> Result<Vec<(Vec<u8>, T)>> {
    let range = opts.to_range()?;
    x.view(|l, r, p| list_raw(l, r, p, &range))?
        .into_iter()
        .map(|(k, v)| Ok((k, decode(&v)?)))
        .collect()
}

fn op_get_alarm(x: &impl Target) -> Result<Option<SystemTime>> {
    Ok(x.view(get_alarm_raw_adapter)?.map(from_ms))
}

fn get_alarm_raw_adapter(l: &[&WriteSet], r: &ReadTxn<'_>, p: &[u8; 8]) -> Result<Option<u64>> {
    get_alarm_raw(l, r, p)
}

/// Generates the shared data/alarm API on both [`Keyspace`] and [`Transaction`].
macro_rules! storage_api {
    () => {
        /// The value at `key`, decoded from MessagePack, or `None` if absent. Sees pending and
        /// in-flight writes.
        pub fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
            op_get(self, key.as_ref())
        }

        /// The values at `keys`, in the same order (`None` where absent), from one snapshot.
        pub fn get_many<T: DeserializeOwned, K: AsRef<[u8]>>(
            &self,
            keys: impl IntoIterator<Item = K>,
        ) -> Result<Vec<Option<T>>> {
            op_get_many(self, keys)
        }

        /// Stores `value` (MessagePack) at `key` in the pending write set.
        /// Fails with [`StorageError::KeyTooLarge`] / [`StorageError::ValueTooLarge`] without
        /// writing anything.
        pub fn put<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Result<()> {
            op_put(self, key.as_ref(), value)
        }

        /// Stores every pair, or — if any key or value is over its limit — none of them.
        pub fn put_many<'v, K: AsRef<[u8]>, T: Serialize + ?Sized + 'v>(
            &self,
            entries: impl IntoIterator<Item = (K, &'v T)>,
        ) -> Result<()> {
            op_put_many(self, entries)
        }

        /// Deletes `key`; returns whether it existed (as this keyspace sees it).
        pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
            Ok(op_delete_many(self, [key])? == 1)
        }

        /// Deletes `keys`; returns how many of them existed.
        pub fn delete_many<K: AsRef<[u8]>>(
            &self,
            keys: impl IntoIterator<Item = K>,
        ) -> Result<usize> {
            op_delete_many(self, keys)
        }

        /// `(key, value)` pairs selected by `opts`, in byte order of keys (descending if
        /// `opts.reverse`), from one snapshot.
        pub fn list<T: DeserializeOwned>(&self, opts: &ListOptions) -> Result<Vec<(Vec<u8>, T)>> {
            op_list(self, opts)
        }

        /// Deletes every key of the keyspace. Does **not** delete the alarm.
        pub fn delete_all(&self) -> Result<()> {
            self.write(WriteSet::clear);
            Ok(())
        }

        /// Sets the keyspace's one alarm to `at` (millisecond precision; replaces any other).
        pub fn set_alarm(&self, at: SystemTime) -> Result<()> {
            let ms = to_ms(at);
            self.write(|w| w.alarm = Some(Some(ms)));
            Ok(())
        }

        /// The alarm, if one is set (as this keyspace sees it, pending writes included).
        pub fn get_alarm(&self) -> Result<Option<SystemTime>> {
            op_get_alarm(self)
        }

        /// Removes the alarm, if any.
        pub fn delete_alarm(&self) -> Result<()> {
            self.write(|w| w.alarm = Some(None));
            Ok(())
        }
    };
}

impl Keyspace {
    pub(crate) fn new(store: Arc<StoreInner>, ks: Arc<KsShared>) -> Keyspace {
        Keyspace { store, ks }
    }

    /// The keyspace's name.
    pub fn name(&self) -> &str {
        &self.ks.name
    }

    /// The keyspace's 8-byte key prefix, as a number (see `DESIGN.md`).
    pub fn prefix(&self) -> u64 {
        u64::from_be_bytes(self.ks.prefix)
    }

    storage_api!();

    /// Runs `f` as an explicit transaction inside the implicit one: its writes land in the
    /// pending set only if `f` returns `Ok`; on `Err` they are all rolled back. Reads inside
    /// see the transaction's own writes.
    pub fn transaction<R, E>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let txn = Transaction {
            ks: self,
            local: RefCell::default(),
        };
        let r = f(&txn)?;
        let local = txn.local.into_inner();
        if !local.is_empty() {
            self.write(|w| w.merge(local));
        }
        Ok(r)
    }

    /// Whether there are writes not yet handed to the writer.
    pub fn has_pending(&self) -> bool {
        !self.ks.state.lock().pending.is_empty()
    }

    /// Whether the writes not yet handed to the writer set or delete the alarm.
    pub fn has_pending_alarm_change(&self) -> bool {
        self.ks.state.lock().pending.alarm.is_some()
    }

    /// Drops the pending writes (not those already committed or in flight) and clears the
    /// poison left by a failed commit. A restarted incarnation calls this before its first
    /// message.
    pub fn discard_pending(&self) {
        let mut st = self.ks.state.lock();
        st.pending = Arc::default();
        st.poisoned = false;
    }

    /// Hands the pending write set to the group-commit writer and returns a ticket that
    /// resolves once it is durable (or failed). Sets of one keyspace commit in order. A
    /// keyspace with a [`CommitRoute`](crate::CommitRoute) (a replicated object's) hands it to
    /// the route instead: see [`route_commits`](Self::route_commits).
    ///
    /// With nothing pending, the ticket is that of the latest in-flight set (an output gate
    /// must still wait for writes it may have read), or already `Ok` if none is in flight.
    /// After a failed commit (see [`StorageError::EarlierCommitFailed`]) the next call returns
    /// that error at once and discards what is pending.
    ///
    /// When the writer queue is full this waits for room (see the store's module doc),
    /// holding no lock; past [`Config::queue_wait`](crate::Config::queue_wait) the ticket
    /// fails with [`StorageError::Overloaded`] and the writes stay pending.
    pub fn commit(&self) -> CommitTicket {
        loop {
            // A place in the writer queue first, holding no keyspace lock (the writer takes
            // them to finish sets); given back below if this commit does not need it.
            let (reserved, dead) = if self.needs_writer() {
                match self.store.core.reserve() {
                    Ok(()) => (true, false),
                    Err(NoRoom::Overloaded) => {
                        return CommitTicket {
                            inner: TicketInner::resolved(Err(StorageError::Overloaded {
                                waited: self.store.core.queue_wait(),
                            })),
                        }
                    }
                    Err(NoRoom::Dead) => (false, true),
                }
            } else {
                (false, false)
            };
            if let Some(ticket) = self.commit_locked(reserved, dead) {
                return ticket;
            }
            // Writes arrived between the check and the lock: reserve for them first.
        }
    }

    /// `commit` once a place is reserved (or none is needed, or the writer is `dead`):
    /// `None` if the set needs a place after all and none was reserved.
    fn commit_locked(&self, reserved: bool, dead: bool) -> Option<CommitTicket> {
        let unreserve = || {
            if reserved {
                self.store.core.unreserve();
            }
        };
        let mut st = self.ks.state.lock();
        if st.poisoned {
            st.poisoned = false;
            st.pending = Arc::default();
            drop(st);
            unreserve();
            return Some(CommitTicket {
                inner: TicketInner::resolved(Err(StorageError::EarlierCommitFailed)),
            });
        }
        if st.pending.is_empty() {
            let inner = match st.inflight.back() {
                Some(f) => Arc::clone(&f.ticket),
                None => TicketInner::resolved(Ok(())),
            };
            drop(st);
            unreserve();
            return Some(CommitTicket { inner });
        }
        if st.route.is_none() && !reserved && !dead {
            return None;
        }
        let set = std::mem::take(&mut st.pending);
        let seq = st.next_seq;
        st.next_seq += 1;
        let ticket = TicketInner::new();
        st.inflight.push_back(InFlight {
            seq,
            set: Arc::clone(&set),
            ticket: Arc::clone(&ticket),
            done: false,
        });
        if let Some(route) = st.route.clone() {
            drop(st);
            unreserve();
            let data = WriteSetData::of(&self.ks.name, &set);
            return Some(self.hand_to_route(&route, data, seq, ticket));
        }
        if dead
            || !self
                .store
                .core
                .enqueue_commit(Arc::clone(&self.ks), seq, set, Arc::clone(&ticket))
        {
            st.inflight.pop_back();
            let error = self.store.core.env.fatal();
            ticket.resolve(Err(error.unwrap_or(StorageError::WriterStopped)));
        }
        Some(CommitTicket { inner: ticket })
    }

    /// Whether a `commit()` now would hand a set to the writer (something pending, no
    /// route, not poisoned). Checked before reserving a place; rechecked under the lock.
    fn needs_writer(&self) -> bool {
        let st = self.ks.state.lock();
        !st.poisoned && !st.pending.is_empty() && st.route.is_none()
    }

    /// Commits the pending writes and blocks until they (and all earlier ones) are durable.
    ///
    /// On a routed keyspace whose route forbids blocking the caller (a replicated object's,
    /// inside its handler: the shard that must commit the set runs on the same scheduler),
    /// fails with [`StorageError::NotReplicated`] and commits nothing: await
    /// [`commit`](Self::commit) there instead.
    pub fn sync(&self) -> Result<()> {
        self.may_block()?;
        self.commit().wait()
    }
}

/// An explicit transaction: see [`Keyspace::transaction`]. Same data and alarm API as
/// [`Keyspace`]; its writes stay local until the closure returns `Ok`.
pub struct Transaction<'k> {
    ks: &'k Keyspace,
    local: RefCell<WriteSet>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("keyspace", &self.ks.ks.name)
            .finish_non_exhaustive()
    }
}

impl Target for Transaction<'_> {
    fn write(&self, f: impl FnOnce(&mut WriteSet)) {
        f(&mut self.local.borrow_mut());
    }
    fn view<R>(
        &self,
        f: impl FnOnce(&[&WriteSet], &ReadTxn<'_>, &[u8; 8]) -> Result<R>,
    ) -> Result<R> {
        let local = self.local.borrow();
        view_with(self.ks, Some(&local), f)
    }
}

impl Transaction<'_> {
    storage_api!();
}
