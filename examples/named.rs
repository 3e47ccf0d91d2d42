//! The demo: a named counter process, reached by name with casts and calls, a crash that a
//! monitor observes, the name freed and taken again — and a durable object (LMDB under
//! `./data`) that counts how many times the demo has run.
//!
//! `cargo run --release --example named`

use std::time::Duration;

use cairn::prelude::*;

/// A durable object: its state survives restarts of the node.
struct Visits {
    runs: u64,
}

impl Object for Visits {
    const CLASS: &'static str = "visits";
    type Msg = Reply<u64>;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Visits {
            runs: ctx.storage().get("runs")?.unwrap_or(0),
        })
    }

    async fn handle(
        &mut self,
        reply: Reply<u64>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        self.runs += 1;
        ctx.storage().put("runs", &self.runs)?;
        let _ = reply.send(self.runs); // leaves only once the write is durable
        Ok(())
    }
}

enum Counter {
    Add(u64),
    Get(Reply<u64>),
    Crash,
}

fn spawn_counter(node: &Node) -> Pid {
    node.spawn_named("counter", |mut ctx: Ctx<Counter>| async move {
        let mut total = 0u64;
        while let Some(msg) = ctx.recv().await {
            match msg {
                Message::User(Counter::Add(n)) => total += n,
                Message::User(Counter::Get(reply)) => {
                    let _ = reply.send(total);
                }
                Message::User(Counter::Crash) => panic!("asked to crash at total {total}"),
                Message::Signal(_) => {}
            }
        }
    })
    .expect("the name is free")
    .pid()
}

fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let node = Node::builder().start().expect("start node");
    let timeout = Duration::from_secs(1);

    let first = spawn_counter(&node);
    println!("spawned counter as {first}");
    for n in 1..=10 {
        let pid = node.whereis("counter").expect("registered");
        node.try_send(pid, Counter::Add(n))
            .expect("mailbox has room");
    }
    let pid = node.whereis("counter").expect("registered");
    let total = node
        .block_on(node.call(pid, Counter::Get, timeout))
        .expect("answer");
    println!("counter {pid} holds {total} (1 + 2 + .. + 10)");
    assert_eq!(total, 55);

    // The crash below is intentional: keep its panic out of the demo's output (the runtime
    // still logs it as a crash report).
    std::panic::set_hook(Box::new(|_| {}));
    let exit = node.handle().wait_exit(pid);
    node.try_send(pid, Counter::Crash)
        .expect("mailbox has room");
    let reason = node.block_on(exit);
    println!("counter {pid} exited: {reason}");
    assert_eq!(node.whereis("counter"), None, "the name is freed on exit");

    let second = spawn_counter(&node);
    println!("spawned a new counter as {second}; the old pid is dead:");
    match node.try_send(first, Counter::Add(1)) {
        Err(SendError::NoProc(_)) => println!("  send to {first} -> NoProc (message returned)"),
        other => panic!("unexpected {other:?}"),
    }
    let total = node
        .block_on(node.call(second, Counter::Get, timeout))
        .expect("answer");
    println!("new counter starts at {total}");

    node.host::<Visits>();
    let visits = node.object::<Visits>("demo");
    let runs = node
        .block_on(visits.call(|r| r, timeout))
        .expect("durable answer");
    println!("durable object visits/demo: this demo has run {runs} time(s) on this data dir");
    node.shutdown();
    println!("node stopped cleanly");
}
