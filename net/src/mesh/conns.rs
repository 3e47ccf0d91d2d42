//! Connections: the one data connection kept per peer node, and the rule that picks it.
//!
//! # One connection per pair
//!
//! A connection to a node is opened when a message is first sent to it (see `dial`). When
//! both nodes dial each other at once, each acceptor decides from what it knows, and both
//! decide alike: **the connection dialed by the lower `NodeId` is kept** ([`on_hello`]).
//! A hello from a *new incarnation* of a known node replaces the old connection (the old
//! one is lost to its callers). No user message is sent on a connection before its hello
//! exchange has decided it is the one kept, so dedup never reorders messages.
//!
//! # What this module owns, and its invariants
//!
//! [`ConnTable`] (behind `Inner::conns`): per node at most one slot, `Dialing` (one dial
//! under way, identified by its attempt id, with the senders waiting for it) or `Up` (the
//! connection kept). A failed dial is remembered with its attempt id, so a sender waiting
//! for attempt *a* learns its failure and a later sender dials afresh. Once closed,
//! nothing is installed or dialed.
//!
//! The table also keeps where to dial each known node (the address book), and how this
//! node knows of it ([`Standing`]): *met* (this node had an authenticated exchange with
//! the node itself: a hello whose certificate proved the id, or a SWIM packet from it
//! that passed the screen), *listed* (a live member or SWIM target as foca reports it,
//! possibly only from another member's gossip) or *hearsay* (only named in another
//! member's hello). A node speaks only for itself: only met nodes are confirmed
//! ([`ConnTable::confirmed`], shown to operators) and passed on in this node's hellos
//! ([`ConnTable::vouched_for`]); listing never downgrades a met node. Hearsay is bounded
//! (`limits`: entries looked at per hello, their id checked against their name, at most
//! `MAX_KNOWN_PEERS` nodes before no more is taken, hearsay dropped after
//! `UNCONFIRMED_PEER_TTL` when room is needed), never overrides what is known and is not
//! taken from clients. A listed entry lasts as long as foca holds the member, in any
//! state: it is removed when foca forgets it ([`ConnTable::forget_listed`], after the
//! member was down for foca's hour), so listed entries are bounded as foca's table is
//! (`limits`: gossip introduces at most `MAX_UNMET_MEMBERS` members this node has not
//! met). Met entries never expire.
//!
//! Addresses follow the same order. A met node's address changes only on its own word
//! (its hello, or a screened SWIM packet from it: [`ConnTable::met`],
//! [`ConnTable::met_sender`]), never on foca's ([`ConnTable::list`]: maybe another
//! member's gossip), so a liar cannot redirect where this node dials a member it met. A
//! listed entry takes foca's latest address, and the node's own once it speaks; hearsay
//! never overrides anything.
//!
//! [`Conn`] is an established connection: the peer's identity as its hello told it, the
//! QUIC connection and its [`Outbox`] — the lane towards the peer, shared by every sender
//! on this node (one QUIC stream: per-pair order, see the module doc of `mesh`).

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use cairn_scheduler::NodeId;
use parking_lot::Mutex;

use super::advertise::shareable;
use super::error::DialError;
use super::limits::{MAX_HELLO_PEERS, MAX_KNOWN_PEERS, MAX_PEER_NAME_LEN, UNCONFIRMED_PEER_TTL};
use super::stats::LinkStats;
use super::wire::{Hello, PeerInfo, Wire};
use crate::endpoint::{Connection, FramedSender, TrySendWith};
use crate::tls::Role;

/// An established connection, as reported by [`Mesh::connection_info`](super::Mesh::connection_info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The node that dialed it.
    pub dialed_by: NodeId,
    /// The peer's UDP address.
    pub remote: SocketAddr,
    /// The peer's incarnation.
    pub incarnation: u64,
}

/// An established connection to one node (the peer's side as its hello told it).
pub(super) struct Conn {
    id: u64,
    node: NodeId,
    incarnation: u64,
    addr: SocketAddr,
    dialed_by_local: bool,
    quic: Connection,
    outbox: Outbox,
    /// What the peer's certificate says of it (`authz`, `revoke`).
    cert: super::authz::PeerCert,
    /// Mesh frames queued towards the peer (hello ack included).
    frames_sent: AtomicU64,
    /// Mesh frames read from the peer's lane.
    frames_received: AtomicU64,
    /// Signals waiting for room on the lane (bounded: `limits::MAX_SIGNAL_WAITERS`).
    signal_waiters: AtomicUsize,
    /// Set once the bound was hit (the connection is being closed).
    overloaded: AtomicBool,
}

/// What the connection rule needs to know of a kept connection (so the rule and the
/// table can be tested without sockets).
pub(super) trait Peer {
    /// Unique per connection made by this mesh.
    fn id(&self) -> u64;
    /// The peer node.
    fn node(&self) -> NodeId;
    /// The peer's incarnation, from its hello.
    fn incarnation(&self) -> u64;
    /// Whether this node dialed it.
    fn dialed_by_local(&self) -> bool;
}

impl Peer for Conn {
    fn id(&self) -> u64 {
        self.id
    }
    fn node(&self) -> NodeId {
        self.node
    }
    fn incarnation(&self) -> u64 {
        self.incarnation
    }
    fn dialed_by_local(&self) -> bool {
        self.dialed_by_local
    }
}

impl Conn {
    /// A connection whose hello exchange is done: `peer` is the other side's hello.
    pub(super) fn new(
        id: u64,
        peer: &Hello,
        dialed_by_local: bool,
        quic: Connection,
        outbox: Outbox,
    ) -> Conn {
        let cert = super::authz::PeerCert::of(&quic, &peer.name);
        Conn {
            id,
            node: peer.node,
            incarnation: peer.incarnation,
            addr: peer.listen,
            dialed_by_local,
            quic,
            outbox,
            cert,
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            signal_waiters: AtomicUsize::new(0),
            overloaded: AtomicBool::new(false),
        }
    }

