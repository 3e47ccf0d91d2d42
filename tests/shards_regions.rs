//! Location hints under replicated shards (`docs/location_hints.md`), on in-process nodes
//! meshed over 127.0.0.1:
//!
//! * a hint is part of the object's identity: `object_in(k, "eu")` and `object(k)` are two
//!   objects (`class@eu/k` and `class/k`), each with its own state, whichever node calls;
//! * a region listed in `ShardConfig::regions` keeps every replica of its objects on its
//!   members: here the cluster is created by the one member *outside* `eu`, so the `eu`
//!   shards start there and must move into the region; once they have, only `eu` members'
//!   stores hold the hinted object, while the unhinted one is on all three;
//! * names that would not parse back are refused with `ObjectError::BadName`: a class name
//!   with `@` (it is not hosted), a hint with `/`.

mod common;

use std::time::{Duration, Instant};

use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::ShardConfig;
use common::{Counter, CounterMsg};

/// Bound on every wait (replication, the region's shards moving in).
const WAIT: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(10);

fn shards() -> ShardConfig {
    ShardConfig {
        shards: 8,
        regions: vec!["eu".into()],
        region_shards: 2,
        ..ShardConfig::default()
    }
}

fn start(
    dir: &std::path::Path,
    name: &str,
    region: &str,
    join: Option<std::net::SocketAddr>,
) -> Node {
    let node = common::mesh_builder(dir, name, join)
        .shards(shards())
        .region(region)
        .failure_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    node.host::<Counter>();
    node
}

/// Polls `f` until it holds, for at most [`WAIT`].
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    common::poll_for(what, WAIT, || f().then_some(()))
}

fn add(node: &Node, counter: &ObjectRef<Counter>, n: u64) -> u64 {
    node.block_on(counter.call(|r| CounterMsg::AddAndGet(n, r), CALL))
        .unwrap_or_else(|e| panic!("{}: {e}", counter.name()))
}

/// The counter's total as stored on `node`'s disk (its replica), if it holds one.
fn stored(node: &Node, name: &str) -> Option<u64> {
    node.store().keyspace(name).unwrap().get("total").unwrap()
}

#[test]
fn a_hinted_key_is_its_own_object_and_its_regions_replicas_stay_in_the_region() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.join("cluster"))
        .unwrap();
    // The creator is the member outside the region: the region's shards begin on it.
    let us = start(dir, "rg-us", "us", None);
    let seed = us.mesh().unwrap().local_addr();
    let eu1 = start(dir, "rg-eu1", "eu", Some(seed));
    let eu2 = start(dir, "rg-eu2", "eu", Some(seed));
    let nodes = [&us, &eu1, &eu2];

    // Same key, hinted and not: two objects, whichever node calls.
    let plain = us.object::<Counter>("k");
    let hinted = us.object_in::<Counter>("k", "eu");
    assert_eq!(plain.name(), "test-counter/k");
    assert_eq!(hinted.name(), "test-counter@eu/k");
    assert_eq!(add(&us, &plain, 1), 1);
    assert_eq!(add(&us, &hinted, 5), 5);
    assert_eq!(add(&eu1, &eu1.object::<Counter>("k"), 1), 2);
    assert_eq!(add(&eu2, &eu2.object_in::<Counter>("k", "eu"), 5), 10);
    // A hint to a region without shards of its own is a third object (in a global shard).
    assert_eq!(add(&eu1, &eu1.object_in::<Counter>("k", "us"), 100), 100);

    // The region's shard moves in: both `eu` members hold the hinted object, the `us`
    // member does not (its replica was removed), while the unhinted object has a replica
    // on every member (replication factor 3).
    wait_until(
        "the eu object's replicas to be exactly the eu members",
        || {
            stored(&eu1, hinted.name()) == Some(10)
                && stored(&eu2, hinted.name()) == Some(10)
                && stored(&us, hinted.name()).is_none()
        },
    );
    wait_until("the unhinted object on every member", || {
        nodes.iter().all(|n| stored(n, plain.name()) == Some(2))
    });
    // It runs in the region now, and goes on from its value from any caller.
    let owner = us
        .block_on(async {
            let deadline = Instant::now() + WAIT;
            loop {
                match hinted.owner() {
                    Ok(o) if o != us.id() => return Ok(o),
                    _ if Instant::now() > deadline => return Err("no leader in eu"),
                    _ => us.handle().sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .unwrap();
    assert!(
        owner == eu1.id() || owner == eu2.id(),
        "eu object on {owner}"
    );
    assert_eq!(add(&us, &hinted, 1), 11);
    assert_eq!(
        stored(&us, hinted.name()),
        None,
        "no copy outside the region"
    );
    assert_eq!(add(&eu2, &plain, 1), 3);
}

/// A class whose name holds `@` would make `class@region/key` ambiguous.
struct AtClass;

impl Object for AtClass {
    const CLASS: &'static str = "bad@class";
    type Msg = CounterMsg;

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(AtClass)
    }

    async fn handle(
        &mut self,
        _msg: CounterMsg,
        _ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        Ok(())
    }
}

#[test]
fn names_that_would_not_parse_back_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let node = common::node(tmp.path(), 1, Duration::from_secs(60));
    node.host_local::<AtClass>();
    node.host_local::<Counter>();
    let err = node
        .block_on(node.object::<AtClass>("k").call(CounterMsg::Get, CALL))
        .unwrap_err();
    assert!(
        matches!(&err, ObjectError::BadName { name, .. } if name == "bad@class/k"),
        "{err}"
    );
    assert!(err.to_string().contains("'@'"), "{err}");
    let err = node
        .block_on(
            node.object_in::<Counter>("k", "eu/west")
                .call(CounterMsg::Get, CALL),
        )
        .unwrap_err();
    assert!(matches!(err, ObjectError::BadName { .. }), "{err}");
    // A well-formed hint on a node without a mesh is just another object.
    let hinted = node.object_in::<Counter>("k", "eu");
    assert_eq!(
        node.block_on(hinted.call(|r| CounterMsg::AddAndGet(2, r), CALL))
            .unwrap(),
        2
    );
    assert_eq!(
        node.block_on(node.object::<Counter>("k").call(CounterMsg::Get, CALL))
            .unwrap(),
        0
    );
}
