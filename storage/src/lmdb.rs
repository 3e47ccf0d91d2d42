//! The only module that calls into `lmdb-rkv`.
//!
//! lmdb-rkv has had no release since 2020. Every use of the binding lives here, behind four
//! small types — [`Env`], [`Table`], [`ReadTxn`], [`WriteTxn`] — so that the binding can be
//! swapped (for `heed`, say) by rewriting this file alone. Nothing outside this module names a
//! `lmdb::` item, and the binding's errors are translated to [`StorageError`] here.
//!
//! Environment flags: `MDB_NOTLS` (read transactions are tied to the transaction object, not to
//! the thread, so actors on a work-stealing pool may read from any worker) and otherwise LMDB's
//! defaults, i.e. *synchronous* commits: `mdb_txn_commit` writes the dirty pages, flushes them
//! (`fdatasync`), then writes and flushes the meta page. That ordering is what makes a commit
//! atomic under `kill -9` and power loss alike; we do not use `MDB_NOSYNC` / `MDB_NOMETASYNC`.
//! Nor `MDB_NOSYNC` with an explicit `mdb_env_sync` after each commit: the meta page would
//! then be written with no flush between it and the data pages, so a power loss could keep
//! the new meta page and lose pages it points to (the power-loss test in `tests/crash.rs`
//! loses acknowledged sets that way). A unit test below reads the flags back from LMDB.
//!
//! # Full and fatal
//!
//! A commit that fails for want of room ([`StorageError::Full`]: `MDB_MAP_FULL`, `ENOSPC`,
//! `EDQUOT`, or LMDB's `EIO` for a short write while the file system has no space left) is
//! aborted and nothing else changes: LMDB wrote no meta page, so the pages it wrote are free
//! pages, and the next commit may succeed. Any other `EIO`, and `MDB_PANIC` (LMDB's fatal
//! state after a failed meta-page write), is *fatal*: the environment latches the error
//! ([`Env::fatal`]), every later write transaction fails with [`StorageError::Fatal`] before
//! touching LMDB, and the hooks registered with [`Env::on_fatal`] run once (the node exits
//! so its supervisor restarts it; reopening recovers the last committed state).

use std::path::{Path, PathBuf};

use lmdb::{Cursor, Transaction};
use parking_lot::Mutex;

use crate::error::StorageError;
use crate::latency::Histogram;

/// LMDB's compile-time maximum key size (`MDB_MAXKEYSIZE`, 511 in the bundled liblmdb).
pub(crate) const LMDB_MAX_KEY_SIZE: usize = 511;

// Cursor operations (`MDB_cursor_op` in lmdb.h). lmdb-rkv takes them as raw integers and does
// not re-export the constants; these values are part of LMDB's stable ABI.
const MDB_FIRST: u32 = 0;
const MDB_GET_CURRENT: u32 = 4;
const MDB_LAST: u32 = 6;
const MDB_NEXT: u32 = 8;
const MDB_PREV: u32 = 12;
const MDB_SET_RANGE: u32 = 17;

/// The named databases ("tables") of the store. See `DESIGN.md` for their byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// `prefix(8) ++ user key` → MessagePack value.
    Data,
    /// keyspace name (UTF-8) → `prefix(8)`.
    Names,
    /// `prefix(8)` → keyspace name (UTF-8).
    Prefixes,
    /// `prefix(8)` → `at_ms(8, big-endian)`.
    Alarms,
    /// `at_ms(8) ++ prefix(8)` → empty.
    AlarmIndex,
    /// ASCII tag → value (`next_prefix` → u64 BE; `format` → u32 BE).
    Meta,
    /// Replicated shards' Raft state (log, hard state, ...); keys laid out by `cairn-shard`.
    Raft,
    /// `shard(4, BE) ++ prefix(8)` → empty: which keyspaces belong to which replicated shard.
    ShardIndex,
}

const TABLES: [(Table, &str); 8] = [
    (Table::Data, "data"),
    (Table::Names, "names"),
    (Table::Prefixes, "prefixes"),
    (Table::Alarms, "alarms"),
    (Table::AlarmIndex, "alarm_index"),
    (Table::Meta, "meta"),
    (Table::Raft, "raft"),
    (Table::ShardIndex, "shard_index"),
];

