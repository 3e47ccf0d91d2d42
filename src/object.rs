//! Durable objects: virtual actors addressed by `(class, key)`, each with its own durable
//! keyspace and alarm, activated on first message and evicted when idle.
//!
//! ## Activation (semantic 20)
//! An object's process is registered under the name `class/key`. [`ObjectRef`] looks the name
//! up; if nobody holds it, it spawns the object under that name — the registry admits one
//! winner, so there is at most one activation per `(class, key)` on a node. The process opens
//! the keyspace `class/key` and calls [`Object::activate`], which loads state from storage.
//!
//! ## Placement across the mesh (semantics 20–21)
//! On a node with a mesh, an object class registered with [`crate::Node::register`] is
//! *placed*: every send first computes the key's owner with [`crate::placement`] over the
//! live nodes (this node, unless it is a client, plus the mesh's peers), within the region
//! of a location hint ([`crate::Node::object_in`]) when one is given. If the owner is this
//! node the message takes the local path below; otherwise it travels, as an envelope
//! `(key, region, hops, msg)` serialized with rmp-serde, to the owner's per-class *router*
//! process `cairn.objects.<CLASS>` (see [`router_name`]), which hands it to its local
//! activation. A node only activates objects it owns: a router that gets a key it does not
//! own (the sender's view of the mesh differed) forwards it to the owner it sees, at most
//! [`MAX_HOPS`] times in all, then drops it with a logged warning — two views that keep
//! disagreeing must not bounce a message forever. Alarms are delivered only to objects this
//! node owns (an alarm of an object owned elsewhere waits in storage).
//!
//! Ordering per sender and object holds across nodes: the mesh keeps one sender's frames in
//! order to the router, which is one process delivering envelopes one by one. The router
//! waits when an object's mailbox is full (backpressure reaches the sender through the mesh
//! lane), which also holds up the class's other objects on that node.
//!
//! Classes registered with [`crate::Node::register_local`] (messages that cannot be
//! serialized) are never placed: each node has its own objects of that class.
//!
//! ## Membership change
//! When a node joins or leaves, some keys change owner (about 1/n of them). The old owner
//! hands off: each activation it no longer owns finishes what is already in its mailbox and
//! in flight, then deactivates as on eviction; new messages go to the new owner, which
//! activates the object from *its own* store. **Storage does not move yet**: the object's
//! durable state stays on the old owner's disk (storage migration is a later issue), so
//! until then a key that changes owner starts from what the new owner has (usually
//! nothing). In a stable mesh there is one activation per key; while views of the
//! membership differ (during a join or a failure) the old and new owner may briefly both
//! run one — there is no fencing yet.
//!
//! ## Handling, implicit transactions, output gate (semantics 14–16)
//! Each message is handled with an output gate active: every message and reply the handler
//! sends is held. When the handler returns, its writes are handed to the group-commit writer
//! as one write set, and the held output waits in a queue behind that commit. The object
//! handles its next message meanwhile; when commits complete (in order), their held output is
//! released in order. A handler that wrote nothing releases its output as soon as everything
//! before it has committed.
//!
//! ## Failures (semantic 17)
//! - A handler error or panic discards its writes and its held output (callers get
//!   `NoReply`), then re-activates the object in place from storage, keeping its mailbox.
//! - A failed commit drops the held output of that commit and of every later in-flight one
//!   (their callers get `NoReply`), then re-activates the object in place from what is
//!   durable, keeping its mailbox: messages queued behind the failure are not lost. (The
//!   issue text asked for an exit with `StorageFailure` and a supervisor restart; an exit
//!   would drop the queued mail, which semantic 3 forbids.)
//!
//! ## Eviction
//! After [`ObjectsConfig::idle_timeout`] without messages and with nothing in flight, the
//! object closes its mailbox *only if it is empty* and exits; a sender that still held its
//! address gets its message back (`NoProc`) and re-activates the object, so nothing is lost.
//!
//! ## Alarms (semantic 19)
//! `ctx.storage().set_alarm(at)` writes the alarm in the handler's write set. A node-wide alarm
//! process sleeps until the earliest committed alarm, then delivers it to its object (which
//! activates it if it was evicted, also after a node restart). The alarm row is cleared in the
//! same write set as [`Object::alarm`]'s writes (at least once: a crash before that commit
//! delivers it again); a failing alarm is retried after [`ALARM_RETRY_BASE`] doubling, at
//! most [`ALARM_MAX_RETRIES`] times (both configurable). The retry count lives in the
//! activation: an object evicted between retries starts counting again.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use cairn_net::{Mesh, NodeEvent};
use cairn_scheduler::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::placement::{self, Candidate, PlacementError};

use cairn_scheduler::gate::{Gate, HeldOutput};
use cairn_scheduler::{
    ActorRef, CallError, Ctx, ExitReason, Handle, Message, Pid, Reply, SendError, SpawnOptions,
};
use cairn_storage::{CommitTicket, Keyspace, StorageError, Store};
use cairn_supervisor::actor::guarded;
use cairn_supervisor::ActorError;
use parking_lot::{Mutex, RwLock};

