//! An object's life on its owner node: activation, handling each message behind an output
//! gate, the in-flight commits, failures, hand-off and eviction.
//!
//! ## Activation
//! An object's process is registered under the node-local name `class/key` (`class@region/key`
//! with a location hint, see `reference`). [`ObjectRef`]
//! looks the name up; if nobody holds it, it spawns the object under that name — the registry
//! admits one winner, so there is at most one activation per `(class, key)` on a node. The
//! process opens the keyspace of that name and calls [`Object::activate`], which loads state
//! from storage.
//!
//! ## Handling: implicit transactions and the output gate
//! Each message is handled with an output gate active: every message and reply the handler
//! sends is held. When the handler returns, its writes are handed to the group-commit writer
//! (a replicated object's: to its shard, see `replication`) as one write set, and the held output waits in a queue behind that commit. The object
//! handles its next message meanwhile (reads see the writes still in flight); when commits
//! complete (in order), their held output is released in order. At most
//! [`MAX_HELD_HANDLERS`] finished handlers wait (a replicated object's:
//! `MAX_REPLICATED_IN_FLIGHT`); beyond that the activation takes no message and its mailbox
//! pushes back on senders. A handler that wrote nothing releases its output as soon as everything
//! before it has committed.
//!
//! ## Failures
//! - A handler error or panic discards its writes and its held output (callers get
//!   `NoReply`), then re-activates the object in place from storage, keeping its mailbox.
//! - A failed commit drops the held output of that commit and of every later in-flight one
//!   (their callers get `NoReply`), then re-activates the object in place from what is
//!   durable, keeping its mailbox: messages queued behind the failure are not lost (an exit
//!   and a supervisor restart would drop them, and a bounded mailbox never loses a message it
//!   accepted).
//!
//! ## Eviction
//! After the idle timeout without messages and with nothing in flight, the object closes its
//! mailbox *only if it is empty* and exits; a sender that still held its address gets its
//! message back (`NoProc`) and re-activates the object, so nothing is lost. A close refused
//! (mail queued, or senders granted room that have not pushed yet) is tried again no sooner
//! than [`IDLE_RECHECK`], so an activation leaving at once never loops without yielding.
//!
//! ## Deposed (replicated objects)
//! When this node stops serving the object's shard, the activation runs no handler: each
//! message it takes goes on to the shard's current leader ([`Forwards`], at most
//! [`MAX_FORWARDS`] at once, beyond which it takes no mail so its mailbox pushes back), an
//! HTTP request or socket event is routed again from the start, alarms are left to the
//! leader, and the activation evicts as soon as it is idle, without running
//! [`Object::deactivate`] (the object lives on at the leader; writes here could not commit). A forwarded message that comes
//! back (this node leads again) is handled here. What cannot be delivered within
//! `SHARD_WAIT` is dropped, logged and counted (`undeliverable`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use cairn_scheduler::gate::{Gate, HeldOutput};
use cairn_scheduler::{ActorRef, Ctx, ExitReason, Message, Pid, SendError, SpawnOptions};
use cairn_storage::{Keyspace, StorageError};
use cairn_supervisor::actor::guarded;
use cairn_supervisor::ActorError;
use tracing::Instrument;

use super::alarms::schedule_alarm_retry;
use super::output_queue::{CommitId, OutputQueue, Step};
use super::reference::object_name;
use super::routing::BoxFuture;
use super::stats::{bump, ClassStats};
use super::{Object, ObjectCtx, ObjectMsg, ObjectRef, ObjectSendError, Objects};

/// The address of one activation of an object.
pub(super) type Activation<O> = ActorRef<ObjectMsg<<O as Object>::Msg>>;

/// The outcome of looking an object's activation up.
pub(super) enum Lookup<O: Object> {
    Live(Activation<O>),
    Exiting(Pid),
}

/// A live activation, as the node-wide table knows it.
// `key`, `region` and `handoff` serve the mesh's membership hand-off only.
#[cfg_attr(not(feature = "mesh"), allow(dead_code))]
pub(super) struct Active {
    pub(super) class: &'static str,
    pub(super) key: Arc<str>,
    pub(super) region: Option<Arc<str>>,
    pid: Pid,
    /// Tells the activation to hand off (see [`ObjectMsg::Handoff`]).
    pub(super) handoff: Arc<dyn Fn() -> BoxFuture<()> + Send + Sync>,
}

