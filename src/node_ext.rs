//! What an application's `main` needs besides the node itself: a throwaway data directory
//! ([`NodeBuilder::temporary`], for examples, tests and demos), starting a supervision tree
//! from `main` ([`Node::supervise`]) and reaching a registered actor with its type
//! ([`Node::actor_named`]).
//!
//! Invariants: a temporary data directory is created by the node that uses it, under a
//! name no other node of any process picks (process id, a per-process counter and the
//! clock), and is removed when that node is dropped, after its runtime stopped (the
//! directory is the node's last field to drop).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_supervisor::{Actor, Addr, StartError, Supervisor, SupervisorRef, SupervisorSpec};

use crate::{Node, NodeBuilder, NodeError};

/// A node's data directory that lives as long as the node ([`NodeBuilder::temporary`]).
#[derive(Debug)]
pub(crate) struct TempDataDir(PathBuf);

impl TempDataDir {
    /// Creates a fresh directory under the system's temporary directory.
    pub(crate) fn create() -> Result<TempDataDir, NodeError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!(
            "cairn-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        // `create_dir`, not `create_dir_all`: a name already taken is an error, never shared.
        std::fs::create_dir(&path).map_err(NodeError::TempDir)?;
        Ok(TempDataDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), %error, "cannot remove a temporary data dir");
        }
    }
}

impl NodeBuilder {
    /// Keeps the node's data in a fresh directory under the system's temporary directory,
    /// removed when the node is dropped: durable while the node runs (objects, alarms and
    /// storage work as usual), gone afterwards. For examples, tests and demos. The last of
    /// [`NodeBuilder::data_dir`] and `temporary` wins.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }
}

impl Node {
    /// Starts a supervision tree from outside any process (a `main`), returning once every
    /// child started: [`Supervisor::start`] on this node's runtime. Never call it from
    /// inside a process (it blocks the thread).
    pub fn supervise(&self, spec: SupervisorSpec) -> Result<SupervisorRef, StartError> {
        self.block_on(Supervisor::start(self.handle(), spec))
    }

    /// The actor of type `A` registered under `name`, if a process is registered there and
    /// (when it runs on this node) takes `A`'s messages: `None` otherwise.
    pub fn actor_named<A: Actor>(&self, name: &str) -> Option<Addr<A>> {
        self.handle().actor_ref(self.whereis(name)?)
    }
}
