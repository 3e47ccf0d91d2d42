//! The mesh's wire protocol: what travels on a mesh connection's lane 0.
//!
//! Each direction of a mesh connection is one lane (lane id [`MESH_LANE`]) of
//! length-prefixed MessagePack frames (see [`crate::frame`]), each holding one [`Wire`]
//! value. The dialer's first frame is [`Wire::Hello`]; the acceptor answers with
//! [`Wire::HelloAck`] on its own lane 0, or closes the connection with
//! [`CLOSE_DUPLICATE`] when it keeps another connection to that node (see the
//! connection rules in [`crate::mesh`]). After that both directions carry
//! [`Wire::Send`] and [`Wire::Reply`] frames in any mix.
//!
//! User messages travel as an opaque MessagePack payload plus a *tag* naming their type
//! (see `Mesh::declare`): the receiver decodes the payload with the type declared
//! under the tag. A frame that is not a [`Wire`] value is a protocol error (the
//! connection is closed); a well-formed [`Wire::Send`] with an unknown tag or a payload
//! that does not decode is only that message's problem (counted, logged, answered with a
//! [`RemoteFailure`] if it was a call).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use cairn_scheduler::{ExitReason, NodeId, Pid};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The lane id of a mesh connection's message lane (each direction opens one).
pub const MESH_LANE: u32 = 0;

/// Close code: the acceptor keeps another connection to the dialing node.
pub const CLOSE_DUPLICATE: u32 = 2;
/// Close code: the connection was replaced by a newer one to the same node.
pub const CLOSE_REPLACED: u32 = 3;
/// Close code: a frame on the mesh lane was not a valid [`Wire`] value.
pub const CLOSE_PROTOCOL: u32 = 4;

/// Who a node is: sent in [`Wire::Hello`] and [`Wire::HelloAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's node id.
    pub node: NodeId,
    /// A random number chosen at [`Mesh::start`](crate::mesh::Mesh::start): a node that
    /// restarts with the same id is a new incarnation.
    pub incarnation: u64,
    /// Where the sender accepts connections.
    pub listen: SocketAddr,
    /// The sender's TLS name (the node name in its certificate), used to dial it.
    pub name: String,
    /// Other nodes the sender has confirmed (met itself: a hello, a SWIM packet), at most
    /// 1,024: how nodes learn of each other before membership tells them. A receiver takes
    /// them from members only, each under its name's node id, and bounded (module doc of
    /// `limits`); a client sends none.
    pub peers: Vec<PeerInfo>,
}

/// A node as known to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its id.
    pub node: NodeId,
    /// Its listen address.
    pub addr: SocketAddr,
    /// Its TLS name.
    pub name: String,
}

/// Where a [`Wire::Send`] goes on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A process by pid (its node must be the receiver).
    Pid(Pid),
    /// The process registered under this name on the receiver.
    Name(String),
}

/// Why a remote call was answered with a failure by the callee's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteFailure {
    /// No such process (or name) on the callee's node.
    #[error("no such process on the remote node")]
    NoProc,
    /// The process takes another message type.
    #[error("the remote process takes another message type")]
    WrongType,
    /// The callee's node has no message type declared under the tag.
    #[error("the remote node has no message type declared under tag {0:?}")]
    UnknownTag(String),
    /// The payload did not decode as the registered type.
    #[error("the remote node could not decode the message: {0}")]
    Malformed(String),
    /// The callee dropped the request's `Reply` without answering.
    #[error("the callee dropped the request without replying")]
    Dropped,
    /// The callee's node refused the request: the sender may not do that there (see the
    /// README's "Security model").
    #[error("not authorized: {0}")]
    Unauthorized(String),
}

