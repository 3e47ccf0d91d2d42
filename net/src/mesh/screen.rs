//! The membership screen: every SWIM packet and every membership update from another
//! node passes here before foca sees it, so one member cannot rewrite the others' view.
//!
//! foca believes what it is told: a member's claim that another is `Down` is terminal
//! for that identity, a suspicion at `Incarnation::MAX` can never be refuted, and a
//! newer identity of a node replaces the live one. The screen is pure (no I/O, no
//! clock of its own, no foca instance); `membership` calls it under foca's lock with a
//! [`View`] of what foca knows, and counts what it refused.
//!
//! # Rules (each a named test below)
//!
//! * **A packet speaks for its sender.** The header's source must be the authenticated
//!   peer of the connection the packet came on ([`Refusal::Spoofed`]).
//! * **A third party's `Down` is a suspicion.** An update saying another node is `Down`
//!   becomes `Suspect` at the same incarnation: the suspect gets to refute it, and this
//!   node's own suspicion timer (`membership`) decides.
//! * **Incarnation jumps are capped.** An update about another node (or this one) more
//!   than [`MAX_INCARNATION_BUMP`] above what this node knows is refused: it could only
//!   serve to make a suspicion unrefutable (foca's incarnations are `u16`).
//! * **Only a node replaces its own live identity.** An update carrying another identity
//!   of a known node that is not an older one — a newer identity (higher start
//!   incarnation, or the same one at a later SWIM epoch: `swim`), or one equal in both but
//!   different (another address, name or region: foca would take it in place of the
//!   known one) — is refused unless that node sent it. So a liar can neither replace a
//!   member nor redirect where this node dials it.
//! * **Gossip introduces a bounded number of strangers.** An update about a node foca
//!   does not know, from another node, is refused unless its node id is its name's (and
//!   the name at most `limits::MAX_PEER_NAME_LEN` bytes: [`Refusal::NotItsName`]) and
//!   [`View::room_for_unmet`] allows one more ([`Refusal::TooManyUnmet`]): foca holds
//!   fewer than `limits::MAX_UNMET_MEMBERS` nodes this node has not met. A node
//!   introducing itself is always taken.
//! * **Third-party targets must be known.** `PingReq` and `IndirectAck` make this node
//!   send to the identity they carry; an identity foca does not know is refused (no
//!   dialing addresses a member made up).
//! * **"You are down" needs a second voice.** `TurnUndead` makes this node drop its
//!   identity and rejoin; it is acted on only when [`UndeadVotes`] has it from two
//!   distinct members within a window (one, when only one other member is known).
//! * **Syncs are bounded.** A full membership list over [`MAX_SYNC_MEMBERS`] is refused
//!   (whether a sync was asked for is `membership`'s check).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use cairn_scheduler::NodeId;
use foca::{Codec, Header, Identity, Incarnation, Member, Message, State};

use super::swim::{take, CodecError, MsgpackCodec, NodeIdentity};

/// The most an update about another node may raise its incarnation above what this
/// node knows (a refutation raises it by one; a few may cross in flight).
pub(crate) const MAX_INCARNATION_BUMP: Incarnation = 8;

/// The most members a [`Wire::Sync`](super::wire::Wire::Sync) may carry.
pub(crate) const MAX_SYNC_MEMBERS: usize = 16_384;

/// Why a packet or an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("packet claims to come from {claimed}, but arrived from {peer}")]
    Spoofed { peer: NodeId, claimed: NodeId },
    #[error("undecodable SWIM packet: {0}")]
    Malformed(String),
    #[error("incarnation {claimed} of {node} is more than {MAX_INCARNATION_BUMP} above the known {known}")]
    IncarnationJump {
        node: NodeId,
        known: Incarnation,
        claimed: Incarnation,
    },
    #[error("only {node} may replace its own live identity")]
    ReplacesIdentity { node: NodeId },
    #[error("the packet names {node}, an identity this node does not know")]
    UnknownTarget { node: NodeId },
    #[error("a lone claim that this node is down")]
    LoneUndead,
    #[error("a sync of {0} members is over the bound")]
    SyncTooLarge(usize),
    #[error("a suspicion of {node} over the sender's refutation budget")]
    SuspicionBudget { node: NodeId },
    #[error("{node}, a member this node does not know, is named by another node while too many members not met are held")]
    TooManyUnmet { node: NodeId },
    #[error("{node}, a member this node does not know, is named by another node under a name that is not its id's")]
    NotItsName { node: NodeId },
    #[error("{node} claims region {claimed:?}, not the one in its certificate")]
    WrongRegion {
        node: NodeId,
        claimed: Option<String>,
    },
}

