//! The sans-IO Multi-Raft core: one raft-rs `RawNode` per hosted shard, driven by plain
//! method calls. It performs no I/O and reads no clock: every input carries `now`.
//!
//! # The round protocol
//! ```text
//!   tick(now) / step(from, batch) / propose(shard, data)      (any number, any order)
//!   let round = ready(now)        // many shards' work at once
//!   send round.messages_now       // a leader's appends, in parallel with its own fsync
//!   persist round.shards          // ONE storage transaction + ONE fsync for all shards
//!   let out = persisted(round, now)
//!   send out.messages; deliver out.outcomes and out.events; export out.snapshot_requests
//! ```
//! Between `ready` and `persisted` no other method may be called (raft-rs's rule for a
//! `Ready`); `persisted` asserts it gets the round it handed out.
//!
//! # Invariants
//! * raft-rs reads only durable state: [`ShardLog`] is updated in `persisted`, after the
//!   round's transaction committed.
//! * A round applies committed entries *and* records the applied index in the same
//!   transaction; a proposal's outcome is released only after that transaction.
//! * A proposal is reported [`Outcome::Committed`] only when the entry at the index and term
//!   it was appended with is applied here; an entry replaced by another leader's is
//!   [`Outcome::NotCommitted`]; one whose fate a snapshot hid is [`Outcome::Unknown`].
//! * **Leases.** A leader may act for a shard (run its objects' handlers, answer reads)
//!   only while [`MultiRaft::serving`] is true: it is the leader, has applied an entry of
//!   its own term (so it has applied everything committed before), is not handing
//!   leadership over, and holds a lease. (A write set it proposed while serving is
//!   acknowledged once `Committed`, even if it stopped serving since: the entry at its
//!   (index, term) proves nobody else wrote in between.) The lease is renewed by a ReadIndex heartbeat round issued at local time
//!   `t`: once a quorum answered it, the lease runs until `t + ShardConfig::lease()` (see
//!   there for why no successor can be elected before). A node that restarts refuses votes
//!   for one election timeout, because it forgot whose lease it was backing.
//! * **Hand-over drains.** A leader that hands leadership over (it leaves the shard's
//!   target replicas) stops serving at once but starts raft-rs's transfer only a tick later,
//!   with nothing queued: meanwhile it still appends the fenced write sets of its term, which
//!   were handled while it served. So a planned move refuses no write that was already
//!   handled; the successor commits them.
//! * Election timeouts are drawn from the core's seeded RNG (in
//!   `[election_ticks, 2·election_ticks)`, again each time a replica's election clock
//!   restarts), not raft-rs's thread RNG, so a run is a function of its seed and inputs.
//! * **Removal.** A replica that applies a configuration without itself stops serving (a
//!   leader steps down) but keeps its state for 20 election timeouts, and longer while its
//!   log holds an unapplied configuration change: a later entry may add it back, and the
//!   leader then counts its acknowledgements. An uninitialized replica (recreated by a
//!   stale message after its destruction) never votes, and no snapshot older than the last
//!   applied configuration change is handed out.
//! * **Removed while cut off.** A replica that never applied its removal is told "not a
//!   member as of index N" by the members it still writes to, and destroys itself once a
//!   majority of its voters said so (`tombstone`, whose rules keep one hostile member from
//!   stripping replicas).

mod leader_balance;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use cairn_scheduler::NodeId;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, Snapshot};
use raft::{ProgressState, RawNode, Ready, SnapshotStatus, StateRole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::ShardConfig;
use crate::log::{ShardLog, ShardState, WireHardState};
use crate::placement::{target_replicas, Liveness, Member};
use crate::rebalance::{plan, Change, PlanInput};
use crate::tombstone::{NotMember, Receiver, Tombstones};
use crate::types::{Fence, ProposalId, ShardId, Time};
use crate::wire::{
    decode_conf_change, ProposalBatch, WireBatch, WireConfState, WireEntry, WireError, WireMessage,
    WireSnapshot,
};

/// Why a proposal was refused at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node hosts no replica of the shard.
    #[error("shard {0} is not hosted here")]
    NotHosted(ShardId),
    /// This replica is not the leader (or is handing leadership over); `leader` is its guess.
    #[error("not the leader of shard {shard} (leader: {leader:?})")]
    NotLeader {
        /// The shard.
        shard: ShardId,
        /// The leader this replica knows of, if any.
        leader: Option<NodeId>,
    },
    /// The shard's proposal queue is full (back-pressure); retry later.
    #[error("shard {0} has too many queued proposals")]
    Busy(ShardId),
    /// An earlier proposal of the same [`Fence`] chain was refused or dropped, or the
    /// chain's term is not this leader's current term: appending it could commit it
    /// without the proposals it was built on.
    #[error("shard {0}: fenced (an earlier proposal of the chain failed, or the term changed)")]
    Fenced(ShardId),
    /// One proposal is larger than an entry may be.
    #[error("proposal of {len} bytes exceeds the entry limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The fate of one proposal of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed by a majority and applied here (durably, with the applied index).
    Committed,
    /// Not committed: its entry was replaced, or it was never appended.
    NotCommitted,
    /// This replica skipped its entry by installing a snapshot or was removed: it may or may
    /// not be committed.
    Unknown,
}

/// A change of a shard's ability to acknowledge on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    /// This node now serves the shard: activate its objects. `term` fences the activation.
    Serving {
        /// The shard.
        shard: ShardId,
        /// The Raft term of this leadership.
        term: u64,
    },
    /// This node stopped serving the shard (lost leadership or lease): deactivate.
    Stopped {
        /// The shard.
        shard: ShardId,
    },
}

/// A committed normal entry to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apply {
    /// Its index.
    pub index: u64,
    /// Its proposals: `(proposer node, id, payload)`, in order; each payload shares the
    /// entry's buffer (no copy per write set).
    pub proposals: Vec<(u64, ProposalId, Bytes)>,
}

/// What one round must make durable for one shard, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardRound {
    /// The shard.
    pub shard: ShardId,
    /// Drop the replica: its raft rows and its keyspaces (it was removed from the shard).
    pub destroy: bool,
    /// Install a snapshot: replace the keyspaces with its data; log truncated at its index.
    pub snapshot: Option<WireSnapshot>,
    /// Append to the log (replacing entries from `entries[0].index` on).
    pub entries: Vec<WireEntry>,
    /// The hard state to store.
    pub hard_state: Option<WireHardState>,
    /// The configuration to store (changed by an applied conf change).
    pub conf_state: Option<WireConfState>,
    /// Committed entries to apply to the keyspaces.
    pub apply: Vec<Apply>,
    /// The applied index to store with them.
    pub applied: Option<u64>,
    /// Delete log entries up to this `(index, term)`; store it as the truncated state.
    pub compact: Option<(u64, u64)>,
}