/// One frame on a mesh lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// The dialer introduces itself (first frame of the dialer's lane).
    Hello(Hello),
    /// The acceptor introduces itself (first frame of the acceptor's lane).
    HelloAck(Hello),
    /// A user message.
    Send {
        /// The sending process, when sent from one (informational).
        from: Option<Pid>,
        /// The receiving process.
        to: Target,
        /// The declared tag of the message type (borrowed when sending: tags are
        /// `&'static str`, so no copy per message).
        tag: Cow<'static, str>,
        /// For requests: the id of the first reply exported in the payload, answered with
        /// a failure if the message cannot be delivered.
        call: Option<u64>,
        /// The message, MessagePack.
        payload: Bytes,
        /// The request the message was sent for (`cairn_scheduler::trace`), made current on
        /// the receiving node while the payload is decoded. Absent (not even a key) when
        /// there is none, so untraced frames are byte-for-byte what they were before, and
        /// nodes that do not know the field ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// The answer to a call.
    Reply {
        /// The reply id the caller's node exported the `Reply` under.
        id: u64,
        /// The value (MessagePack) or why there is none.
        result: Result<Bytes, RemoteFailure>,
    },
    // Process signals (location-transparent links and monitors). A node speaks only for
    // its own processes: `from`/`watcher`/`target` must be on the sending node.
    /// An exit signal from `from` to `to` (`link`: `from` was linked to `to` and died).
    Exit {
        /// The receiving process.
        to: Pid,
        /// The sending process.
        from: Pid,
        /// Why.
        reason: ExitReason,
        /// Sent along a link.
        link: bool,
    },
    /// `from` linked itself to `to`.
    Link {
        /// The process on the receiving node.
        to: Pid,
        /// The process on the sending node.
        from: Pid,
    },
    /// `from` removed its link to `to`.
    Unlink {
        /// The process on the receiving node.
        to: Pid,
        /// The process on the sending node.
        from: Pid,
    },
    /// `watcher` monitors `target` under `monitor`.
    Monitor {
        /// The monitored process (on the receiving node).
        target: Pid,
        /// The watching process (on the sending node).
        watcher: Pid,
        /// The monitor's ref.
        monitor: u64,
    },
    /// The monitor `monitor` of `target` was cancelled.
    Demonitor {
        /// The monitored process (on the receiving node).
        target: Pid,
        /// The monitor's ref.
        monitor: u64,
    },
    /// `target`, monitored under `monitor` from the receiving node, exited.
    Down {
        /// The monitor's ref.
        monitor: u64,
        /// The process that exited (on the sending node).
        target: Pid,
        /// Why.
        reason: ExitReason,
    },
    // --- Membership and cluster-wide names (see `mesh::membership`, `mesh::names`) ---
    /// A node that just joined (or rejoined) asks one member for its whole view; it
    /// carries the asker's own name claims so the answerer learns them at once.
    SyncRequest {
        /// The asker's own claims.
        names: Vec<NameClaim>,
    },
    /// The answer to [`Wire::SyncRequest`]. SWIM's join feed holds one packet of members
    /// and gossip brings the rest only over many probe periods; this brings all at once.
    Sync {
        /// The members the answerer sees alive (foca members with their SWIM
        /// incarnations), encoded by the membership codec; opaque outside the mesh.
        members: Bytes,
        /// Every name claim the answerer holds.
        names: Vec<NameClaim>,
    },
}

// --- Membership and cluster-wide names: wire values (kept together for merging) ---

/// Close code: the closing node is leaving the cluster (`Mesh::close`); the peer declares
/// it down at once instead of waiting for SWIM to notice.
pub const CLOSE_LEAVING: u32 = 5;
/// Close code: this node's membership declared the peer down.
pub const CLOSE_DECLARED_DOWN: u32 = 6;
/// Close code: a SWIM control connection carried no packet for a while.
pub const CLOSE_IDLE: u32 = 7;
/// Close code: the peer left too many signals waiting for room on its lane (it does not
/// read what it is sent; see `limits::MAX_SIGNAL_WAITERS`).
pub const CLOSE_OVERLOADED: u32 = 9;
/// Close code: the acceptor already has as many connections waiting for their hello as it
/// allows, from the peer's certificate or from all peers (see `limits`); dial again later.
pub const CLOSE_BUSY: u32 = 10;

/// The lane id that marks a *control connection*: the dialer opens this lane instead of
/// [`MESH_LANE`] and sends one [`Wire::Hello`] on it; after that the connection carries
/// SWIM datagrams only (no lanes, no user data), so it can be closed when idle without
/// losing anything.
pub const CONTROL_LANE: u32 = 1;

/// One cluster-wide name registration: `name` is held by `pid`.
///
/// Concurrent claims of one name are ordered by `(lamport, pid)`, lowest first; the
/// lowest claim wins on every node (see `mesh::names`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    /// The name.
    pub name: String,
    /// The holder (its node is the node that registered it).
    pub pid: Pid,
    /// The registering node's Lamport clock at registration.
    pub lamport: u64,
    /// The registering node's incarnation: a claim from an older incarnation than the
    /// member now known is stale (pids are reused when a node restarts).
    #[serde(default)]
    pub incarnation: u64,
}

/// A change to the name table, disseminated as a foca custom broadcast (piggybacked on
/// SWIM packets, QUIC datagrams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameOp {
    /// `pid` registered the name.
    Claim(NameClaim),
    /// `pid` no longer holds the name (it exited or unregistered); a claim of the same
    /// `(name, pid)` with a Lamport time up to `lamport` is stale from now on.
    Release {
        /// The name.
        name: String,
        /// The former holder.
        pid: Pid,
        /// The releasing node's Lamport clock at release.
        lamport: u64,
    },
}

