//! Replicated shards under the objects of a mesh node: the shard driver (`cairn-shard`) on
//! every node, Raft frames over the mesh, placement by shard leadership, and the replicated
//! commit behind each object's output gate.
//!
//! ## What it owns
//! * **The driver.** Every non-client mesh node runs one [`ShardNode`] over its own store. A
//!   node started without seeds creates the cluster (every shard with itself as sole voter);
//!   a node with seeds joins and hosts nothing until shard leaders add it (learner, then
//!   voter; the replication factor is [`ShardConfig::replication`], 3 by default).
//! * **The transport.** Raft batches travel as [`ShardFrame`]s under the mesh tag
//!   [`SHARDS_TAG`] to the node-local process of that name. A frame's claimed sender must be
//!   the connection's authenticated peer ([`cairn_net::mesh::decoding_peer`]); a frame that
//!   lies about it is dropped and logged (the core checks the rest: message types, the
//!   destination, the shard range).
//! * **Membership.** SWIM stays the failure detector: live mesh members (clients excluded)
//!   are `Up`; a member that left is `Down { since }`, and keeps its replicas for
//!   [`ShardConfig::down_grace`] (a restart moves nothing).
//! * **Leadership events.** When this node stops serving a shard (lost leadership or lease,
//!   hand-over) its activations of that shard hand off; when it starts serving one, the
//!   alarm process rescans (the shard's alarms are now this node's to fire).
//!
//! ## Invariants
//! * An object of a placed class is activated only on the node that *serves* its shard
//!   (leader, lease valid, caught up); every other node routes to the leader it knows.
//! * A handler runs only while this node serves the shard. Its write set is proposed to the
//!   shard; its held output is released only once the entry was committed by a majority and
//!   applied here, at the (index, term) it was appended with. Otherwise the output is
//!   dropped (callers get `NoReply`) and the activation reloads from what is durable. A
//!   cut-off leader acknowledges no write (it commits none). A leader that hands its shard
//!   over still acknowledges the sets it proposed while serving once they commit under its
//!   successor: the entry kept its term, and terms only grow along the log, so no other
//!   node wrote the object between the handler's reads and that entry (the core's hand-over
//!   drains them into the log first, see `cairn_shard::core`). Dropping them made every
//!   planned move answer `NoReply` for writes that had happened.
//! * Commits of one activation are pipelined and fenced: the next message is handled while
//!   earlier write sets are still in flight (reads see them: the keyspace keeps routed sets
//!   in its in-flight overlay until applied), and the sets form one [`Fence`] chain — all
//!   appended in the leader term the chain names, in commit order, none after one of them
//!   was refused. So a write set commits only if every earlier one of its activation did;
//!   a failed one fails every later one (the output queue drops their output and the
//!   activation re-activates from what is durable, starting a new chain).
//! * Every commit of a replicated object's keyspace goes through its shard: the activation
//!   installs a [`ShardRoute`] on the keyspace (`cairn_storage::CommitRoute`), so the
//!   implicit commit after each handler and an explicit `storage().commit()` take the same
//!   path, in order (each set is queued to the driver inside `commit()`). `storage().sync()`
//!   would block a worker of the scheduler that drives the shard: on a worker it fails with
//!   `StorageError::NotReplicated` and commits nothing (`commit().await` instead).
//! * An object's alarm is a row of its keyspace, so it is replicated and applied with the
//!   write sets (and moved by snapshots); every replica's alarm process sees it, but only
//!   the node serving the shard delivers it (`alarms`).
//! * A location hint is part of the object's identity (`class@region/key`, see
//!   `docs/location_hints.md`): a hinted object maps to its region's own shards when the
//!   region is listed in [`ShardConfig::regions`] (replicas confined to that region), else
//!   to a global shard.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_net::mesh::{decoding_peer, Mesh, NodeEvent};
use cairn_scheduler::{Ctx, Handle, Message, NodeId, SendError, SpawnOptions};
use cairn_shard::driver::{ShardNode, ShardTransport};
use cairn_shard::placement::{object_shard, shard_region, target_replicas, Liveness, Member};
use cairn_shard::wire::WireBatch;
use cairn_shard::{
    bootstrap_states, encode_write_set, ClusterRecord, Fence, LmdbLog, MultiRaft, Outcome,
    ShardConfig, ShardEvent, ShardId,
};
use cairn_storage::{CommitRoute, RoutedCommit, StorageError, WriteSetData};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::routing::is_client;
use super::Objects;

