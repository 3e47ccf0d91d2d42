//! Supervisors: processes that start children in order, watch them, restart them by strategy
//! and intensity, and stop them in reverse order.
//!
//! A supervisor traps exits and is linked to each child. It reacts to:
//! - an exit signal from a child: the pure [`Supervision`] machine decides, the supervisor
//!   carries the [`Directive`] out (stop in reverse order, optional backoff, start in order);
//!   a child that fails to start during a restart counts as another crash;
//! - an exit signal from its parent (or the runtime's shutdown): it stops all children in
//!   reverse start order and exits with that reason; exit signals from anyone else (a child
//!   it already stopped and replaced, a stranger) are ignored, as in OTP;
//! - requests on its mailbox: `which_children`, `count_children`, `start_child`,
//!   `terminate_child`, `describe` (strategy, intensity and restart counts, for observers).
//!
//! Every running supervisor is listed on its runtime ([`running`], [`roots`]), so an
//! observer can find a node's supervision trees and walk them with [`SupervisorRef::describe`]:
//! one entry per supervisor, added when it starts and removed when it exits (nothing per
//! child, nothing per restart beyond a counter).
//!
//! Reports (OTP's SASL supervisor reports): a child's abnormal exit is logged at WARN
//! ("child crashed", with the supervisor, the child's id, pid and reason), and so is each
//! restart ("child restarted", with the new pid), so a crash loop is visible at the default
//! log level; orderly exits are logged at DEBUG. Reaching the restart intensity is an
//! ERROR.
//!
//! Start errors are one level deep: `start_child` fails with the child's own
//! [`StartError`] (e.g. `InitFailed`); a supervisor whose initial child fails to start
//! fails with [`StartError::Child`], whose `id` is the path to the child that failed
//! (`sub/leaf` when it sat in a sub-supervisor) and whose `cause` is that child's own error.
//!
//! Stopping a child follows its [`Shutdown`]: `Brutal` kills at once; `Timeout(d)` sends a
//! `Shutdown` exit signal and kills after `d`; `Infinity` waits (for sub-supervisors).
//!
//! Backoff (beyond OTP): with [`Backoff`] set, the supervisor waits before restarting, the delay
//! doubling with each restart in the current intensity window, capped, with jitter. While it
//! waits it handles nothing else — a crash-looping child costs no CPU, and the delay is
//! bounded by `Backoff::max`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{ActorRef, CallError, Ctx, ExitReason, Handle, Message, Pid, Reply, Signal};

use crate::actor::{self, Actor, StartAck, StartError, StartOptions};
use crate::restart::{
    Directive, Intensity, Restart, Strategy, Supervision, DEFAULT_MAX_RESTARTS, DEFAULT_PERIOD,
};

/// How a child is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once (untrappable); `terminate` does not run.
    Brutal,
    /// Sent `Shutdown`, killed if still alive after this long.
    Timeout(Duration),
    /// Sent `Shutdown` and waited for (sub-supervisors stop their own trees).
    Infinity,
}

/// OTP's default worker shutdown timeout.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker or supervisor (informational, and picks the default shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// An actor.
    Worker,
    /// A supervisor.
    Supervisor,
}

/// A child spawned and still running its `init`: its pid and the acknowledgement to await.
struct Spawned {
    pid: Pid,
    ack: StartAck,
}

/// Spawns a child; the supervisor then awaits its acknowledgement in place (a restart
/// allocates no future of its own).
type StartFn = Arc<dyn Fn(&Handle, StartOptions) -> Result<Spawned, StartError> + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    start: StartFn,
    restart: Restart,
    shutdown: Shutdown,
    kind: ChildKind,
    name: Option<String>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish()
    }
}

