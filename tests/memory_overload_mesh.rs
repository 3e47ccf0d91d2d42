//! Memory stays bounded at 10× overload from a peer (`common/overload.rs`): a replicated
//! object (one node that creates the shard cluster, so its shard is served there) whose
//! commits stall, offered ten times what its node can hold by 64 senders on a client node
//! across the mesh. What can be in flight: the object's write sets through its shard, its
//! mailbox, its class router's mailbox, and the connection's receive window at the owner
//! (the client's sends wait for room on the lane once that is full).

mod common;

use std::time::{Duration, Instant};

use cairn::net::ClusterCa;
use cairn::prelude::*;
use common::overload::{overload, Blob, BlobMsg, Bounds, PAYLOAD};

/// What the owner's object can hold: write sets in flight (64), its mailbox (1,024), and
/// the one being handled; 10× this is offered.
const CAPACITY: u64 = 64 + 1024 + 1;
/// Sends that may complete while no commit does: besides the object, the owner's class
/// router (its mailbox, and messages it parks while the stalled shard has no serving
/// leader) and both ends of the connection (lane buffers, windows) hold some. Measured:
/// 5,482 of 10,880 offered; the stated bound is half the offer, so that the test shows the
/// senders pushed back rather than the exact depth of each queue.
const TAKEN: u64 = 10 * CAPACITY / 2;
/// Unbounded queueing would take 10 × `CAPACITY` × 16 KiB ≈ 170 MiB per node in flight;
/// measured: +42 MiB peak for both nodes of this process.
const RSS_BOUND: u64 = 96 << 20;

/// Measured (debug build, load 1–5): taken 2,880–5,482 of 10,880 offered, the rest pushed
/// back; peak resident growth +29 to +42 MiB for both nodes against 170 MiB offered. Ignored
/// for now: after the stall the object spins (see below), so even without the read-back the
/// nodes never finish shutting down and the test does not end.
#[test]
#[ignore = "the nodes do not shut down after the stall: see after_ten_times_overload_from_a_peer_every_taken_message_is_stored"]
fn ten_times_overload_from_a_peer_is_pushed_back_and_memory_stays_bounded() {
    overload_from_a_client(false);
}

/// The same, then the stall released and the object's total read back. Found while writing
/// the test above, two defects:
/// * The stall blocks the shard driver's round, its leader lease lapses, and the owner's
///   router parks the messages of a shard without a serving leader; past `PARK_MAX` (1,024)
///   it failed them with only a warning, so one-way sends the client was told were sent were
///   lost (1,182 of 2,376 taken stored in one run). Changed: a full router now takes no
///   more envelopes until a lane drains or gives up (`parking`), so senders wait instead.
/// * In most runs, after the release the object does not answer a read within 240 s, one
///   worker spinning at 100 % CPU in `activation::next_event` (seen again after the parking
///   change, so that change is not yet verified here). Not diagnosed.
///
/// Kept as the reproducer until the second is fixed:
/// `cargo test --test memory_overload_mesh -- --ignored --nocapture after_ten`.
#[test]
#[ignore = "reproduces a stall: a replicated object does not recover from a long commit stall under overload (see the doc comment)"]
fn after_ten_times_overload_from_a_peer_every_taken_message_is_stored() {
    overload_from_a_client(true);
}

fn overload_from_a_client(read_back: bool) {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let owner = common::mesh_builder(dir.path(), "owner", None)
        .shards(cairn::ShardConfig {
            shards: 8,
            ..cairn::ShardConfig::default()
        })
        .start()
        .unwrap();
    owner.host::<Blob>();
    let client = Node::builder()
        .name("senders.client")
        .workers(2)
        .client()
        .data_dir(dir.path().join("client-data"))
        .cluster(dir.path().join("cluster"))
        .join([owner.mesh().unwrap().local_addr()])
        .start()
        .unwrap();
    client.host::<Blob>();
    let blob = client.object::<Blob>("slow");
    let deadline = Instant::now() + Duration::from_secs(60);
    while owner.object::<Blob>("slow").owner().ok() != Some(owner.id()) {
        assert!(Instant::now() < deadline, "the shard was never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Err(e) = client.block_on(blob.send(BlobMsg::Put(vec![0; PAYLOAD]))) {
        assert!(
            Instant::now() < deadline,
            "the object never became reachable: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Once the first message is stored, only `overload`'s count.
    let stored = client
        .block_on(blob.call(BlobMsg::Total, Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        stored, PAYLOAD as u64,
        "the first message was sent more than once"
    );
    let store = owner.store().clone();
    let bounds = Bounds {
        capacity: CAPACITY,
        taken: TAKEN,
        rss: RSS_BOUND,
        exact: false,
        read_back,
    };
    overload(&client, &blob, &[&store], bounds);
}
