//! Durable objects: virtual actors addressed by `(class, key)`, each with its own durable
//! keyspace and alarm, activated on first message and evicted when idle.
//!
//! An application implements [`Object`] for a class, hosts the class on its nodes
//! ([`crate::Node::host`]) and sends through an [`ObjectRef`]. The parts, each with its
//! own module doc:
//! - `api`: the [`Object`] trait, [`ObjectCtx`], [`ObjectError`].
//! - `reference`: [`ObjectRef`], what `send`, `try_send` and `call` guarantee.
//! - `routing`: placement of keys across a mesh, envelopes, per-class routers, hand-off when
//!   membership changes.
//! - `activation`: one activation per `(class, key)`, the output gate and in-flight commits,
//!   failures, eviction.
//! - `output_queue`: the pure state machine deciding when held output leaves and when a
//!   failed commit re-activates the object.
//! - `alarms`: the node-wide alarm process and retries.
//! - `clock`: the wall clock alarms are read against ([`WallClock`]; a manual one in tests).
//! - `stats`: per-class counters (activations, evictions, handler and gate-hold times, alarms).
//!
//! `Objects` is the node-wide directory they share: hosted classes, the store, live
//! activations, the mesh. It lives as long as the node and is installed in the runtime as an
//! extension (named processes find their store through it, see [`crate::durable`]).

#[cfg(feature = "mesh")]
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use cairn_scheduler::{ActorRef, Handle, Pid};
use cairn_storage::Store;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod activation;
mod alarms;
mod api;
mod clock;
#[cfg(feature = "http")]
pub mod http;
mod output_queue;
#[cfg(feature = "mesh")]
mod parking;
mod reference;
#[cfg(feature = "mesh")]
mod replication;
mod routing;
#[cfg(feature = "mesh")]
mod shard_wait;
mod stats;

pub use alarms::{ALARMS_DUE_COUNT_LIMIT, ALARM_MAX_RETRIES, ALARM_RESCAN, ALARM_RETRY_BASE};
pub(crate) use api::ObjectsConfig;
pub use api::{
    Object, ObjectCtx, ObjectError, ObjectMsg, ObjectSendError, Retry, DEFAULT_IDLE_TIMEOUT,
};
pub use clock::WallClock;
pub use reference::ObjectRef;
#[cfg(feature = "mesh")]
pub use replication::{
    CommitFailure, MAX_REPLICATED_HOPS, PROPOSE_TIMEOUT, SHARDS_TAG, SHARD_WAIT,
};
#[cfg(feature = "mesh")]
pub(crate) use routing::Cluster;
pub use routing::{is_client, CLIENT_NAME_SUFFIX, MAX_HOPS};
pub use stats::ObjectClassStats;

use activation::Active;
use alarms::{AlarmCmd, AlarmDispatch, NamedAlarm};

/// A hosted class.
struct Class {
    alarm: AlarmDispatch,
    /// For placed classes: its route to other nodes (type-erased, as the class's message
    /// type is not known here; see `routing::remote_route`).
    #[cfg(feature = "mesh")]
    remote: Option<Arc<dyn Any + Send + Sync>>,
}

/// Whether class `O` must not be hosted: its name cannot name objects (it holds `@` or `/`,
/// see `reference`). Logged; sends to it fail with [`ObjectError::BadName`].
fn refuses<O: Object>() -> bool {
    let Some(reason) = reference::name_error(O::CLASS, None) else {
        return false;
    };
    tracing::error!(class = O::CLASS, reason, "object class refused");
    true
}

/// The node's object directory: classes, store, alarm process.
pub(crate) struct Objects {
    handle: Handle,
    store: Store,
    config: ObjectsConfig,
    classes: RwLock<HashMap<&'static str, Class>>,
    /// Which pid last opened each named process's keyspace (see `durable`).
    pub(crate) owners: Mutex<HashMap<String, Pid>>,
    /// How each named process that asked takes its alarm, by name.
    named_alarms: Mutex<HashMap<String, NamedAlarm>>,
    alarm_process: OnceLock<ActorRef<AlarmCmd>>,
    /// Scans the alarm process made (each wake-up is one): see `alarms`.
    alarm_scans: std::sync::atomic::AtomicU64,
    /// Set once at node start when the node has a mesh.
    #[cfg(feature = "mesh")]
    cluster: OnceLock<Cluster>,
    /// The shard layer, set once at node start when the node has a mesh.
    #[cfg(feature = "mesh")]
    replication: OnceLock<Arc<replication::Replication>>,
    /// Wakes messages and requests waiting for a shard when this node starts serving one
    /// (shared with each class's router, which must not keep the objects alive).
    #[cfg(feature = "mesh")]
    shard_served: Arc<shard_wait::ShardServed>,
    /// Live activations by name (`class/key`).
    active: Mutex<HashMap<Arc<str>, Active>>,
    /// Per-class counters.
    stats: stats::ObjectStats,
}