impl ChildSpec {
    /// A worker: `factory` builds a fresh actor for every (re)start. Permanent, 5 s shutdown.
    pub fn worker<A: Actor>(
        id: impl Into<String>,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> Self {
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |handle: &Handle, opts: StartOptions| {
                let (addr, ack) = actor::spawn(handle, factory(), opts)?;
                Ok(Spawned {
                    pid: addr.pid(),
                    ack,
                })
            }),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_SHUTDOWN_TIMEOUT),
            kind: ChildKind::Worker,
            name: None,
        }
    }

    /// A sub-supervisor built from `spec` on every (re)start. Permanent, `Infinity` shutdown.
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        ChildSpec {
            id: id.into(),
            start: Arc::new(move |handle: &Handle, opts: StartOptions| {
                let (addr, ack) = Supervisor::spawn(handle, spec.clone(), opts)?;
                Ok(Spawned {
                    pid: addr.pid(),
                    ack,
                })
            }),
            restart: Restart::Permanent,
            shutdown: Shutdown::Infinity,
            kind: ChildKind::Supervisor,
            name: None,
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how the child is stopped.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Registers the child under `name`; the name follows it across restarts.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Exponential restart backoff with jitter (beyond OTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart in an intensity window.
    pub initial: Duration,
    /// Upper bound on the delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before the `n`th restart (1-based) of the current window, with up to 25%
    /// jitter so that siblings do not restart in lockstep.
    fn delay(&self, n: usize, jitter_seed: u64) -> Duration {
        let exp = n.saturating_sub(1).min(30) as u32;
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let mut x = jitter_seed | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let jitter = base.mul_f64((x % 1000) as f64 / 4000.0);
        (base + jitter).min(self.max)
    }
}

/// A supervisor's configuration.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    backoff: Option<Backoff>,
    children: Vec<ChildSpec>,
    max_children: Option<usize>,
    /// Dynamic supervisors hold many children of one kind: ids need not be unique, so
    /// `start_child` skips the (linear) duplicate-id check; children that are not restarted
    /// are deleted (their `max_children` slot is free again).
    dynamic: bool,
}

impl SupervisorSpec {
    /// A supervisor with `strategy` and OTP's default intensity (1 restart in 5 s).
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            max_restarts: DEFAULT_MAX_RESTARTS,
            period: DEFAULT_PERIOD,
            backoff: None,
            children: Vec::new(),
            max_children: None,
            dynamic: false,
        }
    }

    /// Restart intensity: more than `max_restarts` within `period` shuts the supervisor down.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Waits before restarts (see [`Backoff`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Adds a child; children start in the order added.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Caps the number of children `start_child` accepts (dynamic supervisors).
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = Some(max);
        self
    }
}

/// A child as reported by `which_children`; a supervisor child carries a handle to walk on.
///
/// ```
/// use cairn_scheduler::Runtime;
/// use cairn_supervisor::{ChildSpec, Strategy, Supervisor, SupervisorRef, SupervisorSpec};
///
/// /// Every child's path in the tree under `sup`, depth first.
/// async fn walk(sup: SupervisorRef, prefix: String, out: &mut Vec<String>) {
///     for child in sup.which_children().await.unwrap() {
///         let path = format!("{prefix}{}", child.id);
///         out.push(path.clone());
///         if let Some(sub) = child.supervisor {
///             Box::pin(walk(sub, format!("{path}/"), out)).await;
///         }
///     }
/// }
///
/// let rt = Runtime::builder().workers(1).build().unwrap();
/// let leaf = SupervisorSpec::new(Strategy::OneForOne);
/// let spec = SupervisorSpec::new(Strategy::OneForOne)
///     .child(ChildSpec::supervisor("mid", SupervisorSpec::new(Strategy::OneForOne)
///         .child(ChildSpec::supervisor("leaf", leaf))));
/// let root = rt.block_on(Supervisor::start(&rt, spec)).unwrap();
/// let mut paths = Vec::new();
/// rt.block_on(walk(root, String::new(), &mut paths));
/// assert_eq!(paths, ["mid", "mid/leaf"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its pid, if running.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Restart type.
    pub restart: Restart,
    /// For a running supervisor child: a handle to it, to walk down the tree.
    pub supervisor: Option<SupervisorRef>,
    /// The name it is registered under, if any.
    pub name: Option<String>,
    /// Times this supervisor restarted it.
    pub restarts: u64,
}