/// One round of work for every shard with something to do.
#[derive(Debug)]
pub struct Round {
    number: u64,
    /// Per-shard writes; persist them all in one transaction.
    pub shards: Vec<ShardRound>,
    /// Messages that may be sent before the round is durable (a leader's appends).
    pub messages_now: Vec<(NodeId, WireBatch)>,
}

impl Round {
    /// Whether the round has nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

/// What a durable round releases.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages per destination node.
    pub messages: Vec<(NodeId, WireBatch)>,
    /// Fates of this node's proposals.
    pub outcomes: Vec<(ShardId, ProposalId, Outcome)>,
    /// Serving changes.
    pub events: Vec<ShardEvent>,
    /// Shards whose leader needs a snapshot: export at the applied index, then
    /// [`MultiRaft::provide_snapshot`].
    pub snapshot_requests: Vec<ShardId>,
}

struct Lease {
    term: u64,
    until: Time,
}

struct Replica {
    raw: RawNode<ShardLog>,
    /// Proposals not yet in an entry: `(id, payload, fence)`.
    queue: Vec<(ProposalId, Vec<u8>, Option<Fence>)>,
    /// Fence chains with a refused or dropped proposal in term `.0`: later proposals of
    /// them are refused. Emptied when the term changes (a new term refuses every older
    /// chain by its term anyway), so it holds at most the failures of one leadership.
    broken: (u64, std::collections::HashSet<u64>),
    queued_bytes: usize,
    /// Appended, not yet resolved: index → (term, ids).
    inflight: BTreeMap<u64, (u64, Vec<ProposalId>)>,
    /// Committed entries from `advance_append`, applied in the next round.
    to_apply: Vec<Entry>,
    applied: u64,
    lease: Option<Lease>,
    /// Outstanding lease renewal: (term, local send time).
    renewing: Option<(u64, Time)>,
    last_renewal: Option<Time>,
    /// No lease renewals in this term: leadership is being handed over. `(term, tick)` of
    /// the decision.
    handing_over: Option<(u64, u64)>,
    /// The successor of a hand-over still *draining*: this replica serves nothing any more
    /// but still appends the fenced write sets of its term (handled while it served, on
    /// their way to the core); raft-rs's transfer starts once the drain ends (`on_tick`).
    draining_to: Option<NodeId>,
    /// The term in which we reported `Serving`, if we did.
    reported: Option<u64>,
    destroy: bool,
    /// The tick count at which this replica applied a configuration without itself (it
    /// was removed); cleared if a later configuration adds it back. See `on_tick`.
    removed_since: Option<u64>,
    /// Peers in Snapshot state since this tick count.
    snapshotting: BTreeMap<u64, u64>,
    /// Ticks since created while still uninitialized.
    idle_ticks: u64,
}

/// The state of one in-progress round.
struct Pending {
    number: u64,
    readies: Vec<(ShardId, Ready, u64)>,
    destroyed: Vec<ShardId>,
    outcomes: Vec<(ShardId, ProposalId, Outcome)>,
    persisted_messages: Vec<(ShardId, Vec<Message>)>,
    snapshots: Vec<(ShardId, Snapshot)>,
}

/// The node's shard layer state machine (see the module docs).
pub struct MultiRaft {
    me: NodeId,
    cfg: ShardConfig,
    replicas: BTreeMap<ShardId, Replica>,
    regions: BTreeMap<ShardId, String>,
    members: Vec<Member>,
    logger: slog::Logger,
    rng: StdRng,
    now: Time,
    next_tick: Time,
    ticks: u64,
    /// Vote requests are ignored until then (restart: we may back someone's lease).
    votes_from: Time,
    next_proposal: u64,
    rounds: u64,
    pending: Option<Pending>,
    events: Vec<ShardEvent>,
    outcomes: Vec<(ShardId, ProposalId, Outcome)>,
    /// "Not a member" replies to send and claims heard (see `tombstone`).
    tombstones: Tombstones,
    /// Spreading leadership over the nodes (`core/leader_balance.rs`).
    leader_balance: leader_balance::LeaderBalance,
}

impl std::fmt::Debug for MultiRaft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiRaft")
            .field("me", &self.me)
            .field("shards", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

/// The durable state a node created without seeds writes before its first start: every
/// shard with this node as its only voter, at index 1 (so a replica added later always
/// starts from a snapshot, never from an empty log that lacks the first configuration).
pub fn bootstrap_states(cfg: &ShardConfig, me: NodeId) -> Vec<ShardState> {
    (0..cfg.shards)
        .map(|s| ShardState {
            shard: ShardId(s),
            hard_state: WireHardState {
                term: 1,
                vote: 0,
                commit: 1,
            },
            conf_state: WireConfState {
                voters: vec![me.0],
                learners: vec![],
            },
            truncated: (1, 1),
            applied: 1,
            entries: vec![],
        })
        .collect()
}

/// Draws a new election timeout in `[e, 2e)` from the core's seeded RNG whenever raft-rs
/// has just restarted its election clock (`election_elapsed == 0`: a reset on a role or
/// term change, a leader's message, or a timeout that started a campaign). raft-rs draws
/// from the thread RNG on role changes only; our draw replaces it before any tick can read
/// it, so a run stays a function of its seed. Drawing again after every timeout matters:
/// with one fixed timeout per replica, two candidates whose clocks tick in phase and that
/// drew the same value split the vote forever (seen on the scheduler driver: term 86).
fn redraw_election_timeout(rng: &mut StdRng, raw: &mut RawNode<ShardLog>) {
    if raw.raft.election_elapsed == 0 {
        let e = raw.raft.election_timeout();
        raw.raft
            .set_randomized_election_timeout(rng.gen_range(e..2 * e));
    }
}

fn is_vote(t: raft::eraftpb::MessageType) -> bool {
    use raft::eraftpb::MessageType::*;
    matches!(t, MsgRequestVote | MsgRequestPreVote)
}

fn creates_replica(t: raft::eraftpb::MessageType) -> bool {
    use raft::eraftpb::MessageType::*;
    matches!(t, MsgAppend | MsgHeartbeat | MsgSnapshot)
}

const LEASE_CTX: u8 = b'L';

/// Ticks a leadership hand-over drains before raft-rs's transfer starts (see `rebalance`):
/// the write sets handled while the leader still served reach the core within it (they are
/// queued to the driver when their handler returns).
const DRAIN_TICKS: u64 = 1;

fn lease_ctx(term: u64, at: Time) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    v.push(LEASE_CTX);
    v.extend_from_slice(&term.to_be_bytes());
    v.extend_from_slice(&(at.as_nanos() as u64).to_be_bytes());
    v
}

fn parse_lease_ctx(c: &[u8]) -> Option<(u64, Time)> {
    if c.len() != 17 || c[0] != LEASE_CTX {
        return None;
    }
    let term = u64::from_be_bytes(c[1..9].try_into().ok()?);
    let at = u64::from_be_bytes(c[9..17].try_into().ok()?);
    Some((term, Time::from_nanos(at)))
}