impl<O: Object> ObjectRef<O> {
    /// The live activation, spawning one if there is none; or the pid of a previous
    /// activation that is shutting down (its mailbox closed, its name not yet free), which
    /// the caller must wait for instead of spinning.
    pub(super) fn activation(&self) -> Lookup<O> {
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
                move |ctx| {
                    // One span per activation (not per message): its logs carry the class and
                    // a hash of the key (keys may be personal data; the hash still joins lines).
                    let span = tracing::debug_span!(
                        "object",
                        class = O::CLASS,
                        key_hash = %format_args!("{:016x}", key_hash(&key))
                    );
                    run_object::<O>(ctx, objects, key, region).instrument(span)
                },
            );
            if let Ok(a) = spawned {
                *self.cached.lock() = Some(a.clone());
                return Lookup::Live(a);
            }
            // Lost a race to activate: the winner now holds the name; look it up again.
        }
    }

    /// Delivers `msg`, re-activating the object as often as needed: a message given back by
    /// an activation that closed meanwhile is sent again, so nothing is lost to eviction.
    pub(super) async fn send_ungated(&self, mut msg: ObjectMsg<O::Msg>) {
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

    /// Sends a local message without waiting: `Full` if the mailbox is full or the
    /// activation is shutting down right now (never spins on an exiting one).
    pub(super) fn try_send_local(&self, msg: O::Msg) -> Result<(), SendError<O::Msg>> {
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
}

/// The stable hash of an object key, as logs show it.
pub(crate) fn key_hash(key: &str) -> u64 {
    use cairn_scheduler::stable_hash::{fmix64, fnv1a, FNV_OFFSET};
    fmix64(fnv1a(FNV_OFFSET, key.as_bytes()))
}

/// The activation's commits in flight: the [`OutputQueue`] deciding what leaves, and the
/// tickets of the write sets it waits for, oldest first (the committer completes one
/// keyspace's sets in order, so only the oldest needs polling).
#[derive(Default)]
struct Pipeline {
    queue: OutputQueue<HeldOutput>,
    /// With when each set was handed over, for the gate-hold histogram.
    tickets: VecDeque<(CommitId, CommitFuture, Instant)>,
    committer: Committer,
}

/// Where an activation's write sets go.
#[derive(Default, Clone)]
struct Committer {
    /// The object's shard when its writes are replicated (see `replication`): then its
    /// commits go through the shard, as the fence chain of this activation's route.
    #[cfg(feature = "mesh")]
    shard: Option<Replicated>,
    /// The object's class and [`key_hash`], for each commit's span.
    class: &'static str,
    key_hash: u64,
}

/// A replicated activation's shard and commit route.
#[cfg(feature = "mesh")]
#[derive(Clone)]
struct Replicated {
    replication: Arc<super::replication::Replication>,
    shard: cairn_shard::ShardId,
    route: Arc<super::replication::ShardRoute>,
}

/// A write set's commit: `Err` says why the output gate stays shut.
type CommitFuture = BoxFuture<Result<(), String>>;

/// A write set's outcome once its commit settles, with the storage error as text.
async fn settled(ticket: cairn_storage::CommitTicket) -> Result<(), String> {
    ticket.await.map_err(|e| e.to_string())
}

impl Pipeline {
    /// Hands the handler's pending writes (if any) to the committer and queues `held`
    /// behind them; true if there was a write set.
    fn commit_behind(&mut self, storage: &Keyspace, held: HeldOutput) -> bool {
        let wrote = storage.has_pending();
        if let Some(id) = self.queue.handler_finished(wrote, held) {
            let commit = self.committer.commit(storage);
            self.tickets.push_back((id, commit, Instant::now()));
        }
        wrote
    }

    /// Whether a new message may be handled with this many handlers waiting on commits.
    fn takes_messages(&self) -> bool {
        #[cfg(feature = "mesh")]
        if self.committer.shard.is_some() {
            return self.queue.len() < MAX_REPLICATED_IN_FLIGHT;
        }
        self.queue.len() < MAX_HELD_HANDLERS
    }
}

impl Committer {
    /// Commits the pending writes: to the node's group-commit writer, or through the
    /// object's shard when replicated (the keyspace's commit route, see [`Self::install`]).
    ///
    /// Each commit runs in a `commit` span (target `cairn::commit`, debug) with the
    /// object's class and key hash, as requests' spans have: `RUST_LOG=cairn::commit=debug`
    /// logs every write set's hand-over and outcome with them. Disabled (the default), the
    /// span and events cost a check of their callsites' interest.
    fn commit(&self, storage: &Keyspace) -> CommitFuture {
        // Without a subscriber for these spans, no span: with tracing's `log` feature on
        // (quinn turns it on) even a disabled span costs hundreds of instructions per commit.
        if !tracing::enabled!(target: "cairn::commit", tracing::Level::DEBUG) {
            return Box::pin(settled(storage.commit()));
        }
        let span = tracing::debug_span!(
            target: "cairn::commit",
            "commit",
            class = self.class,
            key_hash = %format_args!("{:016x}", self.key_hash),
            replicated = self.replicated(),
        );
        let ticket = span.in_scope(|| {
            tracing::debug!(target: "cairn::commit", "committing");
            storage.commit()
        });
        Box::pin(
            async move {
                let result = settled(ticket).await;
                match &result {
                    Ok(()) => tracing::debug!(target: "cairn::commit", "write set committed"),
                    Err(error) => {
                        tracing::debug!(target: "cairn::commit", %error, "write set failed")
                    }
                }
                result
            }
            .instrument(span),
        )
    }

    /// Whether the writes go through a shard.
    fn replicated(&self) -> bool {
        #[cfg(feature = "mesh")]
        return self.shard.is_some();
        #[cfg(not(feature = "mesh"))]
        false
    }

    /// Routes every commit of `storage` (implicit, or the handler's own `commit()`) through
    /// the object's shard when replicated: nothing is written around it.
    fn install(&self, storage: &Keyspace) {
        #[cfg(feature = "mesh")]
        if let Some(r) = &self.shard {
            storage.route_commits(Some(r.route.clone()));
        }
        #[cfg(not(feature = "mesh"))]
        let _ = storage;
    }

    /// After a failed commit, before re-activating: the next write sets start a new fence
    /// chain (the failed ones are not built on any more).
    fn restart_chain(&self) {
        #[cfg(feature = "mesh")]
        if let Some(r) = &self.shard {
            r.route.restart_chain();
        }
    }

    /// Whether this node may no longer act for the object: its shard is served elsewhere.
    fn fenced(&self) -> bool {
        #[cfg(feature = "mesh")]
        if let Some(r) = &self.shard {
            return !r.replication.serving(r.shard);
        }
        false
    }
}

impl Pipeline {
    /// Polls the write set the queue waits for.
    fn poll_commit(
        &mut self,
        cx: &mut std::task::Context<'_>,
        stats: &ClassStats,
    ) -> Poll<(CommitId, Result<(), String>)> {
        let Some(awaited) = self.queue.awaited() else {
            return Poll::Pending;
        };
        let (id, ticket, _) = self
            .tickets
            .front_mut()
            .expect("an awaited commit has a ticket");
        debug_assert_eq!(
            *id, awaited,
            "write sets complete in the order they were handed over"
        );
        let result = std::task::ready!(ticket.as_mut().poll(cx));
        let (id, _, handed_over) = self.tickets.pop_front().expect("polled just now");
        stats.gate_hold.record(handed_over.elapsed());
        Poll::Ready((id, result))
    }
}

enum Event<M> {
    Committed(CommitId, Result<(), String>),
    /// Messages passed on by a deposed activation were delivered (see [`Forwards`]).
    Forwarded,
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
        let name: Arc<str> = object_name(O::CLASS, region.as_deref(), key).into();
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
    let name = object_name(O::CLASS, region.as_deref(), &key);
    let _active = ActiveGuard::new::<O>(&ctx, &objects, &key, &region);
    let storage = match objects.store.keyspace(&name) {
        Ok(ks) => ks,
        Err(e) => return storage_failure(&e),
    };
    storage.discard_pending();
    let committer = Committer {
        #[cfg(feature = "mesh")]
        shard: objects
            .shard_for(O::CLASS, &key, region.as_deref())
            .map(|(replication, shard)| Replicated {
                route: replication.route(shard),
                replication,
                shard,
            }),
        class: O::CLASS,
        key_hash: key_hash(&key),
    };
    // Before `activate`, whose writes commit with the first handler's.
    committer.install(&storage);
    let stats = objects.stats.class(O::CLASS);
    let mut octx = ObjectCtx {
        ctx,
        storage,
        key,
        region,
        objects: objects.clone(),
        alarm_retries: 0,
        stats,
        handled: 0,
    };
    let mut object = match activate::<O>(&mut octx).await {
        Ok(o) => o,
        Err(reason) => return reason,
    };
    let mut pipeline = Pipeline {
        committer: committer.clone(),
        ..Pipeline::default()
    };
    let mut idle = O::idle_timeout().unwrap_or(objects.config.idle_timeout);
    let mut idle_timer = IdleTimer::default();
    // The last idle check could not close the mailbox (messages queued, or senders granted
    // room that have not pushed yet): the next check waits at least IDLE_RECHECK, so the
    // activation parks instead of looping on an idle check that is always due.
    let mut close_refused = false;
    let mut forwards = Forwards::default();
    loop {
        while let Some(step) = pipeline.queue.next_step() {
            match step {
                Step::Release(held) => held.release().await,
                // Callers waiting on a dropped reply get NoReply, never a reply claiming a
                // write that did not happen.
                Step::Drop(held) => drop(held),
                Step::Reactivate => {
                    octx.storage.discard_pending();
                    committer.restart_chain();
                    // Restart in place, keeping the mailbox: messages queued behind the
                    // failed commit are handled by the new incarnation, not lost.
                    object = match activate::<O>(&mut octx).await {
                        Ok(o) => o,
                        Err(reason) => return reason,
                    };
                }
            }
        }
        let idle_for = if close_refused {
            idle.max(IDLE_RECHECK)
        } else {
            idle
        };
        let event = next_event(
            &mut octx,
            &mut pipeline,
            &mut forwards,
            &mut idle_timer,
            idle_for,
        )
        .await;
        close_refused = false;
        let call = match event {
            Event::Committed(id, result) => {
                if let Err(e) = &result {
                    bump(&octx.stats.write_sets_failed);
                    if !pipeline.queue.is_recovering() {
                        // Every later in-flight set of this keyspace fails too
                        // (EarlierCommitFailed); the queue waits for them so the
                        // re-activation reads only durable state.
                        tracing::error!(object = %name, error = %e, "commit failed; its held output and everything after it are dropped; restarting from storage");
                    }
                }
                pipeline.queue.commit_completed(id, result.is_ok());
                continue;
            }
            Event::Forwarded => continue,
            Event::Idle => {
                if !octx.ctx.close_if_idle() {
                    close_refused = true;
                    continue;
                }
                bump(&octx.stats.evictions);
                if committer.fenced() {
                    // Deposed: the object lives on at its shard's leader; this copy's state
                    // is not the object's any more, and its writes could not commit.
                    tracing::debug!(object = %name, "evicting a deposed activation without its deactivate hook");
                    return ExitReason::Normal;
                }
                tracing::debug!(object = %name, "evicting");
                return deactivate(&mut object, &mut octx, &committer, &name).await;
            }
            Event::Msg(Message::Signal(_)) => continue,
            Event::Msg(Message::User(ObjectMsg::Handoff)) => {
                // Evict as soon as nothing is queued or in flight (the next idle check).
                idle = Duration::ZERO;
                continue;
            }
            Event::Msg(Message::User(ObjectMsg::User(msg))) if committer.fenced() => {
                // Deposed: this node may not act for the object any more. The message goes
                // on to the shard's current leader; the activation ends once idle.
                let target =
                    ObjectRef::<O>::new_in(objects.clone(), &octx.key, octx.region.as_deref());
                forwards.push(target, msg);
                idle = Duration::ZERO;
                continue;
            }
            // The shard's leader fires its alarms.
            Event::Msg(Message::User(ObjectMsg::Alarm(_))) if committer.fenced() => continue,
            Event::Msg(Message::User(ObjectMsg::User(msg))) => HandlerCall::Message(msg),
            Event::Msg(Message::User(ObjectMsg::Alarm(at))) => HandlerCall::Alarm(at),
            #[cfg(feature = "http")]
            Event::Msg(Message::User(ObjectMsg::Http(call))) if committer.fenced() => {
                super::http::reroute::<O>(&objects, &octx.key, call);
                idle = Duration::ZERO;
                continue;
            }
            #[cfg(feature = "http")]
            Event::Msg(Message::User(ObjectMsg::Http(call))) => HandlerCall::Http(call),
        };
        if let Err(reason) = handle_one(&mut object, &mut octx, &mut pipeline, call).await {
            bump(&octx.stats.handler_failures);
            tracing::warn!(object = %name, %reason, "handler failed; its writes and output are discarded");
            // Restart in place from what is durable, keeping the mailbox.
            object = match activate::<O>(&mut octx).await {
                Ok(o) => o,
                Err(reason) => return reason,
            };
        }
    }
}

/// Which handler runs.
enum HandlerCall<M> {
    Message(M),
    /// The alarm set for this time is due.
    Alarm(SystemTime),
    /// `fetch` or a WebSocket handler.
    #[cfg(feature = "http")]
    Http(super::http::HttpCall),
}

/// Runs one handler behind an output gate and queues its output behind its write set. On
/// failure its writes and output are discarded (a failed alarm is set again for a retry) and
/// the error is returned: the caller re-activates the object.
async fn handle_one<O: Object>(
    object: &mut O,
    octx: &mut ObjectCtx<O>,
    pipeline: &mut Pipeline,
    call: HandlerCall<O::Msg>,
) -> Result<(), ExitReason> {
    let alarm_at = match &call {
        HandlerCall::Alarm(at) => Some(*at),
        _ => None,
    };
    if let Some(at) = alarm_at {
        // Stale delivery: the alarm was deleted or moved since it was scanned.
        if octx.storage.get_alarm().ok().flatten() != Some(at) {
            return Ok(());
        }
        // Cleared in the handler's own write set: a crash before that commit leaves the
        // alarm in place, so it is delivered again (at least once).
        let _ = octx.storage.delete_alarm();
    }
    let mut gate = Gate::new();
    let stats = Arc::clone(&octx.stats);
    let fut = match call {
        HandlerCall::Message(m) => Box::pin(object.handle(m, octx)) as HandlerFuture<'_>,
        HandlerCall::Alarm(_) => {
            bump(&stats.alarms_fired);
            Box::pin(object.alarm(octx))
        }
        #[cfg(feature = "http")]
        HandlerCall::Http(call) => super::http::handler(object, octx, call),
    };
    let started = Instant::now();
    let result = gated(&mut gate, fut).await;
    stats.handler_time.record(started.elapsed());
    // Sampled for the hottest objects: a plain count of this activation's, and a report
    // to the shared table every HOT_STRIDE handler calls.
    octx.handled += 1;
    if octx.handled % super::stats::HOT_STRIDE == 0 {
        octx.objects
            .stats
            .hot
            .report(O::CLASS, &octx.key, &octx.region, super::stats::HOT_STRIDE);
    }
    let objects = octx.objects.clone();
    if let Err(reason) = result {
        octx.storage.discard_pending();
        drop(gate.take());
        if let Some(at) = alarm_at {
            schedule_alarm_retry(&objects.config, octx, at);
            pipeline.commit_behind(&octx.storage, Gate::new().take());
            objects.wake_alarms();
        }
        return Err(reason);
    }
    if alarm_at.is_some() {
        octx.alarm_retries = 0;
    }
    // Only a write set that sets or deletes the alarm has the alarm process rescan (each
    // rescan reads storage twice: not for every durable write).
    let alarm_changed = octx.storage.has_pending_alarm_change();
    if pipeline.commit_behind(&octx.storage, gate.take()) && alarm_changed {
        objects.wake_alarms();
    }
    Ok(())
}

pub(super) type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), ActorError>> + Send + 'a>>;