impl NameOp {
    /// The process the op is about (its node is the only one that speaks for it).
    pub fn pid(&self) -> Pid {
        match self {
            NameOp::Claim(claim) => claim.pid,
            NameOp::Release { pid, .. } => *pid,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            NameOp::Claim(claim) => &claim.name,
            NameOp::Release { name, .. } => name,
        }
    }

    /// Its Lamport time.
    pub fn lamport(&self) -> u64 {
        match self {
            NameOp::Claim(claim) => claim.lamport,
            NameOp::Release { lamport, .. } => *lamport,
        }
    }
}

/// A byte string that MessagePack encodes as `bin` (not as an array of integers).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

/// Serializes a message payload (structs as maps with field names, like frames).
pub(crate) fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::encode::to_vec_named(value).map_err(|e| e.to_string())
}

/// Deserializes exactly one value from `payload`, nesting limited as for frames (the
/// frame decoder's borrowing fast path: no copy of every string through a reader).
pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    crate::frame::decode_payload(payload).map_err(|e| match e {
        crate::frame::FrameError::Malformed { reason } => reason,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_travel_as_msgpack_bin_and_arrays_are_accepted() {
        let encoded = encode_payload(&Bytes(vec![0xff; 100])).unwrap();
        assert_eq!(encoded.len(), 2 + 100, "bin8 header + bytes");
        assert_eq!(
            decode_payload::<Bytes>(&encoded).unwrap(),
            Bytes(vec![0xff; 100])
        );
        let as_array = encode_payload(&vec![1u8, 2, 3]).unwrap();
        assert_eq!(
            decode_payload::<Bytes>(&as_array).unwrap(),
            Bytes(vec![1, 2, 3])
        );
    }

    #[test]
    fn wire_frames_round_trip() {
        let frame = Wire::Send {
            from: Some(Pid::from_parts(NodeId(1), 3, 42)),
            to: Target::Name("inbox".into()),
            tag: "t".into(),
            call: Some(7),
            payload: Bytes(vec![1, 2, 3]),
            request: Some(0xfeed),
        };
        let bytes = encode_payload(&frame).unwrap();
        assert_eq!(decode_payload::<Wire>(&bytes).unwrap(), frame);
        let reply = Wire::Reply {
            id: 3,
            result: Err(RemoteFailure::UnknownTag("x".into())),
        };
        let bytes = encode_payload(&reply).unwrap();
        assert_eq!(decode_payload::<Wire>(&bytes).unwrap(), reply);
    }

    /// An untraced frame is encoded exactly as before the `request` field existed, and a
    /// traced one decodes on a node that does not know the field.
    #[test]
    fn the_request_field_is_absent_when_unset_and_ignored_by_older_decoders() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum OldWire {
            Send {
                from: Option<Pid>,
                to: Target,
                tag: String,
                call: Option<u64>,
                payload: Bytes,
            },
        }
        let old = OldWire::Send {
            from: None,
            to: Target::Name("n".into()),
            tag: "t".into(),
            call: Some(1),
            payload: Bytes(vec![1]),
        };
        let untraced = Wire::Send {
            from: None,
            to: Target::Name("n".into()),
            tag: "t".into(),
            call: Some(1),
            payload: Bytes(vec![1]),
            request: None,
        };
        assert_eq!(
            encode_payload(&untraced).unwrap(),
            encode_payload(&old).unwrap()
        );
        let traced = Wire::Send {
            from: None,
            to: Target::Name("n".into()),
            tag: "t".into(),
            call: Some(1),
            payload: Bytes(vec![1]),
            request: Some(42),
        };
        assert_ne!(
            encode_payload(&traced).unwrap(),
            encode_payload(&untraced).unwrap()
        );
        let bytes = encode_payload(&traced).unwrap();
        assert_eq!(decode_payload::<OldWire>(&bytes).unwrap(), old);
        assert_eq!(decode_payload::<Wire>(&bytes).unwrap(), traced);
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let valid = encode_payload(&Wire::Send {
            from: None,
            to: Target::Pid(Pid::from_parts(NodeId(2), 3, 9)),
            tag: "test.Msg".into(),
            call: None,
            payload: Bytes(vec![0x92, 0x01, 0x02]),
            request: None,
        })
        .unwrap();
        for len in 0..valid.len() {
            let _ = decode_payload::<Wire>(&valid[..len]);
        }
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if !bytes.is_empty() && next() % 2 == 0 {
                // Start like a real frame so the decoder gets further in.
                let n = bytes.len().min(valid.len());
                let cut = (next() as usize) % (n + 1);
                bytes[..cut].copy_from_slice(&valid[..cut]);
            }
            let _ = decode_payload::<Wire>(&bytes);
        }
    }
}
