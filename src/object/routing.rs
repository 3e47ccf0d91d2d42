//! Where a message to an object goes: placement lookups, the envelopes that carry messages to
//! another node, each class's router process, and the hand-off when membership changes.
//!
//! ## Placement across the mesh
//! On a node with a mesh, an object class hosted with [`crate::Node::host`] is *placed*:
//! every send first computes the key's owner with [`crate::placement`] over the live nodes
//! (this node, unless it is a client, plus the mesh's peers), within the region of a
//! location hint ([`crate::Node::object_in`]) when one is given. If the owner is this node
//! the message takes the local path (see `activation`); otherwise it travels, as an
//! envelope `(key, region, hops, msg)` serialized with rmp-serde, to the owner's per-class
//! *router* process `cairn.objects.<CLASS>` (see [`router_name`]), which hands it to its
//! local activation. A node only activates objects it owns: a router that gets a key it does
//! not own (the sender's view of the mesh differed) forwards it to the owner it sees, at most
//! [`MAX_HOPS`] times in all, then drops it with a logged warning — two views that keep
//! disagreeing must not bounce a message forever.
//!
//! Ordering per sender and object holds across nodes: the mesh keeps one sender's frames in
//! order to the router, which is one process delivering envelopes one by one. The router
//! waits when an object's mailbox is full (backpressure reaches the sender through the mesh
//! lane), which also holds up the class's other objects on that node. It never waits for a
//! shard's leader, though: such a message is parked on its shard's lane (`parking`) and
//! retried with backoff while the router goes on with other shards' messages.
//!
//! A dial-only client (see `cairn_net::MeshConfig::dial_only`) computes no owner: it
//! sends every envelope to its gateway node's router, which routes it as if it had started
//! there (the crossing to the gateway is not counted: no owner was chosen for it). So a
//! gateway that knows no leader for the shard guesses one as a first hop does, rather than
//! waiting: a gateway cut off by a partition may have been removed from the shard's
//! replicas meanwhile, and then never learns a leader.
//!
//! Classes hosted with [`crate::Node::host_local`] (messages that cannot be serialized)
//! are never placed: each node has its own objects of that class.
//!
//! ## Replicated shards (every mesh node with a placed class)
//! With the shard layer running (`replication`), the owner is not the rendezvous winner
//! but the node serving the key's shard (its Raft leader holding the lease); a node that does
//! not serve it sends to the leader it knows (or, on a first hop without one, to the node
//! most likely to know). A message whose shard has no reachable leader is routed again with
//! backoff for up to `SHARD_WAIT`, crossing the mesh at most [`MAX_REPLICATED_HOPS`] times
//! in all; then it fails with `ShardUnavailable`. A sender on this node waits in its own
//! task, and its wait also ends the moment this node starts serving a shard (`shard_wait`:
//! a leader whose lease lapsed picks up waiting requests at once, not at the next backoff
//! tick); a router parks the message per shard (bounded, see `parking`) and goes on, and
//! retries its parked lanes on the same signal.
//! Membership changes move no activation by themselves: leadership does (see
//! `replication`, "Leadership events").
//!
//! ## Membership change (without replicated shards)
//! When a node joins or leaves, some keys change owner (about 1/n of them). The old owner
//! hands off: each activation it no longer owns finishes what is already in its mailbox and
//! in flight, then deactivates as on eviction; new messages go to the new owner, which
//! activates the object from *its own* store: storage does not move on this path.

use std::future::Future;
use std::pin::Pin;

use super::{Object, ObjectMsg, ObjectRef, ObjectSendError};
#[cfg(feature = "mesh")]
use mesh_imports::*;

/// What only the mesh side of routing uses (absent without the `mesh` feature).
#[cfg(feature = "mesh")]
mod mesh_imports {
    pub(super) use std::any::Any;
    pub(super) use std::collections::HashMap;
    pub(super) use std::marker::PhantomData;
    pub(super) use std::sync::{Arc, OnceLock, Weak};

    pub(super) use cairn_net::{Mesh, NodeEvent};
    pub(super) use cairn_scheduler::{Ctx, Message, NodeId, SendError, SpawnOptions};
    pub(super) use parking_lot::Mutex;
    pub(super) use serde::de::DeserializeOwned;
    pub(super) use serde::{Deserialize, Serialize};

    pub(super) use super::super::replication::{Owner, Replication, MAX_REPLICATED_HOPS};
    pub(super) use super::super::{ObjectError, Objects};
    pub(super) use crate::placement::{self, Candidate};
}