/// The mesh tag of Raft frames between nodes, and the node-local name of the process receiving them.
pub const SHARDS_TAG: &str = "cairn.shards";
/// How long a message to an object waits for its shard to have a reachable leader (election,
/// failover, hand-over) before it fails with `ObjectError::ShardUnavailable`: two election
/// timeouts at the default settings plus failure detection, with room to spare.
pub const SHARD_WAIT: Duration = Duration::from_secs(10);
/// How long one write set may wait for its commit before the activation gives up on it
/// (output dropped, state reloaded): a leader that cannot reach a majority within this long
/// has lost its lease long before.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a message crosses the mesh at most while shards move (each crossing follows a
/// newer leader hint).
pub const MAX_REPLICATED_HOPS: u8 = 6;

/// Raft traffic from one node to another: one round's batch.
///
/// The batch travels as its own positional encoding ([`WireBatch::encode`], MessagePack
/// `bin`), not as a nested value: the mesh encodes payloads with field names, which for a
/// batch meant every field name of every Raft message and entry written and matched again
/// per message, about as many bytes as the write sets the messages carry.
#[derive(Serialize, Deserialize)]
pub(crate) struct ShardFrame {
    /// The sender as it claims to be; must equal the authenticated peer.
    from: NodeId,
    /// A [`WireBatch`], encoded (decoded by the receiving process; undecodable: dropped).
    #[serde(with = "cairn_storage::serde_bin::bytes")]
    batch: Vec<u8>,
    /// The connection's authenticated peer, filled in while decoding (never sent).
    #[serde(skip, default = "decoding_peer")]
    peer: Option<NodeId>,
}

/// Why a replicated commit did not open the output gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitFailure {
    /// The node's storage failed the write.
    #[error("storage: {0}")]
    Storage(String),
    /// The shard refused the proposal or did not commit it in time (not the leader, queue
    /// full, timed out, another leader's entry took its place).
    #[error("shard {shard} did not commit the write: {reason}")]
    NotCommitted {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
}

/// Where messages to a shard's objects go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This node serves the shard.
    Here,
    /// The shard's leader (or, without a known leader, the node most likely to know it).
    Node(NodeId),
    /// No leader is known yet: wait and look again.
    Unknown,
}

/// The node's shard layer as objects see it.
pub(crate) struct Replication {
    me: NodeId,
    mesh: Mesh,
    cfg: ShardConfig,
    /// `None` on a client node: it routes, it holds no replicas.
    node: Option<ShardNode>,
    /// Every non-client member ever seen, with the time it was last seen down (driver
    /// clock), for [`Liveness::Down`].
    seen: Mutex<HashMap<NodeId, Seen>>,
    /// The next [`Fence`] chain id of this node's activations.
    next_chain: std::sync::atomic::AtomicU64,
}

/// A member as last seen: its region, and since when it has been missing (driver clock).
type Seen = (Option<String>, Option<Duration>);

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Sends Raft batches over the mesh (best effort: Raft retransmits what is lost).
struct MeshTransport {
    mesh: Mesh,
    dialing: Arc<Mutex<HashSet<NodeId>>>,
}

impl ShardTransport for MeshTransport {
    fn send(&self, from: NodeId, to: NodeId, batch: WireBatch) {
        let frame = ShardFrame {
            from,
            batch: batch.encode(),
            peer: None,
        };
        let target = self.mesh.handle().named_ref::<ShardFrame>(SHARDS_TAG, to);
        if let Err(SendError::NoConnection(_)) = target.try_send_ungated(frame) {
            // No connection yet (a peer just learned of): dial once, in the background; the
            // next round's messages find it.
            if self.dialing.lock().insert(to) {
                let mesh = self.mesh.clone();
                let dialing = Arc::clone(&self.dialing);
                self.mesh.handle().spawn(move |_ctx: Ctx<()>| async move {
                    let _ = mesh.connect(to).await;
                    dialing.lock().remove(&to);
                });
            }
        }
    }
}

