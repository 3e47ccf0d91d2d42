//! `cairn-storage`: the durable storage of Cairn's named processes and objects.
//!
//! One LMDB environment per node (`<data_dir>/storage`), divided into per-name
//! [`Keyspace`]s. Each keyspace has Durable Objects' *implicit transaction*: writes accumulate
//! in a pending write set that reads already see; [`Keyspace::commit`] hands the set to a single
//! group-commit writer thread, which commits the sets of many keyspaces in one LMDB transaction
//! with one durable flush, and resolves each set's [`CommitTicket`] once it is on disk.
//!
//! ```
//! use cairn_storage::{Config, ListOptions, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Config::default())?;
//! let counter = store.keyspace("counter/alice")?;
//!
//! counter.put("total", &5u64)?;                      // pending
//! assert_eq!(counter.get::<u64>("total")?, Some(5)); // read-your-writes
//! let ticket = counter.commit();                     // handed to the group-commit writer
//! ticket.wait()?;                                    // durable (fsync'd) now
//!
//! let all: Vec<(Vec<u8>, u64)> = counter.list(&ListOptions::new().prefix("to"))?;
//! assert_eq!(all, vec![(b"total".to_vec(), 5)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! * **Isolation.** Each name owns a keyspace that outlives any incarnation and sees only
//!   its keys.
//! * **Atomicity.** Writes between two `commit()`s commit atomically; reads see pending and
//!   in-flight writes of their keyspace.
//! * **Output gate.** The gate is the caller's: hold outgoing messages until the ticket
//!   resolves.
//! * **Group commit.** See [`store`'s docs](Store) — batching policy below.
//! * **Durability.** A ticket resolves `Ok` only after LMDB's synchronous commit returned:
//!   the data survives `kill -9` and power loss (`tests/crash.rs` checks both;
//!   `tests/durability.rs` counts the flushes). An unacknowledged set is wholly present or
//!   absent (it is inside one LMDB transaction). A failed set fails its ticket; the
//!   keyspace's later sets fail with [`StorageError::EarlierCommitFailed`].
//! * **Limits.** [`MAX_KEY_LEN`], [`MAX_VALUE_LEN`], [`MAX_NAME_LEN`]; over-limit input is
//!   an error and writes nothing.
//! * **Back-pressure.** The writer queue is bounded ([`Config::max_queued_sets`],
//!   [`Config::max_queued_bytes`]): a commit into a full queue waits for room, at most
//!   [`Config::queue_wait`], then fails with [`StorageError::Overloaded`] and keeps its
//!   writes pending.
//! * **Alarms.** One alarm per keyspace, in the same write set as the data; [`Store::due_alarms`]
//!   scans a time-ordered index.
//!
//! * **One node per data dir.** [`Store::open`] locks the data dir ([`DataDir`]); a second
//!   open, in this process or another, is refused with [`StorageError::Locked`]. The data
//!   dir also keeps the node's identity and start counter ([`DataDir::claim_identity`]).
//!
//! # Batching policy
//!
//! The writer takes everything queued, up to [`Config::max_batch_sets`] (default 1,024) sets
//! and [`Config::max_batch_bytes`] (default 64 MiB) — never waiting on a timer — and commits it
//! as one LMDB transaction. If that transaction fails, each of its sets is retried alone so only
//! the failing ones report errors.
//!
//! # On-disk layout
//!
//! Described byte by byte in `storage/DESIGN.md` (tables `data`, `names`, `prefixes`,
//! `alarms`, `alarm_index`, `meta`). In short: data key = 8-byte big-endian keyspace prefix ++
//! user key; value = MessagePack (`rmp_serde::to_vec_named`).
//!
//! # Binding
//!
//! Every call into `lmdb-rkv` is in the private `lmdb` module, so the binding can be replaced
//! (e.g. by `heed`) without touching the rest.

mod data_dir;
mod error;
mod keyspace;
pub mod latency;
mod lmdb;
mod replica;
mod route;
pub mod serde_bin;
mod store;
mod ticket;
mod writeset;

pub use data_dir::{DataDir, Identity, IDENTITY_FILE, LOCK_FILE};
pub use error::{Result, StorageError};
pub use keyspace::{Keyspace, ListOptions, Transaction};
pub use replica::{DecodedWriteSet, KeyspaceData, ShardData, ShardRead, ShardTxn, WriteSetData};
pub use route::{CommitRoute, RoutedCommit};
pub use store::{
    Alarm, Config, Stats, Store, DEFAULT_MAP_SIZE, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_SETS,
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_SETS, DEFAULT_MAX_READERS, DEFAULT_QUEUE_WAIT,
};
#[cfg(feature = "testing")]
pub use store::{CommitHold, FaultInjection};
pub use ticket::CommitTicket;

/// Length in bytes of the keyspace prefix in front of every stored key.
pub const PREFIX_LEN: usize = 8;

/// Longest user key, in bytes: LMDB's maximum key size (511) minus the 8-byte prefix = 503.
pub const MAX_KEY_LEN: usize = lmdb::LMDB_MAX_KEY_SIZE - PREFIX_LEN;

/// Longest value, in bytes of its MessagePack encoding: 16 MiB.
pub const MAX_VALUE_LEN: usize = 16 << 20;

/// Longest keyspace name, in bytes of UTF-8 (names are LMDB keys of the `names` table): 511.
pub const MAX_NAME_LEN: usize = lmdb::LMDB_MAX_KEY_SIZE;
