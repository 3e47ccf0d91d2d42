//! Replies this node waits for from other nodes: the pending-call table.
//!
//! An entry is made when a scheduler `Reply` leaves this node inside a message (the reply
//! is *exported* under a fresh id, see `router`). Each entry remembers the node that must
//! answer it.
//!
//! Invariants: an entry is completed at most once — by its answer ([`Replies::complete`]),
//! by the loss of its node ([`Replies::fail_node`], `NoConnection`), by the mesh closing
//! ([`Replies::close`], also `NoConnection`), or it is forgotten when its caller stops waiting
//! ([`Replies::forget`]). Completions run after the table's lock is released (they wake
//! callers). After `close` nothing is added: a late entry fails at once.

use std::collections::HashMap;

use cairn_scheduler::remote::ReplyCompletion;
use cairn_scheduler::{CallError, NodeId};
use parking_lot::Mutex;

use super::wire::{Bytes, RemoteFailure};

/// Maps a callee node's failure onto the caller's [`CallError`].
fn call_error(failure: RemoteFailure) -> CallError {
    match failure {
        RemoteFailure::NoProc => CallError::NoProc,
        RemoteFailure::WrongType => CallError::WrongType,
        RemoteFailure::Dropped => CallError::NoReply,
        other => CallError::BadReply(other.to_string()),
    }
}

/// The pending-call table (see the module doc).
#[derive(Default)]
pub(super) struct Replies {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Reply id -> (the node that must answer, who waits).
    pending: HashMap<u64, (NodeId, ReplyCompletion)>,
    closed: bool,
}

impl Replies {
    /// Waits for reply `id` from `node`; false if the mesh is closed (the entry has then
    /// failed at once with `NoConnection`).
    pub(super) fn insert(&self, id: u64, node: NodeId, complete: ReplyCompletion) -> bool {
        let mut table = self.table.lock();
        if table.closed {
            drop(table);
            complete(Err(CallError::NoConnection));
            return false;
        }
        table.pending.insert(id, (node, complete));
        true
    }

    /// The caller stopped waiting for `id`: drop its entry unanswered.
    pub(super) fn forget(&self, id: u64) {
        self.table.lock().pending.remove(&id);
    }

    /// Completes `id` with an answer from a node (or a failure it reported); false if
    /// nothing waits for it (the caller timed out, or it was answered already).
    pub(super) fn complete(&self, id: u64, result: Result<Bytes, RemoteFailure>) -> bool {
        let entry = self.table.lock().pending.remove(&id);
        match entry {
            Some((_, complete)) => {
                complete(result.map(|bytes| bytes.0).map_err(call_error));
                true
            }
            None => false,
        }
    }

    /// `node` was lost: everything waiting for it fails with `NoConnection`.
    pub(super) fn fail_node(&self, node: NodeId) {
        let lost: Vec<ReplyCompletion> = {
            let mut table = self.table.lock();
            let ids: Vec<u64> = table
                .pending
                .iter()
                .filter(|(_, (n, _))| *n == node)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| table.pending.remove(id))
                .map(|(_, complete)| complete)
                .collect()
        };
        for complete in lost {
            complete(Err(CallError::NoConnection));
        }
    }

    /// The mesh closed: everything waiting fails with `NoConnection`, and nothing is added
    /// later.
    pub(super) fn close(&self) {
        let all = {
            let mut table = self.table.lock();
            table.closed = true;
            std::mem::take(&mut table.pending)
        };
        for (_, (_, complete)) in all {
            complete(Err(CallError::NoConnection));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Completions seen, in order.
    type Seen = Arc<Mutex<Vec<Result<Vec<u8>, CallError>>>>;

    /// An exported reply whose completion is recorded.
    fn export(seen: &Seen) -> ReplyCompletion {
        let seen = Arc::clone(seen);
        Box::new(move |r| seen.lock().push(r))
    }

    #[test]
    fn each_entry_completes_once_by_answer_node_loss_or_close() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Replies::default();
        assert!(replies.insert(1, NodeId(7), export(&seen)));
        assert!(replies.insert(2, NodeId(7), export(&seen)));
        assert!(replies.insert(3, NodeId(8), export(&seen)));
        assert!(replies.insert(4, NodeId(8), export(&seen)));
        assert!(replies.complete(1, Ok(Bytes(vec![9]))));
        assert!(!replies.complete(1, Ok(Bytes(vec![9]))), "answered once");
        replies.fail_node(NodeId(7));
        replies.forget(4);
        replies.close();
        assert!(!replies.complete(2, Ok(Bytes(vec![]))));
        assert_eq!(
            *seen.lock(),
            vec![
                Ok(vec![9]),
                Err(CallError::NoConnection),
                Err(CallError::NoConnection),
            ]
        );
        // After close, a new entry fails at once.
        assert!(!replies.insert(5, NodeId(8), export(&seen)));
        assert_eq!(seen.lock().len(), 4);
    }

    #[test]
    fn a_callee_node_failure_maps_onto_the_callers_error() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Replies::default();
        for (id, failure) in [
            (1, RemoteFailure::NoProc),
            (2, RemoteFailure::WrongType),
            (3, RemoteFailure::Dropped),
        ] {
            assert!(replies.insert(id, NodeId(2), export(&seen)));
            replies.complete(id, Err(failure));
        }
        assert_eq!(
            *seen.lock(),
            vec![
                Err(CallError::NoProc),
                Err(CallError::WrongType),
                Err(CallError::NoReply)
            ]
        );
    }
}
