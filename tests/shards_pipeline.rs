//! Pipelined commits of one replicated object (one in-process mesh node that creates the
//! shard cluster, so every shard is served here):
//!
//! * **Order.** Many messages queued to one object are handled while earlier write sets are
//!   still in flight through the shard: each handler reads its own object's writes that are
//!   not yet committed (read-your-writes), and every output (a message to a collector, held
//!   by the output gate) is released in commit order.
//! * **A failure mid-pipeline.** One write set in the middle is refused by the shard (larger
//!   than a Raft entry may be). Its output and the output of every handler that ran on top of
//!   it are dropped, never released; the object re-activates from what is durable and goes
//!   on: the collector sees one gap-free count, ending at the durable value.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::ShardConfig;
use serde::{Deserialize, Serialize};

/// Bound on every wait (the cluster's first elections, the collector draining).
const WAIT: Duration = Duration::from_secs(60);
/// One call's timeout.
const CALL: Duration = Duration::from_secs(30);
/// Larger than a Raft entry may be (`cairn_shard::DEFAULT_MAX_ENTRY_BYTES`, 1 MiB).
const TOO_LARGE: usize = 2 << 20;

/// One test at a time: the statics below are shared.
static SERIAL: Mutex<()> = Mutex::new(());
/// What the collector received, in order.
static SEEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Where `Add` reports its count (set by each test before it sends).
static COLLECTOR: Mutex<Option<ActorRef<u64>>> = Mutex::new(None);
/// `Add` handlers that ran while earlier write sets of the object were in flight.
static OVERLAPPED: AtomicUsize = AtomicUsize::new(0);
/// `Add` handlers that ran (whether or not their output was released).
static ADDS: AtomicUsize = AtomicUsize::new(0);
/// `Add` handlers whose storage read disagreed with the count in memory.
static MISREAD: AtomicUsize = AtomicUsize::new(0);

#[derive(Serialize, Deserialize)]
enum PipeMsg {
    /// Counts one up and tells the collector the new count; `big` also writes a value
    /// larger than the shard accepts, so this write set is refused.
    Add { big: bool },
    /// Answers the count.
    Get(Reply<u64>),
}

struct Pipelined {
    n: u64,
}

impl Object for Pipelined {
    const CLASS: &'static str = "test-pipelined";
    type Msg = PipeMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Pipelined {
            n: ctx.storage().get("n")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: PipeMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            PipeMsg::Add { big } => {
                ADDS.fetch_add(1, Ordering::SeqCst);
                if ctx.storage().has_in_flight() {
                    OVERLAPPED.fetch_add(1, Ordering::SeqCst);
                }
                // Read back from storage, not only from memory: the write of the previous
                // handler may still be in flight, and must be seen.
                let stored: u64 = ctx.storage().get("n")?.unwrap_or(0);
                if stored != self.n {
                    MISREAD.fetch_add(1, Ordering::SeqCst);
                }
                self.n += 1;
                ctx.storage().put("n", &self.n)?;
                if big {
                    ctx.storage().put("blob", &"x".repeat(TOO_LARGE))?;
                }
                let collector = COLLECTOR.lock().unwrap().clone().expect("collector set");
                let _ = collector.try_send(self.n);
            }
            PipeMsg::Get(reply) => {
                let _ = reply.send(ctx.storage().get("n")?.unwrap_or(0));
            }
        }
        Ok(())
    }
}

/// One node creating the shard cluster, hosting [`Pipelined`]; a collector installed; the
/// statics reset. Returns once the node serves `key`'s shard.
fn start(dir: &std::path::Path, key: &str) -> Node {
    ClusterCa::generate()
        .unwrap()
        .save(&dir.join("cluster"))
        .unwrap();
    let node = common::mesh_builder(dir, "solo", None)
        .shards(ShardConfig {
            shards: 8,
            ..ShardConfig::default()
        })
        .start()
        .unwrap();
    node.host::<Pipelined>();
    SEEN.lock().unwrap().clear();
    OVERLAPPED.store(0, Ordering::SeqCst);
    ADDS.store(0, Ordering::SeqCst);
    MISREAD.store(0, Ordering::SeqCst);
    let collector = node.spawn(|mut ctx: Ctx<u64>| async move {
        while let Some(m) = ctx.recv().await {
            if let Message::User(v) = m {
                SEEN.lock().unwrap().push(v);
            }
        }
    });
    *COLLECTOR.lock().unwrap() = Some(collector);
    wait_for("the node to serve the object's shard", || {
        node.object::<Pipelined>(key).owner().ok() == Some(node.id())
    });
    node
}