impl Replication {
    /// Starts the shard layer of a mesh node: creates or joins the cluster in the node's
    /// store (`creates`: started without seeds), starts the driver (not on a `client`), the
    /// frame receiver and the membership feed.
    pub(crate) fn start(
        objects: &Arc<Objects>,
        mesh: &Mesh,
        creates: bool,
        client: bool,
        cfg: ShardConfig,
    ) -> Result<Arc<Replication>, String> {
        cfg.validate()?;
        let me = mesh.node();
        mesh.declare::<ShardFrame>(SHARDS_TAG)
            .map_err(|e| e.to_string())?;
        let node = if client {
            None
        } else {
            let log = LmdbLog::new(objects.store.clone());
            if log.cluster().map_err(|e| e.to_string())?.is_none() {
                if creates {
                    log.create_cluster(&cfg, &bootstrap_states(&cfg, me))
                } else {
                    log.join_cluster(ClusterRecord {
                        shards: cfg.shards,
                        replication: cfg.replication as u32,
                    })
                }
                .map_err(|e| e.to_string())?;
            }
            let states = log.recover().map_err(|e| e.to_string())?;
            let core = MultiRaft::recover(cfg.clone(), me, &states, me.0 ^ 0x5eed, Duration::ZERO)?;
            let transport = Arc::new(MeshTransport {
                mesh: mesh.clone(),
                dialing: Arc::new(Mutex::new(HashSet::new())),
            });
            let weak = Arc::downgrade(objects);
            let handle = objects.handle.clone();
            let on_event = Box::new(move |event: ShardEvent| {
                let weak = weak.clone();
                match event {
                    ShardEvent::Stopped { shard } => {
                        handle.spawn(move |_ctx: Ctx<()>| async move {
                            if let Some(objects) = weak.upgrade() {
                                objects.hand_off_shard(shard).await;
                            }
                        });
                    }
                    ShardEvent::Serving { shard, term } => {
                        tracing::debug!(%shard, term, "this node now serves the shard");
                        if let Some(objects) = weak.upgrade() {
                            // The board already says so: waiters see it when they look.
                            objects.shard_served.notify();
                            objects.wake_alarms();
                        }
                    }
                }
            });
            Some(ShardNode::start(
                &objects.handle,
                core,
                log,
                transport,
                Some(on_event),
            ))
        };
        let replication = Arc::new(Replication {
            me,
            mesh: mesh.clone(),
            cfg,
            node,
            seen: Mutex::new(HashMap::new()),
            next_chain: std::sync::atomic::AtomicU64::new(1),
        });
        if let Some(node) = &replication.node {
            start_receiver(mesh, node.clone())?;
            replication.members_changed();
            start_membership_feed(mesh, Arc::downgrade(&replication));
        }
        Ok(replication)
    }

    /// The shard of the object `(class, key)` with location hint `region` (see
    /// [`object_shard`]).
    pub(crate) fn shard_of(&self, class: &str, key: &str, region: Option<&str>) -> ShardId {
        object_shard(class, key, region, &self.cfg)
    }

    /// The commit route of an activation of an object of `shard`, to install on its
    /// keyspace: its write sets form one [`Fence`] chain (see [`ShardRoute::restart_chain`]).
    pub(crate) fn route(self: &Arc<Self>, shard: ShardId) -> Arc<ShardRoute> {
        Arc::new(ShardRoute {
            replication: Arc::downgrade(self),
            handle: self.mesh.handle().clone(),
            shard,
            chain: Mutex::new(self.new_chain(shard)),
        })
    }

    /// A fresh chain for an activation (re)loading its state now: it names the term this
    /// node serves `shard` in now, or the term of its first commit if it serves none now.
    fn new_chain(&self, shard: ShardId) -> Chain {
        Chain {
            id: self
                .next_chain
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            term: self.serving_term(shard),
            broken: false,
            backlog: Arc::default(),
        }
    }

