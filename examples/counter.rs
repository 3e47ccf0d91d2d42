//! Durable counters: each key is its own object with its own storage. Run it twice: the
//! totals carry over, because every acknowledged increment is on disk (LMDB under ./data).
//!
//! `cargo run --release --example counter`

use std::time::Duration;

use cairn::prelude::*;

enum CounterMsg {
    Add(u64, Reply<u64>),
}

struct Counter {
    total: u64,
}

impl Object for Counter {
    const CLASS: &'static str = "counter";
    type Msg = CounterMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Counter {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n, reply) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
                // Held by the output gate until the write above is durable.
                let _ = reply.send(self.total);
            }
        }
        Ok(())
    }
}

fn main() {
    cairn::init_logging();
    let node = Node::builder().start().expect("start node");
    node.register::<Counter>();
    for (key, n) in [("alice", 1), ("bob", 10), ("carol", 100)] {
        let counter = node.object::<Counter>(key);
        let total = node
            .block_on(counter.call(|r| CounterMsg::Add(n, r), Duration::from_secs(5)))
            .expect("counter answers");
        println!("{key:>6}: +{n:<3} -> {total} (durable)");
    }
    println!("run me again: the totals continue from here");
}