/// How many times a message to an object may cross the mesh before it is dropped: once from
/// the sender to the owner it sees, once more if that node sees another owner. More hops
/// only happen while views of the membership disagree, and bouncing would not settle them.
pub const MAX_HOPS: u8 = 2;
/// First wait before routing a message again while its shard has no reachable leader.
#[cfg(feature = "mesh")]
pub(super) const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(5);
/// Longest wait between two such attempts (the backoff doubles up to it).
#[cfg(feature = "mesh")]
pub(super) const RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(200);
/// Node names ending in this are *clients* (e.g. `cairn-node status`): they join the mesh
/// to send but never own objects, so placement skips them.
pub const CLIENT_NAME_SUFFIX: &str = ".client";

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[cfg(feature = "mesh")]
/// What crosses the mesh to a class's router: one message for one object.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "O::Msg: Serialize",
    deserialize = "O::Msg: DeserializeOwned"
))]
pub(super) struct Envelope<O: Object> {
    pub(super) key: String,
    pub(super) region: Option<String>,
    /// Mesh crossings so far, this one included.
    pub(super) hops: u8,
    pub(super) msg: O::Msg,
    #[serde(skip)]
    _class: PhantomData<fn() -> O>,
}

#[cfg(feature = "mesh")]
/// How a placed class sends an envelope to another node's router (monomorphized at
/// [`Objects::host`], where the message type is known to serialize).
struct RemoteRoute<O: Object> {
    send: SendEnvelope<O>,
    try_send: TrySendEnvelope<O>,
}

#[cfg(feature = "mesh")]
/// Sends an envelope of class `O` to a node's router; gives the message back on failure.
type SendEnvelope<O> = fn(Mesh, NodeId, Envelope<O>) -> BoxFuture<Delivered<O>>;
/// What a delivery attempt ends with: done, or why not and the message.
pub(super) type Delivered<O> = Result<(), ObjectSendError<<O as Object>::Msg>>;
#[cfg(feature = "mesh")]
/// The same without waiting; gives the message back.
type TrySendEnvelope<O> =
    fn(&Mesh, NodeId, Envelope<O>) -> Result<(), SendError<<O as Object>::Msg>>;

#[cfg(feature = "mesh")]
fn try_send_envelope<O>(
    mesh: &Mesh,
    node: NodeId,
    env: Envelope<O>,
) -> Result<(), SendError<O::Msg>>
where
    O: Object,
    O::Msg: Serialize + DeserializeOwned,
{
    let router = mesh.handle().named_ref(router_name(O::CLASS), node);
    router.try_send_ungated(env).map_err(|e| match e {
        SendError::Full(env) => SendError::Full(env.msg),
        SendError::Unregistered(env) => SendError::Unregistered(env.msg),
        SendError::NoConnection(env) => SendError::NoConnection(env.msg),
        other => SendError::NoProc(other.into_inner().msg),
    })
}

#[cfg(feature = "mesh")]
fn send_envelope<O>(mesh: Mesh, node: NodeId, env: Envelope<O>) -> BoxFuture<Delivered<O>>
where
    O: Object,
    O::Msg: Serialize + DeserializeOwned,
{
    Box::pin(async move {
        let router = mesh.handle().named_ref(router_name(O::CLASS), node);
        router.send_ungated(env).await.map_err(|e| {
            let reason = e.to_string();
            let error = ObjectError::Unreachable { node, reason };
            ObjectSendError::new(error, e.into_inner().msg)
        })
    })
}

