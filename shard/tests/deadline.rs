//! The driver enforces proposal deadlines itself (one sweep of a sorted deadline queue per
//! loop iteration, no timer per proposal), and completes every proposal's callback exactly
//! once: a leader cut off from its followers cannot commit, so its proposal fails by its
//! deadline with `Call(Timeout)`, a later-deadline one keeps waiting, the driver's stop
//! fails that one with `Call(NoProc)`, and a proposal dropped unqueued fails the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cairn_scheduler::{CallError, NodeId, Runtime};
use cairn_shard::driver::{DriverError, LocalNet, ShardNode};
use cairn_shard::placement::Member;
use cairn_shard::{
    bootstrap_states, encode_write_set, ClusterRecord, Fence, LmdbLog, MultiRaft, Outcome,
    ShardConfig, ShardId,
};
use cairn_storage::{Config, Store, WriteSetData};

const S: ShardId = ShardId(0);
const IDS: [NodeId; 3] = [NodeId(11), NodeId(22), NodeId(33)];

fn config() -> ShardConfig {
    ShardConfig {
        shards: 1,
        replication: 3,
        tick: Duration::from_millis(20),
        // A long election timeout (0.5–1 s): the cut-off leader still leads when the
        // proposals reach it.
        election_ticks: 25,
        heartbeat_ticks: 2,
        rebalance_ticks: 3,
        ..ShardConfig::default()
    }
}

fn set(value: u64) -> Vec<u8> {
    encode_write_set(&WriteSetData {
        keyspace: "counter/0".into(),
        clear: false,
        entries: vec![(b"total".to_vec(), Some(rmp_serde::to_vec(&value).unwrap()))],
        alarm: None,
    })
}

/// Polls `f` (a condition on other threads' progress) until it holds, or fails the test.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

type Fate = Result<Outcome, DriverError>;

/// A callback that counts its calls and forwards the fate.
fn probe(calls: &Arc<AtomicUsize>, tx: mpsc::Sender<Fate>) -> impl FnOnce(Fate) + Send + 'static {
    let calls = Arc::clone(calls);
    move |fate| {
        calls.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(fate);
    }
}

#[test]
fn a_proposal_that_cannot_commit_fails_by_its_deadline_exactly_once() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let net = Arc::new(LocalNet::default());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for (i, (d, &id)) in dirs.iter().zip(&IDS).enumerate() {
        let store = Store::open(d.path(), Config::default()).unwrap();
        let log = LmdbLog::new(store.clone());
        if i == 0 {
            log.create_cluster(&config(), &bootstrap_states(&config(), id))
                .unwrap();
        } else {
            log.join_cluster(ClusterRecord {
                shards: 1,
                replication: 3,
            })
            .unwrap();
        }
        let states = log.recover().unwrap();
        let core = MultiRaft::recover(config(), id, &states, id.0, Duration::ZERO).unwrap();
        let node = ShardNode::start(&rt.handle(), core, log, net.clone(), None);
        node.set_members(IDS.iter().map(|&id| Member::up(id, None)).collect());
        net.attach(node.clone());
        nodes.push(node);
        stores.push(store);
    }
    // Rebalancing grows the shard to three voters: its leader then needs a follower to commit.
    wait_for("three voters", 60, || {
        nodes.iter().any(|n| {
            n.serving(S)
                && rt
                    .block_on(n.conf_state(S))
                    .is_some_and(|cs| cs.voters.len() == 3 && cs.learners.is_empty())
        })
    });
    let leader = nodes.iter().find(|n| n.serving(S)).unwrap().clone();
    let term = leader.board().serving_term(S).expect("the leader serves");
    let fence = Fence { chain: 1, term };
    // Cut the leader off: it appends, nobody acknowledges, nothing commits or resolves.
    net.detach(leader.node());

    let (short_calls, long_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (short_tx, short_rx) = mpsc::channel();
    let (long_tx, long_rx) = mpsc::channel();
    let timeout = Duration::from_millis(300);
    let sent = Instant::now();
    let long = leader.fenced_then(
        S,
        set(1),
        fence,
        Duration::from_secs(600),
        probe(&long_calls, long_tx),
    );
    let short = leader.fenced_then(S, set(2), fence, timeout, probe(&short_calls, short_tx));
    leader
        .try_queue(long)
        .expect("room in the driver's mailbox");
    leader
        .try_queue(short)
        .expect("room in the driver's mailbox");

    // Only the driver's sweep can fail it: generous bound for a loaded box, but far below
    // the other proposal's deadline and well before the driver stops.
    let fate = short_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the proposal past its deadline was not failed by the driver");
    assert!(
        sent.elapsed() >= timeout,
        "failed before its deadline: {:?}",
        sent.elapsed()
    );
    assert_eq!(fate, Err(DriverError::Call(CallError::Timeout)));
    // The one with a later deadline is still waiting (the sweep fails only what expired).
    assert_eq!(
        long_calls.load(Ordering::SeqCst),
        0,
        "{:?}",
        long_rx.try_recv()
    );

    // The driver stops: the waiting proposal fails with it, once.
    leader.stop();
    rt.block_on(rt.handle().wait_exit(leader.pid()));
    let fate = long_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a stopped driver left a proposal hanging");
    assert_eq!(fate, Err(DriverError::Call(CallError::NoProc)));

    // A proposal the stopped driver never gets is dropped, and fails once too.
    let (late_calls, (late_tx, late_rx)) = (Arc::new(AtomicUsize::new(0)), mpsc::channel());
    let late = leader.fenced_then(S, set(3), fence, timeout, probe(&late_calls, late_tx));
    assert!(leader.try_queue(late).is_ok(), "a gone driver drops it");
    let fate = late_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a dropped proposal left its callback uncalled");
    assert_eq!(fate, Err(DriverError::Call(CallError::NoProc)));

    drop(nodes);
    drop(leader);
    rt.shutdown();
    assert_eq!(short_calls.load(Ordering::SeqCst), 1);
    assert_eq!(long_calls.load(Ordering::SeqCst), 1);
    assert_eq!(late_calls.load(Ordering::SeqCst), 1);
    drop(stores);
}
