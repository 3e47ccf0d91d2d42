//! What crosses the network and the disk: our own serde structs, never protobuf bytes.
//!
//! raft-rs speaks `eraftpb` (protobuf 2.28, advisory RUSTSEC-2024-0437: a crafted nested
//! message overflows the parser's stack). We never hand bytes from a peer or from disk to a
//! protobuf parser: a Raft message travels as a [`WireMessage`] (MessagePack through serde),
//! converted to and from `eraftpb::Message` in memory. The one place raft-rs puts protobuf
//! bytes into our data is a configuration-change entry (`ConfChange` encoded by
//! `propose_conf_change`): such entries travel and are stored as [`WireConfChange`] and are
//! re-encoded by us on the receiving side, so the only protobuf bytes we ever parse are bytes
//! our own encoder produced.
//!
//! Conversion from the wire validates: message and entry types must be known, local-only
//! message types (`MsgHup`, `MsgPropose`, ...) are refused, and a message must be addressed
//! to this node and come from the peer that sent it.

// eraftpb's generated structs carry private-ish bookkeeping fields (unknown fields, cached
// size); filling them field by field from `default()` reads clearer than struct literals.
#![allow(clippy::field_reassign_with_default)]

use bytes::Bytes;
use cairn_scheduler::NodeId;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
use serde::{Deserialize, Serialize};

use crate::types::{ProposalId, ShardId};

/// A conf-change entry's payload, in our encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConfChange {
    /// 0 add voter, 1 remove, 2 add learner (raft-rs's `ConfChangeType`).
    pub change_type: u8,
    /// The replica (node) concerned.
    pub node_id: u64,
}

/// A log entry in our encoding (on the wire and on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Raft term.
    pub term: u64,
    /// Raft index.
    pub index: u64,
    /// Normal data (a proposal batch) or empty. [`Bytes`], shared with raft-rs's entry: an
    /// entry's payload is not copied per follower message, per persisted round or per
    /// received message (encoded as MessagePack `bin`, as a `Vec<u8>` was).
    #[serde(with = "shared_bin")]
    pub data: Bytes,
    /// Set for a conf-change entry (then `data` is empty).
    pub conf_change: Option<WireConfChange>,
    /// raft-rs's entry context (unused by us, carried for fidelity).
    #[serde(with = "shared_bin")]
    pub context: Bytes,
}

/// `#[serde(with = ...)]` on [`Bytes`]: written as `bin`, read like
/// `cairn_storage::serde_bin::bytes` (`bin` or an array of integers).
mod shared_bin {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{self, Deserialize, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_bytes(SharedVisitor)
    }

    /// Takes a `bin` borrowed from the buffer being decoded as a slice of that buffer when
    /// [`super::SHARED_SOURCE`] holds it (no copy); anything else through the copying
    /// reader of `cairn_storage::serde_bin`.
    struct SharedVisitor;

    impl<'de> Visitor<'de> for SharedVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(super::SHARED_SOURCE.with_borrow(|source| match source {
                Some(source) if contains(source, v) => source.slice_ref(v),
                _ => Bytes::copy_from_slice(v),
            }))
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Bytes, A::Error> {
            // Written before `bin` (an array of integers): copied, as it always was.
            cairn_storage::serde_bin::BinBuf::deserialize(de::value::SeqAccessDeserializer::new(
                seq,
            ))
            .map(|b| Bytes::from(b.0))
        }
    }

    /// Whether `part` lies inside `whole`'s memory (so `slice_ref` cannot panic).
    fn contains(whole: &Bytes, part: &[u8]) -> bool {
        let (start, end) = (
            whole.as_ptr() as usize,
            whole.as_ptr() as usize + whole.len(),
        );
        let (p, q) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
        start <= p && q <= end
    }
}

thread_local! {
    /// The frame [`WireBatch::decode_owned`] is decoding on this thread, so entries' `bin`
    /// fields become slices of it (`shared_bin`). `None` outside that call.
    static SHARED_SOURCE: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Frames larger than this are decoded with copies ([`WireBatch::decode_owned`]): a small
/// entry kept in the log must not pin a large frame (one carrying a snapshot, whose data is
/// copied out) in memory. Appends of a busy round are a few KB to a few hundred KB.
pub const SHARE_FRAME_LIMIT: usize = 1 << 20;

/// A configuration: voters and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConfState {
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
}

