//! The mesh: nodes joined over QUIC, location-transparent sends and calls.
//!
//! A first slice of the mesh (issue 5): a [`Mesh`] runs on one Cairn runtime and gives
//! its processes [`Mesh::send`], [`Mesh::send_named`] and [`Mesh::call`] to processes on
//! any node, by pid or by name. A message to a local pid goes straight into the mailbox;
//! one to another node is serialized with rmp-serde, travels on the connection to that
//! node and is delivered into the target's typed mailbox there.
//!
//! # Message types travel by tag
//!
//! The receiving node sees bytes only, so every message type that crosses nodes is
//! registered under a tag on every node that sends or receives it:
//! `mesh.register::<Msg>("app.Msg")`. A frame carries (from pid, to pid or name, tag,
//! payload); the receiver decodes the payload as the type registered under the tag and
//! delivers it with `Handle::actor_ref::<M>` + `try_send` (waiting with `send().await`
//! when the mailbox is full).
//!
//! # Membership: SWIM (foca) over QUIC
//!
//! Membership and failure detection are SWIM with suspicion, from the `foca` crate
//! (sans-IO; see `membership` for the driver). A member is a node id, TLS name, listen
//! address, optional region label ([`MeshConfig::region`]) and incarnation; [`Mesh::members`]
//! lists the live ones, this node included, and [`NodeEvent::Up`]/[`NodeEvent::Down`]
//! report changes (membership events, not connection events).
//!
//! * **Joining.** A node dials each of [`MeshConfig::seeds`] (retrying until the seed
//!   answers, so seeds may start later), learns the seed's node id from the hello
//!   exchange and sends it a SWIM *announce* until the seed is a live member here. The
//!   seed answers with a feed of members (one packet's worth), and once joined the node
//!   asks one member for its whole membership state and name table over the reliable
//!   lane (`Wire::SyncRequest`; foca's `apply_many`). Everything else — later joiners,
//!   leavers, suspicions — spreads by gossip piggybacked on probes and on a gossip
//!   round every `failure_timeout/25` to 3 members; and every `2 × failure_timeout`
//!   each node syncs with one random member it already has a data connection to
//!   (anti-entropy for what gossip missed; it opens no connection). A node that finds
//!   itself alone (everyone it knew declared down) announces again to remembered
//!   members and to its seeds.
//! * **Transport: QUIC datagrams on mTLS connections.** foca packets (≤ 1100 bytes) are
//!   QUIC datagrams, never plain UDP: only holders of a cluster-CA certificate get a
//!   connection, so only they can take part. Datagrams, not a lane, because SWIM wants
//!   unreliable, unordered delivery: a probe must not wait behind user frames (the
//!   mesh lane stalls while a receiver's mailbox is full — that would make a busy node
//!   look dead) nor behind retransmissions of lost packets (a late answer is useless to
//!   SWIM; it re-probes). A packet goes on the data connection to the member if there is
//!   one, else on a **control connection**: a QUIC connection that opens lane
//!   [`wire::CONTROL_LANE`] with one hello and then carries datagrams only. Control
//!   connections are closed after `2 × failure_timeout` without a packet (nothing can be
//!   lost: they carry no lanes), so probing never builds a full mesh of data
//!   connections; packets wait in a small queue while one is being dialed.
//! * **Failure detection.** [`MeshConfig::failure_timeout`] (default 5 s, DESIGN 22) sets
//!   the probe period (`t/10`), probe RTT before indirect probes (`t/25`) and suspicion
//!   time (`3t/10`). Measured on loopback (debug build, 2 loaded cores): a hung node
//!   (SWIM frozen, sockets open) declared down everywhere after 2.3–2.8 s, a killed
//!   node after 2.1–2.6 s (3 nodes; more sizes below), a node that closes its mesh after
//!   ~0.2 s (it leaves: connected peers see [`wire::CLOSE_LEAVING`] and gossip it). On
//!   `Down`: the data connection to the node is closed, pending calls to it fail at once
//!   with [`MeshCallError::NoConnection`], its cluster-wide names are dropped, and it
//!   leaves `members()`. The QUIC idle timeout still closes silent connections (and
//!   fails calls pending on them) but no longer reports nodes down by itself.
//! * **Incarnations.** A node starts with incarnation = wall-clock nanoseconds, so a
//!   restarted node (same node id) outranks its previous life: the others see `Down` of
//!   the old incarnation and `Up` of the new one. A node the cluster declared down while
//!   it was alive (hung, cut off) hears so when it talks again, takes incarnation + 1
//!   and rejoins as a new member (`Up` again); its old pids count as dead.
//! * **Sizes tested, and the path to 1,000 nodes.** All in one test process on loopback
//!   on a 2-core machine shared with other builds (`tests/membership.rs`; the larger
//!   cluster test takes `CAIRN_MESH_NODES`, default 12):
//!
//!   | nodes | build | converged | killed node Down everywhere | false suspicions at start |
//!   |---|---|---|---|---|
//!   | 3–4 | debug | < 1 s | 2.1–2.6 s | 0 |
//!   | 12 | debug | 0.7 s | 2.6–3.2 s | 0 |
//!   | 30 | release | 0.7–0.8 s | 2.5–2.8 s | 0 |
//!   | 60 | release | 1.8–3.3 s | 2.8–3.1 s | 1–21, healed by renewal |
//!   | 100 | release | 18 s | 2.6 s | ~150 (load average 16–38) |
//!
//!   False suspicions come from CPU starvation of the test rig (60–100 runtimes and a
//!   TLS handshake per newly probed member on 2 shared cores; 30 debug-build nodes
//!   show them too), not from the network; they heal by renewal within seconds.
//!   SWIM's cost per node is O(1) per period: one probe (plus 3 indirect ones on a
//!   miss), gossip rounds to 3 members while updates wait to be spread, one sync every
//!   `2t`. Each node keeps a control connection per member it exchanged packets with in
//!   the last `2t`: in steady state the members it probed or was probed by, about
//!   `2 × 2t / (t/10)` = 40 with the defaults whatever the cluster size (every member
//!   below ~40 nodes; measured 11–16 per node at 30 nodes, 28–40 at 60 right after a
//!   start, when gossip of 60 joins adds targets). What grows with n: the member list
//!   and the sync answer (O(n) memory and bytes, ~70 bytes a member); a TLS handshake
//!   per newly probed member (about one per probe period per node once n exceeds ~40).
//!   For 1,000 nodes, next steps: TLS session resumption or 0-RTT for control
//!   connections (cheaper handshakes), Lifeguard's local-health multiplier on probe
//!   timeouts (fewer false suspicions under load), rate-limited joins, and a delta
//!   rather than full sync.
//!
//! # Cluster-wide names
//!
//! [`Mesh::register_name`], [`Mesh::unregister_name`] and [`Mesh::whereis`] keep a
//! replicated name table (see `names` for the rules): changes are foca custom broadcasts
//! (piggybacked on SWIM packets, each sent 10 times); a node that joins asks one member
//! for the whole table (`Wire::SyncRequest`). Concurrent claims resolve to the lowest
//! `(lamport, pid)` on every node and the loser's process exits with
//! `ExitReason::NameConflict(name)`. A name goes when its process exits, when it is
//! unregistered, and when its node is declared down. A node that missed every
//! transmission of an op is repaired by the periodic sync below.
//!
//! # Connections: on demand, one per pair
//!
//! A connection to a node is opened when a message is first sent to it (a dialer
//! process; senders wait for it, at most [`MeshConfig::connect_timeout`]). When both
//! nodes dial each other at once, each acceptor decides from what it knows, and both
//! decide alike: **the connection dialed by the lower `NodeId` is kept**. An acceptor
//! that is itself dialing (or already connected through its own dial) refuses an
//! incoming dial from a higher node with [`wire::CLOSE_DUPLICATE`]; the refused dialer
//! then waits for the other connection, which the other side accepts. A hello from a
//! *new incarnation* of a known node replaces the old connection (the old one is
//! reported down). No user message is sent on a connection before its hello exchange
//! has decided it is the one kept, so dedup never reorders messages.
//!
//! # Ordering (semantic 2) and its cost
//!
//! Each direction of a connection is **one lane** (one QUIC stream) that carries every
//! message and reply from this node to that node, in the order they were queued. A
//! sender's `send` returns only once its frame is queued, so one sender's messages are
//! queued in order; the single stream keeps that order; the single reader process on
//! the receiving node delivers frames one by one, and on a full mailbox it waits
//! (`send().await`) before taking the next frame. So every sender→receiver pair keeps its
//! order, and mailboxes stay bounded end to end (nothing is dropped for lack of room).
//! The cost: one slow (full-mailboxed) receiver stalls all traffic from that sending
//! node to the whole receiving node (head-of-line blocking across processes), and a
//! lost packet stalls the whole lane until it is retransmitted. Per-receiver lanes (or
//! answering `Full` to the sender, as issue 5 asks for `try_send`) are the way out.
//!
//! # Connection loss
//!
//! QUIC's idle timeout ([`MeshConfig::idle_timeout`], default 3 s) with keep-alives
//! ([`MeshConfig::keep_alive`], default 1 s) closes a silent connection; a node that
//! closes its mesh closes its connections at once. When a data connection is lost,
//! every pending [`Mesh::call`] to that node fails at once with
//! [`MeshCallError::NoConnection`]. Whether the *node* is down is membership's call
//! (above). Process monitors/links across nodes do not exist yet.
//!
//! # Remote calls and [`RemoteReply`]
//!
//! The scheduler's `Reply<T>` is an in-memory one-shot and cannot be serialized. A
//! remote call therefore puts a [`RemoteReply<R>`] (serde: the caller's node and a reply
//! id) into the request; the caller's mesh keeps the pending id in a table; the callee
//! answers with `reply.send(&mesh, value).await`, which sends a reply frame back (or
//! completes locally when the caller is on the same node). Differences from `Reply<T>`:
//! the answer is serialized even locally; dropping a `RemoteReply` without answering
//! does **not** resolve the caller with `NoReply` (it times out) — unless the request
//! could not be delivered at all, which the callee's mesh reports at once
//! ([`MeshCallError::Remote`]); and the callee needs the [`Mesh`] to answer (see
//! [`Mesh::from_handle`]). The scheduler's `Reply<T>` is now serializable too (see
//! *Location transparency*); `RemoteReply` remains for the `Mesh::call` API.
//!
//! # Bad input
//!
//! A frame that is not a valid mesh frame closes that connection (logged, counted in
//! [`MeshStats::protocol_errors`]); an unknown tag or a payload that does not decode as
//! its registered type is logged and counted ([`MeshStats::bad_messages`]) and the
//! connection carries on. A message for a dead pid or an unknown name is a dead letter
//! (logged, [`MeshStats::dead_letters`]). Nothing on this path panics.

