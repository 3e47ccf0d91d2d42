//! Memory stays bounded at 10× overload (`common/overload.rs`): a local object whose
//! commits stall, its 64 senders on its own node.

mod common;

use std::time::Duration;

use common::overload::{overload, Blob, BlobMsg, Bounds, PAYLOAD};

/// Held handlers (activation.rs) plus a default mailbox, plus the one being handled.
const BOUND: u64 = 1024 + 1024 + 1;
/// The stated bound on peak resident growth. Unbounded queueing would take
/// 10 × `BOUND` × 16 KiB = 320 MiB; the bounded path keeps at most `BOUND × PAYLOAD` = 32 MiB
/// (measured: +21 MiB peak).
const RSS_BOUND: u64 = 64 << 20;

#[test]
fn ten_times_overload_is_refused_with_backpressure_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::node(dir.path(), 2, Duration::from_secs(60));
    node.host_local::<Blob>();
    let blob = node.object::<Blob>("slow");
    node.block_on(blob.send(BlobMsg::Put(vec![0; PAYLOAD])))
        .unwrap();
    let bounds = Bounds {
        capacity: BOUND,
        taken: BOUND,
        rss: RSS_BOUND,
        exact: true,
        read_back: true,
        may_lose: 0,
    };
    overload(&node, &blob, &[&node], bounds);
}
