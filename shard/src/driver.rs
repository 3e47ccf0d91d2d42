//! The shard layer on Cairn's scheduler: one process per node runs the [`MultiRaft`] loop.
//!
//! The process owns the core. It waits for a message or the core's next deadline (timers
//! from the scheduler's wheel via `recv_timeout`), steps everything that arrived, then runs
//! rounds: `ready` → send the leader's early messages → persist the round through
//! [`LmdbLog`] on the blocking pool (one LMDB transaction, one fsync) → `persisted` → send
//! the rest, answer proposals, report events. Messages that arrive during a persist wait in
//! the mailbox and are stepped together afterwards: that is where batching comes from.
//!
//! Raft messages leave through a [`ShardTransport`] the mesh installs (phase 2); tests use
//! [`LocalNet`]. What the object layer reads concurrently — whether this node serves a shard
//! and until when — is published to a [`LeaseBoard`] *before* any message of a round leaves,
//! so a hand-over never lets the board lag behind what peers were told.
//!
//! ## Proposal fates
//! Every proposal carries its [`Completion`] and its deadline (driver clock) into the
//! driver, which keeps both until the proposal's fate is known and then completes it exactly
//! once: with the core's [`Outcome`] (`Committed` only once committed by a majority and
//! applied here), with the core's refusal, with `Call(Timeout)` once its deadline has
//! passed, or — if the driver stops, or the proposal is dropped before it reached the
//! driver — with `Call(NoProc)` (a dropped [`Completion`] completes itself). Deadlines are
//! enforced by the driver's own loop: one sorted queue of deadlines, swept every iteration,
//! and the loop wakes for the earliest one; no proposal has a timer of its own. A proposal
//! past its deadline before the driver saw it is still proposed (a fenced chain must not
//! lose a member silently: a later set of it could commit without it) and then failed.
//! (While the driver is stalled — e.g. a persist that does not return — nothing is swept:
//! its proposals fail when it runs again.) A completion is called on the driver's process:
//! it must be short and must not block.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{ActorRef, CallError, Handle, Message, NodeId, Reply};
use parking_lot::Mutex;

use crate::core::{MultiRaft, Outcome, Output, ProposeError, ShardEvent};
use crate::lmdb_log::LmdbLog;
use crate::placement::Member;
use crate::stats::{ShardStats, MAP_REFRESH};
use crate::types::Fence;
use crate::types::ProposalId;
use crate::types::ShardId;
use crate::wire::{WireBatch, WireConfState};

/// How Raft messages leave this node. Installed by the mesh; must not block.
pub trait ShardTransport: Send + Sync + 'static {
    /// Sends `batch` to node `to`, best effort (Raft tolerates loss and reordering).
    fn send(&self, from: NodeId, to: NodeId, batch: WireBatch);
}

/// Per-shard "serving until" instants, readable from any thread without asking the driver.
#[derive(Debug)]
pub struct LeaseBoard {
    epoch: Instant,
    /// Nanoseconds since `epoch` until which this node may acknowledge; 0 = not serving.
    until: Vec<AtomicU64>,
    /// The leader term of that lease (0 = not serving); stored before `until`.
    term: Vec<AtomicU64>,
    /// The leader this node's replica knows per shard (`NodeId.0`; 0 = none known or not
    /// hosted here): a routing hint for senders, never a permission to acknowledge.
    leader: Vec<AtomicU64>,
}

impl LeaseBoard {
    fn new(epoch: Instant, shards: u32) -> LeaseBoard {
        LeaseBoard {
            epoch,
            until: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            term: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            leader: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether this node may acknowledge for `shard` now (leader, lease valid, caught up).
    /// The object layer checks it right before releasing any output.
    pub fn serving(&self, shard: ShardId) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.until
            .get(shard.0 as usize)
            .is_some_and(|u| now < u.load(Ordering::Acquire))
    }

    /// The leader term in which this node serves `shard` now, if it serves it: the term a
    /// [`Fence`] chain started now names.
    pub fn serving_term(&self, shard: ShardId) -> Option<u64> {
        if !self.serving(shard) {
            return None;
        }
        let term = self.term.get(shard.0 as usize)?.load(Ordering::Acquire);
        (term != 0).then_some(term)
    }

    /// The leader this node last knew for `shard` (a hint: it may be stale).
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        let id = self.leader.get(shard.0 as usize)?.load(Ordering::Acquire);
        (id != 0).then_some(NodeId(id))
    }