/// A snapshot: Raft metadata plus the shard's data (opaque here; see `cairn_storage::ShardData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The configuration at `index`.
    pub conf_state: WireConfState,
    /// The state machine's data at `index`.
    #[serde(with = "cairn_storage::serde_bin::bytes")]
    pub data: Vec<u8>,
}

/// One Raft message of one shard, as it crosses the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    /// The shard (Raft group).
    pub shard: ShardId,
    /// raft-rs `MessageType` as a number.
    pub msg_type: u8,
    /// Destination replica (= node id).
    pub to: u64,
    /// Source replica (= node id).
    pub from: u64,
    #[allow(missing_docs)]
    pub term: u64,
    #[allow(missing_docs)]
    pub log_term: u64,
    #[allow(missing_docs)]
    pub index: u64,
    #[allow(missing_docs)]
    pub entries: Vec<WireEntry>,
    #[allow(missing_docs)]
    pub commit: u64,
    #[allow(missing_docs)]
    pub commit_term: u64,
    #[allow(missing_docs)]
    pub snapshot: Option<WireSnapshot>,
    #[allow(missing_docs)]
    pub request_snapshot: u64,
    #[allow(missing_docs)]
    pub reject: bool,
    #[allow(missing_docs)]
    pub reject_hint: u64,
    #[allow(missing_docs)]
    #[serde(with = "cairn_storage::serde_bin::bytes")]
    pub context: Vec<u8>,
    #[allow(missing_docs)]
    pub priority: i64,
}

/// Why a message from the network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Unknown message type number.
    #[error("unknown raft message type {0}")]
    UnknownType(u8),
    /// A message type that only a node sends itself (`MsgHup`, `MsgPropose`, ...).
    #[error("raft message type {0:?} is local-only")]
    LocalOnly(MessageType),
    /// Unknown conf-change type.
    #[error("unknown conf change type {0}")]
    UnknownConfChange(u8),
    /// Not addressed to this node, or not from the peer that sent it.
    #[error("message from {from} to {to} arrived at {me} from {peer}")]
    Misaddressed {
        /// Claimed source.
        from: u64,
        /// Claimed destination.
        to: u64,
        /// This node.
        me: u64,
        /// The peer the transport received it from.
        peer: u64,
    },
    /// A shard outside the cluster's range.
    #[error("shard {0} is outside the cluster's shards")]
    BadShard(ShardId),
    /// Undecodable bytes.
    #[error("cannot decode: {0}")]
    Decode(String),
}

fn msg_type(n: u8) -> Result<MessageType, WireError> {
    use MessageType::*;
    const ALL: [MessageType; 19] = [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ];
    ALL.get(n as usize)
        .copied()
        .ok_or(WireError::UnknownType(n))
}

fn conf_change_type(n: u8) -> Result<ConfChangeType, WireError> {
    match n {
        0 => Ok(ConfChangeType::AddNode),
        1 => Ok(ConfChangeType::RemoveNode),
        2 => Ok(ConfChangeType::AddLearnerNode),
        n => Err(WireError::UnknownConfChange(n)),
    }
}

/// Encodes a conf change as raft-rs expects it inside an entry.
pub(crate) fn encode_conf_change(cc: &ConfChange) -> Bytes {
    Bytes::from(
        cc.write_to_bytes()
            .expect("encoding a ConfChange cannot fail"),
    )
}

/// Decodes a conf-change entry's data. Only ever called on bytes our own encoder produced
/// (entries we proposed, or re-encoded from a [`WireConfChange`]).
pub(crate) fn decode_conf_change(data: &[u8]) -> ConfChange {
    ConfChange::parse_from_bytes(data).expect("conf change bytes are our own encoding")
}

impl WireEntry {
    /// From raft-rs's entry (ours, in memory).
    pub fn from_entry(e: &Entry) -> WireEntry {
        let conf_change = match e.get_entry_type() {
            EntryType::EntryConfChange => {
                let cc = decode_conf_change(&e.data);
                Some(WireConfChange {
                    change_type: cc.get_change_type() as u8,
                    node_id: cc.node_id,
                })
            }
            // We never propose V2 changes; such an entry cannot exist in our logs.
            EntryType::EntryConfChangeV2 => panic!("unexpected ConfChangeV2 entry in the log"),
            EntryType::EntryNormal => None,
        };
        WireEntry {
            term: e.term,
            index: e.index,
            data: if conf_change.is_some() {
                Bytes::new()
            } else {
                e.data.clone()
            },
            conf_change,
            context: e.context.clone(),
        }
    }

