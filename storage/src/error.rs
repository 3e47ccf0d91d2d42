//! The crate's one error type.

use std::sync::Arc;

/// Everything that can go wrong in `cairn-storage`.
///
/// `Clone` because one failed group commit hands the same error to every ticket it affects.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No room: the LMDB map is full (`MDB_MAP_FULL`: the store holds as much as
    /// [`Config::map_size`](crate::Config::map_size) allows), or the file system is
    /// (`ENOSPC`, `EDQUOT`, or a short write while the file system has no space left).
    /// Nothing of the failed commit was written, and everything committed before it stays.
    /// The store keeps working: commits succeed again once there is room (a larger map
    /// size, deleted data, or disk space freed).
    #[error("storage is full (LMDB map size reached, or no space left on the device)")]
    Full,
    /// A user key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN). Nothing was written.
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge {
        /// Length of the rejected key in bytes.
        len: usize,
        /// The limit, [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
        max: usize,
    },
    /// A value, once encoded as MessagePack, is longer than
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN). Nothing was written.
    #[error("encoded value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// Encoded length of the rejected value in bytes.
        len: usize,
        /// The limit, [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
        max: usize,
    },
    /// A keyspace name is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) or empty.
    #[error("keyspace name of {len} bytes is outside 1..={max} bytes")]
    BadName {
        /// Length of the rejected name in bytes.
        len: usize,
        /// The limit, [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
        max: usize,
    },
    /// A value could not be encoded as MessagePack.
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// A stored value could not be decoded into the requested type.
    #[error("cannot decode value: {0}")]
    Decode(String),
    /// [`ListOptions`](crate::ListOptions) set both `start` and `start_after`.
    #[error("list options: `start` and `start_after` are mutually exclusive")]
    ConflictingListOptions,
    /// The commit of this write set was failed on purpose by
    /// [`FaultInjection`](crate::FaultInjection) (only with the `testing` feature).
    #[cfg(feature = "testing")]
    #[error("commit failed by fault injection")]
    Injected,
    /// An earlier write set of the same keyspace failed to commit, so this one (which may have
    /// been built on the failed writes) was not committed either. The keyspace's pending writes
    /// at the time of the failure were discarded.
    #[error("an earlier commit of this keyspace failed; this write set was not committed")]
    EarlierCommitFailed,
    /// A routed commit (a replicated object's write set, see
    /// [`CommitRoute`](crate::CommitRoute)) was not committed by its shard: not its leader
    /// any more, no majority in time, or its entry lost to another leader's. It may or may
    /// not have been applied; nothing may be acknowledged on it.
    #[error("not replicated: {0}")]
    NotReplicated(String),
    /// The store hit an error it cannot go on from: an I/O error (`EIO`) while committing,
    /// or LMDB's fatal error (`MDB_PANIC`, after a failed meta-page write). The failed commit
    /// was not acknowledged; from then on every commit of this store fails with this error
    /// (the store takes no more durable work). The process should exit and be restarted by
    /// its supervisor: reopening the store recovers the last committed state. See
    /// [`Store::on_fatal`](crate::Store::on_fatal).
    #[error("storage failed and takes no more writes: {message} (LMDB/OS code {code}); restart the node")]
    Fatal {
        /// The OS errno or LMDB code that made it fatal.
        code: i32,
        /// Its description.
        message: String,
    },
    /// The writer queue stayed full for [`Config::queue_wait`](crate::Config::queue_wait):
    /// the disk does not keep up with the durable work offered. Nothing of this commit was
    /// handed over; its writes stay pending (the keyspace's next `commit()` carries them),
    /// and nothing acknowledged before is affected. Retry later, or shed load.
    #[error("storage is overloaded: the commit queue stayed full for {waited:?}; nothing of this commit was written")]
    Overloaded {
        /// How long the commit waited for room.
        waited: std::time::Duration,
    },
    /// The store's writer thread is gone (it panicked); nothing more can be committed.
    #[error("the storage writer thread has stopped")]
    WriterStopped,
    /// A restore would overwrite an existing store: restores go into empty data directories.
    #[error("{0} already holds a store; restore into an empty data directory")]
    Exists(std::path::PathBuf),
    /// Any other LMDB error, with LMDB's code and message (e.g. `MDB_READERS_FULL`: more
    /// concurrent readers than [`Config::max_readers`](crate::Config::max_readers)).
    #[error("LMDB error {code}: {message}")]
    Lmdb {
        /// LMDB's (or the OS's errno) error code.
        code: i32,
        /// LMDB's description of it.
        message: String,
    },
    /// Another process (or another open in this one) holds the data dir's lock: one data dir
    /// serves one node at a time. Stop the other node, or give this one its own data dir.
    #[error("data dir {} is in use by another node (its lock is held); stop that node or use another --data-dir", path.display())]
    Locked {
        /// The data dir.
        path: std::path::PathBuf,
    },
    /// The data dir belongs to another node: its identity file names another node. Nothing
    /// was changed.
    #[error("data dir {} belongs to node {found_name:?} (id {found_node}), not {name:?} (id {node}); start that node on it, or use another --data-dir", path.display())]
    WrongIdentity {
        /// The data dir.
        path: std::path::PathBuf,
        /// The name recorded there.
        found_name: String,
        /// The node id recorded there.
        found_node: u64,
        /// The name of the node that tried to open it.
        name: String,
        /// Its id.
        node: u64,
    },
    /// The data dir's identity file cannot be read as one.
    #[error("bad node identity file {}: {reason}", path.display())]
    BadIdentity {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error outside LMDB (creating the storage directory).
    #[error("I/O error: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(Arc::new(e))
    }
}

/// `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
