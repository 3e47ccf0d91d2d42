//! Alarms under replicated shards, on in-process nodes meshed over 127.0.0.1: an object's
//! alarm is part of its replicated state, so it follows the object to a new shard leader,
//! and only the node serving the shard fires it.
//!
//! * **Failover.** On three nodes, alarms are set (and acknowledged, so replicated), then the
//!   node leading their shards is stopped abruptly (its runtime shut down, no hand-over);
//!   once a survivor leads, the clock passes the alarms and each fires on the new leader.
//!   The same objects' explicit `storage().commit()` went through the shard too: the value
//!   survives the leader, and `storage().sync()` inside a handler is refused clearly.
//! * **Move.** A fourth node joins; the shards whose replica set moves away from the creator
//!   take their objects' alarms with them: they fire on the new leaders, never on the old.
//!
//! Time is a manual wall clock shared by the nodes: alarms are set an hour ahead and the test
//! moves the clock only once the leadership it wants is in place, so nothing depends on how
//! fast this machine is.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::net::ClusterCa;
use cairn::object::WallClock;
use cairn::prelude::*;
use cairn::ShardConfig;
use serde::{Deserialize, Serialize};

/// Bound on every wait (replication, elections, a join's rebalancing).
const WAIT: Duration = Duration::from_secs(60);
/// One call's timeout.
const CALL: Duration = Duration::from_secs(10);
const SHARDS: u32 = 8;

/// Every alarm fired so far, as `(key, node it fired on)`; the nodes share this process.
static FIRED: Mutex<Vec<(String, NodeId)>> = Mutex::new(Vec::new());

#[derive(Serialize, Deserialize)]
enum AlarmMsg {
    /// Sets the alarm to this many ms after the epoch.
    Set(u64, Reply<()>),
    /// Writes `v`, commits it explicitly and awaits that, then tries `sync()`: answers the
    /// commit's and the sync's outcomes.
    CommitExplicitly(u64, Reply<(Result<(), String>, Result<(), String>)>),
    /// Answers the stored `v`.
    Get(Reply<Option<u64>>),
}

struct Alarmed;

