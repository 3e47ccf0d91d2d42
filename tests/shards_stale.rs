//! Replicas removed while their node was cut off, and routers that must not wait on one
//! leaderless shard, on `cairn-node`-like child processes (`shards_node_child`, see
//! `common::shard_mesh`) called through a dial-only client.
//!
//! - **A stale replica is told.** Three children hold every shard; the third is cut off by
//!   fault injection in the mesh (`cairn::net::faults`) for longer than the down grace, so
//!   the majority removes its replicas. A fourth child joins the majority and takes them.
//!   After healing, the shards whose target (rendezvous over the four) leaves the healed
//!   node out are never given back to it: its old replicas of them learn from a majority of
//!   their old voters that they were removed and destroy themselves
//!   (`cairn_shard::tombstone`). Before that fix they campaigned forever. Calls through the
//!   healed node answer within [`PROMPT`].
//! - **A leaderless shard does not hold up its class.** With one replica per shard, the
//!   node holding some shards is killed: they have no leader anywhere. A message to one of
//!   them is parked by the router it reaches, and a call to a key of a shard that has a
//!   leader, sent right after it through the same routers, answers within [`PROMPT`]
//!   (before the fix the router waited up to `SHARD_WAIT`, 10 s, on the first message).
//!
//! Every wait is for a condition, bounded by [`shard_mesh::WAIT`]; the times are printed.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn::shard::placement::{object_shard, target_replicas, Member};
use cairn::shard::ShardId;
use common::shard_mesh::{self, counter_key, serial, Children, TestShards};
use common::{Counter, CounterMsg};

/// A call through a healed node, or past a parked message, answers within this: below
/// `SHARD_WAIT` (10 s), which a router blocked by a leaderless shard would take.
const PROMPT: Duration = Duration::from_secs(7);
/// One call's timeout.
const CALL: Duration = Duration::from_secs(20);

shards_node_child!();

/// A free port of 127.0.0.1 (released for a child to take).
fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The shards whose target over `members` (all up) holds `node`.
fn target_of(conf: &TestShards, members: &[NodeId], node: NodeId) -> BTreeSet<u32> {
    let members: Vec<Member> = members.iter().map(|&m| Member::up(m, None)).collect();
    (0..conf.shards)
        .filter(|&s| {
            target_replicas(
                ShardId(s),
                &members,
                conf.replication,
                None,
                Duration::ZERO,
                conf.down_grace,
            )
            .contains(&node)
        })
        .collect()
}

/// The first counter key (`counter_key(k)`) whose shard is in `shards`.
fn key_in(conf: &TestShards, shards: &BTreeSet<u32>) -> String {
    (0..10_000)
        .map(counter_key)
        .find(|k| shards.contains(&object_shard(Counter::CLASS, k, None, &conf.config()).0))
        .expect("a key in those shards")
}

/// Calls `AddAndGet(1)` on `key` through `via` until it answers (a call whose output was
/// dropped by a leadership change answers `NoReply` and is made again, as a client would, at
/// most 3 times); returns how long that took in all.
fn add(via: &Node, key: &str) -> Duration {
    let start = Instant::now();
    let call = || {
        via.block_on(
            via.object::<Counter>(key)
                .call(|r| CounterMsg::AddAndGet(1, r), CALL),
        )
    };
    let mut tries = 1;
    while let Err(e) = call() {
        assert!(tries < 3, "{key}: {e} ({tries} tries)");
        tries += 1;
    }
    start.elapsed()
}

