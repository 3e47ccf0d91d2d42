//! SWIM membership with foca: the node identity, foca's codec and configuration, and the
//! effect collector through which foca talks to the mesh.
//!
//! foca is sans-IO: every call (`handle_data`, `handle_timer`, `announce`, ...) takes a
//! [`foca::Runtime`], and what foca wants done comes back through it. Here that runtime is
//! [`Effects`], which only *records* packets to send, timers to arm and notifications; the
//! mesh (`mod.rs`) runs foca under its lock, then carries the effects out: notifications
//! still under the lock (so membership changes are applied in foca's order), packets and
//! timers after releasing it (packets are QUIC datagrams, timers are Cairn processes
//! sleeping on the scheduler's timer wheel). The codec, identity and configuration do no
//! I/O; the driver (`impl Inner` below) only wires foca to connections and processes.
//!
//! # What this module owns, and its invariants
//!
//! * `Inner::swim` (foca, the freeze hook, the leaving/closed switches). Lock order:
//!   `swim`, then `state`, then the name table — never the other way, so notifications
//!   can update members, connections and names while foca is locked.
//! * `State::members`: the live members other than this node, exactly foca's active set
//!   as reported by its notifications (`MemberUp`, `MemberDown`, `Rename`), one
//!   identity per node id, never an older incarnation over a newer one.
//! * Control connections (`State::controls`): at most one *used for sending* per node
//!   (`slots`), any number open (`all`, both ends may dial at once); every open one is
//!   closed after `2 × failure_timeout` without a packet. They never carry lanes.
//! * Every timer foca asks for is delivered (foca stalls otherwise): timer processes
//!   always call back, and the freeze hook holds fired timers rather than dropping them.
//!
//! # Identity
//!
//! A member is a [`NodeIdentity`]: node id, TLS name (to dial it), listen address, region
//! label and incarnation. foca's *address* of an identity is the node id: two identities
//! with one node id are two incarnations of one node, and the higher incarnation wins
//! (`win_addr_conflict`). A node starts with incarnation = wall-clock nanoseconds, so a
//! restarted node outranks its previous life; when foca learns that the cluster declared
//! *this* node down (a hung node that wakes up), `renew` gives it incarnation + 1 and it
//! rejoins as a new member.

use std::collections::HashMap;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use cairn_scheduler::{Ctx, ExitReason, NodeId, Pid};
use foca::{Header, OwnedNotification, Timer};
use serde::{Deserialize, Serialize};

use super::names::{encode_op, NameBroadcasts, NameError};
use super::wire::{NameOp, PeerInfo, Wire, CLOSE_DECLARED_DOWN};
use super::{ConnState, Inner, Link, Member, NodeEvent, State};
use crate::endpoint::Connection;

/// Largest SWIM packet. Packets travel as QUIC datagrams, whose room is the path MTU
/// minus QUIC's overhead; quinn starts with a 1200-byte MTU, leaving about 1150 bytes
/// for a datagram on a fresh connection. 1100 keeps clear of that before MTU discovery.
pub(crate) const MAX_PACKET: usize = 1100;

/// How many times each membership update or name op is piggybacked. 10 is foca's
/// `Config::simple` value; with 3 gossip targets per period it reaches a 1,000-node
/// cluster with high probability (epidemic spread is O(log n) rounds).
const MAX_TRANSMISSIONS: u8 = 10;

/// Remembered nodes announced to when this node finds itself alone (plus the seeds).
const IDLE_ANNOUNCES: usize = 8;

/// Members asked to probe indirectly when a direct probe gets no answer (foca's default).
const INDIRECT_PROBES: usize = 3;

/// How long a member declared down stays remembered (so its stale identity cannot come
/// back through old gossip). Renewed identities are not blocked by this.
const REMOVE_DOWN_AFTER: Duration = Duration::from_secs(60 * 60);

/// Who a member is: what rides in foca's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeIdentity {
    pub(crate) node: NodeId,
    pub(crate) name: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) region: Option<String>,
    pub(crate) incarnation: u64,
}

