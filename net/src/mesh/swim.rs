//! SWIM's sans-IO pieces, as foca wants them: the member identity, the packet codec, the
//! timing configuration and the effect collector. Nothing here does I/O; the driver that
//! wires foca to connections and processes is `membership`.
//!
//! foca is sans-IO: every call (`handle_data`, `handle_timer`, `announce`, ...) takes a
//! [`foca::Runtime`], and what foca wants done comes back through it. Here that runtime is
//! [`Effects`], which only *records* packets to send, timers to arm and notifications.
//!
//! # Identity
//!
//! A member is a [`NodeIdentity`]: node id, TLS name (to dial it), listen address, region
//! label, incarnation and SWIM epoch. foca's *address* of an identity is the node id: two
//! identities with one node id are two incarnations of one node, or two epochs of one
//! incarnation, and the higher `(incarnation, epoch)` wins (`win_addr_conflict`). A node
//! starts with incarnation = wall-clock nanoseconds, so a restarted node outranks its
//! previous life; when foca learns that the cluster declared *this* node down (a hung node
//! that wakes up), `renew` gives it incarnation + 1 and it rejoins as a new member.
//!
//! # Epochs
//!
//! foca's own incarnation (a `u16`) rises each time a node refutes a suspicion of itself,
//! and a member with a valid certificate can keep suspecting another. When this node's
//! foca incarnation reaches [`EPOCH_MARK`], it takes its identity at `epoch + 1`
//! (`membership::Inner::next_epoch`), and foca starts its incarnation again at 0. The epoch
//! is SWIM's business only: the node incarnation (what pids, connections, names and
//! [`Member`] carry) does not change, and membership treats a rename that differs only in
//! the epoch ([`NodeIdentity::same_life`]) as the same member, updated in place.
//!
//! On the wire an epoch of 0 is left out, so identities at epoch 0 encode exactly as they
//! did before epochs existed (see `docs/swim_incarnation.md` for mixed versions).

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use bytes::{Buf, BufMut};
use cairn_scheduler::NodeId;
use foca::{Header, OwnedNotification, Timer};
use serde::{Deserialize, Serialize};

use super::membership::Member;
use super::names::NameBroadcasts;

/// Largest SWIM packet. Packets travel as QUIC datagrams, whose room is the path MTU
/// minus QUIC's overhead; quinn starts with a 1200-byte MTU, leaving about 1150 bytes
/// for a datagram on a fresh connection. 1100 keeps clear of that before MTU discovery.
pub(crate) const MAX_PACKET: usize = 1100;

/// How many times each membership update or name op is piggybacked. 10 is foca's
/// `Config::simple` value; with 3 gossip targets per period it reaches a 1,000-node
/// cluster with high probability (epidemic spread is O(log n) rounds).
const MAX_TRANSMISSIONS: u8 = 10;

/// Remembered nodes announced to when this node finds itself alone (plus the seeds).
pub(super) const IDLE_ANNOUNCES: usize = 8;

/// Members asked to probe indirectly when a direct probe gets no answer (foca's default).
const INDIRECT_PROBES: usize = 3;

/// How long a member declared down stays remembered (so its stale identity cannot come
/// back through old gossip). Renewed identities are not blocked by this.
const REMOVE_DOWN_AFTER: Duration = Duration::from_secs(60 * 60);

/// foca incarnation at which a node moves on to its next SWIM epoch. foca cannot refute a
/// suspicion at `u16::MAX` (the node would have to rejoin as a new incarnation); a
/// refutation raises the incarnation by at most `MAX_INCARNATION_BUMP + 1` (9), so this
/// leaves room for hundreds of refutations in flight after the mark is passed.
pub(crate) const EPOCH_MARK: foca::Incarnation = 60_000;

/// Who a member is: what rides in foca's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeIdentity {
    pub(crate) node: NodeId,
    pub(crate) name: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) region: Option<String>,
    pub(crate) incarnation: u64,
    /// The SWIM epoch within this incarnation (module doc): last, and left out at 0, so
    /// an epoch-0 identity encodes as one from before epochs existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) epoch: u32,
}

fn is_zero(epoch: &u32) -> bool {
    *epoch == 0
}

impl NodeIdentity {
    /// Whether `other` is this identity at another SWIM epoch (or this very identity):
    /// the same member, whose links, names and connections carry over.
    pub(crate) fn same_life(&self, other: &NodeIdentity) -> bool {
        self.node == other.node
            && self.incarnation == other.incarnation
            && self.name == other.name
            && self.addr == other.addr
            && self.region == other.region
    }

    pub(crate) fn member(&self) -> Member {
        Member {
            node: self.node,
            name: self.name.clone(),
            addr: self.addr,
            region: self.region.clone(),
            incarnation: self.incarnation,
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            incarnation: self.incarnation + 1,
            epoch: 0,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    /// The later life wins, and within one life the later epoch. Identities equal in
    /// both (only a forger makes two) do not win against each other: foca then takes the
    /// update, as it always did for one incarnation.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.epoch) > (adversary.incarnation, adversary.epoch)
    }
}

/// Why a SWIM packet did not encode or decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("no room left in the packet")]
    NoRoom,
}

