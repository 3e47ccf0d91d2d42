//! A supervision tree: a top supervisor with a worker pool under a dynamic supervisor and a
//! rest_for_one pipeline. Children are crashed and killed; the tree restarts them and the
//! example prints what happened.
//!
//! `cargo run --release --example supervision`
//!
//! ```text
//! top (one_for_one)
//! ├── pool (dynamic supervisor) ── worker-0 .. worker-3
//! └── pipeline (rest_for_one)   ── source ─ transform ─ sink
//! ```

use std::time::Duration;

use cairn::prelude::*;

/// A stage that logs its lifecycle.
struct Stage {
    name: String,
}

enum StageMsg {
    Crash,
    Whoami(Reply<String>),
}

impl Actor for Stage {
    type Msg = StageMsg;

    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        println!("  start   {:<10} as {}", self.name, ctx.pid());
        Ok(())
    }

    async fn handle(&mut self, msg: StageMsg, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        match msg {
            StageMsg::Crash => Err(format!("{} was told to crash", self.name).into()),
            StageMsg::Whoami(reply) => {
                let _ = reply.send(format!("{} at {}", self.name, ctx.pid()));
                Ok(())
            }
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _ctx: &mut ActorCtx<Self>) {
        println!("  stop    {:<10} ({reason})", self.name);
    }
}

fn stage(name: &str) -> ChildSpec {
    let owned = name.to_owned();
    ChildSpec::worker(name, move || Stage {
        name: owned.clone(),
    })
    .named(name)
}

/// Waits until `name` is registered to a process other than `old` (its restarted successor).
fn successor(node: &Node, name: &str, old: Pid) -> Pid {
    loop {
        match node.whereis(name) {
            Some(pid) if pid != old => return pid,
            _ => std::thread::yield_now(),
        }
    }
}

fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let node = Node::builder().start().expect("start node");
    let timeout = Duration::from_secs(1);

    let pipeline = SupervisorSpec::new(Strategy::RestForOne)
        .intensity(5, Duration::from_secs(5))
        .child(stage("source"))
        .child(stage("transform"))
        .child(stage("sink"));
    let top = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(5))
        .child(
            ChildSpec::supervisor("pool", DynamicSupervisor::spec().max_children(16)).named("pool"),
        )
        .child(ChildSpec::supervisor("pipeline", pipeline));

    println!("starting the tree");
    let top = node
        .block_on(Supervisor::start(node.handle(), top))
        .expect("tree starts");
    let pool = SupervisorRef::from_pid(node.handle(), node.whereis("pool").unwrap()).unwrap();
    let mut workers = Vec::new();
    for i in 0..4 {
        let pid = node
            .block_on(pool.start_child(stage(&format!("worker-{i}"))))
            .unwrap();
        workers.push(pid);
    }

    println!("\ncrashing worker-2 (one_for_one inside the pool: only it restarts)");
    node.try_send(workers[2], StageMsg::Crash).unwrap();
    let worker2 = successor(&node, "worker-2", workers[2]);
    let who = node.block_on(node.call(worker2, StageMsg::Whoami, timeout));
    println!("  worker-2 answers again: {}", who.unwrap());

    println!("\ncrashing transform (rest_for_one: transform and sink restart, source stays)");
    let sink = node.whereis("sink").unwrap();
    node.try_send(node.whereis("transform").unwrap(), StageMsg::Crash)
        .unwrap();
    let sink = successor(&node, "sink", sink);
    let who = node.block_on(node.call(sink, StageMsg::Whoami, timeout));
    println!("  sink answers again: {}", who.unwrap());

    println!("\nkilling the pool supervisor (its workers die with it; top restarts an empty pool)");
    let old_pool = pool.pid();
    let exit = node.handle().wait_exit(old_pool);
    node.handle().kill(old_pool);
    println!("  pool exited: {}", node.block_on(exit));
    let pool = SupervisorRef::from_pid(node.handle(), successor(&node, "pool", old_pool)).unwrap();
    let counts = node.block_on(pool.count_children()).unwrap();
    println!("  new pool {} has {} children", pool.pid(), counts.active);

    println!("\nthe tree now:");
    for child in node.block_on(top.which_children()).unwrap() {
        println!("  {:<10} {:?}", child.id, child.pid);
    }
    println!("\nshutting down (children stop in reverse start order)");
    node.shutdown();
}
