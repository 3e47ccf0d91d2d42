//! Membership: foca (SWIM with suspicion) driven inside the mesh, and the live members
//! it reports.
//!
//! foca is sans-IO (see `swim`); here it runs under `Inner::swim`, and what it asked for
//! is carried out: notifications still under the lock (so membership changes are applied
//! in foca's order), packets and timers after releasing it (packets are QUIC datagrams,
//! see `controls`; timers are Cairn processes sleeping on the scheduler's timer wheel).
//!
//! # Protocol
//!
//! * **Joining.** A node dials each seed (retrying until it answers), learns the seed's
//!   node id from the hello and sends it a SWIM *announce* until the seed is a live member
//!   here. Once joined it asks one member for its whole membership and name table over the
//!   reliable lane (`Wire::SyncRequest`; foca's `apply_many`). Everything else spreads by
//!   gossip piggybacked on probes and on a gossip round every `failure_timeout/25` to 3
//!   members; every `2 × failure_timeout` each node syncs with one random member it has a
//!   data connection to (anti-entropy; it opens no connection). A node that finds itself
//!   alone announces again to remembered members and to its seeds, and goes on announcing
//!   to remembered members every `2 × failure_timeout` for as long as it stays alone.
//! * **Failure detection.** [`MeshConfig::failure_timeout`](super::MeshConfig::failure_timeout)
//!   sets the probe period (`t/10`), probe RTT (`t/25`) and suspicion time (`3t/10`). On
//!   `Down`: the data connection to the node is closed, calls waiting on it fail with
//!   `NoConnection`, links and monitors towards its processes fire `NoConnection`, its
//!   cluster-wide names are dropped, and it leaves [`Mesh::members`](super::Mesh::members).
//!   A node that closes its mesh leaves at once (`CLOSE_LEAVING`, gossiped).
//! * **Screening.** Every packet and sync passes `screen` before foca (see there). Since
//!   another member's `Down` arrives as a suspicion, this node times suspicions it holds
//!   on others' word itself (`Guards::suspicions`): after foca's suspicion time, a
//!   suspect that has not refuted (raised its incarnation) is declared down here. A
//!   `Wire::Sync` is applied only from a node this node asked (`Guards::sync_asked`).
//! * **Incarnations.** A node starts with incarnation = wall-clock nanoseconds, so a
//!   restarted node outranks its previous life (`Down` of the old incarnation, `Up` of the
//!   new). A node the cluster declared down while it was alive takes incarnation + 1 when
//!   it hears so and rejoins as a new member; its processes' links and monitors elsewhere
//!   have fired `NoConnection`, as in Erlang.
//! * **Epochs.** A node whose SWIM incarnation (foca's `u16`, raised by each refutation)
//!   reaches the epoch mark takes its identity at the next SWIM epoch (`next_epoch`; see
//!   `swim`). The others rename it in place: same member, no `Down`/`Up`, links, names
//!   and connection kept. Only the node itself announces its new epoch (`screen`).
//! * **Healing.** A node with no live member left (cut off, or starved) does not hold to
//!   its own `Down` verdicts: when a member it holds down talks to it, it takes them all
//!   back as alive and probes them again (`revive_if_alone`). The majority keeps its verdict on the
//!   cut-off node, which therefore rejoins as a new incarnation: a healed partition merges
//!   within a gossip round or two of the first packet across (`net/tests/partition.rs`).
//!   A `Down` verdict one member holds while the others keep the node (its acks came late)
//!   is taken back when that node talks to it at a higher incarnation: it refuted the
//!   suspicion the verdict spread (`answer_held_down`), so it need not rejoin; one that talks
//!   at the incarnation it was declared down at is asked to refute first.
//!
//! # What this module owns, and its invariants
//!
//! * `Inner::swim` (foca, the freeze hook, the leaving/closed switches).
//! * `Inner::members` ([`Members`]): the live members other than this node, exactly foca's
//!   active set as reported by its notifications (`MemberUp`, `MemberDown`, `Rename`), one
//!   identity per node id, never an older incarnation over a newer one.
//! * Every timer foca asks for is delivered (foca stalls otherwise): timer processes
//!   always call back, and the freeze hook holds fired timers rather than dropping them.
//! * Lock order of the mesh: `swim`, `members`, `conns`, `controls`, `replies`, `names`,
//!   `events` — notifications update members, connections and names while foca is locked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, NodeId};
use foca::{Incarnation, OwnedNotification, Timer};
use serde::{Deserialize, Serialize};

use super::events::NodeEvent;
use super::refute;
use super::screen::{self, Packet, PacketVerdict, Refusal, UndeadVotes, View};
use super::stats::Count;
use super::swim::{take, Effects, NodeIdentity, Swim, EPOCH_MARK, IDLE_ANNOUNCES};
use super::wire::{PeerInfo, Wire, CLOSE_DECLARED_DOWN};
use super::Inner;

/// A live member of the cluster, as listed by [`Mesh::members`](super::Mesh::members).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub node: NodeId,
    /// Its TLS name (the node name in its certificate), used to dial it.
    pub name: String,
    /// Its listen address.
    pub addr: SocketAddr,
    /// Its region label.
    pub region: Option<String>,
    /// Its incarnation: a restarted node, or one that rejoins after being declared
    /// down, has a higher one and is a new member.
    pub incarnation: u64,
}

/// This node and the live members, as SWIM reports them (see the module doc).
pub(super) struct Members {
    /// This node as a member (its incarnation changes when it rejoins).
    me: NodeIdentity,
    /// Live members other than this node.
    live: BTreeMap<NodeId, NodeIdentity>,
}

impl Members {
    pub(super) fn new(me: NodeIdentity) -> Members {
        Members {
            me,
            live: BTreeMap::new(),
        }
    }

    /// Whether `node` is a live member (not this node).
    pub(super) fn contains(&self, node: NodeId) -> bool {
        self.live.contains_key(&node)
    }

    /// Every live member, this node included, sorted by node id.
    pub(super) fn list(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self.live.values().map(NodeIdentity::member).collect();
        members.push(self.me.member());
        members.sort_by_key(|m| m.node);
        members
    }
}