#[test]
fn a_replica_removed_while_cut_off_learns_it_and_its_node_keeps_routing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let conf = TestShards {
        shards: 32,
        replication: 3,
        down_grace: Duration::from_secs(2),
    };
    shard_mesh::make_cluster(dir);
    let mut children = Children::start_with(dir, 3, conf);
    children.wait_for("every shard on all three", |r| {
        r[..3].iter().all(|c| c.replicated == conf.shards)
    });
    let (a, b, c) = (0, 1, 2);
    // The fourth child's address is known before the cut, so the cut can include it.
    let d_addr = free_addr();
    let client = shard_mesh::dial_only_client(dir, "via-c", &[children.addr(c)]);
    let port = |i: usize| children.addr(i).port();
    let cut = children.cut_unbound(&[port(c)], &[port(a), port(b), d_addr.port()]);
    let cut_at = Instant::now();
    // Down past the grace: the majority removes c's replica from every shard.
    children.wait_for("the majority to remove the cut-off node's replicas", |r| {
        r[a].replicated == 0 && r[b].replicated == 0
    });
    eprintln!(
        "stale: the majority removed the cut-off node's replicas {:?} after the cut",
        cut_at.elapsed()
    );
    let d = children.add(d_addr);
    children.wait_for("the fourth node to fill every shard", |r| {
        [a, b, d].iter().all(|&i| r[i].replicated == conf.shards)
    });
    assert!(
        !children.report(c).hosted().is_empty(),
        "the cut-off node kept its (stale) replicas"
    );
    let ids: Vec<NodeId> = (0..4).map(|i| children.id(i)).collect();
    let kept = target_of(&conf, &ids, ids[c]);
    let excluded: BTreeSet<u32> = (0..conf.shards).filter(|s| !kept.contains(s)).collect();
    assert!(
        !excluded.is_empty(),
        "some shards' target leaves the cut-off node out (32 shards, 4 nodes)"
    );

    children.heal_all();
    cut.heal();
    let healed = Instant::now();
    children.wait_for(
        "the healed node's stale replicas to learn their removal",
        |r| r[c].members >= 4 && r[c].hosted().is_disjoint(&excluded),
    );
    let told = healed.elapsed();
    eprintln!(
        "stale: {} stale replicas on the healed node were gone {told:?} after healing",
        excluded.len()
    );
    // Calls through the healed node, to a shard it left for good and to one it holds
    // again (or gets back), answer promptly.
    for key in [key_in(&conf, &excluded), key_in(&conf, &kept)] {
        let took = add(&client, &key);
        eprintln!("stale: a call to {key} through the healed node took {took:?}");
        assert!(
            took < PROMPT,
            "a call to {key} through the healed node took {took:?}"
        );
    }
    // The stale replicas stay gone (the healed node is not their target).
    assert!(children.report(c).hosted().is_disjoint(&excluded));
}

#[test]
fn a_shard_without_a_leader_does_not_hold_up_the_other_keys_of_its_class() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // One replica per shard: killing its node leaves a shard with no leader anywhere.
    let conf = TestShards {
        shards: 16,
        replication: 1,
        down_grace: shard_mesh::WAIT * 10,
    };
    shard_mesh::make_cluster(dir);
    let mut children = Children::start_with(dir, 3, conf);
    let ids: Vec<NodeId> = (0..3).map(|i| children.id(i)).collect();
    let targets: Vec<BTreeSet<u32>> = ids.iter().map(|&n| target_of(&conf, &ids, n)).collect();
    children.wait_for("each shard on its one target node", |r| {
        (0..3).all(|i| r[i].leads() == targets[i] && r[i].hosted() == targets[i])
    });
    let (a, victim, gateway) = (0, 1, 2);
    assert!(!targets[victim].is_empty() && !targets[a].is_empty());
    let client = shard_mesh::dial_only_client(dir, "via-g", &[children.addr(gateway)]);
    let led_by_a = key_in(&conf, &targets[a]);
    let orphan = key_in(&conf, &targets[victim]);
    // Warm the route to a's shard (the first call also activates the counter).
    add(&client, &led_by_a);

    children.kill(victim);
    children.wait_for("the victim to be declared down", |r| {
        r[a].members == 2 && r[gateway].members == 2
    });
    // The orphan's message waits in a router (the gateway's, or a's if the gateway guessed
    // a); the next message, to a key a serves, passes it through the same routers.
    client
        .block_on(client.object::<Counter>(&orphan).send(CounterMsg::Add(1)))
        .unwrap();
    let took = add(&client, &led_by_a);
    eprintln!("parking: a call past a message parked on a leaderless shard took {took:?}");
    assert!(
        took < PROMPT,
        "a call to {led_by_a} waited {took:?} behind a message to a shard without a leader"
    );
}
