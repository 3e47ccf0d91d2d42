//! The runtime: worker threads, the process table, the registry, the timer/I-O driver and
//! the blocking pool, and the operations that act on pids.
//!
//! [`Runtime`] owns the threads: dropping it (or calling [`Runtime::shutdown`]) stops every
//! process and joins every thread. [`Handle`] is the cheap, cloneable view that processes and
//! other threads use.
//!
//! Shutdown order: new processes are born dying; every live process gets a trappable
//! `Shutdown` exit signal, supervisors first (roots of trees stop their children in order);
//! after the grace period the rest are killed; then the workers stop, the leftovers'
//! bodies are dropped, and the driver and blocking threads are joined.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor_ref::{ActorRef, SendError};
use crate::blocking::{BlockingJoin, BlockingPool};
use crate::context::Ctx;
use crate::driver::{Driver, DriverHandle, Sleep};
use crate::executor::Executor;
use crate::exit::{ExitReason, IntoExitReason, MonitorRef, Signal};
use crate::pid::{NodeId, Pid};
use crate::process::{deliver_exit, AnyProcess, BodySlot, Process, Watcher};
use crate::remote::{RemotePeers, RemoteRouter};
use crate::reply::OneShot;
use crate::stats::SchedulerStats;
use crate::table::ProcessTable;

/// How long [`Runtime::shutdown`] waits for processes to stop after `Shutdown` before it
/// kills them. OTP's default child shutdown timeout is 5 s; a runtime stop is the sum of
/// those in the worst case, so 5 s is the default for the whole runtime.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors from spawning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The name is registered to another live process.
    #[error("name {name:?} is already registered to {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that holds it.
        holder: Pid,
    },
}

/// Errors from registering a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is registered to another live process.
    #[error("name {name:?} is already registered to {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that holds it.
        holder: Pid,
    },
    /// The process already has a name (a process has at most one, as in Erlang).
    #[error("process already registered as {0:?}")]
    AlreadyNamed(String),
    /// The process does not exist.
    #[error("no such process")]
    NoProc,
}

/// Runtime configuration.
#[derive(Clone, Debug)]
pub struct Builder {
    workers: usize,
    node: NodeId,
    creation: u32,
    name: String,
    mailbox_capacity: usize,
    shutdown_grace: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            node: NodeId(0),
            creation: 0,
            name: "cairn".to_owned(),
            mailbox_capacity: cairn_mailbox::Mailbox::<(), ()>::DEFAULT_CAPACITY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl Builder {
    /// Worker threads (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
    /// This node's id (default 0, a single local node).
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = node;
        self
    }
    /// This life of the node (default 0): its start counter, carried in every pid it
    /// spawns. A pid of another creation of this node names no process here, so pids kept
    /// from an earlier life (by other nodes, or in storage) stay dead after a restart.
    pub fn creation(mut self, creation: u32) -> Self {
        self.creation = creation;
        self
    }
    /// Thread name prefix.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Default mailbox capacity for new processes.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n.max(1);
        self
    }
    /// How long shutdown waits before killing processes that ignore `Shutdown`.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }
    /// Starts the threads.
    pub fn build(self) -> std::io::Result<Runtime> {
        let exec = Executor::start(&self.name, self.workers)?;
        let driver = Driver::start(&self.name)?;
        let shared = Arc::new(Shared {
            node: self.node,
            creation: self.creation,
            exec,
            table: ProcessTable::new(self.node, self.creation),
            registry: Mutex::new(HashMap::new()),
            driver,
            blocking: BlockingPool::new(&self.name),
            // Monitor refs travel to other nodes, which keep them beside their own: start
            // each runtime at a random point so two nodes' refs do not collide in practice.
            next_monitor: AtomicU64::new(random_start()),
            mailbox_capacity: self.mailbox_capacity,
            shutting_down: AtomicBool::new(false),
            extensions: parking_lot::RwLock::new(HashMap::new()),
            shutdown_grace: self.shutdown_grace,
            router: std::sync::OnceLock::new(),
            remote_peers: RemotePeers::default(),
            full_refusals: AtomicU64::new(0),
        });
        Ok(Runtime {
            handle: Handle { shared },
        })
    }
}