impl Object for Alarmed {
    const CLASS: &'static str = "test-alarmed";
    type Msg = AlarmMsg;

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Alarmed)
    }

    async fn handle(&mut self, msg: AlarmMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            AlarmMsg::Set(ms, reply) => {
                ctx.set_alarm(UNIX_EPOCH + Duration::from_millis(ms));
                let _ = reply.send(());
            }
            AlarmMsg::CommitExplicitly(v, reply) => {
                ctx.storage().put("v", &v)?;
                let committed = ctx.storage().commit().await.map_err(|e| e.to_string());
                ctx.storage().put("w", &v)?;
                let synced = ctx.storage().sync().map_err(|e| e.to_string());
                ctx.storage().delete("w")?;
                let _ = reply.send((committed, synced));
            }
            AlarmMsg::Get(reply) => {
                let _ = reply.send(ctx.storage().get("v")?);
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        let me = ctx.handle().node();
        FIRED.lock().unwrap().push((ctx.key().to_owned(), me));
        Ok(())
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn start(
    dir: &std::path::Path,
    name: &str,
    join: Option<std::net::SocketAddr>,
    clock: &WallClock,
) -> Node {
    let node = common::mesh_builder(dir, name, join)
        .shards(ShardConfig {
            shards: SHARDS,
            ..ShardConfig::default()
        })
        .failure_timeout(Duration::from_secs(1))
        .wall_clock(clock.clone())
        .start()
        .unwrap();
    node.host::<Alarmed>();
    node
}

fn seed(node: &Node) -> std::net::SocketAddr {
    node.mesh().unwrap().local_addr()
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::poll_for(what, WAIT, f)
}

/// A mesh of `names.len()` nodes: the first creates the shard cluster, the others join it;
/// returns once every shard has three voters.
fn mesh(dir: &std::path::Path, names: &[&str], clock: &WallClock) -> Vec<Node> {
    ClusterCa::generate()
        .unwrap()
        .save(&dir.join("cluster"))
        .unwrap();
    let first = start(dir, names[0], None, clock);
    let s = seed(&first);
    let mut nodes = vec![first];
    for name in &names[1..] {
        nodes.push(start(dir, name, Some(s), clock));
    }
    wait_for("every shard to have three voters", || {
        let full = nodes[0].block_on(nodes[0].shards_fully_replicated());
        (full == SHARDS).then_some(())
    });
    nodes
}

/// The node serving `key`'s shard now: the one node of `nodes` that routes the object to
/// itself (a node routes to itself only while it leads the shard with a valid lease;
/// others give hints, or guesses when they hold no replica). `None` while electing.
fn leader(nodes: &[Node], key: &str) -> Option<NodeId> {
    let mut serving = nodes
        .iter()
        .filter(|n| n.object::<Alarmed>(key).owner().ok() == Some(n.id()));
    let one = serving.next()?;
    serving.next().is_none().then(|| one.id())
}

/// The leaders of `keys`, once every key has one.
fn leaders(nodes: &[Node], keys: &[String]) -> Option<BTreeMap<String, NodeId>> {
    keys.iter()
        .map(|k| leader(nodes, k).map(|o| (k.clone(), o)))
        .collect()
}

/// Sets every key's alarm an hour ahead of `clock` (acknowledged: replicated).
fn set_alarms(via: &Node, keys: &[String], clock: &WallClock) {
    let at = ms(clock.now() + Duration::from_secs(3600));
    for k in keys {
        via.block_on(
            via.object::<Alarmed>(k)
                .call(|r| AlarmMsg::Set(at, r), CALL),
        )
        .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
}

/// Moves the clock past the alarms and waits until every key fired; returns where each
/// key fired (every fire, in order).
fn fire(keys: &[String], clock: &WallClock) -> BTreeMap<String, Vec<NodeId>> {
    clock.advance(Duration::from_secs(2 * 3600));
    let fired = || {
        let mut by_key: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for (k, n) in FIRED.lock().unwrap().iter() {
            if keys.contains(k) {
                by_key.entry(k.clone()).or_default().push(*n);
            }
        }
        by_key
    };
    wait_for("every alarm to fire", || {
        let f = fired();
        (f.len() == keys.len()).then_some(())
    });
    // Room for a duplicate fire to show up (there must be none elsewhere than the owner).
    std::thread::sleep(Duration::from_millis(500));
    fired()
}

#[test]
fn an_alarm_fires_on_the_new_leader_after_the_leader_is_stopped() {
    // One mesh at a time: each test runs 3–4 nodes.
    let _serial = common::shard_mesh::serial();
    let tmp = tempfile::tempdir().unwrap();
    let clock = WallClock::manual(SystemTime::now());
    let mut nodes = mesh(tmp.path(), &["fa0", "fa1", "fa2"], &clock);
    let keys: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    set_alarms(&nodes[1], &keys, &clock);
    // An explicit commit goes through the shard like the implicit one; a blocking sync
    // inside the handler is refused, naming the way out.
    let (committed, synced) = nodes[1]
        .block_on(
            nodes[1]
                .object::<Alarmed>("f0")
                .call(|r| AlarmMsg::CommitExplicitly(7, r), CALL),
        )
        .unwrap();
    assert_eq!(committed, Ok(()));
    let refused = synced.expect_err("sync() inside a replicated object's handler");
    assert!(
        refused.contains("not replicated") && refused.contains("commit().await"),
        "{refused}"
    );

    let old_leader = wait_for("f0's leader", || leader(&nodes, "f0"));
    let victim = nodes
        .iter()
        .position(|n| n.id() == old_leader)
        .expect("the leader is one of the nodes");
    assert!(FIRED.lock().unwrap().iter().all(|(k, _)| !keys.contains(k)));
    let stopped = nodes.remove(victim);
    stopped.shutdown();
    drop(stopped);

    // A survivor leads every key's shard now.
    let via = &nodes[0];
    let survivors: BTreeSet<NodeId> = nodes.iter().map(Node::id).collect();
    let before = wait_for("a surviving leader for every key", || {
        leaders(&nodes, &keys).filter(|o| o.values().all(|n| survivors.contains(n)))
    });
    let fired = fire(&keys, &clock);
    let after = wait_for("every key's leader", || leaders(&nodes, &keys));
    for k in &keys {
        let on = &fired[k];
        assert!(
            on.iter().all(|n| *n != old_leader),
            "{k} fired on the stopped leader: {on:?}"
        );
        assert!(
            on.iter().all(|n| *n == after[k] || *n == before[k]),
            "{k} fired on {on:?}, not on its leader {}",
            after[k]
        );
    }
    // The explicitly committed value was replicated: the new leader has it.
    let v = via
        .block_on(via.object::<Alarmed>("f0").call(AlarmMsg::Get, CALL))
        .unwrap();
    assert_eq!(v, Some(7));
}

#[test]
fn an_alarm_fires_on_its_new_leader_once_its_shard_moved() {
    // One mesh at a time: each test runs 3–4 nodes.
    let _serial = common::shard_mesh::serial();
    let tmp = tempfile::tempdir().unwrap();
    let clock = WallClock::manual(SystemTime::now());
    let mut nodes = mesh(tmp.path(), &["ma0", "ma1", "ma2"], &clock);
    let keys: Vec<String> = (0..32).map(|i| format!("m{i}")).collect();
    set_alarms(&nodes[0], &keys, &clock);
    let first = wait_for("a leader for every key", || leaders(&nodes, &keys));

    // A fourth member: every shard whose replica set now leaves out a node moves it.
    let s = seed(&nodes[0]);
    nodes.push(start(tmp.path(), "ma3", Some(s), &clock));
    let moved = |now: &BTreeMap<String, NodeId>| -> BTreeSet<String> {
        keys.iter()
            .filter(|k| now[*k] != first[*k])
            .cloned()
            .collect()
    };
    // Settled: some keys have a new leader and no leader changed for a second.
    let mut last: Option<(BTreeMap<String, NodeId>, Instant)> = None;
    let settled = wait_for("the join's moves to settle", || {
        let now = leaders(&nodes, &keys)?;
        match &last {
            Some((prev, since)) if *prev == now => (since.elapsed() >= Duration::from_secs(1)
                && !moved(&now).is_empty())
            .then(|| now.clone()),
            _ => {
                last = Some((now, Instant::now()));
                None
            }
        }
    });
    let moved = moved(&settled);
    assert!(!moved.is_empty());
    let fired = fire(&keys, &clock);
    for k in &keys {
        let on = &fired[k];
        assert!(
            on.iter().all(|n| *n == settled[k]),
            "{k} (leader {} before the join, {} after) fired on {on:?}",
            first[k],
            settled[k]
        );
    }
    eprintln!(
        "{} of {} alarms moved with their shard and fired on the new leader",
        moved.len(),
        keys.len()
    );
}