    /// Time on the board's clock (the driver's `now`).
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn publish(&self, core: &MultiRaft, now: Duration, stats: &ShardStats) {
        let mut rows = core.board_rows(now).peekable();
        for (i, slot) in self.until.iter().enumerate() {
            let shard = ShardId(i as u32);
            let (serving, leader) = rows
                .next_if(|row| row.0 == shard)
                .map_or((None, None), |(_, serving, leader)| (serving, leader));
            let (until, term) = serving.map_or((0, 0), |(t, term)| (t.as_nanos() as u64, term));
            self.term[i].store(term, Ordering::Release);
            slot.store(until, Ordering::Release);
            let leader = leader.map_or(0, |n| n.0);
            let before = self.leader[i].swap(leader, Ordering::AcqRel);
            if leader != 0 && leader != before {
                stats.leader_changed();
            }
        }
    }
}

/// Messages of the driver process.
pub enum DriverMsg {
    /// Raft messages from a peer (the transport delivers them).
    Raft {
        /// The peer.
        from: NodeId,
        /// Its batch.
        batch: WireBatch,
    },
    /// Propose a write set; `done` is completed when its fate is known (see the module doc).
    Propose {
        /// The shard.
        shard: ShardId,
        /// The payload (an encoded `WriteSetData`).
        data: Vec<u8>,
        /// The proposer's chain, if its proposals must commit in order (see [`Fence`]).
        fence: Option<Fence>,
        /// When the driver fails it with `Call(Timeout)` (driver clock, [`LeaseBoard::now`]).
        deadline: Duration,
        /// Where the outcome goes.
        done: Completion,
    },
    /// The members changed (from the failure detector).
    Members(Vec<Member>),
    /// Diagnostics of one shard ([`MultiRaft::debug`]).
    Debug(ShardId, Reply<String>),
    /// `shard`'s voters and learners as this node knows them.
    ConfState(ShardId, Reply<Option<WireConfState>>),
}

/// A proposal built by [`ShardNode::fenced_then`], not yet queued
/// to the driver. Dropped unqueued, it completes with `Call(NoProc)`.
pub struct Proposal(DriverMsg);

/// A callback taking a proposal's fate (see [`ShardNode::fenced_then`]).
pub type FateCallback = Box<dyn FnOnce(Result<Outcome, DriverError>) + Send + 'static>;

/// Where a proposal's fate goes, completed exactly once (see the module doc): a reply (the
/// future of [`ShardNode::submit`]) or a callback
/// ([`ShardNode::fenced_then`]). Dropped uncompleted, it completes with `Call(NoProc)`.
pub struct Completion(Option<Fate>);

enum Fate {
    Reply(Reply<Result<Outcome, DriverError>>),
    Call(FateCallback),
}

impl Completion {
    fn complete(mut self, result: Result<Outcome, DriverError>) {
        match self.0.take() {
            Some(Fate::Reply(r)) => {
                let _ = r.send(result);
            }
            Some(Fate::Call(f)) => f(result),
            None => {}
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.0.is_some() {
            Completion(self.0.take()).complete(Err(DriverError::Call(CallError::NoProc)));
        }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal").finish_non_exhaustive()
    }
}

/// Errors of [`ShardNode::propose`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Refused at once.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// No answer in time, or the driver is gone.
    #[error("shard driver call failed: {0:?}")]
    Call(CallError),
}

/// A running shard driver.
#[derive(Clone)]
pub struct ShardNode {
    me: NodeId,
    actor: ActorRef<DriverMsg>,
    board: Arc<LeaseBoard>,
    stats: Arc<ShardStats>,
}

