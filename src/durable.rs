//! Durable storage for named processes: every process registered under a name — a `spawn_named` process, a named supervised child — owns the keyspace of that name,
//! which outlives any one incarnation: a restarted child, or a process spawned under the same
//! name after a node restart, finds its data.
//!
//! A new incarnation's first `storage()` discards whatever its predecessor left uncommitted,
//! so a crash between writes and `commit()` never lets half of a step become durable later.
//!
//! Unlike objects (whose every handler is an implicit transaction behind an output gate), a
//! plain named process commits when it chooses: `ctx.storage()?.commit().await`.
//!
//! Its alarm (`storage.set_alarm(at)`, one per name, durable like the rest) arrives as an
//! ordinary message once the process has said how to build one,
//! `ctx.receive_alarms_as(Msg::Alarm)`: in its mailbox, in order with other messages. The
//! process clears the alarm itself (`delete_alarm` + commit) once handled; until then, and
//! until a process under the name asks again after a restart, a due alarm waits in storage
//! (the alarm process rescans every [`ALARM_RESCAN`](crate::object::ALARM_RESCAN)).

use std::time::SystemTime;

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
    /// The process's message type.
    type Msg;

    /// The keyspace of this process's registered name.
    fn storage(&self) -> Result<Keyspace, DurableError>;

    /// From now on, this name's alarm arrives in this process's mailbox as `wrap(at)`, sent
    /// once it is due (again at later scans while the mailbox is full, and after a restart
    /// until it is deleted).
    fn receive_alarms_as(
        &self,
        wrap: impl Fn(SystemTime) -> Self::Msg + Send + Sync + 'static,
    ) -> Result<(), DurableError>;
}

/// The registered name of the process behind `ctx` and the node's object directory.
fn name_and_objects<M: Send + 'static>(
    ctx: &Ctx<M>,
) -> Result<(String, std::sync::Arc<Objects>), DurableError> {
    let handle = ctx.handle();
    let name = handle
        .name_of(ctx.pid())
        .ok_or(DurableError::Unnamed(ctx.pid()))?;
    let objects = handle.extension::<Objects>().ok_or(DurableError::NoStore)?;
    Ok((name, objects))
}

impl<M: Send + 'static> Durable for Ctx<M> {
    type Msg = M;

    fn storage(&self) -> Result<Keyspace, DurableError> {
        let (name, objects) = name_and_objects(self)?;
        let keyspace = objects.store().keyspace(&name)?;
        // A new incarnation must not commit writes its crashed predecessor left pending (nor
        // inherit its failed-commit state): the first open by a new pid starts clean.
        let previous = objects.owners.lock().insert(name, self.pid());
        if previous != Some(self.pid()) {
            keyspace.discard_pending();
        }
        Ok(keyspace)
    }
    fn receive_alarms_as(
        &self,
        wrap: impl Fn(SystemTime) -> M + Send + Sync + 'static,
    ) -> Result<(), DurableError> {
        let (name, objects) = name_and_objects(self)?;
        objects.receive_named_alarms(name, self.me(), wrap);
        Ok(())
    }
}