impl MultiRaft {
    /// Starts the core from recovered durable state (empty for a node that joins a cluster
    /// and hosts nothing yet; [`bootstrap_states`] for the first node of a new cluster).
    /// `seed` drives election timeouts; `now` is the node's clock.
    pub fn recover(
        cfg: ShardConfig,
        me: NodeId,
        states: &[ShardState],
        seed: u64,
        now: Time,
    ) -> Result<MultiRaft, String> {
        cfg.validate()?;
        if me.0 == 0 {
            return Err("node id 0 is reserved by raft-rs".into());
        }
        let mut m = MultiRaft {
            me,
            votes_from: now + cfg.tick * cfg.election_ticks as u32,
            next_tick: now + cfg.tick,
            cfg,
            replicas: BTreeMap::new(),
            regions: BTreeMap::new(),
            members: Vec::new(),
            logger: crate::slog_bridge::logger(),
            rng: StdRng::seed_from_u64(seed),
            now,
            ticks: 0,
            next_proposal: 1,
            rounds: 0,
            pending: None,
            events: Vec::new(),
            outcomes: Vec::new(),
            tombstones: Tombstones::default(),
            leader_balance: leader_balance::LeaderBalance::default(),
        };
        for s in states {
            m.add_replica(s)?;
        }
        Ok(m)
    }

    fn add_replica(&mut self, state: &ShardState) -> Result<(), String> {
        let e = self.cfg.election_ticks;
        let config = raft::Config {
            id: self.me.0,
            election_tick: e,
            heartbeat_tick: self.cfg.heartbeat_ticks,
            min_election_tick: e,
            max_election_tick: 2 * e,
            applied: state.applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 16 << 20,
            ..Default::default()
        };
        let log = ShardLog::from_state(state);
        // A replica removed before a restart: its removal timer starts again now.
        let member = state.conf_state.voters.contains(&self.me.0)
            || state.conf_state.learners.contains(&self.me.0);
        let removed_since = (log.initialized() && !member).then_some(self.ticks);
        let mut raw = RawNode::new(&config, log, &self.logger).map_err(|e| e.to_string())?;
        redraw_election_timeout(&mut self.rng, &mut raw);
        self.replicas.insert(
            state.shard,
            Replica {
                raw,
                queue: Vec::new(),
                broken: (0, std::collections::HashSet::new()),
                queued_bytes: 0,
                inflight: BTreeMap::new(),
                to_apply: Vec::new(),
                applied: state.applied,
                lease: None,
                renewing: None,
                last_renewal: None,
                handing_over: None,
                draining_to: None,
                reported: None,
                destroy: false,
                removed_since,
                snapshotting: BTreeMap::new(),
                idle_ticks: 0,
            },
        );
        Ok(())
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// The settings.
    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    /// The shards with a replica here.
    pub fn hosted(&self) -> Vec<ShardId> {
        self.replicas.keys().copied().collect()
    }

    /// Sets the cluster's members as the failure detector sees them (drives rebalancing).
    pub fn set_members(&mut self, members: Vec<Member>) {
        self.members = members;
    }

    /// Confines `shard`'s replicas to `region` (its objects were placed with that hint).
    pub fn set_region(&mut self, shard: ShardId, region: Option<String>) {
        match region {
            Some(r) => self.regions.insert(shard, r),
            None => self.regions.remove(&shard),
        };
    }

    /// When the core next needs [`tick`](Self::tick).
    pub fn next_deadline(&self) -> Time {
        self.next_tick
    }

    fn assert_idle(&self) {
        assert!(
            self.pending.is_none(),
            "MultiRaft used between ready() and persisted()"
        );
    }

    /// Advances the clock to `now` before stepping messages: a full [`tick`](Self::tick)
    /// only if a Raft tick is due, else just the clock (lease upkeep and serving events
    /// wait for the next `tick`, which the driver runs before every round).
    pub fn advance(&mut self, now: Time) {
        self.assert_idle();
        if now.max(self.now) >= self.next_tick {
            self.tick(now);
        } else {
            self.now = self.now.max(now);
        }
    }

    /// Advances the clock: Raft ticks, lease renewals and expiries, rebalancing.
    pub fn tick(&mut self, now: Time) {
        self.assert_idle();
        self.now = self.now.max(now);
        let mut fired = 0;
        while self.now >= self.next_tick {
            self.next_tick += self.cfg.tick;
            fired += 1;
            // After a long pause, don't replay hundreds of ticks: a few trigger every timeout.
            if fired > 2 * self.cfg.election_ticks {
                self.next_tick = self.now + self.cfg.tick;
                break;
            }
            self.ticks += 1;
            for r in self.replicas.values_mut() {
                r.raw.tick();
                redraw_election_timeout(&mut self.rng, &mut r.raw);
                if !r.raw.store().initialized() {
                    r.idle_ticks += 1;
                }
            }
            self.on_tick();
        }
        self.maintain_leases();
        self.refresh_events();
    }

    fn on_tick(&mut self) {
        let ticks = self.ticks;
        let e = self.cfg.election_ticks as u64;
        let me = self.me.0;
        let mut to_rebalance = Vec::new();
        let mut to_balance = Vec::new();
        self.leader_balance_tick();
        for (&sid, r) in self.replicas.iter_mut() {
            // An uninitialized replica nobody completes (a stale message created it) goes.
            if !r.raw.store().initialized() && r.idle_ticks > 20 * e {
                r.destroy = true;
            }
            if r.removed_since.is_some_and(|since| ticks - since > 20 * e)
                && !Self::conf_change_pending(r)
            {
                r.destroy = true;
            }
            if r.raw.raft.state != StateRole::Leader {
                r.snapshotting.clear();
                r.draining_to = None;
                continue;
            }
            // A leader that applied its own removal (a change proposed in an earlier term
            // committed under it) keeps leading a group it is not in and serves nothing, and
            // its heartbeats keep the others from electing: step down.
            if r.removed_since.is_some() {
                let t = r.raw.raft.term;
                r.raw.raft.become_follower(t, raft::INVALID_ID);
                redraw_election_timeout(&mut self.rng, &mut r.raw);
                continue;
            }
            // A snapshot message lost on the way leaves its peer in Snapshot state forever;
            // report it failed after a while so raft-rs sends another.
            let peers: Vec<(u64, ProgressState)> = r
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(&id, _)| id != me)
                .map(|(&id, p)| (id, p.state))
                .collect();
            for (id, state) in peers {
                if state == ProgressState::Snapshot {
                    let since = *r.snapshotting.entry(id).or_insert(ticks);
                    if ticks - since > 2 * e {
                        r.raw.report_snapshot(id, SnapshotStatus::Failure);
                        r.snapshotting.remove(&id);
                    }
                } else {
                    r.snapshotting.remove(&id);
                }
            }
            // A draining hand-over (see `rebalance`) starts raft-rs's transfer after a full
            // tick with nothing left queued: every write set handled while this replica
            // served has reached the log by then, so the successor commits it instead of
            // this leader refusing it. A term change ends the drain.
            if let Some(to) = r.draining_to {
                match r.handing_over {
                    Some((term, started)) if term == r.raw.raft.term => {
                        if ticks > started + DRAIN_TICKS && r.queue.is_empty() {
                            r.draining_to = None;
                            r.raw.transfer_leader(to.0);
                        }
                    }
                    _ => r.draining_to = None,
                }
            }
            // Leadership hand-over that did not complete: step down, so that an election
            // (with a new term) replaces this lease-less leader.
            if let Some((term, started)) = r.handing_over {
                if term == r.raw.raft.term && ticks - started > 2 * e {
                    let t = r.raw.raft.term;
                    r.raw.raft.become_follower(t, raft::INVALID_ID);
                    r.draining_to = None;
                    redraw_election_timeout(&mut self.rng, &mut r.raw);
                }
            }
            if ticks % self.cfg.rebalance_ticks == u64::from(sid.0) % self.cfg.rebalance_ticks {
                to_rebalance.push(sid);
            }
            // Leader balancing reads `recent_active`, which every check-quorum round (each
            // election timeout of the leader's own clock) resets: look halfway between two
            // rounds, when it says whether the peer answered in the last half timeout. On the
            // rebalancing turn above, whose period is also an election timeout, a shard whose
            // phase matched the reset never saw its peers active and never handed over.
            if r.raw.raft.election_elapsed == self.cfg.election_ticks / 2 {
                to_balance.push(sid);
            }
        }
        for sid in to_rebalance {
            self.rebalance(sid);
        }
        for sid in to_balance {
            self.balance_leader(sid);
        }
    }