/// Runs a handler with `gate` active for each of its polls, catching panics.
async fn gated(gate: &mut Gate, fut: HandlerFuture<'_>) -> Result<(), ExitReason> {
    let mut fut = pin!(guarded(fut));
    std::future::poll_fn(|cx| gate.poll_within(fut.as_mut(), cx)).await
}

/// How an activation ends when storage fails it outside a handler (opening its keyspace,
/// committing `deactivate`'s writes): an error like any other, for monitors and logs. The
/// scheduler has no storage-specific reason; storage is a layer above it.
fn storage_failure(e: &StorageError) -> ExitReason {
    ExitReason::Error(format!("storage: {e}"))
}

/// Eviction after the mailbox closed: the `deactivate` hook, its commit, its output.
async fn deactivate<O: Object>(
    object: &mut O,
    octx: &mut ObjectCtx<O>,
    committer: &Committer,
    name: &str,
) -> ExitReason {
    let mut gate = Gate::new();
    let result = gated(&mut gate, Box::pin(object.deactivate(octx))).await;
    if let Err(reason) = result {
        tracing::warn!(object = %name, %reason, "deactivate failed; its writes are discarded");
        octx.storage.discard_pending();
        return ExitReason::Normal;
    }
    if octx.storage.has_pending() {
        if let Err(e) = committer.commit(&octx.storage).await {
            bump(&octx.stats.write_sets_failed);
            return ExitReason::Error(format!("storage: {e}"));
        }
    }
    gate.take().release().await;
    ExitReason::Normal
}

