//! Durable fields for `#[cairn::object(state)]`: the object's own struct is its stored state.
//!
//! The generated code calls these around the user's methods:
//! - on activation, [`load_state`] reads the struct from [`STATE_KEY`] in the object's
//!   keyspace, or starts from `Default` when nothing is stored;
//! - before each method (and the `alarm` / `deactivate` hooks), [`snapshot`] encodes the
//!   fields; after it, [`save_state`] encodes them again and writes them only if the bytes
//!   differ. A method that reads only costs two encodings and no write. (A field whose
//!   encoding varies between equal values, such as a `HashMap`'s iteration order, costs a
//!   needless write now and then, never a lost one: prefer `BTreeMap` in state.)
//!
//! Invariants:
//! - the write joins the handler's own write set, so it commits atomically with any other
//!   write of that handler and the caller's answer leaves only once it is durable (the
//!   output gate); a crash (`Err(ActorError)`, a panic) discards it with the others, and the
//!   object re-activates from what is stored;
//! - a state equal to `Default` is stored as no value at all (the key is deleted): an object
//!   reset to its default occupies no storage, and loads back as the same default.

use cairn_supervisor::ActorError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::object::{Object, ObjectCtx};

/// The key under which `#[cairn::object(state)]` keeps an object's fields in its keyspace.
/// Methods may use other keys of `ctx.storage()` beside it; `delete_all` removes it too.
pub const STATE_KEY: &str = "cairn.state";

/// Types whose fields `#[cairn::object(state)]` can keep in storage.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an object's durable state",
    label = "`state` needs `Default`, `Serialize` and `Deserialize` on this type",
    note = "#[cairn::object(state)] loads the fields from storage (or `Default::default()` when none are stored) and writes them back after each method: derive `Default`, `serde::Serialize` and `serde::Deserialize` for it"
)]
pub trait State: Serialize + DeserializeOwned + Default {}

impl<T: Serialize + DeserializeOwned + Default> State for T {}

/// Checks the object's type (its span is the attribute's `state`).
pub fn assert_state<S: State>() {}

/// The fields as stored, or `Default` if none are.
pub fn load_state<O: Object + State>(ctx: &ObjectCtx<O>) -> Result<O, ActorError> {
    Ok(ctx.storage().get(STATE_KEY)?.unwrap_or_default())
}

/// The fields' encoding, to tell whether a method changed them.
pub fn snapshot<S: State>(state: &S) -> Result<Vec<u8>, ActorError> {
    Ok(rmp_serde::to_vec_named(state)?)
}

/// Writes the fields into the handler's write set if they differ from `before` (deleting
/// the key when they are back to `Default`).
pub fn save_state<O: Object + State>(
    state: &O,
    before: &[u8],
    ctx: &ObjectCtx<O>,
) -> Result<(), ActorError> {
    let after = snapshot(state)?;
    if after == before {
        return Ok(());
    }
    if after == snapshot(&O::default())? {
        ctx.storage().delete(STATE_KEY)?;
    } else {
        ctx.storage().put(STATE_KEY, state)?;
    }
    Ok(())
}
