//! Three shard drivers on Cairn's scheduler, each on its own LMDB store in a temp dir, joined
//! by the in-process transport: writes commit; one node is killed and writes keep
//! committing; it restarts from its disk and catches up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{NodeId, Runtime};
use cairn_shard::driver::{LocalNet, ShardNode};
use cairn_shard::placement::Member;
use cairn_shard::{
    bootstrap_states, encode_write_set, ClusterRecord, LmdbLog, MultiRaft, Outcome, ShardConfig,
    ShardId,
};
use cairn_storage::{Config, Store, WriteSetData};

fn config() -> ShardConfig {
    ShardConfig {
        shards: 4,
        replication: 3,
        tick: Duration::from_millis(20),
        election_ticks: 10,
        heartbeat_ticks: 2,
        rebalance_ticks: 3,
        ..ShardConfig::default()
    }
}

const IDS: [NodeId; 3] = [NodeId(101), NodeId(202), NodeId(303)];

fn members() -> Vec<Member> {
    IDS.iter().map(|&id| Member::up(id, None)).collect()
}

fn start(
    rt: &Runtime,
    net: &Arc<LocalNet>,
    dir: &std::path::Path,
    id: NodeId,
) -> (ShardNode, Store) {
    let store = Store::open(dir, Config::default()).unwrap();
    let log = LmdbLog::new(store.clone());
    let states = log.recover().unwrap();
    let core = MultiRaft::recover(config(), id, &states, id.0, Duration::ZERO).unwrap();
    let node = ShardNode::start(&rt.handle(), core, log, net.clone(), None);
    node.set_members(members());
    net.attach(node.clone());
    (node, store)
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Polls `f` until it holds (a condition on other threads' progress) or fails the test.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set(counter: u32, value: u64) -> Vec<u8> {
    encode_write_set(&WriteSetData {
        keyspace: format!("counter/{counter}"),
        clear: false,
        entries: vec![(b"total".to_vec(), Some(rmp_serde::to_vec(&value).unwrap()))],
        alarm: None,
    })
}

/// Writes `value` to `counter` (shard = counter % 4) through whichever node serves it.
fn write(rt: &Runtime, nodes: &[Option<ShardNode>], counter: u32, value: u64) {
    let shard = ShardId(counter % 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if Instant::now() > deadline {
            let views: Vec<String> = nodes
                .iter()
                .flatten()
                .map(|n| format!("{}: {}", n.node(), rt.block_on(n.debug(shard))))
                .collect();
            panic!("no node committed a write to {shard}: {views:#?}");
        }
        if let Some(n) = nodes.iter().flatten().find(|n| n.serving(shard)) {
            let r = rt.block_on(n.propose(shard, set(counter, value), Duration::from_secs(5)));
            if r == Ok(Outcome::Committed) && n.serving(shard) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read(store: &Store, counter: u32) -> Option<u64> {
    store
        .keyspace(&format!("counter/{counter}"))
        .unwrap()
        .get("total")
        .unwrap()
}

#[test]

fn three_nodes_commit_survive_a_kill_and_a_restart_catches_up() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let rt = Runtime::builder().workers(2).build().unwrap();
    let net = Arc::new(LocalNet::default());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Node 0 creates the cluster; the others join it.
    {
        let store = Store::open(dirs[0].path(), Config::default()).unwrap();
        let log = LmdbLog::new(store);
        log.create_cluster(&config(), &bootstrap_states(&config(), IDS[0]))
            .unwrap();
        assert!(log.create_cluster(&config(), &[]).is_err(), "created twice");
    }
    for d in &dirs[1..] {
        let log = LmdbLog::new(Store::open(d.path(), Config::default()).unwrap());
        log.join_cluster(ClusterRecord {
            shards: 4,
            replication: 3,
        })
        .unwrap();
    }
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for (d, &id) in dirs.iter().zip(&IDS) {
        let (n, s) = start(&rt, &net, d.path(), id);
        nodes.push(Some(n));
        stores.push(Some(s));
    }
    // Rebalancing grows every shard to three replicas: each node holds every shard's data.
    for c in 0..8 {
        write(&rt, &nodes, c, 1);
    }
    // Three voters per shard (data on a learner is not enough: killing one of two voters
    // stops a shard), and every store holds every counter.
    let replicated = wait_until(30, || {
        (0..4).all(|sh| {
            nodes
                .iter()
                .flatten()
                .find(|n| n.serving(ShardId(sh)))
                .and_then(|n| rt.block_on(n.conf_state(ShardId(sh))))
                .is_some_and(|cs| cs.voters.len() == 3 && cs.learners.is_empty())
        }) && (0..8).all(|c| stores.iter().flatten().all(|s| read(s, c) == Some(1)))
    });
    let matrix: Vec<Vec<Option<u64>>> = stores
        .iter()
        .flatten()
        .map(|s| (0..8).map(|c| read(s, c)).collect())
        .collect();
    let debug: Vec<String> = (0..4)
        .flat_map(|sh| {
            nodes
                .iter()
                .flatten()
                .map(move |n| (sh, n))
                .collect::<Vec<_>>()
        })
        .map(|(sh, n)| format!("s{sh} {}: {}", n.node(), rt.block_on(n.debug(ShardId(sh)))))
        .collect();
    assert!(
        replicated,
        "not replicated to all three: {matrix:?}\n{debug:#?}"
    );

    // Kill the node serving shard 0 (its leader): drop it, as a crash would.
    let victim = nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.serving(ShardId(0))))
        .unwrap_or(0);
    let dead = nodes[victim].take().unwrap();
    net.detach(dead.node());
    dead.stop();
    rt.block_on(rt.handle().wait_exit(dead.pid()));
    drop(dead);
    stores[victim] = None;

    // The other two keep committing (a new leader for the victim's shards).
    for c in 0..8 {
        write(&rt, &nodes, c, 2);
    }
    for s in stores.iter().flatten() {
        wait_for("the survivors apply", 10, || {
            (0..8).all(|c| read(s, c) == Some(2))
        });
    }

    // Restart from disk: the old data is there at once, the missed writes arrive.
    let (n, s) = start(&rt, &net, dirs[victim].path(), IDS[victim]);
    assert!((0..8).all(|c| read(&s, c).is_some()), "recovered from disk");
    nodes[victim] = Some(n);
    wait_for("the restarted node catches up", 20, || {
        (0..8).all(|c| read(&s, c) == Some(2))
    });
    for c in 0..8 {
        write(&rt, &nodes, c, 3);
    }
    wait_for("all three apply after the restart", 20, || {
        (0..8).all(|c| read(&s, c) == Some(3))
    });
    // At most one node serves a shard at any moment we look.
    for shard in 0..4 {
        let serving = nodes
            .iter()
            .flatten()
            .filter(|n| n.serving(ShardId(shard)))
            .count();
        assert!(serving <= 1, "shard {shard} served by {serving} nodes");
    }
    drop(stores);
    rt.shutdown();
}