/// First retry delay of a failing alarm; it doubles on every further failure.
pub const ALARM_RETRY_BASE: Duration = Duration::from_secs(2);
/// Retries of a failing alarm before it is dropped (logged as an error).
pub const ALARM_MAX_RETRIES: u32 = 6;
/// Default idle time after which an object is evicted from memory.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the alarm process rescans storage even without a wake-up: bounds the delay of
/// alarms written by plain named processes, which do not notify it.
pub const ALARM_RESCAN: Duration = Duration::from_secs(1);
/// How many times a message to an object may cross the mesh before it is dropped: once from
/// the sender to the owner it sees, once more if that node sees another owner. More hops
/// only happen while views of the membership disagree, and bouncing would not settle them.
pub const MAX_HOPS: u8 = 2;
/// Node names ending in this are *clients* (e.g. `cairn-node status`): they join the mesh
/// to send but never own objects, so placement skips them.
pub const CLIENT_NAME_SUFFIX: &str = ".client";

/// A durable object class.
pub trait Object: Send + Sized + 'static {
    /// The class name; objects are addressed by `(CLASS, key)`.
    const CLASS: &'static str;
    /// The messages it handles.
    type Msg: Send + 'static;

    /// Builds the in-memory state, usually from `ctx.storage()`. Runs on every activation.
    fn activate(ctx: &mut ObjectCtx<Self>)
        -> impl Future<Output = Result<Self, ActorError>> + Send;

    /// Handles one message. Its writes commit atomically; what it sends leaves once durable.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// How long this class's objects stay in memory without messages (default: the node's
    /// [`ObjectsConfig::idle_timeout`]).
    fn idle_timeout() -> Option<Duration> {
        None
    }

    /// Runs at eviction, after the mailbox closed (no message can arrive any more). Its writes
    /// commit before the activation ends.
    fn deactivate(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Runs when the object's alarm fires. The alarm is already cleared in this handler's
    /// write set (so `get_alarm()` is `None` unless the handler sets a new one); an error
    /// restores it and retries later with backoff ([`ObjectCtx::alarm_retry_count`]).
    fn alarm(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }
}

/// Errors from sending to objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The class was not registered with [`crate::Node::register`].
    #[error("object class {0:?} is not registered")]
    NotRegistered(&'static str),
    /// `class/key` is longer than a storage name may be.
    #[error("object name {len} bytes long; at most {max}")]
    KeyTooLong {
        /// Length of `class/key`.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A call got no answer.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No node can own the object (none hosts objects, or none is in the hinted region).
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The owner's node could not be reached (or the message could not be serialized).
    #[error("object owner {node} unreachable: {reason}")]
    Unreachable {
        /// The owner.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The message crossed the mesh [`MAX_HOPS`] times without reaching its owner.
    #[error("object {name} not delivered: nodes disagree about its owner")]
    Misrouted {
        /// `class/key`.
        name: String,
    },
}

/// Object settings.
#[derive(Clone, Debug)]
pub struct ObjectsConfig {
    /// Idle time before eviction.
    pub idle_timeout: Duration,
    /// Delay before the first retry of a failed alarm; doubles on each further failure.
    pub alarm_retry_base: Duration,
    /// Retries of a failing alarm before it is dropped.
    pub alarm_max_retries: u32,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            alarm_retry_base: ALARM_RETRY_BASE,
            alarm_max_retries: ALARM_MAX_RETRIES,
        }
    }
}

/// The messages an object's process takes.
pub enum ObjectMsg<M> {
    /// An application message.
    User(M),
    /// The alarm set for `at` is due.
    Alarm(SystemTime),
    /// This node no longer owns the object: finish what is queued, then deactivate.
    Handoff,
}

type AlarmDispatch = Arc<dyn Fn(&Arc<Objects>, &str, SystemTime) -> bool + Send + Sync>;

/// A registered class.
struct Class {
    alarm: AlarmDispatch,
    /// For placed classes: a [`RemoteRoute<O>`] (type-erased, as the class's message type
    /// is not known here).
    remote: Option<Arc<dyn Any + Send + Sync>>,
}