pub mod wire;

mod membership;
mod names;
mod registry;
mod router;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, Handle, NodeId, Pid, Reply};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::endpoint::{Connection, Endpoint, EndpointOptions, FramedReceiver, FramedSender};
use crate::endpoint::{RecvError, CLOSE_NORMAL};
use crate::frame::MAX_FRAME_DEFAULT;
use crate::tls::TlsConfig;

pub use names::{NameError, MAX_NAME_LEN};
pub use registry::RegisterTypeError;
pub use wire::{Hello, PeerInfo, RemoteFailure, Target, Wire};

use membership::{NodeIdentity, Swim};
use names::{NameBroadcasts, NameTable};
use registry::{Delivery, Registry};
use router::UserQueue;
use wire::{
    decode_payload, encode_payload, Bytes, CLOSE_DUPLICATE, CLOSE_PROTOCOL, CLOSE_REPLACED,
};

/// A node to contact at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Its listen address.
    pub addr: SocketAddr,
    /// Its TLS name: the node name in its certificate (TLS checks it).
    pub name: String,
}

impl Seed {
    /// A seed at `addr` whose certificate is issued for `name`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Seed {
        Seed {
            addr,
            name: name.into(),
        }
    }
}

/// How a [`Mesh`] runs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Where to accept connections (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The cluster CA and this node's certificate.
    pub tls: TlsConfig,
    /// Nodes to contact at start.
    pub seeds: Vec<Seed>,
    /// A connection with no packet from the peer for this long is lost (default 3 s).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well below `idle_timeout` (default 1 s).
    pub keep_alive: Duration,
    /// How long a send waits for a connection to be opened (default 5 s).
    pub connect_timeout: Duration,
    /// Largest frame sent or accepted (default 16 MiB).
    pub max_frame: usize,
    /// This node's region label (e.g. `eu`), visible to every member in
    /// [`Mesh::members`].
    pub region: Option<String>,
    /// A dead, hung or cut-off node is declared down by SWIM within about this long
    /// (default 5 s; at least 250 ms). Probe period, probe RTT and suspicion time derive
    /// from it (see the membership section of the module doc).
    pub failure_timeout: Duration,
}

impl MeshConfig {
    /// Defaults: listen on `listen`, no seeds.
    pub fn new(listen: SocketAddr, tls: TlsConfig) -> MeshConfig {
        MeshConfig {
            listen,
            tls,
            seeds: Vec::new(),
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_frame: MAX_FRAME_DEFAULT,
            region: None,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
        }
    }

    /// Sets this node's region label.
    pub fn region(mut self, region: impl Into<String>) -> MeshConfig {
        self.region = Some(region.into());
        self
    }

    /// Sets the failure timeout (see [`MeshConfig::failure_timeout`]).
    pub fn failure_timeout(mut self, timeout: Duration) -> MeshConfig {
        self.failure_timeout = timeout;
        self
    }

    /// Adds a seed.
    pub fn seed(mut self, addr: SocketAddr, name: impl Into<String>) -> MeshConfig {
        self.seeds.push(Seed::new(addr, name));
        self
    }

    /// Sets the idle timeout and a keep-alive interval of a third of it.
    pub fn idle_timeout(mut self, idle: Duration) -> MeshConfig {
        self.idle_timeout = idle;
        self.keep_alive = idle / 3;
        self
    }
}

/// Default [`MeshConfig::failure_timeout`]: DESIGN 22 asks for a hung node to be declared
/// down within 5 s.
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);

/// A live member of the cluster, as listed by [`Mesh::members`].
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

/// Why [`Mesh::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding the endpoint failed.
    #[error(transparent)]
    Bind(#[from] crate::endpoint::BindError),
    /// A configuration value is out of range.
    #[error("bad mesh configuration: {0}")]
    Config(String),
}

/// Why a [`Mesh::send`] did not deliver; every variant gives the message back.
#[non_exhaustive]
pub enum MeshSendError<M> {
    /// No such local process (remote dead letters are counted on the remote node).
    NoProc(M),
    /// The local process takes another message type.
    WrongType(M),
    /// The message type is not registered with [`Mesh::register`].
    Unregistered(M),
    /// The message could not be serialized.
    Encode(M, String),
    /// No connection to the node could be opened, or it was lost while sending.
    Unreachable(M, NodeId, String),
    /// Only from [`Mesh::try_send_named`]: no room on the lane to the node now, or its
    /// connection is still being opened (opening has started); `send_named` waits instead.
    Full(M),
}

impl<M> MeshSendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            MeshSendError::NoProc(m)
            | MeshSendError::WrongType(m)
            | MeshSendError::Unregistered(m)
            | MeshSendError::Encode(m, _)
            | MeshSendError::Unreachable(m, _, _)
            | MeshSendError::Full(m) => m,
        }
    }
}

