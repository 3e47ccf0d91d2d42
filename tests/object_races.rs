//! Races in the object layer found by review: object-to-object calls under the output gate,
//! held messages to an object evicted before release, eviction vs. try_send on one worker,
//! and queued messages across a failed commit.

mod common;

use std::time::Duration;

use cairn::prelude::*;
use cairn::scheduler::ReplyReceiver;
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(5);

enum AMsg {
    /// Calls the counter "b" from inside the handler and answers with what it got.
    RelayGet(Reply<Result<u64, String>>),
    /// Writes, then sends `Add(1)` to the counter "b" (held by the gate until the write is durable).
    WriteAndForward,
}

struct A;

impl Object for A {
    const CLASS: &'static str = "review-a";
    type Msg = AMsg;

    async fn activate(_: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(A)
    }

    async fn handle(&mut self, msg: AMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            AMsg::RelayGet(r) => {
                let b = ctx.object::<Counter>("b");
                let got = b
                    .call(CounterMsg::Get, Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string());
                let _ = r.send(got);
            }
            AMsg::WriteAndForward => {
                ctx.storage().put("x", &1u64)?;
                ctx.object::<Counter>("b")
                    .send(CounterMsg::Add(1))
                    .await
                    .unwrap();
            }
        }
        Ok(())
    }
}

fn node(dir: &std::path::Path, workers: usize, idle: Duration) -> Node {
    let node = common::node(dir, workers, idle);
    node.host_local::<A>();
    node.host_local::<Counter>();
    node.host_local::<Slow>();
    node
}

/// `ObjectRef::call` from inside another object's handler: the request goes through
/// `ActorRef::send`, which the active gate holds until the handler ends — but the handler is
/// waiting for the answer. The call can only time out.
#[test]
fn an_object_can_call_another_object_from_its_handler() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 2, Duration::from_secs(30));
    let a = node.object::<A>("a");
    let got = node.block_on(a.call(AMsg::RelayGet, T)).unwrap();
    assert_eq!(got, Ok(0), "object-to-object call from a handler failed");
}

/// A message an object's handler sends to another object is held by the gate with the
/// *activation* it resolved at send time. If that activation is evicted before the sender's
/// commit is durable, the release finds its mailbox closed and drops the message silently.
#[test]
fn a_held_message_to_an_object_survives_its_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 2, Duration::from_millis(200));
    let a = node.object::<A>("a");
    let b = node.object::<Counter>("b");
    assert_eq!(node.block_on(b.call(CounterMsg::Get, T)).unwrap(), 0); // b active
    let b_pid = b.pid().unwrap();
    {
        let _hold = node.store().fault_injection().hold_commits();
        node.block_on(a.send(AMsg::WriteAndForward)).unwrap();
        // b is idle meanwhile and gets evicted (no deactivate writes, so no commit needed).
        let evicted = node.block_on(node.handle().timeout(T, node.handle().wait_exit(b_pid)));
        assert!(evicted.is_ok(), "b was not evicted");
    } // commits resume: a's output (Add(1) to b, whose activation is gone) is released
    let deadline = std::time::Instant::now() + T;
    while node.block_on(b.call(CounterMsg::Get, T)).unwrap() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Add(1) a sent to b was lost"
        );
    }
}

enum SlowMsg {
    Touch,
    Get(Reply<u64>),
}

/// An object whose deactivate writes (so eviction waits for a commit).
struct Slow {
    n: u64,
}

impl Object for Slow {
    const CLASS: &'static str = "review-slow";
    type Msg = SlowMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Slow {
            n: ctx.storage().get("n")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: SlowMsg, _: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            SlowMsg::Touch => self.n += 1,
            SlowMsg::Get(r) => {
                let _ = r.send(self.n);
            }
        }
        Ok(())
    }

    async fn deactivate(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        ctx.storage().put("n", &self.n)?;
        Ok(())
    }
}