impl NodeIdentity {
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
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
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

fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
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

// ---------------------------------------------------------------------------------------
// The driver: foca inside the mesh.
// ---------------------------------------------------------------------------------------

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
        }
    }
}

impl Link {
    /// Sends one SWIM packet as a QUIC datagram (unreliable, like SWIM's UDP).
    fn send_swim(&self, data: bytes::Bytes) {
        if let Err(error) = self.conn.quinn().send_datagram(data) {
            tracing::debug!(peer = %self.node, %error, "could not send a SWIM datagram");
        }
    }
}

/// SWIM packets queued for a control connection being dialed. A probe lost here would
/// make a healthy member suspect, so packets wait for the handshake; beyond this many
/// (a peer that does not answer the dial) they are dropped, as UDP would.
const CONTROL_QUEUE: usize = 32;

/// A SWIM-only QUIC connection: opened to a member this node must probe (or answer)
/// but has no data connection to, closed after [`Inner::control_idle`] without a packet.
/// It never carries lanes, so closing it never loses user data.
pub(crate) struct Control {
    id: u64,
    node: NodeId,
    pub(crate) conn: Connection,
    last_used: parking_lot::Mutex<Instant>,
}

impl Control {
    fn touch(&self) {
        *self.last_used.lock() = Instant::now();
    }

    fn send(&self, data: bytes::Bytes) {
        self.touch();
        if let Err(error) = self.conn.quinn().send_datagram(data) {
            tracing::debug!(peer = %self.node, %error, "could not send a SWIM datagram");
        }
    }
}

enum ControlSlot {
    Dialing(Vec<bytes::Bytes>),
    Up(Arc<Control>),
}

/// The control connections of a mesh (inside `State`).
#[derive(Default)]
pub(crate) struct Controls {
    /// The one used to send to each node.
    slots: HashMap<NodeId, ControlSlot>,
    /// Every open one, by id (both ends may dial at once; the extra one idles out).
    all: HashMap<u64, Arc<Control>>,
}

impl Controls {
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    pub(crate) fn drain(&mut self) -> Vec<Arc<Control>> {
        self.slots.clear();
        self.all.drain().map(|(_, c)| c).collect()
    }

    fn install(&mut self, control: &Arc<Control>) -> Vec<bytes::Bytes> {
        self.all.insert(control.id, Arc::clone(control));
        match self.slots.get_mut(&control.node) {
            Some(ControlSlot::Up(_)) => Vec::new(),
            Some(slot @ ControlSlot::Dialing(_)) => {
                match std::mem::replace(slot, ControlSlot::Up(Arc::clone(control))) {
                    ControlSlot::Dialing(queued) => queued,
                    ControlSlot::Up(_) => Vec::new(),
                }
            }
            None => {
                self.slots
                    .insert(control.node, ControlSlot::Up(Arc::clone(control)));
                Vec::new()
            }
        }
    }

    fn remove(&mut self, control: &Control) {
        self.all.remove(&control.id);
        if matches!(self.slots.get(&control.node), Some(ControlSlot::Up(c)) if c.id == control.id) {
            self.slots.remove(&control.node);
        }
    }
}

