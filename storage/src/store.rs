//! The store: the LMDB environment, the keyspace registry and the group-commit writer.
//!
//! # Threads and locks
//!
//! * Caller threads (actors) read LMDB directly and append write sets to the writer's queue.
//! * ONE writer thread ([`writer_loop`]) owns all group commits.
//! * Lock order: a keyspace's `state` mutex, then the writer `queue` mutex. The writer never
//!   holds `queue` while taking a keyspace lock. A caller waiting for room in the queue
//!   (below) holds no keyspace lock, so the writer can always finish what it took.
//!   `Store::keyspace` holds the registry mutex while it allocates a prefix (an LMDB write
//!   transaction, serialized with the writer's by LMDB itself).
//!
//! # Group commit: many keyspaces' write sets, one LMDB transaction, one sync
//!
//! The writer sleeps on a condvar until the queue is non-empty, then takes everything queued,
//! up to [`Config::max_batch_sets`] write sets and [`Config::max_batch_bytes`] bytes (always at
//! least one set, however large). There is no timer: it never waits for more work to arrive, so
//! batches grow exactly as much as the previous fsync let work pile up — latency under light
//! load is one commit, throughput under heavy load is many sets per fsync.
//!
//! The batch is applied in queue order in one LMDB write transaction and committed with one
//! durable flush. If anything fails (a set hits `MDB_MAP_FULL`, the commit itself fails), the
//! transaction is aborted and — when the batch had more than one set — every set is retried
//! alone, in order, in its own transaction, so one bad set cannot sink the others and nothing
//! fails silently: each ticket gets its own set's outcome.
//!
//! # A bounded queue: durable work pushes back
//!
//! The queue holds at most [`Config::max_queued_sets`] write sets, and takes a new one only
//! while the bytes queued are below [`Config::max_queued_bytes`] (so it holds at most that
//! plus one set per concurrent committer). [`Keyspace::commit`](crate::Keyspace::commit)
//! reserves its place *before* it takes its keyspace's lock: when the queue is full the
//! committing thread waits (this is the push-back: a scheduler worker that waits here
//! stops taking messages, mailboxes fill, and senders wait) until the writer takes a batch,
//! for at most [`Config::queue_wait`]. Past that the commit fails with
//! [`StorageError::Overloaded`]: nothing of it was handed over, its writes stay pending
//! (the next `commit()` carries them), and the keyspace is *not* poisoned. Barriers
//! ([`Store::sync`]) are not counted. [`Stats::queued_sets`] and
//! [`Stats::queue_high_water`] show the queue (`tests/backpressure.rs` floods it).
//!
//! # Failure of a set
//!
//! Sets of one keyspace commit in hand-over order. When one fails, its keyspace is *poisoned*:
//! every later set of that keyspace already handed over fails with
//! [`StorageError::EarlierCommitFailed`] (they may have read the failed writes), the keyspace's
//! current pending writes are discarded, and its next `commit()` returns that error at once
//! (clearing the poison), unless [`Keyspace::discard_pending`](crate::Keyspace::discard_pending)
//! is called first — what a restarted incarnation does.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use crate::data_dir::DataDir;
use crate::error::{Result, StorageError};
use crate::keyspace::Keyspace;
use crate::latency::HistogramSnapshot;
use crate::lmdb::{Env, ReadTxn, Table, WriteTxn};
use crate::ticket::{CommitTicket, TicketInner};
use crate::writeset::{decode_u64, WriteSet};
use crate::MAX_NAME_LEN;

/// Default LMDB map size: 1 GiB. The map is address space, not disk: the data file grows as
/// data is written. Raise it for bigger nodes; a full map gives [`StorageError::Full`].
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// Default maximum number of concurrent LMDB read transactions (LMDB's own default is 126).
/// Each in-progress read (one `get`/`list` call) holds one slot for its duration.
pub const DEFAULT_MAX_READERS: u32 = 512;
/// Default bound on write sets per group commit. Large enough that 1,000 actors committing at
/// once share a handful of fsyncs; small enough to keep one transaction's dirty pages bounded.
pub const DEFAULT_MAX_BATCH_SETS: usize = 1024;
/// Default bound on the bytes (keys + encoded values) of one group commit: 64 MiB, well under
/// LMDB's per-transaction dirty-page limit (~512 MiB with 4 KiB pages).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;
/// Default bound on write sets waiting for the writer: 16 full batches. Each object has at
/// most 1,024 commits in flight; this bounds all of them together.
pub const DEFAULT_MAX_QUEUED_SETS: usize = 16 * DEFAULT_MAX_BATCH_SETS;
/// Default bound on the bytes waiting for the writer: 4 full batches (256 MiB).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 * DEFAULT_MAX_BATCH_BYTES;
/// Default longest wait for room in a full writer queue before a commit fails with
/// [`StorageError::Overloaded`].
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Meta table key of the next prefix to allocate (u64 BE).
const META_NEXT_PREFIX: &[u8] = b"next_prefix";
/// Meta table key of the on-disk format version (u32 BE).
const META_FORMAT: &[u8] = b"format";
/// The on-disk format described in `DESIGN.md`.
const FORMAT_VERSION: u32 = 1;
/// The first prefix handed out; 0 is reserved.
const FIRST_PREFIX: u64 = 1;