/// What the membership screen (`screen`) keeps between packets, under `Inner::swim`.
#[derive(Default)]
pub(crate) struct Guards {
    /// This node's SWIM incarnation, read from the headers of the packets it sends
    /// (foca keeps it private).
    my_incarnation: Incarnation,
    /// Suspicions of other nodes with a local timer running, at that epoch and
    /// incarnation (one per node: bounded by the members foca knows).
    suspicions: HashMap<NodeId, (u32, Incarnation)>,
    /// "You are down" votes (`TurnUndead`).
    undead: UndeadVotes,
    /// Nodes asked for a sync whose answer has not come (at most one entry per node).
    sync_asked: HashSet<NodeId>,
    /// Fresh suspicions each sender may still hand this node (`refute`).
    budget: super::refute::Budget,
    /// Members held down here that talk to this node anyway: since when, at the epoch
    /// and incarnation they are held down at (one entry per node, only while held down).
    talking_while_down: HashMap<NodeId, (u32, Incarnation, Instant)>,
    /// Set only by a test hook: the foca incarnation at which this node moves to its
    /// next SWIM epoch, in place of [`EPOCH_MARK`].
    epoch_mark: Option<Incarnation>,
    /// Set only by test hooks: to measure an attack without the budget, or to refuse every
    /// fresh suspicion (as when every sender has spent its budget).
    budget_override: Option<BudgetOverride>,
    /// Set only by a test hook: the bound on members not met (`screen`), in place of
    /// `limits::MAX_UNMET_MEMBERS`.
    unmet_bound: Option<usize>,
}

/// What a test hook made of the refutation budget (only test hooks, behind the `testing`
/// feature, make one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
enum BudgetOverride {
    /// No budget: every fresh suspicion passes.
    Off,
    /// No tokens: every fresh suspicion is refused.
    Spent,
}

impl Inner {
    /// Whether `node` is a live member, or a node with an open data connection (a joiner
    /// can be connected a moment before SWIM reports it up; a node declared down has its
    /// connection closed).
    pub(super) fn is_member(&self, node: NodeId) -> bool {
        let member = self.members.lock().contains(node);
        member || self.conns.lock().is_up(node)
    }