/// `ObjectRef::try_send` (and the alarm process's `deliver_alarm`) spin with
/// `std::thread::yield_now` while an evicted activation still holds the name. Called from a
/// process on a single-worker runtime, the spin occupies the only worker, so the deactivating
/// object never runs again to release its name: livelock.
#[test]
fn try_send_from_a_process_during_eviction_does_not_livelock_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 1, Duration::from_millis(100));
    let s = node.object::<Slow>("s");
    node.block_on(s.send(SlowMsg::Touch)).unwrap();
    let pid = s.pid().unwrap();
    let store = node.store().clone();
    let hold = store.fault_injection().hold_commits();
    wait_until_evicting::<SlowMsg>(&node, pid);
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = s.clone();
    node.spawn(move |_ctx: Ctx<()>| async move {
        let r = s2.try_send(SlowMsg::Touch).is_ok();
        let _ = tx.send(r);
    });
    // try_send never waits: it must answer while the eviction is still blocked on its
    // deactivate commit (the only worker free to run the deactivating object again).
    let got = rx.recv_timeout(T);
    if got.is_err() {
        std::mem::forget(node); // its only worker spins forever: shutdown would hang
        panic!("try_send from a process livelocked the only worker: {got:?}");
    }
    assert_eq!(got, Ok(false), "the evicting object took a message");
    drop(hold);
}

/// An activation told to leave at once (idle time zero: a hand-off, or a deposed replica)
/// with more messages queued than one turn's budget: `recv` yields for the budget, the idle
/// check fires at once, the close is refused (messages are queued), and the activation
/// looped on that without ever returning to its worker — so the budget never reset and, on a
/// single worker, nothing else ran again. Seen as one worker at 100 % CPU in `next_event`.
#[test]
fn an_object_leaving_at_once_with_a_full_turn_of_mail_still_yields_its_worker() {
    const BURST: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 1, Duration::ZERO);
    let s = node.object::<Slow>("burst");
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = s.clone();
    // One process sends the whole burst in one turn (the mailbox has room), so the
    // activation finds it all queued when it first runs.
    node.spawn(move |_ctx: Ctx<()>| async move {
        for _ in 0..BURST {
            s2.send(SlowMsg::Touch).await.unwrap();
        }
        let _ = tx.send(s2.call(SlowMsg::Get, T).await);
    });
    let got = rx.recv_timeout(2 * T);
    if got.is_err() {
        std::mem::forget(node); // its only worker spins forever: shutdown would hang
        panic!("the object never answered after the burst: {got:?}");
    }
    assert_eq!(
        got.unwrap().unwrap(),
        BURST,
        "a message of the burst was lost"
    );
}

/// Waits until the activation `pid` has closed its mailbox (it is being evicted). Fails the
/// test if that does not happen within [`T`].
fn wait_until_evicting<M: Send + 'static>(node: &Node, pid: Pid) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let a: Option<ActorRef<cairn::object::ObjectMsg<M>>> = node.handle().actor_ref(pid);
        if !a.is_some_and(|a| a.is_alive()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the object was not evicted"
        );
        std::thread::yield_now();
    }
}

/// Sends racing an eviction: the activation has closed its mailbox and is blocked on its
/// `deactivate` commit (held). Eight threads each `try_send` there (the message must come
/// back: the object is evicting), then `send` 25 messages, the first ones at once when the
/// commit is let go — racing the old activation's exit, the re-activation and each other.
/// Nothing is lost and the state the deactivation wrote is what the next activation loads.
#[test]
fn sends_racing_an_eviction_lose_nothing() {
    const SENDERS: u64 = 8;
    const EACH: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 2, Duration::from_millis(100));
    let s = node.object::<Slow>("evicting");
    node.block_on(s.send(SlowMsg::Touch)).unwrap();
    let pid = s.pid().unwrap();
    let store = node.store().clone();
    let hold = store.fault_injection().hold_commits();
    wait_until_evicting::<SlowMsg>(&node, pid);
    let gave_back = std::sync::Barrier::new(SENDERS as usize + 1);
    std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| {
                let s = node.object::<Slow>("evicting");
                let back = s.try_send(SlowMsg::Touch);
                assert!(
                    matches!(back, Err(SendError::Full(_))),
                    "an evicting object took a message"
                );
                gave_back.wait();
                for _ in 0..EACH {
                    node.block_on(s.send(SlowMsg::Touch)).unwrap();
                }
            });
        }
        gave_back.wait(); // every thread saw the eviction in progress
        drop(hold);
    });
    assert_eq!(
        node.block_on(s.call(SlowMsg::Get, T)).unwrap(),
        1 + SENDERS * EACH
    );
    assert_ne!(s.pid(), Some(pid), "a new activation took over");
}

