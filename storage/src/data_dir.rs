//! A node's data dir: its exclusive lock and the node identity it keeps.
//!
//! # The lock
//!
//! [`DataDir::open`] takes an exclusive `flock` on `<data_dir>/lock` and holds it for as
//! long as the [`DataDir`] (or a [`Store`](crate::Store) opened in it) lives. A second
//! open — by another process, or by this one — gets [`StorageError::Locked`]: two stores on
//! one LMDB environment would hand out colliding keyspace prefixes and run two activations
//! of one object. The kernel drops the lock when the process dies, `kill -9` included, so
//! a crashed node never leaves a stale lock behind.
//!
//! # The identity
//!
//! `<data_dir>/identity` (JSON) holds the node's name, its node id and its `creation`: a
//! counter raised on every start ([`DataDir::claim_identity`]), which the node stamps into
//! its pids so pids of an earlier life never reach a process of this one. The first start
//! writes creation 1. A data dir made for one node is refused to a node of another name or
//! id ([`StorageError::WrongIdentity`]): its objects and names belong to that node.
//!
//! Invariant: the identity file is always either absent or a complete, fsync'd record. It is
//! replaced by writing `identity.tmp`, fsyncing it, renaming it over `identity` and
//! fsyncing the directory, so a crash at any point leaves the old or the new record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// File name of the lock inside a data dir.
pub const LOCK_FILE: &str = "lock";
/// File name of the node identity inside a data dir.
pub const IDENTITY_FILE: &str = "identity";
/// Scratch name the identity is written under before it is renamed into place.
const IDENTITY_TMP: &str = "identity.tmp";

/// Who a data dir belongs to, and which life of that node this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's name (the name in its certificate).
    pub name: String,
    /// Its node id (the stable hash of the name; `NodeId::of_name` in the scheduler).
    pub node: u64,
    /// How many times a node has started on this data dir, this start included.
    pub creation: u32,
}

/// An open, locked data dir. Cheap to clone; the lock is released when the last clone (and
/// every [`Store`](crate::Store) opened in it) is gone.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    _lock: Arc<File>,
}

impl DataDir {
    /// Creates `path` if missing and locks it exclusively; [`StorageError::Locked`] if
    /// another process, or another open in this one, holds it.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir> {
        let path = path.as_ref().to_owned();
        std::fs::create_dir_all(&path)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))?;
        use rustix::fs::{flock, FlockOperation};
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StorageError::Locked { path });
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        Ok(DataDir {
            path,
            _lock: Arc::new(lock),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity recorded here, if a node has started on this dir.
    pub fn identity(&self) -> Result<Option<Identity>> {
        let file = self.path.join(IDENTITY_FILE);
        let text = match std::fs::read(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StorageError::BadIdentity {
                path: file,
                reason: e.to_string(),
            })
    }

    /// Starts a new life of node `name` (id `node`) on this dir: checks that the dir is
    /// this node's (or new), raises the creation and records it durably before returning.
    pub fn claim_identity(&self, name: &str, node: u64) -> Result<Identity> {
        let creation = match self.identity()? {
            None => 1,
            Some(found) if found.name != name || found.node != node => {
                return Err(StorageError::WrongIdentity {
                    path: self.path.clone(),
                    found_name: found.name,
                    found_node: found.node,
                    name: name.to_owned(),
                    node,
                });
            }
            Some(found) => {
                found
                    .creation
                    .checked_add(1)
                    .ok_or_else(|| StorageError::BadIdentity {
                        path: self.path.join(IDENTITY_FILE),
                        reason: "the creation counter is exhausted".to_owned(),
                    })?
            }
        };
        let identity = Identity {
            name: name.to_owned(),
            node,
            creation,
        };
        self.write_identity(&identity)?;
        Ok(identity)
    }

    /// Replaces the identity file atomically and durably (see the module's invariant).
    fn write_identity(&self, identity: &Identity) -> Result<()> {
        let tmp = self.path.join(IDENTITY_TMP);
        let text = serde_json::to_vec_pretty(identity)
            .map_err(|e| StorageError::Encode(format!("identity: {e}")))?;
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.path.join(IDENTITY_FILE))?;
        // The rename itself is durable only once the directory is.
        File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}