impl<M> fmt::Debug for MeshSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<M> fmt::Display for MeshSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshSendError::NoProc(_) => f.write_str("no such process"),
            MeshSendError::WrongType(_) => f.write_str("the process takes another message type"),
            MeshSendError::Unregistered(_) => {
                f.write_str("the message type is not registered with the mesh")
            }
            MeshSendError::Encode(_, e) => write!(f, "cannot serialize the message: {e}"),
            MeshSendError::Unreachable(_, node, e) => write!(f, "node {node} unreachable: {e}"),
            MeshSendError::Full(_) => f.write_str("no room on the way to the node now"),
        }
    }
}

impl<M> std::error::Error for MeshSendError<M> {}

/// Why a [`Mesh::call`] returned no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshCallError {
    /// No answer within the timeout.
    #[error("call timed out")]
    Timeout,
    /// No connection to the callee's node could be opened.
    #[error("node {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The connection to the callee's node was lost while waiting.
    #[error("connection to node {0} lost")]
    NoConnection(NodeId),
    /// The callee's node could not deliver the request.
    #[error(transparent)]
    Remote(#[from] RemoteFailure),
    /// No such local process.
    #[error("no such process")]
    NoProc,
    /// The local process takes another message type.
    #[error("the process takes another message type")]
    WrongType,
    /// The request or answer type is not registered / cannot be (de)serialized.
    #[error("codec: {0}")]
    Codec(String),
    /// This mesh is closed.
    #[error("mesh closed")]
    Closed,
}

/// Why [`RemoteReply::send`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The value could not be serialized.
    #[error("cannot serialize the answer: {0}")]
    Encode(String),
    /// The caller's node is unreachable.
    #[error("caller's node {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The caller stopped waiting (timed out) — local callers only.
    #[error("the caller stopped waiting")]
    Gone,
}

/// An established connection, as reported by [`Mesh::connection_info`].
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

/// A member coming or going, as seen by [`Mesh::node_events`] (SWIM membership, not
/// connections: a member is up without any data connection to it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// `node` joined the cluster (or came back as a new incarnation).
    #[non_exhaustive]
    Up {
        /// The node.
        node: NodeId,
        /// Its listen address.
        addr: SocketAddr,
        /// Its incarnation.
        incarnation: u64,
    },
    /// `node` was declared down (dead, hung, cut off, left, or replaced by a new
    /// incarnation); its data connection is closed and pending calls to it have failed
    /// with [`MeshCallError::NoConnection`].
    #[non_exhaustive]
    Down {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
        /// The incarnation that went down.
        incarnation: u64,
    },
}

/// Counters of a mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// Messages for a dead pid or unknown name on this node.
    pub dead_letters: u64,
    /// Messages with an unknown tag or an undecodable payload.
    pub bad_messages: u64,
    /// Connections closed because a frame was not a valid mesh frame.
    pub protocol_errors: u64,
    /// Messages received from the network and delivered.
    pub delivered: u64,
    /// Incoming connections refused because another one to that node is kept.
    pub duplicates_refused: u64,
    /// SWIM control connections open now (a gauge; see the membership section).
    pub control_connections: u64,
}

#[derive(Default)]
struct Counters {
    dead_letters: AtomicU64,
    bad_messages: AtomicU64,
    protocol_errors: AtomicU64,
    delivered: AtomicU64,
    duplicates_refused: AtomicU64,
}

/// A serializable reply port for [`Mesh::call`]: the caller's node and a reply id.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RemoteReply<R> {
    node: NodeId,
    id: u64,
    #[serde(skip)]
    _answer: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RemoteReply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteReply({}/{})", self.node, self.id)
    }
}

impl<R: Serialize> RemoteReply<R> {
    /// The caller's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Answers the call through `mesh` (the callee's mesh).
    pub async fn send(self, mesh: &Mesh, value: R) -> Result<(), ReplyError> {
        let bytes = encode_payload(&value).map_err(ReplyError::Encode)?;
        mesh.inner
            .answer(self.node, self.id, Ok(Bytes(bytes)))
            .await
    }
}

/// A subscription to [`NodeEvent`]s.
pub struct NodeEvents {
    queue: Arc<EventQueue>,
}

impl fmt::Debug for NodeEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeEvents")
    }
}

#[derive(Default)]
struct EventQueue {
    state: Mutex<(VecDeque<NodeEvent>, Option<Waker>)>,
}

