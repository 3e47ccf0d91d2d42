//! Alarms after a real `kill -9` of the shard leader: three node processes
//! (`shards_node_child`, see `common::shard_mesh`) and a dial-only client that sets the
//! alarms. `tests/shards_alarms.rs` covers a failover with an abrupt in-process stop; here
//! the leader's process is SIGKILLed.
//!
//! Alarms of [`Alarmed`] objects whose shards the victim leads are set (acknowledged, so
//! committed by a majority) to fire [`AHEAD`] after the first set; the victim is killed at
//! once, before any is due. Every alarm must fire at least once (alarms are at-least-once),
//! only on a survivor, and on the node leading its shard afterwards. The time from
//! `max(kill, due)` to the fire is measured and printed, with its maximum: the bound
//! (failure detection, a new leader's election and lease, its first alarm scan).

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::prelude::*;
use cairn::shard::placement::object_shard;
use common::shard_mesh::{self, Children, SHARDS};
use common::{AlarmMsg, Alarmed};

/// How far ahead of the first set the alarms are due: room to set them all before the kill.
const AHEAD: Duration = Duration::from_secs(4);
/// Alarms set (at most; only keys whose shard the victim leads).
const ALARMS: usize = 12;
/// One call's timeout.
const CALL: Duration = Duration::from_secs(10);

shards_node_child!();

#[test]
fn alarms_fire_on_the_new_leader_after_the_leader_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    shard_mesh::make_cluster(dir);
    let mut children = Children::start(dir, 3);
    children.wait_replicated(0);
    children.wait_for("a leader for every shard", |r| {
        r.iter().map(|c| c.leads().len()).sum::<usize>() == SHARDS as usize
    });
    let seeds: Vec<_> = (0..3).map(|i| children.addr(i)).collect();
    let client = shard_mesh::dial_only_client(dir, "alarm-client", &seeds);
    let victim = (0..3)
        .max_by_key(|&i| children.report(i).leads().len())
        .unwrap();
    let led = children.report(victim).leads();
    let cfg = shard_mesh::shard_config();
    let shard = |key: &str| object_shard(Alarmed::CLASS, key, None, &cfg).0;
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("a{i}"))
        .filter(|k| led.contains(&shard(k)))
        .take(ALARMS)
        .collect();
    assert!(!keys.is_empty());

    let due = SystemTime::now() + AHEAD;
    let due_at = Instant::now() + AHEAD;
    let due_ms = due.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    for k in &keys {
        client
            .block_on(
                client
                    .object::<Alarmed>(k)
                    .call(|r| AlarmMsg::SetAt(due_ms, r), CALL),
            )
            .unwrap_or_else(|e| panic!("setting {k}'s alarm: {e}"));
    }
    children.kill(victim);
    let killed = Instant::now();
    assert!(
        killed < due_at,
        "setting {} alarms took longer than {AHEAD:?}: the machine is too slow for this test",
        keys.len()
    );
    assert!(
        (0..3).all(|i| children.report(i).fired.is_empty()),
        "an alarm fired before it was due"
    );

    // Every key fires on a survivor; collect every fire of every key.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let fires = |r: &[shard_mesh::Report]| -> BTreeMap<String, Vec<(usize, Instant)>> {
        let mut by_key: BTreeMap<String, Vec<(usize, Instant)>> = BTreeMap::new();
        for &i in &survivors {
            for (k, at) in &r[i].fired {
                by_key.entry(k.clone()).or_default().push((i, *at));
            }
        }
        by_key
    };
    // Who was seen leading which shard after the kill (children report every 200 ms).
    let seen_leading: RefCell<BTreeSet<(usize, u32)>> = RefCell::new(BTreeSet::new());
    children.wait_for("every alarm to fire on a node leading its shard", |r| {
        let mut seen = seen_leading.borrow_mut();
        for &i in &survivors {
            seen.extend(r[i].leads().into_iter().map(|s| (i, s)));
        }
        let f = fires(r);
        keys.iter().all(|k| {
            f.get(k)
                .is_some_and(|on| on.iter().all(|(i, _)| seen.contains(&(*i, shard(k)))))
        })
    });
    let fired = fires(&(0..3).map(|i| children.report(i)).collect::<Vec<_>>());
    let from = killed.max(due_at);
    let mut took: Vec<Duration> = Vec::new();
    let mut after_kill: Vec<Duration> = Vec::new();
    let mut duplicates = 0;
    for k in &keys {
        let on = &fired[k];
        duplicates += on.len() - 1;
        let first = on.iter().map(|(_, at)| *at).min().unwrap();
        took.push(first.saturating_duration_since(from));
        after_kill.push(first.saturating_duration_since(killed));
    }
    after_kill.sort();
    took.sort();
    let median = took[took.len() / 2];
    let max = *took.last().unwrap();
    eprintln!(
        "alarms after kill -9: {} alarms fired on the new leaders; from max(kill, due) to the \
         first fire: median {median:?}, max {max:?}; from the kill: max {:?} (the kill came \
         {:?} before they were due); {duplicates} duplicate fires",
        keys.len(),
        after_kill.last().unwrap(),
        due_at.saturating_duration_since(killed)
    );
}