/// Store configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// LMDB map size in bytes: the most the store can hold. Default [`DEFAULT_MAP_SIZE`].
    pub map_size: usize,
    /// Maximum concurrent readers. Default [`DEFAULT_MAX_READERS`].
    pub max_readers: u32,
    /// Group commit bound in write sets. Default [`DEFAULT_MAX_BATCH_SETS`].
    pub max_batch_sets: usize,
    /// Group commit bound in bytes. Default [`DEFAULT_MAX_BATCH_BYTES`].
    pub max_batch_bytes: usize,
    /// Most write sets waiting for the writer (see the module doc). Default
    /// [`DEFAULT_MAX_QUEUED_SETS`].
    pub max_queued_sets: usize,
    /// The writer queue takes a new set only while it holds fewer bytes than this. Default
    /// [`DEFAULT_MAX_QUEUED_BYTES`].
    pub max_queued_bytes: usize,
    /// Longest wait for room in a full queue; then [`StorageError::Overloaded`]. Default
    /// [`DEFAULT_QUEUE_WAIT`].
    pub queue_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            map_size: DEFAULT_MAP_SIZE,
            max_readers: DEFAULT_MAX_READERS,
            max_batch_sets: DEFAULT_MAX_BATCH_SETS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_queued_sets: DEFAULT_MAX_QUEUED_SETS,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            queue_wait: DEFAULT_QUEUE_WAIT,
        }
    }
}

/// Counters of the writer's work, for benchmarks and tests. See [`Store::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// LMDB write transactions committed (group commits and their set-by-set retries). Each
    /// is one synchronous LMDB commit, which is where the flushes happen: the dirty pages are
    /// written and `fdatasync`'d, then the meta page is written through an `O_DSYNC`
    /// descriptor. `tests/durability.rs` counts those system calls against this number.
    pub commits: u64,
    /// Write sets committed successfully.
    pub write_sets: u64,
    /// Write sets whose commit failed (their tickets got the error).
    pub failed_write_sets: u64,
    /// Group commits that failed as a whole and were retried set by set.
    pub batch_retries: u64,
    /// The most write sets ever committed in one LMDB transaction.
    pub largest_batch: u64,
    /// How long each LMDB write transaction took, from its begin to its durable commit:
    /// applying its write sets, then the flush ([`Stats::fsync_latency`]). One observation
    /// per LMDB commit.
    pub commit_latency: HistogramSnapshot,
    /// How long the flush of each LMDB commit took (`mdb_txn_commit`: the dirty pages written
    /// and `fdatasync`'d, then the meta page written through an `O_DSYNC` descriptor). Its
    /// count is the number of flushes, and each flush lies within its commit, so its sum is
    /// at most [`Stats::commit_latency`]'s.
    pub fsync_latency: HistogramSnapshot,
    /// Bytes of the map the data file has grown to (LMDB reuses freed pages below this mark).
    pub map_used: u64,
    /// The map size: the most the data file may grow to (`StorageError::Full` past it).
    pub map_size: u64,
    /// Write sets waiting for the writer now (at most [`Config::max_queued_sets`]).
    pub queued_sets: u64,
    /// The most write sets ever waiting for the writer at once.
    pub queue_high_water: u64,
    /// Commits refused with [`StorageError::Overloaded`] (the queue stayed full for
    /// [`Config::queue_wait`]).
    pub overloaded_commits: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    write_sets: AtomicU64,
    failed_write_sets: AtomicU64,
    batch_retries: AtomicU64,
    largest_batch: AtomicU64,
    overloaded_commits: AtomicU64,
}

/// A test seam that makes commits fail on purpose, so callers can exercise their failed-commit
/// path. Obtain it with [`Store::fault_injection`]. Inert unless armed. Only with the
/// `testing` feature: without it the writer has no seam to check.
#[cfg(feature = "testing")]
#[derive(Default)]
pub struct FaultInjection {
    /// keyspace name → number of its next write sets to fail.
    sets: Mutex<HashMap<String, u32>>,
    /// Number of next LMDB commits to fail (after applying, before the commit).
    lmdb_commits: std::sync::atomic::AtomicU32,
    /// Number of live [`CommitHold`]s; the writer does not commit while it is non-zero.
    holds: Mutex<u32>,
    released: Condvar,
}

/// While alive, the writer commits nothing (see [`FaultInjection::hold_commits`]).
#[cfg(feature = "testing")]
#[must_use = "commits resume when the hold is dropped"]
pub struct CommitHold<'a> {
    faults: &'a FaultInjection,
}

#[cfg(feature = "testing")]
impl std::fmt::Debug for CommitHold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHold").finish()
    }
}

#[cfg(feature = "testing")]
impl Drop for CommitHold<'_> {
    fn drop(&mut self) {
        *self.faults.holds.lock() -= 1;
        self.faults.released.notify_all();
    }
}

#[cfg(feature = "testing")]
impl std::fmt::Debug for FaultInjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjection").finish_non_exhaustive()
    }
}

#[cfg(feature = "testing")]
impl FaultInjection {
    /// The next write set of keyspace `name` that reaches the writer fails with
    /// [`StorageError::Injected`] (and poisons the keyspace like any failed commit). Calls add up.
    pub fn fail_next_commit_of(&self, name: &str) {
        *self.sets.lock().entry(name.to_owned()).or_default() += 1;
    }