pub(crate) struct Shared {
    pub(crate) node: NodeId,
    creation: u32,
    pub(crate) exec: Arc<Executor>,
    pub(crate) table: ProcessTable,
    registry: Mutex<HashMap<String, Pid>>,
    pub(crate) driver: DriverHandle,
    blocking: BlockingPool,
    next_monitor: AtomicU64,
    mailbox_capacity: usize,
    shutting_down: AtomicBool,
    /// Services installed by higher layers (the facade's store), by type.
    extensions:
        parking_lot::RwLock<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
    shutdown_grace: Duration,
    /// The mesh's side of remote pids, installed once at node start.
    pub(crate) router: std::sync::OnceLock<Arc<dyn RemoteRouter>>,
    /// Links and monitors of local processes that point at other nodes.
    pub(crate) remote_peers: RemotePeers,
    /// Local `try_send`s answered `Full` (rare: one shared counter; see `stats`).
    pub(crate) full_refusals: AtomicU64,
}

/// A per-runtime random starting point (std's hasher keys are random per process).
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6361_6972_6e00_0000);
    hasher.finish() >> 1
}

impl Shared {
    pub(crate) fn router(&self) -> Option<&Arc<dyn RemoteRouter>> {
        self.router.get()
    }

    /// Drops `name` if it still names `pid`; a cluster-wide name is released in the mesh too.
    pub(crate) fn registry_remove(&self, name: &str, pid: Pid, cluster_wide: bool) {
        let mut reg = self.registry.lock();
        if reg.get(name) == Some(&pid) {
            reg.remove(name);
            drop(reg);
            if cluster_wide {
                if let Some(router) = self.router() {
                    router.name_released(name, pid);
                }
            }
        }
    }

    /// Sends an exit signal to `target` if it is alive (on another node: through the mesh).
    pub(crate) fn exit_signal(&self, target: Pid, from: Pid, reason: ExitReason, via_link: bool) {
        if target.node() != self.node {
            if via_link {
                self.remote_peers.remove_link(from, target);
            }
            if let Some(router) = self.router() {
                router.exit(target, from, reason, via_link);
            }
            return;
        }
        if let Some(p) = self.table.get(target) {
            deliver_exit(p, from, reason, via_link);
        }
    }

    pub(crate) fn notify_down(
        &self,
        watcher: Watcher,
        monitor: MonitorRef,
        pid: Pid,
        reason: ExitReason,
    ) {
        match watcher {
            Watcher::Process(w) if w.node() != self.node => {
                if let Some(router) = self.router() {
                    router.down(w, monitor, pid, reason);
                }
            }
            Watcher::Process(w) => {
                if let Some(p) = self.table.get(w) {
                    p.push_signal(Signal::Down {
                        monitor,
                        pid,
                        reason,
                    });
                }
            }
            Watcher::External(slot) => {
                let _ = slot.complete(reason);
            }
        }
    }
}

/// A cloneable handle to a runtime: everything but ownership of its threads.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

/// Owns a runtime's threads; dropping it shuts the runtime down.
pub struct Runtime {
    handle: Handle,
}

impl std::ops::Deref for Runtime {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Runtime {
    /// A runtime with default settings (one worker per core).
    pub fn new() -> std::io::Result<Runtime> {
        Builder::default().build()
    }