/// An open LMDB environment with its tables.
pub(crate) struct Env {
    env: lmdb::Environment,
    dbs: [lmdb::Database; TABLES.len()],
    /// How long each committed write transaction took, from its begin to the end of its
    /// commit: applying its writes and the flushes.
    pub(crate) commit_latency: Histogram,
    /// How long each `mdb_txn_commit` took: the durable flush at the end of a write
    /// transaction (dirty pages written and `fdatasync`'d, then the meta page written
    /// through an `O_DSYNC` descriptor).
    pub(crate) fsync_latency: Histogram,
    /// The environment's directory (for the free space of its file system).
    dir: PathBuf,
    /// The fatal error, once there was one, and the hooks still to run on it.
    fatal: Mutex<FatalState>,
}

/// Hook run once when the environment turns fatal.
pub(crate) type FatalHook = Box<dyn FnOnce(&StorageError) + Send>;

#[derive(Default)]
struct FatalState {
    error: Option<StorageError>,
    hooks: Vec<FatalHook>,
}

/// Below this much space left for unprivileged writers, LMDB's `EIO` for a short write is
/// taken as a full file system (LMDB reports a short write as `EIO`).
const LOW_SPACE: u64 = 1 << 20;

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

fn map_err(e: lmdb::Error) -> StorageError {
    let code = e.to_err_code();
    match e {
        lmdb::Error::MapFull => StorageError::Full,
        _ if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error() =>
        {
            StorageError::Full
        }
        other => StorageError::Lmdb {
            code,
            message: other.to_string(),
        },
    }
}

impl Env {
    /// Opens (creating if needed) the environment in directory `dir` and all tables.
    pub(crate) fn open(dir: &Path, map_size: usize, max_readers: u32) -> Result<Env, StorageError> {
        let env = lmdb::Environment::new()
            .set_flags(lmdb::EnvironmentFlags::NO_TLS)
            .set_max_dbs(TABLES.len() as u32)
            .set_max_readers(max_readers)
            .set_map_size(map_size)
            .open(dir)
            .map_err(map_err)?;
        let mut dbs = Vec::with_capacity(TABLES.len());
        for (i, (table, name)) in TABLES.iter().enumerate() {
            debug_assert_eq!(*table as usize, i);
            dbs.push(
                env.create_db(Some(name), lmdb::DatabaseFlags::empty())
                    .map_err(map_err)?,
            );
        }
        let dbs: [lmdb::Database; TABLES.len()] = dbs.try_into().expect("one handle per table");
        Ok(Env {
            env,
            dbs,
            commit_latency: Histogram::default(),
            fsync_latency: Histogram::default(),
            dir: dir.to_owned(),
            fatal: Mutex::default(),
        })
    }

    /// The fatal error, if the environment has had one (see the module docs).
    pub(crate) fn fatal(&self) -> Option<StorageError> {
        self.fatal.lock().error.clone()
    }

    /// Runs `hook` once the environment turns fatal (at once if it already has), on the
    /// thread that saw the error.
    pub(crate) fn on_fatal(&self, hook: FatalHook) {
        let mut st = self.fatal.lock();
        match st.error.clone() {
            Some(error) => {
                drop(st);
                hook(&error);
            }
            None => st.hooks.push(hook),
        }
    }

    /// Latches a fatal error (the first one stays) and runs the hooks; returns it.
    fn turn_fatal(&self, code: i32, message: String) -> StorageError {
        let (error, hooks) = {
            let mut st = self.fatal.lock();
            if let Some(error) = &st.error {
                return error.clone();
            }
            let error = StorageError::Fatal { code, message };
            st.error = Some(error.clone());
            (error, std::mem::take(&mut st.hooks))
        };
        tracing::error!(%error, dir = %self.dir.display(), "storage failed; it takes no more writes");
        for hook in hooks {
            hook(&error);
        }
        error
    }