    /// To raft-rs's entry.
    pub fn to_entry(&self) -> Result<Entry, WireError> {
        let mut e = Entry::default();
        e.term = self.term;
        e.index = self.index;
        e.context = self.context.clone();
        match &self.conf_change {
            Some(cc) => {
                let mut c = ConfChange::default();
                c.set_change_type(conf_change_type(cc.change_type)?);
                c.node_id = cc.node_id;
                e.set_entry_type(EntryType::EntryConfChange);
                e.data = encode_conf_change(&c);
            }
            None => {
                e.set_entry_type(EntryType::EntryNormal);
                e.data = self.data.clone();
            }
        }
        Ok(e)
    }
}

impl WireConfState {
    /// From raft-rs.
    pub fn from_conf_state(c: &ConfState) -> WireConfState {
        WireConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
        }
    }

    /// To raft-rs.
    pub fn to_conf_state(&self) -> ConfState {
        let mut c = ConfState::default();
        c.voters = self.voters.clone();
        c.learners = self.learners.clone();
        c
    }
}

impl WireSnapshot {
    /// From raft-rs.
    pub fn from_snapshot(s: &Snapshot) -> WireSnapshot {
        let m = s.get_metadata();
        WireSnapshot {
            index: m.index,
            term: m.term,
            conf_state: WireConfState::from_conf_state(m.get_conf_state()),
            data: s.data.to_vec(),
        }
    }

    /// To raft-rs.
    pub fn to_snapshot(&self) -> Snapshot {
        let mut m = SnapshotMetadata::default();
        m.index = self.index;
        m.term = self.term;
        m.set_conf_state(self.conf_state.to_conf_state());
        let mut s = Snapshot::default();
        s.set_metadata(m);
        s.data = Bytes::from(self.data.clone());
        s
    }
}

impl WireMessage {
    /// From raft-rs's outgoing message of `shard`.
    pub fn from_message(shard: ShardId, m: &Message) -> WireMessage {
        WireMessage {
            shard,
            msg_type: m.get_msg_type() as u8,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: m.entries.iter().map(WireEntry::from_entry).collect(),
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot: m
                .snapshot
                .as_ref()
                .filter(|s| s.get_metadata().index > 0)
                .map(WireSnapshot::from_snapshot),
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context.to_vec(),
            priority: m.priority,
        }
    }

    /// To raft-rs's message, checked: received from `peer` by node `me`, in a cluster of
    /// `shards` shards.
    pub fn to_message(&self, me: NodeId, peer: NodeId, shards: u32) -> Result<Message, WireError> {
        if self.to != me.0 || self.from != peer.0 || self.from == 0 {
            return Err(WireError::Misaddressed {
                from: self.from,
                to: self.to,
                me: me.0,
                peer: peer.0,
            });
        }
        if self.shard.0 >= shards {
            return Err(WireError::BadShard(self.shard));
        }
        let t = msg_type(self.msg_type)?;
        if raft::raw_node::is_local_msg(t) || t == MessageType::MsgPropose {
            return Err(WireError::LocalOnly(t));
        }
        let mut m = Message::default();
        m.set_msg_type(t);
        m.to = self.to;
        m.from = self.from;
        m.term = self.term;
        m.log_term = self.log_term;
        m.index = self.index;
        let entries = self
            .entries
            .iter()
            .map(WireEntry::to_entry)
            .collect::<Result<Vec<_>, _>>()?;
        m.set_entries(entries.into());
        m.commit = self.commit;
        m.commit_term = self.commit_term;
        if let Some(s) = &self.snapshot {
            m.set_snapshot(s.to_snapshot());
        }
        m.request_snapshot = self.request_snapshot;
        m.reject = self.reject;
        m.reject_hint = self.reject_hint;
        m.context = Bytes::from(self.context.clone());
        m.priority = self.priority;
        Ok(m)
    }
}