impl EventQueue {
    fn push(&self, event: NodeEvent) {
        let waker = {
            let mut st = self.state.lock();
            st.0.push_back(event);
            st.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl NodeEvents {
    /// The next event (waits).
    pub async fn next(&mut self) -> NodeEvent {
        poll_fn(|cx| {
            let mut st = self.queue.state.lock();
            match st.0.pop_front() {
                Some(e) => Poll::Ready(e),
                None => {
                    st.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<NodeEvent> {
        self.queue.state.lock().0.pop_front()
    }
}

/// A node of the mesh. Cheap to clone. Runs until [`Mesh::close`] or until its runtime
/// shuts down.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.inner.node)
            .field("listen", &self.inner.listen)
            .finish_non_exhaustive()
    }
}

/// Found through `Handle::extension` by [`Mesh::from_handle`].
struct MeshSlot(Weak<Inner>);

struct Inner {
    node: NodeId,
    incarnation: u64,
    listen: SocketAddr,
    name: String,
    handle: Handle,
    endpoint: Endpoint,
    config: MeshConfig,
    registry: Registry,
    /// SWIM. Lock order: `swim`, then `state`, then `names`.
    swim: Mutex<Swim>,
    state: Mutex<State>,
    /// The cluster-wide name table (shared with foca's broadcast handler).
    names: Arc<Mutex<NameTable>>,
    counters: Counters,
    next_id: AtomicU64,
    /// This mesh's reply table as the scheduler's codec (see `router`).
    codec: Arc<dyn cairn_scheduler::remote::ReplyCodec>,
}

struct State {
    /// This node as a member (its incarnation changes when it rejoins).
    me: NodeIdentity,
    /// Live members other than this node, as SWIM reports them.
    members: BTreeMap<NodeId, NodeIdentity>,
    /// Where to dial nodes (members, seeds, peers named in hellos).
    known: HashMap<NodeId, PeerInfo>,
    /// SWIM control connections (to members without a data connection).
    controls: membership::Controls,
    conns: HashMap<NodeId, ConnState>,
    /// Last failed dial per node: (attempt, error).
    failures: HashMap<NodeId, (u64, String)>,
    /// Calls and exported replies waiting for an answer from a node.
    pending: HashMap<u64, (NodeId, Pending)>,
    subscribers: Vec<Weak<EventQueue>>,
    closed: bool,
}

/// Something waiting for a reply frame.
enum Pending {
    /// A [`Mesh::call`] (its [`RemoteReply`]).
    Call(Reply<Result<Bytes, MeshCallError>>),
    /// A scheduler `Reply` that left this node inside a message.
    Export(cairn_scheduler::remote::ReplyCompletion),
}

impl Pending {
    fn finish(self, result: Result<Bytes, MeshCallError>) {
        match self {
            Pending::Call(reply) => {
                let _ = reply.send(result);
            }
            Pending::Export(complete) => complete(match result {
                Ok(bytes) => Ok(bytes.0),
                Err(MeshCallError::Remote(failure)) => Err(router::call_error(failure)),
                Err(MeshCallError::NoConnection(_) | MeshCallError::Closed) => {
                    Err(cairn_scheduler::CallError::NoConnection)
                }
                Err(other) => Err(cairn_scheduler::CallError::BadReply(other.to_string())),
            }),
        }
    }
}

/// What [`Outbox::try_queue`] did.
enum Queue {
    Queued,
    /// The lane is full now (nothing was encoded).
    NoRoom,
    /// The frame could not be built (why: the encoder's error).
    Failed(String),
    /// The lane failed (connection lost).
    Closed,
}

enum ConnState {
    Dialing { attempt: u64, waiters: Vec<Waker> },
    Up(Arc<Link>),
}

/// An established connection to one node.
struct Link {
    id: u64,
    node: NodeId,
    incarnation: u64,
    addr: SocketAddr,
    dialed_by_local: bool,
    conn: Connection,
    outbox: Outbox,
}

/// The lane towards the peer, shared by every sender on this node.
struct Outbox {
    tx: Mutex<FramedSender>,
    waiters: Arc<WakeAll>,
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
    fn new(tx: FramedSender) -> Outbox {
        Outbox {
            tx: Mutex::new(tx),
            waiters: Arc::default(),
        }
    }

    fn poll_send(&self, frame: &Wire, cx: &mut Context<'_>) -> Poll<Result<(), crate::SendError>> {
        let waker = Waker::from(Arc::clone(&self.waiters));
        let mut inner_cx = Context::from_waker(&waker);
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
        let waker = Waker::from(Arc::clone(&self.waiters));
        let mut inner_cx = Context::from_waker(&waker);
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
        let waker = Waker::from(Arc::clone(&self.waiters));
        let mut inner_cx = Context::from_waker(&waker);
        let mut tx = self.tx.lock();
        match tx.poll_ready(&mut inner_cx) {
            Poll::Pending => return Queue::NoRoom,
            Poll::Ready(Err(_)) => return Queue::Closed,
            Poll::Ready(Ok(())) => {}
        }
        let frame = match make() {
            Ok(frame) => frame,
            Err(failure) => return Queue::Failed(failure),
        };
        let queued = match pin!(tx.send(&frame)).poll(&mut inner_cx) {
            Poll::Ready(Ok(())) => Queue::Queued,
            Poll::Ready(Err(_)) => Queue::Closed,
            Poll::Pending => Queue::NoRoom,
        };
        queued
    }

    /// Queues `frame` into an empty, fresh lane (never waits).
    fn send_first(&self, frame: &Wire) -> Result<(), crate::SendError> {
        match self.poll_send(frame, &mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(crate::SendError::Closed),
        }
    }
}

impl State {
    fn new(me: NodeIdentity) -> State {
        State {
            me,
            members: BTreeMap::new(),
            known: HashMap::new(),
            controls: membership::Controls::default(),
            conns: HashMap::new(),
            failures: HashMap::new(),
            pending: HashMap::new(),
            subscribers: Vec::new(),
            closed: false,
        }
    }
}

/// A start incarnation that a restart of the same node outranks: wall-clock nanoseconds.
fn start_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_else(|_| random_u64())
}

/// Whether the name a peer claims in its hello is one the cluster CA signed into its
/// certificate: a member cannot pose as another (names are how nodes dial each other and
/// how clients are told apart). Without a certificate (insecure dev mode) anything goes.
fn claims_certified_name(conn: &Connection, claimed: &str) -> bool {
    match crate::tls::peer_certificate_names(conn.quinn()) {
        None => true,
        Some(names) if names.iter().any(|n| n == claimed) => true,
        Some(names) => {
            tracing::warn!(remote = %conn.remote_address(), %claimed, certified = ?names, "refused a peer whose hello name is not in its certificate");
            false
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Mesh {
    /// Starts a node on `handle`'s runtime: binds the endpoint, accepts connections and
    /// dials the seeds in the background.
    pub fn start(handle: &Handle, config: MeshConfig) -> Result<Mesh, MeshError> {
        if config.failure_timeout < membership::MIN_FAILURE_TIMEOUT {
            return Err(MeshError::Config(format!(
                "failure timeout {:?} is below {:?}",
                config.failure_timeout,
                membership::MIN_FAILURE_TIMEOUT
            )));
        }
        let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|_| MeshError::Config(format!("idle timeout {:?}", config.idle_timeout)))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(config.keep_alive));
        let transport = Arc::new(transport);
        let mut options = EndpointOptions::from_tls(&config.tls)?;
        options.max_frame = config.max_frame;
        options.client.transport_config(Arc::clone(&transport));
        if let Some(server) = options.server.as_mut() {
            server.transport_config(transport);
        }
        let endpoint = Endpoint::bind_with(handle, config.listen, options)?;
        let listen = endpoint
            .local_addr()
            .map_err(crate::endpoint::BindError::Io)?;
        let incarnation = start_incarnation();
        let me = NodeIdentity {
            node: handle.node(),
            name: config.tls.node().name().to_owned(),
            addr: listen,
            region: config.region.clone(),
            incarnation,
        };
        let names = Arc::new(Mutex::new(NameTable::new(handle.node(), incarnation)));
        let swim = Swim::new(
            me.clone(),
            config.failure_timeout,
            NameBroadcasts {
                table: Arc::clone(&names),
            },
            random_u64(),
        );
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            codec: Arc::new(router::MeshCodec {
                inner: weak.clone(),
            }),
            node: handle.node(),
            incarnation,
            listen,
            name: config.tls.node().name().to_owned(),
            handle: handle.clone(),
            endpoint: endpoint.clone(),
            config,
            registry: Registry::default(),
            swim: Mutex::new(swim),
            state: Mutex::new(State::new(me)),
            names,
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        });
        handle.set_extension(Arc::new(MeshSlot(Arc::downgrade(&inner))));
        let router = router::MeshRouter {
            inner: Arc::downgrade(&inner),
        };
        if !handle.set_remote_router(Arc::new(router)) {
            tracing::warn!(
                "a mesh was already started on this runtime; remote pids go to the first one"
            );
        }
        let acceptor = Arc::clone(&inner);
        handle.spawn(move |_ctx: Ctx<()>| async move {
            while let Some(conn) = endpoint.accept().await {
                let inner = Arc::clone(&acceptor);
                acceptor
                    .handle
                    .spawn(move |_ctx: Ctx<()>| async move { inner.serve_incoming(conn).await });
            }
        });
        let sweeper = Arc::clone(&inner);
        handle.spawn(move |_ctx: Ctx<()>| async move { sweeper.sweep_controls().await });
        let syncer = Arc::clone(&inner);
        handle.spawn(move |_ctx: Ctx<()>| async move { syncer.sync_periodically().await });
        for seed in inner.config.seeds.clone() {
            if seed.addr == listen {
                continue;
            }
            let dialer = Arc::clone(&inner);
            handle.spawn(move |_ctx: Ctx<()>| async move { dialer.join_seed(seed).await });
        }
        tracing::info!(node = %inner.node, %listen, "mesh node started");
        Ok(Mesh { inner })
    }

    /// The mesh started on `handle`'s runtime, if it is still running (for callees that
    /// answer a [`RemoteReply`]).
    pub fn from_handle(handle: &Handle) -> Option<Mesh> {
        let slot = handle.extension::<MeshSlot>()?;
        slot.0.upgrade().map(|inner| Mesh { inner })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The address this node accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// The runtime handle.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Every node this node knows of (not only connected ones), sorted by id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self.inner.state.lock().known.values().cloned().collect();
        peers.sort_by_key(|p| p.node);
        peers
    }

    /// Dials `seed`, exchanges hellos and announces this node to it (SWIM), as at start;
    /// returns once the seed is a live member here.
    pub async fn join(&self, seed: Seed) -> Result<(), MeshCallError> {
        let node = self
            .inner
            .dial(seed.addr, &seed.name, None)
            .await
            .map_err(|e| MeshCallError::Unreachable(NodeId::default(), e))?;
        let info = PeerInfo {
            node,
            addr: seed.addr,
            name: seed.name,
        };
        self.inner.announce_until_joined(node, &info).await;
        Ok(())
    }

    /// Live members of the cluster, this node included, sorted by node id.
    pub fn members(&self) -> Vec<Member> {
        let st = self.inner.state.lock();
        let mut members: Vec<Member> = st.members.values().map(|id| id.member()).collect();
        members.push(st.me.member());
        members.sort_by_key(|m| m.node);
        members
    }

    /// Registers `name` cluster-wide for the local process `pid`. Fails if this node
    /// already knows the name held by another process (here or elsewhere). Two
    /// registrations racing on different nodes end with one winner on every node; the
    /// loser exits with `ExitReason::NameConflict(name)` (module doc of `names`). The
    /// name is released when `pid` exits, with [`Mesh::unregister_name`], or when this
    /// node is declared down. The cluster name table is separate from the runtime's
    /// local registry (`Handle::register`).
    pub fn register_name(&self, name: &str, pid: Pid) -> Result<(), NameError> {
        self.inner.register_name(name, pid, true)
    }

    /// Removes `name` cluster-wide if a local process holds it.
    pub fn unregister_name(&self, name: &str) {
        let holder = self.inner.names.lock().whereis(name);
        if let Some(pid) = holder.filter(|p| p.node() == self.inner.node) {
            self.inner.release_name(name, pid);
        }
    }

    /// The process holding the cluster-wide `name`, as this node knows it.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.names.lock().whereis(name)
    }

    /// Test hook simulating a hung node: while frozen, this node's membership neither
    /// answers nor sends SWIM packets and its SWIM timers are held (data connections
    /// and QUIC keep-alives carry on). Thawing hands the held timers to foca; the
    /// cluster has usually declared this node down by then, and it rejoins as a new
    /// incarnation.
    #[doc(hidden)]
    pub fn set_membership_frozen(&self, frozen: bool) {
        self.inner.set_frozen(frozen);
    }

    /// The connection to `node`, if up: which node dialed it and the peer's address.
    pub fn connection_info(&self, node: NodeId) -> Option<ConnectionInfo> {
        match self.inner.state.lock().conns.get(&node) {
            Some(ConnState::Up(link)) => Some(ConnectionInfo {
                dialed_by: if link.dialed_by_local {
                    self.inner.node
                } else {
                    node
                },
                remote: link.conn.remote_address(),
                incarnation: link.incarnation,
            }),
            _ => None,
        }
    }

    /// Whether a connection to `node` is up.
    pub fn is_connected(&self, node: NodeId) -> bool {
        matches!(
            self.inner.state.lock().conns.get(&node),
            Some(ConnState::Up(_))
        )
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        let c = &self.inner.counters;
        MeshStats {
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
            bad_messages: c.bad_messages.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            duplicates_refused: c.duplicates_refused.load(Ordering::Relaxed),
            control_connections: self.inner.state.lock().controls.len() as u64,
        }
    }

    /// Subscribes to node up/down events from now on.
    pub fn node_events(&self) -> NodeEvents {
        let queue = Arc::new(EventQueue::default());
        let mut st = self.inner.state.lock();
        st.subscribers.retain(|s| s.strong_count() > 0);
        st.subscribers.push(Arc::downgrade(&queue));
        NodeEvents { queue }
    }

    /// Registers message type `M` under `tag` (do it on every node that sends or
    /// receives `M`; one tag per type, one type per tag).
    pub fn register<M>(&self, tag: &'static str) -> Result<(), RegisterTypeError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        self.inner.registry.register::<M>(tag)
    }

    /// Opens (or waits for) the connection to `node`.
    pub async fn connect(&self, node: NodeId) -> Result<(), MeshCallError> {
        self.inner
            .link(node)
            .await
            .map(drop)
            .map_err(|e| MeshCallError::Unreachable(node, e))
    }

    /// Sends `msg` to `pid`, on this node or another. Returns once the message is in a
    /// local mailbox or queued on the connection to its node (delivery there is not
    /// confirmed: a dead pid there is a dead letter on that node).
    pub async fn send<M>(&self, pid: Pid, msg: M) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if pid.node() == self.inner.node {
            return self.inner.handle.send(pid, msg).await.map_err(local_error);
        }
        self.inner
            .send_remote(pid.node(), Target::Pid(pid), None, msg)
            .await
    }

    /// Sends `msg` to the process registered as `name` on `node`.
    pub async fn send_named<M>(
        &self,
        node: NodeId,
        name: &str,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if node == self.inner.node {
            return match self.inner.handle.whereis(name) {
                Some(pid) => self.inner.handle.send(pid, msg).await.map_err(local_error),
                None => Err(MeshSendError::NoProc(msg)),
            };
        }
        self.inner
            .send_remote(node, Target::Name(name.to_owned()), None, msg)
            .await
    }

    /// Sends `msg` to the process registered as `name` on `node` without waiting: `Full`
    /// when the lane to `node` has no room or its connection is not open yet (this starts
    /// opening it), as `try_send` to a remote pid does.
    pub fn try_send_named<M>(
        &self,
        node: NodeId,
        name: &str,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        let inner = &self.inner;
        if node == inner.node {
            let Some(pid) = inner.handle.whereis(name) else {
                return Err(MeshSendError::NoProc(msg));
            };
            return inner.handle.try_send(pid, msg).map_err(|e| match e {
                cairn_scheduler::SendError::Full(m) => MeshSendError::Full(m),
                other => local_error(other),
            });
        }
        let Some(tag) = inner.registry.tag_of::<M>() else {
            return Err(MeshSendError::Unregistered(msg));
        };
        let target = Target::Name(name.to_owned());
        match inner.try_queue_message(node, target, tag, || encode_payload(&msg)) {
            UserQueue::Queued => Ok(()),
            UserQueue::Full => Err(MeshSendError::Full(msg)),
            UserQueue::Encode(e) => Err(MeshSendError::Encode(msg, e)),
            UserQueue::NotMember => {
                let why = format!("node {node} is not known to this node");
                Err(MeshSendError::Unreachable(msg, node, why))
            }
            UserQueue::Closed => {
                let why = "connection lost".to_owned();
                Err(MeshSendError::Unreachable(msg, node, why))
            }
        }
    }

    /// Calls `pid`: builds the request around a fresh [`RemoteReply`] and waits at most
    /// `timeout` for the answer (the callee answers with [`RemoteReply::send`]).
    pub async fn call<M, R>(
        &self,
        pid: Pid,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        self.call_target(pid.node(), Target::Pid(pid), make, timeout)
            .await
    }

    /// Calls the process registered as `name` on `node`.
    pub async fn call_named<M, R>(
        &self,
        node: NodeId,
        name: &str,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        self.call_target(node, Target::Name(name.to_owned()), make, timeout)
            .await
    }

    async fn call_target<M, R>(
        &self,
        node: NodeId,
        target: Target,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = Reply::pair();
        {
            let mut st = inner.state.lock();
            if st.closed {
                return Err(MeshCallError::Closed);
            }
            st.pending.insert(id, (node, Pending::Call(reply)));
        }
        let _cleanup = PendingGuard { inner, id };
        let msg = make(RemoteReply {
            node: inner.node,
            id,
            _answer: PhantomData,
        });
        let sent = if node == inner.node {
            let pid = match target {
                Target::Pid(pid) => Some(pid),
                Target::Name(name) => inner.handle.whereis(&name),
            };
            match pid {
                None => Err(MeshCallError::NoProc),
                Some(pid) => {
                    let send = inner.handle.send(pid, msg);
                    match inner.handle.timeout(timeout, send).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(match local_error(e) {
                            MeshSendError::WrongType(_) => MeshCallError::WrongType,
                            _ => MeshCallError::NoProc,
                        }),
                        Err(_) => Err(MeshCallError::Timeout),
                    }
                }
            }
        } else {
            let send = inner.send_remote(node, target, Some(id), msg);
            match inner.handle.timeout(timeout, send).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(match e {
                    MeshSendError::Unreachable(_, node, why) => {
                        MeshCallError::Unreachable(node, why)
                    }
                    other => MeshCallError::Codec(other.to_string()),
                }),
                Err(_) => Err(MeshCallError::Timeout),
            }
        };
        sent?;
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = match inner.handle.timeout(left, rx).await {
            Err(_) => return Err(MeshCallError::Timeout),
            Ok(Err(_)) => return Err(MeshCallError::Closed),
            Ok(Ok(result)) => result?,
        };
        decode_payload(&bytes.0).map_err(MeshCallError::Codec)
    }

