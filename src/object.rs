//! Durable objects: virtual actors addressed by `(class, key)`, each with its own durable
//! keyspace and alarm, activated on first message and evicted when idle.
//!
//! ## Activation (semantic 20)
//! An object's process is registered under the name `class/key`. [`ObjectRef`] looks the name
//! up; if nobody holds it, it spawns the object under that name — the registry admits one
//! winner, so there is at most one activation per `(class, key)` on a node. The process opens
//! the keyspace `class/key` and calls [`Object::activate`], which loads state from storage.
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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

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
}

type AlarmDispatch = Arc<dyn Fn(&Arc<Objects>, &str, SystemTime) -> bool + Send + Sync>;

/// The node's object directory: classes, store, alarm process.
pub struct Objects {
    handle: Handle,
    store: Store,
    config: ObjectsConfig,
    classes: RwLock<HashMap<&'static str, AlarmDispatch>>,
    /// Which pid last opened each named process's keyspace (see `durable`).
    pub(crate) owners: Mutex<HashMap<String, Pid>>,
    alarm_process: OnceLock<ActorRef<AlarmCmd>>,
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
        });
        let weak = Arc::downgrade(&objects);
        let alarms = handle
            .spawn_opts(
                SpawnOptions {
                    name: Some("cairn.alarms".to_owned()),
                    ..SpawnOptions::default()
                },
                move |ctx| run_alarms(ctx, weak),
            )
            .expect("the alarm process's name is reserved");
        let _ = objects.alarm_process.set(alarms);
        objects
    }

    pub(crate) fn register<O: Object>(&self) {
        let dispatch: AlarmDispatch = Arc::new(|objects, key, at| {
            let target = ObjectRef::<O>::new(objects.clone(), key);
            target.deliver_alarm(at)
        });
        self.classes.write().insert(O::CLASS, dispatch);
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
    cached: Arc<Mutex<Option<Activation<O>>>>,
    _class: PhantomData<fn() -> O>,
}

impl<O: Object> Clone for ObjectRef<O> {
    fn clone(&self) -> Self {
        ObjectRef {
            objects: self.objects.clone(),
            key: self.key.clone(),
            name: self.name.clone(),
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
        ObjectRef {
            name: format!("{}/{key}", O::CLASS).into(),
            key: key.into(),
            objects,
            cached: Arc::new(Mutex::new(None)),
            _class: PhantomData,
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

    /// The pid of the current activation, if any.
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
            let spawned = handle.spawn_opts(
                SpawnOptions {
                    name: Some(self.name.to_string()),
                    // Objects are found by placement, not by a cluster-wide name.
                    local_name: true,
                    ..SpawnOptions::default()
                },
                move |ctx| run_object::<O>(ctx, objects, key),
            );
            if let Ok(a) = spawned {
                *self.cached.lock() = Some(a.clone());
                return Lookup::Live(a);
            }
            // Lost a race to activate: the winner now holds the name; look it up again.
        }
    }

    /// Sends a message, activating the object if needed and waiting for mailbox room.
    ///
    /// From inside another object's handler the message is held by that handler's output
    /// gate and sent when its writes are durable — to whichever activation is live then.
    pub async fn send(&self, msg: O::Msg) -> Result<(), ObjectError> {
        self.check()?;
        if let Err(msg) = self.hold_if_gated(msg) {
            self.send_ungated(ObjectMsg::User(msg)).await;
        }
        Ok(())
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
            me.send_ungated(ObjectMsg::User(msg)).await;
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
    pub fn try_send(&self, msg: O::Msg) -> Result<(), SendError<O::Msg>> {
        if self.check().is_err() {
            return Err(SendError::NoProc(msg));
        }
        let Err(msg) = self.hold_if_gated(msg) else {
            return Ok(());
        };
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

    /// Sends a request and waits for the answer (at most `timeout` for the answer). The
    /// request leaves at once even from inside another object's handler, which waits for it.
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<R>) -> O::Msg,
        timeout: Duration,
    ) -> Result<R, ObjectError> {
        self.check()?;
        let (reply, rx) = Reply::pair();
        self.send_ungated(ObjectMsg::User(make(reply))).await;
        let answer = self.objects.handle.timeout(timeout, rx).await;
        Ok(answer.map_err(|_| CallError::Timeout)??)
    }

    /// Hands a due alarm to the live (or a new) activation; false if it could not be
    /// delivered now (full mailbox, activation shutting down): the next scan tries again.
    fn deliver_alarm(&self, at: SystemTime) -> bool {
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

    /// A reference to this object.
    pub fn me(&self) -> ObjectRef<O> {
        ObjectRef::new(self.objects.clone(), &self.key)
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

async fn run_object<O: Object>(
    ctx: Ctx<ObjectMsg<O::Msg>>,
    objects: Arc<Objects>,
    key: Arc<str>,
) -> ExitReason {
    let name = format!("{}/{key}", O::CLASS);
    let storage = match objects.store.keyspace(&name) {
        Ok(ks) => ks,
        Err(e) => return ExitReason::StorageFailure(e.to_string()),
    };
    storage.discard_pending();
    let mut octx = ObjectCtx {
        ctx,
        storage,
        key,
        objects: objects.clone(),
        alarm_retries: 0,
    };
    let mut object = match activate::<O>(&mut octx).await {
        Ok(o) => o,
        Err(reason) => return reason,
    };
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let idle = O::idle_timeout().unwrap_or(objects.config.idle_timeout);
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
            Event::Msg(Message::User(msg)) => msg,
        };
        let alarm_at = match &msg {
            ObjectMsg::Alarm(at) => Some(*at),
            ObjectMsg::User(_) => None,
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
                    let class = alarm
                        .name
                        .split_once('/')
                        .map(|(class, key)| (objs.classes.read().get(class).cloned(), key));
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