/// foca's codec: compact MessagePack (arrays, not maps: SWIM packets are small and many).
#[derive(Debug, Default)]
pub(crate) struct MsgpackCodec;

fn put(mut buf: impl BufMut, bytes: &[u8]) -> Result<(), CodecError> {
    // foca requires a failed encode to leave the buffer untouched.
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError::NoRoom);
    }
    buf.put_slice(bytes);
    Ok(())
}

pub(super) fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = {
        let chunk = buf.chunk();
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(chunk));
        de.set_max_depth(crate::frame::MAX_NESTING);
        let value = T::deserialize(&mut de)?;
        (value, de.position() as usize)
    };
    buf.advance(used);
    Ok(value)
}

impl foca::Codec<NodeIdentity> for MsgpackCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(buf, &rmp_serde::to_vec(header)?)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, CodecError> {
        take(buf)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        put(buf, &rmp_serde::to_vec(member)?)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<NodeIdentity>, CodecError> {
        take(buf)
    }
}

/// What foca asked for during one call; carried out by the mesh.
#[derive(Default)]
pub(crate) struct Effects {
    pub(crate) sends: Vec<(NodeIdentity, Vec<u8>)>,
    pub(crate) timers: Vec<(Timer<NodeIdentity>, Duration)>,
    pub(crate) notes: Vec<OwnedNotification<NodeIdentity>>,
}

impl foca::Runtime<NodeIdentity> for Effects {
    fn notify(&mut self, notification: foca::Notification<'_, NodeIdentity>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// foca's configuration for a failure timeout `t` (the time within which a dead or hung
/// node is declared down; default 5 s):
///
/// * probe period `t/10` (500 ms): a dead node is first probed by *some* member within
///   about one period (each of the n-1 others probes one member per period), and with
///   probability ≥ 1 - e^-k within k periods;
/// * probe RTT `t/25` (200 ms) before indirect probes — loopback and LAN answer in well
///   under a millisecond, so this is slack for busy schedulers;
/// * suspicion `3t/10` (1.5 s) before a suspect is declared down, giving the suspect
///   time to refute (it learns of the suspicion within one gossip round, `t/25`).
///
/// Expected detection: ~1.5 periods + RTT + suspicion ≈ 2.5 s for `t` = 5 s; the
/// remaining slack covers unlucky probe orders (the chance of not being probed for
/// 5 more periods is below 1 %).
pub(crate) fn swim_config(failure_timeout: Duration) -> foca::Config {
    let t = failure_timeout;
    let mut config = foca::Config::simple();
    config.probe_period = t / 10;
    config.probe_rtt = t / 25;
    config.suspect_to_down_after = t * 3 / 10;
    config.num_indirect_probes = NonZeroUsize::new(INDIRECT_PROBES).expect("nonzero");
    config.max_transmissions = NonZeroU8::new(MAX_TRANSMISSIONS).expect("nonzero");
    config.remove_down_after = REMOVE_DOWN_AFTER;
    config.max_packet_size = NonZeroUsize::new(MAX_PACKET).expect("nonzero");
    // A node declared down (e.g. it was hung) hears it when it talks again and renews
    // its identity at once, instead of being ignored.
    config.notify_down_members = true;
    // Gossip updates between probes, so joins, suspicions and names spread in a few
    // hundred milliseconds rather than a few probe periods.
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: t / 25,
        num_members: NonZeroUsize::new(INDIRECT_PROBES).expect("nonzero"),
    });
    // Ask a random member for its member list now and then: speeds up learning the full
    // roster in large clusters (a join feed carries at most one packet of members).
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: t * 2,
        num_members: NonZeroUsize::new(1).expect("nonzero"),
    });
    // Talk to members believed down now and then, so a healed partition (or a member
    // falsely declared down while starved) merges back.
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: t * 2,
        num_members: NonZeroUsize::new(1).expect("nonzero"),
    });
    config
}

/// The smallest failure timeout accepted (the probe RTT is `t/25`, which must be > 0
/// and leave the scheduler's ~1 ms timer resolution far behind).
pub(crate) const MIN_FAILURE_TIMEOUT: Duration = Duration::from_millis(250);

/// The foca instance of a mesh.
pub(crate) type SwimFoca =
    foca::Foca<NodeIdentity, MsgpackCodec, rand_09::rngs::SmallRng, NameBroadcasts>;

/// foca and the switches around it; behind `Inner::swim` (locked before `Inner::state`,
/// which is locked before the name table).
pub(crate) struct Swim {
    pub(crate) foca: SwimFoca,
    /// Test hook ([`super::Mesh::set_membership_frozen`]): while `Some`, incoming packets
    /// and outgoing sends are dropped and fired timers are held here, to be handed to
    /// foca when thawed (foca must see every timer it asked for).
    pub(crate) frozen: Option<Vec<Timer<NodeIdentity>>>,
    /// Set by `Mesh::close` before it leaves the cluster (leaving makes foca report
    /// this node defunct, which is then expected).
    pub(crate) leaving: bool,
    /// Set by `Mesh::close`: foca is no longer driven.
    pub(crate) closed: bool,
    /// What the membership screen keeps between packets (`membership`).
    pub(crate) guards: super::membership::Guards,
}

