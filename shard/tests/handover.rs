//! A planned leadership move refuses no write set that reached the leader while it served.
//!
//! Two voter cores of one shard, driven by hand on a simulated clock (no I/O: the core never
//! reads storage back, so rounds need not be persisted). Once one leads, the membership it
//! sees leaves it out of the shard's target replicas, so its rebalancing hands leadership to
//! the other. A fenced write set is proposed before every tick while the leader serves,
//! and one more in the same term after it stopped serving (a handler that ran while it
//! served, its set on the way to the core). Every one must commit.
//!
//! Before the hand-over drained, the set queued in the tick that decided the hand-over was
//! refused when the round appended it (raft-rs drops proposals during a transfer): its
//! caller got `NoReply` for a write that never happened (`tests/shards_failover.rs`, the call
//! after the restart, when the returning node let the planner move a shard).

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_scheduler::NodeId;
use cairn_shard::placement::Member;
use cairn_shard::wire::WireBatch;
use cairn_shard::{bootstrap_states, Fence, MultiRaft, Outcome, ProposalId, ShardConfig, ShardId};

const S: ShardId = ShardId(0);
const NODES: [NodeId; 2] = [NodeId(11), NodeId(22)];

fn config() -> ShardConfig {
    ShardConfig {
        shards: 1,
        // One target replica: the member the test lists, so the leader is the extra voter.
        replication: 1,
        ..ShardConfig::default()
    }
}

/// Two cores of shard `S`, both voters, and the clock.
struct Pair {
    cores: BTreeMap<NodeId, MultiRaft>,
    now: Duration,
    tick: Duration,
}

impl Pair {
    fn new() -> Pair {
        let cfg = config();
        let cores = NODES
            .iter()
            .map(|&id| {
                let mut states = bootstrap_states(&cfg, id);
                states[0].conf_state.voters = NODES.iter().map(|n| n.0).collect();
                let core = MultiRaft::recover(cfg.clone(), id, &states, id.0, Duration::ZERO)
                    .expect("a core starts");
                (id, core)
            })
            .collect();
        Pair {
            cores,
            now: Duration::ZERO,
            tick: cfg.tick,
        }
    }

    fn core(&mut self, id: NodeId) -> &mut MultiRaft {
        self.cores.get_mut(&id).expect("one of the pair")
    }

    /// The node serving `S` now, if any.
    fn serving(&self) -> Option<NodeId> {
        self.cores
            .iter()
            .find(|(_, c)| c.serving_term(S, self.now).is_some())
            .map(|(&id, _)| id)
    }

    /// Ticks both cores, then runs rounds and delivers their messages until quiet; returns
    /// the outcomes of each node's proposals.
    fn tick_and_settle(&mut self) -> Vec<(NodeId, ProposalId, Outcome)> {
        self.now += self.tick;
        let now = self.now;
        for core in self.cores.values_mut() {
            core.tick(now);
        }
        self.settle()
    }

    /// Runs rounds and delivers messages (lossless, in order) until nothing is left.
    fn settle(&mut self) -> Vec<(NodeId, ProposalId, Outcome)> {
        let now = self.now;
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let mut mail: Vec<(NodeId, NodeId, WireBatch)> = Vec::new();
            for (&id, core) in self.cores.iter_mut() {
                while core.has_ready() {
                    let mut round = core.ready(now);
                    let early = std::mem::take(&mut round.messages_now);
                    mail.extend(early.into_iter().map(|(to, b)| (id, to, b)));
                    let out = core.persisted(round, now);
                    mail.extend(out.messages.into_iter().map(|(to, b)| (id, to, b)));
                    outcomes.extend(out.outcomes.into_iter().map(|(_, p, o)| (id, p, o)));
                }
            }
            if mail.is_empty() {
                return outcomes;
            }
            for (from, to, batch) in mail {
                if let Some(core) = self.cores.get_mut(&to) {
                    core.step(from, batch);
                }
            }
        }
        panic!("the pair never went quiet");
    }
}

#[test]
fn a_planned_hand_over_commits_the_writes_its_leader_took() {
    let mut pair = Pair::new();
    let mut first = None;
    for _ in 0..1_000 {
        pair.tick_and_settle();
        first = pair.serving();
        if first.is_some() {
            break;
        }
    }
    let leader = first.expect("one of two voters serves the shard");
    let successor = *NODES.iter().find(|&&n| n != leader).unwrap();
    let now = pair.now;
    let term = pair.core(leader).serving_term(S, now).unwrap();
    let fence = Fence { chain: 1, term };

    // The shard's target is the other node now: the leader must hand over.
    for id in NODES {
        pair.core(id).set_members(vec![Member::up(successor, None)]);
    }
    // Taken while the leader served, and the one set proposed after (admitted or not).
    let mut proposed: Vec<ProposalId> = Vec::new();
    let mut outcomes: Vec<(NodeId, ProposalId, Outcome)> = Vec::new();
    let mut queued_at_the_decision = false;
    let mut late = None;
    for _ in 0..1_000 {
        let now = pair.now;
        let served = pair.core(leader).serving_term(S, now).is_some();
        if served {
            let id = pair
                .core(leader)
                .propose_fenced(S, vec![1; 8], Some(fence))
                .expect("a serving leader takes a write set of its term");
            proposed.push(id);
        }
        pair.now += pair.tick;
        let now = pair.now;
        for core in pair.cores.values_mut() {
            core.tick(now);
        }
        let still_leads = pair.core(leader).leader(S) == Some(leader);
        let serves = pair.core(leader).serving_term(S, now).is_some();
        if served && !serves && still_leads {
            // This tick decided the hand-over, with a write set queued from before it.
            queued_at_the_decision = true;
            // A handler that ran while the leader served: its set arrives now.
            late = Some(pair.core(leader).propose_fenced(S, vec![2; 8], Some(fence)));
        }
        outcomes.extend(pair.settle());
        let done = proposed
            .iter()
            .chain(late.iter().flat_map(|l| l.as_ref().ok()))
            .all(|p| outcomes.iter().any(|(n, o, _)| *n == leader && o == p));
        if done && pair.serving() == Some(successor) {
            break;
        }
    }
    assert!(
        queued_at_the_decision,
        "the leader never handed over while serving (outcomes {outcomes:?})"
    );
    assert_eq!(
        pair.serving(),
        Some(successor),
        "leadership moved to the target replica"
    );
    let fate = |p: &ProposalId| {
        outcomes
            .iter()
            .find(|(n, o, _)| *n == leader && o == p)
            .map(|(_, _, f)| *f)
    };
    for p in &proposed {
        assert_eq!(
            fate(p),
            Some(Outcome::Committed),
            "write set {p:?} of {} taken while the leader served",
            proposed.len()
        );
    }
    let late = late
        .unwrap()
        .expect("a handing-over leader still takes its term's write sets");
    assert_eq!(fate(&late), Some(Outcome::Committed), "the late write set");
}