    /// Whether this node may acknowledge for `shard` now.
    pub(crate) fn serving(&self, shard: ShardId) -> bool {
        self.node.as_ref().is_some_and(|n| n.serving(shard))
    }

    /// The leader term this node serves `shard` in now, if it serves it.
    fn serving_term(&self, shard: ShardId) -> Option<u64> {
        self.node.as_ref()?.board().serving_term(shard)
    }

    /// Where messages to `shard`'s objects go now. `first_hop`: the message has not crossed
    /// the mesh yet, so without a known leader it may go to the node most likely to know
    /// one (a node that already forwarded waits instead, so guesses cannot bounce).
    pub(crate) fn owner(&self, shard: ShardId, first_hop: bool) -> Owner {
        if self.serving(shard) {
            return Owner::Here;
        }
        let hint = self.node.as_ref().and_then(|n| n.board().leader(shard));
        match hint {
            Some(leader) if leader != self.me => return Owner::Node(leader),
            // We are the leader but not serving yet (lease, catching up): wait.
            Some(_) => return Owner::Unknown,
            None => {}
        }
        if !first_hop {
            return Owner::Unknown;
        }
        let members = self.live_members();
        let target = target_replicas(
            shard,
            &members,
            self.cfg.replication,
            shard_region(shard, &self.cfg),
            Duration::ZERO,
            self.cfg.down_grace,
        );
        target
            .into_iter()
            .find(|&n| n != self.me)
            .map_or(Owner::Unknown, Owner::Node)
    }

    /// Proposes an object's write set to its shard through `node` as a member of `fence`'s
    /// chain; finishes `done` `Ok` only once it is committed and applied here (see the module
    /// doc: also after this node stopped serving the shard). The driver finishes `done`
    /// itself, on its process, when the set's fate is known (or [`PROPOSE_TIMEOUT`] has
    /// passed, or the set is dropped unqueued): no process, reply or timer per set.
    /// The proposal is queued to the driver before this returns, or behind the chain's
    /// earlier proposals still waiting for room in `backlog`: sets proposed one after
    /// another stay in order.
    fn propose(
        &self,
        node: &ShardNode,
        shard: ShardId,
        set: WriteSetData,
        fence: Fence,
        backlog: &Arc<Mutex<Backlog>>,
        done: RoutedCommit,
    ) {
        let proposal = node.fenced_then(
            shard,
            encode_write_set(&set),
            fence,
            PROPOSE_TIMEOUT,
            move |fate| {
                let result = match fate {
                    Ok(Outcome::Committed) => Ok(()),
                    Ok(other) => Err(format!("{other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                done.finish(result.map_err(|reason| {
                    StorageError::NotReplicated(
                        CommitFailure::NotCommitted { shard, reason }.to_string(),
                    )
                }));
            },
        );
        {
            let mut b = backlog.lock();
            if b.pumping {
                b.waiting.push_back(proposal);
            } else if let Err(proposal) = node.try_queue(proposal) {
                // The driver's mailbox is full: this and every later set of the chain wait
                // in order, sent by one process as room frees up.
                b.waiting.push_back(proposal);
                b.pumping = true;
                let (node, backlog) = (node.clone(), Arc::clone(backlog));
                // (A process that never runs drops the sets it holds: their fates fail.)
                self.mesh.handle().spawn(move |_ctx: Ctx<()>| async move {
                    loop {
                        let next = {
                            let mut b = backlog.lock();
                            match b.waiting.pop_front() {
                                Some(p) => p,
                                None => {
                                    b.pumping = false;
                                    return;
                                }
                            }
                        };
                        node.queue(next).await;
                    }
                });
            }
        }
    }

    /// The shard driver's counters and map (`None` on a client).
    pub(crate) fn stats(&self) -> Option<cairn_shard::stats::ShardStatsSnapshot> {
        self.node.as_ref().map(|n| n.stats().snapshot())
    }