impl Swim {
    pub(crate) fn new(
        me: NodeIdentity,
        failure_timeout: Duration,
        names: NameBroadcasts,
        seed: u64,
    ) -> Swim {
        use rand_09::SeedableRng;
        Swim {
            foca: foca::Foca::with_custom_broadcast(
                me,
                swim_config(failure_timeout),
                rand_09::rngs::SmallRng::seed_from_u64(seed),
                MsgpackCodec,
                names,
            ),
            frozen: None,
            leaving: false,
            closed: false,
            guards: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;

    fn identity(n: u64) -> NodeIdentity {
        NodeIdentity {
            node: NodeId(n),
            name: format!("node-{n}"),
            addr: "127.0.0.1:7400".parse().unwrap(),
            region: Some("eu".into()),
            incarnation: 1_700_000_000_000_000_000 + n,
            epoch: 0,
        }
    }

    #[test]
    fn codec_round_trips_and_leaves_a_full_buffer_untouched() {
        let mut codec = MsgpackCodec;
        let member = foca::Member::new(identity(3), 2, foca::State::Suspect);
        let mut buf = Vec::new();
        codec.encode_member(&member, &mut buf).unwrap();
        codec.encode_member(&member, &mut buf).unwrap();
        let mut slice = &buf[..];
        assert_eq!(codec.decode_member(&mut slice).unwrap(), member);
        assert_eq!(codec.decode_member(&mut slice).unwrap(), member);
        assert!(slice.is_empty());

        let mut small = Vec::new();
        let mut limited = (&mut small).limit(10);
        assert!(matches!(
            codec.encode_member(&member, &mut limited),
            Err(CodecError::NoRoom)
        ));
        assert!(small.is_empty());
        // Garbage never panics.
        let mut garbage: &[u8] = &[0xc1, 0xff, 0x00];
        assert!(codec.decode_member(&mut garbage).is_err());
    }

    #[test]
    fn a_higher_incarnation_wins_and_renew_raises_it() {
        use foca::Identity;
        let old = identity(1);
        let new = old.renew().unwrap();
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn a_later_epoch_wins_within_a_life_and_a_later_life_wins_over_any_epoch() {
        use foca::Identity;
        let old = identity(1);
        let next = NodeIdentity {
            epoch: 1,
            ..old.clone()
        };
        assert!(next.same_life(&old) && old.same_life(&next));
        assert_eq!(next.addr(), old.addr());
        assert!(next.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&next));
        // A new life (rejoin) outranks every epoch of the previous one, and starts at 0.
        let many = NodeIdentity {
            epoch: 7,
            ..old.clone()
        };
        let renewed = many.renew().unwrap();
        assert_eq!(renewed.epoch, 0);
        assert!(!renewed.same_life(&many));
        assert!(renewed.win_addr_conflict(&many));
        assert!(!many.win_addr_conflict(&renewed));
        // A higher epoch never outranks a later life.
        let stale = NodeIdentity {
            epoch: u32::MAX,
            ..old.clone()
        };
        assert!(renewed.win_addr_conflict(&stale));
        // Another name or address is another member, whatever the epoch.
        let other = NodeIdentity {
            addr: "127.0.0.1:7401".parse().unwrap(),
            ..next.clone()
        };
        assert!(!other.same_life(&next));
    }

    #[test]
    fn an_identity_at_epoch_zero_encodes_as_before_epochs_and_old_frames_decode() {
        /// The identity as nodes without epochs encode it.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Before {
            node: NodeId,
            name: String,
            addr: std::net::SocketAddr,
            region: Option<String>,
            incarnation: u64,
        }
        let id = identity(2);
        let before = Before {
            node: id.node,
            name: id.name.clone(),
            addr: id.addr,
            region: id.region.clone(),
            incarnation: id.incarnation,
        };
        let bytes = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&before).unwrap());
        assert_eq!(rmp_serde::from_slice::<NodeIdentity>(&bytes).unwrap(), id);
        // A later epoch rides as a sixth field, which a node without epochs cannot read.
        let next = NodeIdentity { epoch: 3, ..id };
        let bytes = rmp_serde::to_vec(&next).unwrap();
        assert_eq!(rmp_serde::from_slice::<NodeIdentity>(&bytes).unwrap(), next);
        assert!(rmp_serde::from_slice::<Before>(&bytes).is_err());
    }

    #[test]
    fn default_timing_fits_in_the_failure_timeout() {
        let t = Duration::from_secs(5);
        let c = swim_config(t);
        assert!(c.probe_rtt < c.probe_period);
        // One probe period to be probed, the RTT, then suspicion: well inside t.
        assert!(c.probe_period * 2 + c.probe_rtt + c.suspect_to_down_after < t);
    }
}