async fn activate<O: Object>(octx: &mut ObjectCtx<O>) -> Result<O, ExitReason> {
    bump(&octx.stats.activations);
    tracing::debug!(class = O::CLASS, key = %octx.key, "activating");
    let mut fut = pin!(guarded(O::activate(octx)));
    match fut.as_mut().await {
        Ok(o) => Ok(o),
        Err(reason) => {
            tracing::error!(%reason, "object activation failed");
            Err(reason)
        }
    }
}

/// Finished handlers an activation may have waiting on commits (their held output and
/// write sets). As many as a default mailbox holds: a full pipeline is as deep as a full
/// mailbox, and the group commit (up to 1,024 sets a batch) still sees whole batches.
pub(crate) const MAX_HELD_HANDLERS: usize = 1024;

/// [`MAX_HELD_HANDLERS`] for a replicated object: write sets of one activation in flight
/// through its shard at once. Enough to overlap a few Raft rounds of commits per object;
/// small enough that one object cannot fill its shard's proposal queue (whose refusal fails
/// the set and restarts the object) or hold many replies on one failure.
#[cfg(feature = "mesh")]
pub(crate) const MAX_REPLICATED_IN_FLIGHT: usize = 64;

/// A deposed activation's messages on their way to its shard's current leader
/// ([`ObjectRef::deliver_elsewhere`], each waiting up to `SHARD_WAIT` for one). At most
/// [`MAX_FORWARDS`] at once: beyond that the activation takes no message, so its mailbox
/// pushes back on senders instead of the node holding every message that reaches a deposed
/// replica in a task of its own. A message that comes back (this node serves the shard
/// again) is handled here; a message that cannot be delivered is logged and dropped, as a
/// send to an unreachable owner fails (a call's caller gets `NoReply`).
struct Forwards<O: Object> {
    pending: Vec<BoxFuture<Option<O::Msg>>>,
}