    /// Configures a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A cloneable handle.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops every process (a trappable `Shutdown`, then `Kill` after the grace period),
    /// joins every thread and drops every process's state. Idempotent. Must not be called
    /// from inside a process of this runtime.
    pub fn shutdown(&self) {
        let shared = &self.handle.shared;
        assert!(
            !shared.exec.on_worker(),
            "Runtime::shutdown called from one of its own worker threads"
        );
        if shared.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = Instant::now() + shared.shutdown_grace;
        // Roots first: a supervisor stops its tree in order, which a signal to every process
        // at once would race.
        let roots: Vec<Pid> = shared
            .table
            .pids()
            .into_iter()
            .filter(|&pid| {
                let parent = shared
                    .table
                    .get(pid)
                    .and_then(|p| p.core().control.lock().parent);
                parent.is_none_or(|parent| !self.handle.is_alive(parent))
            })
            .collect();
        self.stop_and_wait(&roots, ExitReason::Shutdown, deadline);
        self.stop_and_wait(&shared.table.pids(), ExitReason::Shutdown, deadline);
        let left = shared.table.pids();
        if !left.is_empty() {
            tracing::warn!(
                count = left.len(),
                "processes ignored Shutdown; killing them"
            );
            self.stop_and_wait(
                &left,
                ExitReason::Kill,
                Instant::now() + Duration::from_secs(1),
            );
        }
        shared.exec.shutdown();
        for p in shared.table.drain() {
            p.force_stop();
        }
        shared.registry.lock().clear();
        shared.extensions.write().clear();
        shared.driver.shutdown();
        shared.blocking.shutdown();
    }
}

impl Runtime {
    /// Sends `reason` to each of `pids` and waits until they have all exited or `deadline`.
    fn stop_and_wait(&self, pids: &[Pid], reason: ExitReason, deadline: Instant) {
        let system = self.handle.system_pid();
        let mut watches: Vec<ExitWatch> = pids.iter().map(|&p| self.handle.wait_exit(p)).collect();
        for &pid in pids {
            self.handle
                .shared
                .exit_signal(pid, system, reason.clone(), false);
        }
        let all_exited = std::future::poll_fn(|cx| {
            watches.retain_mut(|w| Pin::new(w).poll(cx).is_pending());
            if watches.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let driver = self.handle.shared.driver.clone();
        block_on(crate::time::with_deadline(&driver, deadline, all_exited));
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.handle.shared.exec.on_worker() {
            self.shutdown();
        }
    }
}

/// Options for [`Handle::spawn_opts`].
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Register this name for the process (fails if taken).
    pub name: Option<String>,
    /// Mailbox capacity (default: the runtime's).
    pub mailbox_capacity: Option<usize>,
    /// Link to this process before the new one first runs.
    pub link: Option<Pid>,
    /// Start with `trap_exit` on.
    pub trap_exit: bool,
    /// Keep `name` on this node only. By default a name is cluster-wide once a mesh is
    /// installed (a send by name from any node reaches it); objects use node-local names
    /// (placement finds them).
    pub local_name: bool,
}

impl Handle {
    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// This life of the node (see [`Builder::creation`]).
    pub fn creation(&self) -> u32 {
        self.shared.creation
    }

    /// The pseudo-pid used as the sender of signals from outside any process.
    pub fn system_pid(&self) -> Pid {
        Pid::new(self.shared.node, self.shared.creation, u32::MAX, u32::MAX)
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.exec.num_workers()
    }

    /// Live processes.
    pub fn process_count(&self) -> usize {
        self.shared.table.len()
    }

    /// A snapshot of the scheduler's counters (see [`SchedulerStats`]).
    pub fn stats(&self) -> SchedulerStats {
        let exec = &self.shared.exec;
        let mut stats = crate::stats::sum(exec.counter_blocks());
        stats.workers = exec.num_workers();
        stats.processes = self.shared.table.len();
        stats.run_queue = exec.queued();
        stats.full_refusals = self.shared.full_refusals.load(Ordering::Relaxed);
        stats
    }

    /// Spawns a process running `body`, which receives from its own mailbox through `Ctx`.
    pub fn spawn<M, F, Fut>(&self, body: F) -> ActorRef<M>
    where
        M: Send + 'static,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.spawn_opts(SpawnOptions::default(), body)
            .expect("spawn without a name cannot fail")
    }