    /// Marks the connection overloaded; true the first time only.
    pub(super) fn mark_overloaded(&self) -> bool {
        !self.overloaded.swap(true, Ordering::Relaxed)
    }

    /// Takes a place among the signals waiting for room on the lane; false when all
    /// `limit` places are taken. Give it back with [`Conn::signal_sent`].
    pub(super) fn wait_for_room(&self, limit: usize) -> bool {
        let taken = self.signal_waiters.fetch_add(1, Ordering::Relaxed);
        if taken >= limit {
            self.signal_waiters.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives back a place taken by [`Conn::wait_for_room`].
    pub(super) fn signal_sent(&self) {
        self.signal_waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// What the peer's certificate says of it.
    pub(super) fn cert(&self) -> &super::authz::PeerCert {
        &self.cert
    }

    /// The peer's listen address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The QUIC connection (datagrams, close, close reason).
    pub(super) fn quic(&self) -> &Connection {
        &self.quic
    }

    /// Queues the first frame (the hello ack) into the fresh lane (never waits).
    pub(super) fn send_first(&self, frame: &Wire) -> Result<(), crate::SendError> {
        self.outbox.send_first(frame)?;
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues `frame`, waiting for room on the lane.
    pub(super) async fn send(&self, frame: &Wire) -> Result<(), crate::SendError> {
        self.outbox.send(frame).await?;
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts one frame read from the peer's lane.
    pub(super) fn received_frame(&self) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
    }

    /// This connection's traffic and round-trip time (QUIC's own figures for bytes and
    /// RTT; frames as counted here). Counters start at zero with each connection.
    pub(super) fn link_stats(&self) -> LinkStats {
        let quinn = self.quic.quinn();
        let stats = quinn.stats();
        LinkStats {
            node: self.node,
            rtt: quinn.rtt(),
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
        }
    }

    /// Ready once the lane has room (or has failed); registers `cx` otherwise.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.outbox.poll_room(cx)
    }

    /// Builds and queues a frame if the lane has room now (see [`Outbox::try_queue`]).
    pub(super) fn try_queue(&self, make: impl FnOnce() -> Result<Wire, String>) -> Queue {
        let queued = self.outbox.try_queue(make);
        if matches!(queued, Queue::Queued) {
            self.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Sends one SWIM packet as a QUIC datagram (unreliable, like SWIM's UDP).
    pub(super) fn send_swim(&self, data: bytes::Bytes) {
        if let Err(error) = self.quic.quinn().send_datagram(data) {
            tracing::debug!(peer = %self.node, %error, "could not send a SWIM datagram");
        }
    }

    /// What [`Mesh::connection_info`](super::Mesh::connection_info) reports, seen from `local`.
    pub(super) fn info(&self, local: NodeId) -> ConnectionInfo {
        ConnectionInfo {
            dialed_by: if self.dialed_by_local {
                local
            } else {
                self.node
            },
            remote: self.quic.remote_address(),
            incarnation: self.incarnation,
        }
    }
}

/// What [`Conn::try_queue`] did.
pub(super) enum Queue {
    Queued,
    /// The lane is full now (nothing was encoded).
    NoRoom,
    /// The frame could not be built (why: the encoder's error).
    Failed(String),
    /// The lane failed (connection lost).
    Closed,
}

/// The lane towards the peer, shared by every sender on this node.
pub(super) struct Outbox {
    tx: Mutex<FramedSender>,
    waiters: Arc<WakeAll>,
    /// `waiters` as a waker, made once (the lane keeps one waker: always this one).
    waker: Waker,
}

/// Wakes every waiting sender when the lane's writer makes room (a `FramedSender`
/// remembers one waker only).
#[derive(Default)]
struct WakeAll(Mutex<Vec<Waker>>);

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let waiters = std::mem::take(&mut *self.0.lock());
        for w in waiters {
            w.wake();
        }
    }
}

impl Outbox {
    pub(super) fn new(tx: FramedSender) -> Outbox {
        let waiters: Arc<WakeAll> = Arc::default();
        Outbox {
            tx: Mutex::new(tx),
            waker: Waker::from(Arc::clone(&waiters)),
            waiters,
        }
    }

    fn poll_send(&self, frame: &Wire, cx: &mut Context<'_>) -> Poll<Result<(), crate::SendError>> {
        let mut inner_cx = Context::from_waker(&self.waker);
        let mut tx = self.tx.lock();
        let poll = pin!(tx.send(frame)).poll(&mut inner_cx);
        if poll.is_ready() {
            return poll;
        }
        {
            let mut waiters = self.waiters.0.lock();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Room may have been made before our waker was listed: look again.
        let again = pin!(tx.send(frame)).poll(&mut inner_cx);
        again
    }

    async fn send(&self, frame: &Wire) -> Result<(), crate::SendError> {
        poll_fn(|cx| self.poll_send(frame, cx)).await
    }

    /// Ready once the lane has room (or has failed); registers `cx` otherwise.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner_cx = Context::from_waker(&self.waker);
        let mut tx = self.tx.lock();
        if tx.poll_ready(&mut inner_cx).is_ready() {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.waiters.0.lock();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Room may have been made before our waker was listed: look again.
        tx.poll_ready(&mut inner_cx).map(drop)
    }

    /// Builds and queues a frame if the lane has room now; `make` runs only then, under
    /// the lane's lock (so the room cannot be taken meanwhile).
    fn try_queue(&self, make: impl FnOnce() -> Result<Wire, String>) -> Queue {
        // The lane keeps one waker: always hand it the shared one so waiting senders
        // are never forgotten.
        let inner_cx = Context::from_waker(&self.waker);
        match self.tx.lock().try_send_with(&inner_cx, make) {
            TrySendWith::Queued => Queue::Queued,
            TrySendWith::Full => Queue::NoRoom,
            TrySendWith::Refused(failure) => Queue::Failed(failure),
            TrySendWith::Failed(error) => {
                tracing::debug!(%error, "mesh lane refused a frame");
                Queue::Closed
            }
        }
    }

    /// Queues `frame` into an empty, fresh lane (never waits).
    pub(super) fn send_first(&self, frame: &Wire) -> Result<(), crate::SendError> {
        match self.poll_send(frame, &mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(crate::SendError::Closed),
        }
    }
}

/// A node's entry in the [`ConnTable`].
enum Slot<C> {
    /// A dial is under way (attempt id); these senders wait for it.
    Dialing { attempt: u64, waiters: Vec<Waker> },
    /// The connection kept.
    Up(Arc<C>),
}

/// What an acceptor does with an incoming connection, given its hello ([`on_hello`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HelloDecision {
    /// Keep it: there is no connection to that node (a dial of ours may be under way, and
    /// the peer's wins).
    Keep,
    /// Keep it and close the one there is (a new incarnation, or a re-dial by the peer).
    Replace,
    /// Close it with `CLOSE_DUPLICATE`: the connection this node dialed is kept.
    Refuse,
}

/// The connection rule, the same on both nodes: of two connections between a pair, the
/// one dialed by the lower node id is kept; a new incarnation always replaces the old.
///
/// `hello` is the dialer's; `table` is the acceptor's view of connections to it.
pub(super) fn on_hello<C: Peer>(table: &ConnTable<C>, hello: &Hello) -> HelloDecision {
    let local = table.local;
    match table.slots.get(&hello.node) {
        None => HelloDecision::Keep,
        // Both dialing: the connection dialed by the lower node id wins.
        Some(Slot::Dialing { .. }) if hello.node < local => HelloDecision::Keep,
        Some(Slot::Dialing { .. }) => HelloDecision::Refuse,
        Some(Slot::Up(kept)) if kept.incarnation() != hello.incarnation => HelloDecision::Replace,
        // Our own dial is up and we are the lower node: it stays.
        Some(Slot::Up(kept)) if kept.dialed_by_local() && local < hello.node => {
            HelloDecision::Refuse
        }
        // The peer dialed again (it lost the connection we still hold), or it is the
        // lower node and its dial beats ours.
        Some(Slot::Up(_)) => HelloDecision::Replace,
    }
}

/// What opening a connection to a node needs next ([`ConnTable::poll_open`]).
pub(super) enum Open<C> {
    /// The connection, or why there is none.
    Ready(Result<Arc<C>, DialError>),
    /// A dial is under way; the caller's waker is registered.
    Wait,
    /// The caller must dial `PeerInfo` as attempt `u64` (the slot is now `Dialing`).
    Dial(PeerInfo, u64),
}

/// What [`ConnTable::install`] displaced.
pub(super) struct Installed<C> {
    /// Senders that waited for a dial to the node.
    pub(super) woken: Vec<Waker>,
    /// The connection it replaced, to be closed.
    pub(super) replaced: Option<Arc<C>>,
}

/// How this node knows of a node in its address book (see the module doc), weakest
/// first: an entry only ever moves up, except that hearsay expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Only named in another member's hello, first heard then; may expire.
    Heard(Instant),
    /// A live member or a SWIM target (foca's word, maybe another member's gossip): kept
    /// for dialing, not confirmed.
    Listed,
    /// This node had an authenticated exchange with it: confirmed.
    Met,
}

/// Where to dial a node, and how this node knows of it (see the module doc).
struct Known {
    info: PeerInfo,
    standing: Standing,
}

impl Known {
    fn is_met(&self) -> bool {
        self.standing == Standing::Met
    }

    /// When it was first heard of, if it is hearsay.
    fn heard(&self) -> Option<Instant> {
        match self.standing {
            Standing::Heard(when) => Some(when),
            Standing::Listed | Standing::Met => None,
        }
    }
}

/// Whether a hello's peer entry may be true: its node id is its name's (as for the
/// hello's own sender, `dial::proves_identity`) and the name could be dialed.
fn names_its_id(peer: &PeerInfo) -> bool {
    !peer.name.is_empty()
        && peer.name.len() <= MAX_PEER_NAME_LEN
        && peer.node == NodeId::of_name(&peer.name)
}

/// The connections of a mesh, by node (see the module doc).
pub(super) struct ConnTable<C = Conn> {
    local: NodeId,
    slots: HashMap<NodeId, Slot<C>>,
    /// Last failed dial per node: (attempt, error).
    failures: HashMap<NodeId, (u64, DialError)>,
    /// Where to dial nodes (members, seeds, peers named in hellos).
    known: HashMap<NodeId, Known>,
    /// No hearsay in `known` expires before this (so a full table is not scanned for
    /// each refused entry); `None`: not computed yet.
    no_expiry_before: Option<Instant>,
    closed: bool,
    /// Named in this node's hellos besides what it vouches for (`Mesh::forge_hello_peers`).
    #[cfg(feature = "testing")]
    forged_hello_peers: Vec<PeerInfo>,
}

impl<C: Peer> ConnTable<C> {
    pub(super) fn new(local: NodeId) -> ConnTable<C> {
        ConnTable {
            local,
            slots: HashMap::new(),
            failures: HashMap::new(),
            known: HashMap::new(),
            no_expiry_before: None,
            closed: false,
            #[cfg(feature = "testing")]
            forged_hello_peers: Vec::new(),
        }
    }

    /// The connection kept to `node`, if up.
    pub(super) fn up(&self, node: NodeId) -> Option<Arc<C>> {
        match self.slots.get(&node) {
            Some(Slot::Up(conn)) => Some(Arc::clone(conn)),
            _ => None,
        }
    }

    /// Every connection kept now.
    pub(super) fn all_up(&self) -> Vec<Arc<C>> {
        self.slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Up(conn) => Some(Arc::clone(conn)),
                Slot::Dialing { .. } => None,
            })
            .collect()
    }

    /// Whether a connection to `node` is up.
    pub(super) fn is_up(&self, node: NodeId) -> bool {
        matches!(self.slots.get(&node), Some(Slot::Up(_)))
    }

    /// Whether a connection to `node` is up or being dialed.
    pub(super) fn has_slot(&self, node: NodeId) -> bool {
        self.slots.contains_key(&node)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// One step of opening the connection to `node` for a caller that waits with `cx`.
    /// `mine` remembers the attempt the caller waits for, so a failure of that attempt
    /// (or a later one) ends its wait; `new_attempt` numbers a new dial.
    pub(super) fn poll_open(
        &mut self,
        node: NodeId,
        mine: &mut Option<u64>,
        cx: &Context<'_>,
        new_attempt: impl FnOnce() -> u64,
    ) -> Open<C> {
        if self.closed {
            return Open::Ready(Err(DialError::Closed));
        }
        match self.slots.get_mut(&node) {
            Some(Slot::Up(conn)) => return Open::Ready(Ok(Arc::clone(conn))),
            Some(Slot::Dialing { attempt, waiters }) => {
                mine.get_or_insert(*attempt);
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                return Open::Wait;
            }
            None => {}
        }
        if let (Some(mine), Some((attempt, error))) = (*mine, self.failures.get(&node)) {
            if *attempt >= mine {
                return Open::Ready(Err(error.clone()));
            }
        }
        let Some(info) = self.known.get(&node).map(|k| k.info.clone()) else {
            return Open::Ready(Err(DialError::UnknownNode(node)));
        };
        let attempt = new_attempt();
        *mine = Some(attempt);
        self.slots.insert(
            node,
            Slot::Dialing {
                attempt,
                waiters: vec![cx.waker().clone()],
            },
        );
        Open::Dial(info, attempt)
    }

    /// Whether dial `attempt` to `node` is still the one awaited.
    pub(super) fn is_dialing(&self, node: NodeId, attempt: u64) -> bool {
        matches!(self.slots.get(&node), Some(Slot::Dialing { attempt: a, .. }) if *a == attempt)
    }

    /// Dial `attempt` to `node` failed: remembers why and, if it is still the one awaited,
    /// frees the slot; returns the senders to wake.
    pub(super) fn dial_failed(
        &mut self,
        node: NodeId,
        attempt: u64,
        error: DialError,
    ) -> Vec<Waker> {
        self.failures.insert(node, (attempt, error));
        if !self.is_dialing(node, attempt) {
            return Vec::new();
        }
        match self.slots.remove(&node) {
            Some(Slot::Dialing { waiters, .. }) => waiters,
            _ => Vec::new(),
        }
    }

    /// Makes `conn` the connection to its node (the hello exchange decided it is kept).
    pub(super) fn install(&mut self, conn: Arc<C>) -> Installed<C> {
        let node = conn.node();
        self.failures.remove(&node);
        match self.slots.insert(node, Slot::Up(conn)) {
            Some(Slot::Dialing { waiters, .. }) => Installed {
                woken: waiters,
                replaced: None,
            },
            Some(Slot::Up(old)) => Installed {
                woken: Vec::new(),
                replaced: Some(old),
            },
            None => Installed {
                woken: Vec::new(),
                replaced: None,
            },
        }
    }

    /// Removes connection `id` to `node` if it is still the one kept (it closed).
    pub(super) fn remove_if_current(&mut self, node: NodeId, id: u64) -> bool {
        let current = matches!(self.slots.get(&node), Some(Slot::Up(c)) if c.id() == id);
        if current {
            self.slots.remove(&node);
        }
        current
    }

    /// Removes the connection to `node` if it is from `incarnation` or an older one (that
    /// incarnation was declared down; a newer one's connection stays).
    pub(super) fn remove_if_stale(&mut self, node: NodeId, incarnation: u64) -> Option<Arc<C>> {
        let stale =
            matches!(self.slots.get(&node), Some(Slot::Up(c)) if c.incarnation() <= incarnation);
        if !stale {
            return None;
        }
        match self.slots.remove(&node) {
            Some(Slot::Up(conn)) => Some(conn),
            _ => None,
        }
    }

    /// Learns, from a member's `hello` (received at `now` from `remote`; `role`: what the
    /// sender's certificate makes it), where to reach the member (met) and the peers
    /// it names (hearsay, see the module doc) — only addresses
    /// usable from here (`advertise::shareable`): never a dial-only client's non-address,
    /// never another host's loopback. Returns how many named peers were refused (a
    /// client's whole list; past [`MAX_HELLO_PEERS`]; not [`names_its_id`]; no room).
    pub(super) fn learn(
        &mut self,
        hello: &Hello,
        remote: SocketAddr,
        role: Role,
        now: Instant,
    ) -> usize {
        if role == Role::Client {
            // A client takes no part in membership (`authz`): its word on nodes is not
            // taken, and it is not dialed (an honest one gives no address anyway).
            return hello.peers.len();
        }
        if shareable(hello.listen, remote) {
            self.met(PeerInfo {
                node: hello.node,
                addr: hello.listen,
                name: hello.name.clone(),
            });
        }
        let mut refused = hello.peers.len().saturating_sub(MAX_HELLO_PEERS);
        for p in hello.peers.iter().take(MAX_HELLO_PEERS) {
            if p.node == self.local || !shareable(p.addr, remote) {
                continue;
            }
            if !names_its_id(p) {
                refused += 1;
                continue;
            }
            if self.known.contains_key(&p.node) {
                continue;
            }
            if !self.room_for_hearsay(now) {
                refused += 1;
                continue;
            }
            self.known.insert(
                p.node,
                Known {
                    info: p.clone(),
                    standing: Standing::Heard(now),
                },
            );
        }
        refused
    }

    /// Whether hearsay may be added: the table holds fewer than [`MAX_KNOWN_PEERS`] nodes,
    /// after dropping hearsay older than [`UNCONFIRMED_PEER_TTL`] if it was full.
    fn room_for_hearsay(&mut self, now: Instant) -> bool {
        if self.known.len() < MAX_KNOWN_PEERS {
            return true;
        }
        if self.no_expiry_before.is_some_and(|t| now < t) {
            return false;
        }
        self.known.retain(|_, k| {
            k.heard()
                .is_none_or(|t| now.duration_since(t) < UNCONFIRMED_PEER_TTL)
        });
        // Hearsay added from now on is heard at `now` or later: it expires after this too.
        let oldest = self.known.values().filter_map(Known::heard).min();
        self.no_expiry_before = Some(oldest.unwrap_or(now) + UNCONFIRMED_PEER_TTL);
        self.known.len() < MAX_KNOWN_PEERS
    }

    /// Records where to reach `peer` (its latest address), met: it said so itself in a
    /// hello its certificate proved (`dial::proves_identity`).
    pub(super) fn met(&mut self, peer: PeerInfo) {
        self.known.insert(
            peer.node,
            Known {
                info: peer,
                standing: Standing::Met,
            },
        );
    }

    /// `node` spoke to this node itself: a SWIM packet from it (the connection's
    /// authenticated node) passed the screen, saying it listens at `addr`. Its entry
    /// becomes met, at `addr` (its own word beats another's). An entry unknown or hearsay
    /// is made from the packet (`packet`, called only then: no allocation per packet
    /// otherwise), and only if its id is its name's.
    pub(super) fn met_sender(
        &mut self,
        node: NodeId,
        addr: SocketAddr,
        packet: impl FnOnce() -> PeerInfo,
    ) {
        if let Some(k) = self.known.get_mut(&node) {
            if k.heard().is_none() {
                k.standing = Standing::Met;
                k.info.addr = addr;
                return;
            }
        }
        let sender = packet();
        // Under a name not its id's: left as it is (hearsay expires).
        if sender.node == node && names_its_id(&sender) {
            self.met(sender);
        }
    }

    /// Records where to reach `peer`, listed: a live member as foca reports it, which may
    /// be another member's word. A met node stays met, at the address it gave itself; a
    /// listed one takes this latest address.
    pub(super) fn list(&mut self, peer: PeerInfo) {
        if self.known.get(&peer.node).is_some_and(Known::is_met) {
            return;
        }
        self.known.insert(
            peer.node,
            Known {
                info: peer,
                standing: Standing::Listed,
            },
        );
    }

    /// foca no longer holds `node` (it was down and is forgotten): a listed entry goes
    /// (hearsay expires on its own; a met node stays dialable).
    pub(super) fn forget_listed(&mut self, node: NodeId) {
        if self
            .known
            .get(&node)
            .is_some_and(|k| k.standing == Standing::Listed)
        {
            self.known.remove(&node);
            self.failures.remove(&node);
        }
    }

    /// Whether this node met `node` itself (see the module doc).
    pub(super) fn is_met(&self, node: NodeId) -> bool {
        self.known.get(&node).is_some_and(Known::is_met)
    }

    /// Records where to reach `peer`, listed, unless it is listed or met already (hearsay
    /// gives way): a SWIM target.
    pub(super) fn list_if_new(&mut self, peer: PeerInfo) {
        match self.known.get(&peer.node) {
            Some(k) if k.heard().is_none() => {}
            _ => self.list(peer),
        }
    }

    /// Every node this node knows of, hearsay included.
    pub(super) fn known(&self) -> Vec<PeerInfo> {
        self.known.values().map(|k| k.info.clone()).collect()
    }

    /// The nodes this node met itself (see the module doc): what it may tell an
    /// operator about, where [`ConnTable::known`] also holds what others said.
    pub(super) fn confirmed(&self) -> Vec<PeerInfo> {
        self.known
            .values()
            .filter(|k| k.is_met())
            .map(|k| k.info.clone())
            .collect()
    }

    /// The nodes this node names in its hello to the peer at `remote`: met ones only
    /// (neither hearsay nor gossiped members are passed on), usable from there, at most
    /// [`MAX_HELLO_PEERS`].
    pub(super) fn vouched_for(&self, remote: SocketAddr) -> Vec<PeerInfo> {
        self.known
            .values()
            .filter(|k| k.is_met() && shareable(k.info.addr, remote))
            .take(MAX_HELLO_PEERS)
            .map(|k| k.info.clone())
            .collect()
    }

    /// Test hook behind `Mesh::forge_hello_peers`: this node's hellos from now on also
    /// name `peers`.
    #[cfg(feature = "testing")]
    pub(super) fn forge_hello_peers(&mut self, peers: Vec<PeerInfo>) {
        self.forged_hello_peers = peers;
    }

    /// What [`ConnTable::forge_hello_peers`] set.
    #[cfg(feature = "testing")]
    pub(super) fn forged_hello_peers(&self) -> &[PeerInfo] {
        &self.forged_hello_peers
    }

    /// Closes the table: nothing is installed or dialed from now on. Returns the
    /// connections that were up, to be closed.
    pub(super) fn close(&mut self) -> Vec<Arc<C>> {
        self.closed = true;
        self.slots
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Up(conn) => Some(conn),
                Slot::Dialing { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept connection, without sockets.
    struct Fake {
        id: u64,
        node: NodeId,
        incarnation: u64,
        dialed_by_local: bool,
    }

    impl Peer for Fake {
        fn id(&self) -> u64 {
            self.id
        }
        fn node(&self) -> NodeId {
            self.node
        }
        fn incarnation(&self) -> u64 {
            self.incarnation
        }
        fn dialed_by_local(&self) -> bool {
            self.dialed_by_local
        }
    }

    fn hello(node: u64, incarnation: u64) -> Hello {
        Hello {
            node: NodeId(node),
            incarnation,
            listen: "127.0.0.1:7400".parse().unwrap(),
            name: format!("node-{node}"),
            peers: Vec::new(),
        }
    }

    fn fake(id: u64, node: u64, incarnation: u64, dialed_by_local: bool) -> Arc<Fake> {
        Arc::new(Fake {
            id,
            node: NodeId(node),
            incarnation,
            dialed_by_local,
        })
    }

    /// Learns from a member's `hello`, now, received over loopback.
    fn learn<C: Peer>(table: &mut ConnTable<C>, hello: &Hello) -> usize {
        table.learn(hello, localhost(), Role::Node, Instant::now())
    }

    fn localhost() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    /// A true peer entry for the node named `name`.
    fn named(name: &str) -> PeerInfo {
        PeerInfo {
            node: NodeId::of_name(name),
            addr: "127.0.0.1:7401".parse().unwrap(),
            name: name.to_owned(),
        }
    }

    /// Node 2's hello naming `peers`.
    fn hello_naming(peers: Vec<PeerInfo>) -> Hello {
        Hello {
            peers,
            ..hello(2, 1)
        }
    }

    fn knows(table: &ConnTable<Fake>, node: NodeId) -> bool {
        table.known().iter().any(|p| p.node == node)
    }

    /// `local`'s table with a dial to `peer` under way.
    fn dialing(local: u64, peer: u64) -> ConnTable<Fake> {
        let mut table = ConnTable::new(NodeId(local));
        learn(&mut table, &hello(peer, 1));
        let cx = Context::from_waker(Waker::noop());
        let open = table.poll_open(NodeId(peer), &mut None, &cx, || 1);
        assert!(matches!(open, Open::Dial(..)));
        table
    }

    #[test]
    fn a_hello_from_an_unconnected_node_is_kept() {
        let table = ConnTable::<Fake>::new(NodeId(5));
        assert_eq!(on_hello(&table, &hello(3, 1)), HelloDecision::Keep);
        assert_eq!(on_hello(&table, &hello(9, 1)), HelloDecision::Keep);
    }

    #[test]
    fn simultaneous_dials_keep_the_lower_nodes_dial_on_both_sides() {
        // 3 and 5 dial each other at once; each receives the other's hello while dialing.
        let at_3 = dialing(3, 5);
        let at_5 = dialing(5, 3);
        // 3 refuses 5's dial (3's own is kept); 5 keeps 3's dial.
        assert_eq!(on_hello(&at_3, &hello(5, 1)), HelloDecision::Refuse);
        assert_eq!(on_hello(&at_5, &hello(3, 1)), HelloDecision::Keep);
        // Once 3's dial is up on both sides, a late hello from 5's dial is refused by 3.
        let mut at_3 = at_3;
        at_3.install(fake(10, 5, 1, true));
        assert_eq!(on_hello(&at_3, &hello(5, 1)), HelloDecision::Refuse);
    }

    #[test]
    fn both_nodes_agree_on_the_connection_kept_whoever_dials_first() {
        for (a, b) in [(3u64, 5u64), (5, 3)] {
            // `a` dialed and its connection is up at `a`; `b` dials too.
            let mut at_a = ConnTable::<Fake>::new(NodeId(a));
            at_a.install(fake(1, b, 1, true));
            let b_dial_at_a = on_hello(&at_a, &hello(b, 1));
            // The lower node's dial survives.
            let expected = if a < b {
                HelloDecision::Refuse
            } else {
                HelloDecision::Replace
            };
            assert_eq!(b_dial_at_a, expected, "a={a} b={b}");
        }
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_connection_whoever_dialed_it() {
        for dialed_by_local in [true, false] {
            let mut table = ConnTable::<Fake>::new(NodeId(3));
            table.install(fake(1, 5, 100, dialed_by_local));
            assert_eq!(on_hello(&table, &hello(5, 101)), HelloDecision::Replace);
            let mut table = ConnTable::<Fake>::new(NodeId(7));
            table.install(fake(1, 5, 100, dialed_by_local));
            assert_eq!(on_hello(&table, &hello(5, 101)), HelloDecision::Replace);
        }
    }

    #[test]
    fn a_redial_from_the_same_incarnation_replaces_a_connection_it_dialed() {
        // The peer lost the connection it dialed (we still hold it) and dials again.
        let mut table = ConnTable::<Fake>::new(NodeId(3));
        table.install(fake(1, 5, 100, false));
        assert_eq!(on_hello(&table, &hello(5, 100)), HelloDecision::Replace);
        let installed = table.install(fake(2, 5, 100, false));
        assert_eq!(installed.replaced.map(|c| c.id), Some(1));
        // The old connection's close no longer removes the new one.
        assert!(!table.remove_if_current(NodeId(5), 1));
        assert!(table.remove_if_current(NodeId(5), 2));
    }

    #[test]
    fn waiters_of_a_dial_learn_its_failure_and_a_later_sender_dials_again() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            table.poll_open(NodeId(2), &mut None, &cx, || 1),
            Open::Ready(Err(DialError::UnknownNode(NodeId(2))))
        ));
        learn(&mut table, &hello(2, 1));
        // Two senders, each with its own waker.
        struct NoWake;
        impl Wake for NoWake {
            fn wake(self: Arc<Self>) {}
        }
        let (w1, w2) = (Waker::from(Arc::new(NoWake)), Waker::from(Arc::new(NoWake)));
        let (cx1, cx2) = (Context::from_waker(&w1), Context::from_waker(&w2));
        let (mut first, mut second) = (None, None);
        assert!(matches!(
            table.poll_open(NodeId(2), &mut first, &cx1, || 7),
            Open::Dial(_, 7)
        ));
        assert!(matches!(
            table.poll_open(NodeId(2), &mut second, &cx2, || 8),
            Open::Wait
        ));
        assert_eq!(second, Some(7));
        let woken = table.dial_failed(NodeId(2), 7, DialError::Timeout);
        assert_eq!(woken.len(), 2);
        for mine in [&mut first, &mut second] {
            assert!(matches!(
                table.poll_open(NodeId(2), mine, &cx, || 99),
                Open::Ready(Err(DialError::Timeout))
            ));
        }
        // A sender that was not waiting for attempt 7 dials afresh.
        assert!(matches!(
            table.poll_open(NodeId(2), &mut None, &cx, || 9),
            Open::Dial(_, 9)
        ));
        let installed = table.install(fake(3, 2, 1, true));
        assert_eq!(installed.woken.len(), 1);
        assert!(table.is_up(NodeId(2)));
    }

    #[test]
    fn a_down_incarnation_takes_its_connection_but_not_a_newer_ones() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        table.install(fake(1, 2, 200, true));
        assert!(table.remove_if_stale(NodeId(2), 100).is_none());
        assert!(table.remove_if_stale(NodeId(2), 200).is_some());
        assert!(!table.is_up(NodeId(2)));
    }

    #[test]
    fn a_closed_table_dials_nothing() {
        let mut table = dialing(1, 2);
        table.install(fake(1, 2, 1, true));
        assert_eq!(table.close().len(), 1);
        let cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            table.poll_open(NodeId(2), &mut None, &cx, || 2),
            Open::Ready(Err(DialError::Closed))
        ));
    }

    #[test]
    fn a_hello_gives_at_most_a_hellos_worth_of_peers_whose_id_is_their_names() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let forged = PeerInfo {
            node: NodeId(77),
            ..named("forged")
        };
        let long = named(&"x".repeat(MAX_PEER_NAME_LEN + 1));
        let mut peers = vec![forged.clone(), long.clone()];
        peers.extend((0..MAX_HELLO_PEERS + 10).map(|k| named(&format!("fake-{k}"))));
        let refused = learn(&mut table, &hello_naming(peers));
        // The two bad entries, and the 12 past the bound.
        assert_eq!(refused, 14);
        // Node 2 itself, and the good entries among the first MAX_HELLO_PEERS.
        assert_eq!(table.known().len(), 1 + MAX_HELLO_PEERS - 2);
        assert!(!knows(&table, forged.node) && !knows(&table, long.node));
        assert!(knows(&table, named("fake-0").node));
        assert!(!knows(
            &table,
            named(&format!("fake-{}", MAX_HELLO_PEERS - 2)).node
        ));
        // Hearsay never overrides what is known: node 2's own address stays.
        let liar = PeerInfo {
            addr: "127.0.0.1:666".parse().unwrap(),
            ..named("node-2")
        };
        let node2 = NodeId::of_name("node-2");
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let mut hello2 = hello_naming(vec![]);
        hello2.node = node2;
        hello2.name = "node-2".into();
        learn(&mut table, &hello2);
        learn(&mut table, &hello_naming(vec![liar]));
        let known = table.known();
        let entry = known.iter().find(|p| p.node == node2).unwrap();
        assert_eq!(entry.addr, hello2.listen);
    }

    #[test]
    fn a_clients_peer_list_is_not_taken() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let hello = hello_naming(vec![named("a"), named("b")]);
        let refused = table.learn(&hello, localhost(), Role::Client, Instant::now());
        assert_eq!(refused, 2);
        assert!(
            table.known().is_empty(),
            "not even the client's own address"
        );
    }

    #[test]
    fn a_full_table_takes_no_hearsay_until_unconfirmed_hearsay_expires() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let t0 = Instant::now();
        let mut k = 0;
        let mut batch = || {
            let peers = (k..k + MAX_HELLO_PEERS)
                .map(|k| named(&format!("fake-{k}")))
                .collect();
            k += MAX_HELLO_PEERS;
            hello_naming(peers)
        };
        let mut refused = 0;
        while table.known().len() < MAX_KNOWN_PEERS {
            refused += table.learn(&batch(), localhost(), Role::Node, t0);
        }
        // Node 2 took one place: the last batch had one entry too many.
        assert_eq!(refused, 1);
        assert_eq!(table.known().len(), MAX_KNOWN_PEERS);
        let later = t0 + UNCONFIRMED_PEER_TTL / 2;
        assert_eq!(
            table.learn(&batch(), localhost(), Role::Node, later),
            MAX_HELLO_PEERS
        );
        // Members (listed, maybe on gossip only) and nodes met are always recorded.
        table.list(named("member"));
        table.met(named("met"));
        assert_eq!(table.known().len(), MAX_KNOWN_PEERS + 2);
        // Hearsay listed meanwhile (a SWIM target) is kept when hearsay expires, as is
        // hearsay that then spoke to this node.
        table.list_if_new(named("fake-0"));
        table.met_sender(named("fake-1").node, named("fake-1").addr, || {
            named("fake-1")
        });
        let expired = t0 + UNCONFIRMED_PEER_TTL;
        assert_eq!(table.learn(&batch(), localhost(), Role::Node, expired), 0);
        // Node 2, the member, the met node, fake-0, fake-1 and the new batch.
        assert_eq!(table.known().len(), 5 + MAX_HELLO_PEERS);
        assert!(knows(&table, named("member").node) && knows(&table, named("fake-0").node));
        assert!(knows(&table, named("fake-1").node));
        assert!(!knows(&table, named("fake-2").node));
    }

    #[test]
    fn a_hello_names_confirmed_nodes_only_and_at_most_a_hellos_worth() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        learn(
            &mut table,
            &hello_naming(vec![named("hearsay"), named("later")]),
        );
        let vouched = table.vouched_for(localhost());
        assert_eq!(vouched.len(), 1, "{vouched:?}");
        assert_eq!(vouched[0].node, NodeId(2), "only the node that said hello");
        // A SWIM target or a member this node has not met is not passed on either.
        table.list_if_new(named("later"));
        assert_eq!(table.vouched_for(localhost()).len(), 1);
        // Once met (it sent a SWIM packet), it is.
        table.met_sender(named("later").node, named("later").addr, || named("later"));
        assert!(table.vouched_for(localhost()).contains(&named("later")));
        for k in 0..MAX_HELLO_PEERS + 5 {
            table.met(named(&format!("member-{k}")));
        }
        assert_eq!(table.vouched_for(localhost()).len(), MAX_HELLO_PEERS);
        // Another host is told no loopback address.
        assert!(table
            .vouched_for("10.0.0.9:7400".parse().unwrap())
            .is_empty());
    }

    #[test]
    fn hearsay_is_known_but_not_confirmed_until_this_node_meets_the_node() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        learn(
            &mut table,
            &hello_naming(vec![named("hearsay"), named("later")]),
        );
        let confirmed = |table: &ConnTable<Fake>| {
            let mut nodes: Vec<NodeId> = table.confirmed().iter().map(|p| p.node).collect();
            nodes.sort();
            nodes
        };
        // Both named nodes may be dialed, but only the node that said hello is confirmed.
        assert!(knows(&table, named("hearsay").node) && knows(&table, named("later").node));
        assert_eq!(confirmed(&table), vec![NodeId(2)]);
        // Only once it speaks to this node itself (a screened SWIM packet) is it confirmed;
        // the other stays hearsay.
        table.met_sender(named("later").node, named("later").addr, || named("later"));
        let mut expected = vec![NodeId(2), named("later").node];
        expected.sort();
        assert_eq!(confirmed(&table), expected);
    }

    #[test]
    fn a_member_known_by_gossip_is_dialable_but_confirmed_only_once_met() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        let confirmed = |table: &ConnTable<Fake>| {
            let mut nodes: Vec<NodeId> = table.confirmed().iter().map(|p| p.node).collect();
            nodes.sort();
            nodes
        };
        // `member_up` of a node only gossiped about, and SWIM sent to it: recorded where to
        // dial it, but neither confirmed nor vouched for.
        let ghost = named("ghost");
        table.list(ghost.clone());
        table.list_if_new(named("target"));
        assert!(knows(&table, ghost.node) && knows(&table, named("target").node));
        assert_eq!(confirmed(&table), Vec::<NodeId>::new());
        assert!(table.vouched_for(localhost()).is_empty());
        let cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            table.poll_open(ghost.node, &mut None, &cx, || 1),
            Open::Dial(ref p, 1) if *p == ghost
        ));
        // A hello from it (its certificate proved the id) confirms it.
        let mut hello_a = hello(0, 1);
        hello_a.node = named("a").node;
        hello_a.name = "a".into();
        table.list(named("a"));
        learn(&mut table, &hello_a);
        assert_eq!(confirmed(&table), vec![named("a").node]);
        // So does a screened SWIM packet from a member listed only.
        table.met_sender(named("target").node, named("target").addr, || {
            named("target")
        });
        let mut expected = vec![named("a").node, named("target").node];
        expected.sort();
        assert_eq!(confirmed(&table), expected);
        // A confirmed node that is then reported up again (gossip) or targeted stays
        // confirmed, at the address it gave itself: foca's word (maybe a liar's gossip)
        // does not move it.
        let moved = PeerInfo {
            addr: "127.0.0.1:7402".parse().unwrap(),
            ..named("a")
        };
        table.list(moved.clone());
        table.list_if_new(moved.clone());
        assert_eq!(confirmed(&table), expected);
        let own = PeerInfo {
            addr: hello_a.listen,
            ..named("a")
        };
        assert!(table.confirmed().contains(&own));
        assert!(!table.known().contains(&moved));
        // Its own word does: a hello, or a SWIM packet from it.
        table.met_sender(moved.node, moved.addr, || unreachable!("known"));
        assert!(table.confirmed().contains(&moved));
        table.met(named("a"));
        assert!(table.confirmed().contains(&named("a")));
        // A member listed only takes foca's latest address, and its own once it speaks.
        let ghost_moved = PeerInfo {
            addr: "127.0.0.1:7403".parse().unwrap(),
            ..ghost.clone()
        };
        table.list(ghost_moved.clone());
        assert!(table.known().contains(&ghost_moved));
        table.met_sender(ghost.node, ghost.addr, || unreachable!("known"));
        assert!(table.confirmed().contains(&ghost));
        expected.push(ghost.node);
        expected.sort();
        // A screened packet's sender whose name is not its id is not taken as met.
        let forged = PeerInfo {
            node: NodeId(77),
            ..named("forged")
        };
        table.met_sender(forged.node, forged.addr, || forged.clone());
        assert_eq!(confirmed(&table), expected);
        assert!(!knows(&table, NodeId(77)));
    }

    #[test]
    fn the_largest_hello_a_node_sends_encodes_far_below_the_frame_limit() {
        let addr: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let peers = (0..MAX_HELLO_PEERS)
            .map(|k| {
                let name = format!("{k:0>width$}", width = MAX_PEER_NAME_LEN);
                PeerInfo {
                    node: NodeId(u64::MAX),
                    addr,
                    name,
                }
            })
            .collect();
        let hello = Hello {
            listen: addr,
            name: "n".repeat(MAX_PEER_NAME_LEN),
            ..hello_naming(peers)
        };
        let mut out = Vec::new();
        crate::frame::encode_frame(
            &Wire::Hello(hello),
            &mut out,
            crate::frame::MAX_FRAME_DEFAULT,
        )
        .expect("encodes");
        assert!(out.len() < 512 * 1024, "{} bytes", out.len());
    }
    #[test]
    fn a_listed_entry_goes_when_foca_forgets_the_member_and_others_stay() {
        let mut table = ConnTable::<Fake>::new(NodeId(1));
        table.list(named("gossiped"));
        table.list(named("spoke"));
        table.met_sender(named("spoke").node, named("spoke").addr, || named("spoke"));
        learn(&mut table, &hello_naming(vec![named("hearsay")]));
        for name in ["gossiped", "spoke", "hearsay", "node-2"] {
            table.forget_listed(NodeId::of_name(name));
        }
        table.forget_listed(NodeId(2));
        assert!(!knows(&table, named("gossiped").node));
        assert!(table.is_met(named("spoke").node) && table.is_met(NodeId(2)));
        assert!(knows(&table, named("hearsay").node));
        assert!(!table.is_met(named("hearsay").node));
        assert_eq!(table.known().len(), 3);
    }
}