    /// Whether the log holds a configuration change not applied yet (one may add this
    /// removed replica back; the leader counts its acknowledgements from then on).
    fn conf_change_pending(r: &Replica) -> bool {
        let log = &r.raw.raft.raft_log;
        log.entries(r.applied + 1, None, raft::GetEntriesContext::empty(false))
            .map_or(true, |es| {
                es.iter()
                    .any(|e| e.get_entry_type() != EntryType::EntryNormal)
            })
    }

    fn maintain_leases(&mut self) {
        let now = self.now;
        let hb = self.cfg.tick * self.cfg.heartbeat_ticks as u32;
        let lost_after = self.cfg.tick * self.cfg.election_ticks as u32;
        for r in self.replicas.values_mut() {
            let raft = &r.raw.raft;
            let term = raft.term;
            if raft.state != StateRole::Leader {
                r.lease = None;
                r.renewing = None;
                continue;
            }
            if r.lease.as_ref().is_some_and(|l| l.term != term) {
                r.lease = None;
            }
            if r.handing_over.is_some_and(|(t, _)| t == term) || !raft.commit_to_current_term() {
                continue;
            }
            let outstanding = r
                .renewing
                .is_some_and(|(t, at)| t == term && now.saturating_sub(at) < lost_after);
            let due = r.last_renewal.is_none_or(|at| now.saturating_sub(at) >= hb);
            if !outstanding && due {
                r.renewing = Some((term, now));
                r.last_renewal = Some(now);
                r.raw.read_index(lease_ctx(term, now));
            }
        }
    }

    /// Whether this node may acknowledge for `shard` at `now` (see the module docs).
    pub fn serving(&self, shard: ShardId, now: Time) -> bool {
        self.replicas
            .get(&shard)
            .is_some_and(|r| Self::replica_serving(r, now))
    }

    fn replica_serving(r: &Replica, now: Time) -> bool {
        let raft = &r.raw.raft;
        raft.state == StateRole::Leader
            && !r.destroy
            && r.removed_since.is_none()
            && r.handing_over.is_none_or(|(t, _)| t != raft.term)
            && r.lease
                .as_ref()
                .is_some_and(|l| l.term == raft.term && l.until > now)
            && r.raw.store().term_of(r.applied) == Some(raft.term)
    }

    /// The leader term in which this node serves `shard` at `now` (the term a [`Fence`]
    /// chain started now must name), if it serves it.
    pub fn serving_term(&self, shard: ShardId, now: Time) -> Option<u64> {
        let r = self.replicas.get(&shard)?;
        Self::replica_serving(r, now).then_some(r.raw.raft.term)
    }

    /// The end of this node's lease on `shard` (local clock), while it is serving.
    pub fn lease_until(&self, shard: ShardId, now: Time) -> Option<Time> {
        let r = self.replicas.get(&shard)?;
        Self::replica_serving(r, now).then(|| r.lease.as_ref().map(|l| l.until))?
    }