/// What foca knows, as the screen needs it.
pub(crate) struct View<'a> {
    /// This node's identity.
    pub(crate) me: &'a NodeIdentity,
    /// This node's SWIM incarnation.
    pub(crate) my_incarnation: Incarnation,
    /// foca's record of other nodes (any state), by node id; may hold only the nodes a
    /// packet mentions.
    pub(crate) known: HashMap<NodeId, Member<NodeIdentity>>,
    /// How many more nodes foca does not know gossip from another node may introduce:
    /// `limits::MAX_UNMET_MEMBERS` less the nodes foca holds that this node has not met
    /// (`membership` works it out only for a packet naming a node not in `known`).
    pub(crate) room_for_unmet: usize,
}

impl View<'_> {
    /// The incarnation `node` is held down at here, if this node holds that very identity
    /// down.
    pub(crate) fn held_down_at(&self, node: &NodeIdentity) -> Option<Incarnation> {
        self.known
            .get(&node.node)
            .filter(|m| m.id() == node && m.state() == foca::State::Down)
            .map(Member::incarnation)
    }

    /// The identity and incarnation this node holds for `node`.
    fn current(&self, node: NodeId) -> Option<(&NodeIdentity, Incarnation)> {
        if node == self.me.node {
            return Some((self.me, self.my_incarnation));
        }
        self.known.get(&node).map(|m| (m.id(), m.incarnation()))
    }

    /// Whether foca holds a record of `node`, or it is this node.
    fn knows(&self, node: NodeId) -> bool {
        node == self.me.node || self.known.contains_key(&node)
    }

    fn knows_identity(&self, id: &NodeIdentity) -> bool {
        self.known.get(&id.node).is_some_and(|m| m.id() == id)
    }
}

/// What screening one update gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Screened {
    /// Taken as sent.
    Kept(Member<NodeIdentity>),
    /// A third party's `Down`, taken as this suspicion.
    Downgraded(Member<NodeIdentity>),
    Refused(Refusal),
}

/// Screens one membership update that `sender` gave (in a packet or a sync).
pub(crate) fn screen_update(
    sender: NodeId,
    update: Member<NodeIdentity>,
    view: &View<'_>,
) -> Screened {
    let node = update.id().node;
    if node == sender {
        // A node speaks for itself.
        return Screened::Kept(update);
    }
    if let Some((current, known)) = view.current(node) {
        if update.id() != current {
            if !current.win_addr_conflict(update.id()) {
                // Newer, or as new but different: foca would put it in place of the known
                // identity (and the address with it).
                return Screened::Refused(Refusal::ReplacesIdentity { node });
            }
            // An older identity: foca takes it as stale news.
        } else if update.incarnation() > known.saturating_add(MAX_INCARNATION_BUMP) {
            return Screened::Refused(Refusal::IncarnationJump {
                node,
                known,
                claimed: update.incarnation(),
            });
        }
    }
    if update.state() == State::Down {
        let suspect = Member::new(update.id().clone(), update.incarnation(), State::Suspect);
        return Screened::Downgraded(suspect);
    }
    Screened::Kept(update)
}

/// A SWIM packet taken apart: foca's layout is a header, then (unless it is a
/// `Broadcast`, or nothing follows) a `u16` count of member updates and the updates,
/// then a tail of custom broadcasts (name ops, screened by `names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) header: Header<NodeIdentity>,
    /// `None` when the packet has no update section.
    pub(crate) updates: Option<Vec<Member<NodeIdentity>>>,
    pub(crate) tail: Vec<u8>,
}

