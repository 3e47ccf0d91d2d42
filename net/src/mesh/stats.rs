//! A mesh's counters: bumped where things happen, read as one [`MeshStats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// Messages for a dead pid or unknown name on this node.
    pub dead_letters: u64,
    /// Messages with an unknown tag or an undecodable payload, and signals about another
    /// node's processes.
    pub bad_messages: u64,
    /// Connections closed because a frame was not a valid mesh frame.
    pub protocol_errors: u64,
    /// Messages received from the network and delivered.
    pub delivered: u64,
    /// Incoming connections refused because another one to that node is kept.
    pub duplicates_refused: u64,
    /// SWIM control connections open now (a gauge: SWIM-only connections to members
    /// without a data connection).
    pub control_connections: u64,
    /// Answers dropped because they came from a node other than the one the call was
    /// sent to.
    pub forged_replies: u64,
    /// Name claims and releases from other nodes refused by the name table's bounds
    /// (length, Lamport window, names per node).
    pub refused_name_ops: u64,
}

/// The event counters (the gauge is read from the control connections).
#[derive(Default)]
pub(super) struct Counters {
    dead_letters: AtomicU64,
    bad_messages: AtomicU64,
    protocol_errors: AtomicU64,
    delivered: AtomicU64,
    duplicates_refused: AtomicU64,
    forged_replies: AtomicU64,
}

/// One of the [`Counters`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    DeadLetter,
    BadMessage,
    ProtocolError,
    Delivered,
    DuplicateRefused,
    ForgedReply,
}

impl Counters {
    pub(super) fn bump(&self, count: Count) {
        let counter = match count {
            Count::DeadLetter => &self.dead_letters,
            Count::BadMessage => &self.bad_messages,
            Count::ProtocolError => &self.protocol_errors,
            Count::Delivered => &self.delivered,
            Count::DuplicateRefused => &self.duplicates_refused,
            Count::ForgedReply => &self.forged_replies,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, control_connections: usize, refused_name_ops: u64) -> MeshStats {
        MeshStats {
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            bad_messages: self.bad_messages.load(Ordering::Relaxed),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            duplicates_refused: self.duplicates_refused.load(Ordering::Relaxed),
            control_connections: control_connections as u64,
            forged_replies: self.forged_replies.load(Ordering::Relaxed),
            refused_name_ops,
        }
    }
}