    /// Leaves the cluster and closes this node's connections and endpoint at once;
    /// pending calls fail with [`MeshCallError::Closed`]. Connected peers see the
    /// connection close with [`wire::CLOSE_LEAVING`] and declare this node down at once;
    /// the others learn it by gossip.
    pub fn close(&self) {
        self.inner.with_swim(|swim, fx| {
            swim.leaving = true;
            if let Err(error) = swim.foca.leave_cluster(fx) {
                tracing::debug!(%error, "SWIM leave");
            }
        });
        self.inner.swim.lock().closed = true;
        let (links, pending) = {
            let mut st = self.inner.state.lock();
            st.closed = true;
            for control in st.controls.drain() {
                control.conn.close(wire::CLOSE_LEAVING, b"mesh closed");
            }
            let links: Vec<_> = st
                .conns
                .drain()
                .filter_map(|(_, c)| match c {
                    ConnState::Up(link) => Some(link),
                    ConnState::Dialing { .. } => None,
                })
                .collect();
            (links, std::mem::take(&mut st.pending))
        };
        for link in links {
            link.conn.close(wire::CLOSE_LEAVING, b"mesh closed");
        }
        for (_, (_, pending)) in pending {
            pending.finish(Err(MeshCallError::Closed));
        }
        self.inner.endpoint.close();
    }
}