impl Packet {
    /// A gossip packet from `src` (at `src_incarnation`) to `dst` carrying `updates`, then
    /// `tail` (foca's custom broadcasts).
    pub(crate) fn gossip(
        src: NodeIdentity,
        src_incarnation: Incarnation,
        dst: NodeIdentity,
        updates: Vec<Member<NodeIdentity>>,
        tail: Vec<u8>,
    ) -> Packet {
        Packet {
            header: Header {
                src,
                src_incarnation,
                dst,
                message: Message::Gossip,
            },
            updates: Some(updates),
            tail,
        }
    }

    /// Decodes a packet; never panics on any input.
    pub(crate) fn decode(mut data: &[u8]) -> Result<Packet, Refusal> {
        let malformed = |e: CodecError| Refusal::Malformed(e.to_string());
        let header: Header<NodeIdentity> = take(&mut data).map_err(malformed)?;
        let mut updates = None;
        if data.remaining() >= 2 && header.message != Message::Broadcast {
            let count = data.get_u16();
            let mut list = Vec::new();
            for _ in 0..count {
                if data.is_empty() {
                    return Err(Refusal::Malformed("fewer updates than counted".into()));
                }
                list.push(MsgpackCodec.decode_member(&mut data).map_err(malformed)?);
            }
            updates = Some(list);
        }
        Ok(Packet {
            header,
            updates,
            tail: data.to_vec(),
        })
    }

    /// A packet addressed to a previous SWIM epoch of `me` (sent before its sender learned
    /// the new one) is addressed to `me` now: the same member, so it is answered, and the
    /// answer carries the new epoch. Not "you are down" (`TurnUndead`): that is about the
    /// previous epoch only. Returns whether it did.
    pub(crate) fn readdress_to(&mut self, me: &NodeIdentity) -> bool {
        let dst = &self.header.dst;
        let earlier_epoch = dst != me && dst.same_life(me) && dst.epoch < me.epoch;
        if earlier_epoch && self.header.message != Message::TurnUndead {
            self.header.dst = me.clone();
            return true;
        }
        false
    }