    /// The next `n` LMDB write transactions of the writer fail at commit time, as a failing
    /// disk would. A failed group commit is retried set by set, and those retries consume the
    /// count too.
    pub fn fail_next_lmdb_commits(&self, n: u32) {
        self.lmdb_commits.fetch_add(n, Ordering::SeqCst);
    }

    /// Holds every commit until the returned guard is dropped: write sets handed over meanwhile
    /// stay *in flight* (their tickets pending, their writes visible only to their keyspace),
    /// and then commit together. Replicated shards' rounds (`Store::shard_write`: Raft log
    /// appends, hard state, applies) wait too, so a replicated object's commits stall alike. For tests of in-flight reads, output gates and batching.
    pub fn hold_commits(&self) -> CommitHold<'_> {
        *self.holds.lock() += 1;
        CommitHold { faults: self }
    }

    pub(crate) fn wait_while_held(&self) {
        let mut holds = self.holds.lock();
        while *holds > 0 {
            self.released.wait(&mut holds);
        }
    }

    fn take_set_failure(&self, name: &str) -> bool {
        let mut sets = self.sets.lock();
        match sets.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    sets.remove(name);
                }
                true
            }
            _ => false,
        }
    }

    fn take_commit_failure(&self) -> bool {
        self.lmdb_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A due or scheduled alarm, as returned by [`Store::due_alarms`] and [`Store::next_alarm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    /// The keyspace (named process) whose alarm it is.
    pub name: String,
    /// When it is due (millisecond precision).
    pub at: SystemTime,
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// One handed-over write set, as the keyspace remembers it until it is committed.
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    pub(crate) set: Arc<WriteSet>,
    pub(crate) ticket: Arc<TicketInner>,
    /// A routed set that finished while an earlier one had not: it stays in the overlay
    /// (above the earlier one, which would otherwise shadow it) until every earlier set left.
    pub(crate) done: bool,
}

/// Mutable state of one keyspace. Guarded by `KsShared::state`.
#[derive(Default)]
pub(crate) struct KsState {
    /// Writes since the last `commit()`. `Arc` so readers can snapshot it without holding the
    /// lock; writers use `Arc::make_mut` (copying only if a reader holds a snapshot).
    pub(crate) pending: Arc<WriteSet>,
    /// Handed to the writer, not yet committed: oldest first. Written by callers (push) and by
    /// the writer (remove after commit or failure).
    pub(crate) inflight: VecDeque<InFlight>,
    /// Sequence number of the next handed-over set.
    pub(crate) next_seq: u64,
    /// The writer fails sets with `seq < poisoned_below` it has not committed yet (handed
    /// over before a failure, so at or after the failed set in the writer's order). A routed
    /// set is judged by whether it is still in `inflight` (see [`finish_set`]).
    pub(crate) poisoned_below: u64,
    /// Set when a commit failed; the next `commit()` fails at once and clears it.
    pub(crate) poisoned: bool,
    /// Where commits go instead of the writer (a replicated object's shard): see `route`.
    pub(crate) route: Option<Arc<dyn crate::route::CommitRoute>>,
}

/// What every handle on one keyspace shares.
pub(crate) struct KsShared {
    pub(crate) name: String,
    pub(crate) prefix: [u8; 8],
    /// Whether the name ↔ prefix rows are durable. A new name gets its prefix from memory at
    /// once; the rows are written in the same transaction as its first write set, so opening
    /// a keyspace never costs a synchronous commit (a prefix whose first set never commits
    /// holds no data and is simply never used again).
    pub(crate) registered: AtomicBool,
    pub(crate) state: Mutex<KsState>,
}

enum Job {
    Commit {
        ks: Arc<KsShared>,
        seq: u64,
        set: Arc<WriteSet>,
        ticket: Arc<TicketInner>,
    },
    /// Resolves once everything queued before it is done.
    Barrier(Arc<TicketInner>),
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
    /// Set if the writer thread died; new jobs fail at once.
    dead: bool,
    /// Write sets in `jobs`.
    sets: usize,
    /// Their bytes.
    bytes: usize,
    /// Places reserved by committers that have not enqueued yet (see [`Core::reserve`]).
    reserved: usize,
    /// The most `sets + reserved` ever.
    high_water: usize,
}

/// Why [`Core::reserve`] gave no place.
pub(crate) enum NoRoom {
    /// The writer is gone.
    Dead,
    /// The queue stayed full for `queue_wait`.
    Overloaded,
}

/// What the writer thread shares with the store handles.
pub(crate) struct Core {
    pub(crate) env: Env,
    /// Holds the data dir's lock while the environment is open (dropped after `env`).
    _dir: DataDir,
    config: Config,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Signalled when the writer takes a batch (room in the queue).
    room: Condvar,
    counters: Counters,
    #[cfg(feature = "testing")]
    pub(crate) faults: FaultInjection,
}

impl Core {
    /// Counts an LMDB commit made outside the writer thread (replicated shards' rounds).
    pub(crate) fn count_commit(&self) {
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves a place for one write set in the writer queue, waiting up to
    /// [`Config::queue_wait`] for room (see the module doc). Must be called holding no
    /// keyspace lock. Each `Ok` is used by [`Core::enqueue_commit`] or given back with
    /// [`Core::unreserve`].
    pub(crate) fn reserve(&self) -> std::result::Result<(), NoRoom> {
        let deadline = std::time::Instant::now() + self.config.queue_wait;
        let mut q = self.queue.lock();
        loop {
            if q.dead {
                return Err(NoRoom::Dead);
            }
            let busy = q.sets + q.reserved;
            let full = busy >= self.config.max_queued_sets.max(1)
                || (busy > 0 && q.bytes >= self.config.max_queued_bytes);
            if !full {
                q.reserved += 1;
                q.high_water = q.high_water.max(q.sets + q.reserved);
                return Ok(());
            }
            if self.room.wait_until(&mut q, deadline).timed_out() {
                drop(q);
                self.counters
                    .overloaded_commits
                    .fetch_add(1, Ordering::Relaxed);
                return Err(NoRoom::Overloaded);
            }
        }
    }

    /// How long [`Core::reserve`] waits at most.
    pub(crate) fn queue_wait(&self) -> Duration {
        self.config.queue_wait
    }

    /// Gives back a place [`Core::reserve`] gave that is not needed after all.
    pub(crate) fn unreserve(&self) {
        let mut q = self.queue.lock();
        q.reserved -= 1;
        drop(q);
        self.room.notify_one();
    }

    /// Hands a write set to the writer, in the place reserved for it ([`Core::reserve`]);
    /// `false` if the writer is gone. Called with the keyspace's state lock held, so sets
    /// of one keyspace enter the queue in `seq` order.
    pub(crate) fn enqueue_commit(
        &self,
        ks: Arc<KsShared>,
        seq: u64,
        set: Arc<WriteSet>,
        ticket: Arc<TicketInner>,
    ) -> bool {
        let mut q = self.queue.lock();
        q.reserved -= 1;
        if q.dead {
            return false;
        }
        q.sets += 1;
        q.bytes += set.bytes;
        q.jobs.push_back(Job::Commit {
            ks,
            seq,
            set,
            ticket,
        });
        drop(q);
        self.wake.notify_one();
        true
    }
}

/// Live keyspaces by name (weak), swept of dead entries as it grows.
#[derive(Default)]
struct Registry {
    map: HashMap<String, Weak<KsShared>>,
    sweep_at: usize,
}

pub(crate) struct StoreInner {
    pub(crate) core: Arc<Core>,
    dir: PathBuf,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// name → live keyspace state, so every handle on one name shares pending writes.
    registry: Mutex<Registry>,
    /// The next prefix to hand out (see [`KsShared::registered`]).
    next_prefix: AtomicU64,
}

impl StoreInner {
    /// The live state of keyspace `name`, or a new one whose prefix is `stored()` (the durable
    /// `names` row, read by the caller through whichever LMDB transaction it holds) or else a
    /// fresh one. Shared by [`Store::keyspace`] and the replicated-shard apply path, so a name
    /// has one prefix whichever path opens it first.
    pub(crate) fn keyspace_shared(
        &self,
        name: &str,
        stored: impl FnOnce() -> Result<Option<u64>>,
    ) -> Result<Arc<KsShared>> {
        let mut reg = self.registry.lock();
        if let Some(ks) = reg.map.get(name).and_then(Weak::upgrade) {
            return Ok(ks);
        }
        let existing = stored()?;
        let registered = existing.is_some();
        let prefix = existing.unwrap_or_else(|| self.next_prefix.fetch_add(1, Ordering::Relaxed));
        // Sweep dead entries only when the map has doubled since the last sweep: amortised
        // O(1) per open (a sweep per open made N activations cost O(N²)).
        if reg.map.len() >= reg.sweep_at {
            reg.map.retain(|_, w| w.strong_count() > 0);
            reg.sweep_at = (2 * reg.map.len()).max(1024);
        }
        let ks = Arc::new(KsShared {
            name: name.to_owned(),
            prefix: prefix.to_be_bytes(),
            registered: AtomicBool::new(registered),
            state: Mutex::new(KsState::default()),
        });
        reg.map.insert(name.to_owned(), Arc::downgrade(&ks));
        Ok(ks)
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        self.core.queue.lock().shutdown = true;
        self.core.wake.notify_all();
        if let Some(h) = self.writer.lock().take() {
            // The writer drains the queue before it exits, so every ticket gets resolved.
            let _ = h.join();
        }
    }
}

/// A node's store: one LMDB environment under `<data_dir>/storage`, shared by all keyspaces.
///
/// Cheap to clone. The environment stays open (and the writer thread running) while any
/// `Store` or [`Keyspace`] handle is alive. Open one store per directory per process (LMDB
/// forbids opening an environment twice in one process).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `<data_dir>/storage` and starts its writer thread.
    /// Locks `data_dir` first ([`DataDir::open`]; [`StorageError::Locked`] if in use).
    pub fn open(data_dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        Store::open_in(&DataDir::open(data_dir)?, config)
    }

    /// Opens the store in a data dir already opened (and locked) by the caller, which may
    /// have claimed its identity first; the store holds the lock for as long as it lives.
    pub fn open_in(data_dir: &DataDir, config: Config) -> Result<Store> {
        let dir = data_dir.path().join("storage");
        std::fs::create_dir_all(&dir)?;
        let env = Env::open(&dir, config.map_size, config.max_readers)?;
        let next_prefix = {
            let r = env.begin_read()?;
            r.get(Table::Meta, META_NEXT_PREFIX)?
                .map_or(FIRST_PREFIX, decode_u64)
        };
        {
            let mut w = env.begin_write()?;
            match w.get(Table::Meta, META_FORMAT)? {
                Some(v) if v != FORMAT_VERSION.to_be_bytes() => {
                    return Err(StorageError::Lmdb {
                        code: 0,
                        message: format!("unknown storage format {v:?} in {}", dir.display()),
                    });
                }
                Some(_) => drop(w),
                None => {
                    w.put(Table::Meta, META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
                    w.commit()?;
                }
            }
        }
        let core = Arc::new(Core {
            env,
            _dir: data_dir.clone(),
            config,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            counters: Counters::default(),
            #[cfg(feature = "testing")]
            faults: FaultInjection::default(),
        });
        let writer_core = Arc::clone(&core);
        let writer = std::thread::Builder::new()
            .name("cairn-storage-writer".into())
            .spawn(move || writer_main(writer_core))?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                core,
                dir,
                writer: Mutex::new(Some(writer)),
                registry: Mutex::new(Registry::default()),
                next_prefix: AtomicU64::new(next_prefix),
            }),
        })
    }

    /// The directory holding the LMDB files (`<data_dir>/storage`).
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The keyspace of `name`, allocating its prefix on first use (durably, before returning).
    /// The same name finds the same data after a restart. Handles on one name obtained while
    /// any is alive share one pending write set.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(StorageError::BadName {
                len: name.len(),
                max: MAX_NAME_LEN,
            });
        }
        let ks = self.inner.keyspace_shared(name, || {
            let r = self.inner.core.env.begin_read()?;
            Ok(r.get(Table::Names, name.as_bytes())?.map(decode_u64))
        })?;
        Ok(Keyspace::new(Arc::clone(&self.inner), ks))
    }

    /// Every keyspace that has committed a write set, as `(name, prefix)`, in name order (for
    /// tools). A name's rows are written with its first write set, so opening a keyspace
    /// costs no commit of its own.
    pub fn keyspaces(&self) -> Result<Vec<(String, u64)>> {
        let r = self.inner.core.env.begin_read()?;
        let mut out = Vec::new();
        r.scan(Table::Names, &[], None, false, |k, v| {
            out.push((String::from_utf8_lossy(k).into_owned(), decode_u64(v)));
            true
        })?;
        Ok(out)
    }

    /// Blocks until every write set handed over before this call is durable (or failed).
    pub fn sync(&self) -> Result<()> {
        let t = TicketInner::new();
        {
            let mut q = self.inner.core.queue.lock();
            if q.dead {
                return Err(StorageError::WriterStopped);
            }
            q.jobs.push_back(Job::Barrier(Arc::clone(&t)));
        }
        self.inner.core.wake.notify_one();
        CommitTicket { inner: t }.wait()
    }

    /// Committed alarms due at or before `now`, earliest first (ties by keyspace prefix).
    /// A range scan of the time-ordered alarm index: cost proportional to the number due.
    /// Alarms still pending or in flight are not seen until their write set commits.
    pub fn due_alarms(&self, now: SystemTime) -> Result<Vec<Alarm>> {
        let hi = to_ms(now).checked_add(1).map(u64::to_be_bytes);
        self.scan_alarms(hi.as_ref().map(|h| &h[..]), usize::MAX)
    }

    /// How many committed alarms are due at or before `now`, counting at most `limit`: the
    /// number [`Store::due_alarms`] would return, capped at `limit`. One read transaction
    /// over the time-ordered alarm index, one cursor step per due alarm and no name lookups,
    /// so a caller that must stay cheap (a metrics scrape) bounds its cost with `limit`.
    pub fn count_due_alarms(&self, now: SystemTime, limit: u64) -> Result<u64> {
        let hi = to_ms(now).checked_add(1).map(u64::to_be_bytes);
        let r = self.inner.core.env.begin_read()?;
        let mut due = 0u64;
        if limit > 0 {
            r.scan(
                Table::AlarmIndex,
                &[],
                hi.as_ref().map(|h| &h[..]),
                false,
                |_, _| {
                    due += 1;
                    due < limit
                },
            )?;
        }
        Ok(due)
    }

    /// The earliest committed alarm, if any (the scheduler's next wake-up).
    pub fn next_alarm(&self) -> Result<Option<Alarm>> {
        Ok(self.scan_alarms(None, 1)?.pop())
    }

    fn scan_alarms(&self, hi: Option<&[u8]>, limit: usize) -> Result<Vec<Alarm>> {
        let r = self.inner.core.env.begin_read()?;
        let mut found = Vec::new();
        r.scan(Table::AlarmIndex, &[], hi, false, |k, _| {
            found.push((decode_u64(&k[..8]), k[8..16].to_vec()));
            found.len() < limit
        })?;
        found
            .into_iter()
            .map(|(at, prefix)| {
                let name = r
                    .get(Table::Prefixes, &prefix)?
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                Ok(Alarm {
                    name,
                    at: from_ms(at),
                })
            })
            .collect()
    }

    /// The fatal error this store has had, if any ([`StorageError::Fatal`]: an I/O error
    /// while committing, or LMDB's fatal state). After one, every commit fails with it.
    pub fn fatal_error(&self) -> Option<StorageError> {
        self.inner.core.env.fatal()
    }

    /// Runs `hook` once when the store turns fatal (at once if it already has), on the thread
    /// that saw the error (the writer, or a replicated shard's). A node exits from it, so
    /// that its supervisor restarts it: a fatal store takes no more durable work, and
    /// reopening it recovers the last committed state.
    pub fn on_fatal(&self, hook: impl FnOnce(&StorageError) + Send + 'static) {
        self.inner.core.env.on_fatal(Box::new(hook));
    }

    /// A snapshot of the writer's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.core.counters;
        let (map_used, map_size) = self.inner.core.env.map_use().unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the LMDB map use");
            (0, 0)
        });
        let (queued_sets, queue_high_water) = {
            let q = self.inner.core.queue.lock();
            (q.sets as u64, q.high_water as u64)
        };
        Stats {
            queued_sets,
            queue_high_water,
            overloaded_commits: c.overloaded_commits.load(Ordering::Relaxed),
            commit_latency: self.inner.core.env.commit_latency.snapshot(),
            fsync_latency: self.inner.core.env.fsync_latency.snapshot(),
            map_used,
            map_size,
            commits: c.commits.load(Ordering::Relaxed),
            write_sets: c.write_sets.load(Ordering::Relaxed),
            failed_write_sets: c.failed_write_sets.load(Ordering::Relaxed),
            batch_retries: c.batch_retries.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Writes a consistent online copy of the whole store to `out` (a new, empty file),
    /// compacted (LMDB's copy with `MDB_CP_COMPACT`). Commits go on meanwhile; the copy holds
    /// exactly what was committed when it began. [`Store::restore`] brings it back.
    pub fn backup(&self, out: &std::fs::File) -> Result<()> {
        self.inner.core.env.copy_compacted(out)
    }

    /// Writes a consistent copy of the store in `data_dir` to `out`, as [`Store::backup`]
    /// does, without opening it as a [`Store`]: for `cairn-node backup` beside a running
    /// node (LMDB lets another OS process read while the node writes).
    pub fn backup_dir(data_dir: &Path, out: &std::fs::File) -> Result<()> {
        Env::copy_dir_compacted(&data_dir.join("storage"), out)
    }

    /// Puts the backup `file` (made by [`Store::backup`]) in place as the store of
    /// `data_dir`, which must not hold a store yet (the backup is never merged into live
    /// data). The node then opens it as usual.
    pub fn restore(file: &Path, data_dir: &Path) -> Result<()> {
        let dir = data_dir.join("storage");
        let target = dir.join("data.mdb");
        if target.exists() {
            return Err(StorageError::Exists(target));
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(file, &target)?;
        // Opening checks it is a store (LMDB's meta pages, our format version).
        Store::open(data_dir, Config::default()).map(drop)
    }

    /// The failure-injection seam (for tests of the failed-commit path).
    #[cfg(feature = "testing")]
    pub fn fault_injection(&self) -> &FaultInjection {
        &self.inner.core.faults
    }
}

/// Begins a read snapshot of `ks`: the overlay layers (newest first) and an LMDB snapshot taken
/// while the keyspace lock is held, so that no set can move from "in flight" to "committed"
/// between the two (every set is either in the layers, or in the snapshot, or both).
pub(crate) fn snapshot<'e>(
    core: &'e Core,
    ks: &KsShared,
) -> Result<(Vec<Arc<WriteSet>>, ReadTxn<'e>)> {
    let st = ks.state.lock();
    let mut layers = Vec::with_capacity(1 + st.inflight.len());
    if !st.pending.is_empty() {
        layers.push(Arc::clone(&st.pending));
    }
    layers.extend(st.inflight.iter().rev().map(|f| Arc::clone(&f.set)));
    let rtxn = core.env.begin_read()?;
    drop(st);
    Ok((layers, rtxn))
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

fn writer_main(core: Arc<Core>) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer_loop(&core)));
    if result.is_err() {
        tracing::error!("cairn-storage writer thread panicked; failing all queued commits");
        stop_writer(&core, &StorageError::WriterStopped);
    }
}

/// Marks the queue dead (new commits fail at once) and fails every queued job with `error`.
fn stop_writer(core: &Core, error: &StorageError) {
    let jobs = {
        let mut q = core.queue.lock();
        q.dead = true;
        (q.sets, q.bytes) = (0, 0);
        std::mem::take(&mut q.jobs)
    };
    // Committers waiting for room find the writer gone.
    core.room.notify_all();
    for j in jobs {
        match j {
            Job::Commit { ticket, .. } | Job::Barrier(ticket) => ticket.resolve(Err(error.clone())),
        }
    }
}

fn writer_loop(core: &Core) {
    loop {
        {
            let mut q = core.queue.lock();
            while q.jobs.is_empty() && !q.shutdown {
                core.wake.wait(&mut q);
            }
            if q.jobs.is_empty() {
                return; // shutdown with nothing left
            }
        }
        // Test seam; then take what is queued *now*, so held sets commit as one batch.
        #[cfg(feature = "testing")]
        core.faults.wait_while_held();
        let batch = {
            let mut q = core.queue.lock();
            let batch = take_batch(&mut q.jobs, &core.config);
            for job in &batch {
                if let Job::Commit { set, .. } = job {
                    q.sets -= 1;
                    q.bytes -= set.bytes;
                }
            }
            batch
        };
        // The batch left the queue: committers waiting for room may go on.
        core.room.notify_all();
        process_batch(core, batch);
        if let Some(error) = core.env.fatal() {
            // Nothing more can commit: fail what waits and refuse what comes.
            stop_writer(core, &error);
            return;
        }
    }
}

/// Takes queued jobs up to the configured bounds (at least one).
fn take_batch(jobs: &mut VecDeque<Job>, config: &Config) -> Vec<Job> {
    let mut batch = Vec::new();
    let (mut sets, mut bytes) = (0usize, 0usize);
    while let Some(job) = jobs.front() {
        if let Job::Commit { set, .. } = job {
            if sets > 0
                && (sets >= config.max_batch_sets || bytes + set.bytes > config.max_batch_bytes)
            {
                break;
            }
            sets += 1;
            bytes += set.bytes;
        }
        batch.extend(jobs.pop_front());
    }
    batch
}

struct Live {
    ks: Arc<KsShared>,
    seq: u64,
    set: Arc<WriteSet>,
    ticket: Arc<TicketInner>,
}

fn process_batch(core: &Core, batch: Vec<Job>) {
    let mut barriers = Vec::new();
    let mut live = Vec::new();
    for job in batch {
        match job {
            Job::Barrier(t) => barriers.push(t),
            Job::Commit {
                ks,
                seq,
                set,
                ticket,
            } => {
                let poisoned = seq < ks.state.lock().poisoned_below;
                if poisoned {
                    fail(core, &ks, seq, &ticket, StorageError::EarlierCommitFailed);
                } else if let Some(e) = injected_set_failure(core, &ks.name) {
                    fail(core, &ks, seq, &ticket, e);
                } else {
                    live.push(Live {
                        ks,
                        seq,
                        set,
                        ticket,
                    });
                }
            }
        }
    }
    if !live.is_empty() {
        match commit_sets(core, &live) {
            Ok(()) => {
                core.counters
                    .largest_batch
                    .fetch_max(live.len() as u64, Ordering::Relaxed);
                for l in &live {
                    succeed(core, l);
                }
            }
            Err(e) if live.len() == 1 => {
                let l = &live[0];
                fail(core, &l.ks, l.seq, &l.ticket, e);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    sets = live.len(),
                    "group commit failed; retrying its write sets one by one"
                );
                core.counters.batch_retries.fetch_add(1, Ordering::Relaxed);
                for l in &live {
                    if l.seq < l.ks.state.lock().poisoned_below {
                        fail(
                            core,
                            &l.ks,
                            l.seq,
                            &l.ticket,
                            StorageError::EarlierCommitFailed,
                        );
                        continue;
                    }
                    match commit_sets(core, std::slice::from_ref(l)) {
                        Ok(()) => succeed(core, l),
                        Err(e) => fail(core, &l.ks, l.seq, &l.ticket, e),
                    }
                }
            }
        }
    }
    for b in barriers {
        b.resolve(Ok(()));
    }
}

/// The failure [`FaultInjection`] armed for the next write set of `name`, if any.
#[cfg(feature = "testing")]
fn injected_set_failure(core: &Core, name: &str) -> Option<StorageError> {
    core.faults
        .take_set_failure(name)
        .then_some(StorageError::Injected)
}

/// Without the `testing` feature nothing is injected.
#[cfg(not(feature = "testing"))]
fn injected_set_failure(_: &Core, _: &str) -> Option<StorageError> {
    None
}

/// The failure [`FaultInjection`] armed for the next LMDB commit, if any.
#[cfg(feature = "testing")]
fn injected_lmdb_failure(core: &Core) -> Option<StorageError> {
    core.faults
        .take_commit_failure()
        .then_some(StorageError::Injected)
}

/// Without the `testing` feature nothing is injected.
#[cfg(not(feature = "testing"))]
fn injected_lmdb_failure(_: &Core) -> Option<StorageError> {
    None
}

/// Applies `sets` in one LMDB write transaction and commits it durably.
fn commit_sets(core: &Core, sets: &[Live]) -> Result<()> {
    let mut w = core.env.begin_write()?;
    for l in sets {
        if !l.ks.registered.load(Ordering::Acquire) {
            register(&mut w, &l.ks)?;
        }
        apply(&mut w, &l.ks.prefix, &l.set)?;
    }
    if let Some(e) = injected_lmdb_failure(core) {
        return Err(e); // `w` drops: aborted
    }
    w.commit()?;
    core.counters.commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes a new name's `names`/`prefixes` rows and advances `next_prefix` past its prefix
/// (idempotent: a set retried alone writes the same rows again).
pub(crate) fn register(w: &mut WriteTxn<'_>, ks: &KsShared) -> Result<()> {
    w.put(Table::Names, ks.name.as_bytes(), &ks.prefix)?;
    w.put(Table::Prefixes, &ks.prefix, ks.name.as_bytes())?;
    let prefix = u64::from_be_bytes(ks.prefix);
    let next = w
        .get(Table::Meta, META_NEXT_PREFIX)?
        .map_or(FIRST_PREFIX, decode_u64);
    if next <= prefix {
        w.put(Table::Meta, META_NEXT_PREFIX, &(prefix + 1).to_be_bytes())?;
    }
    Ok(())
}

/// Writes one set into the transaction (layout: see `DESIGN.md`).
pub(crate) fn apply(w: &mut WriteTxn<'_>, prefix: &[u8; 8], set: &WriteSet) -> Result<()> {
    apply_parts(
        w,
        prefix,
        set.clear,
        set.entries.iter().map(|(k, v)| (&k[..], v.as_deref())),
        set.alarm,
    )
}

/// Full keys (keyspace prefix + user key) up to this long are built on the stack by
/// [`apply_parts`]; longer ones in a heap buffer. Object state keys are short.
const SMALL_FULL_KEY: usize = 128;

/// [`apply`] from its parts: `clear`, then `entries` in order (a later entry of a key wins),
/// then the alarm change.
pub(crate) fn apply_parts<'a>(
    w: &mut WriteTxn<'_>,
    prefix: &[u8; 8],
    clear: bool,
    entries: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    alarm: Option<crate::writeset::AlarmOp>,
) -> Result<()> {
    if clear {
        w.delete_prefix(Table::Data, prefix)?;
    }
    // The full key (prefix + user key) is built on the stack when it fits: a replicated
    // write set is applied on every replica, and a heap buffer per set was one of the
    // largest sources of allocations per replicated write.
    let mut small = [0u8; SMALL_FULL_KEY];
    let mut large = Vec::new();
    for (k, v) in entries {
        let fk: &[u8] = if prefix.len() + k.len() <= SMALL_FULL_KEY {
            small[..prefix.len()].copy_from_slice(prefix);
            small[prefix.len()..prefix.len() + k.len()].copy_from_slice(k);
            &small[..prefix.len() + k.len()]
        } else {
            large.clear();
            large.extend_from_slice(prefix);
            large.extend_from_slice(k);
            &large
        };
        match v {
            Some(v) => w.put(Table::Data, fk, v)?,
            None => {
                w.delete(Table::Data, fk)?;
            }
        }
    }
    if let Some(op) = alarm {
        if let Some(old) = w.get(Table::Alarms, prefix)?.map(decode_u64) {
            w.delete(Table::AlarmIndex, &alarm_index_key(old, prefix))?;
        }
        match op {
            Some(at) => {
                w.put(Table::Alarms, prefix, &at.to_be_bytes())?;
                w.put(Table::AlarmIndex, &alarm_index_key(at, prefix), &[])?;
            }
            None => {
                w.delete(Table::Alarms, prefix)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn alarm_index_key(at: u64, prefix: &[u8; 8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..].copy_from_slice(prefix);
    k
}

fn succeed(core: &Core, l: &Live) {
    l.ks.registered.store(true, Ordering::Release);
    {
        let mut st = l.ks.state.lock();
        if let Some(pos) = st.inflight.iter().position(|f| f.seq == l.seq) {
            st.inflight.remove(pos);
        }
    }
    core.counters.write_sets.fetch_add(1, Ordering::Relaxed);
    l.ticket.resolve(Ok(()));
}

/// A routed set (see `route`) is durable and applied: it leaves the in-flight list and its
/// ticket resolves, unless an earlier set failed meanwhile (then it fails too).
pub(crate) fn finish_set(core: &Core, ks: &KsShared, seq: u64, ticket: &TicketInner) {
    {
        let mut st = ks.state.lock();
        // A set no longer listed was unlisted by the failure of a set handed over at or before
        // it (`fail`): it was built on writes that did not commit. A set handed over *before* a failed one is still listed and stands:
        // it never read the failed set's writes (a route may report a later set's failure
        // first, e.g. a shard refusing an oversized set while earlier ones are in flight).
        let Some(f) = st.inflight.iter_mut().find(|f| f.seq == seq) else {
            drop(st);
            return fail(core, ks, seq, ticket, StorageError::EarlierCommitFailed);
        };
        // Routes may report out of order: a finished set leaves the overlay only with every
        // earlier one, or an earlier set still listed would be read over it.
        f.done = true;
        while st.inflight.front().is_some_and(|f| f.done) {
            st.inflight.pop_front();
        }
    }
    core.counters.write_sets.fetch_add(1, Ordering::Relaxed);
    ticket.resolve(Ok(()));
}

/// Fails set `seq` of `ks` and poisons the keyspace (see the module docs).
pub(crate) fn fail(core: &Core, ks: &KsShared, seq: u64, ticket: &TicketInner, err: StorageError) {
    {
        let mut st = ks.state.lock();
        if seq >= st.poisoned_below {
            // First failure of this run: every set handed over since this one (built on its
            // writes) fails too, and so does the next commit.
            tracing::warn!(keyspace = %ks.name, error = %err, "commit failed");
            st.poisoned_below = st.next_seq;
            st.poisoned = true;
            st.pending = Arc::default();
        }
        st.inflight.retain(|f| f.seq < seq);
    }
    core.counters
        .failed_write_sets
        .fetch_add(1, Ordering::Relaxed);
    ticket.resolve(Err(err));
}
