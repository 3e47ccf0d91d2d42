//! The mesh: nodes joined over QUIC, with SWIM membership, cluster-wide names and
//! location-transparent messages, links and monitors between their processes.
//!
//! A [`Mesh`] runs on one Cairn runtime and installs itself as the scheduler's remote
//! router: from then on a pid (or a [`Reply`](cairn_scheduler::Reply)) of another node
//! behaves like a local one — `send`, `try_send`, `call`, links, monitors, exit signals.
//! A message to another node is serialized with rmp-serde, travels on the connection to
//! that node and is delivered into the target's typed mailbox there. Measurements
//! (cluster sizes, detection times, the path to 1,000 nodes) are in `net/MESH.md`.
//!
//! # Message types travel by tag
//!
//! The receiving node sees bytes only, so every message type that crosses nodes is
//! declared under a tag on every node that sends or receives it:
//! `mesh.declare::<Msg>("app.Msg")`. A frame carries (to pid or name, tag, payload); the
//! receiver decodes the payload as the type declared under the tag.
//!
//! # Protocol, by module
//!
//! - `dial` / `conns`: one data connection per pair of nodes, opened on demand; a hello
//!   exchange, and one rule for simultaneous dials and restarts (`conns::on_hello`).
//! - `inbound`: what arrives on a connection (messages, replies, signals, syncs).
//! - `router`: the scheduler's [`RemoteRouter`](cairn_scheduler::remote::RemoteRouter) —
//!   what leaves: messages, signals, exported replies.
//! - `replies`: the calls this node waits for; `events`: [`NodeEvent`] subscribers.
//! - `membership` / `swim` / `controls`: SWIM (foca) over QUIC datagrams; `screen`: what
//!   foca is allowed to hear.
//! - `names`: the replicated cluster-wide name table.
//! - `revoke` / `rotate`: the revocation list, and swapping this node's certificate while
//!   it runs ([`Mesh::reload_tls`]).
//! - `wire`: the frames; `registry`: tags ⇄ types.
//! - `advertise`: the address peers are told to dial; `seeds`: seeds by address or DNS
//!   name; `gateway`: dial-only clients.
//!
//! # Invariants
//!
//! - **Messages from one process to another arrive in the order sent.** Each direction
//!   of a connection is one lane (one QUIC stream) carrying every message, reply and
//!   signal from this node to that one, in the order queued; a sender's `send` returns
//!   once its frame is queued; one reader per connection delivers frames one by one and
//!   waits on a full mailbox. So every sender→receiver pair keeps its order and mailboxes
//!   stay bounded end to end. The cost: one full mailbox stalls all traffic from that node
//!   (head-of-line blocking), and a lost packet stalls the lane until it is retransmitted.
//! - **Nothing waits forever on a lost node.** When a data connection is lost or its node
//!   is declared down, calls waiting for answers from it fail with `NoConnection`, and
//!   local links and monitors towards its processes fire `NoConnection` (Erlang's
//!   `noconnection`). Whether the *node* is down is membership's call; QUIC's idle
//!   timeout ([`MeshConfig::idle_timeout`]) closes silent connections.
//! - **A member speaks for itself only.** A hello's name must be in the peer's
//!   certificate; signals about another node's processes are ignored; every SWIM packet
//!   and membership sync passes the membership screen (`screen`) first: its sender must
//!   be the connection's peer, another node's word that X is down only makes X a suspect
//!   (X refutes; this node's own timer decides), and syncs are taken only when asked for.
//!   A name op about X's processes is taken only from X; relayed by another member it
//!   waits for X's confirmation (`names`).
//! - **Bounded and never panicking on bad input** (see `inbound`).
//! - **One owner per piece of state.** Each table below is owned by one module and
//!   changed only through its methods; locks are taken in the order `swim`, `members`,
//!   `conns`, `controls`, `replies`, `names`, `events` (never the other way); the
//!   revocation list, the certificate serial and the connections waiting for their hello
//!   (`limits`) are leaf locks.