    /// Runs `f` on foca under its lock, applies the notifications it caused (still under
    /// the lock, so in foca's order), then sends packets and arms timers.
    pub(super) fn with_swim<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Swim, &mut Effects) -> R,
    ) -> Option<R> {
        let mut fx = Effects::default();
        let (result, frozen) = {
            let mut swim = self.swim.lock();
            if swim.closed {
                return None;
            }
            let result = f(&mut swim, &mut fx);
            self.apply_notifications(&mut swim, &mut fx);
            if let Some(header) = fx.sends.first().and_then(|(_, d)| screen::sent_header(d)) {
                if &header.src == swim.foca.identity() {
                    swim.guards.my_incarnation = header.src_incarnation;
                }
            }
            let mark = swim.guards.epoch_mark.unwrap_or(EPOCH_MARK);
            if swim.guards.my_incarnation >= mark && !swim.leaving && swim.frozen.is_none() {
                self.next_epoch(&mut swim, &mut fx);
                self.apply_notifications(&mut swim, &mut fx);
            }
            (result, swim.frozen.is_some())
        };
        if !frozen {
            // foca may address a previous identity of this node, which it records as a down
            // member (`others`): announcing to down members, say. Never to itself.
            for (to, data) in fx.sends.into_iter().filter(|(to, _)| to.node != self.node) {
                self.send_swim(to, bytes::Bytes::from(data));
            }
        }
        for (timer, after) in fx.timers {
            let inner = Arc::clone(self);
            self.handle.spawn(move |_ctx: Ctx<()>| async move {
                inner.handle.sleep(after).await;
                inner.swim_timer(timer);
            });
        }
        self.exit_name_losers();
        self.ask_name_origins();
        Some(result)
    }

    /// Applies foca's notifications, and those they cause, in order.
    fn apply_notifications(self: &Arc<Self>, swim: &mut Swim, fx: &mut Effects) {
        while !fx.notes.is_empty() {
            for note in std::mem::take(&mut fx.notes) {
                self.on_notification(swim, note, fx);
            }
        }
    }

    /// This node's foca incarnation reached the epoch mark (it refuted that many
    /// suspicions of itself; see `swim`): it takes its identity at the next epoch, and foca
    /// starts its incarnation again at 0. Same node incarnation, so its pids, links,
    /// connections and names stay; the others rename it in place (`Rename` below).
    ///
    /// foca declares the previous identity down (gossiped: the others take it as stale
    /// news once they know the new one) and leaves a changed identity disconnected until a
    /// packet addressed to it arrives; this node has live members, so it reconnects at
    /// once (probing and gossiping again). Only this node may announce its new epoch
    /// (`screen`: a third party relaying it is refused), so it tells every live member
    /// itself, with one empty gossip packet each. Packets still addressed to the previous
    /// epoch are taken as addressed to this one (`swim_packet`).
    fn next_epoch(&self, swim: &mut Swim, fx: &mut Effects) {
        let current = swim.foca.identity().clone();
        let Some(epoch) = current.epoch.checked_add(1) else {
            // Out of epochs (never in practice): foca rejoins at `u16::MAX` instead.
            return;
        };
        let next = NodeIdentity {
            epoch,
            ..current.clone()
        };
        if let Err(error) = swim.foca.change_identity(next.clone(), &mut *fx) {
            tracing::error!(%error, "could not move to the next SWIM epoch");
            return;
        }
        let reached = std::mem::take(&mut swim.guards.my_incarnation);
        if let Err(error) = swim.foca.apply_many(std::iter::empty(), false, &mut *fx) {
            tracing::debug!(%error, "reconnecting after an epoch change");
        }
        // Reconnecting notifies `Active`: this node never left the cluster.
        fx.notes
            .retain(|note| !matches!(note, OwnedNotification::Active));
        self.members.lock().me = next.clone();
        let live: Vec<NodeIdentity> = swim.foca.iter_members().map(|m| m.id().clone()).collect();
        for target in live {
            let hello = Packet::gossip(next.clone(), 0, target.clone(), Vec::new(), Vec::new());
            fx.sends.push((target, hello.encode()));
        }
        self.counters.bump(Count::SwimEpoch);
        tracing::warn!(node = %self.node, epoch, incarnation = reached, "SWIM incarnation reached the epoch mark (this node refuted that many suspicions of itself): moved to the next epoch");
    }

    fn swim_timer(self: &Arc<Self>, timer: Timer<NodeIdentity>) {
        self.with_swim(|swim, fx| {
            if let Some(held) = swim.frozen.as_mut() {
                held.push(timer);
                return;
            }
            self.handle_timer(swim, timer, fx);
        });
    }

    /// Hands `timer` to foca. When it makes foca forget a member (down for
    /// `REMOVE_DOWN_AFTER`), its listed entry in the connection table goes too (`conns`:
    /// listed entries follow foca's table, so they are bounded as it is).
    fn handle_timer(&self, swim: &mut Swim, timer: Timer<NodeIdentity>, fx: &mut Effects) {
        let removing = match &timer {
            Timer::RemoveDown(id) => Some(id.node),
            _ => None,
        };
        if let Err(error) = swim.foca.handle_timer(timer, &mut *fx) {
            tracing::debug!(%error, "SWIM timer");
        }
        if let Some(node) = removing {
            if !others(swim).any(|m| m.id().node == node) {
                self.conns.lock().forget_listed(node);
            }
        }
    }

    /// What foca knows about `nodes` (and this node), for the screen. The room gossip
    /// has to introduce members (`View::room_for_unmet`) is worked out only when one of
    /// `nodes` is unknown to foca (one pass over foca's table; 0 otherwise, unused).
    fn view_of<'a>(&self, swim: &'a Swim, nodes: impl IntoIterator<Item = NodeId>) -> View<'a> {
        let wanted: HashSet<NodeId> = nodes.into_iter().collect();
        let known: HashMap<NodeId, foca::Member<NodeIdentity>> = others(swim)
            .filter(|m| wanted.contains(&m.id().node))
            .map(|m| (m.id().node, m.clone()))
            .collect();
        let me = swim.foca.identity();
        let strangers = wanted
            .iter()
            .any(|n| *n != me.node && !known.contains_key(n));
        let room_for_unmet = if strangers {
            let bound = swim
                .guards
                .unmet_bound
                .unwrap_or(super::limits::MAX_UNMET_MEMBERS);
            let conns = self.conns.lock();
            let unmet = others(swim).filter(|m| !conns.is_met(m.id().node)).count();
            bound.saturating_sub(unmet)
        } else {
            0
        };
        View {
            me,
            my_incarnation: swim.guards.my_incarnation,
            known,
            room_for_unmet,
        }
    }

    /// A SWIM packet from `peer` (a datagram on a mesh or control connection to it),
    /// screened (`screen`) before foca sees it.
    /// A SWIM packet from `peer`, whose certificate names `region` (if any: then the
    /// packet's identity of `peer` must be in it).
    pub(super) fn swim_packet(self: &Arc<Self>, peer: NodeId, region: Option<&str>, data: &[u8]) {
        let suspicions = self.with_swim(|swim, fx| {
            if swim.frozen.is_some() || data.len() > super::swim::MAX_PACKET {
                return Vec::new();
            }
            let mut packet = match Packet::decode(data) {
                Ok(packet) => packet,
                Err(error) => {
                    tracing::debug!(%peer, %error, "SWIM packet ignored");
                    return Vec::new();
                }
            };
            // Sent before the sender learned this node's new epoch (`next_epoch`)?
            packet.readdress_to(swim.foca.identity());
            let claimed = packet.header.src.region.as_deref();
            if !super::authz::region_allowed(region, claimed) {
                let refusal = Refusal::WrongRegion {
                    node: peer,
                    claimed: claimed.map(str::to_owned),
                };
                self.refused(peer, &refusal);
                return Vec::new();
            }
            if let Some(updates) = packet.updates.as_mut() {
                updates.retain(|m| {
                    let own = m.id().node == peer;
                    let ok = !own || super::authz::region_allowed(region, m.id().region.as_deref());
                    if !ok {
                        let refusal = Refusal::WrongRegion {
                            node: peer,
                            claimed: m.id().region.clone(),
                        };
                        self.refused(peer, &refusal);
                    }
                    ok
                });
            }
            let (verdict, sender_down_at) = {
                let view = self.view_of(swim, packet.nodes());
                let sender_down_at = view.held_down_at(&packet.header.src);
                let verdict = screen::screen_packet(peer, packet, &view).map(|verdict| {
                    let fresh: Vec<_> = verdict
                        .packet
                        .updates
                        .iter()
                        .flatten()
                        .filter_map(|m| Some((m.clone(), refute::fresh(peer, m, &view)?)))
                        .collect();
                    (verdict, fresh)
                });
                (verdict, sender_down_at)
            };
            let verdict = match verdict {
                Ok((mut verdict, fresh)) => {
                    self.spend_budget(swim, peer, &mut verdict, fresh);
                    verdict
                }
                Err(refusal) => {
                    self.refused(peer, &refusal);
                    return Vec::new();
                }
            };
            if verdict.packet.header.message == foca::Message::TurnUndead {
                let window = self.undead_window();
                let others = swim.foca.num_members();
                if !swim
                    .guards
                    .undead
                    .vote(peer, Instant::now(), window, others)
                {
                    self.refused(peer, &Refusal::LoneUndead);
                    return Vec::new();
                }
            }
            if let Some(held_at) = sender_down_at {
                let header = &verdict.packet.header;
                if !self.revive_if_alone(swim, &header.src, fx) {
                    self.answer_held_down(swim, &header.src, header.src_incarnation, held_at, fx);
                }
            }
            self.feed_screened(swim, peer, verdict, fx)
        });
        self.time_suspicions(suspicions.unwrap_or_default());
    }

    /// A node with no live member left cannot tell its own isolation (a partition, a
    /// starved process) from the failure of everyone else, so it does not hold to the
    /// `Down` verdicts it reached: once a member it holds down talks to it (the screen
    /// checked that the packet comes from that very node), it takes every member it holds
    /// down back as alive, at the incarnation it knew, before foca sees the packet. foca
    /// then probes them as usual: one that is really down is suspected and declared down
    /// again within a suspicion time. Returns whether it did.
    ///
    /// Without this a healed partition does not merge. Both sides declared each other
    /// down, and `Down` is terminal in foca (for `REMOVE_DOWN_AFTER`) unless the downed
    /// node renews its identity. The cut-off node renews on the first "you are down"
    /// (`TurnUndead`), being alone; but each majority member hears that only from the one
    /// node holding it down, and one voice is not enough (`UndeadVotes`). So the cut-off
    /// node went on ignoring every packet of the majority, acks to their probes included,
    /// and was declared down again each time it rejoined, for as long as its verdicts
    /// lasted. Only the isolated side takes its verdicts back: the majority still holds the
    /// cut-off node down and makes it rejoin as a new incarnation.
    ///
    /// The members come back *broadcast* as alive: that replaces the `Down` updates this
    /// node queued for gossip while alone (foca keeps one update per member), which would
    /// otherwise reach the majority now as suspicions of live members, make them refute, and
    /// under load get some of them declared down.
    fn revive_if_alone(&self, swim: &mut Swim, sender: &NodeIdentity, fx: &mut Effects) -> bool {
        if swim.leaving || swim.foca.num_members() > 0 {
            return false;
        }
        let held_down: Vec<(NodeIdentity, Incarnation)> = others(swim)
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        tracing::info!(node = %self.node, peer = %sender.node, members = held_down.len(), "no live member left, and a member held down talks to this node: taking back every down verdict");
        take_back(swim, held_down, fx);
        true
    }

    /// `sender`, a member this node holds down at incarnation `held_at`, talks to it at
    /// `incarnation` (the screen checked the packet's source is the connection's peer, so
    /// only the member itself can get here).
    ///
    /// At a higher incarnation it has refuted the suspicion this node's verdict spread (the
    /// others take a third party's `Down` as a suspicion, see `screen`), so the verdict
    /// was false — a probe lost under load, or acks ignored while this node's own identity
    /// was stale right after a heal — and it is taken back. foca holds `Down` for
    /// `REMOVE_DOWN_AFTER` unless the member renews its identity, and the member does not
    /// renew on this node's word alone (`UndeadVotes`): without this, this node alone held
    /// a live member down for an hour while the rest of the cluster kept it (seen after a
    /// healed partition under load: one child saw 3 of 4 members for good).
    ///
    /// At the incarnation it was declared down at, it has not heard of the suspicion: the
    /// others may not have relayed it (each spends only its sender's refutation budget, and
    /// foca gossips an update a bounded number of times). foca answers each of its packets
    /// with "you are down"; if the cluster agrees, the member hears that from enough
    /// members to renew within the vote window (`UndeadVotes`, `2 × failure_timeout`), as a
    /// node cut off by a partition does. If it still talks at that incarnation after the
    /// window, this node's verdict is alone, and it asks the member to refute — a gossip
    /// packet suspecting it at that incarnation — so that it raises its incarnation and its
    /// next packet takes the verdict back here. Without this, a restarted node that one
    /// member declared down right after it came up was held down by that member alone for
    /// good (seen in the kill-rounds test in CI: one child saw 2 of 3 members for a minute
    /// while the other two saw 3).
    fn answer_held_down(
        &self,
        swim: &mut Swim,
        sender: &NodeIdentity,
        incarnation: Incarnation,
        held_at: Incarnation,
        fx: &mut Effects,
    ) {
        if swim.leaving {
            return;
        }
        if incarnation > held_at {
            tracing::info!(node = %self.node, peer = %sender.node, incarnation, "a member held down talks at a higher incarnation (it refuted): taking the down verdict back");
            swim.guards.talking_while_down.remove(&sender.node);
            take_back(swim, vec![(sender.clone(), incarnation)], fx);
            return;
        }
        let now = Instant::now();
        if !swim.guards.talking_while_down.contains_key(&sender.node) {
            // Forget the members no longer held down (renewed, taken back or removed).
            let held: HashSet<NodeId> = swim
                .foca
                .iter_membership_state()
                .filter(|m| m.state() == foca::State::Down)
                .map(|m| m.id().node)
                .collect();
            swim.guards
                .talking_while_down
                .retain(|node, _| held.contains(node));
        }
        let since = match swim.guards.talking_while_down.get(&sender.node) {
            Some(&(epoch, at, since)) if (epoch, at) == (sender.epoch, held_at) => since,
            _ => {
                swim.guards
                    .talking_while_down
                    .insert(sender.node, (sender.epoch, held_at, now));
                now
            }
        };
        if now.saturating_duration_since(since) < self.undead_window() {
            return;
        }
        tracing::debug!(node = %self.node, peer = %sender.node, incarnation, "a member held down talks at the incarnation it was declared down at: asking it to refute");
        let me = swim.foca.identity().clone();
        let suspect = foca::Member::new(sender.clone(), held_at, foca::State::Suspect);
        let ask = Packet::gossip(
            me,
            swim.guards.my_incarnation,
            sender.clone(),
            vec![suspect],
            Vec::new(),
        );
        fx.sends.push((sender.clone(), ask.encode()));
    }

    /// How long "you are down" votes count (`UndeadVotes`): a member the cluster agrees is
    /// down hears enough of them to renew within this window.
    fn undead_window(&self) -> Duration {
        self.config.failure_timeout * 2
    }

    /// This node's SWIM incarnation (how often it refuted a suspicion or rejoined).
    #[cfg(feature = "testing")]
    pub(super) fn swim_incarnation(&self) -> Incarnation {
        self.swim.lock().guards.my_incarnation
    }

    /// This node's SWIM epoch (how often its foca incarnation reached the epoch mark).
    #[cfg(feature = "testing")]
    pub(super) fn swim_epoch(&self) -> u32 {
        self.swim.lock().foca.identity().epoch
    }

    /// The SWIM epoch foca holds for `node` (any state), if it knows it.
    #[cfg(feature = "testing")]
    pub(super) fn swim_epoch_of(&self, node: NodeId) -> Option<u32> {
        let swim = self.swim.lock();
        let epoch = swim
            .foca
            .iter_membership_state()
            .find(|m| m.id().node == node)
            .map(|m| m.id().epoch);
        epoch
    }

    /// Moves this node to its next SWIM epoch at foca incarnation `mark` (not
    /// [`EPOCH_MARK`]), to test the move without 60,000 refutations.
    #[cfg(feature = "testing")]
    pub(super) fn set_epoch_mark(&self, mark: Incarnation) {
        self.swim.lock().guards.epoch_mark = Some(mark);
    }

    /// Takes `bound` in place of `limits::MAX_UNMET_MEMBERS` (to test the bound without
    /// 16,384 made-up members).
    #[cfg(feature = "testing")]
    pub(super) fn set_unmet_bound(&self, bound: usize) {
        self.swim.lock().guards.unmet_bound = Some(bound);
    }

    /// Has foca forget members down for `after` (not an hour), to see what goes with them.
    #[cfg(feature = "testing")]
    pub(super) fn set_remove_down_after(&self, after: Duration) {
        let mut config = super::swim::swim_config(self.config.failure_timeout);
        config.remove_down_after = after;
        if let Err(error) = self.swim.lock().foca.set_config(config) {
            tracing::error!(%error, "could not change how long SWIM remembers down members");
        }
    }

    /// Turns the refutation budget off or on (to measure what it prevents).
    #[cfg(feature = "testing")]
    pub(super) fn set_refutation_budget(&self, on: bool) {
        self.swim.lock().guards.budget_override = (!on).then_some(BudgetOverride::Off);
    }

    /// Refuses every fresh suspicion from now on, as if every sender had spent its budget.
    #[cfg(feature = "testing")]
    pub(super) fn spend_refutation_budget(&self) {
        self.swim.lock().guards.budget_override = Some(BudgetOverride::Spent);
    }

    /// Leaves out of `verdict` the fresh suspicions (`refute`) over `peer`'s budget.
    fn spend_budget(
        &self,
        swim: &mut Swim,
        peer: NodeId,
        verdict: &mut PacketVerdict,
        fresh: Vec<(foca::Member<NodeIdentity>, bool)>,
    ) {
        let spent = match swim.guards.budget_override {
            Some(BudgetOverride::Off) => return,
            Some(BudgetOverride::Spent) => true,
            None => false,
        };
        let now = Instant::now();
        for (member, about_me) in fresh {
            if !spent && swim.guards.budget.take(peer, about_me, now) {
                continue;
            }
            if let Some(updates) = verdict.packet.updates.as_mut() {
                updates.retain(|m| *m != member);
            }
            verdict.suspicions.retain(|m| *m != member);
            verdict.refused.push(Refusal::SuspicionBudget {
                node: member.id().node,
            });
        }
    }

    /// Counts and logs a refused packet or update.
    fn refused(&self, peer: NodeId, refusal: &Refusal) {
        match refusal {
            Refusal::Malformed(_) => {
                tracing::debug!(%peer, %refusal, "SWIM packet ignored");
            }
            Refusal::Spoofed { .. } => {
                tracing::warn!(%peer, %refusal, "spoofed SWIM packet dropped");
                self.counters.bump(Count::SpoofedSwimPacket);
            }
            Refusal::TooManyUnmet { .. } => {
                // Counted, logged quietly: a liar sends these by the packetful.
                tracing::debug!(%peer, %refusal, "membership update refused");
                self.counters.bump(Count::RefusedUnmetMember);
            }
            _ => {
                tracing::warn!(%peer, %refusal, "membership update refused");
                self.counters.bump(Count::RefusedMembershipUpdate);
            }
        }
    }

    /// Hands a screened packet to foca; returns the third-party suspicions foca now
    /// holds, to be timed by this node.
    fn feed_screened(
        &self,
        swim: &mut Swim,
        peer: NodeId,
        mut verdict: PacketVerdict,
        fx: &mut Effects,
    ) -> Vec<foca::Member<NodeIdentity>> {
        for refusal in &verdict.refused {
            self.refused(peer, refusal);
        }
        for _ in 0..verdict.downgraded {
            self.counters.bump(Count::DowngradedDownClaim);
        }
        let mut bytes = verdict.packet.encode();
        let mut later = Vec::new();
        if bytes.len() > super::swim::MAX_PACKET {
            // Downgrading grew the packet past foca's bound: apply the suspicions after
            // the packet (if its sender is still active then).
            if let Some(updates) = verdict.packet.updates.as_mut() {
                updates.retain(|m| {
                    let third_party = verdict.suspicions.contains(m);
                    if third_party {
                        later.push(m.clone());
                    }
                    !third_party
                });
            }
            bytes = verdict.packet.encode();
        }
        if let Err(error) = swim.foca.handle_data(&bytes, &mut *fx) {
            tracing::debug!(%error, "SWIM packet ignored");
            return Vec::new();
        }
        let src = &verdict.packet.header.src;
        // `src` is `peer`, the connection's authenticated node (the screen checked): it
        // spoke to this node itself.
        self.conns.lock().met_sender(peer, src.addr, || PeerInfo {
            node: peer,
            addr: src.addr,
            name: src.name.clone(),
        });
        if !later.is_empty() && swim.foca.iter_members().any(|m| m.id() == src) {
            if let Err(error) = swim.foca.apply_many(later.into_iter(), true, &mut *fx) {
                tracing::debug!(%error, "applying suspicions");
            }
        }
        self.untimed_suspicions(swim, verdict.suspicions)
    }

    /// Of `claimed`, the suspicions foca now holds that have no local timer yet (each
    /// gets one, recorded in the guards).
    fn untimed_suspicions(
        &self,
        swim: &mut Swim,
        claimed: Vec<foca::Member<NodeIdentity>>,
    ) -> Vec<foca::Member<NodeIdentity>> {
        if claimed.is_empty() {
            return claimed;
        }
        let held: Vec<foca::Member<NodeIdentity>> = swim
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect && claimed.contains(m))
            .cloned()
            .collect();
        held.into_iter()
            .filter(|m| {
                let at = (m.id().epoch, m.incarnation());
                swim.guards.suspicions.insert(m.id().node, at) != Some(at)
            })
            .collect()
    }

    /// This node's own suspicion timers: a suspicion it holds on another member's word
    /// becomes `Down` only if, after foca's suspicion time, the suspect has not refuted
    /// it (raised its incarnation). foca times only the suspicions its own probes raise.
    fn time_suspicions(self: &Arc<Self>, suspects: Vec<foca::Member<NodeIdentity>>) {
        for suspect in suspects {
            let inner = Arc::clone(self);
            let after = self.swim_suspicion_time();
            self.handle.spawn(move |_ctx: Ctx<()>| async move {
                inner.handle.sleep(after).await;
                inner.suspicion_expired(suspect);
            });
        }
    }

    fn swim_suspicion_time(&self) -> Duration {
        super::swim::swim_config(self.config.failure_timeout).suspect_to_down_after
    }

    fn suspicion_expired(self: &Arc<Self>, suspect: foca::Member<NodeIdentity>) {
        self.with_swim(|swim, fx| {
            let node = suspect.id().node;
            if swim.guards.suspicions.get(&node) == Some(&(suspect.id().epoch, suspect.incarnation())) {
                swim.guards.suspicions.remove(&node);
            }
            if swim.frozen.is_some() {
                return;
            }
            let still = swim.foca.iter_membership_state().any(|m| m == &suspect);
            if still {
                tracing::info!(peer = %node, incarnation = suspect.incarnation(), "suspicion not refuted in time: declaring the member down");
                let down = foca::Member::new(suspect.id().clone(), suspect.incarnation(), foca::State::Down);
                if let Err(error) = swim.foca.apply_many(std::iter::once(down), true, fx) {
                    tracing::debug!(%error, "declaring a suspect down");
                }
            }
        });
    }

    /// Announces this node to the seed `node` (reached at `seed`) until foca has the seed
    /// as a live member, or the mesh closes. Waiting for *the seed* (not for any member)
    /// matters: a node that others joined through while its own announce was lost would
    /// otherwise stop, and its group would never merge with the seed's.
    pub(super) async fn announce_until_joined(self: &Arc<Self>, node: NodeId, seed: &PeerInfo) {
        let mut wait = self.config.failure_timeout / 10;
        loop {
            let target = NodeIdentity {
                node,
                name: seed.name.clone(),
                addr: seed.addr,
                region: None,
                // foca accepts an announce addressed to any identity of its node id.
                incarnation: 0,
                epoch: 0,
            };
            let joined = self.with_swim(|swim, fx| {
                if swim.foca.iter_members().any(|m| m.id().node == node) {
                    return true;
                }
                if let Err(error) = swim.foca.announce(target, fx) {
                    tracing::debug!(%error, "SWIM announce");
                }
                false
            });
            if joined != Some(false) {
                return;
            }
            self.handle.sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    fn on_notification(
        self: &Arc<Self>,
        swim: &mut Swim,
        note: OwnedNotification<NodeIdentity>,
        fx: &mut Effects,
    ) {
        match note {
            OwnedNotification::MemberUp(id) => self.member_up(id),
            OwnedNotification::MemberDown(id) => self.member_down(&id, "declared down by SWIM"),
            OwnedNotification::Rename(old, new) => {
                let active = swim.foca.iter_members().any(|m| m.id() == &new);
                if old.same_life(&new) && active {
                    // A new SWIM epoch of the same member: nothing changes above SWIM.
                    self.member_renamed(&old, new);
                    return;
                }
                self.member_down(&old, "replaced by a new incarnation");
                if active {
                    self.member_up(new);
                }
            }
            OwnedNotification::Active => {
                tracing::info!(node = %self.node, "joined the cluster");
                self.request_sync(swim);
            }
            OwnedNotification::Idle if swim.leaving => {}
            OwnedNotification::Idle => {
                // Everyone it knew is down — or, far likelier in a running cluster, this
                // node was cut off or starved and the others declared it down. Knock on
                // a few doors at once instead of waiting for the periodic announce to
                // down members: members it remembers, and the configured seeds.
                tracing::warn!(node = %self.node, "no live member left: announcing to known nodes and seeds");
                announce_to_remembered(swim, fx);
                for seed in self.config.seeds.clone() {
                    if self.is_own_seed(&seed) {
                        continue;
                    }
                    let inner = Arc::clone(self);
                    self.handle
                        .spawn(move |_ctx: Ctx<()>| async move { inner.join_seed(seed).await });
                }
            }
            OwnedNotification::Defunct if swim.leaving => {
                tracing::info!(node = %self.node, "left the cluster");
            }
            OwnedNotification::Defunct => {
                // `renew` always gives a new identity, so foca rejoins instead.
                tracing::error!(node = %self.node, "this node was declared down and cannot renew its identity");
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(node = %self.node, incarnation = id.incarnation, "the cluster declared this node down; rejoined as a new incarnation");
                let incarnation = id.incarnation;
                self.members.lock().me = id;
                // Others dropped our names when they declared us down: tell them again,
                // stamped with the new incarnation (older claims are stale to them).
                for op in self.reclaim_names(incarnation) {
                    if let Err(error) = swim.foca.add_broadcast(&op) {
                        tracing::warn!(%error, "could not re-announce a name");
                    }
                }
                if let Err(error) = swim.foca.gossip(fx) {
                    tracing::debug!(%error, "SWIM gossip");
                }
                self.request_sync(swim);
            }
            #[allow(unreachable_patterns)] // foca's `unstable-notifications` adds variants.
            _ => {}
        }
    }

    /// `old`, live here, moved to the SWIM epoch of `new` (same life): its identity is
    /// updated in place, with no `Down` or `Up`, its connection, links and names kept.
    fn member_renamed(&self, old: &NodeIdentity, new: NodeIdentity) {
        let mut members = self.members.lock();
        // Not live here (held down): foca reports it up next (`MemberUp`), a real `Up`.
        if let Some(current) = members.live.get_mut(&new.node) {
            if current == old || (current.same_life(&new) && current.epoch < new.epoch) {
                tracing::info!(local = %self.node, peer = %new.node, epoch = new.epoch, "member moved to a new SWIM epoch");
                *current = new;
            }
        }
    }

    fn member_up(self: &Arc<Self>, id: NodeIdentity) {
        let mut members = self.members.lock();
        match members.live.get_mut(&id.node) {
            Some(current) if *current == id => return,
            Some(current) if current.same_life(&id) => {
                // Another SWIM epoch of a live member (`member_renamed`).
                if current.epoch < id.epoch {
                    *current = id;
                }
                return;
            }
            Some(current) if current.incarnation > id.incarnation => return,
            Some(current) => {
                let old = current.clone();
                self.member_down_locked(&mut members, &old, "replaced by a new incarnation");
            }
            None => {}
        }
        members.live.insert(id.node, id.clone());
        // Where to dial it, not confirmed: this may be another member's word only (a node
        // speaks only for itself; it is met once it says hello or sends a SWIM packet).
        self.conns.lock().list(PeerInfo {
            node: id.node,
            addr: id.addr,
            name: id.name.clone(),
        });
        self.names_node_up(id.node, id.incarnation);
        tracing::info!(local = %self.node, peer = %id.node, addr = %id.addr, region = ?id.region, incarnation = id.incarnation, "member up");
        self.events.emit(NodeEvent::Up {
            node: id.node,
            addr: id.addr,
            incarnation: id.incarnation,
        });
    }

    pub(super) fn member_down(self: &Arc<Self>, id: &NodeIdentity, reason: &str) {
        let mut members = self.members.lock();
        self.member_down_locked(&mut members, id, reason);
    }

    fn member_down_locked(&self, members: &mut Members, id: &NodeIdentity, reason: &str) {
        if members.live.get(&id.node) != Some(id) {
            return;
        }
        members.live.remove(&id.node);
        // Close the data connection so everything waiting on it fails now. A connection
        // from a newer incarnation (already replaced at the connection layer) stays.
        let stale = self.conns.lock().remove_if_stale(id.node, id.incarnation);
        if let Some(conn) = stale {
            conn.quic().close(CLOSE_DECLARED_DOWN, b"declared down");
        }
        self.connection_lost(id.node, reason);
        // Links and monitors towards the node fire `NoConnection` (not under our lock:
        // their signals may come back into the mesh).
        if let Some(inbound) = self.inbound().cloned() {
            let node = id.node;
            self.handle
                .spawn(move |_ctx: Ctx<()>| async move { inbound.node_down(node) });
        }
        let dropped_names = self.names_node_down(id.node);
        tracing::warn!(local = %self.node, peer = %id.node, incarnation = id.incarnation, %reason, dropped_names, "member down");
        self.events.emit(NodeEvent::Down {
            node: id.node,
            reason: reason.to_owned(),
            incarnation: id.incarnation,
        });
    }

    /// The peer closed its connection saying it leaves the cluster: declare it down now
    /// (and gossip it) rather than wait for SWIM to notice the silence.
    pub(super) fn peer_left(self: &Arc<Self>, node: NodeId) {
        let id = self.members.lock().live.get(&node).cloned();
        if let Some(id) = id {
            self.with_swim(|swim, fx| {
                let down = foca::Member::new(id, 0, foca::State::Down);
                if let Err(error) = swim.foca.apply_many(std::iter::once(down), true, fx) {
                    tracing::debug!(%error, "applying a leave");
                }
            });
        }
    }

    /// Asks one live member for its membership state and name table (after joining or
    /// rejoining), preferring one this node already has a data connection to (the seed,
    /// usually), so the sync opens no new connection.
    fn request_sync(self: &Arc<Self>, swim: &mut Swim) {
        let candidates: Vec<NodeId> = swim.foca.iter_members().map(|m| m.id().node).collect();
        let node = {
            let conns = self.conns.lock();
            candidates
                .iter()
                .find(|n| conns.is_up(**n))
                .or(candidates.first())
                .copied()
        };
        if let Some(node) = node {
            swim.guards.sync_asked.insert(node);
            self.send_sync_request(node);
        }
    }

    /// Until the mesh closes: while this node has no live member, it announces to the
    /// members it remembers (down ones included) every `2 × failure_timeout`, as foca does
    /// for down members only while it has a live one (`periodic_announce_to_down_members`
    /// stops when foca is idle). Without it, two nodes that declared each other down while
    /// their only other member died, both now alone, never sent each other a packet again
    /// (their seeds were that dead member): each waits for the other to talk, which is what
    /// [`revive_if_alone`](Self::revive_if_alone) needs. Seen in the kill-rounds soak under
    /// load; `net/tests/partition.rs::two_lone_nodes_that_declared_each_other_down_merge`.
    pub(super) async fn announce_while_alone(self: &Arc<Self>) {
        let every = self.config.failure_timeout * 2;
        loop {
            self.handle.sleep(every).await;
            let running = self.with_swim(|swim, fx| {
                if !swim.leaving && swim.foca.num_members() == 0 {
                    announce_to_remembered(swim, fx);
                }
            });
            if running.is_none() {
                return;
            }
        }
    }

    /// Anti-entropy, until the mesh closes: every `2 × failure_timeout`, a sync with one
    /// random live member this node already has a data connection to (none: skipped, so
    /// this never opens connections). Gossip sends each update a bounded number of times
    /// and a node can miss them all — seen with 60 nodes joining within a second: one
    /// node learned of another only after 16 s, by a probe. The sync repairs that, and
    /// missed name ops too, within one interval.
    pub(super) async fn sync_periodically(self: &Arc<Self>) {
        use rand_09::Rng;
        let mut rng = {
            use rand_09::SeedableRng;
            rand_09::rngs::SmallRng::seed_from_u64(super::random_u64())
        };
        let every = self.config.failure_timeout * 2;
        loop {
            self.handle.sleep(every).await;
            let mut swim = self.swim.lock();
            if swim.closed {
                return;
            }
            let live: Vec<NodeId> = swim.foca.iter_members().map(|m| m.id().node).collect();
            let candidates: Vec<NodeId> = {
                let conns = self.conns.lock();
                live.into_iter().filter(|n| conns.is_up(*n)).collect()
            };
            if !candidates.is_empty() {
                let node = candidates[rng.random_range(0..candidates.len())];
                swim.guards.sync_asked.insert(node);
                drop(swim);
                self.send_sync_request(node);
            }
        }
    }

    /// Asks every node with unconfirmed rumours about its pids for a sync (one request
    /// in flight per node; rumours heard meanwhile wait for the next one).
    pub(super) fn ask_name_origins(self: &Arc<Self>) {
        let asked: Vec<NodeId> = {
            let mut swim = self.swim.lock();
            if swim.closed {
                return;
            }
            let mut names = self.names.lock();
            let mut asked = Vec::new();
            for node in names.origins_to_ask() {
                if swim.guards.sync_asked.insert(node) {
                    names.mark_asked(node, true);
                    asked.push(node);
                }
            }
            asked
        };
        for node in asked {
            tracing::debug!(%node, "asking a node to confirm name ops relayed about it");
            self.send_sync_request(node);
        }
    }

    fn send_sync_request(self: &Arc<Self>, node: NodeId) {
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let mine = inner.local_name_claims();
            let sent = match inner.conn(node).await {
                Ok(conn) => conn
                    .send(&Wire::SyncRequest { names: mine })
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = sent {
                tracing::warn!(peer = %node, %error, "could not ask for a sync");
                inner.swim.lock().guards.sync_asked.remove(&node);
                // Its rumours wait for the next request.
                inner.names.lock().mark_asked(node, false);
            }
        });
    }

    /// The members this node sees alive, for a [`Wire::Sync`] answer. Suspects are left
    /// out on purpose: the asker would start its own suspicion timer, may miss the
    /// refutation gossiped before it joined, and would then declare a live member down
    /// for the whole cluster.
    pub(super) fn membership_snapshot(self: &Arc<Self>) -> super::wire::Bytes {
        let members: Vec<foca::Member<NodeIdentity>> = self
            .swim
            .lock()
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Alive)
            .cloned()
            .collect();
        // Identities and SWIM states only: encoding cannot fail.
        super::wire::Bytes(rmp_serde::to_vec(&members).unwrap_or_default())
    }

    /// Whether this node asked `from` for a sync it has not answered yet (the answer is
    /// then taken, once); an unrequested sync is counted and refused.
    pub(super) fn take_sync_request(&self, from: NodeId) -> bool {
        let asked = self.swim.lock().guards.sync_asked.remove(&from);
        if !asked {
            tracing::warn!(peer = %from, "membership sync nobody asked for; refused");
            self.counters.bump(Count::UnrequestedSync);
        }
        asked
    }

    /// Feeds a peer's membership state to foca (not re-broadcast: it is the peer's
    /// knowledge, which the cluster has; only this node lacked it), screened like
    /// gossip from that peer and bounded in size.
    pub(super) fn apply_membership_snapshot(self: &Arc<Self>, from: NodeId, bytes: &[u8]) {
        let members: Vec<foca::Member<NodeIdentity>> = match take(bytes) {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(peer = %from, %error, "undecodable membership sync; ignored");
                return;
            }
        };
        tracing::debug!(peer = %from, members = members.len(), "membership sync");
        let suspicions = self.with_swim(|swim, fx| {
            let Some(sender) = swim
                .foca
                .iter_membership_state()
                .find(|m| m.id().node == from)
                .map(|m| m.id().clone())
            else {
                tracing::debug!(peer = %from, "membership sync from a node foca does not know; ignored");
                return Vec::new();
            };
            let verdict = {
                let view = self.view_of(swim, members.iter().map(|m| m.id().node));
                screen::screen_sync(sender, members, &view)
            };
            let verdict = match verdict {
                Ok(verdict) => verdict,
                Err(refusal) => {
                    self.refused(from, &refusal);
                    return Vec::new();
                }
            };
            for refusal in &verdict.refused {
                self.refused(from, refusal);
            }
            for _ in 0..verdict.downgraded {
                self.counters.bump(Count::DowngradedDownClaim);
            }
            let updates = verdict.packet.updates.unwrap_or_default();
            if let Err(error) = swim.foca.apply_many(updates.into_iter(), false, &mut *fx) {
                tracing::debug!(%error, "applying a membership sync");
            }
            self.untimed_suspicions(swim, verdict.suspicions)
        });
        self.time_suspicions(suspicions.unwrap_or_default());
    }

    /// Test hook behind `Mesh::forge_swim`: a gossip packet to `to`, claiming to come
    /// from `from`, carrying `updates` (node, incarnation above what this node knows,
    /// state). Returns whether every identity was known here.
    #[cfg(feature = "testing")]
    pub(super) fn forge_swim(
        self: &Arc<Self>,
        to: NodeId,
        from: NodeId,
        updates: &[(NodeId, Incarnation, foca::State)],
    ) -> bool {
        let forged = {
            let swim = self.swim.lock();
            let me = swim.foca.identity();
            let lookup = |node: NodeId| {
                if node == me.node {
                    return Some((me.clone(), swim.guards.my_incarnation));
                }
                swim.foca
                    .iter_membership_state()
                    .find(|m| m.id().node == node)
                    .map(|m| (m.id().clone(), m.incarnation()))
            };
            let (Some((src, src_incarnation)), Some((dst, _))) = (lookup(from), lookup(to)) else {
                return false;
            };
            let mut members = Vec::new();
            for (node, bump, state) in updates {
                let Some((id, incarnation)) = lookup(*node) else {
                    return false;
                };
                members.push(foca::Member::new(
                    id,
                    incarnation.saturating_add(*bump),
                    *state,
                ));
            }
            let packet = Packet::gossip(src, src_incarnation, dst.clone(), members, Vec::new());
            (dst, packet.encode())
        };
        self.send_swim(forged.0, bytes::Bytes::from(forged.1));
        true
    }

    /// Test hook behind `Mesh::forge_region`.
    #[cfg(feature = "testing")]
    pub(super) fn forge_region(self: &Arc<Self>, to: NodeId, region: &str) -> bool {
        self.gossip_as_self(to, Vec::new(), Vec::new(), |me| {
            me.region = Some(region.to_owned())
        })
    }

    /// Test hook behind `Mesh::forge_member`: gossips `to` that `member` (made up, say)
    /// is alive, from this node's true identity.
    #[cfg(feature = "testing")]
    pub(super) fn forge_member(self: &Arc<Self>, to: NodeId, member: &PeerInfo) -> bool {
        let id = NodeIdentity {
            node: member.node,
            name: member.name.clone(),
            addr: member.addr,
            region: None,
            incarnation: 1,
            epoch: 0,
        };
        let alive = foca::Member::new(id, 0, foca::State::Alive);
        self.gossip_as_self(to, vec![alive], Vec::new(), |_| {})
    }

    /// Test hook behind `Mesh::forge_address`: gossips `to` that `about` is alive at
    /// `addr`, in the very identity this node holds for it otherwise (same incarnation and
    /// epoch), at the SWIM incarnation it knows.
    #[cfg(feature = "testing")]
    pub(super) fn forge_address(
        self: &Arc<Self>,
        to: NodeId,
        about: NodeId,
        addr: SocketAddr,
    ) -> bool {
        let moved = {
            let swim = self.swim.lock();
            let Some(known) = others(&swim).find(|m| m.id().node == about) else {
                return false;
            };
            let id = NodeIdentity {
                addr,
                ..known.id().clone()
            };
            foca::Member::new(id, known.incarnation(), foca::State::Alive)
        };
        self.gossip_as_self(to, vec![moved], Vec::new(), |_| {})
    }

    /// Test hook behind `Mesh::forge_name_op`.
    #[cfg(feature = "testing")]
    pub(super) fn forge_name_op(self: &Arc<Self>, to: NodeId, op: &super::wire::NameOp) -> bool {
        // foca's custom broadcasts: each item with its length (u16) in front.
        let item = super::names::encode_op(op);
        let mut tail = Vec::with_capacity(2 + item.len());
        tail.extend_from_slice(&u16::try_from(item.len()).unwrap_or(u16::MAX).to_be_bytes());
        tail.extend_from_slice(&item);
        self.gossip_as_self(to, Vec::new(), tail, |_| {})
    }

    /// Sends `to` one SWIM gossip packet from this node (its identity as `edit` leaves it,
    /// announced alive, then `others`) followed by `tail`; false if `to` is not known here.
    #[cfg(feature = "testing")]
    fn gossip_as_self(
        self: &Arc<Self>,
        to: NodeId,
        others: Vec<foca::Member<NodeIdentity>>,
        tail: Vec<u8>,
        edit: impl FnOnce(&mut NodeIdentity),
    ) -> bool {
        let forged = {
            let swim = self.swim.lock();
            let Some(dst) = swim
                .foca
                .iter_membership_state()
                .find(|m| m.id().node == to)
                .map(|m| m.id().clone())
            else {
                return false;
            };
            let mut me = swim.foca.identity().clone();
            edit(&mut me);
            let incarnation = swim.guards.my_incarnation;
            let mut updates = vec![foca::Member::new(
                me.clone(),
                incarnation,
                foca::State::Alive,
            )];
            updates.extend(others);
            let packet = Packet::gossip(me, incarnation, dst.clone(), updates, tail);
            (dst, packet.encode())
        };
        self.send_swim(forged.0, bytes::Bytes::from(forged.1));
        true
    }

    /// Test hook behind `Mesh::set_membership_frozen`.
    #[cfg(feature = "testing")]
    pub(super) fn set_frozen(self: &Arc<Self>, frozen: bool) {
        self.with_swim(|swim, fx| {
            if frozen {
                swim.frozen.get_or_insert_with(Vec::new);
                tracing::warn!("membership frozen (test hook): this node stops answering SWIM");
            } else if let Some(held) = swim.frozen.take() {
                tracing::warn!(held = held.len(), "membership thawed (test hook)");
                for timer in held {
                    self.handle_timer(swim, timer, &mut *fx);
                }
            }
        });
    }
}