impl std::fmt::Debug for ShardNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardNode").field("me", &self.me).finish()
    }
}

/// Receives serving changes (the object layer activates/deactivates on them).
pub type EventSink = Box<dyn Fn(ShardEvent) + Send + 'static>;

impl ShardNode {
    /// Starts the driver process for `core` persisting through `log`.
    pub fn start(
        handle: &Handle,
        core: MultiRaft,
        log: LmdbLog,
        transport: Arc<dyn ShardTransport>,
        on_event: Option<EventSink>,
    ) -> ShardNode {
        let me = core.node();
        let epoch = Instant::now();
        let board = Arc::new(LeaseBoard::new(epoch, core.config().shards));
        let board2 = Arc::clone(&board);
        let stats = Arc::new(ShardStats::default());
        let stats2 = Arc::clone(&stats);
        let h = handle.clone();
        let actor = handle.spawn(move |mut ctx| async move {
            let mut d = Driver {
                core,
                log,
                transport,
                board: board2,
                stats: stats2,
                map_refreshed: None,
                epoch,
                waiting: HashMap::new(),
                deadlines: VecDeque::new(),
                on_event,
                handle: h,
            };
            loop {
                let now = d.now();
                let next = d
                    .next_expiry()
                    .map_or(d.core.next_deadline(), |e| e.min(d.core.next_deadline()));
                let wait = next.saturating_sub(now);
                match ctx.recv_timeout(wait).await {
                    Some(Message::User(m)) => d.handle_msg(m),
                    Some(Message::Signal(_)) => {}
                    None if !ctx.handle().is_alive(ctx.pid()) => return,
                    None => {}
                }
                // Step everything else already queued before running a round: batching.
                while let Some(m) = ctx.try_recv() {
                    if let Message::User(m) = m {
                        d.handle_msg(m);
                    }
                }
                let now = d.now();
                d.core.tick(now);
                d.board.publish(&d.core, now, &d.stats);
                if d.run_rounds(&mut ctx).await.is_err() {
                    return;
                }
                d.sweep(d.now());
                d.refresh_map();
            }
        });
        ShardNode {
            me,
            actor,
            board,
            stats,
        }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// The lease board (for the object layer's output gate).
    pub fn board(&self) -> &Arc<LeaseBoard> {
        &self.board
    }

    /// Whether this node may acknowledge for `shard` now.
    pub fn serving(&self, shard: ShardId) -> bool {
        self.board.serving(shard)
    }

    /// The driver's counters and shard map (see [`crate::stats`]).
    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// Hands Raft messages received from `from` to the driver (the transport calls it). A
    /// full mailbox drops them: Raft retransmits.
    pub fn deliver(&self, from: NodeId, batch: WireBatch) {
        let _ = self.actor.try_send(DriverMsg::Raft { from, batch });
    }

    /// Proposes `data` to `shard` and waits (at most `timeout`) for its fate. `Committed`
    /// means durable on a majority and applied here; acknowledge only if
    /// [`serving`](Self::serving) still holds.
    pub async fn propose(
        &self,
        shard: ShardId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Outcome, DriverError> {
        self.submit(shard, data, timeout).await
    }

    /// [`propose`](Self::propose), with the proposal queued to the driver *now*, before the
    /// returned future is first polled: proposals submitted one after another from one
    /// thread reach the shard in that order (unless the driver's mailbox is full: then the
    /// future waits for room when polled).
    pub fn submit(
        &self,
        shard: ShardId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Outcome, DriverError>> + Send + 'static {
        let deadline = Instant::now() + timeout;
        let (reply, rx) = Reply::pair();
        let queued = self.actor.try_send_ungated(DriverMsg::Propose {
            shard,
            data,
            fence: None,
            deadline: self.board.now() + timeout,
            done: Completion(Some(Fate::Reply(reply))),
        });
        let actor = self.actor.clone();
        async move {
            let handle = actor.handle();
            let left = || deadline.saturating_duration_since(Instant::now());
            match queued {
                Ok(()) => {}
                Err(cairn_scheduler::SendError::Full(msg)) => {
                    match handle.timeout(left(), actor.send_ungated(msg)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(DriverError::Call(CallError::NoProc)),
                        Err(_) => return Err(DriverError::Call(CallError::Timeout)),
                    }
                }
                Err(_) => return Err(DriverError::Call(CallError::NoProc)),
            }
            Self::outcome(&actor, rx, deadline).await
        }
    }

    /// A proposal of the [`Fence`] chain `fence`, built but not yet queued; the driver calls
    /// `done` with its fate, exactly once — the outcome, the refusal,
    /// `Call(Timeout)` from the driver's own deadline sweep `timeout` after now, or
    /// `Call(NoProc)` if the proposal is dropped unqueued or the driver stops first. `done`
    /// runs on the driver's process (or where the proposal is dropped): keep it short and
    /// non-blocking. Queue it with [`try_queue`](Self::try_queue) or [`queue`](Self::queue);
    /// the caller keeps a chain's proposals in order (a later one is never queued while an
    /// earlier one still waits for room).
    pub fn fenced_then(
        &self,
        shard: ShardId,
        data: Vec<u8>,
        fence: Fence,
        timeout: Duration,
        done: impl FnOnce(Result<Outcome, DriverError>) + Send + 'static,
    ) -> Proposal {
        self.proposal(
            shard,
            data,
            Some(fence),
            timeout,
            Completion(Some(Fate::Call(Box::new(done)))),
        )
    }

    fn proposal(
        &self,
        shard: ShardId,
        data: Vec<u8>,
        fence: Option<Fence>,
        timeout: Duration,
        done: Completion,
    ) -> Proposal {
        Proposal(DriverMsg::Propose {
            shard,
            data,
            fence,
            deadline: self.board.now() + timeout,
            done,
        })
    }

    /// Queues `p` to the driver now, or gives it back if the driver's mailbox is full (a
    /// driver that is gone drops it: its fate future fails).
    pub fn try_queue(&self, p: Proposal) -> Result<(), Proposal> {
        match self.actor.try_send_ungated(p.0) {
            Err(cairn_scheduler::SendError::Full(msg)) => Err(Proposal(msg)),
            _ => Ok(()),
        }
    }

    /// Queues `p` to the driver, waiting for room in its mailbox.
    pub async fn queue(&self, p: Proposal) {
        let _ = self.actor.send_ungated(p.0).await;
    }

    async fn outcome(
        actor: &ActorRef<DriverMsg>,
        rx: cairn_scheduler::ReplyReceiver<Result<Outcome, DriverError>>,
        deadline: Instant,
    ) -> Result<Outcome, DriverError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match actor.handle().timeout(left, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(DriverError::Call(e)),
            Err(_) => Err(DriverError::Call(CallError::Timeout)),
        }
    }

    /// Diagnostics of `shard` on this node.
    pub async fn debug(&self, shard: ShardId) -> String {
        self.actor
            .call(|r| DriverMsg::Debug(shard, r), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| format!("{e:?}"))
    }

    /// `shard`'s voters and learners as this node's replica knows them (`None`: not hosted
    /// here, or the driver did not answer).
    pub async fn conf_state(&self, shard: ShardId) -> Option<WireConfState> {
        self.actor
            .call(|r| DriverMsg::ConfState(shard, r), Duration::from_secs(5))
            .await
            .ok()
            .flatten()
    }

    /// Updates the membership (drives rebalancing).
    pub fn set_members(&self, members: Vec<Member>) {
        let _ = self.actor.try_send(DriverMsg::Members(members));
    }

    /// Stops the driver (as a crash would, minus the kill: nothing unpersisted survives).
    pub fn stop(&self) {
        self.actor
            .handle()
            .exit(self.actor.pid(), cairn_scheduler::ExitReason::Kill);
    }

    /// The driver's pid.
    pub fn pid(&self) -> cairn_scheduler::Pid {
        self.actor.pid()
    }
}

struct Driver {
    core: MultiRaft,
    log: LmdbLog,
    transport: Arc<dyn ShardTransport>,
    board: Arc<LeaseBoard>,
    stats: Arc<ShardStats>,
    /// When the shard map was last refreshed (`None`: never, or a serving change since).
    map_refreshed: Option<Duration>,
    epoch: Instant,
    /// Proposals waiting for their fate, with when they were proposed (driver clock).
    waiting: HashMap<ProposalId, (Completion, Duration)>,
    /// The deadlines of `waiting`, earliest first (entries of proposals resolved since are
    /// skipped when they reach the front).
    deadlines: VecDeque<(Duration, ProposalId)>,
    on_event: Option<EventSink>,
    handle: Handle,
}

impl Driver {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Lists `id`'s deadline, keeping `deadlines` sorted (timeouts are mostly equal, so it
    /// goes at the back).
    fn expire_at(&mut self, deadline: Duration, id: ProposalId) {
        let at = self
            .deadlines
            .iter()
            .rposition(|&(d, _)| d <= deadline)
            .map_or(0, |i| i + 1);
        self.deadlines.insert(at, (deadline, id));
    }