/// A supervisor as [`SupervisorRef::describe`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorInfo {
    /// Its strategy (a dynamic supervisor's is `OneForOne`).
    pub strategy: Strategy,
    /// Whether it is a dynamic supervisor.
    pub dynamic: bool,
    /// Restart intensity: more than `max_restarts` within `period` shuts it down.
    pub max_restarts: u32,
    /// The intensity's window.
    pub period: Duration,
    /// Children it restarted since it started (its children's `restarts` summed, counting
    /// children since removed).
    pub restarts: u64,
    /// Its children, in start order (as `which_children`).
    pub children: Vec<ChildInfo>,
}

impl ChildInfo {
    /// How to name this child to [`SupervisorRef::terminate_child`]: its pid while it runs
    /// (ids need not be unique under a dynamic supervisor), else its id.
    pub fn child_ref(&self) -> ChildRef {
        match self.pid {
            Some(pid) => ChildRef::Pid(pid),
            None => ChildRef::Id(self.id.clone()),
        }
    }
}

/// As OTP's `count_children`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Child specs held.
    pub specs: usize,
    /// Children running.
    pub active: usize,
    /// Supervisor children.
    pub supervisors: usize,
    /// Worker children.
    pub workers: usize,
}

/// Why `start_child` or `terminate_child` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The child did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The supervisor holds `max_children` already.
    #[error("max_children reached")]
    MaxChildren,
    /// No child with that pid or id.
    #[error("no such child")]
    NotFound,
    /// A child with that id exists already.
    #[error("a child with id {0:?} exists already")]
    DuplicateId(String),
    /// The supervisor did not answer.
    #[error("supervisor call failed: {0}")]
    Call(#[from] CallError),
}

/// Which child `terminate_child` means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildRef {
    /// By id.
    Id(String),
    /// By pid (dynamic children).
    Pid(Pid),
}

/// The supervisor process's requests.
pub enum SupervisorMsg {
    /// `which_children`.
    WhichChildren(Reply<Vec<ChildInfo>>),
    /// `count_children`.
    CountChildren(Reply<ChildCounts>),
    /// `start_child`.
    StartChild(ChildSpec, Reply<Result<Pid, ChildError>>),
    /// `terminate_child`: stops it and removes its spec.
    TerminateChild(ChildRef, Reply<Result<(), ChildError>>),
    /// `describe`: strategy, intensity, restart counts and children.
    Describe(Reply<SupervisorInfo>),
}

/// A handle to a running supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorRef {
    addr: ActorRef<SupervisorMsg>,
}

/// How long the handle's requests wait for the supervisor (it may be busy restarting).
pub const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl SupervisorRef {
    /// A handle to the supervisor running at `pid`, if it is one.
    pub fn from_pid(handle: &Handle, pid: Pid) -> Option<Self> {
        handle.actor_ref(pid).map(|addr| SupervisorRef { addr })
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        self.addr.pid()
    }

    /// Its address (for raw messages).
    pub fn addr(&self) -> &ActorRef<SupervisorMsg> {
        &self.addr
    }

    /// Children in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        self.addr
            .call(SupervisorMsg::WhichChildren, SUPERVISOR_CALL_TIMEOUT)
            .await
    }

    /// Its strategy, intensity, restart counts and children (for observers: the dashboard
    /// walks a node's trees with it). Waits at most `timeout`: a supervisor busy restarting
    /// answers only after.
    pub async fn describe(&self, timeout: Duration) -> Result<SupervisorInfo, CallError> {
        self.addr.call(SupervisorMsg::Describe, timeout).await
    }

    /// Counts as OTP's `count_children`.
    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        self.addr
            .call(SupervisorMsg::CountChildren, SUPERVISOR_CALL_TIMEOUT)
            .await
    }

    /// Starts a child now and adds it at the end of the start order.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<Pid, ChildError> {
        self.addr
            .call(
                |r| SupervisorMsg::StartChild(spec, r),
                SUPERVISOR_CALL_TIMEOUT,
            )
            .await?
    }

    /// Stops a child (by its shutdown spec) and removes it.
    pub async fn terminate_child(&self, child: ChildRef) -> Result<(), ChildError> {
        self.addr
            .call(
                |r| SupervisorMsg::TerminateChild(child, r),
                SUPERVISOR_CALL_TIMEOUT,
            )
            .await?
    }

    /// Stops the supervisor as a parent would (OTP's `supervisor:stop`): it gets a
    /// `Shutdown` exit signal, stops its children in reverse start order, each by its
    /// [`Shutdown`] spec, and exits. Resolves once it has exited, with its exit reason
    /// (`Shutdown`; `NoProc` if it was not running). A supervised supervisor stopped this
    /// way is restarted by its own parent if its restart type says so, as in OTP.
    ///
    /// ```
    /// use cairn_scheduler::{ExitReason, Runtime};
    /// use cairn_supervisor::{Strategy, Supervisor, SupervisorSpec};
    ///
    /// let rt = Runtime::builder().workers(1).build().unwrap();
    /// let sup = rt.block_on(Supervisor::start(&rt, SupervisorSpec::new(Strategy::OneForOne))).unwrap();
    /// assert_eq!(rt.block_on(sup.stop()), ExitReason::Shutdown);
    /// assert_eq!(rt.block_on(sup.stop()), ExitReason::NoProc);
    /// ```
    pub async fn stop(&self) -> ExitReason {
        let handle = self.addr.handle();
        let exited = handle.monitor(self.pid());
        handle.exit(self.pid(), ExitReason::Shutdown);
        exited.await
    }
}