    /// What the lease board shows for every hosted shard, in shard order: the shard, the
    /// end of this node's lease and the leader term while it serves the shard (as
    /// [`lease_until`](Self::lease_until) and [`serving_term`](Self::serving_term)), and
    /// the leader it knows (as [`leader`](Self::leader)). One pass over the replicas, for
    /// the driver's board, which is published several times per round.
    pub fn board_rows(
        &self,
        now: Time,
    ) -> impl Iterator<Item = (ShardId, Option<(Time, u64)>, Option<NodeId>)> + '_ {
        self.replicas.iter().map(move |(&sid, r)| {
            let serving = Self::replica_serving(r, now)
                .then(|| r.lease.as_ref().map(|l| (l.until, r.raw.raft.term)))
                .flatten();
            let id = r.raw.raft.leader_id;
            (sid, serving, (id != raft::INVALID_ID).then_some(NodeId(id)))
        })
    }

    /// The leader this node knows for `shard`.
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        let id = self.replicas.get(&shard)?.raw.raft.leader_id;
        (id != raft::INVALID_ID).then_some(NodeId(id))
    }

    /// The applied index of `shard` here.
    pub fn applied(&self, shard: ShardId) -> Option<u64> {
        self.replicas.get(&shard).map(|r| r.applied)
    }

    /// `shard`'s voters and learners here.
    pub fn conf_state(&self, shard: ShardId) -> Option<WireConfState> {
        self.replicas
            .get(&shard)
            .map(|r| WireConfState::from_conf_state(&r.raw.raft.prs().conf().to_conf_state()))
    }

    fn refresh_events(&mut self) {
        let now = self.now;
        for (&sid, r) in self.replicas.iter_mut() {
            let serving = Self::replica_serving(r, now).then_some(r.raw.raft.term);
            if serving != r.reported {
                if r.reported.is_some() {
                    self.events.push(ShardEvent::Stopped { shard: sid });
                }
                if let Some(term) = serving {
                    self.events.push(ShardEvent::Serving { shard: sid, term });
                }
                r.reported = serving;
            }
        }
    }

    /// Queues `data` (one write set) for `shard`; it joins the shard's next entry. The
    /// outcome comes in [`Output::outcomes`].
    pub fn propose(&mut self, shard: ShardId, data: Vec<u8>) -> Result<ProposalId, ProposeError> {
        self.propose_fenced(shard, data, None)
    }

    /// [`propose`](Self::propose) as a member of a [`Fence`] chain: refused
    /// ([`ProposeError::Fenced`]) if the chain's term is not this leader's term or an
    /// earlier proposal of the chain was refused or dropped; any refusal breaks the chain.
    pub fn propose_fenced(
        &mut self,
        shard: ShardId,
        data: Vec<u8>,
        fence: Option<Fence>,
    ) -> Result<ProposalId, ProposeError> {
        self.assert_idle();
        let result = self.admit(shard, data, fence);
        if let (Err(_), Some(f), Some(r)) = (&result, fence, self.replicas.get_mut(&shard)) {
            Self::break_chain(r, f);
        }
        result
    }

    fn admit(
        &mut self,
        shard: ShardId,
        data: Vec<u8>,
        fence: Option<Fence>,
    ) -> Result<ProposalId, ProposeError> {
        let max = self.cfg.max_entry_bytes;
        if data.len() > max {
            return Err(ProposeError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let r = self
            .replicas
            .get_mut(&shard)
            .ok_or(ProposeError::NotHosted(shard))?;
        let raft = &r.raw.raft;
        // While a hand-over drains, only write sets of this term's chains get in: they were
        // handled while this replica served (nothing is handled after, see `serving`).
        let drained = r.draining_to.is_none() || fence.is_none_or(|f| f.term != raft.term);
        if raft.state != StateRole::Leader
            || r.destroy
            || r.removed_since.is_some()
            || (r.handing_over.is_some_and(|(t, _)| t == raft.term) && drained)
        {
            let leader = (raft.leader_id != raft::INVALID_ID && raft.leader_id != self.me.0)
                .then_some(NodeId(raft.leader_id));
            return Err(ProposeError::NotLeader { shard, leader });
        }
        if fence.is_some_and(|f| !Self::chain_open(r, f)) {
            return Err(ProposeError::Fenced(shard));
        }
        if r.queued_bytes + data.len() > self.cfg.max_pending_bytes {
            return Err(ProposeError::Busy(shard));
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        r.queued_bytes += data.len();
        r.queue.push((id, data, fence));
        Ok(id)
    }

    /// Whether a proposal of chain `f` may still be appended by `r` now.
    fn chain_open(r: &Replica, f: Fence) -> bool {
        f.term == r.raw.raft.term && !(r.broken.0 == f.term && r.broken.1.contains(&f.chain))
    }

    /// Refuses every later proposal of `f`'s chain (in its term).
    fn break_chain(r: &mut Replica, f: Fence) {
        if r.broken.0 != f.term {
            if f.term < r.broken.0 {
                return; // An older term: refused by its term already.
            }
            r.broken = (f.term, std::collections::HashSet::new());
        }
        r.broken.1.insert(f.chain);
    }

    /// Steps a batch of Raft messages received from `from`. Invalid messages are refused
    /// (logged, counted in the returned errors) and change nothing.
    pub fn step(&mut self, from: NodeId, batch: WireBatch) -> Vec<WireError> {
        self.assert_idle();
        let mut errors = Vec::new();
        for w in batch.messages {
            let m = match w.to_message(self.me, from, self.cfg.shards) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "refused a raft message");
                    errors.push(e);
                    continue;
                }
            };
            let t = m.get_msg_type();
            if is_vote(t) && self.now < self.votes_from {
                continue; // restart quarantine (module docs)
            }
            if !self.replicas.contains_key(&w.shard) {
                if !creates_replica(t) {
                    continue;
                }
                let empty = ShardState {
                    shard: w.shard,
                    ..ShardState::default()
                };
                if let Err(e) = self.add_replica(&empty) {
                    tracing::warn!(shard = %w.shard, error = %e, "cannot create a replica");
                    continue;
                }
            }
            let r = self.replicas.get_mut(&w.shard).expect("just ensured");
            if r.destroy {
                continue;
            }
            // A member needs no reply (checked without building a `ConfState` per message;
            // `contains` also counts outgoing voters of a joint configuration, which ours
            // never are: configuration changes are single-step).
            let conf = r.raw.raft.prs().conf();
            let member = conf.voters().contains(from.0) || conf.learners().contains(&from.0);
            if !member && r.raw.store().initialized() {
                let conf = conf.to_conf_state();
                self.tombstones.reply_if_stranger(
                    self.me,
                    w.shard,
                    from,
                    (conf.voters.as_slice(), conf.learners.as_slice()),
                    r.applied,
                );
            }
            // An uninitialized replica has no log and no memory of whom it voted for or whose
            // lease it backed: a replica removed (and destroyed) and then recreated by a stale
            // leader's message, or one that never was a voter. Its vote would let a candidate
            // missing committed entries win (the entries' quorum counted the replica before it
            // forgot them). A legitimate voter is always initialized: voters are bootstrapped
            // or promoted from learners that installed a snapshot.
            if is_vote(t) && !r.raw.store().initialized() {
                continue;
            }
            let mut m = m;
            // raft-rs panics on a heartbeat committing past our log. An honest leader sends
            // one only to a replica that lost its state: ours was removed and recreated by a
            // heartbeat sent before the leader applied the removal. Clamp it (an empty
            // replica then answers and the leader's stale progress ignores it until the
            // removal applies); a hostile peer cannot crash the node with it either.
            let last = r.raw.raft.raft_log.last_index();
            if t == raft::eraftpb::MessageType::MsgHeartbeat && m.commit > last {
                m.commit = last;
            }
            if let Err(e) = r.raw.step(m) {
                tracing::debug!(shard = %w.shard, error = %e, "raft refused a message");
            }
            redraw_election_timeout(&mut self.rng, &mut r.raw);
        }
        for claim in batch.not_members {
            if let Err(e) = self.on_not_member(from, &claim) {
                tracing::warn!(peer = %from, error = %e, "refused a not-a-member claim");
                errors.push(e);
            }
        }
        errors
    }

    /// A claim that this node's replica of `claim.shard` is no longer a member (see
    /// `tombstone`): checked to come from its sender, counted, and acted on once a majority
    /// of the replica's voters confirmed it.
    fn on_not_member(&mut self, from: NodeId, claim: &NotMember) -> Result<(), WireError> {
        if claim.from != from.0 || claim.to != self.me.0 {
            return Err(WireError::Misaddressed {
                from: claim.from,
                to: claim.to,
                me: self.me.0,
                peer: from.0,
            });
        }
        if claim.shard.0 >= self.cfg.shards {
            return Err(WireError::BadShard(claim.shard));
        }
        let Some(r) = self.replicas.get_mut(&claim.shard) else {
            return Ok(());
        };
        if r.destroy {
            return Ok(());
        }
        let conf = r.raw.raft.prs().conf().to_conf_state();
        let receiver = Receiver {
            me: self.me.0,
            voters: &conf.voters,
            applied: r.applied,
            unapplied_conf: Self::last_unapplied_conf(r),
            leading: r.raw.raft.state == StateRole::Leader,
            initialized: r.raw.store().initialized(),
        };
        if self.tombstones.on_claim(claim, receiver) {
            tracing::info!(shard = %claim.shard, applied = r.applied, voters = ?conf.voters, "a majority of this replica's voters say it was removed; destroying it");
            r.destroy = true;
            self.tombstones.forget(claim.shard);
        }
        Ok(())
    }

    /// The index of the last configuration change in `r`'s log that is not applied yet.
    fn last_unapplied_conf(r: &Replica) -> Option<u64> {
        let log = &r.raw.raft.raft_log;
        match log.entries(r.applied + 1, None, raft::GetEntriesContext::empty(false)) {
            Ok(es) => es
                .iter()
                .rev()
                .find(|e| e.get_entry_type() != EntryType::EntryNormal)
                .map(|e| e.index),
            // Entries we cannot read: assume the worst (a change at the end of the log).
            Err(_) => Some(log.last_index()),
        }
    }

    /// Hands raft-rs a snapshot of `shard` exported at `applied` (the durable applied index
    /// read in the same read transaction as `data`). Ignored if the shard moved on since.
    pub fn provide_snapshot(&mut self, shard: ShardId, applied: u64, data: Vec<u8>) -> bool {
        self.assert_idle();
        let Some(r) = self.replicas.get_mut(&shard) else {
            return false;
        };
        // Committed entries not applied yet (`to_apply`) don't matter: the data is the state
        // at `applied`, and the metadata says so.
        if applied != r.applied {
            return false;
        }
        let Some(term) = r.raw.store().term_of(applied) else {
            return false;
        };
        let conf = r.raw.raft.prs().conf().to_conf_state();
        let mut s = Snapshot::default();
        s.mut_metadata().index = applied;
        s.mut_metadata().term = term;
        s.mut_metadata().set_conf_state(conf);
        s.data = Bytes::from(data);
        r.raw.mut_store().prepare_snapshot(s);
        true
    }

    /// Whether a [`ready`](Self::ready) round would have work.
    pub fn has_ready(&self) -> bool {
        self.replicas.values().any(|r| {
            r.destroy || !r.queue.is_empty() || !r.to_apply.is_empty() || r.raw.has_ready()
        }) || !self.events.is_empty()
            || !self.outcomes.is_empty()
            || self.tombstones.has_replies()
    }

    fn rebalance(&mut self, sid: ShardId) {
        let now = self.now;
        let Some(r) = self.replicas.get_mut(&sid) else {
            return;
        };
        if self.members.is_empty()
            || !Self::replica_serving(r, now)
            || r.raw.raft.has_pending_conf()
        {
            tracing::debug!(shard = %sid, members = self.members.len(), serving = Self::replica_serving(r, now), pending = r.raw.raft.has_pending_conf(), "no rebalancing now");
            return;
        }
        // A region's own shards (`ShardConfig::regions`) stay inside it.
        let region = self
            .regions
            .get(&sid)
            .map(String::as_str)
            .or_else(|| crate::placement::shard_region(sid, &self.cfg));
        let target = target_replicas(
            sid,
            &self.members,
            self.cfg.replication,
            region,
            now,
            self.cfg.down_grace,
        );
        let conf = r.raw.raft.prs().conf().to_conf_state();
        let committed = r.raw.raft.raft_log.committed;
        let prs = r.raw.raft.prs();
        // `matched` only moves on the peer's acknowledgement of durable entries, so it is
        // the measure; the progress state is not. A learner that installed its snapshot and
        // acknowledged everything stays in `Probe` while the shard is idle (raft-rs leaves
        // `Probe` only on an append response, and sends no append when there is nothing
        // new): requiring `Replicate` stalled promotion until the next write.
        let caught_up = |id: u64| {
            prs.get(id).is_some_and(|p| {
                p.state != ProgressState::Snapshot && p.matched + 16 >= committed && p.matched > 0
            })
        };
        let members = &self.members;
        let up = |id: u64| {
            members
                .iter()
                .any(|m| m.id.0 == id && m.liveness == Liveness::Up)
        };
        let change = plan(
            &PlanInput {
                me: self.me,
                voters: &conf.voters,
                learners: &conf.learners,
                target: &target,
                replication: self.cfg.replication,
            },
            caught_up,
            up,
        );
        let (ty, node) = match change {
            None => return,
            Some(Change::TransferLeader(to)) => {
                // Two steps: stop serving now (no lease, no new handler runs here), then,
                // once the write sets already handled here are in the log, transfer
                // (`on_tick`). Transferring at once refused those sets (raft-rs drops
                // proposals during a transfer): their callers got `NoReply` for a write that
                // never happened, at every planned move.
                tracing::info!(shard = %sid, to = %to, "handing shard leadership over");
                r.handing_over = Some((r.raw.raft.term, self.ticks));
                r.draining_to = Some(to);
                r.lease = None;
                return;
            }
            Some(Change::AddLearner(n)) => (ConfChangeType::AddLearnerNode, n),
            Some(Change::Promote(n)) => (ConfChangeType::AddNode, n),
            Some(Change::Remove(n)) => (ConfChangeType::RemoveNode, n),
        };
        tracing::info!(shard = %sid, change = ?ty, node = %node, "shard configuration change");
        let mut cc = ConfChange::default();
        cc.set_change_type(ty);
        cc.node_id = node.0;
        if let Err(e) = r.raw.propose_conf_change(vec![], cc) {
            tracing::debug!(shard = %sid, error = %e, "conf change not proposed");
        }
    }

    /// Collects every shard's pending work into one round (see the module docs).
    pub fn ready(&mut self, now: Time) -> Round {
        self.assert_idle();
        self.now = self.now.max(now);
        self.rounds += 1;
        let mut pending = Pending {
            number: self.rounds,
            readies: Vec::new(),
            destroyed: Vec::new(),
            outcomes: std::mem::take(&mut self.outcomes),
            persisted_messages: Vec::new(),
            snapshots: Vec::new(),
        };
        let mut shards = Vec::new();
        let mut now_msgs: Vec<(ShardId, Vec<Message>)> = Vec::new();
        let log_keep = self.cfg.log_keep;
        let max_entry = self.cfg.max_entry_bytes;
        for (&sid, r) in self.replicas.iter_mut() {
            if r.destroy {
                shards.push(ShardRound {
                    shard: sid,
                    destroy: true,
                    ..ShardRound::default()
                });
                pending.destroyed.push(sid);
                for (_, (_, ids)) in std::mem::take(&mut r.inflight) {
                    pending
                        .outcomes
                        .extend(ids.into_iter().map(|id| (sid, id, Outcome::Unknown)));
                }
                pending.outcomes.extend(
                    r.queue
                        .drain(..)
                        .map(|(id, _, _)| (sid, id, Outcome::NotCommitted)),
                );
                continue;
            }
            Self::flush_queue(sid, r, self.me, max_entry, &mut pending.outcomes);
            if !r.raw.has_ready() && r.to_apply.is_empty() {
                continue;
            }
            let mut sr = ShardRound {
                shard: sid,
                ..ShardRound::default()
            };
            let mut rd = r.raw.ready();
            // Leases: a quorum answered the heartbeat round sent at `at`.
            for rs in rd.take_read_states() {
                if let Some((term, at)) = parse_lease_ctx(&rs.request_ctx) {
                    let raft = &r.raw.raft;
                    if term == raft.term
                        && raft.state == StateRole::Leader
                        && r.handing_over.is_none_or(|(t, _)| t != term)
                    {
                        let until = at + self.cfg.lease();
                        if r.lease
                            .as_ref()
                            .is_none_or(|l| l.term != term || l.until < until)
                        {
                            r.lease = Some(Lease { term, until });
                        }
                    }
                    if r.renewing.is_some_and(|(t, a)| t == term && a == at) {
                        r.renewing = None;
                    }
                }
            }
            if r.raw.raft.state != StateRole::Leader {
                r.lease = None;
            }
            let msgs = rd.take_messages();
            if !msgs.is_empty() {
                now_msgs.push((sid, msgs));
            }
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                let idx = snap.get_metadata().index;
                sr.snapshot = Some(WireSnapshot::from_snapshot(&snap));
                // Proposals at or below the snapshot: their fate is hidden from us.
                let hidden: Vec<u64> = r.inflight.range(..=idx).map(|(&i, _)| i).collect();
                for i in hidden {
                    let (_, ids) = r.inflight.remove(&i).expect("listed");
                    pending
                        .outcomes
                        .extend(ids.into_iter().map(|id| (sid, id, Outcome::Unknown)));
                }
                r.applied = idx;
                r.to_apply.retain(|e| e.index > idx);
                pending.snapshots.push((sid, snap));
            }
            sr.entries = rd.entries().iter().map(WireEntry::from_entry).collect();
            sr.hard_state = Some(WireHardState::from_hard_state(&r.raw.raft.hard_state()));
            let mut committed = std::mem::take(&mut r.to_apply);
            committed.extend(rd.take_committed_entries());
            let mut last_applied = None;
            for e in committed {
                if e.index <= r.applied {
                    continue;
                }
                last_applied = Some(e.index);
                Self::resolve(sid, r, e.index, e.term, &mut pending.outcomes);
                match e.get_entry_type() {
                    EntryType::EntryNormal if e.data.is_empty() => {}
                    EntryType::EntryNormal => match ProposalBatch::decode_shared(&e.data) {
                        Ok(proposals) => sr.apply.push(Apply {
                            index: e.index,
                            proposals,
                        }),
                        Err(err) => {
                            tracing::error!(shard = %sid, index = e.index, error = %err, "undecodable entry skipped")
                        }
                    },
                    EntryType::EntryConfChange => {
                        r.raw.mut_store().set_min_snapshot(e.index);
                        let cc = decode_conf_change(&e.data);
                        match r.raw.apply_conf_change(&cc) {
                            Ok(cs) => {
                                // Removed: keep the state for a while rather than destroy it
                                // now. Entries after this one may add us back (the leader
                                // re-added us and counts our acknowledgements: a replica
                                // that destroyed itself meanwhile would be promoted empty).
                                let member = cs.voters.contains(&self.me.0)
                                    || cs.learners.contains(&self.me.0);
                                if !member {
                                    r.removed_since.get_or_insert(self.ticks);
                                } else {
                                    r.removed_since = None;
                                }
                                sr.conf_state = Some(WireConfState::from_conf_state(&cs));
                            }
                            Err(err) => {
                                tracing::error!(shard = %sid, error = %err, "conf change not applied")
                            }
                        }
                    }
                    EntryType::EntryConfChangeV2 => {
                        tracing::error!(shard = %sid, "unexpected ConfChangeV2 entry skipped")
                    }
                }
            }
            if let Some(i) = last_applied {
                r.applied = i;
                sr.applied = Some(i);
            }
            if sr.snapshot.is_some() && sr.applied.is_none() {
                sr.applied = Some(r.applied);
            }
            // Compaction: only what earlier rounds made durable as applied.
            let (trunc, _) = r.raw.store().truncated();
            let durable_applied = r.raw.raft.raft_log.applied;
            if sr.snapshot.is_none() && durable_applied > trunc + 2 * log_keep {
                let to = durable_applied - log_keep;
                if let Some(term) = r.raw.store().term_of(to) {
                    sr.compact = Some((to, term));
                }
            }
            let pm = rd.take_persisted_messages();
            if !pm.is_empty() {
                pending.persisted_messages.push((sid, pm));
            }
            pending.readies.push((sid, rd, r.applied));
            shards.push(sr);
        }
        let mut messages_now = group(now_msgs);
        crate::tombstone::add_replies(&mut messages_now, self.tombstones.take_replies());
        self.pending = Some(Pending { ..pending });
        Round {
            number: self.rounds,
            shards,
            messages_now,
        }
    }

    fn flush_queue(
        sid: ShardId,
        r: &mut Replica,
        me: NodeId,
        max_entry: usize,
        outcomes: &mut Vec<(ShardId, ProposalId, Outcome)>,
    ) {
        if r.queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut r.queue);
        r.queued_bytes = 0;
        let mut batch = ProposalBatch::default();
        let mut fences = Vec::new();
        let mut bytes = 0;
        let mut chunks = Vec::new();
        for (id, data, fence) in queue {
            // The term may have changed since it was queued (a new leadership of this
            // replica): a chain's proposals are appended in its own term or not at all. (A
            // chain broken after this one was queued refused only what came after it.)
            if let Some(f) = fence.filter(|&f| f.term != r.raw.raft.term) {
                Self::break_chain(r, f);
                outcomes.push((sid, id, Outcome::NotCommitted));
                continue;
            }
            if bytes + data.len() > max_entry && !batch.proposals.is_empty() {
                chunks.push((std::mem::take(&mut batch), std::mem::take(&mut fences)));
                bytes = 0;
            }
            bytes += data.len();
            batch.proposals.push((me.0, id, data));
            fences.extend(fence);
        }
        chunks.push((batch, fences));
        // Once one entry is refused, none after it is appended: a later entry must not
        // commit without an earlier one of the same chain.
        let mut refused = false;
        for (b, fences) in chunks {
            if b.proposals.is_empty() {
                continue;
            }
            let ids: Vec<ProposalId> = b.proposals.iter().map(|p| p.1).collect();
            let before = r.raw.raft.raft_log.last_index();
            let ok = !refused && r.raw.propose(vec![], b.encode()).is_ok();
            let index = r.raw.raft.raft_log.last_index();
            if ok && index > before {
                r.inflight.insert(index, (r.raw.raft.term, ids));
            } else {
                refused = true;
                for f in fences {
                    Self::break_chain(r, f);
                }
                outcomes.extend(ids.into_iter().map(|id| (sid, id, Outcome::NotCommitted)));
            }
        }
    }

    /// Resolves this node's proposals at `index` now that the entry there (with `term`) is
    /// applied; older unresolved ones can no longer commit.
    fn resolve(
        sid: ShardId,
        r: &mut Replica,
        index: u64,
        term: u64,
        outcomes: &mut Vec<(ShardId, ProposalId, Outcome)>,
    ) {
        let done: Vec<u64> = r.inflight.range(..=index).map(|(&i, _)| i).collect();
        for i in done {
            let (t, ids) = r.inflight.remove(&i).expect("listed");
            let o = if i == index && t == term {
                Outcome::Committed
            } else {
                Outcome::NotCommitted
            };
            outcomes.extend(ids.into_iter().map(|id| (sid, id, o)));
        }
    }

    /// The round is durable: update raft-rs's view, release messages and outcomes.
    pub fn persisted(&mut self, round: Round, now: Time) -> Output {
        let pending = self.pending.take().expect("persisted() without ready()");
        assert_eq!(pending.number, round.number, "persisted() of another round");
        self.now = self.now.max(now);
        let mut out = Output {
            outcomes: pending.outcomes,
            ..Output::default()
        };
        for sid in pending.destroyed {
            self.tombstones.forget(sid);
            if let Some(r) = self.replicas.remove(&sid) {
                if r.reported.is_some() {
                    self.events.push(ShardEvent::Stopped { shard: sid });
                }
            }
        }
        let mut snapshots: BTreeMap<ShardId, Snapshot> = pending.snapshots.into_iter().collect();
        let by_shard: BTreeMap<ShardId, &ShardRound> =
            round.shards.iter().map(|s| (s.shard, s)).collect();
        let mut msgs: Vec<(ShardId, Vec<Message>)> = pending.persisted_messages;
        for (sid, rd, applied) in pending.readies {
            let r = self.replicas.get_mut(&sid).expect("a replica with a ready");
            let sr = by_shard[&sid];
            if let Some(snap) = snapshots.remove(&sid) {
                r.raw.mut_store().apply_snapshot(snap.get_metadata());
            }
            let entries: Vec<Entry> = rd.entries().to_vec();
            r.raw.mut_store().append(&entries);
            let hs = r.raw.raft.hard_state();
            r.raw.mut_store().set_hard_state(hs);
            if let Some(cs) = &sr.conf_state {
                r.raw.mut_store().set_conf_state(cs.to_conf_state());
            }
            if let Some((i, t)) = sr.compact {
                r.raw.mut_store().compact(i, t);
            }
            let mut light = r.raw.advance_append(rd);
            r.raw.advance_apply_to(applied);
            let lm = light.take_messages();
            if !lm.is_empty() {
                msgs.push((sid, lm));
            }
            r.to_apply.extend(light.take_committed_entries());
            if r.raw.store().take_snapshot_wanted() {
                out.snapshot_requests.push(sid);
            }
        }
        // Wishes raised outside a ready (a leader stepping a response).
        for (&sid, r) in &self.replicas {
            if r.raw.store().take_snapshot_wanted() && !out.snapshot_requests.contains(&sid) {
                out.snapshot_requests.push(sid);
            }
        }
        out.messages = group(msgs);
        self.maintain_leases();
        self.refresh_events();
        out.events = std::mem::take(&mut self.events);
        out.outcomes.append(&mut self.outcomes);
        out
    }

    /// Diagnostics of `shard`: raft's log indexes and the leader's view of each peer.
    pub fn debug(&self, shard: ShardId) -> String {
        self.replicas.get(&shard).map_or_else(String::new, |r| {
            let l = &r.raw.raft.raft_log;
            let prs: Vec<_> = r
                .raw
                .raft
                .prs()
                .iter()
                .map(|(&id, p)| (id, p.matched, p.state))
                .collect();
            format!(
                "{:?} term {} last {} persisted {} committed {} applied {} truncated {:?} leader {} lease {:?} handing {:?} renewing {:?} prs {prs:?}",
                r.raw.raft.state,
                r.raw.raft.term,
                l.last_index(),
                l.persisted,
                l.committed,
                l.applied,
                r.raw.store().truncated(),
                r.raw.raft.leader_id,
                r.lease.as_ref().map(|l| (l.term, l.until)),
                r.handing_over,
                r.renewing,
            )
        })
    }

    /// Every hosted shard as this node's replica sees it (for [`crate::stats`]).
    pub fn views(&self) -> Vec<crate::stats::ShardView> {
        use crate::stats::{ShardRole, ShardView};
        self.replicas
            .iter()
            .map(|(&shard, r)| {
                let raft = &r.raw.raft;
                let conf = raft.prs().conf().to_conf_state();
                let role = match raft.state {
                    StateRole::Leader => ShardRole::Leader,
                    _ if conf.learners.contains(&self.me.0) => ShardRole::Learner,
                    StateRole::Follower => ShardRole::Follower,
                    StateRole::Candidate | StateRole::PreCandidate => ShardRole::Candidate,
                };
                let lag = if role == ShardRole::Leader {
                    let last = raft.raft_log.last_index();
                    raft.prs()
                        .iter()
                        .filter(|(&id, _)| id != self.me.0)
                        .map(|(_, p)| last.saturating_sub(p.matched))
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                };
                ShardView {
                    shard,
                    role,
                    term: raft.term,
                    leader: (raft.leader_id != raft::INVALID_ID).then_some(NodeId(raft.leader_id)),
                    voters: conf.voters.iter().map(|&n| NodeId(n)).collect(),
                    learners: conf.learners.iter().map(|&n| NodeId(n)).collect(),
                    lag,
                }
            })
            .collect()
    }

    /// Raft's state of `shard` for diagnostics: (role, term, commit, applied).
    pub fn status(&self, shard: ShardId) -> Option<(StateRole, u64, u64, u64)> {
        let r = self.replicas.get(&shard)?;
        Some((
            r.raw.raft.state,
            r.raw.raft.term,
            r.raw.raft.raft_log.committed,
            r.applied,
        ))
    }
}

fn group(msgs: Vec<(ShardId, Vec<Message>)>) -> Vec<(NodeId, WireBatch)> {
    let mut by_node: BTreeMap<u64, WireBatch> = BTreeMap::new();
    for (sid, ms) in msgs {
        for m in ms {
            by_node
                .entry(m.to)
                .or_default()
                .messages
                .push(WireMessage::from_message(sid, &m));
        }
    }
    by_node.into_iter().map(|(n, b)| (NodeId(n), b)).collect()
}

/// The shards of `states` that have this node as voter or learner (helper for tests and
/// tools).
pub fn member_shards(states: &[ShardState], me: NodeId) -> BTreeSet<ShardId> {
    states
        .iter()
        .filter(|s| s.conf_state.voters.contains(&me.0) || s.conf_state.learners.contains(&me.0))
        .map(|s| s.shard)
        .collect()
}
