//! A mesh's counters: bumped where things happen, read as one [`MeshStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_scheduler::NodeId;

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
    /// Incoming connections whose QUIC/TLS handshake failed (a certificate from another
    /// CA or none, a peer that gave up mid-handshake): refused before any hello.
    pub failed_handshakes: u64,
    /// SWIM control connections open now (a gauge: SWIM-only connections to members
    /// without a data connection).
    pub control_connections: u64,
    /// Answers dropped because they came from a node other than the one the call was
    /// sent to.
    pub forged_replies: u64,
    /// Name claims and releases from other nodes refused by the name table's bounds
    /// (length, Lamport window, names per node).
    pub refused_name_ops: u64,
    /// SWIM packets dropped because their claimed sender was not the peer of the
    /// connection they came on.
    pub spoofed_swim_packets: u64,
    /// Membership updates and packets refused by the membership screen (identity
    /// replacements, incarnation jumps, unknown probe targets, lone "you are down"
    /// claims, oversized syncs, members introduced under a name that is not their id's;
    /// members introduced past the bound are `refused_unmet_members`).
    pub refused_membership_updates: u64,
    /// Other nodes' claims that a third node is down, taken as suspicions only.
    pub downgraded_down_claims: u64,
    /// Membership syncs refused because this node had not asked that node for one.
    pub unrequested_syncs: u64,
    /// QUIC streams a peer opened beyond its lane, stopped unread.
    pub refused_streams: u64,
    /// Connections closed because the peer left `limits::MAX_SIGNAL_WAITERS` signals
    /// (replies, exits, downs) waiting for room on its lane: it does not read what it is sent.
    pub signal_overflows: u64,
    /// SWIM control connections closed because the peer had the most allowed open.
    pub refused_control_connections: u64,
    /// Requests refused by authorization (`authz`): exit signals and links to system
    /// processes, and what a client may not do (signal, reach unpublished processes, take
    /// part in membership or names).
    pub unauthorized: u64,
    /// Connections refused or closed because the peer's certificate serial is revoked.
    pub revoked_peers: u64,
    /// Incoming connections closed on arrival because too many were waiting for their
    /// hello already, from that certificate or from all peers (`limits`).
    pub refused_pending_hellos: u64,
    /// Incoming connections waiting for their hello now (a gauge).
    pub pending_hellos: u64,
    /// Entries of hellos' peer lists not taken (`limits`): a client's whole list, entries
    /// past the per-hello bound, entries whose node id is not their name's or whose name
    /// is too long, and hearsay that found the table of known nodes full.
    pub refused_hello_peers: u64,
    /// Members gossip (or a sync) from another node named that this node's SWIM did not
    /// know, refused because it holds `limits::MAX_UNMET_MEMBERS` nodes it has not met
    /// already (`limits`): a member gossiping made-up members.
    pub refused_unmet_members: u64,
    /// Times this node moved to its next SWIM epoch: its SWIM incarnation, raised by
    /// each suspicion of itself it refuted, reached the mark (60,000; `swim`). Anything
    /// above zero means a long run of suspicions of this node, likely an attack (see
    /// `refused_membership_updates` on the members relaying them).
    pub swim_epochs: u64,
}

/// One data connection's traffic, as listed by [`Mesh::links`](super::Mesh::links).
///
/// Counters belong to the connection: a reconnect starts them at zero again (Prometheus
/// takes a decrease as a counter reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// The peer.
    pub node: NodeId,
    /// QUIC's smoothed round-trip time estimate.
    pub rtt: Duration,
    /// UDP payload bytes sent on the connection (SWIM datagrams included).
    pub bytes_sent: u64,
    /// UDP payload bytes received on the connection.
    pub bytes_received: u64,
    /// Mesh frames queued towards the peer.
    pub frames_sent: u64,
    /// Mesh frames read from the peer.
    pub frames_received: u64,
}

/// Other members by SWIM state, as listed by [`Mesh::member_states`](super::Mesh::member_states)
/// (this node is not counted; SWIM keeps down members for a while to refute stale news).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStates {
    /// Members answering probes.
    pub alive: u64,
    /// Members that missed a probe and have not refuted yet.
    pub suspect: u64,
    /// Members declared down (still remembered by SWIM).
    pub down: u64,
}

