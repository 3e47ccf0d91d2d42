//! What a caller may assume when an object call times out (README, "Durable objects",
//! "Timeouts"): `Err(Timeout)` after the timeout and not before, and nothing about the
//! message — it may still be handled, and its writes still commit. The late answer goes
//! nowhere: it never reaches a later call.
//!
//! The windows are forced, not hoped for: storage's commit hold keeps the write in flight
//! while the call times out, and a handler waiting on a gate keeps the object busy.

use std::sync::mpsc::{channel, Sender};
use std::time::Instant;

use cairn::prelude::*;
use cairn::scheduler::ReplyReceiver;

const T: Duration = Duration::from_secs(10);
/// The short timeout of the calls that are meant to time out.
const SHORT: Duration = Duration::from_millis(200);

enum Msg {
    AddAndGet(u64, Reply<u64>),
    Get(Reply<u64>),
    /// Says it started, waits until the gate resolves (keeps the object busy), then answers.
    Busy(Sender<()>, ReplyReceiver<()>, Reply<()>),
}

struct Counter {
    total: u64,
}

impl Object for Counter {
    const CLASS: &'static str = "timeout-counter";
    type Msg = Msg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Counter {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: Msg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            Msg::AddAndGet(n, reply) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
                let _ = reply.send(self.total);
            }
            Msg::Get(reply) => {
                let _ = reply.send(self.total);
            }
            Msg::Busy(started, gate, reply) => {
                let _ = started.send(());
                let _ = gate.await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

fn node(dir: &std::path::Path) -> Node {
    let node = Node::builder().workers(2).data_dir(dir).start().unwrap();
    node.host_local::<Counter>();
    node
}

fn stored_total(node: &Node, key: &str) -> Option<u64> {
    node.keyspace(&format!("timeout-counter/{key}"))
        .unwrap()
        .get("total")
        .unwrap()
}

/// Times a call that must time out.
fn timed_out_call(node: &Node, o: &ObjectRef<Counter>, n: u64) {
    let started = Instant::now();
    let answer = node.block_on(o.call(|r| Msg::AddAndGet(n, r), SHORT));
    let waited = started.elapsed();
    assert!(
        matches!(answer, Err(ObjectError::Call(CallError::Timeout))),
        "{answer:?}"
    );
    assert!(waited >= SHORT, "timed out early, after {waited:?}");
}

#[test]
fn a_call_that_times_out_while_its_write_commits_gets_timeout_and_the_write_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let o = node.object::<Counter>("committing");
    assert_eq!(
        node.block_on(o.call(|r| Msg::AddAndGet(1, r), T)).unwrap(),
        1
    );

    let hold = node.store().fault_injection().hold_commits();
    timed_out_call(&node, &o, 10);
    drop(hold);
    // A timeout is not a rollback: the write commits.
    node.store().sync().unwrap();
    assert_eq!(stored_total(&node, "committing"), Some(11));
    assert_eq!(node.block_on(o.call(Msg::Get, T)).unwrap(), 11);
}

#[test]
fn the_answer_of_a_timed_out_call_never_reaches_a_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let o = node.object::<Counter>("late");
    let hold = node.store().fault_injection().hold_commits();
    timed_out_call(&node, &o, 1);
    // A second call is handled while the first one's answer is still held: released in
    // order, each answer goes to its own caller only.
    let second = {
        let o = o.clone();
        let (tx, rx) = channel();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let _ = tx.send(o.call(|r| Msg::AddAndGet(100, r), T).await);
        });
        rx
    };
    drop(hold);
    assert_eq!(second.recv_timeout(T).unwrap().unwrap(), 101);
    assert_eq!(node.block_on(o.call(Msg::Get, T)).unwrap(), 101);
}

#[test]
fn a_call_that_times_out_while_queued_is_still_handled_later() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let o = node.object::<Counter>("queued");
    let (release, gate) = Reply::<()>::pair();
    // The object is busy (waiting on the gate) when the call arrives.
    let (started_tx, started) = channel();
    let busy = {
        let o = o.clone();
        let (tx, rx) = channel();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let _ = tx.send(o.call(|r| Msg::Busy(started_tx, gate, r), T).await);
        });
        rx
    };
    started.recv_timeout(T).unwrap();
    timed_out_call(&node, &o, 5);
    assert_eq!(stored_total(&node, "queued"), None, "handled while busy");
    release.send(()).unwrap();
    busy.recv_timeout(T).unwrap().unwrap();
    // The message that timed out was not withdrawn: it is handled after the busy one.
    assert_eq!(node.block_on(o.call(Msg::Get, T)).unwrap(), 5);
    assert_eq!(stored_total(&node, "queued"), Some(5));
}
