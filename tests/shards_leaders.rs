//! Leadership is spread across the nodes: three `cairn-node`-like child processes (see
//! `common::shard_mesh`); the first creates the cluster and so leads every shard at first.
//! Once the others are voters, each shard's leader hands leadership to the shard's
//! preferred leader (`cairn_shard::leadership`) until every node leads its share, while a
//! dial-only client keeps incrementing counters.
//!
//! The oracle (as `tests/shards_failover.rs`): every counter ends at least at the highest
//! value acknowledged and at most at the number of increments attempted, across all the
//! transfers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::prelude::*;
use common::shard_mesh::{self, Children, SHARDS, WAIT};
use common::{Counter, CounterMsg};

const COUNTERS: usize = 24;
/// One call's answer timeout (a call caught in a transfer is answered or fails well within).
const CALL: Duration = Duration::from_secs(2);

/// The child's body: one mesh node; does nothing unless run by the test below.
#[test]
fn shards_node_child() {
    shard_mesh::child_main();
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the client knows of one counter.
#[derive(Clone, Debug, Default)]
struct Model {
    attempts: u64,
    acked: u64,
    acks: usize,
}

#[test]
fn each_node_leads_a_third_of_the_shards_and_no_increment_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    shard_mesh::make_cluster(tmp.path());
    let children = Children::start(tmp.path(), 3);
    children.wait_replicated(0);
    let seeds: Vec<_> = (0..3).map(|i| children.addr(i)).collect();
    let client = shard_mesh::dial_only_client(tmp.path(), "caller", &seeds);

    let model = Arc::new(Mutex::new(vec![Model::default(); COUNTERS]));
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the callers if the test fails, before the client is dropped (so that it drops
    // and the children's logs are printed).
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (done_tx, done_rx) = mpsc::channel::<()>();
    for k in 0..COUNTERS {
        let counter = client.object::<Counter>(&shard_mesh::counter_key(k));
        let (model, stop, done_tx) = (model.clone(), stop.clone(), done_tx.clone());
        client.spawn(move |_ctx: Ctx<()>| async move {
            while !stop.load(Ordering::Acquire) {
                model.lock().unwrap()[k].attempts += 1;
                if let Ok(v) = counter.call(|r| CounterMsg::AddAndGet(1, r), CALL).await {
                    let mut m = model.lock().unwrap();
                    m[k].acked = m[k].acked.max(v);
                    m[k].acks += 1;
                }
            }
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);
    let leaders_at_start: Vec<usize> = (0..3).map(|i| children.report(i).led).collect();

    // Settled: 8 shards over 3 nodes, 2 or 3 each, every shard led once.
    let (lo, hi) = (SHARDS as usize / 3, (SHARDS as usize).div_ceil(3));
    children.wait_for("leadership to spread over the three nodes", |r| {
        r.iter().map(|c| c.led).sum::<usize>() == SHARDS as usize
            && r.iter().all(|c| (lo..=hi).contains(&c.led))
    });
    let settled: Vec<usize> = (0..3).map(|i| children.report(i).led).collect();
    eprintln!("shards led per node: {leaders_at_start:?} at first, then {settled:?}");

    // The counters go on after the transfers (and stay answered by one activation each).
    let acks_then: Vec<usize> = model.lock().unwrap().iter().map(|m| m.acks).collect();
    let deadline = Instant::now() + WAIT;
    while !model
        .lock()
        .unwrap()
        .iter()
        .zip(&acks_then)
        .all(|(m, &then)| m.acks >= then + 3)
    {
        assert!(
            Instant::now() < deadline,
            "counters stopped answering after the spread"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    for _ in 0..COUNTERS {
        done_rx.recv_timeout(WAIT).expect("a caller never stopped");
    }

    // The oracle.
    let model = model.lock().unwrap().clone();
    shard_mesh::check_counters(&client, model.iter().map(|m| (m.acked, m.attempts)));
    // Still spread once the load stopped (no ping-pong moved leaders off their share).
    let after: Vec<usize> = (0..3).map(|i| children.report(i).led).collect();
    assert!(
        after.iter().all(|l| (lo..=hi).contains(l)),
        "leaders drifted: {after:?}"
    );
}
