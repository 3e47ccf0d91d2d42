//! Object placement between two in-process nodes on 127.0.0.1 with replicated shards: a
//! counter keeps its value when a node joins (its state lives in its shard, not on one
//! disk), and calls from either node reach the one activation.

mod common;

use std::time::Duration;

use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::ShardConfig;
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(20);
const KEYS: usize = 40;

fn key(i: usize) -> String {
    format!("k{i}")
}

/// Few shards: every node runs every replica's ticks on a shared CI machine.
fn shards() -> ShardConfig {
    ShardConfig {
        shards: 8,
        ..ShardConfig::default()
    }
}

fn start(dir: &std::path::Path, name: &str, join: Option<std::net::SocketAddr>) -> Node {
    let node = common::mesh_builder(dir, name, join)
        .shards(shards())
        .start()
        .unwrap();
    node.host::<Counter>();
    node
}

fn add(node: &Node, key: &str) -> u64 {
    let counter = node.object::<Counter>(key);
    node.block_on(counter.call(|r| CounterMsg::AddAndGet(1, r), T))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[test]
fn counters_keep_their_values_when_a_node_joins_and_calls_from_either_node_reach_them() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let a = start(dir.path(), "a", None);
    let a_mesh = a.mesh().unwrap().clone();

    // Alone, `a` leads every shard and runs every counter.
    for i in 0..KEYS {
        assert_eq!(add(&a, &key(i)), 1);
    }
    assert_eq!(a.status().objects.get(Counter::CLASS), Some(&KEYS));

    let b = start(dir.path(), "b", Some(a_mesh.local_addr()));
    let b_id = b.mesh().unwrap().node();
    common::wait_knows(&a, b_id, T);
    common::wait_knows(&b, a_mesh.node(), T);

    // The join moves no counter's state away from it: each continues from 1, whichever
    // node the call comes from, and both nodes route to the same owner.
    for i in 0..KEYS {
        let via = if i % 2 == 0 { &a } else { &b };
        assert_eq!(add(via, &key(i)), 2, "{}", key(i));
        assert_eq!(
            a.object::<Counter>(&key(i)).owner().unwrap(),
            b.object::<Counter>(&key(i)).owner().unwrap()
        );
    }
    // One activation per key across the two nodes.
    let count = |n: &Node| n.status().objects.get(Counter::CLASS).copied().unwrap_or(0);
    assert_eq!(count(&a) + count(&b), KEYS);

    // try_send from the node that does not run the object, then a call behind it on the
    // same connection sees its effect.
    let (remote, via) = if count(&a) == KEYS {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let remote_key = (0..KEYS)
        .map(key)
        .find(|k| remote.object::<Counter>(k).pid().is_some())
        .unwrap();
    via.object::<Counter>(&remote_key)
        .try_send(CounterMsg::Add(10))
        .unwrap();
    assert_eq!(add(via, &remote_key), 13);
}

#[test]
fn a_local_node_and_a_local_class_never_place() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .workers(2)
        .data_dir(dir.path())
        .start()
        .unwrap();
    node.host::<Counter>();
    assert!(node.mesh().is_none());
    let counter = node.object::<Counter>("x");
    assert_eq!(counter.owner().unwrap(), node.id());
    assert_eq!(add(&node, "x"), 1);
    // A region hint cannot be honoured without a mesh; locally it is moot.
    assert_eq!(
        node.object_in::<Counter>("x", "eu").owner().unwrap(),
        node.id()
    );
}

#[test]
fn a_region_hint_without_a_node_in_that_region_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let node = Node::builder()
        .name("eu1")
        .region("eu")
        .workers(2)
        .data_dir(dir.path().join("eu1"))
        .cluster(dir.path().join("cluster"))
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    node.host::<Counter>();
    let here = node.object_in::<Counter>("x", "eu");
    // The first call waits for the node to lead the key's shard (a fresh cluster elects).
    assert_eq!(node.block_on(here.call(CounterMsg::Get, T)).unwrap(), 0);
    assert_eq!(here.owner().unwrap(), node.id());
    let nowhere = node.object_in::<Counter>("x", "us");
    let err = node.block_on(nowhere.call(CounterMsg::Get, T)).unwrap_err();
    assert!(
        matches!(err, ObjectError::Placement(PlacementError::NoNodeInRegion(ref r)) if r == "us"),
        "{err}"
    );
}
