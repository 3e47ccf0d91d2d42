//! Replies this node waits for from other nodes: the pending-call table.
//!
//! An entry is made when a scheduler `Reply` leaves this node inside a message (the reply
//! is *exported* under a fresh id, see `router`). Each entry remembers the node that must
//! answer it.
//!
//! # Authentication
//!
//! Only the node a reply was exported to may complete it: an answer arriving from any
//! other node is dropped (the entry stays, so the real answer still lands) and counted as
//! forged. Ids are drawn from `rand` 0.8's `ThreadRng` (ChaCha12, seeded by the OS), never a
//! counter, so a member cannot guess the ids of calls it was not given. A `Reply` passed on
//! to a third node is re-exported by the node passing it (see `scheduler::reply`), so the
//! answer always comes back along the path the call went.
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
        RemoteFailure::Unauthorized(why) => CallError::Unroutable(format!("not authorized: {why}")),
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

/// What became of an answer that arrived for a reply id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answered {
    /// It completed the waiting call.
    Completed,
    /// Nothing waits for that id (the caller timed out, it was answered already, or the
    /// id was never issued).
    Unknown,
    /// The id waits for an answer from another node: dropped, the call keeps waiting.
    Forged,
}

impl Replies {
    /// Waits for an answer from `node` under a fresh unguessable id, returned; `None` if
    /// the mesh is closed (the entry has then failed at once with `NoConnection`).
    pub(super) fn export(&self, node: NodeId, complete: ReplyCompletion) -> Option<u64> {
        let mut table = self.table.lock();
        if table.closed {
            drop(table);
            complete(Err(CallError::NoConnection));
            return None;
        }
        let id = loop {
            // 0 is never issued (it is what a closed mesh hands out); a repeat is redrawn.
            let id = rand::random::<u64>();
            if id != 0 && !table.pending.contains_key(&id) {
                break id;
            }
        };
        table.pending.insert(id, (node, complete));
        Some(id)
    }

    /// The caller stopped waiting for `id`: drop its entry unanswered.
    pub(super) fn forget(&self, id: u64) {
        self.table.lock().pending.remove(&id);
    }

    /// Completes `id` with an answer (or a failure report) that arrived from node `from`,
    /// if `from` is the node the reply was exported to.
    pub(super) fn complete(
        &self,
        from: NodeId,
        id: u64,
        result: Result<Bytes, RemoteFailure>,
    ) -> Answered {
        let complete = {
            let mut table = self.table.lock();
            match table.pending.get(&id) {
                None => return Answered::Unknown,
                Some((node, _)) if *node != from => return Answered::Forged,
                Some(_) => table.pending.remove(&id).map(|(_, complete)| complete),
            }
        };
        if let Some(complete) = complete {
            complete(result.map(|bytes| bytes.0).map_err(call_error));
        }
        Answered::Completed
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
        let one = replies.export(NodeId(7), export(&seen)).unwrap();
        let two = replies.export(NodeId(7), export(&seen)).unwrap();
        let _three = replies.export(NodeId(8), export(&seen)).unwrap();
        let four = replies.export(NodeId(8), export(&seen)).unwrap();
        let answer = || Ok(Bytes(vec![9]));
        assert_eq!(
            replies.complete(NodeId(7), one, answer()),
            Answered::Completed
        );
        assert_eq!(
            replies.complete(NodeId(7), one, answer()),
            Answered::Unknown,
            "answered once"
        );
        replies.fail_node(NodeId(7));
        replies.forget(four);
        replies.close();
        assert_eq!(
            replies.complete(NodeId(7), two, answer()),
            Answered::Unknown
        );
        assert_eq!(
            *seen.lock(),
            vec![
                Ok(vec![9]),
                Err(CallError::NoConnection),
                Err(CallError::NoConnection),
            ]
        );
        // After close, a new entry fails at once.
        assert_eq!(replies.export(NodeId(8), export(&seen)), None);
        assert_eq!(seen.lock().len(), 4);
    }

    #[test]
    fn a_callee_node_failure_maps_onto_the_callers_error() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Replies::default();
        for failure in [
            RemoteFailure::NoProc,
            RemoteFailure::WrongType,
            RemoteFailure::Dropped,
            RemoteFailure::Unauthorized("a client may not".into()),
        ] {
            let id = replies.export(NodeId(2), export(&seen)).unwrap();
            replies.complete(NodeId(2), id, Err(failure));
        }
        assert_eq!(
            *seen.lock(),
            vec![
                Err(CallError::NoProc),
                Err(CallError::WrongType),
                Err(CallError::NoReply),
                Err(CallError::Unroutable(
                    "not authorized: a client may not".into()
                )),
            ]
        );
    }

    #[test]
    fn only_the_node_a_reply_was_exported_to_can_complete_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Replies::default();
        let id = replies.export(NodeId(7), export(&seen)).unwrap();
        let forged = replies.complete(NodeId(8), id, Ok(Bytes(vec![6, 6, 6])));
        assert_eq!(forged, Answered::Forged);
        assert!(seen.lock().is_empty(), "a forged answer completes nothing");
        // The call still waits for its real answer.
        let real = replies.complete(NodeId(7), id, Ok(Bytes(vec![1])));
        assert_eq!(real, Answered::Completed);
        assert_eq!(*seen.lock(), vec![Ok(vec![1])]);
    }

    #[test]
    fn reply_ids_are_not_a_counter() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let replies = Replies::default();
        let ids: Vec<u64> = (0..64)
            .map(|_| replies.export(NodeId(7), export(&seen)).unwrap())
            .collect();
        let distinct: std::collections::HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        // A counter (or any small-step sequence) would put consecutive ids close together.
        let close = ids
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < 1 << 32)
            .count();
        assert!(close < 4, "ids look sequential: {ids:?}");
    }
}
