//! Durable counters: each key is its own object with its own storage. Run it twice: the
//! totals carry over, because every acknowledged increment is on disk (LMDB under ./data).
//! The `Counter` class is one of `cairn-node`'s demo classes (`src/bin/cairn-node/demo/`).
//!
//! `cargo run --release --example counter`

use std::time::Duration;

use cairn::prelude::*;
#[path = "../src/bin/cairn-node/demo/counter.rs"]
mod counter;
use counter::{Counter, CounterMsg};

fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let node = Node::builder().start().expect("start node");
    node.host::<Counter>();
    for (key, n) in [("alice", 1), ("bob", 10), ("carol", 100)] {
        let counter = node.object::<Counter>(key);
        let total = node
            .block_on(counter.call(|r| CounterMsg::AddAndGet(n, r), Duration::from_secs(5)))
            .expect("counter answers");
        println!("{key:>6}: +{n:<3} -> {total} (durable)");
    }
    println!("run me again: the totals continue from here");
}
