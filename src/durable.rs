//! Durable storage for named processes (DESIGN.md 13, 19): every process registered under a
//! name — a `spawn_named` process, a named supervised child — owns the keyspace of that name,
//! which outlives any one incarnation: a restarted child, or a process spawned under the same
//! name after a node restart, finds its data.
//!
//! A new incarnation's first `storage()` discards whatever its predecessor left uncommitted,
//! so a crash between writes and `commit()` never lets half of a step become durable later.
//!
//! Unlike objects (whose every handler is an implicit transaction behind an output gate), a
//! plain named process commits when it chooses: `ctx.storage()?.commit().await`. Its alarm
//! arrives as [`Signal::Alarm`](cairn_scheduler::Signal::Alarm) on its system lane; it clears
//! the alarm itself (`delete_alarm` + commit) once handled. A due alarm whose process is not
//! running is delivered when a process next registers that name (the alarm process rescans
//! every [`ALARM_RESCAN`](crate::object::ALARM_RESCAN)).

use cairn_scheduler::{Ctx, Pid};
use cairn_storage::{Keyspace, StorageError};

use crate::object::Objects;

/// Why a process has no durable store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// Storage belongs to names: an unnamed process has none.
    #[error("process {0} has no name, so no durable store: spawn it with spawn_named or register a name")]
    Unnamed(Pid),
    /// The runtime was not started by a `Node`, so there is no store.
    #[error("this runtime has no store (it was not started by cairn::Node)")]
    NoStore,
    /// Opening the keyspace failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Durable storage from a process context.
pub trait Durable {
    /// The keyspace of this process's registered name.
    fn storage(&self) -> Result<Keyspace, DurableError>;
}

impl<M: Send + 'static> Durable for Ctx<M> {
    fn storage(&self) -> Result<Keyspace, DurableError> {
        let handle = self.handle();
        let name = handle
            .name_of(self.pid())
            .ok_or(DurableError::Unnamed(self.pid()))?;
        let objects = handle.extension::<Objects>().ok_or(DurableError::NoStore)?;
        let keyspace = objects.store().keyspace(&name)?;
        // A new incarnation must not commit writes its crashed predecessor left pending (nor
        // inherit its failed-commit state): the first open by a new pid starts clean.
        let previous = objects.owners.lock().insert(name, self.pid());
        if previous != Some(self.pid()) {
            keyspace.discard_pending();
        }
        Ok(keyspace)
    }
}