/// Removes a call's pending entry however the call ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.lock().pending.remove(&self.id);
    }
}

fn local_error<M>(e: cairn_scheduler::SendError<M>) -> MeshSendError<M> {
    match e {
        cairn_scheduler::SendError::WrongType(m) => MeshSendError::WrongType(m),
        other => MeshSendError::NoProc(other.into_inner()),
    }
}

/// How a dial ended for the dialer.
enum DialOutcome {
    Up(Arc<Link>),
    /// The peer keeps another connection (its own dial): wait for it.
    Duplicate(NodeId),
}

impl Inner {
    fn my_hello(&self, st: &State) -> Hello {
        Hello {
            node: self.node,
            incarnation: self.incarnation,
            listen: self.listen,
            name: self.name.clone(),
            peers: st.known.values().cloned().collect(),
        }
    }

    fn learn(&self, st: &mut State, hello: &Hello) {
        st.known.insert(
            hello.node,
            PeerInfo {
                node: hello.node,
                addr: hello.listen,
                name: hello.name.clone(),
            },
        );
        for p in &hello.peers {
            if p.node != self.node {
                st.known.entry(p.node).or_insert_with(|| p.clone());
            }
        }
    }

    fn emit(&self, st: &mut State, event: NodeEvent) {
        st.subscribers.retain(|s| match s.upgrade() {
            Some(q) => {
                q.push(event.clone());
                true
            }
            None => false,
        });
    }

    /// Dials a seed until it answers once (backoff 100 ms doubling to 5 s), or the mesh
    /// closes: seeds may start after this node. Then announces this node to it (SWIM
    /// join), until the seed is a live member here.
    pub(super) async fn join_seed(self: Arc<Self>, seed: Seed) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dial(seed.addr, &seed.name, None).await {
                Ok(node) => {
                    let info = PeerInfo {
                        node,
                        addr: seed.addr,
                        name: seed.name.clone(),
                    };
                    self.announce_until_joined(node, &info).await;
                    return;
                }
                Err(error) => {
                    if self.state.lock().closed {
                        return;
                    }
                    tracing::warn!(seed = %seed.addr, %error, retry_in = ?backoff, "could not join through a seed");
                }
            }
            self.handle.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The link to `node`, dialing it if needed.
    async fn link(self: &Arc<Self>, node: NodeId) -> Result<Arc<Link>, String> {
        // The common case, an open connection, needs no connect timeout (arming one cost
        // about 400 instructions per message in callgrind).
        if let Some(link) = self.up_link(node) {
            return Ok(link);
        }
        let mut my_attempt: Option<u64> = None;
        let wait = poll_fn(|cx| {
            let mut st = self.state.lock();
            if st.closed {
                return Poll::Ready(Err("mesh closed".to_owned()));
            }
            match st.conns.get_mut(&node) {
                Some(ConnState::Up(link)) => return Poll::Ready(Ok(Arc::clone(link))),
                Some(ConnState::Dialing { attempt, waiters }) => {
                    my_attempt.get_or_insert(*attempt);
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                None => {}
            }
            if let Some(mine) = my_attempt {
                if let Some((attempt, error)) = st.failures.get(&node) {
                    if *attempt >= mine {
                        return Poll::Ready(Err(error.clone()));
                    }
                }
            }
            let Some(info) = st.known.get(&node).cloned() else {
                return Poll::Ready(Err(format!("node {node} is not known to this node")));
            };
            let attempt = self.next_id.fetch_add(1, Ordering::Relaxed);
            my_attempt = Some(attempt);
            st.conns.insert(
                node,
                ConnState::Dialing {
                    attempt,
                    waiters: vec![cx.waker().clone()],
                },
            );
            drop(st);
            let inner = Arc::clone(self);
            self.handle.spawn(move |_ctx: Ctx<()>| async move {
                let result = inner.dial(info.addr, &info.name, Some(node)).await;
                let still_dialing = |inner: &Inner| {
                    matches!(
                        inner.state.lock().conns.get(&node),
                        Some(ConnState::Dialing { attempt: a, .. }) if *a == attempt
                    )
                };
                if result.is_ok() && still_dialing(&inner) {
                    // The peer kept its own connection (it is dialing us, or still holds
                    // one we lost): give it the connect timeout to show up.
                    let deadline = Instant::now() + inner.config.connect_timeout;
                    while still_dialing(&inner) && Instant::now() < deadline {
                        inner.handle.sleep(Duration::from_millis(10)).await;
                    }
                }
                if !still_dialing(&inner) {
                    return;
                }
                let error = match result {
                    Ok(_) => format!("node {node} did not come up (it kept another connection, or has another id)"),
                    Err(e) => e,
                };
                tracing::warn!(%node, addr = %info.addr, %error, "could not connect to a node");
                let waiters = {
                    let mut st = inner.state.lock();
                    st.failures.insert(node, (attempt, error));
                    match st.conns.get(&node) {
                        Some(ConnState::Dialing { attempt: a, .. }) if *a == attempt => {
                            match st.conns.remove(&node) {
                                Some(ConnState::Dialing { waiters, .. }) => waiters,
                                _ => Vec::new(),
                            }
                        }
                        _ => Vec::new(),
                    }
                };
                for w in waiters {
                    w.wake();
                }
            });
            Poll::Pending
        });
        match self.handle.timeout(self.config.connect_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err("timed out connecting".to_owned()),
        }
    }

    /// Dials `addr`, exchanges hellos and installs the link. `expect`: the node we meant
    /// to reach (`None` for seeds). `Ok(node)` also when the peer kept its own connection.
    async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        name: &str,
        expect: Option<NodeId>,
    ) -> Result<NodeId, String> {
        let timeout = self.config.connect_timeout;
        match self
            .handle
            .timeout(timeout, self.dial_inner(addr, name))
            .await
        {
            Err(_) => Err("timed out connecting".to_owned()),
            Ok(Err(e)) => Err(e),
            Ok(Ok(DialOutcome::Duplicate(node))) => {
                tracing::debug!(%node, "peer kept its own connection");
                Ok(node)
            }
            Ok(Ok(DialOutcome::Up(link))) => {
                if let Some(expected) = expect {
                    if expected != link.node {
                        tracing::warn!(%expected, found = %link.node, %addr, "dialed node has another id");
                    }
                }
                Ok(link.node)
            }
        }
    }