/// The event counters (the gauges are read from the tables they count).
#[derive(Default)]
pub(super) struct Counters {
    dead_letters: AtomicU64,
    bad_messages: AtomicU64,
    protocol_errors: AtomicU64,
    delivered: AtomicU64,
    duplicates_refused: AtomicU64,
    forged_replies: AtomicU64,
    spoofed_swim_packets: AtomicU64,
    refused_membership_updates: AtomicU64,
    downgraded_down_claims: AtomicU64,
    unrequested_syncs: AtomicU64,
    refused_streams: AtomicU64,
    signal_overflows: AtomicU64,
    refused_control_connections: AtomicU64,
    unauthorized: AtomicU64,
    revoked_peers: AtomicU64,
    refused_pending_hellos: AtomicU64,
    refused_hello_peers: AtomicU64,
    refused_unmet_members: AtomicU64,
    swim_epochs: AtomicU64,
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
    SpoofedSwimPacket,
    RefusedMembershipUpdate,
    DowngradedDownClaim,
    UnrequestedSync,
    RefusedStream,
    SignalOverflow,
    RefusedControlConnection,
    Unauthorized,
    RevokedPeer,
    RefusedPendingHello,
    RefusedHelloPeer,
    RefusedUnmetMember,
    SwimEpoch,
}

impl Counters {
    pub(super) fn bump(&self, count: Count) {
        self.add(count, 1);
    }

    /// Counts `n` events at once.
    pub(super) fn add(&self, count: Count, n: u64) {
        let counter = match count {
            Count::DeadLetter => &self.dead_letters,
            Count::BadMessage => &self.bad_messages,
            Count::ProtocolError => &self.protocol_errors,
            Count::Delivered => &self.delivered,
            Count::DuplicateRefused => &self.duplicates_refused,
            Count::ForgedReply => &self.forged_replies,
            Count::SpoofedSwimPacket => &self.spoofed_swim_packets,
            Count::RefusedMembershipUpdate => &self.refused_membership_updates,
            Count::DowngradedDownClaim => &self.downgraded_down_claims,
            Count::UnrequestedSync => &self.unrequested_syncs,
            Count::RefusedStream => &self.refused_streams,
            Count::SignalOverflow => &self.signal_overflows,
            Count::RefusedControlConnection => &self.refused_control_connections,
            Count::Unauthorized => &self.unauthorized,
            Count::RevokedPeer => &self.revoked_peers,
            Count::RefusedPendingHello => &self.refused_pending_hellos,
            Count::RefusedHelloPeer => &self.refused_hello_peers,
            Count::RefusedUnmetMember => &self.refused_unmet_members,
            Count::SwimEpoch => &self.swim_epochs,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(
        &self,
        control_connections: usize,
        pending_hellos: usize,
        refused_name_ops: u64,
        failed_handshakes: u64,
    ) -> MeshStats {
        MeshStats {
            failed_handshakes,
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            bad_messages: self.bad_messages.load(Ordering::Relaxed),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            duplicates_refused: self.duplicates_refused.load(Ordering::Relaxed),
            control_connections: control_connections as u64,
            forged_replies: self.forged_replies.load(Ordering::Relaxed),
            refused_name_ops,
            spoofed_swim_packets: self.spoofed_swim_packets.load(Ordering::Relaxed),
            refused_membership_updates: self.refused_membership_updates.load(Ordering::Relaxed),
            downgraded_down_claims: self.downgraded_down_claims.load(Ordering::Relaxed),
            unrequested_syncs: self.unrequested_syncs.load(Ordering::Relaxed),
            refused_streams: self.refused_streams.load(Ordering::Relaxed),
            signal_overflows: self.signal_overflows.load(Ordering::Relaxed),
            refused_control_connections: self.refused_control_connections.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            revoked_peers: self.revoked_peers.load(Ordering::Relaxed),
            refused_pending_hellos: self.refused_pending_hellos.load(Ordering::Relaxed),
            pending_hellos: pending_hellos as u64,
            refused_hello_peers: self.refused_hello_peers.load(Ordering::Relaxed),
            refused_unmet_members: self.refused_unmet_members.load(Ordering::Relaxed),
            swim_epochs: self.swim_epochs.load(Ordering::Relaxed),
        }
    }
}
