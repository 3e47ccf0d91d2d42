//! # Cairn
//!
//! Durable-Objects-style actors on an Erlang/OTP-style runtime, self-hosted, in Rust.
//!
//! This facade wires the layers into a [`Node`] and re-exports what applications use through
//! [`prelude`]. Today a node is local: the scheduler (processes, links, monitors, timers,
//! registry) and OTP-style supervision. Durable storage and the mesh plug in here as their
//! crates land.
//!
//! ```
//! use std::time::Duration;
//! use cairn::prelude::*;
//!
//! enum Greeter { Hello(String, Reply<String>) }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let node = Node::builder().workers(2).data_dir(dir.path()).start().unwrap();
//! node.spawn_named("greeter", |mut ctx: Ctx<Greeter>| async move {
//!     while let Some(Message::User(Greeter::Hello(name, reply))) = ctx.recv().await {
//!         let _ = reply.send(format!("hello, {name}"));
//!     }
//! }).unwrap();
//! let pid = node.whereis("greeter").unwrap();
//! let answer = node.block_on(node.call(pid, |r| Greeter::Hello("ada".into(), r), Duration::from_secs(1)));
//! assert_eq!(answer.unwrap(), "hello, ada");
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_storage::{Keyspace, Store};

pub mod durable;
pub mod object;

pub use cairn_scheduler as scheduler;
pub use cairn_storage as storage;
pub use cairn_supervisor as supervisor;
use object::{Object, ObjectRef, Objects, ObjectsConfig};

/// What applications import: `use cairn::prelude::*;`.
pub mod prelude {
    pub use crate::durable::{Durable, DurableError};
    pub use crate::object::{Object, ObjectCtx, ObjectError, ObjectRef};
    pub use crate::{Node, NodeBuilder};
    pub use cairn_scheduler::{
        ActorRef, CallError, Ctx, ExitReason, Handle, Message, MonitorRef, NodeId, Pid, Reply,
        SendError, Signal, SpawnError, SpawnOptions, TimerRef,
    };
    pub use cairn_storage::{Keyspace, ListOptions, StorageError};
    pub use cairn_supervisor::{
        Actor, ActorCtx, ActorError, Addr, Backoff, ChildRef, ChildSpec, DynamicSupervisor,
        Restart, Shutdown, StartError, StartOptions, Strategy, Supervisor, SupervisorRef,
        SupervisorSpec,
    };
}

/// Where a node keeps its data by default: `./data` (LMDB under `./data/storage`).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Threads could not be started.
    #[error("starting the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Storage(#[from] cairn_storage::StorageError),
}

/// Configures a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    runtime: cairn_scheduler::Builder,
    data_dir: PathBuf,
    storage: cairn_storage::Config,
    objects: ObjectsConfig,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            runtime: cairn_scheduler::Builder::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            storage: cairn_storage::Config::default(),
            objects: ObjectsConfig::default(),
        }
    }
}

impl NodeBuilder {
    /// Scheduler worker threads (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.runtime = self.runtime.workers(n);
        self
    }

    /// Default mailbox capacity of new processes.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.runtime = self.runtime.mailbox_capacity(n);
        self
    }

    /// How long shutdown waits for processes to stop before killing them.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.runtime = self.runtime.shutdown_grace(d);
        self
    }

    /// Where durable state lives (default `./data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// LMDB settings (map size, readers, batch bounds).
    pub fn storage(mut self, config: cairn_storage::Config) -> Self {
        self.storage = config;
        self
    }

    /// Idle time after which an object is evicted from memory.
    pub fn object_idle_timeout(mut self, d: Duration) -> Self {
        self.objects.idle_timeout = d;
        self
    }

    /// Alarm retry policy: first delay `base`, doubling, at most `max_retries` retries.
    pub fn alarm_retries(mut self, base: Duration, max_retries: u32) -> Self {
        self.objects.alarm_retry_base = base;
        self.objects.alarm_max_retries = max_retries;
        self
    }

    /// Opens the store and starts the node's threads.
    pub fn start(self) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&self.data_dir)?;
        let store = Store::open(&self.data_dir, self.storage)?;
        let runtime = self.runtime.name("cairn").build()?;
        let objects = Objects::start(runtime.handle(), store, self.objects);
        runtime.handle().set_extension(objects.clone());
        Ok(Node { runtime, objects })
    }
}

/// A Cairn node: the runtime, its durable store, and its objects.
///
/// Derefs to the scheduler's [`Handle`](cairn_scheduler::Handle): `spawn`, `spawn_named`,
/// `whereis`, `try_send`, `send`, `call`, `exit`, `wait_exit`, timers, `block_on`.
/// Dropping the node shuts it down (every process stopped, every thread joined).
pub struct Node {
    runtime: cairn_scheduler::Runtime,
    objects: Arc<Objects>,
}

impl Node {
    /// Configures a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Registers an object class so its objects can be reached and their alarms delivered.
    pub fn register<O: Object>(&self) {
        self.objects.register::<O>();
    }

    /// A reference to the object `(O::CLASS, key)`; cheap, activates on first message.
    pub fn object<O: Object>(&self, key: &str) -> ObjectRef<O> {
        ObjectRef::new(self.objects.clone(), key)
    }

    /// The durable keyspace of a named process (its registered name): the same store and
    /// guarantees as objects, committed explicitly with `commit()`.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, cairn_storage::StorageError> {
        self.objects.store().keyspace(name)
    }

    /// The node's store.
    pub fn store(&self) -> &Store {
        self.objects.store()
    }

    /// Stops every process and joins every thread (also done on drop).
    pub fn shutdown(&self) {
        self.runtime.shutdown();
    }
}

impl std::ops::Deref for Node {
    type Target = cairn_scheduler::Handle;
    fn deref(&self) -> &Self::Target {
        &self.runtime
    }
}

/// Installs a `tracing` subscriber for binaries and examples, filtered by `RUST_LOG`
/// (default `info`). Does nothing if one is already installed.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
