//! Deterministic simulation of the shard layer: N nodes × S shards of [`MultiRaft`] on a
//! simulated network and clock, with seeded drops, delays (hence reordering), partitions,
//! crashes that lose everything not yet persisted, restarts from durable state, and joins and
//! leaves that drive rebalancing. A client increments and reads counters and records a
//! history; the checker verifies:
//!
//! 1. never two nodes able to acknowledge for one shard at once (lease intervals, converted to
//!    the simulated real clock, never overlap);
//! 2. no acknowledged increment is lost, and no value contains an increment never attempted;
//! 3. a read never misses an increment acknowledged before the read began;
//! 4. after healing, every voter of a shard holds the same state;
//! 5. after healing, leadership is spread: every shard is led by its preferred leader
//!    (`cairn_shard::leadership`), reached by leadership transfers that check 1 covers too.
//!
//! Same seed → same run (`same_seed_same_trace`). `CAIRN_SEED=n cargo test -p cairn-shard
//! --test sim replay -- --nocapture` replays one seed; `CAIRN_SIM_SEEDS` sets how many seeds
//! `many_seeds` runs (default 1,000, in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use cairn_scheduler::NodeId;
use cairn_shard::placement::{Liveness, Member};
use cairn_shard::wire::{WireBatch, WireConfState, WireEntry, WireSnapshot};
use cairn_shard::{
    bootstrap_states, write_round, Apply, MultiRaft, Outcome, ProposalId, RoundWriter, ShardConfig,
    ShardId, ShardState, WireHardState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHARDS: u32 = 6;
const COUNTERS: u32 = 12;
const MS: Duration = Duration::from_millis(1);

fn config() -> ShardConfig {
    ShardConfig {
        shards: SHARDS,
        replication: 3,
        tick: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_clock_drift: 0.005,
        down_grace: Duration::from_millis(400),
        log_keep: 16,
        // As in production (10 and 10): the rebalancing turn comes once per election
        // timeout, the period of raft-rs's check-quorum rounds, so a turn can fall on the
        // tick of a round (leader balancing once stalled there; see `core/leader_balance.rs`).
        rebalance_ticks: 10,
        ..ShardConfig::default()
    }
}

/// counter → op ids applied.
type Counters = BTreeMap<u32, BTreeSet<u64>>;

/// What survives a crash: the Raft state and the state machine, written a round at a time.
#[derive(Default, Clone)]
struct MemDurable {
    raft: BTreeMap<ShardId, ShardState>,
    sm: BTreeMap<ShardId, Counters>,
}

fn op_payload(counter: u32, op: u64) -> Vec<u8> {
    let mut v = counter.to_be_bytes().to_vec();
    v.extend_from_slice(&op.to_be_bytes());
    v
}

impl RoundWriter for MemDurable {
    type Error = Infallible;
    fn destroy(&mut self, shard: ShardId) -> Result<(), Infallible> {
        self.raft.remove(&shard);
        self.sm.remove(&shard);
        Ok(())
    }
    fn install_snapshot(&mut self, shard: ShardId, s: &WireSnapshot) -> Result<(), Infallible> {
        let data: Counters = if s.data.is_empty() {
            Counters::new()
        } else {
            rmp_serde::from_slice(&s.data).unwrap()
        };
        self.sm.insert(shard, data);
        let st = self.state(shard);
        st.entries.clear();
        st.truncated = (s.index, s.term);
        st.conf_state = s.conf_state.clone();
        st.applied = s.index;
        Ok(())
    }
    fn append(&mut self, shard: ShardId, entries: &[WireEntry]) -> Result<(), Infallible> {
        let st = self.state(shard);
        st.entries.retain(|e| e.index < entries[0].index);
        st.entries.extend_from_slice(entries);
        Ok(())
    }
    fn hard_state(&mut self, shard: ShardId, hs: &WireHardState) -> Result<(), Infallible> {
        self.state(shard).hard_state = *hs;
        Ok(())
    }
    fn conf_state(&mut self, shard: ShardId, cs: &WireConfState) -> Result<(), Infallible> {
        self.state(shard).conf_state = cs.clone();
        Ok(())
    }
    fn apply(&mut self, shard: ShardId, entry: &Apply) -> Result<(), Infallible> {
        let sm = self.sm.entry(shard).or_default();
        for (_, _, p) in &entry.proposals {
            let counter = u32::from_be_bytes(p[..4].try_into().unwrap());
            let op = u64::from_be_bytes(p[4..12].try_into().unwrap());
            sm.entry(counter).or_default().insert(op);
        }
        Ok(())
    }
    fn applied(&mut self, shard: ShardId, index: u64) -> Result<(), Infallible> {
        self.state(shard).applied = index;
        Ok(())
    }
    fn compact(&mut self, shard: ShardId, index: u64, term: u64) -> Result<(), Infallible> {
        let st = self.state(shard);
        st.entries.retain(|e| e.index > index);
        st.truncated = (index, term);
        Ok(())
    }
}

impl MemDurable {
    fn state(&mut self, shard: ShardId) -> &mut ShardState {
        self.raft.entry(shard).or_insert_with(|| ShardState {
            shard,
            ..ShardState::default()
        })
    }
}

struct Node {
    id: NodeId,
    core: Option<MultiRaft>,
    durable: MemDurable,
    rate: f64,
    offset: Duration,
    /// Client ops waiting for their proposal's outcome: proposal → (counter, op, start).
    waiting: BTreeMap<ProposalId, (u32, u64, Duration)>,
    left: bool,
    down_since: Option<Duration>,
    lives: u64,
}

impl Node {
    fn local(&self, real: Duration) -> Duration {
        self.offset + Duration::from_secs_f64(real.as_secs_f64() * self.rate)
    }
    fn real(&self, local: Duration) -> Duration {
        Duration::from_secs_f64(local.saturating_sub(self.offset).as_secs_f64() / self.rate)
    }
}

struct Write {
    counter: u32,
    op: u64,
    acked_at: Option<Duration>,
}

struct Read {
    counter: u32,
    at: Duration,
    value: BTreeSet<u64>,
    node: u64,
}

/// A lease claim by `node` on a shard: [from, to] in real time.
struct Claim {
    node: u64,
    life: u64,
    to: Duration,
}

struct Sim {
    rng: StdRng,
    now: Duration,
    nodes: Vec<Node>,
    /// (deliver at, seq) → (from, to, batch)
    net: BTreeMap<(Duration, u64), (usize, usize, WireBatch)>,
    seq: u64,
    cut: BTreeSet<(usize, usize)>,
    drop_p: f64,
    writes: Vec<Write>,
    reads: Vec<Read>,
    attempted: BTreeSet<u64>,
    next_op: u64,
    claims: BTreeMap<ShardId, Vec<Claim>>,
    trace: u64,
    failures: Vec<String>,
    log: bool,
    /// The shard whose events a logged run prints (`CAIRN_SIM_SHARD`, default 1).
    log_shard: u32,
    /// Leadership transfers (started, aborted) of cores that crashed.
    past_transfers: (u64, u64),
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x100_0000_01b3).rotate_left(17)
}