    /// Fails every waiting proposal whose deadline is not after `now` with `Call(Timeout)`
    /// (its entry may still commit: it is no longer reported), and forgets the deadlines of
    /// proposals resolved since.
    fn sweep(&mut self, now: Duration) {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if self.waiting.contains_key(&id) && deadline > now {
                return;
            }
            self.deadlines.pop_front();
            if let Some((done, _)) = self.waiting.remove(&id) {
                self.stats.failed();
                done.complete(Err(DriverError::Call(CallError::Timeout)));
            }
        }
    }

    /// The earliest deadline the loop must wake for (maybe a resolved proposal's: an early
    /// wake-up at worst).
    fn next_expiry(&self) -> Option<Duration> {
        self.deadlines.front().map(|&(d, _)| d)
    }

    fn handle_msg(&mut self, m: DriverMsg) {
        match m {
            DriverMsg::Raft { from, batch } => {
                let now = self.now();
                self.core.advance(now);
                self.core.step(from, batch);
            }
            DriverMsg::Propose {
                shard,
                data,
                fence,
                deadline,
                done,
            } => match self.core.propose_fenced(shard, data, fence) {
                // Proposed even if its deadline has passed (see the module doc); the next
                // sweep fails it then.
                Ok(id) => {
                    self.waiting.insert(id, (done, self.now()));
                    self.expire_at(deadline, id);
                }
                Err(e) => {
                    self.stats.failed();
                    done.complete(Err(e.into()));
                }
            },
            DriverMsg::Members(ms) => self.core.set_members(ms),
            DriverMsg::Debug(shard, reply) => {
                let _ = reply.send(self.core.debug(shard));
            }
            DriverMsg::ConfState(shard, reply) => {
                let _ = reply.send(self.core.conf_state(shard));
            }
        }
    }