impl Objects {
    pub(crate) fn start(handle: Handle, store: Store, config: ObjectsConfig) -> Arc<Objects> {
        let objects = Arc::new(Objects {
            handle: handle.clone(),
            store,
            config,
            classes: RwLock::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            named_alarms: Mutex::new(HashMap::new()),
            alarm_process: OnceLock::new(),
            alarm_scans: std::sync::atomic::AtomicU64::new(0),
            #[cfg(feature = "mesh")]
            cluster: OnceLock::new(),
            #[cfg(feature = "mesh")]
            replication: OnceLock::new(),
            #[cfg(feature = "mesh")]
            shard_served: Arc::default(),
            active: Mutex::new(HashMap::new()),
            stats: stats::ObjectStats::default(),
        });
        // A manual clock (tests) wakes the alarm process whenever it is moved.
        let weak = Arc::downgrade(&objects);
        objects.config.clock.on_change(move || {
            if let Some(objects) = weak.upgrade() {
                objects.wake_alarms();
            }
        });
        #[cfg(feature = "http")]
        handle.set_extension(Arc::new(http::HttpState::default()));
        let alarms = alarms::start(&handle, Arc::downgrade(&objects));
        let _ = objects.alarm_process.set(alarms);
        objects
    }

    #[cfg(feature = "mesh")]
    fn insert_class<O: Object>(&self, remote: Option<Arc<dyn Any + Send + Sync>>) {
        let alarm = alarms::dispatch::<O>();
        self.classes
            .write()
            .insert(O::CLASS, Class { alarm, remote });
    }

    /// A class whose objects live on whichever node sends to them.
    pub(crate) fn host_local<O: Object>(&self) {
        if refuses::<O>() {
            return;
        }
        // Listed in metrics from the start, before its first activation.
        self.stats.class(O::CLASS);
        #[cfg(feature = "http")]
        http::register::<O>(&self.handle);
        #[cfg(feature = "mesh")]
        self.insert_class::<O>(None);
        #[cfg(not(feature = "mesh"))]
        {
            let alarm = alarms::dispatch::<O>();
            self.classes.write().insert(O::CLASS, Class { alarm });
        }
    }

    /// A class placed across the mesh (when there is one): declares its envelope to the
    /// mesh and starts its router.
    pub(crate) fn host<O>(self: &Arc<Self>)
    where
        O: Object,
        O::Msg: Serialize + DeserializeOwned,
    {
        if refuses::<O>() {
            return;
        }
        self.stats.class(O::CLASS);
        #[cfg(feature = "http")]
        http::register::<O>(&self.handle);
        #[cfg(feature = "mesh")]
        {
            self.insert_class::<O>(Some(routing::remote_route::<O>()));
            self.start_router::<O>();
        }
        // Without a mesh every class is local; the bound stays so code builds both ways.
        #[cfg(not(feature = "mesh"))]
        self.host_local::<O>();
    }

    /// Live activations per class on this node.
    pub(crate) fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for a in self.active.lock().values() {
            *counts.entry(a.class.to_owned()).or_default() += 1;
        }
        counts
    }

    /// Per-class counters, with every hosted or seen class.
    pub(crate) fn class_stats(&self) -> BTreeMap<String, ObjectClassStats> {
        self.stats.snapshot(&self.counts())
    }

    /// The `n` objects handling the most messages lately, hottest first (sampled).
    #[cfg(feature = "http")]
    pub(crate) fn hot_objects(&self, n: usize) -> Vec<stats::HotObject> {
        self.stats.hot.top(n)
    }

    /// Whether `class` is hosted here and placed across the mesh.
    #[cfg(feature = "http")]
    fn is_placed(&self, class: &str) -> bool {
        self.classes
            .read()
            .get(class)
            .is_some_and(|c| c.remote.is_some())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    #[cfg(feature = "mesh")]
    fn replication(&self) -> Option<&Arc<replication::Replication>> {
        self.replication.get()
    }

    /// The shard layer and the shard of `class/key` when the class is placed on a node with
    /// replicated shards (its writes then go through the shard, see `replication`).
    #[cfg(feature = "mesh")]
    fn shard_for(
        &self,
        class: &'static str,
        key: &str,
        region: Option<&str>,
    ) -> Option<(Arc<replication::Replication>, cairn_shard::ShardId)> {
        let replication = self.replication.get()?;
        let placed = self
            .classes
            .read()
            .get(class)
            .is_some_and(|c| c.remote.is_some());
        placed.then(|| {
            let shard = replication.shard_of(class, key, region);
            (Arc::clone(replication), shard)
        })
    }
}