pub mod advertise;
mod authz;
mod config;
mod conns;
mod controls;
mod dial;
mod error;
mod events;
#[cfg(feature = "testing")]
pub mod fuzzing;
mod gateway;
mod inbound;
mod limits;
mod membership;
mod names;
mod refute;
mod registry;
mod replies;
mod revoke;
mod rotate;
mod router;
mod screen;
mod seeds;
mod stats;
mod swim;
#[cfg(feature = "testing")]
pub mod wire;
#[cfg(not(feature = "testing"))]
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use cairn_scheduler::{Ctx, Handle, NodeId, Pid};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::endpoint::{Endpoint, EndpointOptions};

pub use advertise::{AdvertiseError, AdvertiseSource};
pub use authz::client_may_reach;
pub use config::{
    MeshConfig, Resolver, Seed, SeedAddr, SeedAddrError, SystemResolver, DEFAULT_FAILURE_TIMEOUT,
};
pub use conns::ConnectionInfo;
pub use error::{DialError, MeshError};
pub use events::{NodeEvent, NodeEvents};
/// A SWIM member state, for [`Mesh::forge_swim`] (`testing` feature).
#[cfg(feature = "testing")]
pub use foca::State as SwimState;
pub use membership::Member;
pub use names::{NameError, LAMPORT_WINDOW, MAX_NAMES_PER_NODE, MAX_NAME_LEN};
pub use registry::DeclareError;
pub use revoke::{read_revocation_list, RevocationError, MAX_REVOKED};
pub use router::decoding_peer;
pub use stats::{LinkStats, MemberStates, MeshStats};
pub use wire::PeerInfo;

use conns::ConnTable;
use controls::Controls;
use events::Subscribers;
use membership::Members;
use names::{NameBroadcasts, NameTable};
use registry::Registry;
use replies::Replies;
use stats::Counters;
use swim::{NodeIdentity, Swim};

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

/// A mesh's state. The fixed part (identity, configuration, runtime) is read by every
/// module; each lock is owned by one module (see the module doc for the lock order).
struct Inner {
    node: NodeId,
    incarnation: u64,
    /// The bound address.
    listen: SocketAddr,
    /// What peers are told to dial (`advertise`).
    advertise: SocketAddr,
    advertise_source: Option<AdvertiseSource>,
    name: String,
    handle: Handle,
    endpoint: Endpoint,
    config: MeshConfig,
    registry: Registry,
    /// foca and its switches (`membership`).
    swim: Mutex<Swim>,
    /// This node and the live members (`membership`).
    members: Mutex<Members>,
    /// Data connections and where to dial nodes (`conns`, `dial`).
    conns: Mutex<ConnTable>,
    /// SWIM control connections (`controls`).
    controls: Mutex<Controls>,
    /// Calls waiting for answers from other nodes (`replies`).
    replies: Replies,
    /// The cluster-wide name table (`names`; shared with foca's broadcast handler).
    names: Arc<Mutex<NameTable>>,
    /// Node event subscribers (`events`).
    events: Subscribers,
    /// A dial-only client's gateway (`gateway`).
    gateway: gateway::Gateway,
    counters: Counters,
    /// Incoming connections waiting for their hello (`limits`; a leaf lock).
    pending_hellos: limits::PendingHellos,
    /// Revoked certificate serials (`revoke`; a leaf lock).
    revoked: parking_lot::RwLock<std::collections::HashSet<crate::tls::Serial>>,
    /// The serial of the certificate new connections present (`rotate`; a leaf lock).
    serial: Mutex<Option<crate::tls::Serial>>,
    /// Set once by [`Mesh::close`]; each table also refuses additions once closed.
    closed: AtomicBool,
    next_id: AtomicU64,
    /// This mesh's reply table as the scheduler's codec (see `router`).
    codec: Arc<dyn cairn_scheduler::remote::ReplyCodec>,
    /// What this mesh may do to local processes for other nodes (`None` only while
    /// [`Mesh::start`] finds another mesh on the runtime, and then fails).
    inbound: Option<cairn_scheduler::remote::Inbound>,
}