/// Polls `done` until it holds, for at most [`WAIT`].
fn wait_for(what: &str, done: impl Fn() -> bool) {
    common::poll_for(what, WAIT, || done().then_some(()))
}

/// Queues `msgs` to `key` in order (without waiting for any to be handled), then answers
/// the count read behind them and what the collector got once it holds that many.
fn run(node: &Node, key: &str, msgs: impl IntoIterator<Item = PipeMsg>) -> (u64, Vec<u64>) {
    let obj = node.object::<Pipelined>(key);
    for m in msgs {
        node.block_on(obj.send(m))
            .unwrap_or_else(|e| panic!("send: {e}"));
    }
    // A Get handled on top of a refused write set is dropped too (`NoReply`): ask again.
    let deadline = Instant::now() + WAIT;
    let count = loop {
        match node.block_on(obj.call(PipeMsg::Get, CALL)) {
            Ok(count) => break count,
            Err(e) => assert!(Instant::now() < deadline, "get: {e}"),
        }
    };
    // The Get's answer left after every earlier output; the collector may still be
    // taking them from its mailbox.
    wait_for("the collector to take every released count", || {
        SEEN.lock().unwrap().last() == Some(&count)
    });
    (count, SEEN.lock().unwrap().clone())
}

#[test]
fn writes_in_flight_are_read_back_and_outputs_leave_in_commit_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "ordered");
    const N: u64 = 300;
    let (count, seen) = run(
        &node,
        "ordered",
        (0..N).map(|_| PipeMsg::Add { big: false }),
    );
    assert_eq!(count, N, "every write committed");
    assert_eq!(seen, (1..=N).collect::<Vec<_>>(), "outputs in commit order");
    let overlapped = OVERLAPPED.load(Ordering::SeqCst);
    println!("{overlapped} of {N} handlers ran with earlier write sets in flight");
    assert!(
        overlapped > 0,
        "no handler ran while a write set was in flight: commits are not pipelined"
    );
    assert_eq!(
        MISREAD.load(Ordering::SeqCst),
        0,
        "a handler did not read its object's writes still in flight"
    );
    node.shutdown();
}

#[test]
fn a_refused_write_set_drops_its_output_and_everything_after_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "refused");
    const BEFORE: u64 = 20;
    const AFTER: u64 = 60;
    let msgs = (0..BEFORE)
        .map(|_| PipeMsg::Add { big: false })
        .chain([PipeMsg::Add { big: true }])
        .chain((0..AFTER).map(|_| PipeMsg::Add { big: false }));
    let (count, seen) = run(&node, "refused", msgs);
    let ran = ADDS.load(Ordering::SeqCst) as u64;
    println!(
        "count {count}; {ran} Add handlers ran; {} outputs released",
        seen.len()
    );
    // The refused set and every set built on it were not committed (the count lost them),
    // and none of their outputs left: the collector saw one gap-free count.
    assert_eq!(
        seen,
        (1..=count).collect::<Vec<_>>(),
        "released in commit order, no gap"
    );
    assert!(
        count >= BEFORE,
        "the writes before the refused one are durable"
    );
    assert!(
        count < BEFORE + 1 + AFTER,
        "the refused write set (and what was built on it) did not commit"
    );
    // Each message was handled once: re-activated, the object handles the messages queued
    // behind the failure (none is lost; only outputs of handlers that ran on top of the
    // refused write set are dropped).
    assert_eq!(ran, BEFORE + 1 + AFTER, "every message was handled once");
    assert!(
        ran - count >= 2,
        "the refused set's output and at least one handler's output built on it were dropped ({ran} ran, {count} released)"
    );
    // What is durable is what a fresh activation reads: the released count.
    let durable = node
        .block_on(node.object::<Pipelined>("refused").call(PipeMsg::Get, CALL))
        .unwrap();
    assert_eq!(durable, count);
    node.shutdown();
}