impl Sim {
    fn new(seed: u64, log: bool) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = config();
        let mut nodes = Vec::new();
        for i in 0..4u64 {
            let rate = 1.0 + rng.gen_range(-cfg.max_clock_drift / 2.0..cfg.max_clock_drift / 2.0);
            let offset = Duration::from_millis(rng.gen_range(0..10_000));
            nodes.push(Node {
                id: NodeId(0x1000 + i * 7919),
                core: None,
                durable: MemDurable::default(),
                rate,
                offset,
                waiting: BTreeMap::new(),
                left: false,
                down_since: None,
                lives: 0,
            });
        }
        // Node 0 creates the cluster; nodes 1 and 2 join at once; node 3 joins later.
        let boot = bootstrap_states(&cfg, nodes[0].id);
        for s in boot {
            nodes[0].durable.raft.insert(s.shard, s);
        }
        let mut sim = Sim {
            rng,
            now: Duration::ZERO,
            nodes,
            net: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            drop_p: 0.0,
            writes: Vec::new(),
            reads: Vec::new(),
            attempted: BTreeSet::new(),
            next_op: 1,
            claims: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            failures: Vec::new(),
            log,
            log_shard: std::env::var("CAIRN_SIM_SHARD")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
            past_transfers: (0, 0),
        };
        for i in 0..3 {
            sim.start(i);
        }
        sim.update_members();
        sim
    }

    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let states: Vec<ShardState> = n.durable.raft.values().cloned().collect();
        let seed = self.rng.gen();
        n.lives += 1;
        n.core =
            Some(MultiRaft::recover(config(), n.id, &states, seed, n.local(self.now)).unwrap());
        n.down_since = None;
    }

    fn crash(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if let Some(core) = n.core.take() {
            let (s, a) = core.leader_transfers();
            self.past_transfers.0 += s;
            self.past_transfers.1 += a;
            n.waiting.clear();
            n.down_since = Some(now);
            for claims in self.claims.values_mut() {
                for c in claims.iter_mut() {
                    if c.node == n.id.0 && c.to > now {
                        c.to = now;
                    }
                }
            }
        }
    }

    fn update_members(&mut self) {
        let now = self.now;
        let joined: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some() || self.nodes[i].down_since.is_some())
            .collect();
        for i in 0..self.nodes.len() {
            let local_now = self.nodes[i].local(now);
            let members: Vec<Member> = joined
                .iter()
                .map(|&j| {
                    let m = &self.nodes[j];
                    Member {
                        id: m.id,
                        region: None,
                        liveness: match m.down_since {
                            None => Liveness::Up,
                            Some(t) => Liveness::Down {
                                since: local_now.saturating_sub(now - t),
                            },
                        },
                    }
                })
                .collect();
            if let Some(c) = self.nodes[i].core.as_mut() {
                c.set_members(members);
            }
        }
    }

    fn send(&mut self, from: usize, to_id: NodeId, batch: WireBatch) {
        let Some(to) = self.nodes.iter().position(|n| n.id == to_id) else {
            return;
        };
        if self.cut.contains(&(from.min(to), from.max(to))) || self.rng.gen_bool(self.drop_p) {
            return;
        }
        let delay = if self.rng.gen_bool(0.1) {
            self.rng.gen_range(1..40)
        } else {
            self.rng.gen_range(1..4)
        };
        self.seq += 1;
        self.net
            .insert((self.now + MS * delay, self.seq), (from, to, batch));
    }

    /// Runs node `i`'s rounds until it has nothing ready.
    fn drive(&mut self, i: usize) {
        for _ in 0..16 {
            let local = self.nodes[i].local(self.now);
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            if !core.has_ready() {
                break;
            }
            let round = core.ready(local);
            if self.log {
                let ls = self.log_shard;
                for sr in round.shards.iter().filter(|s| s.shard.0 == ls) {
                    for a in &sr.apply {
                        let ops: Vec<u64> = a
                            .proposals
                            .iter()
                            .map(|(_, _, p)| u64::from_be_bytes(p[4..12].try_into().unwrap()))
                            .collect();
                        eprintln!(
                            "{:?} node {i} s{ls} apply {} ops {ops:?}",
                            self.now, a.index
                        );
                    }
                    if sr.destroy || sr.conf_state.is_some() || sr.snapshot.is_some() {
                        eprintln!(
                            "{:?} node {i} s{ls} destroy {} conf {:?} snap {:?} applied {:?}",
                            self.now,
                            sr.destroy,
                            sr.conf_state,
                            sr.snapshot
                                .as_ref()
                                .map(|s| (s.index, s.conf_state.clone())),
                            sr.applied
                        );
                    }
                }
            }
            let early = round.messages_now.clone();
            write_round(&mut self.nodes[i].durable, &round.shards).unwrap();
            let core = self.nodes[i].core.as_mut().unwrap();
            let out = core.persisted(round, local);
            for (to, b) in early.into_iter().chain(out.messages) {
                self.trace = mix(self.trace, to.0 ^ (b.messages.len() as u64) << 40);
                self.send(i, to, b);
            }
            for shard in out.snapshot_requests {
                let n = &mut self.nodes[i];
                let applied = n.durable.raft.get(&shard).map_or(0, |s| s.applied);
                let data =
                    rmp_serde::to_vec(&n.durable.sm.get(&shard).cloned().unwrap_or_default())
                        .unwrap();
                n.core
                    .as_mut()
                    .unwrap()
                    .provide_snapshot(shard, applied, data);
            }
            for (shard, id, outcome) in out.outcomes {
                self.trace = mix(self.trace, id.0 ^ (outcome as u64) << 50);
                let n = &mut self.nodes[i];
                if let Some((counter, op, _start)) = n.waiting.remove(&id) {
                    // The output gate: acknowledge only while serving (lease held).
                    let serving = n.core.as_ref().unwrap().serving(shard, local);
                    if self.log && shard.0 == self.log_shard {
                        eprintln!(
                            "{:?} node {i} op {op} counter {counter}: {outcome:?} serving {serving} | {}",
                            self.now,
                            n.core.as_ref().unwrap().debug(shard)
                        );
                    }
                    if outcome == Outcome::Committed && serving {
                        self.writes.push(Write {
                            counter,
                            op,
                            acked_at: Some(self.now),
                        });
                    } else {
                        self.writes.push(Write {
                            counter,
                            op,
                            acked_at: None,
                        });
                    }
                }
            }
        }
    }

    fn record_leases(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let Some(core) = n.core.as_ref() else {
                continue;
            };
            let local = n.local(self.now);
            for s in core.hosted() {
                let claims = self.claims.entry(s).or_default();
                let mine = claims
                    .iter()
                    .rposition(|c| c.node == n.id.0 && c.life == n.lives);
                match core.lease_until(s, local) {
                    Some(until) => {
                        let to = n.real(until);
                        // Another node's claim still open now: two could acknowledge.
                        for c in claims.iter() {
                            if c.node != n.id.0 && c.to > self.now {
                                self.failures.push(format!(
                                    "lease overlap on {s}: node {:x} until {:?}, node {:x} from {:?}",
                                    c.node, c.to, n.id.0, self.now
                                ));
                            }
                        }
                        match mine {
                            Some(k) if claims[k].to >= self.now => {
                                claims[k].to = claims[k].to.max(to)
                            }
                            _ => claims.push(Claim {
                                node: n.id.0,
                                life: n.lives,
                                to,
                            }),
                        }
                    }
                    None => {
                        if let Some(k) = mine {
                            if claims[k].to > self.now {
                                claims[k].to = self.now;
                            }
                        }
                    }
                }
            }
        }
    }

    fn client(&mut self) {
        if !self.rng.gen_bool(0.3) {
            return;
        }
        let counter = self.rng.gen_range(0..COUNTERS);
        let shard = ShardId(counter % SHARDS);
        let write = self.rng.gen_bool(0.6);
        // The client finds a node serving the shard (phase 2: routing does this).
        let server = (0..self.nodes.len()).find(|&i| {
            let n = &self.nodes[i];
            n.core
                .as_ref()
                .is_some_and(|c| c.serving(shard, n.local(self.now)))
        });
        let Some(i) = server else { return };
        if write {
            let op = self.next_op;
            self.next_op += 1;
            let n = &mut self.nodes[i];
            if let Ok(id) = n
                .core
                .as_mut()
                .unwrap()
                .propose(shard, op_payload(counter, op))
            {
                self.attempted.insert(op);
                n.waiting.insert(id, (counter, op, self.now));
            }
        } else {
            let n = &self.nodes[i];
            let value = n
                .durable
                .sm
                .get(&shard)
                .and_then(|c| c.get(&counter))
                .cloned()
                .unwrap_or_default();
            self.reads.push(Read {
                counter,
                at: self.now,
                value,
                node: n.id.0,
            });
        }
    }

    fn faults(&mut self, allow: bool) {
        if !allow {
            return;
        }
        let r = self.rng.gen_range(0..1000);
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect();
        match r {
            0..=2 if live.len() > 2 => {
                let i = live[self.rng.gen_range(0..live.len())];
                if self.log {
                    eprintln!("{:?} crash {i}", self.now);
                }
                self.crash(i);
                self.update_members();
            }
            3..=8 => {
                let down: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        self.nodes[i].core.is_none()
                            && self.nodes[i].down_since.is_some()
                            && !self.nodes[i].left
                    })
                    .collect();
                if let Some(&i) = down.first() {
                    if self.log {
                        eprintln!("{:?} restart {i}", self.now);
                    }
                    self.start(i);
                    self.update_members();
                }
            }
            9..=11 => {
                let a = self.rng.gen_range(0..self.nodes.len());
                let b = self.rng.gen_range(0..self.nodes.len());
                if a != b {
                    self.cut.insert((a.min(b), a.max(b)));
                }
            }
            12..=17 => self.cut.clear(),
            _ => {}
        }
    }

    fn step(&mut self, faults: bool, client: bool) {
        self.now += MS;
        // Deliver what is due.
        let due: Vec<(Duration, u64)> = self
            .net
            .range(..=(self.now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let (from, to, batch) = self.net.remove(&k).unwrap();
            let from_id = self.nodes[from].id;

            let local = self.nodes[to].local(self.now);
            if let Some(core) = self.nodes[to].core.as_mut() {
                core.tick(local);
                let errs = core.step(from_id, batch);
                assert!(errs.is_empty(), "{errs:?}");
            }
        }
        for i in 0..self.nodes.len() {
            let local = self.nodes[i].local(self.now);
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.tick(local);
            }
        }
        self.faults(faults);
        if client {
            self.client();
        }
        for i in 0..self.nodes.len() {
            self.drive(i);
        }
        self.record_leases();
    }

    /// Leadership transfers started and aborted by every life of every node so far.
    fn transfers(&self) -> (u64, u64) {
        let (mut started, mut aborted) = self.past_transfers;
        for n in &self.nodes {
            if let Some(c) = n.core.as_ref() {
                let (s, a) = c.leader_transfers();
                started += s;
                aborted += a;
            }
        }
        (started, aborted)
    }

    fn run(&mut self) -> Result<u64, String> {
        let drop_p = self.rng.gen_range(0.0..0.05);
        self.drop_p = drop_p;
        // Phase 1: faults, and mid-way a fourth node joins and, in some runs, one leaves.
        let leave = self.rng.gen_bool(0.5);
        for t in 0..2_500u32 {
            if t == 1_000 {
                self.start(3);
                self.update_members();
            }
            // A member leaves for good only when every shard has its three voters (an
            // operator removes nodes from a healthy cluster; a shard with two voters that
            // loses one for good needs manual recovery, which is out of scope here).
            if t == 1_800 && leave && self.fully_replicated() {
                let i = self.rng.gen_range(0..3);
                if self.log {
                    eprintln!("{:?} leave {i}", self.now);
                }
                self.nodes[i].left = true;
                self.crash(i);
                self.update_members();
            }
            self.step(true, true);
            if let Some(f) = self.failures.first() {
                return Err(f.clone());
            }
        }
        // Phase 2: heal; restart every crashed node that did not leave; let it settle.
        self.cut.clear();
        self.drop_p = 0.0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none()
                && !self.nodes[i].left
                && self.nodes[i].down_since.is_some()
            {
                self.start(i);
            }
        }
        self.update_members();
        // Then quiet: no new writes, so replicas can converge.
        for t in 0..2_000 {
            self.step(false, t < 1_500);
            if let Some(f) = self.failures.first() {
                return Err(f.clone());
            }
        }
        self.check()?;
        Ok(self.trace)
    }

    fn fully_replicated(&self) -> bool {
        (0..SHARDS).all(|s| {
            self.nodes.iter().any(|n| {
                n.core.as_ref().is_some_and(|c| {
                    c.serving(ShardId(s), n.local(self.now))
                        && c.conf_state(ShardId(s))
                            .is_some_and(|cs| cs.voters.len() >= 3)
                })
            })
        })
    }

    fn check(&self) -> Result<(), String> {
        // Converged state per shard: from any serving node; every voter must agree.
        let mut finals: BTreeMap<ShardId, Counters> = BTreeMap::new();
        for s in 0..SHARDS {
            let shard = ShardId(s);
            let leader = self.nodes.iter().find(|n| {
                n.core
                    .as_ref()
                    .is_some_and(|c| c.serving(shard, n.local(self.now)))
            });
            let Some(leader) = leader else {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        n.core
                            .as_ref()
                            .map(|c| format!("{:x}: {}", n.id.0, c.debug(shard)))
                    })
                    .collect();
                return Err(format!(
                    "{shard} has no serving leader after healing: {views:#?}"
                ));
            };
            let core = leader.core.as_ref().unwrap();
            let conf = core.conf_state(shard).unwrap();
            let applied = core.applied(shard).unwrap();
            let state = leader.durable.sm.get(&shard).cloned().unwrap_or_default();
            for v in &conf.voters {
                let n = self.nodes.iter().find(|n| n.id.0 == *v).unwrap();
                let Some(c) = n.core.as_ref() else {
                    if n.left {
                        continue;
                    }
                    return Err(format!("voter {v:x} of {shard} is down after healing"));
                };
                if c.applied(shard) != Some(applied) {
                    return Err(format!(
                        "{shard}: voter {v:x} applied {:?} status {:?}, leader {applied} status {:?}",
                        c.applied(shard),
                        c.debug(shard),
                        core.debug(shard)
                    ));
                }
                if n.durable.sm.get(&shard).cloned().unwrap_or_default() != state {
                    return Err(format!("{shard}: voter {v:x} diverged"));
                }
            }
            if conf.voters.len() < 3 {
                return Err(format!(
                    "{shard}: only {} voters after healing",
                    conf.voters.len()
                ));
            }
            // Leadership is spread: the shard is led by its preferred leader.
            if let Some(p) = core.preferred_leader(shard) {
                if p != leader.id {
                    return Err(format!(
                        "{shard} is led by {:x}, not by its preferred leader {:x}: {}",
                        leader.id.0,
                        p.0,
                        core.debug(shard)
                    ));
                }
            }
            finals.insert(shard, state);
        }
        let value = |c: u32| -> BTreeSet<u64> {
            finals[&ShardId(c % SHARDS)]
                .get(&c)
                .cloned()
                .unwrap_or_default()
        };
        for w in &self.writes {
            if w.acked_at.is_some() && !value(w.counter).contains(&w.op) {
                return Err(format!(
                    "acknowledged op {} on counter {} lost",
                    w.op, w.counter
                ));
            }
        }
        for c in 0..COUNTERS {
            if let Some(op) = value(c).iter().find(|op| !self.attempted.contains(op)) {
                return Err(format!(
                    "counter {c} holds op {op} that was never attempted"
                ));
            }
        }
        for r in &self.reads {
            for w in &self.writes {
                if w.counter == r.counter
                    && w.acked_at.is_some_and(|t| t < r.at)
                    && !r.value.contains(&w.op)
                {
                    return Err(format!(
                        "read of counter {} at {:?} on {:x} misses op {} acknowledged at {:?}",
                        r.counter, r.at, r.node, w.op, w.acked_at
                    ));
                }
            }
        }
        let acked = self.writes.iter().filter(|w| w.acked_at.is_some()).count();
        if acked == 0 {
            return Err("no write was acknowledged: the workload did not run".into());
        }
        Ok(())
    }
}