    async fn dial_inner(
        self: &Arc<Self>,
        addr: SocketAddr,
        name: &str,
    ) -> Result<DialOutcome, String> {
        let conn = self
            .endpoint
            .connect(addr, name)
            .await
            .map_err(|e| e.to_string())?;
        let tx = conn
            .open_lane(wire::MESH_LANE)
            .await
            .map_err(|e| e.to_string())?;
        let outbox = Outbox::new(tx);
        let hello = self.my_hello(&self.state.lock());
        outbox
            .send_first(&Wire::Hello(hello))
            .map_err(|e| e.to_string())?;
        let first = async {
            let mut rx = conn.accept_lane().await?;
            let frame = rx.recv::<Wire>().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((rx, frame))
        };
        let (rx, frame) = match first.await {
            Ok(v) => v,
            Err(e) => {
                if let Some(quinn::ConnectionError::ApplicationClosed(close)) =
                    conn.quinn().close_reason()
                {
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_DUPLICATE) {
                        let node = std::str::from_utf8(&close.reason)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .map(NodeId)
                            .unwrap_or_default();
                        return Ok(DialOutcome::Duplicate(node));
                    }
                }
                return Err(e.to_string());
            }
        };
        let Some(Wire::HelloAck(peer)) = frame else {
            conn.close(CLOSE_PROTOCOL, b"expected a hello ack");
            return Err("peer did not answer with a hello".to_owned());
        };
        if !claims_certified_name(&conn, &peer.name) {
            conn.close(CLOSE_PROTOCOL, b"hello name not in certificate");
            return Err(format!(
                "peer claims name {:?} its certificate does not carry",
                peer.name
            ));
        }
        if peer.node == self.node {
            conn.close(CLOSE_NORMAL, b"dialed myself");
            return Err("dialed this node itself".to_owned());
        }
        let link = Arc::new(Link {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node: peer.node,
            incarnation: peer.incarnation,
            addr: peer.listen,
            dialed_by_local: true,
            conn,
            outbox,
        });
        {
            let mut st = self.state.lock();
            self.learn(&mut st, &peer);
            // The acceptor decided this connection is the one kept: install it.
            self.install(&mut st, Arc::clone(&link));
        }
        self.run_link(&link, rx);
        Ok(DialOutcome::Up(link))
    }

    /// Takes an incoming connection: hello, keep-or-refuse, hello ack.
    async fn serve_incoming(self: Arc<Self>, conn: Connection) {
        let remote = conn.remote_address();
        let first = async {
            let mut rx = conn.accept_lane().await?;
            let frame = rx.recv::<Wire>().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((rx, frame))
        };
        let (rx, hello) = match self
            .handle
            .timeout(self.config.connect_timeout, first)
            .await
        {
            Ok(Ok((rx, Some(Wire::Hello(hello))))) => (rx, hello),
            Ok(Ok(_)) => {
                tracing::warn!(%remote, "mesh peer did not start with a hello; closing");
                self.counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                conn.close(CLOSE_PROTOCOL, b"expected a hello");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%remote, %error, "mesh peer failed before its hello");
                return;
            }
            Err(_) => {
                tracing::warn!(%remote, "mesh peer sent no hello in time; closing");
                conn.close(CLOSE_PROTOCOL, b"no hello");
                return;
            }
        };
        if hello.node == self.node {
            conn.close(CLOSE_NORMAL, b"same node id");
            tracing::warn!(%remote, node = %hello.node, "refused a peer with this node's own id");
            return;
        }
        if !claims_certified_name(&conn, &hello.name) {
            self.counters
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            conn.close(CLOSE_PROTOCOL, b"hello name not in certificate");
            return;
        }
        if rx.lane() == wire::CONTROL_LANE {
            // A SWIM-only connection (see membership): no lanes, no connection rules.
            self.accept_control(conn, hello.node);
            return;
        }
        let tx = match conn.open_lane(wire::MESH_LANE).await {
            Ok(tx) => tx,
            Err(error) => {
                tracing::warn!(%remote, %error, "could not open the mesh lane");
                return;
            }
        };
        let outbox = Outbox::new(tx);
        let link = {
            let mut st = self.state.lock();
            self.learn(&mut st, &hello);
            if st.closed {
                conn.close(CLOSE_NORMAL, b"mesh closed");
                return;
            }
            let keep = match st.conns.get(&hello.node) {
                None => true,
                // Both dialing: the connection dialed by the lower node id wins.
                Some(ConnState::Dialing { .. }) => hello.node < self.node,
                Some(ConnState::Up(existing)) => {
                    existing.incarnation != hello.incarnation
                        || !(existing.dialed_by_local && self.node < hello.node)
                }
            };
            if !keep {
                drop(st);
                self.counters
                    .duplicates_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(local = %self.node, peer = %hello.node, "refusing a duplicate connection (both dialed; the lower node's dial is kept)");
                conn.close(CLOSE_DUPLICATE, self.node.0.to_string().as_bytes());
                return;
            }
            let ack = Wire::HelloAck(self.my_hello(&st));
            if let Err(error) = outbox.send_first(&ack) {
                drop(st);
                tracing::warn!(%remote, %error, "could not send the hello ack");
                return;
            }
            let link = Arc::new(Link {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                node: hello.node,
                incarnation: hello.incarnation,
                addr: hello.listen,
                dialed_by_local: false,
                conn,
                outbox,
            });
            self.install(&mut st, Arc::clone(&link));
            link
        };
        self.run_link(&link, rx);
    }

    /// Makes `link` the connection to its node, replacing (closing) any other.
    fn install(&self, st: &mut State, link: Arc<Link>) {
        let node = link.node;
        let previous = st.conns.insert(node, ConnState::Up(Arc::clone(&link)));
        st.failures.remove(&node);
        match previous {
            Some(ConnState::Dialing { waiters, .. }) => {
                for w in waiters {
                    w.wake();
                }
            }
            Some(ConnState::Up(old)) => {
                old.conn
                    .close(CLOSE_REPLACED, b"replaced by a newer connection");
                if old.incarnation != link.incarnation {
                    self.node_lost(st, node, "replaced by a new incarnation".to_owned());
                }
            }
            None => {}
        }
        // `NodeEvent::Up` comes from membership (SWIM), not from connections.
        tracing::info!(local = %self.node, peer = %node, addr = %link.addr, "mesh connection up");
    }

    /// Fails pending calls to `node` (its connection is lost or it was declared down).
    fn node_lost(&self, st: &mut State, node: NodeId, reason: String) {
        let ids: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, pending)) = st.pending.remove(&id) {
                pending.finish(Err(MeshCallError::NoConnection(node)));
            }
        }
        tracing::info!(local = %self.node, peer = %node, %reason, "mesh connection lost");
    }

    /// Spawns the reader and the close watcher of an installed link.
    fn run_link(self: &Arc<Self>, link: &Arc<Link>, rx: FramedReceiver) {
        let inner = Arc::clone(self);
        let reader_link = Arc::clone(link);
        self.handle
            .spawn(move |_ctx: Ctx<()>| async move { inner.read_link(&reader_link, rx).await });
        // SWIM packets arrive as datagrams on any mesh connection (see membership).
        let inner = Arc::clone(self);
        let datagrams = Arc::clone(link);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            while let Ok(packet) = datagrams.conn.quinn().read_datagram().await {
                inner.swim_packet(&packet);
            }
        });
        let inner = Arc::clone(self);
        let link = Arc::clone(link);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let reason = link.conn.closed().await;
            let leaving = matches!(
                &reason,
                quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == quinn::VarInt::from_u32(wire::CLOSE_LEAVING)
            );
            if leaving {
                tracing::info!(peer = %link.node, "peer left the cluster");
                inner.peer_left(link.node);
            }
            let mut st = inner.state.lock();
            let current =
                matches!(st.conns.get(&link.node), Some(ConnState::Up(l)) if l.id == link.id);
            if !current {
                return;
            }
            st.conns.remove(&link.node);
            // The peer replaced this connection with a newer one from the same
            // incarnation (a re-dial whose ack is on its way): not a node loss.
            let replaced = matches!(
                &reason,
                quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_REPLACED)
            );
            if replaced {
                tracing::debug!(peer = %link.node, "mesh connection replaced by the peer");
            } else {
                inner.node_lost(&mut st, link.node, reason.to_string());
            }
        });
    }

    async fn read_link(self: &Arc<Self>, link: &Link, mut rx: FramedReceiver) {
        loop {
            match rx.recv::<Wire>().await {
                Ok(Some(frame)) => self.handle_frame(link, frame).await,
                Ok(None) => return,
                Err(RecvError::Frame(error)) => {
                    // The receiver has logged it and closed the connection.
                    self.counters
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %link.node, %error, "mesh connection closed: bad frame");
                    return;
                }
                Err(error) => {
                    tracing::debug!(peer = %link.node, %error, "mesh lane ended");
                    return;
                }
            }
        }
    }

    async fn handle_frame(self: &Arc<Self>, link: &Link, frame: Wire) {
        match frame {
            Wire::Send {
                from,
                to,
                tag,
                call,
                payload,
            } => {
                let result = self.deliver(link.node, &to, &tag, &payload.0).await;
                match &result {
                    Ok(()) => {
                        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RemoteFailure::NoProc) => {
                        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %link.node, ?from, ?to, %tag, "dead letter: no such process");
                    }
                    Err(failure) => {
                        self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %link.node, ?from, ?to, %tag, %failure, "undeliverable message");
                    }
                }
                if let (Some(id), Err(failure)) = (call, result) {
                    let answer = Wire::Reply {
                        id,
                        result: Err(failure),
                    };
                    if let Err(error) = link.outbox.send(&answer).await {
                        tracing::debug!(peer = %link.node, %error, "could not report a failed call");
                    }
                }
            }
            Wire::Reply { id, result } => self.complete(id, result),
            signal @ (Wire::Exit { .. }
            | Wire::Link { .. }
            | Wire::Unlink { .. }
            | Wire::Monitor { .. }
            | Wire::Demonitor { .. }
            | Wire::Down { .. }) => self.apply_signal(link.node, signal),
            Wire::SyncRequest { names } => {
                let answer = Wire::Sync {
                    members: self.membership_snapshot(),
                    names: self.names.lock().all_claims(),
                };
                if let Err(error) = link.outbox.send(&answer).await {
                    tracing::debug!(peer = %link.node, %error, "could not answer a sync request");
                }
                self.apply_name_sync(names);
            }
            Wire::Sync { members, names } => {
                self.apply_membership_snapshot(link.node, &members.0);
                self.apply_name_sync(names);
            }
            Wire::Hello(_) | Wire::HelloAck(_) => {
                tracing::warn!(peer = %link.node, "unexpected hello on an established connection; ignored");
                self.counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn deliver(
        &self,
        peer: NodeId,
        to: &Target,
        tag: &str,
        payload: &[u8],
    ) -> Result<(), RemoteFailure> {
        let Some(deliverer) = self.registry.deliverer(tag) else {
            return Err(RemoteFailure::UnknownTag(tag.to_owned()));
        };
        let pid = match to {
            Target::Pid(pid) if pid.node() == self.node => *pid,
            Target::Pid(_) => return Err(RemoteFailure::NoProc),
            Target::Name(name) => self.handle.whereis(name).ok_or(RemoteFailure::NoProc)?,
        };
        let delivery =
            router::with_codec(self, peer, || deliverer.deliver(&self.handle, pid, payload));
        match delivery {
            Delivery::Done => Ok(()),
            Delivery::Failed(f) => Err(f),
            // A full mailbox: wait here, holding up the lane, so order is kept.
            Delivery::Wait(fut) => fut.await,
        }
    }

    fn complete(&self, id: u64, result: Result<Bytes, RemoteFailure>) {
        let entry = self.state.lock().pending.remove(&id);
        match entry {
            Some((_, pending)) => pending.finish(result.map_err(MeshCallError::Remote)),
            None => tracing::debug!(id, "answer to a call nobody waits for (timed out?)"),
        }
    }

    async fn answer(
        self: &Arc<Self>,
        node: NodeId,
        id: u64,
        result: Result<Bytes, RemoteFailure>,
    ) -> Result<(), ReplyError> {
        if node == self.node {
            let entry = self.state.lock().pending.remove(&id);
            return match entry {
                Some((_, pending)) => {
                    pending.finish(result.map_err(MeshCallError::Remote));
                    Ok(())
                }
                None => Err(ReplyError::Gone),
            };
        }
        let link = self
            .link(node)
            .await
            .map_err(|e| ReplyError::Unreachable(node, e))?;
        link.outbox
            .send(&Wire::Reply { id, result })
            .await
            .map_err(|e| ReplyError::Unreachable(node, e.to_string()))
    }

    async fn send_remote<M>(
        self: &Arc<Self>,
        node: NodeId,
        to: Target,
        call: Option<u64>,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        let Some(tag) = self.registry.tag_of::<M>() else {
            return Err(MeshSendError::Unregistered(msg));
        };
        // Under the codec, so a `Reply` inside the message is exported (as the router's
        // sends do), e.g. in a request to a process known only by its name there.
        let payload = match router::with_codec(self, node, || encode_payload(&msg)) {
            Ok(p) => p,
            Err(e) => return Err(MeshSendError::Encode(msg, e)),
        };
        let link = match self.link(node).await {
            Ok(link) => link,
            Err(e) => return Err(MeshSendError::Unreachable(msg, node, e)),
        };
        let frame = Wire::Send {
            from: None,
            to,
            tag: tag.to_owned(),
            call,
            payload: Bytes(payload),
        };
        match link.outbox.send(&frame).await {
            Ok(()) => Ok(()),
            Err(e) => Err(MeshSendError::Unreachable(msg, node, e.to_string())),
        }
    }
}