#[cfg(feature = "mesh")]
/// The registered name of class `class`'s router process, also the mesh tag of its
/// envelopes: `cairn.objects.<class>`.
pub(super) fn router_name(class: &'static str) -> &'static str {
    // Mesh tags are `&'static str`: each class's name is built once and kept for the life of
    // the process (one small string per class, however many nodes host it).
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock();
    names
        .entry(class)
        .or_insert_with(|| Box::leak(format!("cairn.objects.{class}").into_boxed_str()))
}

#[cfg(feature = "mesh")]
/// This node's place in a mesh, as objects see it.
pub(crate) struct Cluster {
    /// Its members (with their names and regions) are the placement candidates.
    pub(crate) mesh: Mesh,
    /// Started without seeds: this node creates the shard cluster (see `replication`).
    pub(crate) creates: bool,
    /// A client node: it routes, it holds no shard replicas.
    pub(crate) client: bool,
}

#[cfg(feature = "mesh")]
impl Cluster {
    /// The nodes that may own objects now.
    fn candidates(&self) -> Vec<Candidate> {
        // Live members (this node included) carry their regions; clients own nothing.
        self.mesh
            .members()
            .into_iter()
            .filter(|m| !is_client(&m.name))
            .map(|m| Candidate {
                node: m.node,
                region: m.region,
            })
            .collect()
    }
}

/// Whether a node name marks a client node (see [`CLIENT_NAME_SUFFIX`]).
pub fn is_client(name: &str) -> bool {
    name.ends_with(CLIENT_NAME_SUFFIX)
}

#[cfg(feature = "mesh")]
/// A placed class's route to other nodes, type-erased for [`Objects`]'s class table (whose
/// entries do not know the class's message type).
pub(super) fn remote_route<O>() -> Arc<dyn Any + Send + Sync>
where
    O: Object,
    O::Msg: Serialize + DeserializeOwned,
{
    Arc::new(RemoteRoute::<O> {
        send: send_envelope::<O>,
        try_send: try_send_envelope::<O>,
    })
}

/// Where a message to an object goes.
pub(super) enum Route<O: Object> {
    Local,
    #[cfg(feature = "mesh")]
    Remote(Mesh, NodeId, SendEnvelope<O>, TrySendEnvelope<O>),
    /// Without the mesh nothing is remote; this uninhabited variant only carries `O`.
    #[cfg(not(feature = "mesh"))]
    #[allow(dead_code)]
    Never(
        std::convert::Infallible,
        std::marker::PhantomData<fn() -> O>,
    ),
}

impl<O: Object> ObjectRef<O> {
    /// Where messages to the object go now (see the module doc, "Placement"): always here
    /// without the `mesh` feature.
    #[cfg(not(feature = "mesh"))]
    pub(super) fn route(&self) -> Result<Route<O>, super::ObjectError> {
        Ok(Route::Local)
    }

    /// Where messages to the object go now (see the module doc, "Placement").
    #[cfg(feature = "mesh")]
    pub(super) fn route(&self) -> Result<Route<O>, ObjectError> {
        self.route_at(0)
    }

    /// Where a message that crossed the mesh `hops` times goes now: with replicated shards,
    /// to the node serving the object's shard (see `replication`); else by rendezvous.
    #[cfg(feature = "mesh")]
    fn route_at(&self, hops: u8) -> Result<Route<O>, ObjectError> {
        let Some(cluster) = self.objects.cluster.get() else {
            return Ok(Route::Local);
        };
        let remote = {
            let classes = self.objects.classes.read();
            match classes.get(O::CLASS).and_then(|c| c.remote.clone()) {
                Some(remote) => remote,
                None => return Ok(Route::Local),
            }
        };
        let owner = if cluster.mesh.is_dial_only() {
            // A dial-only client sends everything to its gateway, whose router forwards
            // to the owner (a client is not a member and sees no membership).
            cluster
                .mesh
                .gateway()
                .ok_or(placement::PlacementError::NoNodes)?
        } else if let Some(replication) = self.objects.replication.get() {
            // A hint is part of the object's identity (`class@region/key`, one shard, one
            // copy): the region's own shards if it has some (replicas confined there), else
            // a global shard. Either way it requires a live member in that region
            // (`docs/location_hints.md`).
            if let Some(region) = self.region.as_deref() {
                placement::owner(O::CLASS, &self.key, &cluster.candidates(), Some(region))?;
            }
            let shard = replication.shard_of(O::CLASS, &self.key, self.region.as_deref());
            match replication.owner(shard, hops == 0) {
                Owner::Here => return Ok(Route::Local),
                Owner::Node(node) => node,
                Owner::Unknown => {
                    return Err(ObjectError::ShardUnavailable {
                        name: self.name.to_string(),
                        shard: shard.0,
                    })
                }
            }
        } else {
            placement::owner(
                O::CLASS,
                &self.key,
                &cluster.candidates(),
                self.region.as_deref(),
            )?
        };
        if owner == cluster.mesh.node() {
            return Ok(Route::Local);
        }
        let route = remote
            .downcast_ref::<RemoteRoute<O>>()
            .expect("a class's route is registered for its own type");
        Ok(Route::Remote(
            cluster.mesh.clone(),
            owner,
            route.send,
            route.try_send,
        ))
    }

    #[cfg(feature = "mesh")]
    /// The envelope carrying `msg` on its `hops`-th mesh crossing.
    pub(super) fn envelope(&self, msg: O::Msg, hops: u8) -> Envelope<O> {
        Envelope {
            key: self.key.to_string(),
            region: self.region.as_deref().map(str::to_owned),
            hops,
            msg,
            _class: PhantomData,
        }
    }

    /// Delivers `msg` to the owner: here (activating the object) or through the owner's
    /// router; `hops` is how often it crossed the mesh already. Gives the message back
    /// with the reason when it cannot be delivered.
    ///
    /// With replicated shards a message whose shard has no reachable leader (election,
    /// failover, a leader that just died) is routed again, with backoff, for up to
    /// `SHARD_WAIT`; then it fails with the retryable `ShardUnavailable` (or
    /// `Unreachable`), never dropped silently.
    #[cfg(not(feature = "mesh"))]
    pub(super) async fn deliver(&self, msg: O::Msg, hops: u8) -> Delivered<O> {
        let _ = hops;
        self.send_ungated(ObjectMsg::User(msg)).await;
        Ok(())
    }

    /// Without the mesh this node owns every object: the message comes back (see the
    /// `mesh` twin).
    #[cfg(not(feature = "mesh"))]
    pub(super) async fn deliver_elsewhere(
        &self,
        msg: O::Msg,
        _hops: u8,
    ) -> Result<Option<O::Msg>, ObjectSendError<O::Msg>> {
        Ok(Some(msg))
    }

    /// A message this node took for the object could not be delivered: logged and counted
    /// (`ObjectClassStats::undeliverable`), never dropped silently.
    pub(super) fn undeliverable(&self, error: &super::ObjectError) {
        super::stats::bump(&self.objects.stats.class(O::CLASS).undeliverable);
        tracing::warn!(object = %self.name, %error, "could not deliver a message this node took; dropped");
    }

    /// Where a request for the object goes now ([`Self::route_at`]), waiting with backoff,
    /// up to `SHARD_WAIT`, while its shard has no reachable leader (an election, a
    /// failover): the HTTP path's counterpart of [`Self::deliver`]'s wait.
    #[cfg(feature = "mesh")]
    pub(super) async fn route_waiting(&self, hops: u8) -> Result<Route<O>, ObjectError> {
        let deadline = std::time::Instant::now() + super::SHARD_WAIT;
        let mut backoff = RETRY_FIRST;
        loop {
            // Read before looking: a shard served meanwhile ends the wait at once.
            let generation = self.objects.shard_served.generation();
            match self.route_at(hops) {
                Err(ObjectError::ShardUnavailable { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    self.wait_for_shard(generation, backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                done => return done,
            }
        }
    }

    /// Delivers `msg` to the owner (see the `mesh`-less twin above for the contract).
    #[cfg(feature = "mesh")]
    pub(super) async fn deliver(&self, msg: O::Msg, hops: u8) -> Delivered<O> {
        if let Some(msg) = self.deliver_elsewhere(msg, hops).await? {
            self.send_ungated(ObjectMsg::User(msg)).await;
        }
        Ok(())
    }

    /// [`Self::deliver`], except that a message this node owns (now, or once its shard has a
    /// leader again) is given back instead of sent to the activation here. A deposed
    /// activation passes its messages on with it and handles what comes back itself:
    /// sending to its own mailbox could wait forever for room only it can make.
    #[cfg(feature = "mesh")]
    pub(super) async fn deliver_elsewhere(
        &self,
        mut msg: O::Msg,
        hops: u8,
    ) -> Result<Option<O::Msg>, ObjectSendError<O::Msg>> {
        // Only a message to a replicated object may wait for its shard (see `try_deliver`),
        // so only such a send reads the clock and the served-shard generation; any other
        // makes its one attempt without them. (`replication` is set once at node start,
        // before any class is hosted, so `try_deliver` sees the same.)
        let replicated = self.objects.replication.get().is_some();
        let deadline = replicated.then(|| std::time::Instant::now() + super::SHARD_WAIT);
        let mut backoff = RETRY_FIRST;
        // The first attempt is within the deadline just set: no second clock read.
        let mut may_wait = replicated;
        loop {
            // Read before looking at the route: a shard served meanwhile ends the wait at
            // once (unread without replication: no attempt waits then).
            let generation = if replicated {
                self.objects.shard_served.generation()
            } else {
                0
            };
            match self.try_deliver_elsewhere(msg, hops, may_wait).await {
                Away::Here(m) => return Ok(Some(m)),
                Away::Tried(Attempt::Done(done)) => return done.map(|()| None),
                Away::Tried(Attempt::Wait(m)) => {
                    msg = m;
                    self.wait_for_shard(generation, backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    may_wait = deadline.is_some_and(|d| std::time::Instant::now() < d);
                }
            }
        }
    }

    /// Waits before routing again while the object's shard has no serving leader: until
    /// this node starts serving a shard (after `generation`, see `shard_wait`) or
    /// `backoff` elapsed, whichever comes first.
    #[cfg(feature = "mesh")]
    async fn wait_for_shard(&self, generation: u64, backoff: std::time::Duration) {
        self.objects
            .shard_served
            .wait(&self.objects.handle, generation, backoff)
            .await
    }

    /// The shard of the object, with replicated shards.
    #[cfg(feature = "mesh")]
    pub(super) fn shard(&self) -> Option<cairn_shard::ShardId> {
        let replication = self.objects.replication.get()?;
        Some(replication.shard_of(O::CLASS, &self.key, self.region.as_deref()))
    }

    /// One attempt of [`Self::deliver`]: `Wait` gives the message back when its shard has
    /// no reachable leader now (replicated shards only, and only if `may_wait`); anything
    /// else is final.
    #[cfg(feature = "mesh")]
    pub(super) async fn try_deliver(&self, msg: O::Msg, hops: u8, may_wait: bool) -> Attempt<O> {
        match self.try_deliver_elsewhere(msg, hops, may_wait).await {
            Away::Here(msg) => {
                self.send_ungated(ObjectMsg::User(msg)).await;
                Attempt::Done(Ok(()))
            }
            Away::Tried(attempt) => attempt,
        }
    }

    /// [`Self::try_deliver`], giving back a message this node owns.
    #[cfg(feature = "mesh")]
    async fn try_deliver_elsewhere(&self, msg: O::Msg, hops: u8, may_wait: bool) -> Away<O> {
        let replicated = self.objects.replication.get().is_some();
        let may_wait = may_wait && replicated;
        let route = match self.route_at(hops) {
            Ok(route) => route,
            Err(ObjectError::ShardUnavailable { .. }) if may_wait => {
                return Away::Tried(Attempt::Wait(msg))
            }
            Err(error) => return Away::Tried(Attempt::Done(Err(ObjectSendError::new(error, msg)))),
        };
        let Route::Remote(mesh, node, send, _) = route else {
            return Away::Here(msg);
        };
        let max = if replicated {
            MAX_REPLICATED_HOPS
        } else {
            MAX_HOPS
        };
        if hops >= max {
            tracing::warn!(object = %self.name, owner = %node, hops, "dropping a message: nodes disagree about its owner");
            let name = self.name.to_string();
            return Away::Tried(Attempt::Done(Err(ObjectSendError::new(
                ObjectError::Misrouted { name },
                msg,
            ))));
        }
        // A dial-only client's crossing to its gateway is not counted (module doc).
        let crossed = if mesh.is_dial_only() { hops } else { hops + 1 };
        Away::Tried(match send(mesh, node, self.envelope(msg, crossed)).await {
            // The leader this node knew is gone: wait for the next one.
            Err(e) if may_wait && matches!(e.error, ObjectError::Unreachable { .. }) => {
                Attempt::Wait(e.msg)
            }
            done => Attempt::Done(done),
        })
    }
}

#[cfg(feature = "mesh")]
/// One attempt to deliver a message away from this node ([`ObjectRef::try_deliver_elsewhere`]).
enum Away<O: Object> {
    /// This node owns the object: the message, for the activation here.
    Here(O::Msg),
    /// Sent elsewhere, failed, or to wait for a leader.
    Tried(Attempt<O>),
}

#[cfg(feature = "mesh")]
/// What one delivery attempt ended with ([`ObjectRef::try_deliver`]).
pub(super) enum Attempt<O: Object> {
    /// Delivered, or failed for good.
    Done(Delivered<O>),
    /// The object's shard has no reachable leader now: the message, to try again later.
    Wait(O::Msg),
}

#[cfg(feature = "mesh")]
/// A placed class's router: takes envelopes from other nodes and delivers each to its
/// object here (or forwards it once more if this node does not own it; see the module doc).
/// A message whose shard has no reachable leader is parked with its shard's others
/// (`parking`) and retried with backoff, or at once when this node starts serving a shard,
/// so the class's other shards keep flowing.
async fn run_router<O: Object>(mut ctx: Ctx<Envelope<O>>, objects: Weak<Objects>) {
    use super::parking::{next_wake, Parked, Wake};
    let Some(served) = objects.upgrade().map(|o| o.shard_served.clone()) else {
        return;
    };
    let mut parked = Parked::<O>::default();
    let mut generation = served.generation();
    loop {
        let wake = next_wake(
            &mut ctx,
            &served,
            generation,
            parked.next_retry(),
            parked.is_full(),
        )
        .await;
        let Some(objects) = objects.upgrade() else {
            return;
        };
        // Read before looking at any route: a shard served from now on ends the next wait.
        generation = served.generation();
        match wake {
            Wake::Msg(Message::User(env)) => parked.route(&objects, env).await,
            Wake::Served => parked.wake_all(),
            Wake::Closed => return,
            Wake::Msg(Message::Signal(_)) | Wake::Due => {}
        }
        parked.retry_due(&objects).await;
    }
}

#[cfg(feature = "mesh")]
impl Objects {
    /// Registers a placed class's envelope with the mesh and starts its router (when the
    /// node has a mesh).
    pub(super) fn start_router<O>(self: &Arc<Self>)
    where
        O: Object,
        O::Msg: Serialize + DeserializeOwned,
    {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let name = router_name(O::CLASS);
        if let Err(error) = cluster.mesh.declare::<Envelope<O>>(name) {
            tracing::error!(class = O::CLASS, %error, "cannot register the object class with the mesh (two classes with one CLASS?)");
            return;
        }
        if self.handle.whereis(name).is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = self.handle.spawn_opts(
            SpawnOptions {
                name: Some(name.to_owned()),
                // Every node runs its own router of the class.
                local_name: true,
                ..SpawnOptions::default()
            },
            move |ctx| run_router::<O>(ctx, weak),
        );
        if let Err(error) = spawned {
            tracing::debug!(class = O::CLASS, ?error, "router already running");
        }
    }

    /// Joins the objects to a mesh (once, at node start, before classes are hosted) and
    /// starts the handoff process that reacts to membership changes.
    pub(crate) fn join_cluster(self: &Arc<Self>, cluster: Cluster) {
        let mut events = cluster.mesh.node_events();
        let (mesh, creates, client) = (cluster.mesh.clone(), cluster.creates, cluster.client);
        if self.cluster.set(cluster).is_err() {
            return;
        }
        match Replication::start(self, &mesh, creates, client, self.config.shards.clone()) {
            Ok(replication) => {
                let _ = self.replication.set(replication);
            }
            Err(error) => {
                tracing::error!(%error, "replicated shards could not start; placed objects fall back to rendezvous placement (one disk per object)");
            }
        }
        let weak = Arc::downgrade(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            loop {
                let event = events.next().await;
                let Some(objects) = weak.upgrade() else {
                    return;
                };
                let node = match &event {
                    NodeEvent::Up { node, .. } | NodeEvent::Down { node, .. } => *node,
                    _ => continue,
                };
                // Clients come and go with every `cairn-node status`; they own nothing, so
                // ownership cannot have changed.
                let client = objects.cluster.get().is_some_and(|c| {
                    c.mesh
                        .peers()
                        .iter()
                        .any(|p| p.node == node && is_client(&p.name))
                });
                // With replicated shards, leadership decides (see `replication`).
                if client || objects.replication.get().is_some() {
                    continue;
                }
                tracing::debug!(%node, ?event, "membership changed; handing off objects owned elsewhere");
                objects.hand_off_unowned().await;
            }
        });
    }

    /// Tells every activation whose key this node no longer owns to hand off.
    async fn hand_off_unowned(&self) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let nodes = cluster.candidates();
        let me = cluster.mesh.node();
        let moving: Vec<_> = {
            let classes = self.classes.read();
            self.active
                .lock()
                .values()
                .filter(|a| classes.get(a.class).is_some_and(|c| c.remote.is_some()))
                .filter(|a| {
                    placement::owner(a.class, &a.key, &nodes, a.region.as_deref()) != Ok(me)
                })
                .map(|a| {
                    let name = super::reference::object_name(a.class, a.region.as_deref(), &a.key);
                    (name, a.handoff.clone())
                })
                .collect()
        };
        for (name, handoff) in moving {
            tracing::info!(object = %name, "no longer owned here; handing off");
            handoff().await;
        }
    }
}