    /// The configured shard count and replication factor.
    pub(crate) fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    /// How many shards this node's replicas know with at least the replication factor of
    /// voters (0 on a client).
    pub(crate) async fn fully_replicated(&self) -> u32 {
        let Some(node) = &self.node else {
            return 0;
        };
        let mut full = 0;
        for shard in 0..self.cfg.shards {
            if let Some(conf) = node.conf_state(ShardId(shard)).await {
                full += u32::from(conf.voters.len() >= self.cfg.replication);
            }
        }
        full
    }

    /// The live non-client members, this node included.
    fn live_members(&self) -> Vec<Member> {
        self.mesh
            .members()
            .into_iter()
            .filter(|m| !is_client(&m.name))
            .map(|m| Member::up(m.node, m.region.as_deref()))
            .collect()
    }

    /// Feeds the driver the membership: live members `Up`, members seen before and gone
    /// now `Down` since they were first missed.
    fn members_changed(&self) {
        let Some(node) = &self.node else {
            return;
        };
        let now = node.board().now();
        let live = self.live_members();
        let mut seen = self.seen.lock();
        for m in &live {
            seen.insert(m.id, (m.region.clone(), None));
        }
        let mut members = live.clone();
        for (id, (region, down)) in seen.iter_mut() {
            if live.iter().any(|m| m.id == *id) {
                continue;
            }
            let since = *down.get_or_insert(now);
            members.push(Member {
                id: *id,
                region: region.clone(),
                liveness: Liveness::Down { since },
            });
        }
        node.set_members(members);
    }
}

/// Where the commits of a replicated object's activation go: its shard, as one [`Fence`]
/// chain (see the module doc).
pub(crate) struct ShardRoute {
    /// Weak: the store keeps its keyspaces' routes, and the shard layer keeps the store.
    replication: Weak<Replication>,
    handle: Handle,
    shard: ShardId,
    chain: Mutex<Chain>,
}

/// The [`Fence`] chain of one activation's write sets.
struct Chain {
    id: u64,
    /// The term its sets must be appended in (`None`: the term served at the first commit).
    term: Option<u64>,
    /// A set was refused at once: every later one fails until the chain restarts.
    broken: bool,
    /// Sets waiting for room in the driver's mailbox, in order.
    backlog: Arc<Mutex<Backlog>>,
}

/// A chain's proposals waiting for room in the driver's mailbox (see `Replication::propose`).
#[derive(Default)]
pub(crate) struct Backlog {
    waiting: std::collections::VecDeque<cairn_shard::driver::Proposal>,
    /// A process is sending `waiting` in order; later sets queue behind it.
    pumping: bool,
}

impl ShardRoute {
    /// Starts a new chain: the activation re-activated from what is durable after a failed
    /// commit, so its next write sets no longer build on the failed ones.
    pub(crate) fn restart_chain(&self) {
        if let Some(replication) = self.replication.upgrade() {
            let old = std::mem::replace(&mut *self.chain.lock(), replication.new_chain(self.shard));
            // Sets of the old chain still waiting for room are never proposed (their fates
            // fail): they must not land after the new chain's. Dropped outside the lock:
            // dropping one finishes its set.
            let unsent = std::mem::take(&mut old.backlog.lock().waiting);
            drop(unsent);
        }
    }

    /// The fence of the next set and the chain's backlog, or why the chain cannot take one.
    fn fence(&self, replication: &Replication) -> Result<(Fence, Arc<Mutex<Backlog>>), String> {
        let mut chain = self.chain.lock();
        if chain.broken {
            return Err("an earlier write set of this activation was refused".into());
        }
        let term = match chain.term {
            Some(t) => t,
            None => {
                let t = replication
                    .serving_term(self.shard)
                    .ok_or_else(|| "this node does not serve the shard".to_string())?;
                chain.term = Some(t);
                t
            }
        };
        let fence = Fence {
            chain: chain.id,
            term,
        };
        Ok((fence, Arc::clone(&chain.backlog)))
    }
}