/// Starts supervisors.
pub struct Supervisor;

impl Supervisor {
    /// Starts a supervisor (not linked to the caller) and returns once every child started.
    pub async fn start(handle: &Handle, spec: SupervisorSpec) -> Result<SupervisorRef, StartError> {
        Self::start_with(handle, spec, StartOptions::default()).await
    }

    /// Starts a supervisor with a name, a link to a parent, or a mailbox capacity.
    pub async fn start_with(
        handle: &Handle,
        spec: SupervisorSpec,
        opts: StartOptions,
    ) -> Result<SupervisorRef, StartError> {
        let (addr, ack) = Self::spawn(handle, spec, opts)?;
        actor::acknowledged(ack).await?;
        Ok(SupervisorRef { addr })
    }

    /// Spawns a supervisor without waiting for its children to start.
    fn spawn(
        handle: &Handle,
        spec: SupervisorSpec,
        opts: StartOptions,
    ) -> Result<(ActorRef<SupervisorMsg>, StartAck), StartError> {
        let parent = opts.link;
        actor::spawn_acked(handle, opts, move |ctx, ack| run(spec, ctx, ack, parent))
    }
}

/// A dynamic supervisor (OTP's simple_one_for_one, Elixir's DynamicSupervisor): no initial
/// children, `start_child` adds them, one_for_one restarts, an optional `max_children`.
pub struct DynamicSupervisor;

impl DynamicSupervisor {
    /// The spec of a dynamic supervisor (add `.intensity(..)`, `.max_children(..)`).
    pub fn spec() -> SupervisorSpec {
        SupervisorSpec {
            dynamic: true,
            ..SupervisorSpec::new(Strategy::OneForOne)
        }
    }

    /// Starts one.
    pub async fn start(handle: &Handle, spec: SupervisorSpec) -> Result<SupervisorRef, StartError> {
        Supervisor::start(handle, spec).await
    }
}

struct Child {
    key: u64,
    spec: ChildSpec,
    pid: Option<Pid>,
    /// Times restarted.
    restarts: u64,
}

/// The supervisors running on one runtime (a [`Handle`] extension): pid → the pid it is
/// linked to as its parent, if any.
#[derive(Default)]
struct Running(std::sync::Mutex<HashMap<Pid, Option<Pid>>>);