/// Membership and cluster names as the scheduler's router sees them.
impl Inner {
    /// A live member, or a node with an open data connection (a joiner can be connected
    /// a moment before SWIM reports it up; a node declared down has its connection closed).
    fn is_member(&self, node: NodeId) -> bool {
        let st = self.state.lock();
        st.members.contains_key(&node) || matches!(st.conns.get(&node), Some(ConnState::Up(_)))
    }

    fn cluster_whereis(&self, name: &str) -> Option<Pid> {
        self.names.lock().whereis(name)
    }

    /// A local `spawn_named`/`register` made `name` cluster-wide. The scheduler checked
    /// the cluster view first; a claim that arrived since makes this one lose the race.
    fn cluster_name_registered(self: &Arc<Self>, name: &str, pid: Pid) {
        match self.register_name(name, pid, false) {
            Ok(()) => {}
            Err(NameError::Taken { holder, .. }) => {
                tracing::warn!(%name, %pid, %holder, "cluster-wide name taken meanwhile; the new holder exits");
                self.handle.exit(
                    pid,
                    cairn_scheduler::ExitReason::NameConflict(name.to_owned()),
                );
            }
            Err(error) => tracing::warn!(%name, %pid, %error, "name not registered cluster-wide"),
        }
    }

    fn cluster_name_released(self: &Arc<Self>, name: &str, pid: Pid) {
        self.release_name(name, pid);
    }
}