    /// Translates an error of a write transaction (its begin or commit): no room is
    /// [`StorageError::Full`], an I/O error or LMDB's panic turns the environment fatal.
    fn write_err(&self, e: lmdb::Error) -> StorageError {
        let code = e.to_err_code();
        let eio = rustix::io::Errno::IO.raw_os_error();
        match e {
            lmdb::Error::Panic => self.turn_fatal(code, e.to_string()),
            _ if code == eio && self.space_left().is_some_and(|left| left < LOW_SPACE) => {
                tracing::warn!(dir = %self.dir.display(), "short write on a full file system (LMDB says EIO)");
                StorageError::Full
            }
            _ if code == eio => self.turn_fatal(code, e.to_string()),
            other => map_err(other),
        }
    }

    /// Bytes an unprivileged writer may still use on the environment's file system.
    fn space_left(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// `(used, size)` in bytes: the pages the data file has grown to (LMDB reuses freed
    /// pages below that mark, so it is what runs into the map) and the map size.
    pub(crate) fn map_use(&self) -> Result<(u64, u64), StorageError> {
        let info = self.env.info().map_err(map_err)?;
        let page = u64::from(self.env.stat().map_err(map_err)?.page_size());
        Ok(((info.last_pgno() as u64 + 1) * page, info.map_size() as u64))
    }

    /// Opens the environment in `dir` read-only (beside a node that may be running on it, in
    /// this or another OS process: LMDB's lock file coordinates readers) and writes a
    /// compacted copy of it to `out`, as [`Env::copy_compacted`] does.
    pub(crate) fn copy_dir_compacted(dir: &Path, out: &std::fs::File) -> Result<(), StorageError> {
        if !dir.join("data.mdb").is_file() {
            return Err(StorageError::Io(std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no store in {}", dir.display()),
            ))));
        }
        let env = lmdb::Environment::new()
            .set_flags(lmdb::EnvironmentFlags::NO_TLS | lmdb::EnvironmentFlags::READ_ONLY)
            .set_max_dbs(TABLES.len() as u32)
            .open(dir)
            .map_err(map_err)?;
        copy_fd(&env, out)
    }

    /// Writes a consistent, compacted copy of the environment (LMDB's `mdb_env_copyfd2` with
    /// `MDB_CP_COMPACT`: one read snapshot, free pages left out) to `out`, which must be a
    /// fresh file opened for writing. Writers go on meanwhile; the copy is the snapshot.
    pub(crate) fn copy_compacted(&self, out: &std::fs::File) -> Result<(), StorageError> {
        copy_fd(&self.env, out)
    }

    /// The environment's flags as LMDB itself reports them (`mdb_env_get_flags`): what the
    /// durability of every commit rests on (see the module docs).
    #[cfg(test)]
    pub(crate) fn flags(&self) -> Result<lmdb::EnvironmentFlags, StorageError> {
        let mut bits: std::ffi::c_uint = 0;
        // SAFETY: `self.env.env()` is the live `MDB_env` this `Environment` owns (it is only
        // closed when `self.env` drops, which `&self` rules out during the call), and
        // `mdb_env_get_flags` only stores the flags into `bits`, a valid `c_uint` we own.
        let rc = unsafe { lmdb_sys::mdb_env_get_flags(self.env.env(), &mut bits) };
        if rc != 0 {
            return Err(map_err(lmdb::Error::from_err_code(rc)));
        }
        Ok(lmdb::EnvironmentFlags::from_bits_truncate(bits))
    }

    fn db(&self, t: Table) -> lmdb::Database {
        self.dbs[t as usize]
    }

    /// Begins a read-only snapshot.
    pub(crate) fn begin_read(&self) -> Result<ReadTxn<'_>, StorageError> {
        Ok(ReadTxn {
            env: self,
            txn: self.env.begin_ro_txn().map_err(map_err)?,
        })
    }

    /// Begins the (single, LMDB-serialized) write transaction; fails with the fatal error
    /// once there was one.
    pub(crate) fn begin_write(&self) -> Result<WriteTxn<'_>, StorageError> {
        if let Some(error) = self.fatal() {
            return Err(error);
        }
        Ok(WriteTxn {
            env: self,
            txn: self.env.begin_rw_txn().map_err(|e| self.write_err(e))?,
            began: std::time::Instant::now(),
        })
    }
}

