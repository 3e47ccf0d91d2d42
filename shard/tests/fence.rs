//! The per-proposer fence (`cairn_shard::Fence`) on one sole-voter core, driven by hand (no
//! I/O: the core never reads storage back, so rounds need not be persisted here): a chain's
//! proposals are refused once one of them was refused, and whenever the chain names another
//! term than the leader's; other chains are not affected.

use std::time::Duration;

use cairn_scheduler::NodeId;
use cairn_shard::{
    bootstrap_states, Fence, MultiRaft, Outcome, ProposalId, ProposeError, ShardConfig, ShardId,
};

const ME: NodeId = NodeId(7);
const S: ShardId = ShardId(0);

/// A sole-voter core of one shard, run until it serves the shard; with the time reached.
fn serving_core() -> (MultiRaft, Duration) {
    let cfg = ShardConfig {
        shards: 1,
        replication: 1,
        ..ShardConfig::default()
    };
    let states = bootstrap_states(&cfg, ME);
    let mut core = MultiRaft::recover(cfg.clone(), ME, &states, 1, Duration::ZERO).unwrap();
    let mut now = Duration::ZERO;
    for _ in 0..1_000 {
        if core.serving_term(S, now).is_some() {
            return (core, now);
        }
        now += cfg.tick;
        round(&mut core, now);
    }
    panic!("the sole voter never served its shard");
}

/// One round (tick, ready, persisted); returns the proposals' outcomes.
fn round(core: &mut MultiRaft, now: Duration) -> Vec<(ProposalId, Outcome)> {
    core.tick(now);
    let mut outcomes = Vec::new();
    while core.has_ready() {
        let r = core.ready(now);
        let out = core.persisted(r, now);
        outcomes.extend(out.outcomes.into_iter().map(|(_, id, o)| (id, o)));
    }
    outcomes
}

#[test]
fn a_chain_stops_at_its_first_refusal_and_at_a_term_change() {
    let (mut core, now) = serving_core();
    let term = core.serving_term(S, now).unwrap();
    let a = Fence { chain: 1, term };
    let b = Fence { chain: 2, term };

    // Chain a: one accepted, one refused (too large), then every later one is refused.
    let first = core.propose_fenced(S, vec![1; 8], Some(a)).unwrap();
    let too_large = vec![0; core.config().max_entry_bytes + 1];
    assert!(matches!(
        core.propose_fenced(S, too_large, Some(a)),
        Err(ProposeError::TooLarge { .. })
    ));
    assert_eq!(
        core.propose_fenced(S, vec![2; 8], Some(a)),
        Err(ProposeError::Fenced(S)),
        "a proposal after a refused one of its chain"
    );
    // Chain b, and unfenced proposals, go on.
    let other = core.propose_fenced(S, vec![3; 8], Some(b)).unwrap();
    let plain = core.propose(S, vec![4; 8]).unwrap();
    let outcomes = round(&mut core, now);
    for id in [first, other, plain] {
        assert!(
            outcomes.contains(&(id, Outcome::Committed)),
            "{id:?} committed: {outcomes:?}"
        );
    }

    // A chain naming another term than the leader's is refused, and so broken.
    let stale = Fence {
        chain: 3,
        term: term - 1,
    };
    assert_eq!(
        core.propose_fenced(S, vec![5; 8], Some(stale)),
        Err(ProposeError::Fenced(S))
    );
    assert_eq!(
        core.propose_fenced(
            S,
            vec![6; 8],
            Some(Fence {
                chain: 4,
                term: term + 1
            })
        ),
        Err(ProposeError::Fenced(S))
    );
    // Chain b still takes proposals in its term.
    let more = core.propose_fenced(S, vec![7; 8], Some(b)).unwrap();
    assert!(round(&mut core, now).contains(&(more, Outcome::Committed)));
}
