//! Durable work pushes back: an object whose commits do not complete stops taking
//! messages once `MAX_HELD_HANDLERS` handlers wait on them (`MAX_REPLICATED_IN_FLIGHT`
//! write sets through its shard when replicated), its mailbox fills, and senders wait —
//! instead of write sets and held output queueing without bound.

mod common;

use std::time::Duration;

use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(5);
/// Held handlers (activation.rs) plus a default mailbox, plus the one being handled.
const BOUND: u64 = 1024 + 1024 + 1;
/// The same for a replicated object: write sets in flight through its shard, a mailbox, one.
const REPLICATED_BOUND: u64 = 64 + 1024 + 1;

#[test]
fn an_object_whose_commits_stall_stops_taking_messages_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::node(dir.path(), 2, Duration::from_secs(30));
    node.host_local::<Counter>();
    stall_and_count(&node, BOUND);
}

/// With replicated shards (one node that creates the cluster and so serves every shard),
/// the cap is the write sets one activation may have in flight through its shard.
#[test]
fn a_replicated_object_whose_commits_stall_takes_at_most_its_in_flight_sets_and_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    cairn::net::ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let node = common::mesh_builder(dir.path(), "solo", None)
        .shards(cairn::ShardConfig {
            shards: 8,
            ..cairn::ShardConfig::default()
        })
        .start()
        .unwrap();
    node.host::<Counter>();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.object::<Counter>("stalled").owner().ok() != Some(node.id()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the shard was never served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stall_and_count(&node, REPLICATED_BOUND);
}

/// Holds the store's commits and sends increments to one counter until a send waits; the
/// messages taken must be at most `bound` and at least a mailbox's worth, and after the
/// hold none is lost.
fn stall_and_count(node: &cairn::Node, bound: u64) {
    let counter = node.object::<Counter>("stalled");
    node.block_on(counter.send(CounterMsg::Add(0))).unwrap();
    let store = node.store().clone();
    let hold = store.fault_injection().hold_commits();
    // Send until a send has waited 300 ms for room (or 10,000 went in).
    let handle = node.handle().clone();
    let sender = counter.clone();
    let sent = node.block_on(async move {
        let mut sent = 0u64;
        while sent < 10_000 {
            let send = sender.send(CounterMsg::Add(1));
            match handle.timeout(Duration::from_millis(300), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("send failed: {e:?}"),
                Err(_) => break,
            }
        }
        sent
    });
    assert!(
        sent <= bound,
        "{sent} messages taken while no commit completed (bound {bound})"
    );
    assert!(sent >= 1024, "only {sent} messages taken");
    drop(hold);
    let total = node.block_on(counter.call(CounterMsg::Get, T)).unwrap();
    assert_eq!(total, sent, "a message was lost");
}
