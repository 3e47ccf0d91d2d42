//! Replicated shards across three node processes: `kill -9` of the node running the
//! counters loses no acknowledged increment, and every counter answers again from another
//! node (one activation each).
//!
//! The parent re-executes this test binary three times as `shards_node_child` (one mesh
//! node each, on 127.0.0.1 with random ports; the first creates the shard cluster, the other
//! two join it: see `common::shard_mesh`) and runs an in-process *client* node that only
//! calls.
//!
//! Then the killed node restarts on its data dir with its old id, and every counter goes
//! on from its value.
//!
//! The oracle (as `tests/crash.rs`): for every counter, the value read at the end is at least
//! the highest value ever acknowledged and at most the number of increments attempted (an
//! increment whose call failed may or may not have happened, never twice).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::prelude::*;
use common::shard_mesh::{self, WAIT};
use common::{Counter, CounterMsg};

const COUNTERS: usize = 24;
/// One call's answer timeout: a call that went to the killed node is retried after it.
const CALL: Duration = Duration::from_secs(2);

shards_node_child!();

/// What the client knows of one counter.
#[derive(Clone, Debug, Default)]
struct Model {
    attempts: u64,
    acked: u64,
    acks: usize,
    /// When the first increment sent after the kill was acknowledged.
    first_ack_after_kill: Option<Instant>,
}

#[test]
fn killing_the_node_running_the_counters_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    // The caller is a member that holds no counters' shards at first (a dial-only client
    // times out here on the merged main: see the stop note of 2026-12-06).
    let (mut children, client) = shard_mesh::three_children_and_a_caller(tmp.path());

    let model = Arc::new(Mutex::new(vec![Model::default(); COUNTERS]));
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    for k in 0..COUNTERS {
        let counter = client.object::<Counter>(&shard_mesh::counter_key(k));
        let (model, stop, killed_at, done_tx) = (
            model.clone(),
            stop.clone(),
            killed_at.clone(),
            done_tx.clone(),
        );
        client.spawn(move |_ctx: Ctx<()>| async move {
            while !stop.load(Ordering::Acquire) {
                let sent = Instant::now();
                model.lock().unwrap()[k].attempts += 1;
                let answer = counter.call(|r| CounterMsg::AddAndGet(1, r), CALL).await;
                let after_kill = killed_at.lock().unwrap().is_some_and(|t| sent > t);
                if let Ok(v) = answer {
                    let mut m = model.lock().unwrap();
                    let m = &mut m[k];
                    m.acked = m.acked.max(v);
                    m.acks += 1;
                    if after_kill && m.first_ack_after_kill.is_none() {
                        m.first_ack_after_kill = Some(Instant::now());
                    }
                }
            }
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);
    let wait_for = |what: &str, f: &dyn Fn(&[Model]) -> bool| {
        let deadline = Instant::now() + WAIT;
        while !f(&model.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("three acks per counter", &|m| m.iter().all(|c| c.acks >= 3));

    // The victim: the node running the most counters.
    let running = |id: NodeId| {
        client
            .block_on(client.node_status(id, CALL))
            .ok()
            .and_then(|s| s.objects.get(Counter::CLASS).copied())
            .unwrap_or(0)
    };
    let victim = (0..3).max_by_key(|&i| running(children.id(i))).unwrap();
    assert!(running(children.id(victim)) > 0, "no node runs a counter");
    children.kill(victim); // SIGKILL
    let kill = Instant::now();
    *killed_at.lock().unwrap() = Some(kill);
    wait_for("every counter to answer after the kill", &|m| {
        m.iter().all(|c| c.first_ack_after_kill.is_some())
    });
    let mut recovery: Vec<Duration> = model
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.first_ack_after_kill.unwrap() - kill)
        .collect();
    recovery.sort();
    eprintln!(
        "failover after kill -9 of the node running {} counters: median {:?}, all {COUNTERS} answered within {:?}",
        COUNTERS,
        recovery[COUNTERS / 2],
        recovery[COUNTERS - 1]
    );
    wait_for("three more acks per counter", &|m| {
        m.iter().all(|c| c.acks >= 6)
    });
    stop.store(true, Ordering::Release);
    for _ in 0..COUNTERS {
        done_rx.recv_timeout(WAIT).expect("a caller never stopped");
    }

    // The oracle.
    let model = model.lock().unwrap().clone();
    shard_mesh::check_counters(&client, model.iter().map(|m| (m.acked, m.attempts)));
    // One activation per counter, on the survivors.
    let survivors: Vec<NodeId> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| children.id(i))
        .collect();
    let total: usize = survivors.iter().map(|&id| running(id)).sum();
    assert_eq!(total, COUNTERS, "activations on the survivors");

    // The victim restarts on its data dir: same identity, and the counters go on from
    // their values. It was down for less than the grace, so no replica of it moved; but with
    // it back, the planner may finish moving shards onto the parent (a member since the
    // start), handing leadership over while these calls run: none may fail for that
    // (`shard/tests/handover.rs`).
    children.restart(victim);
    for (k, m) in model.iter().enumerate() {
        let counter = client.object::<Counter>(&shard_mesh::counter_key(k));
        let before = client
            .block_on(counter.call(CounterMsg::Get, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("c{k}: {e}"));
        let after = client
            .block_on(counter.call(|r| CounterMsg::AddAndGet(1, r), Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("c{k}: {e}"));
        assert!(
            before >= m.acked && after == before + 1,
            "c{k}: {before} then {after}"
        );
    }
}