/// foca's record of the other nodes, in any state. foca also records a previous identity
/// of this node (an earlier epoch or life it hears gossip about) as a down member; that is
/// no other member, and is left out.
pub(super) fn others(swim: &Swim) -> impl Iterator<Item = &foca::Member<NodeIdentity>> {
    let me = swim.foca.identity().node;
    swim.foca
        .iter_membership_state()
        .filter(move |m| m.id().node != me)
}

/// Takes `members`, held down here, back as alive at the given incarnations: forgets the
/// `Down` records, then applies them as alive and broadcast (foca probes them as usual).
fn take_back(swim: &mut Swim, members: Vec<(NodeIdentity, Incarnation)>, fx: &mut Effects) {
    for (id, _) in &members {
        if let Err(error) = swim
            .foca
            .handle_timer(Timer::RemoveDown(id.clone()), &mut *fx)
        {
            tracing::debug!(%error, "forgetting a down member");
        }
    }
    let alive = members
        .into_iter()
        .map(|(id, incarnation)| foca::Member::new(id, incarnation, foca::State::Alive));
    if let Err(error) = swim.foca.apply_many(alive, true, &mut *fx) {
        tracing::debug!(%error, "taking members back");
    }
}

/// Announces this node to up to [`IDLE_ANNOUNCES`] members it remembers, in any state: a
/// member it holds down that hears it takes it back (or tells it to renew), so a node with
/// no live member finds its way back without a seed.
fn announce_to_remembered(swim: &mut Swim, fx: &mut Effects) {
    let remembered: Vec<NodeIdentity> = others(swim)
        .map(|m| m.id().clone())
        .take(IDLE_ANNOUNCES)
        .collect();
    for target in remembered {
        if let Err(error) = swim.foca.announce(target, &mut *fx) {
            tracing::debug!(%error, "SWIM announce");
        }
    }
}