impl CommitRoute for ShardRoute {
    fn commit(&self, set: WriteSetData, done: RoutedCommit) {
        let Some(replication) = self.replication.upgrade() else {
            done.finish(Err(StorageError::NotReplicated(
                "the node's shard layer has stopped".into(),
            )));
            return;
        };
        // Queued to the driver now (in commit order); the driver finishes `done`.
        let ready = match &replication.node {
            Some(node) => self.fence(&replication).map(|f| (node, f)),
            None => Err("a client node holds no shards".to_string()),
        };
        match ready {
            Ok((node, (fence, backlog))) => {
                replication.propose(node, self.shard, set, fence, &backlog, done);
            }
            Err(reason) => {
                self.chain.lock().broken = true;
                let e = CommitFailure::NotCommitted {
                    shard: self.shard,
                    reason,
                };
                done.finish(Err(StorageError::NotReplicated(e.to_string())));
            }
        }
    }

    fn blocking_allowed(&self) -> Result<(), StorageError> {
        if self.handle.on_worker() {
            return Err(StorageError::NotReplicated(format!(
                "sync() of a replicated object's storage would block a worker of the runtime that commits it (shard {}); use `storage().commit().await`",
                self.shard
            )));
        }
        Ok(())
    }
}

/// Starts the node-local process that takes [`ShardFrame`]s from the mesh.
fn start_receiver(mesh: &Mesh, node: ShardNode) -> Result<(), String> {
    mesh.handle()
        .spawn_opts(
            SpawnOptions {
                name: Some(SHARDS_TAG.to_owned()),
                local_name: true,
                ..SpawnOptions::default()
            },
            move |mut ctx: Ctx<ShardFrame>| async move {
                while let Some(msg) = ctx.recv().await {
                    let Message::User(frame) = msg else {
                        continue;
                    };
                    if frame.peer != Some(frame.from) {
                        tracing::warn!(claimed = %frame.from, peer = ?frame.peer, "shard frame from a node that is not its sender; dropped");
                        continue;
                    }
                    // The frame's bytes become the entries' storage: one copy of each
                    // entry from the connection's buffer (the mesh's decode), not two.
                    match WireBatch::decode_owned(frame.batch) {
                        Ok(batch) => node.deliver(frame.from, batch),
                        Err(e) => {
                            tracing::warn!(from = %frame.from, error = %e, "undecodable shard frame; dropped");
                        }
                    }
                }
            },
        )
        .map(drop)
        .map_err(|e| format!("starting the shard frame receiver: {e:?}"))
}

/// Starts the process that tells the driver about membership changes.
fn start_membership_feed(mesh: &Mesh, replication: Weak<Replication>) {
    let mut events = mesh.node_events();
    mesh.handle().spawn(move |_ctx: Ctx<()>| async move {
        loop {
            let event = events.next().await;
            if !matches!(event, NodeEvent::Up { .. } | NodeEvent::Down { .. }) {
                continue;
            }
            let Some(r) = replication.upgrade() else {
                return;
            };
            r.members_changed();
        }
    });
}

impl Objects {
    /// The shard layer's counters and map, with its configuration (`None` without a shard
    /// driver on this node).
    pub(crate) fn shard_stats(
        &self,
    ) -> Option<(cairn_shard::stats::ShardStatsSnapshot, &ShardConfig)> {
        let r = self.replication()?;
        Some((r.stats()?, r.config()))
    }

    /// See [`Replication::fully_replicated`] (0 without replicated shards).
    pub(crate) async fn shards_fully_replicated(&self) -> u32 {
        match self.replication() {
            Some(r) => r.fully_replicated().await,
            None => 0,
        }
    }

    /// Hands off every activation of `shard` here: this node stopped serving it.
    async fn hand_off_shard(&self, shard: ShardId) {
        let Some(replication) = self.replication() else {
            return;
        };
        let moving: Vec<_> = {
            let classes = self.classes.read();
            self.active
                .lock()
                .values()
                .filter(|a| classes.get(a.class).is_some_and(|c| c.remote.is_some()))
                .filter(|a| replication.shard_of(a.class, &a.key, a.region.as_deref()) == shard)
                .map(|a| a.handoff.clone())
                .collect()
        };
        if !moving.is_empty() {
            tracing::info!(%shard, objects = moving.len(), "no longer serving the shard; handing its objects off");
        }
        for handoff in moving {
            handoff().await;
        }
    }
}
