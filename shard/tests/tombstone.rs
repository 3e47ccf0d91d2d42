//! The "not a member" rules (`cairn_shard::tombstone`) through the core's own inputs: a
//! member answers a stranger's Raft message; a stale replica destroys itself only once a
//! majority of its voters said so, and ignores a claim from one member, a forged or
//! misaddressed claim, a claim from outside its configuration, and a stale one.

use std::time::Duration;

use cairn_scheduler::NodeId;
use cairn_shard::tombstone::NotMember;
use cairn_shard::wire::{WireBatch, WireConfState, WireError, WireMessage};
use cairn_shard::{MultiRaft, ShardConfig, ShardId, ShardState, WireHardState};
use raft::eraftpb::MessageType;

const SHARD: ShardId = ShardId(0);
/// The applied index of every replica in these tests.
const APPLIED: u64 = 5;

fn core(me: u64, voters: &[u64]) -> MultiRaft {
    let cfg = ShardConfig {
        shards: 1,
        ..ShardConfig::default()
    };
    let state = ShardState {
        shard: SHARD,
        hard_state: WireHardState {
            term: 2,
            vote: 0,
            commit: APPLIED,
        },
        conf_state: WireConfState {
            voters: voters.to_vec(),
            learners: vec![],
        },
        truncated: (APPLIED, 2),
        applied: APPLIED,
        entries: vec![],
    };
    let mut core = MultiRaft::recover(cfg, NodeId(me), &[state], me, Duration::ZERO).unwrap();
    // Past the restart's vote quarantine (one election timeout).
    core.tick(Duration::from_secs(3));
    core
}

/// Runs one round; returns whether it destroys the replica, and its early messages.
fn round(core: &mut MultiRaft) -> (bool, Vec<(NodeId, WireBatch)>) {
    let mut r = core.ready(Duration::from_secs(3));
    let destroy = r.shards.iter().any(|s| s.shard == SHARD && s.destroy);
    let now = std::mem::take(&mut r.messages_now);
    core.persisted(r, Duration::from_secs(3));
    (destroy, now)
}

fn claim(from: u64, to: u64, index: u64) -> WireBatch {
    WireBatch {
        not_members: vec![NotMember {
            shard: SHARD,
            to,
            from,
            index,
        }],
        ..WireBatch::default()
    }
}

#[test]
fn a_member_tells_a_stranger_it_is_not_a_member() {
    // Node 1's replica has voters {1, 2}: node 3 was removed.
    let mut member = core(1, &[1, 2]);
    let pre_vote = WireMessage {
        shard: SHARD,
        msg_type: MessageType::MsgRequestPreVote as u8,
        to: 1,
        from: 3,
        term: 3,
        log_term: 2,
        index: APPLIED,
        entries: vec![],
        commit: 0,
        commit_term: 0,
        snapshot: None,
        request_snapshot: 0,
        reject: false,
        reject_hint: 0,
        context: vec![],
        priority: 0,
    };
    let batch = WireBatch {
        messages: vec![pre_vote.clone()],
        ..WireBatch::default()
    };
    assert!(member.step(NodeId(3), batch).is_empty());
    let (_, sent) = round(&mut member);
    let to_3: Vec<&NotMember> = sent
        .iter()
        .filter(|(n, _)| *n == NodeId(3))
        .flat_map(|(_, b)| &b.not_members)
        .collect();
    assert_eq!(
        to_3,
        vec![&NotMember {
            shard: SHARD,
            to: 3,
            from: 1,
            index: APPLIED
        }]
    );
    // A member of the configuration gets no such answer.
    let mut from_2 = pre_vote;
    from_2.from = 2;
    let batch = WireBatch {
        messages: vec![from_2],
        ..WireBatch::default()
    };
    member.step(NodeId(2), batch);
    let (_, sent) = round(&mut member);
    assert!(sent.iter().all(|(_, b)| b.not_members.is_empty()));
}

#[test]
fn a_removed_replica_goes_only_when_a_majority_of_its_voters_say_so() {
    // Node 3's replica still believes in voters {1, 2, 3}.
    let mut stale = core(3, &[1, 2, 3]);
    // One member's claim (it may be hostile) is not enough.
    assert!(stale.step(NodeId(1), claim(1, 3, 9)).is_empty());
    assert!(!round(&mut stale).0, "destroyed on one member's word");
    // A forged claim: node 1 speaking for node 2 is refused outright.
    let forged = stale.step(NodeId(1), claim(2, 3, 9));
    assert!(matches!(forged[..], [WireError::Misaddressed { .. }]));
    assert!(!round(&mut stale).0, "destroyed on a forged claim");
    // A claim from outside its configuration (e.g. the node that replaced it) and one
    // that is not ahead of its applied index do not count.
    assert!(stale.step(NodeId(9), claim(9, 3, 9)).is_empty());
    assert!(stale.step(NodeId(2), claim(2, 3, APPLIED)).is_empty());
    assert!(
        !round(&mut stale).0,
        "destroyed on claims that do not count"
    );
    // The second voter of its configuration confirms: gone.
    assert!(stale.step(NodeId(2), claim(2, 3, 9)).is_empty());
    assert!(
        round(&mut stale).0,
        "a confirmed removal destroys the replica"
    );
    assert!(stale.hosted().is_empty());
}