impl Inner {
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
            while !fx.notes.is_empty() {
                for note in std::mem::take(&mut fx.notes) {
                    self.on_notification(&mut swim, note, &mut fx);
                }
            }
            (result, swim.frozen.is_some())
        };
        if !frozen {
            for (to, data) in fx.sends {
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
        Some(result)
    }

    fn swim_timer(self: &Arc<Self>, timer: Timer<NodeIdentity>) {
        self.with_swim(|swim, fx| {
            if let Some(held) = swim.frozen.as_mut() {
                held.push(timer);
                return;
            }
            if let Err(error) = swim.foca.handle_timer(timer, fx) {
                tracing::debug!(%error, "SWIM timer");
            }
        });
    }

    /// A SWIM packet from a peer (a datagram on a mesh connection).
    pub(super) fn swim_packet(self: &Arc<Self>, data: &[u8]) {
        self.with_swim(|swim, fx| {
            if swim.frozen.is_some() {
                return;
            }
            if let Err(error) = swim.foca.handle_data(data, fx) {
                tracing::debug!(%error, "SWIM packet ignored");
            }
        });
    }

    /// Sends a packet to `to`: on the data connection to it if there is one, else on a
    /// control connection (dialed in the background, the packet queued meanwhile).
    fn send_swim(self: &Arc<Self>, to: NodeIdentity, data: bytes::Bytes) {
        enum Via {
            Link(Arc<Link>),
            Control(Arc<Control>),
            Dial,
            Queued,
        }
        let via = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.known.entry(to.node).or_insert_with(|| PeerInfo {
                node: to.node,
                addr: to.addr,
                name: to.name.clone(),
            });
            if let Some(ConnState::Up(link)) = st.conns.get(&to.node) {
                Via::Link(Arc::clone(link))
            } else {
                match st.controls.slots.get_mut(&to.node) {
                    Some(ControlSlot::Up(control)) => Via::Control(Arc::clone(control)),
                    Some(ControlSlot::Dialing(queued)) => {
                        if queued.len() < CONTROL_QUEUE {
                            queued.push(data.clone());
                        }
                        Via::Queued
                    }
                    None => {
                        st.controls
                            .slots
                            .insert(to.node, ControlSlot::Dialing(vec![data.clone()]));
                        Via::Dial
                    }
                }
            }
        };
        match via {
            Via::Link(link) => link.send_swim(data),
            Via::Control(control) => control.send(data),
            Via::Queued => {}
            Via::Dial => {
                let inner = Arc::clone(self);
                self.handle
                    .spawn(move |_ctx: Ctx<()>| async move { inner.dial_control(to).await });
            }
        }
    }

    /// How long a control connection may go without a SWIM packet before it is closed:
    /// two failure timeouts, so members probed (or probing) regularly keep theirs.
    fn control_idle(&self) -> Duration {
        self.config.failure_timeout * 2
    }

    async fn dial_control(self: &Arc<Self>, to: NodeIdentity) {
        let hello = super::wire::Hello {
            node: self.node,
            incarnation: self.incarnation,
            listen: self.listen,
            name: self.name.clone(),
            peers: Vec::new(),
        };
        let dial = async {
            let conn = self
                .endpoint
                .connect(to.addr, &to.name)
                .await
                .map_err(|e| e.to_string())?;
            let mut lane = conn
                .open_lane(super::wire::CONTROL_LANE)
                .await
                .map_err(|e| e.to_string())?;
            lane.send(&Wire::Hello(hello))
                .await
                .map_err(|e| e.to_string())?;
            // Dropping the lane finishes it once the hello is written.
            Ok::<_, String>(conn)
        };
        let result = match self.handle.timeout(self.config.connect_timeout, dial).await {
            Ok(r) => r,
            Err(_) => Err("timed out connecting".to_owned()),
        };
        match result {
            Ok(conn) => self.run_control(conn, to.node),
            Err(error) => {
                let mut st = self.state.lock();
                if matches!(
                    st.controls.slots.get(&to.node),
                    Some(ControlSlot::Dialing(_))
                ) {
                    st.controls.slots.remove(&to.node);
                }
                drop(st);
                tracing::debug!(peer = %to.node, addr = %to.addr, %error, "SWIM control connection failed; its packets are dropped");
            }
        }
    }

    /// An incoming control connection from `node` (its hello was on [`CONTROL_LANE`]).
    pub(super) fn accept_control(self: &Arc<Self>, conn: Connection, node: NodeId) {
        self.run_control(conn, node);
    }

    fn run_control(self: &Arc<Self>, conn: Connection, node: NodeId) {
        let control = Arc::new(Control {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            node,
            conn,
            last_used: parking_lot::Mutex::new(Instant::now()),
        });
        let queued = {
            let mut st = self.state.lock();
            if st.closed {
                control
                    .conn
                    .close(super::wire::CLOSE_LEAVING, b"mesh closed");
                return;
            }
            st.controls.install(&control)
        };
        tracing::debug!(peer = %node, queued = queued.len(), "SWIM control connection up");
        for packet in queued {
            control.send(packet);
        }
        let inner = Arc::clone(self);
        let reader = Arc::clone(&control);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            while let Ok(packet) = reader.conn.quinn().read_datagram().await {
                reader.touch();
                inner.swim_packet(&packet);
            }
        });
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let reason = control.conn.closed().await;
            inner.state.lock().controls.remove(&control);
            let leaving = matches!(
                &reason,
                quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == quinn::VarInt::from_u32(super::wire::CLOSE_LEAVING)
            );
            if leaving {
                inner.peer_left(control.node);
            }
            tracing::debug!(peer = %control.node, %reason, "SWIM control connection closed");
        });
    }

    /// Closes control connections idle for longer than [`Inner::control_idle`], until
    /// the mesh closes.
    pub(super) async fn sweep_controls(self: &Arc<Self>) {
        let idle = self.control_idle();
        loop {
            self.handle.sleep(idle / 2).await;
            let stale: Vec<Arc<Control>> = {
                let mut st = self.state.lock();
                if st.closed {
                    return;
                }
                let stale: Vec<Arc<Control>> = st
                    .controls
                    .all
                    .values()
                    .filter(|c| c.last_used.lock().elapsed() > idle)
                    .cloned()
                    .collect();
                for control in &stale {
                    st.controls.remove(control);
                }
                stale
            };
            for control in stale {
                tracing::debug!(peer = %control.node, "closing an idle SWIM control connection");
                control.conn.close(super::wire::CLOSE_IDLE, b"idle");
            }
        }
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
                self.member_down(&old, "replaced by a new incarnation");
                if swim.foca.iter_members().any(|m| m.id() == &new) {
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
                let remembered: Vec<NodeIdentity> = swim
                    .foca
                    .iter_membership_state()
                    .map(|m| m.id().clone())
                    .take(IDLE_ANNOUNCES)
                    .collect();
                for target in remembered {
                    if let Err(error) = swim.foca.announce(target, &mut *fx) {
                        tracing::debug!(%error, "SWIM announce");
                    }
                }
                for seed in self.config.seeds.clone() {
                    if seed.addr == self.listen {
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
                self.state.lock().me = id;
                // Others dropped our names when they declared us down: tell them again,
                // stamped with the new incarnation (older claims are stale to them).
                let claims = {
                    let mut names = self.names.lock();
                    names.set_incarnation(incarnation);
                    names.local_claims()
                };
                for claim in claims {
                    if let Err(error) = swim.foca.add_broadcast(&encode_op(&NameOp::Claim(claim))) {
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

    fn member_up(self: &Arc<Self>, id: NodeIdentity) {
        let mut st = self.state.lock();
        match st.members.get(&id.node) {
            Some(current) if *current == id => return,
            Some(current) if current.incarnation > id.incarnation => return,
            Some(current) => {
                let old = current.clone();
                self.member_down_locked(&mut st, &old, "replaced by a new incarnation");
            }
            None => {}
        }
        st.members.insert(id.node, id.clone());
        st.known.insert(
            id.node,
            PeerInfo {
                node: id.node,
                addr: id.addr,
                name: id.name.clone(),
            },
        );
        self.names.lock().node_up(id.node, id.incarnation);
        tracing::info!(local = %self.node, peer = %id.node, addr = %id.addr, region = ?id.region, incarnation = id.incarnation, "member up");
        self.emit(
            &mut st,
            NodeEvent::Up {
                node: id.node,
                addr: id.addr,
                incarnation: id.incarnation,
            },
        );
    }

    pub(super) fn member_down(self: &Arc<Self>, id: &NodeIdentity, reason: &str) {
        let mut st = self.state.lock();
        self.member_down_locked(&mut st, id, reason);
    }

    fn member_down_locked(&self, st: &mut State, id: &NodeIdentity, reason: &str) {
        if st.members.get(&id.node) != Some(id) {
            return;
        }
        st.members.remove(&id.node);
        // Close the data connection so everything waiting on it fails now. A connection
        // from a newer incarnation (already replaced at the connection layer) stays.
        let stale = matches!(st.conns.get(&id.node), Some(ConnState::Up(l)) if l.incarnation <= id.incarnation);
        if stale {
            if let Some(ConnState::Up(link)) = st.conns.remove(&id.node) {
                link.conn.close(CLOSE_DECLARED_DOWN, b"declared down");
            }
        }
        self.node_lost(st, id.node, reason.to_owned());
        // Links and monitors towards the node fire `NoConnection` (not under our lock:
        // their signals may come back into the mesh).
        let handle = self.handle.clone();
        let node = id.node;
        self.handle
            .spawn(move |_ctx: Ctx<()>| async move { handle.node_down(node) });
        let names = self.names.lock().node_down(id.node);
        tracing::warn!(local = %self.node, peer = %id.node, incarnation = id.incarnation, %reason, dropped_names = names.len(), "member down");
        self.emit(
            st,
            NodeEvent::Down {
                node: id.node,
                reason: reason.to_owned(),
                incarnation: id.incarnation,
            },
        );
    }

    /// The peer closed its connection saying it leaves the cluster: declare it down now
    /// (and gossip it) rather than wait for SWIM to notice the silence.
    pub(super) fn peer_left(self: &Arc<Self>, node: NodeId) {
        let id = self.state.lock().members.get(&node).cloned();
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
    /// rejoining), preferring
    /// one this node already has a data connection to (the seed, usually), so the sync
    /// opens no new connection.
    fn request_sync(self: &Arc<Self>, swim: &Swim) {
        let candidates: Vec<NodeId> = swim.foca.iter_members().map(|m| m.id().node).collect();
        let node = {
            let st = self.state.lock();
            candidates
                .iter()
                .find(|n| matches!(st.conns.get(n), Some(ConnState::Up(_))))
                .or(candidates.first())
                .copied()
        };
        if let Some(node) = node {
            self.send_sync_request(node);
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
            let candidates: Vec<NodeId> = {
                let swim = self.swim.lock();
                if swim.closed {
                    return;
                }
                let live: Vec<NodeId> = swim.foca.iter_members().map(|m| m.id().node).collect();
                drop(swim);
                let st = self.state.lock();
                live.into_iter()
                    .filter(|n| matches!(st.conns.get(n), Some(ConnState::Up(_))))
                    .collect()
            };
            if !candidates.is_empty() {
                let node = candidates[rng.random_range(0..candidates.len())];
                self.send_sync_request(node);
            }
        }
    }

    fn send_sync_request(self: &Arc<Self>, node: NodeId) {
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let mine = inner.names.lock().local_claims();
            let sent = match inner.link(node).await {
                Ok(link) => link
                    .outbox
                    .send(&Wire::SyncRequest { names: mine })
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                tracing::warn!(peer = %node, %error, "could not ask for a sync");
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

    /// Feeds a peer's membership state to foca (not re-broadcast: it is the peer's
    /// knowledge, which the cluster has; only this node lacked it).
    pub(super) fn apply_membership_snapshot(self: &Arc<Self>, from: NodeId, bytes: &[u8]) {
        let members: Vec<foca::Member<NodeIdentity>> = match take(bytes) {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(peer = %from, %error, "undecodable membership sync; ignored");
                return;
            }
        };
        tracing::debug!(peer = %from, members = members.len(), "membership sync");
        self.with_swim(|swim, fx| {
            if let Err(error) = swim.foca.apply_many(members.into_iter(), false, fx) {
                tracing::debug!(%error, "applying a membership sync");
            }
        });
    }

    /// Applies claims received in a name-table sync.
    pub(super) fn apply_name_sync(&self, claims: Vec<super::wire::NameClaim>) {
        {
            let mut names = self.names.lock();
            for claim in claims {
                names.apply_claim(claim);
            }
        }
        self.exit_name_losers();
    }

    /// Exits local processes that lost a name race.
    pub(super) fn exit_name_losers(&self) {
        let losers = self.names.lock().take_losers();
        for (name, pid) in losers {
            tracing::warn!(%name, ?pid, "lost a cluster-wide name race; exiting the process");
            self.handle.exit(pid, ExitReason::NameConflict(name));
        }
    }

    /// Registers a cluster-wide name for a local process and disseminates it.
    /// `watch_exit`: release the name when `pid` exits. Not needed for names the
    /// scheduler registered (`spawn_named`): it releases them itself at exit.
    pub(super) fn register_name(
        self: &Arc<Self>,
        name: &str,
        pid: Pid,
        watch_exit: bool,
    ) -> Result<(), NameError> {
        if pid.node() != self.node {
            return Err(NameError::NotLocal(pid));
        }
        if !self.handle.is_alive(pid) {
            return Err(NameError::NoProc(pid));
        }
        if self.state.lock().closed {
            return Err(NameError::Closed);
        }
        let Some(claim) = self.names.lock().claim_local(name, pid)? else {
            return Ok(());
        };
        tracing::info!(%name, ?pid, lamport = claim.lamport, "registered a cluster-wide name");
        if watch_exit {
            // Released everywhere when the process exits, however it exits.
            let inner = Arc::clone(self);
            let watched = name.to_owned();
            let exit = self.handle.wait_exit(pid);
            self.handle.spawn(move |_ctx: Ctx<()>| async move {
                let reason = exit.await;
                tracing::debug!(name = %watched, ?pid, %reason, "name holder exited");
                inner.release_name(&watched, pid);
            });
        }
        self.broadcast_name(NameOp::Claim(claim));
        Ok(())
    }

    /// Releases `name` if local `pid` holds it, and tells the cluster.
    pub(super) fn release_name(self: &Arc<Self>, name: &str, pid: Pid) {
        let op = self.names.lock().release_local(name, pid);
        if let Some(op) = op {
            tracing::info!(%name, ?pid, "released a cluster-wide name");
            self.broadcast_name(op);
        }
    }

    fn broadcast_name(self: &Arc<Self>, op: NameOp) {
        self.with_swim(|swim, fx| {
            if let Err(error) = swim.foca.add_broadcast(&encode_op(&op)) {
                tracing::warn!(%error, "could not queue a name broadcast");
                return;
            }
            // Send it now rather than with the next probe or gossip round.
            if let Err(error) = swim.foca.broadcast(fx) {
                tracing::debug!(%error, "SWIM broadcast");
            }
        });
    }

    /// Test hook behind [`super::Mesh::set_membership_frozen`].
    pub(super) fn set_frozen(self: &Arc<Self>, frozen: bool) {
        self.with_swim(|swim, fx| {
            if frozen {
                swim.frozen.get_or_insert_with(Vec::new);
                tracing::warn!("membership frozen (test hook): this node stops answering SWIM");
            } else if let Some(held) = swim.frozen.take() {
                tracing::warn!(held = held.len(), "membership thawed (test hook)");
                for timer in held {
                    if let Err(error) = swim.foca.handle_timer(timer, &mut *fx) {
                        tracing::debug!(%error, "SWIM timer");
                    }
                }
            }
        });
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
    fn default_timing_fits_in_the_failure_timeout() {
        let t = Duration::from_secs(5);
        let c = swim_config(t);
        assert!(c.probe_rtt < c.probe_period);
        // One probe period to be probed, the RTT, then suspicion: well inside t.
        assert!(c.probe_period * 2 + c.probe_rtt + c.suspect_to_down_after < t);
    }
}