fn run_seed(seed: u64, log: bool) -> Result<u64, String> {
    run_counting(seed, log).map(|(trace, _)| trace)
}

/// A run's trace and its leadership transfers (started, aborted).
fn run_counting(seed: u64, log: bool) -> Result<(u64, (u64, u64)), String> {
    let mut sim = Sim::new(seed, log);
    let trace = sim.run()?;
    Ok((trace, sim.transfers()))
}

/// Runs in CI: 1,000 seeds take ~11 s on two cores (debug build). Sweep more with
/// `CAIRN_SIM_SEEDS=20000`.
#[test]
fn many_seeds() {
    let n: u64 = std::env::var("CAIRN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let start = std::time::Instant::now();
    // Seeds are independent: split them over the machine's cores.
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get() as u64);
    let transfers = std::sync::Mutex::new((0u64, 0u64));
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let transfers = &transfers;
                s.spawn(move || {
                    (0..n)
                        .filter(|seed| seed % threads == t)
                        .filter_map(|seed| match run_counting(seed, false) {
                            Ok((_, (started, aborted))) => {
                                let mut all = transfers.lock().unwrap();
                                all.0 += started;
                                all.1 += aborted;
                                None
                            }
                            Err(e) => Some((seed, e)),
                        })
                        .map(|(seed, e)| format!("seed {seed} failed: {e}\nreplay: CAIRN_SEED={seed} cargo test -p cairn-shard --test sim replay -- --nocapture"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let (started, aborted) = *transfers.lock().unwrap();
    eprintln!(
        "{n} seeds in {:?}; {started} leadership transfers started, {aborted} aborted",
        start.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The safety checks above ran across real transfers, not a feature left idle.
    assert!(started >= n, "{started} leadership transfers in {n} seeds");
}

/// A member leaves for good while the other two replicas of a shard it votes in are down past
/// the replacement grace (and the fourth member too): the leader's lease outlives its quorum
/// by an election timeout, and in that window the departed member is still in the target
/// (inside the grace) while the down voter is not. The planner must not remove the down
/// voter: its acknowledgement on return would commit the shard onto [leader, departed], a
/// pair that can never elect again. Seed 244 reached this with leadership spreading.
#[test]
fn a_shard_is_never_shrunk_onto_a_departed_member() {
    let grace = config().down_grace;
    for seed in 0..4 {
        let mut sim = Sim::new(seed, false);
        sim.start(3);
        sim.update_members();
        let mut steps = 0;
        while !sim.fully_replicated() {
            sim.step(false, true);
            steps += 1;
            assert!(steps < 5_000, "seed {seed}: never fully replicated");
        }
        for _ in 0..200 {
            sim.step(false, true);
        }
        // Shard 1's leader, its two other voters (a leaves, b returns) and the fourth member.
        let shard = ShardId(1);
        let leader = (0..4)
            .find(|&i| {
                let n = &sim.nodes[i];
                n.core
                    .as_ref()
                    .is_some_and(|c| c.serving(shard, n.local(sim.now)))
            })
            .expect("shard 1 has a serving leader");
        let voters = sim.nodes[leader]
            .core
            .as_ref()
            .unwrap()
            .conf_state(shard)
            .unwrap()
            .voters;
        assert_eq!(voters.len(), 3, "seed {seed}: {voters:?}");
        let index = |id: u64| sim.nodes.iter().position(|n| n.id.0 == id).unwrap();
        let others: Vec<usize> = voters
            .iter()
            .map(|&v| index(v))
            .filter(|&i| i != leader)
            .collect();
        let (a, b) = (others[0], others[1]);
        let c = (0..4).find(|i| ![leader, a, b].contains(i)).unwrap();
        sim.crash(b);
        sim.crash(c);
        sim.update_members();
        // `a` leaves just before b and c pass the grace.
        for _ in 0..grace.as_millis() - 5 {
            sim.step(false, true);
        }
        sim.nodes[a].left = true;
        sim.crash(a);
        sim.update_members();
        for _ in 0..300 {
            sim.step(false, false);
        }
        sim.start(b);
        sim.start(c);
        sim.update_members();
        for t in 0..3_000 {
            sim.step(false, t < 2_000);
        }
        assert!(sim.failures.is_empty(), "seed {seed}: {:?}", sim.failures);
        if let Err(e) = sim.check() {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn same_seed_same_trace() {
    let a = run_seed(7, false).unwrap();
    let b = run_seed(7, false).unwrap();
    assert_eq!(a, b);
    let c = run_seed(8, false).unwrap();
    assert_ne!(a, c, "different seeds should differ");
}

#[test]
fn replay() {
    if let Some(seed) = std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        match run_seed(seed, true) {
            Ok(trace) => eprintln!("seed {seed} passed, trace {trace:x}"),
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
}