    /// Steps every message already queued (no waiting), then ticks the clock.
    fn drain(&mut self, ctx: &mut cairn_scheduler::Ctx<DriverMsg>) {
        while let Some(m) = ctx.try_recv() {
            if let Message::User(m) = m {
                self.handle_msg(m);
            }
        }
        let now = self.now();
        self.core.tick(now);
        self.sweep(now);
        self.refresh_map();
    }

    /// Refreshes the shard map in [`ShardStats`] if it is older than [`MAP_REFRESH`] or a
    /// serving change happened since.
    fn refresh_map(&mut self) {
        let now = self.now();
        if self
            .map_refreshed
            .is_some_and(|at| now.saturating_sub(at) < MAP_REFRESH)
        {
            return;
        }
        self.map_refreshed = Some(now);
        self.stats.set_map(self.core.views());
    }

    fn send_all(&self, msgs: Vec<(NodeId, WireBatch)>) {
        let me = self.core.node();
        for (to, b) in msgs {
            self.transport.send(me, to, b);
        }
    }

    /// Runs rounds while the core has work. Between two rounds it steps everything that
    /// arrived during the last persist (followers' answers, proposals): an answer that
    /// commits entries is then applied in the very next round, rather than after one more
    /// fsync'd round that could not see it, and new proposals join that round's entries.
    async fn run_rounds(&mut self, ctx: &mut cairn_scheduler::Ctx<DriverMsg>) -> Result<(), ()> {
        while self.core.has_ready() {
            let now = self.now();
            let mut round = self.core.ready(now);
            self.board.publish(&self.core, now, &self.stats);
            self.send_all(std::mem::take(&mut round.messages_now));
            let log = self.log.clone();
            let joined = self
                .handle
                .spawn_blocking(move || {
                    let res = log.persist(&round.shards).map_err(|e| e.to_string());
                    (round, res)
                })
                .await;
            let (round, res) = match joined {
                Ok(x) => x,
                Err(panic) => {
                    tracing::error!(%panic, "shard round persist panicked");
                    return Err(());
                }
            };
            if let Err(e) = res {
                // The round is not durable and raft-rs cannot take it back: stop, as a
                // crash would; a restart recovers from what is on disk.
                tracing::error!(error = %e, "shard round failed to persist; stopping the shard driver");
                for (_, (done, _)) in self.waiting.drain() {
                    self.stats.failed();
                    done.complete(Ok(Outcome::Unknown));
                }
                self.deadlines.clear();
                self.board
                    .until
                    .iter()
                    .for_each(|u| u.store(0, Ordering::Release));
                return Err(());
            }
            let now = self.now();
            let out: Output = self.core.persisted(round, now);
            self.board.publish(&self.core, now, &self.stats);
            self.send_all(out.messages);
            for (_, id, outcome) in out.outcomes {
                if let Some((done, at)) = self.waiting.remove(&id) {
                    match outcome {
                        Outcome::Committed => self.stats.committed(now.saturating_sub(at)),
                        _ => self.stats.failed(),
                    }
                    done.complete(Ok(outcome));
                }
            }
            if !out.events.is_empty() {
                self.map_refreshed = None;
            }
            if let Some(f) = &self.on_event {
                out.events.into_iter().for_each(f);
            }
            for shard in out.snapshot_requests {
                let log = self.log.clone();
                match self
                    .handle
                    .spawn_blocking(move || log.export(shard).map_err(|e| e.to_string()))
                    .await
                    .and_then(|r| r)
                {
                    Ok((applied, data)) => {
                        self.core.provide_snapshot(shard, applied, data);
                    }
                    Err(e) => tracing::warn!(shard = %shard, error = %e, "snapshot export failed"),
                }
            }
            self.drain(ctx);
        }
        Ok(())
    }
}

/// An in-process transport: nodes registered by id; links can be cut. For tests.
#[derive(Default)]
pub struct LocalNet {
    nodes: Mutex<HashMap<NodeId, ShardNode>>,
    cut: Mutex<std::collections::HashSet<NodeId>>,
}

impl std::fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNet").finish_non_exhaustive()
    }
}

impl LocalNet {
    /// Registers (or replaces, after a restart) a node.
    pub fn attach(&self, node: ShardNode) {
        self.cut.lock().remove(&node.node());
        self.nodes.lock().insert(node.node(), node);
    }

    /// Removes a node: messages to and from it are dropped.
    pub fn detach(&self, id: NodeId) {
        self.cut.lock().insert(id);
        self.nodes.lock().remove(&id);
    }
}

impl ShardTransport for LocalNet {
    fn send(&self, from: NodeId, to: NodeId, batch: WireBatch) {
        if self.cut.lock().contains(&from) {
            return;
        }
        let target = self.nodes.lock().get(&to).cloned();
        if let Some(n) = target {
            n.deliver(from, batch);
        }
    }
}