/// Everything one node sends another in one round: many shards' messages in one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBatch {
    /// In the order raft-rs produced them (per shard order matters).
    pub messages: Vec<WireMessage>,
    /// "Not a member" replies to replicas that were removed (see `tombstone`).
    #[serde(default)]
    pub not_members: Vec<crate::tombstone::NotMember>,
}

impl WireBatch {
    /// MessagePack bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front (payloads plus a generous allowance per message and entry): the
        // buffer of a batch of appends (many KB) is not grown by doubling and copying.
        let size = 16
            + self
                .messages
                .iter()
                .map(|m| {
                    96 + m.context.len()
                        + m.snapshot.as_ref().map_or(0, |s| s.data.len() + 64)
                        + m.entries
                            .iter()
                            .map(|e| 32 + e.data.len() + e.context.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
            + 32 * self.not_members.len();
        let mut buf = Vec::with_capacity(size);
        rmp_serde::encode::write(&mut buf, self).expect("encoding a WireBatch cannot fail");
        buf
    }

    /// From MessagePack bytes (untrusted input: errors, never panics).
    pub fn decode(bytes: &[u8]) -> Result<WireBatch, WireError> {
        rmp_serde::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))
    }

    /// [`decode`](Self::decode) of a received frame, taking it over: the entries' data and
    /// context are slices of `frame` (no copy; the frame's memory lives as long as the
    /// longest-lived of them). A frame over [`SHARE_FRAME_LIMIT`] is decoded with copies.
    pub fn decode_owned(frame: Vec<u8>) -> Result<WireBatch, WireError> {
        if frame.len() > SHARE_FRAME_LIMIT {
            return Self::decode(&frame);
        }
        let frame = Bytes::from(frame);
        /// Clears [`SHARED_SOURCE`] however decoding ends.
        struct Clear;
        impl Drop for Clear {
            fn drop(&mut self) {
                SHARED_SOURCE.set(None);
            }
        }
        SHARED_SOURCE.set(Some(frame.clone()));
        let _clear = Clear;
        Self::decode(&frame)
    }
}

/// The payload of a normal entry: many proposals (write sets) batched into one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalBatch {
    /// `(proposer node, proposal id, payload)`; payloads as MessagePack `bin`.
    #[serde(with = "proposals")]
    pub proposals: Vec<(u64, ProposalId, Vec<u8>)>,
}

impl ProposalBatch {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Sized up front: payloads plus at most 24 bytes of framing each.
        let size = 8 + self.proposals.iter().map(|p| 24 + p.2.len()).sum::<usize>();
        let mut buf = Vec::with_capacity(size);
        rmp_serde::encode::write(&mut buf, self).expect("encoding a ProposalBatch cannot fail");
        buf
    }

    /// Decodes an entry's data; an undecodable entry (impossible unless a peer is broken) is
    /// an error the caller logs and skips.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ProposalBatch, WireError> {
        rmp_serde::from_slice(bytes).map_err(|e| WireError::Decode(e.to_string()))
    }

    /// [`decode`](Self::decode) into the proposals, each payload a slice of `data` (no copy).
    /// Payloads encoded before `bin` (arrays of integers) cannot be borrowed: copied then.
    pub(crate) fn decode_shared(data: &Bytes) -> Result<Vec<(u64, ProposalId, Bytes)>, WireError> {
        /// [`ProposalBatch`]'s encoding, payloads borrowed.
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            #[serde(borrow)]
            proposals: Vec<(u64, ProposalId, &'a [u8])>,
        }
        match rmp_serde::from_slice::<Borrowed<'_>>(data) {
            Ok(b) => Ok(b
                .proposals
                .into_iter()
                .map(|(node, id, p)| (node, id, data.slice_ref(p)))
                .collect()),
            Err(_) => Ok(Self::decode(data)?
                .proposals
                .into_iter()
                .map(|(node, id, p)| (node, id, Bytes::from(p)))
                .collect()),
        }
    }
}

/// [`ProposalBatch::proposals`] with payloads as `bin` (see `cairn_storage::serde_bin`).
mod proposals {
    use cairn_storage::serde_bin::{Bin, BinBuf};
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::ProposalId;

    /// `(proposer node, proposal id, payload)`.
    type Proposals = Vec<(u64, ProposalId, Vec<u8>)>;