impl Running {
    fn of(handle: &Handle) -> Arc<Running> {
        handle.extension_or_insert_with(|| Arc::new(Running::default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pid, Option<Pid>>> {
        // The map stays consistent whatever panicked while holding it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A supervisor's entry in [`Running`], removed when its process ends.
struct Listed {
    running: Arc<Running>,
    pid: Pid,
}

impl Listed {
    fn new(handle: &Handle, pid: Pid, parent: Option<Pid>) -> Listed {
        let running = Running::of(handle);
        running.lock().insert(pid, parent);
        Listed { running, pid }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.running.lock().remove(&self.pid);
    }
}

/// The supervisors running on `handle`'s node, each with the pid it is linked to as its
/// parent (another supervisor, for a sub-supervisor), by pid.
pub fn running(handle: &Handle) -> Vec<(SupervisorRef, Option<Pid>)> {
    let Some(running) = handle.extension::<Running>() else {
        return Vec::new();
    };
    let mut list: Vec<(Pid, Option<Pid>)> = running.lock().iter().map(|(p, q)| (*p, *q)).collect();
    list.sort_unstable();
    list.into_iter()
        .filter_map(|(pid, parent)| Some((SupervisorRef::from_pid(handle, pid)?, parent)))
        .collect()
}

/// The roots of the supervision trees on `handle`'s node: the running supervisors not
/// started by another supervisor, by pid. Walk each with [`SupervisorRef::describe`].
pub fn roots(handle: &Handle) -> Vec<SupervisorRef> {
    let all = running(handle);
    let supervisors: std::collections::HashSet<Pid> = all.iter().map(|(s, _)| s.pid()).collect();
    all.into_iter()
        .filter(|(_, parent)| !parent.is_some_and(|p| supervisors.contains(&p)))
        .map(|(s, _)| s)
        .collect()
}

struct State {
    ctx: Ctx<SupervisorMsg>,
    children: Vec<Child>,
    machine: Supervision,
    /// What `describe` says of the spec: strategy, max restarts, period.
    shape: (Strategy, u32, Duration),
    /// Restarts so far.
    restarts: u64,
    backoff: Option<Backoff>,
    max_children: Option<usize>,
    dynamic: bool,
    next_key: u64,
}

async fn run(
    spec: SupervisorSpec,
    ctx: Ctx<SupervisorMsg>,
    ack: Reply<Result<(), StartError>>,
    parent: Option<Pid>,
) -> ExitReason {
    let mut st = State {
        ctx,
        children: Vec::with_capacity(spec.children.len()),
        machine: if spec.dynamic {
            Supervision::dynamic(Intensity::new(spec.max_restarts, spec.period))
        } else {
            Supervision::new(
                spec.strategy,
                Intensity::new(spec.max_restarts, spec.period),
            )
        },
        shape: (spec.strategy, spec.max_restarts, spec.period),
        restarts: 0,
        backoff: spec.backoff,
        max_children: spec.max_children,
        dynamic: spec.dynamic,
        next_key: 0,
    };
    let _listed = Listed::new(st.ctx.handle(), st.ctx.pid(), parent);
    for child in spec.children {
        let id = child.id.clone();
        if let Err(e) = st.add_and_start(child).await {
            let e = child_failed(id, e);
            st.stop_all().await;
            let reason = ExitReason::Error(e.to_string());
            let _ = ack.send(Err(e));
            return reason;
        }
    }
    let _ = ack.send(Ok(()));
    let system = st.ctx.handle().system_pid();
    while let Some(msg) = st.ctx.recv().await {
        match msg {
            Message::Signal(Signal::Exit { from, reason }) => {
                if let Some(index) = st.index_of(from) {
                    if let Err(reason) = st.child_exited(index, reason).await {
                        return reason;
                    }
                } else if Some(from) == parent || from == system {
                    st.stop_all().await;
                    return reason;
                }
                // Anything else is a late exit of a child already stopped and replaced, or
                // an exit signal from a stranger: OTP ignores both.
            }
            Message::Signal(_) => {}
            Message::User(req) => st.request(req).await,
        }
    }
    ExitReason::Normal
}

/// A child's pid in a report, formatted only if the report is logged: empty for a child
/// that failed to restart (it never ran).
struct ReportPid(Option<Pid>);

impl std::fmt::Display for ReportPid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => pid.fmt(f),
            None => Ok(()),
        }
    }
}

/// The error of a supervisor whose child `id` failed to start with `cause`: flat, with the
/// path to the failing child (a sub-supervisor's failure names its own failing child).
fn child_failed(id: String, cause: StartError) -> StartError {
    match cause {
        StartError::Child {
            id: inner,
            cause: leaf,
        } => StartError::Child {
            id: format!("{id}/{inner}"),
            cause: leaf,
        },
        leaf => StartError::Child {
            id,
            cause: Box::new(leaf),
        },
    }
}

impl State {
    fn index_of(&self, pid: Pid) -> Option<usize> {
        self.children.iter().position(|c| c.pid == Some(pid))
    }

    fn index_of_key(&self, key: u64) -> Option<usize> {
        self.children.iter().position(|c| c.key == key)
    }

    /// Starts one child; its error is the child's own (one level, see the module doc).
    async fn start_one(&self, spec: &ChildSpec) -> Result<Pid, StartError> {
        let opts = StartOptions {
            name: spec.name.clone(),
            link: Some(self.ctx.pid()),
            mailbox_capacity: None,
        };
        let Spawned { pid, ack } = (spec.start)(self.ctx.handle(), opts)?;
        actor::acknowledged(ack).await.map(|()| pid)
    }

    async fn add_and_start(&mut self, spec: ChildSpec) -> Result<Pid, StartError> {
        let pid = self.start_one(&spec).await?;
        self.machine.add_child(spec.restart);
        self.children.push(Child {
            key: self.next_key,
            spec,
            pid: Some(pid),
            restarts: 0,
        });
        self.next_key += 1;
        Ok(pid)
    }

    async fn stop_child(&mut self, index: usize) {
        let Some(pid) = self.children[index].pid.take() else {
            return;
        };
        self.machine.set_running(index, false);
        let handle = self.ctx.handle().clone();
        let exited = handle.wait_exit(pid);
        match self.children[index].spec.shutdown {
            Shutdown::Brutal => {
                handle.kill(pid);
                exited.await;
            }
            Shutdown::Timeout(d) => {
                self.ctx.exit(pid, ExitReason::Shutdown);
                if handle.timeout(d, exited).await.is_err() {
                    tracing::warn!(child = %pid, "child ignored Shutdown; killing it");
                    let exited = handle.wait_exit(pid);
                    handle.kill(pid);
                    exited.await;
                }
            }
            Shutdown::Infinity => {
                self.ctx.exit(pid, ExitReason::Shutdown);
                exited.await;
            }
        }
    }

    async fn stop_all(&mut self) {
        for index in (0..self.children.len()).rev() {
            self.stop_child(index).await;
        }
    }

    /// Handles a child's exit. `Err(reason)` means the supervisor must exit.
    async fn child_exited(&mut self, index: usize, reason: ExitReason) -> Result<(), ExitReason> {
        // Children whose restart failed, each handled as another exit (allocated only then).
        let mut failed = VecDeque::new();
        let mut next = Some((self.children[index].key, reason));
        while let Some((key, reason)) = next.take().or_else(|| failed.pop_front()) {
            let Some(index) = self.index_of_key(key) else {
                continue;
            };
            let pid = ReportPid(self.children[index].pid.take());
            let child = &self.children[index].spec.id;
            if reason.is_orderly() {
                tracing::debug!(supervisor = %self.ctx.pid(), %child, %pid, %reason, "child exited");
            } else {
                // OTP's SASL supervisor report: visible at the default log level.
                tracing::warn!(supervisor = %self.ctx.pid(), %child, %pid, %reason, "child crashed");
            }
            match self.machine.on_exit(Instant::now(), index, &reason) {
                Directive::Ignore { remove } => {
                    if remove {
                        self.remove(index);
                    }
                }
                Directive::Escalate => {
                    tracing::error!(
                        supervisor = %self.ctx.pid(),
                        child = %self.children[index].spec.id,
                        "restart intensity reached; shutting down"
                    );
                    self.stop_all().await;
                    return Err(ExitReason::Shutdown);
                }
                Directive::Restart {
                    stop,
                    start,
                    remove,
                } => {
                    for &i in stop.as_slice() {
                        self.stop_child(i).await;
                    }
                    if let Some(backoff) = self.backoff {
                        let seed = Instant::now().elapsed().as_nanos() as u64 ^ key;
                        let delay = backoff.delay(self.machine.recent_restarts(), seed);
                        self.ctx.handle().sleep(delay).await;
                    }
                    for &i in start.as_slice() {
                        match self.start_one(&self.children[i].spec).await {
                            Ok(pid) => {
                                tracing::warn!(supervisor = %self.ctx.pid(), child = %self.children[i].spec.id, %pid, "child restarted");
                                self.children[i].pid = Some(pid);
                                self.children[i].restarts += 1;
                                self.restarts += 1;
                                self.machine.set_running(i, true);
                            }
                            Err(e) => {
                                tracing::warn!(supervisor = %self.ctx.pid(), child = %self.children[i].spec.id, error = %e, "restart failed");
                                failed.push_back((
                                    self.children[i].key,
                                    ExitReason::Error(e.to_string()),
                                ));
                            }
                        }
                    }
                    // In start order: removing from the back keeps the others' indices.
                    for &i in remove.as_slice().iter().rev() {
                        self.remove(i);
                    }
                }
            }
        }
        Ok(())
    }

    fn child_infos(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|c| ChildInfo {
                id: c.spec.id.clone(),
                pid: c.pid,
                kind: c.spec.kind,
                restart: c.spec.restart,
                supervisor: match (c.spec.kind, c.pid) {
                    (ChildKind::Supervisor, Some(pid)) => {
                        SupervisorRef::from_pid(self.ctx.handle(), pid)
                    }
                    _ => None,
                },
                name: c.spec.name.clone(),
                restarts: c.restarts,
            })
            .collect()
    }

    fn remove(&mut self, index: usize) {
        self.children.remove(index);
        self.machine.remove_child(index);
    }

    async fn request(&mut self, req: SupervisorMsg) {
        match req {
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(self.child_infos());
            }
            SupervisorMsg::Describe(reply) => {
                let (strategy, max_restarts, period) = self.shape;
                let _ = reply.send(SupervisorInfo {
                    strategy,
                    dynamic: self.dynamic,
                    max_restarts,
                    period,
                    restarts: self.restarts,
                    children: self.child_infos(),
                });
            }
            SupervisorMsg::CountChildren(reply) => {
                let mut counts = ChildCounts {
                    specs: self.children.len(),
                    ..ChildCounts::default()
                };
                for c in &self.children {
                    counts.active += usize::from(c.pid.is_some());
                    match c.spec.kind {
                        ChildKind::Worker => counts.workers += 1,
                        ChildKind::Supervisor => counts.supervisors += 1,
                    }
                }
                let _ = reply.send(counts);
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if self
                    .max_children
                    .is_some_and(|max| self.children.len() >= max)
                {
                    Err(ChildError::MaxChildren)
                } else if !self.dynamic && self.children.iter().any(|c| c.spec.id == spec.id) {
                    Err(ChildError::DuplicateId(spec.id.clone()))
                } else {
                    self.add_and_start(spec).await.map_err(ChildError::from)
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(which, reply) => {
                let index = match &which {
                    ChildRef::Id(id) => self.children.iter().position(|c| &c.spec.id == id),
                    ChildRef::Pid(pid) => self.index_of(*pid),
                };
                let result = match index {
                    Some(i) => {
                        self.stop_child(i).await;
                        self.remove(i);
                        Ok(())
                    }
                    None => Err(ChildError::NotFound),
                };
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let d1 = b.delay(1, 7);
        let d2 = b.delay(2, 7);
        let d9 = b.delay(9, 7);
        assert!(d1 >= Duration::from_millis(10) && d1 <= Duration::from_micros(12_500));
        assert!(d2 >= Duration::from_millis(20) && d2 <= Duration::from_millis(25));
        assert_eq!(d9, Duration::from_millis(100));
    }
}