impl<O: Object> Default for Forwards<O> {
    fn default() -> Self {
        Forwards {
            pending: Vec::new(),
        }
    }
}

impl<O: Object> Forwards<O> {
    fn push(&mut self, target: ObjectRef<O>, msg: O::Msg) {
        self.pending.push(Box::pin(async move {
            match target.deliver_elsewhere(msg, 1).await {
                Ok(back) => back,
                Err(ObjectSendError { error, .. }) => {
                    target.undeliverable(&error);
                    None
                }
            }
        }));
    }

    fn has_room(&self) -> bool {
        self.pending.len() < MAX_FORWARDS
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Polls every forward; ready once one or more finished (the activation then looks
    /// again at whether it may take messages), with a message that came back if one did.
    fn poll_finished(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<O::Msg>> {
        let mut finished = false;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].as_mut().poll(cx) {
                Poll::Pending => i += 1,
                Poll::Ready(back) => {
                    drop(self.pending.swap_remove(i));
                    finished = true;
                    if back.is_some() {
                        return Poll::Ready(back);
                    }
                }
            }
        }
        if finished {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// Messages a deposed activation passes on at once ([`Forwards`]).
const MAX_FORWARDS: usize = 64;

/// How soon an idle check runs again after it could not close the mailbox, when the idle
/// time is shorter (zero: a hand-off, a deposed replica). Without it the check is due at
/// once, again and again: `recv` returns `Pending` when the turn's message budget is spent
/// (or while granted senders have not pushed yet), the activation never returns to its
/// worker, the budget never resets and the senders never run.
const IDLE_RECHECK: Duration = Duration::from_millis(1);

/// An activation's idle timer, kept across events: a busy object re-arms it once per idle
/// period instead of registering (and cancelling) a driver timer for every message. It
/// fires no earlier than the deadline it is polled for, so re-arming lazily changes no
/// eviction: a timer that fires before the current deadline (events came meanwhile) is
/// armed again for it.
#[derive(Default)]
struct IdleTimer {
    armed: Option<(Instant, cairn_scheduler::driver::Sleep)>,
}

impl IdleTimer {
    /// Ready once `deadline` has passed.
    fn poll(
        &mut self,
        handle: &cairn_scheduler::Handle,
        deadline: Instant,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        if let Some((_, sleep)) = self.armed.as_mut().filter(|(at, _)| *at <= deadline) {
            if pin!(sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // Not armed, armed for later than `deadline` (the idle time was shortened), or
        // fired for an earlier deadline.
        let now = Instant::now();
        if now >= deadline {
            self.armed = None;
            return Poll::Ready(());
        }
        let mut sleep = handle.sleep(deadline - now);
        let pending = pin!(&mut sleep).poll(cx).is_pending();
        self.armed = Some((deadline, sleep));
        if pending {
            Poll::Pending
        } else {
            self.armed = None;
            Poll::Ready(())
        }
    }
}

/// Waits for whichever comes first: the awaited in-flight commit completing, a message
/// (unless recovering from a failed commit, or [`MAX_HELD_HANDLERS`] are waiting), or the
/// idle timeout (only when nothing is in flight).
async fn next_event<O: Object>(
    octx: &mut ObjectCtx<O>,
    pipeline: &mut Pipeline,
    forwards: &mut Forwards<O>,
    idle_timer: &mut IdleTimer,
    idle: Duration,
) -> Event<O::Msg> {
    let handle = octx.ctx.handle().clone();
    let idle_at = (pipeline.queue.is_empty() && forwards.is_empty()).then(|| Instant::now() + idle);
    // At most MAX_HELD_HANDLERS handlers' output and commits in flight (and MAX_FORWARDS
    // messages on their way elsewhere): beyond that the mailbox fills and senders wait, so
    // durable work pushes back instead of queueing write sets and held output without bound.
    let take_messages =
        !pipeline.queue.is_recovering() && pipeline.takes_messages() && forwards.has_room();
    std::future::poll_fn(|cx| {
        if let Poll::Ready((id, result)) = pipeline.poll_commit(cx, &octx.stats) {
            return Poll::Ready(Event::Committed(id, result));
        }
        // Forwards that finished: room to take messages again, and a message that came back
        // (this node serves the object's shard again) to handle.
        if let Poll::Ready(back) = forwards.poll_finished(cx) {
            return Poll::Ready(match back {
                Some(msg) => Event::Msg(Message::User(ObjectMsg::User(msg))),
                None => Event::Forwarded,
            });
        }
        if take_messages {
            if let Poll::Ready(Some(m)) = pin!(octx.ctx.recv()).poll(cx) {
                return Poll::Ready(Event::Msg(m));
            }
        }
        if let Some(at) = idle_at {
            if idle_timer.poll(&handle, at, cx).is_ready() {
                return Poll::Ready(Event::Idle);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `timer` for `deadline` until it is ready; when it was ready.
    fn fired_at(
        rt: &cairn_scheduler::Runtime,
        timer: &mut IdleTimer,
        deadline: Instant,
    ) -> Instant {
        let handle = rt.handle();
        rt.block_on(std::future::poll_fn(|cx| timer.poll(&handle, deadline, cx)));
        Instant::now()
    }

    /// A timer armed for an earlier deadline is kept when the deadline moves later (events
    /// came), and never reports idle before the current deadline.
    #[test]
    fn the_idle_timer_fires_no_earlier_than_the_latest_deadline() {
        let rt = cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap();
        let mut timer = IdleTimer::default();
        let start = Instant::now();
        let first = start + Duration::from_millis(20);
        let later = start + Duration::from_millis(60);
        let handle = rt.handle();
        // Armed for `first`...
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(timer.poll(&handle, first, &mut cx).is_pending());
        assert_eq!(timer.armed.as_ref().map(|(at, _)| *at), Some(first));
        // ...then polled for `later`: still armed for `first`, re-armed once that fires.
        assert!(timer.poll(&handle, later, &mut cx).is_pending());
        assert_eq!(timer.armed.as_ref().map(|(at, _)| *at), Some(first));
        assert!(fired_at(&rt, &mut timer, later) >= later);
        assert!(timer.armed.is_none());
        // A shorter idle time (hand-off) replaces a timer armed for later.
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(timer.poll(&handle, far, &mut cx).is_pending());
        let soon = Instant::now() + Duration::from_millis(5);
        assert!(fired_at(&rt, &mut timer, soon) >= soon);
        rt.shutdown();
    }
}