/// Shutdown while a handler's commit is in flight: the caller must not be told the write
/// happened unless it is durable. The commit is held, the node shuts down, then the commit
/// fails: the caller gets an error, and a restarted node holds the value from before.
#[test]
fn a_shutdown_racing_a_commit_acknowledges_nothing_that_is_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store;
    let answer = {
        let node = node(dir.path(), 2, Duration::from_secs(30));
        node.host_local::<C>();
        let c = node.object::<C>("x");
        assert_eq!(
            node.block_on(c.call(|r| CMsg::AddAndGet(1, r), T)).unwrap(),
            1
        );
        store = node.store().clone();
        let hold = store.fault_injection().hold_commits();
        std::thread::scope(|scope| {
            // The caller is a thread, not a process: shutdown stops processes.
            let caller = scope.spawn(|| node.block_on(c.call(|r| CMsg::AddAndGet(1, r), T)));
            // Handled once its write set is in flight: reads through the keyspace see it.
            let ks = node.keyspace("race-c/x").unwrap();
            let deadline = std::time::Instant::now() + T;
            while ks.get::<u64>("total").unwrap() != Some(2) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the add was not handled"
                );
                std::thread::yield_now();
            }
            store.fault_injection().fail_next_commit_of("race-c/x");
            let shutdown = scope.spawn(|| node.shutdown());
            // The caller's outcome is known once shutdown has stopped the object; only then
            // may the held commit proceed (and fail).
            let answer = caller.join().unwrap();
            drop(hold);
            shutdown.join().unwrap();
            answer
        })
    };
    assert!(
        answer.is_err(),
        "the caller was told {answer:?}, but the write was never durable"
    );
    drop(store);
    let node = node(dir.path(), 2, Duration::from_secs(30));
    node.host_local::<C>();
    let c = node.object::<C>("x");
    assert_eq!(node.block_on(c.call(CMsg::Get, T)).unwrap(), 1);
}

enum CMsg {
    Add(u64),
    AddAndGet(u64, Reply<u64>),
    /// Waits until the receiver resolves (holds the object inside a handler).
    Block(ReplyReceiver<()>),
    Get(Reply<u64>),
}

struct C {
    total: u64,
}

impl Object for C {
    const CLASS: &'static str = "race-c";
    type Msg = CMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(C {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: CMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            CMsg::Add(n) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
            }
            CMsg::AddAndGet(n, r) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
                let _ = r.send(self.total);
            }
            CMsg::Block(until) => {
                let _ = until.await;
            }
            CMsg::Get(r) => {
                let _ = r.send(self.total);
            }
        }
        Ok(())
    }
}

/// A failed commit restarts the object from storage with its mailbox: the failed message's
/// write is gone, but messages still queued behind it are handled by the new incarnation.
/// Forced: the object is blocked in a handler while nine adds queue up and the first add's
/// commit fails; only then does it go on.
#[test]
fn a_failed_commit_does_not_lose_queued_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 2, Duration::from_secs(30));
    node.host_local::<C>();
    let c = node.object::<C>("x");
    assert_eq!(node.block_on(c.call(CMsg::Get, T)).unwrap(), 0);
    let store = node.store().clone();
    store.fault_injection().fail_next_commit_of("race-c/x");
    let failed_before = store.stats().failed_write_sets;
    let hold = store.fault_injection().hold_commits();
    let (release, until) = Reply::pair();
    node.block_on(c.send(CMsg::Add(1))).unwrap(); // handled; its commit is held
    node.block_on(c.send(CMsg::Block(until))).unwrap();
    for _ in 0..9 {
        node.block_on(c.send(CMsg::Add(1))).unwrap(); // queued behind Block
    }
    drop(hold);
    let deadline = std::time::Instant::now() + T;
    while store.stats().failed_write_sets == failed_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the first commit did not fail"
        );
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    assert_eq!(
        node.block_on(c.call(CMsg::Get, T)).unwrap(),
        9,
        "the failed add is gone and the nine queued ones are applied"
    );
    assert_eq!(
        node.object_stats()["race-c"].write_sets_failed,
        1,
        "the failed write set is counted, and only it"
    );
}