    pub(super) fn serialize<S: Serializer>(
        v: &[(u64, ProposalId, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(node, id, p)| (node, id, Bin(p))))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Proposals, D::Error> {
        let v = Vec::<(u64, ProposalId, BinBuf)>::deserialize(d)?;
        Ok(v.into_iter().map(|(node, id, p)| (node, id, p.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_entries_and_a_conf_change_round_trips() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddLearnerNode);
        cc.node_id = 9;
        let mut e1 = Entry::default();
        e1.term = 3;
        e1.index = 7;
        e1.set_entry_type(EntryType::EntryConfChange);
        e1.data = encode_conf_change(&cc);
        let mut e2 = Entry::default();
        e2.term = 3;
        e2.index = 8;
        e2.data = Bytes::from_static(b"payload");
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.term = 3;
        m.set_entries(vec![e1, e2].into());
        let w = WireMessage::from_message(ShardId(5), &m);
        let batch = WireBatch {
            messages: vec![w.clone()],
            ..WireBatch::default()
        };
        let back = WireBatch::decode(&batch.encode()).unwrap();
        let m2 = back.messages[0]
            .to_message(NodeId(2), NodeId(1), 16)
            .unwrap();
        assert_eq!(m2, m);
    }

    #[test]
    fn hostile_messages_are_refused() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = 2;
        m.from = 1;
        let w = WireMessage::from_message(ShardId(0), &m);
        // Wrong peer, wrong destination, bad shard.
        assert!(w.to_message(NodeId(2), NodeId(3), 16).is_err());
        assert!(w.to_message(NodeId(4), NodeId(1), 16).is_err());
        let mut bad_shard = w.clone();
        bad_shard.shard = ShardId(16);
        assert_eq!(
            bad_shard.to_message(NodeId(2), NodeId(1), 16),
            Err(WireError::BadShard(ShardId(16)))
        );
        // Local-only and unknown types.
        let mut hup = w.clone();
        hup.msg_type = MessageType::MsgHup as u8;
        assert!(matches!(
            hup.to_message(NodeId(2), NodeId(1), 16),
            Err(WireError::LocalOnly(_))
        ));
        let mut propose = w.clone();
        propose.msg_type = MessageType::MsgPropose as u8;
        assert!(propose.to_message(NodeId(2), NodeId(1), 16).is_err());
        let mut unknown = w.clone();
        unknown.msg_type = 200;
        assert_eq!(
            unknown.to_message(NodeId(2), NodeId(1), 16),
            Err(WireError::UnknownType(200))
        );
        let mut bad_cc = w;
        bad_cc.entries.push(WireEntry {
            term: 1,
            index: 1,
            data: Bytes::new(),
            conf_change: Some(WireConfChange {
                change_type: 9,
                node_id: 1,
            }),
            context: Bytes::new(),
        });
        assert_eq!(
            bad_cc.to_message(NodeId(2), NodeId(1), 16),
            Err(WireError::UnknownConfChange(9))
        );
        // Garbage bytes decode to an error, not a panic.
        assert!(WireBatch::decode(&[0xc1, 0xff, 0x00]).is_err());
    }

    /// [`WireEntry`] and [`ProposalBatch`] as they were encoded before `bin` (log rows on
    /// disk): plain `Vec<u8>`, arrays of integers.
    #[derive(Serialize)]
    struct OldEntry {
        term: u64,
        index: u64,
        data: Vec<u8>,
        conf_change: Option<WireConfChange>,
        context: Vec<u8>,
    }

    #[derive(Serialize)]
    struct OldBatch {
        proposals: Vec<(u64, ProposalId, Vec<u8>)>,
    }

    #[test]
    fn entry_payloads_are_bin_and_entries_stored_before_still_decode() {
        // A write set's encoding is full of MessagePack markers ≥ 0x80.
        let payload = vec![0x93; 200];
        let batch = ProposalBatch {
            proposals: vec![(1, ProposalId(4), payload.clone())],
        };
        let data = batch.encode();
        assert!(data.len() < 215, "a proposal batch of {} bytes", data.len());
        assert_eq!(ProposalBatch::decode(&data).unwrap(), batch);
        let shared = Bytes::from(data.clone());
        let borrowed = ProposalBatch::decode_shared(&shared).unwrap();
        assert_eq!(
            borrowed,
            vec![(1, ProposalId(4), Bytes::from(payload.clone()))]
        );
        let inside = shared.as_ptr_range();
        assert!(
            inside.contains(&borrowed[0].2.as_ptr()),
            "the payload is a slice of the entry's buffer, not a copy"
        );
        let entry = WireEntry {
            term: 2,
            index: 9,
            data: data.clone().into(),
            conf_change: None,
            context: Bytes::new(),
        };
        let row = rmp_serde::to_vec(&entry).unwrap();
        assert!(
            row.len() < data.len() + 20,
            "a log row of {} bytes",
            row.len()
        );
        assert_eq!(rmp_serde::from_slice::<WireEntry>(&row).unwrap(), entry);

        let old_data = rmp_serde::to_vec(&OldBatch {
            proposals: vec![(1, ProposalId(4), payload)],
        })
        .unwrap();
        assert!(old_data.len() > 400);
        assert_eq!(ProposalBatch::decode(&old_data).unwrap(), batch);
        assert_eq!(
            ProposalBatch::decode_shared(&Bytes::from(old_data.clone())).unwrap(),
            vec![(1, ProposalId(4), Bytes::from(batch.proposals[0].2.clone()))],
            "an entry written before bin still decodes (copied)"
        );
        let old_row = rmp_serde::to_vec(&OldEntry {
            term: 2,
            index: 9,
            data: old_data.clone(),
            conf_change: None,
            context: vec![],
        })
        .unwrap();
        let back: WireEntry = rmp_serde::from_slice(&old_row).unwrap();
        assert_eq!(back.data, old_data);
        assert_eq!(ProposalBatch::decode(&back.data).unwrap(), batch);
    }

    /// A frame of appends whose two entries carry `payload`.
    fn append_frame(payload: &[u8]) -> WireBatch {
        let entry = |index| WireEntry {
            term: 2,
            index,
            data: Bytes::copy_from_slice(payload),
            conf_change: None,
            context: Bytes::from_static(b"ctx"),
        };
        let message = WireMessage {
            shard: ShardId(3),
            msg_type: MessageType::MsgAppend as u8,
            to: 2,
            from: 1,
            term: 2,
            log_term: 2,
            index: 4,
            entries: vec![entry(5), entry(6)],
            commit: 4,
            commit_term: 2,
            snapshot: None,
            request_snapshot: 0,
            reject: false,
            reject_hint: 0,
            context: vec![],
            priority: 0,
        };
        WireBatch {
            messages: vec![message],
            ..WireBatch::default()
        }
    }

    #[test]
    fn a_received_frame_is_the_storage_of_its_entries() {
        let batch = append_frame(&[0x93; 300]);
        let frame = batch.encode();
        let inside = frame.as_ptr_range();
        let back = WireBatch::decode_owned(frame).unwrap();
        assert_eq!(back, batch);
        for e in &back.messages[0].entries {
            assert!(
                inside.contains(&e.data.as_ptr()) && inside.contains(&e.context.as_ptr()),
                "entry {} was copied out of its frame",
                e.index
            );
        }
        // Decoding anything else afterwards copies (the frame is no longer the source).
        let row = rmp_serde::to_vec(&back.messages[0].entries[0]).unwrap();
        let entry: WireEntry = rmp_serde::from_slice(&row).unwrap();
        assert!(!row.as_ptr_range().contains(&entry.data.as_ptr()));
        assert_eq!(entry, batch.messages[0].entries[0]);
    }

    #[test]
    fn a_frame_over_the_limit_is_decoded_with_copies() {
        let batch = append_frame(&vec![7; SHARE_FRAME_LIMIT / 2 + 1]);
        let frame = batch.encode();
        assert!(frame.len() > SHARE_FRAME_LIMIT);
        let inside = frame.as_ptr_range();
        let back = WireBatch::decode_owned(frame).unwrap();
        assert_eq!(back, batch);
        assert!(!inside.contains(&back.messages[0].entries[0].data.as_ptr()));
    }

    #[test]
    fn an_undecodable_frame_is_an_error_and_leaves_no_source_behind() {
        let mut frame = append_frame(b"payload").encode();
        frame.truncate(frame.len() - 4);
        assert!(WireBatch::decode_owned(frame).is_err());
        assert!(SHARED_SOURCE.with_borrow(Option::is_none));
    }
}