impl Inner {
    /// A fresh id (connections, dial attempts, control connections, reply ids).
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What other nodes do to local processes goes through here.
    fn inbound(&self) -> Option<&cairn_scheduler::remote::Inbound> {
        self.inbound.as_ref()
    }
}

/// A start incarnation that a restart of the same node outranks: wall-clock nanoseconds.
fn start_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_else(|_| random_u64())
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
    /// dials the seeds in the background. A runtime has one mesh: a second `start` on it
    /// fails with [`MeshError::AlreadyStarted`]. The runtime's node id must be
    /// [`NodeId::of_name`] of the certificate's name (else [`MeshError::Config`]).
    pub fn start(handle: &Handle, config: MeshConfig) -> Result<Mesh, MeshError> {
        let name = config.tls.node().name();
        if handle.node() != NodeId::of_name(name) {
            // Peers derive a node's id from the name in its certificate and refuse any
            // other: fail here, clearly, rather than be refused by every peer.
            return Err(MeshError::Config(format!(
                "the runtime's node id {} is not NodeId::of_name({name:?}) = {}",
                handle.node(),
                NodeId::of_name(name)
            )));
        }
        if let Some(certified) = config.tls.node().identity().and_then(|c| c.region) {
            if config.region.as_deref() != Some(certified.as_str()) {
                // Peers refuse any other region from this certificate.
                return Err(MeshError::Config(format!(
                    "the certificate of {name:?} is for region {certified:?}, but the node was given region {:?}",
                    config.region
                )));
            }
        }
        if config.failure_timeout < swim::MIN_FAILURE_TIMEOUT {
            return Err(MeshError::Config(format!(
                "failure timeout {:?} is below {:?}",
                config.failure_timeout,
                swim::MIN_FAILURE_TIMEOUT
            )));
        }
        let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|_| MeshError::Config(format!("idle timeout {:?}", config.idle_timeout)))?;
        let transport = Arc::new(limits::transport(idle, config.keep_alive));
        let mut options = EndpointOptions::from_tls(&config.tls)?;
        options.max_frame = config.max_frame;
        if config.dial_only {
            // Takes no connections.
            options.server = None;
        }
        options.client.transport_config(Arc::clone(&transport));
        if let Some(server) = options.server.as_mut() {
            server.transport_config(transport);
        }
        let endpoint = Endpoint::bind_with(handle, config.listen, options)?;
        let listen = endpoint
            .local_addr()
            .map_err(crate::endpoint::BindError::Io)?;
        let (advertise, advertise_source) = if config.dial_only {
            (advertise::nowhere(), None)
        } else {
            match choose_advertise(listen, &config) {
                Ok((addr, source)) => (addr, Some(source)),
                Err(error) => {
                    endpoint.close();
                    return Err(error);
                }
            }
        };
        let revoked = match &config.revoked {
            Some(path) => match revoke::read_revocation_list(path) {
                Ok(serials) => serials,
                Err(error) => {
                    endpoint.close();
                    return Err(MeshError::Config(error.to_string()));
                }
            },
            None => Default::default(),
        };
        let incarnation = start_incarnation();
        let serial = config.tls.node().identity().map(|c| c.serial);
        let me = NodeIdentity {
            node: handle.node(),
            name: config.tls.node().name().to_owned(),
            addr: advertise,
            region: config.region.clone(),
            incarnation,
            epoch: 0,
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
            // The scheduler hands remote pids to this mesh from now on.
            inbound: cairn_scheduler::remote::install(
                handle,
                Arc::new(router::MeshRouter {
                    inner: weak.clone(),
                }),
            ),
            node: handle.node(),
            incarnation,
            listen,
            advertise,
            advertise_source,
            name: config.tls.node().name().to_owned(),
            handle: handle.clone(),
            endpoint: endpoint.clone(),
            config,
            registry: Registry::default(),
            swim: Mutex::new(swim),
            members: Mutex::new(Members::new(me)),
            conns: Mutex::new(ConnTable::new(handle.node())),
            controls: Mutex::new(Controls::default()),
            replies: Replies::default(),
            names,
            events: Subscribers::default(),
            gateway: gateway::Gateway::default(),
            counters: Counters::default(),
            pending_hellos: limits::PendingHellos::default(),
            revoked: parking_lot::RwLock::new(revoked),
            serial: Mutex::new(serial),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        if inner.inbound.is_none() {
            inner.endpoint.close();
            return Err(MeshError::AlreadyStarted);
        }
        handle.set_extension(Arc::new(MeshSlot(Arc::downgrade(&inner))));
        let acceptor = Arc::clone(&inner);
        handle.spawn(move |_ctx: Ctx<()>| async move {
            while let Some(conn) = endpoint.accept().await {
                let inner = Arc::clone(&acceptor);
                acceptor
                    .handle
                    .spawn(move |_ctx: Ctx<()>| async move { inner.serve_incoming(conn).await });
            }
        });
        if let Some(path) = inner.config.revoked.clone() {
            let reloader = Arc::clone(&inner);
            handle
                .spawn(move |_ctx: Ctx<()>| async move { reloader.reload_revocations(path).await });
        }
        let sweeper = Arc::clone(&inner);
        handle.spawn(move |_ctx: Ctx<()>| async move { sweeper.sweep_controls().await });
        if inner.config.dial_only {
            // A client: one gateway at a time, no SWIM (see `gateway`).
            let client = Arc::clone(&inner);
            handle.spawn(move |_ctx: Ctx<()>| async move { client.keep_gateway().await });
        } else {
            let syncer = Arc::clone(&inner);
            handle.spawn(move |_ctx: Ctx<()>| async move { syncer.sync_periodically().await });
            let lone = Arc::clone(&inner);
            handle.spawn(move |_ctx: Ctx<()>| async move { lone.announce_while_alone().await });
            for seed in inner.config.seeds.clone() {
                if inner.is_own_seed(&seed) {
                    continue;
                }
                let dialer = Arc::clone(&inner);
                handle.spawn(move |_ctx: Ctx<()>| async move { dialer.join_seed(seed).await });
            }
        }
        tracing::info!(node = %inner.node, %listen, %advertise, source = ?advertise_source, dial_only = inner.config.dial_only, "mesh node started");
        Ok(Mesh { inner })
    }

    /// The mesh started on `handle`'s runtime, if it is still running (for code that has
    /// a runtime handle and wants the mesh's members or counters).
    pub fn from_handle(handle: &Handle) -> Option<Mesh> {
        let slot = handle.extension::<MeshSlot>()?;
        slot.0.upgrade().map(|inner| Mesh { inner })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// This node's name (its certificate's; [`NodeId::of_name`] of it is [`Mesh::node`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The address this node accepts connections on (as bound: may be `0.0.0.0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// The address peers are told to dial this node at (see [`MeshConfig::advertise`];
    /// unspecified with port 0 on a dial-only client, which takes no connections).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// How the advertised address was chosen (`None` on a dial-only client).
    pub fn advertise_source(&self) -> Option<AdvertiseSource> {
        self.inner.advertise_source
    }

    /// Whether this is a dial-only client ([`MeshConfig::dial_only`]).
    pub fn is_dial_only(&self) -> bool {
        self.inner.config.dial_only
    }

    /// A dial-only client's gateway — the node it sends everything through — while
    /// connected to it; `None` on a member.
    pub fn gateway(&self) -> Option<NodeId> {
        self.inner.gateway()
    }

    /// Waits up to `timeout` for a dial-only client to have a gateway.
    pub async fn wait_gateway(&self, timeout: std::time::Duration) -> Result<NodeId, DialError> {
        self.inner.wait_gateway(timeout).await
    }

    /// The runtime handle.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Every node this node knows where to dial (not only connected ones), sorted by id:
    /// the nodes it confirmed, members and SWIM targets it only heard of by gossip, and
    /// *hearsay*, nodes only named in another member's hello (bounded, see `limits`). Any
    /// member may name made-up nodes, so this is for dialing and lookups; what is shown to
    /// an operator as this node's view is [`Mesh::confirmed_peers`].
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut peers = self.inner.conns.lock().known();
        peers.sort_by_key(|p| p.node);
        peers
    }

    /// The nodes this node confirmed itself, sorted by id: each had an authenticated
    /// exchange with it (a hello on a connection, its certificate proving the id: dialed,
    /// accepted, a seed; or a SWIM packet from it that passed the screen) — not nodes it
    /// only heard of, from another node's hello or as a member in another member's SWIM
    /// gossip. A node speaks only for itself: status pages list these, never hearsay, so a
    /// chatty or lying peer cannot make every node list invented nodes. A node stays here
    /// after it leaves (it was met).
    pub fn confirmed_peers(&self) -> Vec<PeerInfo> {
        let mut peers = self.inner.conns.lock().confirmed();
        peers.sort_by_key(|p| p.node);
        peers
    }

    /// Dials `seed`, exchanges hellos and announces this node to it (SWIM), as at start;
    /// returns once the seed is a live member here.
    pub async fn join(&self, seed: Seed) -> Result<(), DialError> {
        let (node, addr) = self.inner.dial_seed(&seed).await?;
        let info = PeerInfo {
            node,
            addr,
            name: seed.name,
        };
        self.inner.announce_until_joined(node, &info).await;
        Ok(())
    }

    /// Live members of the cluster, this node included, sorted by node id.
    pub fn members(&self) -> Vec<Member> {
        self.inner.members.lock().list()
    }

    /// Registers `name` cluster-wide for the local process `pid`. Fails if this node
    /// already knows the name held by another process (here or elsewhere). Two
    /// registrations racing on different nodes end with one winner on every node; the
    /// loser exits with `ExitReason::NameConflict(name)` (module doc of `names`). The
    /// name is released when `pid` exits, with [`Mesh::unregister_name`], or when this
    /// node is declared down. The cluster name table is separate from the runtime's
    /// local registry (`Handle::register`).
    pub fn register_name(&self, name: &str, pid: Pid) -> Result<(), NameError> {
        self.inner.claim(name, pid, true)
    }

    /// Removes `name` cluster-wide if a local process holds it.
    pub fn unregister_name(&self, name: &str) {
        let holder = self.inner.cluster_whereis(name);
        if let Some(pid) = holder.filter(|p| p.node() == self.inner.node) {
            self.inner.release(name, pid);
        }
    }

    /// The process holding the cluster-wide `name`, as this node knows it.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.cluster_whereis(name)
    }

    /// Test hook simulating a hung node: while frozen, this node's membership neither
    /// answers nor sends SWIM packets and its SWIM timers are held (data connections
    /// and QUIC keep-alives carry on). Thawing hands the held timers to foca; the
    /// cluster has usually declared this node down by then, and it rejoins as a new
    /// incarnation. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn set_membership_frozen(&self, frozen: bool) {
        self.inner.set_frozen(frozen);
    }

    /// Test hook for a lying member: sends `to` one SWIM gossip packet that claims to come
    /// from `from` (this node, or another to spoof it) and carries `updates` — (node,
    /// incarnation above the one this node knows, state) — in foca's own encoding.
    /// Returns false if this node does not know one of the nodes. Only with the `testing`
    /// feature.
    #[cfg(feature = "testing")]
    pub fn forge_swim(
        &self,
        to: NodeId,
        from: NodeId,
        updates: &[(NodeId, u16, SwimState)],
    ) -> bool {
        self.inner.forge_swim(to, from, updates)
    }

    /// This node's SWIM incarnation: it rises by one (or more) each time this node refutes
    /// a suspicion of itself. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn swim_incarnation(&self) -> u16 {
        self.inner.swim_incarnation()
    }

    /// This node's SWIM epoch: it rises by one each time this node's SWIM incarnation
    /// reaches the epoch mark (60,000; see [`Mesh::set_swim_epoch_mark`]), which starts the
    /// SWIM incarnation again at 0. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn swim_epoch(&self) -> u32 {
        self.inner.swim_epoch()
    }

    /// The SWIM epoch this node holds for `node`, if it knows it (in any SWIM state). Only
    /// with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn swim_epoch_of(&self, node: NodeId) -> Option<u32> {
        self.inner.swim_epoch_of(node)
    }

    /// Moves this node to its next SWIM epoch when its SWIM incarnation reaches `mark`
    /// instead of 60,000, to drive it there in a test. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn set_swim_epoch_mark(&self, mark: u16) {
        self.inner.set_epoch_mark(mark);
    }

    /// Test hook for a member lying about its region: sends `to` one SWIM gossip packet
    /// from this node's identity with `region` in place of its own. Returns false if this
    /// node does not know `to`. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn forge_region(&self, to: NodeId, region: &str) -> bool {
        self.inner.forge_region(to, region)
    }

    /// Test hook for a member gossiping a made-up member: sends `to` one SWIM gossip
    /// packet from this node (its true identity) saying `member` is alive (incarnation 1,
    /// no region). Returns false if this node does not know `to`. Only with the `testing`
    /// feature.
    #[cfg(feature = "testing")]
    pub fn forge_member(&self, to: NodeId, member: &PeerInfo) -> bool {
        self.inner.forge_member(to, member)
    }

    /// Test hook for a member lying about where another lives: sends `to` one SWIM gossip
    /// packet from this node (its true identity) saying `about` is alive at `addr`, in the
    /// identity this node knows for it otherwise (same incarnation and epoch). Returns
    /// false if this node does not know `to` or `about`. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn forge_address(&self, to: NodeId, about: NodeId, addr: SocketAddr) -> bool {
        self.inner.forge_address(to, about, addr)
    }

    /// Takes `bound` in place of 16,384 as the most nodes this node's SWIM may hold that
    /// it has not met before gossip may introduce no more (`limits`), to test the bound
    /// with a few made-up members. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn set_unmet_member_bound(&self, bound: usize) {
        self.inner.set_unmet_bound(bound);
    }

    /// Has SWIM forget a member `after` it was declared down, instead of an hour, to test
    /// what goes with it (members declared down before keep the hour). Only with the
    /// `testing` feature.
    #[cfg(feature = "testing")]
    pub fn set_swim_remove_down_after(&self, after: std::time::Duration) {
        self.inner.set_remove_down_after(after);
    }

    /// Test hook for a member relaying name ops: sends `to` one SWIM gossip packet from
    /// this node (its true identity) carrying `op` as a custom broadcast, whoever's pid it
    /// names. Returns false if this node does not know `to`. Only with the `testing`
    /// feature.
    #[cfg(feature = "testing")]
    pub fn forge_name_op(&self, to: NodeId, op: &wire::NameOp) -> bool {
        self.inner.forge_name_op(to, op)
    }

    /// Test hook for a chatty or lying member: this node's hellos from now on (to nodes
    /// it dials or that dial it) also name `peers`, after the nodes it vouches for, known
    /// or not — as another node's software might. Receivers take them as hearsay (see
    /// [`Mesh::peers`]). Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn forge_hello_peers(&self, peers: Vec<PeerInfo>) {
        self.inner.conns.lock().forge_hello_peers(peers);
    }

    /// Turns the refutation budget (see `refute`) off or on, to measure an attack with and
    /// without it. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn set_refutation_budget(&self, on: bool) {
        self.inner.set_refutation_budget(on);
    }

    /// Refuses every fresh suspicion from now on, as if every sender had spent its
    /// refutation budget: this node relays no suspicion of another member. Only with the
    /// `testing` feature.
    #[cfg(feature = "testing")]
    pub fn spend_refutation_budget(&self) {
        self.inner.spend_refutation_budget();
    }

    /// The QUIC connection to `node`, if up, to observe the transport limits in force on
    /// it (`limits`). Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn quic_connection(&self, node: NodeId) -> Option<crate::endpoint::Connection> {
        Some(self.inner.up_conn(node)?.quic().clone())
    }

    /// The connection to `node`, if up: which node dialed it and the peer's address.
    pub fn connection_info(&self, node: NodeId) -> Option<ConnectionInfo> {
        let conn = self.inner.up_conn(node)?;
        Some(conn.info(self.inner.node))
    }

    /// Whether a connection to `node` is up.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.inner.conns.lock().is_up(node)
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        let controls = self.inner.controls.lock().len();
        let pending = self.inner.pending_hellos.len();
        let refused_names = self.inner.names.lock().refused();
        let failed_handshakes = self.inner.endpoint.failed_handshakes();
        self.inner
            .counters
            .snapshot(controls, pending, refused_names, failed_handshakes)
    }

    /// Traffic and round-trip time of each data connection up now.
    pub fn links(&self) -> Vec<LinkStats> {
        let conns = self.inner.conns.lock().all_up();
        let mut links: Vec<LinkStats> = conns.iter().map(|c| c.link_stats()).collect();
        links.sort_by_key(|l| l.node);
        links
    }

    /// Other members by SWIM state (alive, suspect, down).
    pub fn member_states(&self) -> MemberStates {
        let swim = self.inner.swim.lock();
        let mut states = MemberStates::default();
        for member in membership::others(&swim) {
            match member.state() {
                foca::State::Alive => states.alive += 1,
                foca::State::Suspect => states.suspect += 1,
                foca::State::Down => states.down += 1,
            }
        }
        states
    }

    /// Subscribes to node up/down events from now on.
    pub fn node_events(&self) -> NodeEvents {
        self.inner.events.subscribe()
    }

    /// Declares that message type `M` may cross nodes, under `tag` (do it on every node
    /// that sends or receives `M`; one tag per type, one type per tag).
    pub fn declare<M>(&self, tag: &'static str) -> Result<(), DeclareError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        self.inner.registry.declare::<M>(tag)
    }

    /// Opens (or waits for) the connection to `node`.
    pub async fn connect(&self, node: NodeId) -> Result<(), DialError> {
        self.inner.conn(node).await.map(drop)
    }

    /// Leaves the cluster and closes this node's connections and endpoint at once;
    /// calls waiting for answers fail. Connected peers see the connection close as
    /// "leaving" and declare this node down at once; the others learn it by gossip.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.with_swim(|swim, fx| {
            swim.leaving = true;
            if let Err(error) = swim.foca.leave_cluster(fx) {
                tracing::debug!(%error, "SWIM leave");
            }
        });
        inner.swim.lock().closed = true;
        inner.closed.store(true, Ordering::Release);
        controls::close_all(inner.controls.lock().close());
        let conns = inner.conns.lock().close();
        for conn in conns {
            conn.quic().close(wire::CLOSE_LEAVING, b"mesh closed");
        }
        inner.replies.close();
        inner.endpoint.close();
    }

    /// [`Mesh::close`], then waits up to `max` for the close frames to leave (QUIC sends
    /// them from the endpoint's driver, which stops with the runtime): peers then see this
    /// node leave at once instead of after their failure timeout. Blocks the calling
    /// thread; call it from outside the runtime's processes, as `Node::shutdown` does.
    pub fn close_and_flush(&self, max: std::time::Duration) {
        if self.inner.is_closed() {
            // Flushed (or abandoned) by the first close.
            return;
        }
        self.close();
        let endpoint = self.inner.endpoint.quinn().clone();
        let handle = self.inner.handle.clone();
        let _ = cairn_scheduler::block_on(handle.timeout(max, endpoint.wait_idle()));
    }
}

/// The advertised address for a node bound at `listen` (see `advertise`); resolving named
/// seeds may block briefly (start-up only).
fn choose_advertise(
    listen: SocketAddr,
    config: &MeshConfig,
) -> Result<(SocketAddr, AdvertiseSource), MeshError> {
    let needs_seeds = config.advertise.is_none() && listen.ip().is_unspecified();
    let seeds: Vec<SocketAddr> = if needs_seeds {
        config
            .seeds
            .iter()
            .filter_map(|s| s.addr.resolve(&*config.resolver).ok())
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    Ok(advertise::choose(
        listen,
        config.advertise,
        &seeds,
        advertise::route_source,
    )?)
}