/// `mdb_env_copyfd2(env, out, MDB_CP_COMPACT)`.
fn copy_fd(env: &lmdb::Environment, out: &std::fs::File) -> Result<(), StorageError> {
    use std::os::fd::AsRawFd;
    // SAFETY: `env.env()` is the live `MDB_env` owned by `env` (closed only when it drops,
    // which the borrow rules out during the call); `out` is an open descriptor borrowed for
    // the whole call, which LMDB only writes to and does not close. Exercised by
    // `store::tests::a_backup_taken_under_load_restores_every_acknowledged_write`.
    let rc =
        unsafe { lmdb_sys::mdb_env_copyfd2(env.env(), out.as_raw_fd(), lmdb_sys::MDB_CP_COMPACT) };
    if rc != 0 {
        return Err(map_err(lmdb::Error::from_err_code(rc)));
    }
    Ok(())
}

/// Shared read operations of both transaction kinds.
fn get<'t, T: Transaction>(
    txn: &'t T,
    db: lmdb::Database,
    key: &[u8],
) -> Result<Option<&'t [u8]>, StorageError> {
    match txn.get(db, &key) {
        Ok(v) => Ok(Some(v)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

/// Visits the keys `lo <= key < hi` (no upper bound when `hi` is `None`) in ascending order, or
/// descending when `reverse`, until `f` returns `false`.
fn scan<T: Transaction>(
    txn: &T,
    db: lmdb::Database,
    lo: &[u8],
    hi: Option<&[u8]>,
    reverse: bool,
    mut f: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StorageError> {
    let cursor = txn.open_ro_cursor(db).map_err(map_err)?;
    // Moves the cursor; returns whether it landed on an item. The item itself is then read
    // with GET_CURRENT, which keeps the borrow of the key simple.
    let step = |op: u32, key: Option<&[u8]>| -> Result<bool, StorageError> {
        match cursor.get(key, None, op) {
            Ok(_) => Ok(true),
            Err(lmdb::Error::NotFound) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    };
    let current = || -> Result<(&[u8], &[u8]), StorageError> {
        match cursor.get(None, None, MDB_GET_CURRENT) {
            Ok((Some(k), v)) => Ok((k, v)),
            Ok((None, _)) => Err(StorageError::Lmdb {
                code: 0,
                message: "cursor returned no key".into(),
            }),
            Err(e) => Err(map_err(e)),
        }
    };
    if !reverse {
        // LMDB rejects seek keys that are empty or longer than its maximum key size; seek with
        // a lower-or-equal key (FIRST, or `lo` truncated) and skip what lies below `lo`.
        let found = if lo.is_empty() {
            step(MDB_FIRST, None)?
        } else {
            step(MDB_SET_RANGE, Some(&lo[..lo.len().min(LMDB_MAX_KEY_SIZE)]))?
        };
        if !found {
            return Ok(());
        }
        loop {
            let (k, v) = current()?;
            if hi.is_some_and(|hi| k >= hi) {
                return Ok(());
            }
            if k >= lo && !f(k, v) {
                return Ok(());
            }
            if !step(MDB_NEXT, None)? {
                return Ok(());
            }
        }
    } else {
        // `hi` here is never longer than LMDB's key limit: callers bound it (see `list`).
        let positioned = match hi {
            Some(hi) if !hi.is_empty() => {
                if step(MDB_SET_RANGE, Some(hi))? {
                    step(MDB_PREV, None)?
                } else {
                    step(MDB_LAST, None)?
                }
            }
            Some(_) => false,
            None => step(MDB_LAST, None)?,
        };
        if !positioned {
            return Ok(());
        }
        loop {
            let (k, v) = current()?;
            if k < lo || !f(k, v) {
                return Ok(());
            }
            if !step(MDB_PREV, None)? {
                return Ok(());
            }
        }
    }
}

/// A read-only snapshot of the whole store.
pub(crate) struct ReadTxn<'e> {
    env: &'e Env,
    txn: lmdb::RoTransaction<'e>,
}

impl ReadTxn<'_> {
    pub(crate) fn get(&self, t: Table, key: &[u8]) -> Result<Option<&[u8]>, StorageError> {
        get(&self.txn, self.env.db(t), key)
    }

    pub(crate) fn scan(
        &self,
        t: Table,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        scan(&self.txn, self.env.db(t), lo, hi, reverse, f)
    }
}

/// The write transaction. Dropping it without [`WriteTxn::commit`] aborts it.
pub(crate) struct WriteTxn<'e> {
    env: &'e Env,
    txn: lmdb::RwTransaction<'e>,
    /// When it began (for [`Env::commit_latency`]).
    began: std::time::Instant,
}

impl WriteTxn<'_> {
    pub(crate) fn get(&self, t: Table, key: &[u8]) -> Result<Option<&[u8]>, StorageError> {
        get(&self.txn, self.env.db(t), key)
    }

    pub(crate) fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.txn
            .put(self.env.db(t), &key, &value, lmdb::WriteFlags::empty())
            .map_err(map_err)
    }

    /// Deletes `key`; returns whether it existed.
    pub(crate) fn delete(&mut self, t: Table, key: &[u8]) -> Result<bool, StorageError> {
        match self.txn.del(self.env.db(t), &key, None) {
            Ok(()) => Ok(true),
            Err(lmdb::Error::NotFound) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Deletes every key that starts with `prefix`; returns how many.
    pub(crate) fn delete_prefix(&mut self, t: Table, prefix: &[u8]) -> Result<u64, StorageError> {
        let db = self.env.db(t);
        let mut n = 0;
        loop {
            // Re-seek after every delete: simple and immune to cursor-after-delete subtleties.
            let mut next = None;
            scan(&self.txn, db, prefix, None, false, |k, _| {
                if k.starts_with(prefix) {
                    next = Some(k.to_vec());
                }
                false
            })?;
            match next {
                Some(k) => {
                    self.txn.del(db, &k, None).map_err(map_err)?;
                    n += 1;
                }
                None => return Ok(n),
            }
        }
    }

    /// Deletes every key `lo <= key < hi`; returns how many.
    pub(crate) fn delete_range(
        &mut self,
        t: Table,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<u64, StorageError> {
        let db = self.env.db(t);
        let mut doomed = Vec::new();
        scan(&self.txn, db, lo, Some(hi), false, |k, _| {
            doomed.push(k.to_vec());
            true
        })?;
        for k in &doomed {
            self.txn.del(db, k, None).map_err(map_err)?;
        }
        Ok(doomed.len() as u64)
    }

    pub(crate) fn scan(
        &self,
        t: Table,
        lo: &[u8],
        hi: Option<&[u8]>,
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        scan(&self.txn, self.env.db(t), lo, hi, false, f)
    }

    /// Commits durably (LMDB's synchronous commit: data pages flushed before the meta page).
    /// Times the flush ([`Env::fsync_latency`]) and the whole transaction
    /// ([`Env::commit_latency`]), failed commits included: both count every attempt.
    pub(crate) fn commit(self) -> Result<(), StorageError> {
        let WriteTxn { env, txn, began } = self;
        let flush = std::time::Instant::now();
        let committed = txn.commit().map_err(|e| env.write_err(e));
        let done = std::time::Instant::now();
        env.fsync_latency.record(done - flush);
        env.commit_latency.record(done - began);
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durability depends on these flags: no `MDB_NOSYNC` / `MDB_NOMETASYNC` (a commit returns
    /// only after its pages and then its meta page are on disk), no `MDB_MAPASYNC` /
    /// `MDB_WRITEMAP` (writes go through `pwrite`, which the power-loss shim of
    /// `tests/crash.rs` sees). `MDB_NOTLS` lets any worker thread read.
    #[test]
    fn the_environment_commits_synchronously() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::open(dir.path(), 1 << 20, 16).unwrap();
        let flags = env.flags().unwrap();
        for (flag, name) in [
            (lmdb::EnvironmentFlags::NO_SYNC, "MDB_NOSYNC"),
            (lmdb::EnvironmentFlags::NO_META_SYNC, "MDB_NOMETASYNC"),
            (lmdb::EnvironmentFlags::MAP_ASYNC, "MDB_MAPASYNC"),
            (lmdb::EnvironmentFlags::WRITE_MAP, "MDB_WRITEMAP"),
        ] {
            assert!(!flags.contains(flag), "{name} is set: {flags:?}");
        }
        assert!(flags.contains(lmdb::EnvironmentFlags::NO_TLS), "{flags:?}");
    }
}