    /// Every node the packet mentions (sender, message target, updates): what the
    /// [`View`] must hold.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        let target = match &self.header.message {
            Message::PingReq { target, .. } | Message::IndirectAck { target, .. } => {
                Some(target.node)
            }
            _ => None,
        };
        std::iter::once(self.header.src.node)
            .chain(target)
            .chain(self.updates.iter().flatten().map(|m| m.id().node))
    }

    /// Encodes the packet back in foca's layout.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(super::swim::MAX_PACKET);
        // Identities, states and numbers only: encoding into a Vec cannot fail.
        let _ = MsgpackCodec.encode_header(&self.header, &mut out);
        if let Some(updates) = &self.updates {
            out.put_u16(u16::try_from(updates.len()).unwrap_or(u16::MAX));
            for update in updates.iter().take(usize::from(u16::MAX)) {
                let _ = MsgpackCodec.encode_member(update, &mut out);
            }
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// What screening a packet gave: the packet for foca and what was refused.
#[derive(Debug)]
pub(crate) struct PacketVerdict {
    /// The packet to hand to foca, updates screened.
    pub(crate) packet: Packet,
    /// Suspicions of a third party taken from the packet, `Down` claims downgraded
    /// included (`membership` times them).
    pub(crate) suspicions: Vec<Member<NodeIdentity>>,
    /// How many `Down` claims became suspicions.
    pub(crate) downgraded: usize,
    /// Updates refused (left out of `packet`).
    pub(crate) refused: Vec<Refusal>,
}

/// Screens a packet that arrived from `peer` (see the module doc). `Err` refuses the
/// whole packet: spoofed, undecodable, or naming an identity this node does not know.
pub(crate) fn screen_packet(
    peer: NodeId,
    mut packet: Packet,
    view: &View<'_>,
) -> Result<PacketVerdict, Refusal> {
    let claimed = packet.header.src.node;
    if claimed != peer {
        return Err(Refusal::Spoofed { peer, claimed });
    }
    match &packet.header.message {
        Message::PingReq { target, .. } | Message::IndirectAck { target, .. }
            if !view.knows_identity(target) =>
        {
            return Err(Refusal::UnknownTarget { node: target.node });
        }
        _ => {}
    }
    let updates = packet.updates.take();
    let mut verdict = PacketVerdict {
        packet,
        suspicions: Vec::new(),
        downgraded: 0,
        refused: Vec::new(),
    };
    if let Some(updates) = updates {
        let mut kept = Vec::with_capacity(updates.len());
        let mut room = view.room_for_unmet;
        for update in updates {
            if let Err(refusal) = may_introduce(peer, &update, view, &mut room) {
                verdict.refused.push(refusal);
                continue;
            }
            match screen_update(peer, update, view) {
                Screened::Kept(m) => {
                    if is_third_party_suspicion(peer, &m, view) {
                        verdict.suspicions.push(m.clone());
                    }
                    kept.push(m);
                }
                Screened::Downgraded(m) => {
                    verdict.downgraded += 1;
                    if is_third_party_suspicion(peer, &m, view) {
                        verdict.suspicions.push(m.clone());
                    }
                    kept.push(m);
                }
                Screened::Refused(why) => verdict.refused.push(why),
            }
        }
        verdict.packet.updates = Some(kept);
    }
    Ok(verdict)
}

fn is_third_party_suspicion(sender: NodeId, m: &Member<NodeIdentity>, view: &View<'_>) -> bool {
    m.state() == State::Suspect && m.id().node != sender && m.id().node != view.me.node
}

/// Whether `update`, from `peer`, may be taken as far as the bound on members not met
/// goes: about a node foca knows, or `peer` itself, it may; about a stranger, only one
/// true to its name, and while `room` (taken from) allows.
fn may_introduce(
    peer: NodeId,
    update: &Member<NodeIdentity>,
    view: &View<'_>,
    room: &mut usize,
) -> Result<(), Refusal> {
    let id = update.id();
    if id.node == peer || view.knows(id.node) {
        return Ok(());
    }
    if id.name.is_empty()
        || id.name.len() > super::limits::MAX_PEER_NAME_LEN
        || id.node != NodeId::of_name(&id.name)
    {
        return Err(Refusal::NotItsName { node: id.node });
    }
    *room = room
        .checked_sub(1)
        .ok_or(Refusal::TooManyUnmet { node: id.node })?;
    Ok(())
}

/// The header of a packet this node sent: how `membership` learns its own SWIM
/// incarnation (foca keeps it private).
pub(crate) fn sent_header(data: &[u8]) -> Option<Header<NodeIdentity>> {
    take(data).ok()
}

/// "You are down" votes (`TurnUndead`): acting on one makes this node take a new
/// identity and rejoin, so one member alone cannot force it while others are known.
#[derive(Debug, Default)]
pub(crate) struct UndeadVotes {
    /// Who said so, and when (bounded by the members that can reach this node; pruned
    /// to the window on every vote).
    voters: HashMap<NodeId, Instant>,
}

impl UndeadVotes {
    /// `sender` says this node is down, at `now`. Returns whether to act on it: when at
    /// least `min(2, others)` distinct members said so within `window` (`others` = the
    /// live members this node knows besides itself). Votes are cleared once acted on.
    pub(crate) fn vote(
        &mut self,
        sender: NodeId,
        now: Instant,
        window: Duration,
        others: usize,
    ) -> bool {
        self.voters
            .retain(|_, at| now.saturating_duration_since(*at) <= window);
        self.voters.insert(sender, now);
        if self.voters.len() >= others.clamp(1, 2) {
            self.voters.clear();
            true
        } else {
            false
        }
    }
}

/// Screens a full membership list from `sender` (a [`Wire::Sync`](super::wire::Wire::Sync)
/// this node asked for): bounded in size, each update screened like gossip. The
/// verdict's packet is a `Feed` from `sender` carrying the kept members.
pub(crate) fn screen_sync(
    sender: NodeIdentity,
    members: Vec<Member<NodeIdentity>>,
    view: &View<'_>,
) -> Result<PacketVerdict, Refusal> {
    if members.len() > MAX_SYNC_MEMBERS {
        return Err(Refusal::SyncTooLarge(members.len()));
    }
    let packet = Packet {
        header: Header {
            src: sender.clone(),
            src_incarnation: 0,
            dst: view.me.clone(),
            message: Message::Feed,
        },
        updates: Some(members),
        tail: Vec::new(),
    };
    screen_packet(sender.node, packet, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64, start: u64) -> NodeIdentity {
        NodeIdentity {
            node: NodeId(n),
            name: format!("node-{n}"),
            addr: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(),
            region: None,
            incarnation: start,
            epoch: 0,
        }
    }

    /// This node is 1 (SWIM incarnation 3); it knows 2 (alive, incarnation 5) and 3.
    fn view(me: &NodeIdentity) -> View<'_> {
        let known = [
            Member::new(id(2, 100), 5, State::Alive),
            Member::new(id(3, 100), 0, State::Alive),
        ]
        .into_iter()
        .map(|m| (m.id().node, m))
        .collect();
        View {
            me,
            my_incarnation: 3,
            known,
            room_for_unmet: usize::MAX,
        }
    }

    /// A node this node does not know, under its name's id (as every true node is).
    fn stranger(name: &str) -> NodeIdentity {
        NodeIdentity {
            node: NodeId::of_name(name),
            name: name.to_owned(),
            ..id(0, 100)
        }
    }

    fn gossip(src: NodeIdentity, dst: NodeIdentity, updates: Vec<Member<NodeIdentity>>) -> Packet {
        Packet {
            header: Header {
                src,
                src_incarnation: 0,
                dst,
                message: Message::Gossip,
            },
            updates: Some(updates),
            tail: vec![0, 1, 0xc0],
        }
    }

    #[test]
    fn a_packet_whose_source_is_not_the_connections_peer_is_spoofed() {
        let me = id(1, 100);
        let view = view(&me);
        let packet = gossip(id(2, 100), me.clone(), vec![]);
        assert_eq!(
            screen_packet(NodeId(3), packet.clone(), &view).unwrap_err(),
            Refusal::Spoofed {
                peer: NodeId(3),
                claimed: NodeId(2)
            }
        );
        assert!(screen_packet(NodeId(2), packet, &view).is_ok());
    }

    #[test]
    fn a_third_partys_down_becomes_a_suspicion_at_the_same_incarnation() {
        let me = id(1, 100);
        let view = view(&me);
        let down = Member::new(id(2, 100), 5, State::Down);
        let suspect = Member::new(id(2, 100), 5, State::Suspect);
        assert_eq!(
            screen_update(NodeId(3), down.clone(), &view),
            Screened::Downgraded(suspect.clone())
        );
        // About this node too: foca refutes a suspicion, but a Down would make it rejoin.
        let me_down = Member::new(me.clone(), 3, State::Down);
        assert!(matches!(
            screen_update(NodeId(3), me_down, &view),
            Screened::Downgraded(m) if m.state() == State::Suspect
        ));
        // A node may say it is down itself (leaving).
        assert_eq!(
            screen_update(NodeId(2), down.clone(), &view),
            Screened::Kept(down)
        );
        // Suspicions and liveness pass.
        assert_eq!(
            screen_update(NodeId(3), suspect.clone(), &view),
            Screened::Kept(suspect)
        );
    }

    #[test]
    fn incarnation_jumps_above_the_bound_are_refused() {
        let me = id(1, 100);
        let view = view(&me);
        let within = Member::new(id(2, 100), 5 + MAX_INCARNATION_BUMP, State::Suspect);
        assert!(matches!(
            screen_update(NodeId(3), within, &view),
            Screened::Kept(_)
        ));
        let beyond = Member::new(id(2, 100), 6 + MAX_INCARNATION_BUMP, State::Suspect);
        assert_eq!(
            screen_update(NodeId(3), beyond, &view),
            Screened::Refused(Refusal::IncarnationJump {
                node: NodeId(2),
                known: 5,
                claimed: 6 + MAX_INCARNATION_BUMP
            })
        );
        // An unrefutable suspicion of this node.
        let at_max = Member::new(me.clone(), Incarnation::MAX, State::Suspect);
        assert!(matches!(
            screen_update(NodeId(3), at_max, &view),
            Screened::Refused(Refusal::IncarnationJump { .. })
        ));
        // The node itself may move on as it likes.
        let own = Member::new(id(2, 100), 1000, State::Alive);
        assert!(matches!(
            screen_update(NodeId(2), own, &view),
            Screened::Kept(_)
        ));
    }

    /// `update` about node 2 is refused as a replaced identity from node 3, and kept from
    /// node 2 itself.
    fn assert_only_node_2_itself_may_send(update: Member<NodeIdentity>, view: &View<'_>) {
        assert_eq!(
            screen_update(NodeId(3), update.clone(), view),
            Screened::Refused(Refusal::ReplacesIdentity { node: NodeId(2) })
        );
        assert_eq!(
            screen_update(NodeId(2), update.clone(), view),
            Screened::Kept(update)
        );
    }

    #[test]
    fn only_a_node_replaces_its_own_live_identity() {
        let me = id(1, 100);
        let view = view(&me);
        let newer = Member::new(id(2, 101), 0, State::Alive);
        assert_only_node_2_itself_may_send(newer, &view);
        // As new, but at another address: foca would take it in place of the known one.
        let moved = Member::new(
            NodeIdentity {
                addr: "10.6.6.6:1".parse().unwrap(),
                ..id(2, 100)
            },
            5,
            State::Alive,
        );
        assert_only_node_2_itself_may_send(moved, &view);
        let newer_me = Member::new(id(1, 101), 0, State::Alive);
        assert!(matches!(
            screen_update(NodeId(3), newer_me, &view),
            Screened::Refused(Refusal::ReplacesIdentity { .. })
        ));
        // An older identity is stale news, left to foca.
        let older = Member::new(id(2, 99), 0, State::Suspect);
        assert!(matches!(
            screen_update(NodeId(3), older, &view),
            Screened::Kept(_)
        ));
    }

    #[test]
    fn only_a_node_announces_its_own_next_epoch() {
        let me = id(1, 100);
        let view = view(&me);
        let next = Member::new(
            NodeIdentity {
                epoch: 1,
                ..id(2, 100)
            },
            0,
            State::Alive,
        );
        assert_only_node_2_itself_may_send(next, &view);
        // Nor may anyone move this node to another epoch (it could not answer there).
        let my_next = Member::new(
            NodeIdentity {
                epoch: 1,
                ..me.clone()
            },
            0,
            State::Suspect,
        );
        assert_eq!(
            screen_update(NodeId(3), my_next, &view),
            Screened::Refused(Refusal::ReplacesIdentity { node: NodeId(1) })
        );
        // A previous epoch is stale news, whatever its incarnation: foca drops it, and it
        // is no fresh suspicion for the budget either.
        let me_next = NodeIdentity {
            epoch: 2,
            ..me.clone()
        };
        let known_next = Member::new(
            NodeIdentity {
                epoch: 2,
                ..id(2, 100)
            },
            0,
            State::Alive,
        );
        let view = View {
            me: &me_next,
            my_incarnation: 0,
            known: [(NodeId(2), known_next)].into_iter().collect(),
            room_for_unmet: 0,
        };
        for old in [id(1, 100), id(2, 100)] {
            let stale = Member::new(old, 59_999, State::Suspect);
            assert_eq!(
                screen_update(NodeId(3), stale.clone(), &view),
                Screened::Kept(stale.clone())
            );
            assert_eq!(super::super::refute::fresh(NodeId(3), &stale, &view), None);
        }
    }

    #[test]
    fn a_packet_to_an_earlier_epoch_of_this_node_is_taken_as_to_this_one() {
        let me = NodeIdentity {
            epoch: 2,
            ..id(1, 100)
        };
        let at = |epoch| NodeIdentity {
            epoch,
            ..id(1, 100)
        };
        let mut ping = gossip(id(2, 100), at(1), vec![]);
        ping.header.message = Message::Ping(7);
        assert!(ping.readdress_to(&me));
        assert_eq!(ping.header.dst, me);
        // Already to this epoch, or to a later one (not this node's): left alone.
        for dst in [at(2), at(3)] {
            let mut packet = gossip(id(2, 100), dst.clone(), vec![]);
            assert!(!packet.readdress_to(&me));
            assert_eq!(packet.header.dst, dst);
        }
        // Another life of this node is another member: foca ignores what is sent to it.
        let mut old_life = gossip(id(2, 100), id(1, 99), vec![]);
        assert!(!old_life.readdress_to(&me));
        // "You are down" speaks of the earlier epoch only.
        let mut undead = gossip(id(2, 100), at(0), vec![]);
        undead.header.message = Message::TurnUndead;
        assert!(!undead.readdress_to(&me));
        assert_eq!(undead.header.dst, at(0));
    }

    #[test]
    fn a_packet_keeps_its_good_updates_and_tail_and_drops_the_refused() {
        let me = id(1, 100);
        let view = view(&me);
        let packet = gossip(
            id(3, 100),
            me.clone(),
            vec![
                Member::new(id(2, 100), 5, State::Down),
                Member::new(id(2, 101), 0, State::Alive),
                Member::new(stranger("node-4"), 0, State::Alive),
            ],
        );
        let bytes = packet.encode();
        let verdict = screen_packet(NodeId(3), Packet::decode(&bytes).unwrap(), &view).unwrap();
        assert_eq!(
            verdict.packet.updates.as_deref(),
            Some(
                &[
                    Member::new(id(2, 100), 5, State::Suspect),
                    Member::new(stranger("node-4"), 0, State::Alive),
                ][..]
            )
        );
        assert_eq!(verdict.downgraded, 1);
        assert_eq!(
            verdict.suspicions,
            [Member::new(id(2, 100), 5, State::Suspect)]
        );
        assert_eq!(verdict.refused.len(), 1);
        assert_eq!(verdict.packet.tail, packet.tail);
    }

    #[test]
    fn probe_requests_naming_an_unknown_identity_are_refused() {
        let me = id(1, 100);
        let view = view(&me);
        let mut packet = gossip(id(3, 100), me.clone(), vec![]);
        packet.header.message = Message::PingReq {
            target: NodeIdentity {
                addr: "10.9.9.9:1".parse().unwrap(),
                ..id(2, 100)
            },
            probe_number: 1,
        };
        assert_eq!(
            screen_packet(NodeId(3), packet.clone(), &view).unwrap_err(),
            Refusal::UnknownTarget { node: NodeId(2) }
        );
        packet.header.message = Message::PingReq {
            target: id(2, 100),
            probe_number: 1,
        };
        assert!(screen_packet(NodeId(3), packet, &view).is_ok());
    }

    #[test]
    fn packets_round_trip_in_focas_layout_and_garbage_is_an_error() {
        let me = id(1, 100);
        let mut packet = gossip(
            id(3, 100),
            me,
            vec![Member::new(id(2, 100), 5, State::Down)],
        );
        assert_eq!(Packet::decode(&packet.encode()).unwrap(), packet);
        // Broadcasts have no update section; the rest is the tail.
        packet.header.message = Message::Broadcast;
        packet.updates = None;
        assert_eq!(Packet::decode(&packet.encode()).unwrap(), packet);
        for garbage in [&[][..], &[0xc1], &[0x94, 0, 0, 0, 0], &[0xff; 40]] {
            assert!(Packet::decode(garbage).is_err());
        }
        // A count larger than what follows.
        let mut short = gossip(id(3, 100), id(1, 100), vec![]).encode();
        let header_len = short.len() - 2 - 3;
        short.truncate(header_len);
        short.extend_from_slice(&[0xff, 0xff]);
        assert!(Packet::decode(&short).is_err());
    }

    #[test]
    fn one_member_alone_cannot_make_this_node_rejoin() {
        let mut votes = UndeadVotes::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        // Three others known: the same voter repeating itself is still one voice.
        assert!(!votes.vote(NodeId(9), t0, window, 3));
        assert!(!votes.vote(NodeId(9), t0 + Duration::from_secs(1), window, 3));
        // A second voice within the window: act.
        assert!(votes.vote(NodeId(2), t0 + Duration::from_secs(2), window, 3));
        // Votes were spent; an old vote falls out of the window.
        assert!(!votes.vote(NodeId(9), t0 + Duration::from_secs(3), window, 3));
        assert!(!votes.vote(NodeId(2), t0 + Duration::from_secs(20), window, 3));
        // With one other member known, its word is enough.
        assert!(votes.vote(NodeId(2), t0, window, 1));
    }

    #[test]
    fn syncs_are_bounded_and_screened_like_gossip() {
        let me = id(1, 100);
        let view = view(&me);
        let members = vec![
            Member::new(id(2, 100), 5, State::Down),
            Member::new(id(2, 100), 50, State::Alive),
            Member::new(stranger("node-5"), 0, State::Alive),
        ];
        let verdict = screen_sync(id(3, 100), members, &view).unwrap();
        assert_eq!(verdict.packet.updates.map(|u| u.len()), Some(2));
        assert_eq!(verdict.downgraded, 1);
        assert_eq!(verdict.suspicions.len(), 1);
        assert_eq!(verdict.refused.len(), 1);
        let huge = vec![Member::new(stranger("node-5"), 0, State::Alive); MAX_SYNC_MEMBERS + 1];
        assert_eq!(
            screen_sync(id(3, 100), huge, &view).unwrap_err(),
            Refusal::SyncTooLarge(MAX_SYNC_MEMBERS + 1)
        );
    }
    #[test]
    fn gossip_introduces_strangers_true_to_their_names_while_there_is_room() {
        let me = id(1, 100);
        let mut view = view(&me);
        view.room_for_unmet = 2;
        let alive = |id: NodeIdentity| Member::new(id, 0, State::Alive);
        let packet = gossip(
            id(3, 100),
            me.clone(),
            vec![
                alive(stranger("a")),
                // Under another node's id, or a name no TLS name can be.
                alive(NodeIdentity {
                    node: NodeId(77),
                    ..stranger("forged")
                }),
                alive(stranger(
                    &"x".repeat(super::super::limits::MAX_PEER_NAME_LEN + 1),
                )),
                alive(stranger("b")),
                // Past the room.
                alive(stranger("c")),
                // Known nodes, and the sender itself, take no room.
                Member::new(id(2, 100), 5, State::Alive),
                alive(id(3, 100)),
            ],
        );
        let verdict = screen_packet(NodeId(3), packet, &view).unwrap();
        let kept: Vec<NodeId> = verdict
            .packet
            .updates
            .iter()
            .flatten()
            .map(|m| m.id().node)
            .collect();
        assert_eq!(
            kept,
            [stranger("a").node, stranger("b").node, NodeId(2), NodeId(3)]
        );
        assert_eq!(
            verdict.refused,
            [
                Refusal::NotItsName { node: NodeId(77) },
                Refusal::NotItsName {
                    node: stranger(&"x".repeat(super::super::limits::MAX_PEER_NAME_LEN + 1)).node
                },
                Refusal::TooManyUnmet {
                    node: stranger("c").node
                },
            ]
        );
        // No room: a stranger introducing itself is still taken.
        view.room_for_unmet = 0;
        let own = gossip(stranger("d"), me.clone(), vec![alive(stranger("d"))]);
        let verdict = screen_packet(stranger("d").node, own, &view).unwrap();
        assert!(verdict.refused.is_empty());
        assert_eq!(verdict.packet.updates.map(|u| u.len()), Some(1));
    }
}