/// What crosses the mesh to a class's router: one message for one object.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "O::Msg: Serialize",
    deserialize = "O::Msg: DeserializeOwned"
))]
struct Envelope<O: Object> {
    key: String,
    region: Option<String>,
    /// Mesh crossings so far, this one included.
    hops: u8,
    msg: O::Msg,
    #[serde(skip)]
    _class: PhantomData<fn() -> O>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a placed class sends an envelope to another node's router (monomorphized at
/// [`Objects::register`], where the message type is known to serialize).
struct RemoteRoute<O: Object> {
    send: SendEnvelope<O>,
    try_send: TrySendEnvelope<O>,
}

/// Sends an envelope of class `O` to a node's router.
type SendEnvelope<O> = fn(Mesh, NodeId, Envelope<O>) -> BoxFuture<Result<(), ObjectError>>;
/// The same without waiting; gives the message back.
type TrySendEnvelope<O> =
    fn(&Mesh, NodeId, Envelope<O>) -> Result<(), SendError<<O as Object>::Msg>>;

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

fn send_envelope<O>(
    mesh: Mesh,
    node: NodeId,
    env: Envelope<O>,
) -> BoxFuture<Result<(), ObjectError>>
where
    O: Object,
    O::Msg: Serialize + DeserializeOwned,
{
    Box::pin(async move {
        let router = mesh.handle().named_ref(router_name(O::CLASS), node);
        router
            .send_ungated(env)
            .await
            .map_err(|e| ObjectError::Unreachable {
                node,
                reason: e.to_string(),
            })
    })
}

/// The registered name of class `class`'s router process, also the mesh tag of its
/// envelopes: `cairn.objects.<class>`.
pub fn router_name(class: &'static str) -> &'static str {
    // Mesh tags are `&'static str`: each class's name is built once and kept for the life of
    // the process (one small string per class, however many nodes register it).
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock();
    names
        .entry(class)
        .or_insert_with(|| Box::leak(format!("cairn.objects.{class}").into_boxed_str()))
}

/// This node's place in a mesh, as objects see it.
pub(crate) struct Cluster {
    /// Its members (with their names and regions) are the placement candidates.
    pub(crate) mesh: Mesh,
}

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

/// A live activation, as the node-wide table knows it.
struct Active {
    class: &'static str,
    key: Arc<str>,
    region: Option<Arc<str>>,
    pid: Pid,
    /// Tells the activation to hand off (see [`ObjectMsg::Handoff`]).
    handoff: Arc<dyn Fn() -> BoxFuture<()> + Send + Sync>,
}

/// The node's object directory: classes, store, alarm process.
pub struct Objects {
    handle: Handle,
    store: Store,
    config: ObjectsConfig,
    classes: RwLock<HashMap<&'static str, Class>>,
    /// Which pid last opened each named process's keyspace (see `durable`).
    pub(crate) owners: Mutex<HashMap<String, Pid>>,
    alarm_process: OnceLock<ActorRef<AlarmCmd>>,
    /// Set once at node start when the node has a mesh.
    cluster: OnceLock<Cluster>,
    /// Live activations by name (`class/key`).
    active: Mutex<HashMap<Arc<str>, Active>>,
}

impl Objects {
    pub(crate) fn start(handle: Handle, store: Store, config: ObjectsConfig) -> Arc<Objects> {
        let objects = Arc::new(Objects {
            handle: handle.clone(),
            store,
            config,
            classes: RwLock::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            alarm_process: OnceLock::new(),
            cluster: OnceLock::new(),
            active: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&objects);
        let alarms = handle
            .spawn_opts(
                SpawnOptions {
                    name: Some("cairn.alarms".to_owned()),
                    local_name: true,
                    ..SpawnOptions::default()
                },
                move |ctx| run_alarms(ctx, weak),
            )
            .expect("the alarm process's name is reserved");
        let _ = objects.alarm_process.set(alarms);
        objects
    }

    /// Joins the objects to a mesh (once, at node start, before classes are registered) and
    /// starts the handoff process that reacts to membership changes.
    pub(crate) fn join_cluster(self: &Arc<Self>, cluster: Cluster) {
        let mut events = cluster.mesh.node_events();
        if self.cluster.set(cluster).is_err() {
            return;
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
                if client {
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
                .map(|a| (format!("{}/{}", a.class, a.key), a.handoff.clone()))
                .collect()
        };
        for (name, handoff) in moving {
            tracing::info!(object = %name, "no longer owned here; handing off");
            handoff().await;
        }
    }

    fn insert_class<O: Object>(&self, remote: Option<Arc<dyn Any + Send + Sync>>) {
        let alarm: AlarmDispatch = Arc::new(|objects, key, at| {
            let target = ObjectRef::<O>::new(objects.clone(), key);
            target.deliver_alarm(at)
        });
        self.classes
            .write()
            .insert(O::CLASS, Class { alarm, remote });
    }

    /// A class whose objects live on whichever node sends to them.
    pub(crate) fn register_local<O: Object>(&self) {
        self.insert_class::<O>(None);
    }

    /// A class placed across the mesh (when there is one): registers its envelope with the
    /// mesh and starts its router.
    pub(crate) fn register<O>(self: &Arc<Self>)
    where
        O: Object,
        O::Msg: Serialize + DeserializeOwned,
    {
        let route: Arc<dyn Any + Send + Sync> = Arc::new(RemoteRoute::<O> {
            send: send_envelope::<O>,
            try_send: try_send_envelope::<O>,
        });
        self.insert_class::<O>(Some(route));
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

    /// Live activations per class on this node.
    pub(crate) fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for a in self.active.lock().values() {
            *counts.entry(a.class.to_owned()).or_default() += 1;
        }
        counts
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn wake_alarms(&self) {
        if let Some(p) = self.alarm_process.get() {
            let _ = p.try_send(AlarmCmd::Rescan);
        }
    }
}

/// The address of one activation of an object.
type Activation<O> = ActorRef<ObjectMsg<<O as Object>::Msg>>;

/// A cheap, cloneable reference to the object `(O::CLASS, key)`. Sending activates it.
pub struct ObjectRef<O: Object> {
    objects: Arc<Objects>,
    key: Arc<str>,
    name: Arc<str>,
    /// Location hint: only nodes of this region may own the object.
    region: Option<Arc<str>>,
    cached: Arc<Mutex<Option<Activation<O>>>>,
    _class: PhantomData<fn() -> O>,
}

/// Where a message to an object goes.
enum Route<O: Object> {
    Local,
    Remote(Mesh, NodeId, SendEnvelope<O>, TrySendEnvelope<O>),
}

impl<O: Object> Clone for ObjectRef<O> {
    fn clone(&self) -> Self {
        ObjectRef {
            objects: self.objects.clone(),
            key: self.key.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            cached: self.cached.clone(),
            _class: PhantomData,
        }
    }
}

impl<O: Object> std::fmt::Debug for ObjectRef<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.name)
    }
}

impl<O: Object> ObjectRef<O> {
    pub(crate) fn new(objects: Arc<Objects>, key: &str) -> Self {
        Self::new_in(objects, key, None)
    }

    pub(crate) fn new_in(objects: Arc<Objects>, key: &str, region: Option<&str>) -> Self {
        ObjectRef {
            name: format!("{}/{key}", O::CLASS).into(),
            key: key.into(),
            region: region.map(Into::into),
            objects,
            cached: Arc::new(Mutex::new(None)),
            _class: PhantomData,
        }
    }

    /// The location hint this reference was made with.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The node that owns the object now: this node's id when it has no mesh or the class
    /// is local ([`crate::Node::register_local`]).
    pub fn owner(&self) -> Result<NodeId, ObjectError> {
        match self.route()? {
            Route::Local => Ok(self.objects.handle.node()),
            Route::Remote(_, node, ..) => Ok(node),
        }
    }

    /// Where messages to the object go now (see the module doc, "Placement").
    fn route(&self) -> Result<Route<O>, ObjectError> {
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
        let owner = placement::owner(
            O::CLASS,
            &self.key,
            &cluster.candidates(),
            self.region.as_deref(),
        )?;
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

    /// Delivers `msg` to the owner: here (activating the object) or through the owner's
    /// router; `hops` is how often it crossed the mesh already.
    async fn deliver(&self, msg: O::Msg, hops: u8) -> Result<(), ObjectError> {
        match self.route()? {
            Route::Local => {
                self.send_ungated(ObjectMsg::User(msg)).await;
                Ok(())
            }
            Route::Remote(mesh, node, send, _) => {
                if hops >= MAX_HOPS {
                    tracing::warn!(object = %self.name, owner = %node, hops, "dropping a message: nodes disagree about its owner");
                    return Err(ObjectError::Misrouted {
                        name: self.name.to_string(),
                    });
                }
                let env = Envelope {
                    key: self.key.to_string(),
                    region: self.region.as_deref().map(str::to_owned),
                    hops: hops + 1,
                    msg,
                    _class: PhantomData,
                };
                send(mesh, node, env).await
            }
        }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's name (`class/key`), which is also its keyspace and registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the current activation on this node, if any (an object owned by another
    /// node has none here).
    pub fn pid(&self) -> Option<Pid> {
        self.objects.handle.whereis(&self.name)
    }

    fn check(&self) -> Result<(), ObjectError> {
        if !self.objects.classes.read().contains_key(O::CLASS) {
            return Err(ObjectError::NotRegistered(O::CLASS));
        }
        if self.name.len() > cairn_storage::MAX_NAME_LEN {
            return Err(ObjectError::KeyTooLong {
                len: self.name.len(),
                max: cairn_storage::MAX_NAME_LEN,
            });
        }
        Ok(())
    }

    /// The live activation, spawning one if there is none; or the pid of a previous
    /// activation that is shutting down (its mailbox closed, its name not yet free), which
    /// the caller must wait for instead of spinning.
    fn activation(&self) -> Lookup<O> {
        if let Some(a) = self.cached.lock().as_ref().filter(|a| a.is_alive()) {
            return Lookup::Live(a.clone());
        }
        let handle = &self.objects.handle;
        loop {
            if let Some(pid) = handle.whereis(&self.name) {
                return match handle.actor_ref::<ObjectMsg<O::Msg>>(pid) {
                    Some(a) if a.is_alive() => {
                        *self.cached.lock() = Some(a.clone());
                        Lookup::Live(a)
                    }
                    // Evicting (mailbox closed), or a process of another type holds the name.
                    _ => Lookup::Exiting(pid),
                };
            }
            let objects = self.objects.clone();
            let key = self.key.clone();
            let region = self.region.clone();
            let spawned = handle.spawn_opts(
                SpawnOptions {
                    name: Some(self.name.to_string()),
                    // Objects are found by placement, not by a cluster-wide name.
                    local_name: true,
                    ..SpawnOptions::default()
                },
                move |ctx| run_object::<O>(ctx, objects, key, region),
            );
            if let Ok(a) = spawned {
                *self.cached.lock() = Some(a.clone());
                return Lookup::Live(a);
            }
            // Lost a race to activate: the winner now holds the name; look it up again.
        }
    }

    /// Sends a message to the object's owner (this node or another), activating the object
    /// if needed and waiting for mailbox room (or for the connection to the owner).
    ///
    /// From inside another object's handler the message is held by that handler's output
    /// gate and sent when its writes are durable — to whichever activation is live then (a
    /// held send that fails then is logged).
    ///
    /// A message to another node is confirmed once it is queued on the connection; if the
    /// owner's node then has no router for the class, it is a dead letter there (logged).
    pub async fn send(&self, msg: O::Msg) -> Result<(), ObjectError> {
        self.check()?;
        match self.hold_if_gated(msg) {
            Ok(()) => Ok(()),
            Err(msg) => self.deliver(msg, 0).await,
        }
    }

    /// Inside a gated handler, holds `msg` in the gate as a send through this reference
    /// (resolved at release, so an activation evicted meanwhile is replaced). Gives the
    /// message back when no gate is active.
    fn hold_if_gated(&self, msg: O::Msg) -> Result<(), O::Msg> {
        if !cairn_scheduler::gate::is_active() {
            return Err(msg);
        }
        let me = self.clone();
        let held = cairn_scheduler::gate::hold_future(Box::pin(async move {
            if let Err(error) = me.deliver(msg, 0).await {
                tracing::warn!(object = %me.name, %error, "a held send failed after its commit");
            }
        }));
        debug_assert!(held.is_ok(), "a gate is active on this thread");
        Ok(())
    }

    /// Delivers `msg`, re-activating the object as often as needed: a message given back by
    /// an activation that closed meanwhile is sent again, so nothing is lost to eviction.
    async fn send_ungated(&self, mut msg: ObjectMsg<O::Msg>) {
        loop {
            match self.activation() {
                Lookup::Live(a) => match a.send_ungated(msg).await {
                    Ok(()) => return,
                    Err(e) => msg = e.into_inner(),
                },
                Lookup::Exiting(pid) => {
                    self.objects.handle.wait_exit(pid).await;
                }
            }
        }
    }

    /// Sends without waiting: `Full` gives the message back if the mailbox is full, or if
    /// the object is being evicted right now (try again shortly). Held by the output gate when
    /// called from a gated handler (see [`ObjectRef::send`]).
    ///
    /// For an object owned by another node, `Full` means no room on the connection to that
    /// node now, or the connection is still being opened (this starts opening it); the
    /// owner's mailbox is not consulted (a full one there holds the message on that node's
    /// router). `NoConnection` if the owner cannot be reached, `NoProc` when the class is
    /// not registered or no node can own the object.
    pub fn try_send(&self, msg: O::Msg) -> Result<(), SendError<O::Msg>> {
        if self.check().is_err() {
            return Err(SendError::NoProc(msg));
        }
        let Err(msg) = self.hold_if_gated(msg) else {
            return Ok(());
        };
        match self.route() {
            Ok(Route::Local) => {}
            Ok(Route::Remote(mesh, node, _, try_send)) => {
                let env = Envelope {
                    key: self.key.to_string(),
                    region: self.region.as_deref().map(str::to_owned),
                    hops: 1,
                    msg,
                    _class: PhantomData,
                };
                return try_send(&mesh, node, env);
            }
            Err(_) => return Err(SendError::NoProc(msg)),
        }
        let mut msg = ObjectMsg::User(msg);
        loop {
            match self.activation() {
                Lookup::Live(a) => match a.try_send_ungated(msg) {
                    Ok(()) => return Ok(()),
                    Err(SendError::Full(ObjectMsg::User(m))) => return Err(SendError::Full(m)),
                    Err(e) => msg = e.into_inner(),
                },
                Lookup::Exiting(_) => {
                    let ObjectMsg::User(m) = msg else {
                        unreachable!("only user messages are sent here")
                    };
                    return Err(SendError::Full(m));
                }
            }
        }
    }

    /// Sends a request to the owner and waits for the answer (at most `timeout` for the
    /// answer). The request leaves at once even from inside another object's handler, which
    /// waits for it. To an owner on another node, the [`Reply`] travels in the message and
    /// the answer comes back over the mesh.
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<R>) -> O::Msg,
        timeout: Duration,
    ) -> Result<R, ObjectError> {
        self.check()?;
        let (reply, rx) = Reply::pair();
        self.deliver(make(reply), 0).await?;
        let answer = self.objects.handle.timeout(timeout, rx).await;
        Ok(answer.map_err(|_| CallError::Timeout)??)
    }

    /// Hands a due alarm to the live (or a new) activation; false if it could not be
    /// delivered now (full mailbox, activation shutting down): the next scan tries again.
    fn deliver_alarm(&self, at: SystemTime) -> bool {
        if !matches!(self.route(), Ok(Route::Local)) {
            // Owned elsewhere now: the alarm waits in this node's storage (see the module
            // doc, "Membership change").
            return false;
        }
        let mut msg = ObjectMsg::Alarm(at);
        loop {
            match self.activation() {
                Lookup::Live(a) => match a.try_send_ungated(msg) {
                    Ok(()) => return true,
                    Err(SendError::NoProc(m)) => msg = m,
                    Err(_) => return false,
                },
                Lookup::Exiting(_) => return false,
            }
        }
    }
}

/// The outcome of looking an object's activation up.
enum Lookup<O: Object> {
    Live(Activation<O>),
    Exiting(Pid),
}

/// What an object's callbacks get: its storage, key, and process context.
pub struct ObjectCtx<O: Object> {
    ctx: Ctx<ObjectMsg<O::Msg>>,
    storage: Keyspace,
    key: Arc<str>,
    region: Option<Arc<str>>,
    objects: Arc<Objects>,
    alarm_retries: u32,
}

impl<O: Object> ObjectCtx<O> {
    /// The object's durable keyspace (`class/key`).
    pub fn storage(&self) -> &Keyspace {
        &self.storage
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current activation's pid.
    pub fn pid(&self) -> Pid {
        self.ctx.pid()
    }

    /// The runtime.
    pub fn handle(&self) -> &Handle {
        self.ctx.handle()
    }

    /// A reference to another object (of any registered class).
    pub fn object<P: Object>(&self, key: &str) -> ObjectRef<P> {
        ObjectRef::new(self.objects.clone(), key)
    }

    /// Inside [`Object::alarm`]: how many times this alarm has failed before (0 on the
    /// first delivery).
    pub fn alarm_retry_count(&self) -> u32 {
        self.alarm_retries
    }

    /// A reference to another object, placed within `region` (see [`crate::Node::object_in`]).
    pub fn object_in<P: Object>(&self, key: &str, region: &str) -> ObjectRef<P> {
        ObjectRef::new_in(self.objects.clone(), key, Some(region))
    }

    /// A reference to this object (with the location hint it was activated with).
    pub fn me(&self) -> ObjectRef<O> {
        ObjectRef::new_in(self.objects.clone(), &self.key, self.region.as_deref())
    }
}

/// Output waiting for a commit: `ticket` is `None` for a handler that wrote nothing.
struct InFlight {
    ticket: Option<CommitTicket>,
    held: HeldOutput,
}

enum Event<M> {
    Committed(Result<(), StorageError>),
    Msg(Message<ObjectMsg<M>>),
    Idle,
}

/// Keeps an activation in the node's table of live activations while it runs.
struct ActiveGuard {
    objects: Arc<Objects>,
    name: Arc<str>,
    pid: Pid,
}

impl ActiveGuard {
    fn new<O: Object>(
        ctx: &Ctx<ObjectMsg<O::Msg>>,
        objects: &Arc<Objects>,
        key: &Arc<str>,
        region: &Option<Arc<str>>,
    ) -> ActiveGuard {
        let name: Arc<str> = format!("{}/{key}", O::CLASS).into();
        let me = ctx.me();
        let handoff: Arc<dyn Fn() -> BoxFuture<()> + Send + Sync> = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move {
                // Gone already: nothing to hand off.
                let _ = me.send_ungated(ObjectMsg::Handoff).await;
            })
        });
        objects.active.lock().insert(
            name.clone(),
            Active {
                class: O::CLASS,
                key: key.clone(),
                region: region.clone(),
                pid: ctx.pid(),
                handoff,
            },
        );
        ActiveGuard {
            objects: objects.clone(),
            name,
            pid: ctx.pid(),
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut active = self.objects.active.lock();
        // A newer activation may have registered the name since this one closed.
        if active.get(&self.name).is_some_and(|a| a.pid == self.pid) {
            active.remove(&self.name);
        }
    }
}

async fn run_object<O: Object>(
    ctx: Ctx<ObjectMsg<O::Msg>>,
    objects: Arc<Objects>,
    key: Arc<str>,
    region: Option<Arc<str>>,
) -> ExitReason {
    let name = format!("{}/{key}", O::CLASS);
    let _active = ActiveGuard::new::<O>(&ctx, &objects, &key, &region);
    let storage = match objects.store.keyspace(&name) {
        Ok(ks) => ks,
        Err(e) => return ExitReason::StorageFailure(e.to_string()),
    };
    storage.discard_pending();
    let mut octx = ObjectCtx {
        ctx,
        storage,
        key,
        region,
        objects: objects.clone(),
        alarm_retries: 0,
    };
    let mut object = match activate::<O>(&mut octx).await {
        Ok(o) => o,
        Err(reason) => return reason,
    };
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut idle = O::idle_timeout().unwrap_or(objects.config.idle_timeout);
    loop {
        let event = next_event(&mut octx, &mut inflight, idle).await;
        let msg = match event {
            Event::Committed(Ok(())) => {
                let done = inflight.pop_front().expect("a commit completed");
                done.held.release().await;
                continue;
            }
            Event::Committed(Err(e)) => {
                tracing::error!(object = %name, error = %e, "commit failed; its held output and everything after it are dropped; restarting from storage");
                // Every later in-flight set of this keyspace fails too (EarlierCommitFailed);
                // wait for them so the re-activation reads only durable state. Their held
                // output is dropped: callers get NoReply, never a reply claiming a lost write.
                for later in inflight.drain(..) {
                    if let Some(ticket) = later.ticket {
                        let _ = ticket.await;
                    }
                }
                octx.storage.discard_pending();
                // Restart in place, keeping the mailbox: messages queued behind the failed
                // commit are handled by the new incarnation, not lost.
                object = match activate::<O>(&mut octx).await {
                    Ok(o) => o,
                    Err(reason) => return reason,
                };
                continue;
            }
            Event::Idle => {
                if !octx.ctx.close_if_idle() {
                    continue;
                }
                return deactivate(&mut object, &mut octx, &name).await;
            }
            Event::Msg(Message::Signal(_)) => continue,
            Event::Msg(Message::User(ObjectMsg::Handoff)) => {
                // Evict as soon as nothing is queued or in flight (the next idle check).
                idle = Duration::ZERO;
                continue;
            }
            Event::Msg(Message::User(msg)) => msg,
        };
        let alarm_at = match &msg {
            ObjectMsg::Alarm(at) => Some(*at),
            ObjectMsg::User(_) | ObjectMsg::Handoff => None,
        };
        if let Some(at) = alarm_at {
            // Stale delivery: the alarm was deleted or moved since it was scanned.
            if octx.storage.get_alarm().ok().flatten() != Some(at) {
                continue;
            }
            // Cleared in the handler's own write set (DESIGN.md 19).
            let _ = octx.storage.delete_alarm();
        }
        let mut gate = Gate::new();
        let result = {
            let fut = match msg {
                ObjectMsg::User(m) => Box::pin(object.handle(m, &mut octx)) as HandlerFuture<'_>,
                ObjectMsg::Alarm(_) => Box::pin(object.alarm(&mut octx)),
                ObjectMsg::Handoff => unreachable!("handoff is taken before handling"),
            };
            gated(&mut gate, fut).await
        };
        if let Err(reason) = result {
            tracing::warn!(object = %name, %reason, "handler failed; its writes and output are discarded");
            octx.storage.discard_pending();
            drop(gate.take());
            if let Some(at) = alarm_at {
                schedule_alarm_retry(&objects.config, &mut octx, at);
                inflight.push_back(InFlight {
                    ticket: Some(octx.storage.commit()),
                    held: Gate::new().take(),
                });
                objects.wake_alarms();
            }
            // Restart in place from what is durable, keeping the mailbox.
            object = match activate::<O>(&mut octx).await {
                Ok(o) => o,
                Err(reason) => return reason,
            };
            continue;
        }
        if alarm_at.is_some() {
            octx.alarm_retries = 0;
        }
        let ticket = octx.storage.has_pending().then(|| octx.storage.commit());
        if ticket.is_some() {
            // The handler may have set or moved the alarm: the alarm process rescans.
            objects.wake_alarms();
        }
        inflight.push_back(InFlight {
            ticket,
            held: gate.take(),
        });
    }
}

type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ActorError>> + Send + 'a>>;

/// Runs a handler with `gate` active for each of its polls, catching panics.
async fn gated(gate: &mut Gate, fut: HandlerFuture<'_>) -> Result<(), ExitReason> {
    let mut fut = pin!(guarded(fut));
    std::future::poll_fn(|cx| gate.poll_within(fut.as_mut(), cx)).await
}

/// Eviction after the mailbox closed: the `deactivate` hook, its commit, its output.
async fn deactivate<O: Object>(object: &mut O, octx: &mut ObjectCtx<O>, name: &str) -> ExitReason {
    let mut gate = Gate::new();
    let result = gated(&mut gate, Box::pin(object.deactivate(octx))).await;
    if let Err(reason) = result {
        tracing::warn!(object = %name, %reason, "deactivate failed; its writes are discarded");
        octx.storage.discard_pending();
        return ExitReason::Normal;
    }
    if octx.storage.has_pending() {
        if let Err(e) = octx.storage.commit().await {
            return ExitReason::StorageFailure(e.to_string());
        }
    }
    gate.take().release().await;
    ExitReason::Normal
}

fn schedule_alarm_retry<O: Object>(
    config: &ObjectsConfig,
    octx: &mut ObjectCtx<O>,
    at: SystemTime,
) {
    octx.alarm_retries += 1;
    if octx.alarm_retries > config.alarm_max_retries {
        tracing::error!(
            object = %octx.storage.name(),
            retries = config.alarm_max_retries,
            "alarm kept failing; dropping it"
        );
        octx.alarm_retries = 0;
        let _ = octx.storage.delete_alarm();
        return;
    }
    let delay = config.alarm_retry_base * 2u32.saturating_pow(octx.alarm_retries - 1);
    let next = SystemTime::now().max(at) + delay;
    let _ = octx.storage.set_alarm(next);
}

async fn activate<O: Object>(octx: &mut ObjectCtx<O>) -> Result<O, ExitReason> {
    let mut fut = pin!(guarded(O::activate(octx)));
    match fut.as_mut().await {
        Ok(o) => Ok(o),
        Err(reason) => {
            tracing::error!(%reason, "object activation failed");
            Err(reason)
        }
    }
}

/// Waits for whichever comes first: the oldest in-flight commit completing, a message, or
/// the idle timeout (only when nothing is in flight).
async fn next_event<O: Object>(
    octx: &mut ObjectCtx<O>,
    inflight: &mut VecDeque<InFlight>,
    idle: Duration,
) -> Event<O::Msg> {
    let handle = octx.ctx.handle().clone();
    let mut idle_timer = (inflight.is_empty()).then(|| handle.sleep(idle));
    std::future::poll_fn(|cx| {
        if let Some(front) = inflight.front_mut() {
            match front.ticket.as_mut() {
                None => return Poll::Ready(Event::Committed(Ok(()))),
                Some(t) => {
                    if let Poll::Ready(r) = Pin::new(t).poll(cx) {
                        return Poll::Ready(Event::Committed(r));
                    }
                }
            }
        }
        if let Poll::Ready(Some(m)) = pin!(octx.ctx.recv()).poll(cx) {
            return Poll::Ready(Event::Msg(m));
        }
        if let Some(t) = idle_timer.as_mut() {
            if pin!(t).poll(cx).is_ready() {
                return Poll::Ready(Event::Idle);
            }
        }
        Poll::Pending
    })
    .await
}

/// A placed class's router: takes envelopes from other nodes and delivers each to its
/// object here (or forwards it once more if this node does not own it; see the module doc).
async fn run_router<O: Object>(mut ctx: Ctx<Envelope<O>>, objects: Weak<Objects>) {
    while let Some(msg) = ctx.recv().await {
        let Message::User(env) = msg else {
            continue;
        };
        let Some(objects) = objects.upgrade() else {
            return;
        };
        let target = ObjectRef::<O>::new_in(objects, &env.key, env.region.as_deref());
        if let Err(error) = target.deliver(env.msg, env.hops).await {
            tracing::warn!(object = %target.name, %error, "router could not deliver a message");
        }
    }
}

/// Commands for the alarm process.
pub(crate) enum AlarmCmd {
    Rescan,
}

/// The node's alarm process: sleeps until the earliest committed alarm (or a rescan request,
/// or [`ALARM_RESCAN`]), then delivers every due alarm to its object.
async fn run_alarms(mut ctx: Ctx<AlarmCmd>, objects: std::sync::Weak<Objects>) {
    // (name, at) delivered recently: not delivered again while the object handles it.
    let mut delivered: HashMap<String, (SystemTime, std::time::Instant)> = HashMap::new();
    loop {
        let Some(objs) = objects.upgrade() else {
            return;
        };
        let now = SystemTime::now();
        match objs.store.due_alarms(now) {
            Ok(due) => {
                for alarm in due {
                    let fresh = delivered.get(&alarm.name).is_none_or(|&(at, when)| {
                        at != alarm.at || when.elapsed() > Duration::from_secs(30)
                    });
                    if !fresh {
                        continue;
                    }
                    let class = alarm.name.split_once('/').map(|(class, key)| {
                        let dispatch = objs.classes.read().get(class).map(|c| c.alarm.clone());
                        (dispatch, key)
                    });
                    let was_delivered = match class {
                        Some((Some(dispatch), key)) => dispatch(&objs, key, alarm.at),
                        // A named process's alarm: delivered if it runs now, else on a later
                        // scan once a process has registered the name again.
                        _ => objs
                            .handle
                            .whereis(&alarm.name)
                            .is_some_and(|pid| objs.handle.deliver_alarm(pid, alarm.at)),
                    };
                    if was_delivered {
                        delivered.insert(alarm.name.clone(), (alarm.at, std::time::Instant::now()));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "alarm scan failed"),
        }
        let wait = match objs.store.next_alarm() {
            Ok(Some(next)) => next
                .at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(1))
                .min(ALARM_RESCAN),
            _ => ALARM_RESCAN,
        };
        drop(objs);
        delivered.retain(|_, (_, when)| when.elapsed() < Duration::from_secs(60));
        let _ = ctx.recv_timeout(wait).await;
        while ctx.try_recv().is_some() {}
    }
}