    /// Spawns a process and registers `name` for it; fails if the name is taken.
    pub fn spawn_named<M, F, Fut>(&self, name: &str, body: F) -> Result<ActorRef<M>, SpawnError>
    where
        M: Send + 'static,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.spawn_opts(
            SpawnOptions {
                name: Some(name.to_owned()),
                ..SpawnOptions::default()
            },
            body,
        )
    }

    /// Spawns with options.
    pub fn spawn_opts<M, F, Fut>(
        &self,
        opts: SpawnOptions,
        body: F,
    ) -> Result<ActorRef<M>, SpawnError>
    where
        M: Send + 'static,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        let shared = &self.shared;
        let capacity = opts.mailbox_capacity.unwrap_or(shared.mailbox_capacity);
        let process = shared.table.insert(|pid| {
            Arc::new(Process::<M, BodySlot<Fut>>::new(
                pid,
                shared.clone(),
                capacity,
            ))
        });
        let pid = process.core.pid();
        shared.exec.count(|c| &c.spawns);
        if let Some(name) = opts.name {
            let cluster_wide = !opts.local_name && shared.router().is_some();
            let mut reg = shared.registry.lock();
            let holder = reg.get(&name).copied().or_else(|| {
                cluster_wide
                    .then(|| shared.router().and_then(|r| r.whereis(&name)))
                    .flatten()
            });
            if let Some(holder) = holder {
                drop(reg);
                shared.table.remove(pid);
                process.force_stop();
                return Err(SpawnError::NameTaken { name, holder });
            }
            reg.insert(name.clone(), pid);
            drop(reg);
            // The process has not run yet, so nothing releases the name before it is in
            // `control`: the mesh hears of it first and `control` takes the string itself.
            if let (true, Some(router)) = (cluster_wide, shared.router()) {
                router.name_registered(&name, pid);
            }
            let mut control = process.core.control.lock();
            control.name = Some(name);
            control.cluster_name = cluster_wide;
        }
        if opts.trap_exit {
            process.core.trap_exit.store(true, Ordering::Release);
        }
        if let Some(peer) = opts.link {
            self.link_new(&process, peer);
        }
        if shared.shutting_down.load(Ordering::Acquire) {
            process.core.set_pending_exit(ExitReason::Shutdown);
        }
        let typed: Arc<Process<M>> = process.clone();
        let actor = ActorRef::from_process(typed.clone());
        let fut = body(Ctx::new(typed));
        process.start(fut);
        Ok(actor)
    }

    /// The pid registered under `name`: on this node, else anywhere in the cluster.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let local = self.shared.registry.lock().get(name).copied();
        local.or_else(|| self.shared.router()?.whereis(name))
    }

    /// Registers `name` for a live process.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let process = self.shared.table.get(pid).ok_or(RegisterError::NoProc)?;
        let mut reg = self.shared.registry.lock();
        if let Some(&holder) = reg.get(name) {
            return Err(RegisterError::NameTaken {
                name: name.to_owned(),
                holder,
            });
        }
        let mut control = process.core().control.lock();
        if control.dead {
            return Err(RegisterError::NoProc);
        }
        if let Some(existing) = &control.name {
            return Err(RegisterError::AlreadyNamed(existing.clone()));
        }
        control.name = Some(name.to_owned());
        let router = self.shared.router();
        control.cluster_name = router.is_some();
        reg.insert(name.to_owned(), pid);
        drop(control);
        drop(reg);
        if let Some(router) = router {
            router.name_registered(name, pid);
        }
        Ok(())
    }

    /// The name `pid` is registered under, if any.
    pub fn name_of(&self, pid: Pid) -> Option<String> {
        self.shared
            .table
            .get(pid)?
            .core()
            .control
            .lock()
            .name
            .clone()
    }

    /// Installs a service for higher layers to find from any handle (one per type). This is
    /// how a layer above the scheduler (e.g. durable storage) reaches its state from a
    /// process context without the scheduler naming it.
    pub fn set_extension<T: std::any::Any + Send + Sync>(&self, value: Arc<T>) {
        self.shared
            .extensions
            .write()
            .insert(std::any::TypeId::of::<T>(), value);
    }

    /// The service of type `T` installed with [`Handle::set_extension`].
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let ext = self
            .shared
            .extensions
            .read()
            .get(&std::any::TypeId::of::<T>())?
            .clone();
        ext.downcast().ok()
    }

    /// The service of type `T`, installed by `make` if there is none yet (at most one is
    /// ever installed, however many callers race).
    pub fn extension_or_insert_with<T: std::any::Any + Send + Sync>(
        &self,
        make: impl FnOnce() -> Arc<T>,
    ) -> Arc<T> {
        if let Some(ext) = self.extension::<T>() {
            return ext;
        }
        let ext = self
            .shared
            .extensions
            .write()
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| -> Arc<dyn std::any::Any + Send + Sync> { make() })
            .clone();
        match ext.downcast() {
            Ok(ext) => ext,
            // Stored under `T`'s own TypeId, so it is a `T`.
            Err(_) => unreachable!("an extension is stored under its own type"),
        }
    }

    /// Removes a name; returns the pid it named.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        let pid = self.shared.registry.lock().remove(name)?;
        let mut cluster_wide = false;
        if let Some(p) = self.shared.table.get(pid) {
            let mut control = p.core().control.lock();
            if control.name.as_deref() == Some(name) {
                control.name = None;
                cluster_wide = std::mem::take(&mut control.cluster_name);
            }
        }
        if let (true, Some(router)) = (cluster_wide, self.shared.router()) {
            router.name_released(name, pid);
        }
        Some(pid)
    }

    /// A typed handle to a live local process, if it takes messages of type `M`; for a
    /// pid on another node, a remote handle (checked by the mesh when messages arrive).
    pub fn actor_ref<M: Send + 'static>(&self, pid: Pid) -> Option<ActorRef<M>> {
        if pid.node() != self.shared.node {
            return Some(ActorRef::remote(pid, self.clone()));
        }
        let p = self.shared.table.get(pid)?;
        let p = Process::<M>::downcast(p)?;
        Some(ActorRef::from_process(p))
    }

    fn lookup<M: Send + 'static>(&self, pid: Pid) -> Result<ActorRef<M>, LookupError> {
        if pid.node() != self.shared.node {
            return Ok(ActorRef::remote(pid, self.clone()));
        }
        let p = self.shared.table.get(pid).ok_or(LookupError::NoProc)?;
        match Process::<M>::downcast(p) {
            Some(p) => Ok(ActorRef::from_process(p)),
            None => Err(LookupError::WrongType),
        }
    }

    /// Sends without waiting; every failure gives the message back (`Full`, `NoProc`,
    /// `WrongType`).
    pub fn try_send<M: Send + 'static>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        match self.lookup(pid) {
            Ok(actor) => actor.try_send(msg),
            Err(err) => Err(err.with(msg)),
        }
    }

    /// Sends, waiting for room in a full mailbox.
    pub async fn send<M: Send + 'static>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        match self.lookup(pid) {
            Ok(actor) => actor.send(msg).await,
            Err(err) => Err(err.with(msg)),
        }
    }

    /// Sends to the process registered under `name` without waiting.
    pub fn try_send_named<M: Send + 'static>(
        &self,
        name: &str,
        msg: M,
    ) -> Result<(), SendError<M>> {
        match self.whereis(name) {
            Some(pid) => self.try_send(pid, msg),
            None => Err(SendError::NoProc(msg)),
        }
    }

    /// Calls the process at `pid` (see [`ActorRef::call`]).
    pub async fn call<M: Send + 'static, R>(
        &self,
        pid: Pid,
        make: impl FnOnce(crate::Reply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, crate::CallError> {
        match self.lookup::<M>(pid) {
            Ok(actor) => actor.call(make, timeout).await,
            Err(LookupError::NoProc) => Err(crate::CallError::NoProc),
            Err(LookupError::WrongType) => Err(crate::CallError::WrongType),
        }
    }

    /// Sends an exit signal to `pid` from outside any process (Erlang's `exit/2`): `Kill`
    /// cannot be trapped; `Normal` is ignored unless the target traps exits.
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        self.shared
            .exit_signal(pid, self.system_pid(), reason, false);
    }

    /// Kills `pid` (untrappable); it exits with `Killed`.
    pub fn kill(&self, pid: Pid) {
        self.exit(pid, ExitReason::Kill);
    }

    /// Whether `pid` names a live local process (a remote pid: whether its node is up).
    pub fn is_alive(&self, pid: Pid) -> bool {
        if pid.node() != self.shared.node {
            return self.shared.router().is_some_and(|r| r.is_up(pid.node()));
        }
        self.shared
            .table
            .get(pid)
            .is_some_and(|p| !p.core().control.lock().dead)
    }

    /// Links `a` and `b` (both directions). If either is already gone, the other gets an
    /// exit signal with `NoProc`, as in Erlang.
    pub(crate) fn link_pair(&self, a: Pid, b: Pid) {
        if a == b {
            return;
        }
        if b.node() != self.shared.node {
            return self.link_remote(a, b);
        }
        let shared = &self.shared;
        let (Some(pa), pb) = (shared.table.get(a), shared.table.get(b)) else {
            shared.exit_signal(b, a, ExitReason::NoProc, false);
            return;
        };
        {
            let mut ca = pa.core().control.lock();
            if ca.dead {
                drop(ca);
                shared.exit_signal(b, a, ExitReason::NoProc, false);
                return;
            }
            ca.links.insert(b);
        }
        let linked = pb.is_some_and(|pb| {
            let mut cb = pb.core().control.lock();
            if cb.dead {
                return false;
            }
            cb.links.insert(a);
            true
        });
        if !linked {
            pa.core().control.lock().links.remove(b);
            deliver_exit(pa, b, ExitReason::NoProc, false);
        }
    }

    /// Links a process being spawned (not running yet, so alive) with `peer`, its parent:
    /// `link_pair` without looking the new process up.
    fn link_new<P: AnyProcess>(&self, process: &Arc<P>, peer: Pid) {
        let pid = process.core().pid();
        {
            let mut control = process.core().control.lock();
            control.parent = Some(peer);
            if pid != peer {
                control.links.insert(peer);
            }
        }
        if pid == peer {
            return;
        }
        if peer.node() != self.shared.node {
            return self.link_remote(pid, peer);
        }
        let linked = self.shared.table.get(peer).is_some_and(|p| {
            let mut control = p.core().control.lock();
            if control.dead {
                return false;
            }
            control.links.insert(pid);
            true
        });
        if !linked {
            process.core().control.lock().links.remove(peer);
            deliver_exit(process.clone(), peer, ExitReason::NoProc, false);
        }
    }

    /// Links local `a` to remote `b`: `a` keeps the link, `b`'s node is told to add its
    /// half. Without a connection to `b`'s node, `a` gets `NoConnection` at once (Erlang).
    fn link_remote(&self, a: Pid, b: Pid) {
        let shared = &self.shared;
        let Some(pa) = shared.table.get(a) else {
            return;
        };
        let router = shared.router().filter(|r| r.is_up(b.node()));
        let Some(router) = router else {
            deliver_exit(pa, b, ExitReason::NoConnection, true);
            return;
        };
        {
            let mut ca = pa.core().control.lock();
            if ca.dead {
                return;
            }
            ca.links.insert(b);
        }
        shared.remote_peers.add_link(a, b);
        router.link(b, a);
    }

    /// Removes the link between `a` and `b` (both directions).
    pub(crate) fn unlink_pair(&self, a: Pid, b: Pid) {
        if b.node() != self.shared.node {
            if let Some(p) = self.shared.table.get(a) {
                p.core().control.lock().links.remove(b);
            }
            if self.shared.remote_peers.remove_link(a, b) {
                if let Some(router) = self.shared.router() {
                    router.unlink(b, a);
                }
            }
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(p) = self.shared.table.get(x) {
                p.core().control.lock().links.remove(y);
            }
        }
    }

    pub(crate) fn add_monitor(&self, watcher: Watcher, target: Pid) -> MonitorRef {
        let monitor = MonitorRef(self.shared.next_monitor.fetch_add(1, Ordering::Relaxed));
        if target.node() != self.shared.node {
            let router = self.shared.router().filter(|r| r.is_up(target.node()));
            let Some(router) = router else {
                self.shared
                    .notify_down(watcher, monitor, target, ExitReason::NoConnection);
                return monitor;
            };
            let watcher_pid = match &watcher {
                Watcher::Process(pid) => *pid,
                Watcher::External(_) => self.system_pid(),
            };
            self.shared
                .remote_peers
                .add_monitor(monitor, watcher, target);
            router.monitor(target, watcher_pid, monitor);
            return monitor;
        }
        self.monitor_local(monitor, watcher, target);
        monitor
    }

    /// Puts `watcher`'s monitor on local `target`, or fires it with `NoProc` at once.
    pub(crate) fn monitor_local(&self, monitor: MonitorRef, watcher: Watcher, target: Pid) {
        if let Some(p) = self.shared.table.get(target) {
            let mut control = p.core().control.lock();
            if !control.dead {
                control.monitors.push((monitor, watcher));
                return;
            }
        }
        self.shared
            .notify_down(watcher, monitor, target, ExitReason::NoProc);
    }

    pub(crate) fn remove_monitor(&self, target: Pid, monitor: MonitorRef) -> bool {
        if target.node() != self.shared.node {
            let taken = self
                .shared
                .remote_peers
                .take_monitor(target.node(), monitor);
            if let (Some(_), Some(router)) = (&taken, self.shared.router()) {
                router.demonitor(target, monitor);
            }
            return taken.is_some();
        }
        let Some(p) = self.shared.table.get(target) else {
            return false;
        };
        let mut control = p.core().control.lock();
        let before = control.monitors.len();
        control.monitors.retain(|(m, _)| *m != monitor);
        control.monitors.len() != before
    }

    /// A future that resolves with `pid`'s exit reason (`NoProc` if it is already gone).
    /// This is a monitor held by non-process code: tests, `main`, shutdown logic.
    pub fn wait_exit(&self, pid: Pid) -> ExitWatch {
        let slot = OneShot::new();
        self.add_monitor(Watcher::External(slot.clone()), pid);
        ExitWatch { slot }
    }

    /// A future that completes after `duration` (never early; ~1 ms resolution).
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.shared.driver.sleep(duration)
    }

    /// Runs blocking work on the blocking pool; await the result (a panic is returned as
    /// `Err(message)`).
    pub fn spawn_blocking<R, F>(&self, f: F) -> BlockingJoin<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.blocking.spawn(f)
    }

    /// The timer and I/O driver (for registering sockets).
    pub fn driver(&self) -> &DriverHandle {
        &self.shared.driver
    }

    /// Whether the calling thread is one of this runtime's workers (inside a process): code
    /// that would block until other processes of the runtime make progress checks it.
    pub fn on_worker(&self) -> bool {
        self.shared.exec.on_worker()
    }

    /// Runs `future` to completion on the calling thread, which it parks while waiting. For
    /// `main` and tests; never call it from inside a process (it would block a worker).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !self.shared.exec.on_worker(),
            "block_on called from a worker thread: await instead"
        );
        block_on(future)
    }
}

enum LookupError {
    NoProc,
    WrongType,
}

impl LookupError {
    fn with<M>(self, msg: M) -> SendError<M> {
        match self {
            LookupError::NoProc => SendError::NoProc(msg),
            LookupError::WrongType => SendError::WrongType(msg),
        }
    }
}

/// Resolves with a process's exit reason; see [`Handle::wait_exit`].
pub struct ExitWatch {
    slot: Arc<OneShot<ExitReason>>,
}

impl Future for ExitWatch {
    type Output = ExitReason;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitReason> {
        self.slot
            .poll_take(cx)
            .map(|r| r.unwrap_or(ExitReason::NoProc))
    }
}

struct ThreadWaker {
    thread: Thread,
    notified: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Drives a future on the current thread, parking between polls.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker_state = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        notified: AtomicBool::new(false),
    });
    let waker = Waker::from(waker_state.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        while !waker_state.notified.swap(false, Ordering::AcqRel) {
            std::thread::park();
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("node", &self.shared.node)
            .finish()
    }
}
