//! Alarms: one per keyspace, committed with the data, scanned in time order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_storage::{Alarm, Config, Store};

fn t(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn names(v: Vec<Alarm>) -> Vec<String> {
    v.into_iter().map(|a| a.name).collect()
}

/// A store in `dir` whose keyspaces `a`..`d` hold committed alarms at 1..4 s, set out of
/// order.
fn store_with_four_alarms(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, Config::default()).unwrap();
    for (name, at) in [("c", 3_000), ("a", 1_000), ("d", 4_000), ("b", 2_000)] {
        let ks = store.keyspace(name).unwrap();
        ks.set_alarm(t(at)).unwrap();
        ks.commit();
    }
    store.sync().unwrap();
    store
}

#[test]
fn due_alarms_come_in_time_order_up_to_now_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_four_alarms(dir.path());
    assert_eq!(
        names(store.due_alarms(t(999)).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(names(store.due_alarms(t(2_000)).unwrap()), ["a", "b"]);
    let all = store.due_alarms(t(10_000)).unwrap();
    assert_eq!(names(all.clone()), ["a", "b", "c", "d"]);
    assert_eq!(all[2].at, t(3_000));
    assert_eq!(
        store.next_alarm().unwrap(),
        Some(Alarm {
            name: "a".into(),
            at: t(1_000)
        })
    );
}

/// The count agrees with `due_alarms` at every instant (up to `now` inclusive, committed
/// alarms only) and stops at its limit.
#[test]
fn count_due_alarms_counts_what_due_alarms_returns_up_to_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_four_alarms(dir.path());
    for now in [0, 999, 1_000, 2_500, 4_000, 10_000] {
        let listed = store.due_alarms(t(now)).unwrap().len() as u64;
        assert_eq!(
            store.count_due_alarms(t(now), u64::MAX).unwrap(),
            listed,
            "at {now} ms"
        );
    }
    assert_eq!(store.count_due_alarms(t(10_000), 3).unwrap(), 3);
    assert_eq!(store.count_due_alarms(t(10_000), 0).unwrap(), 0);
    // A pending alarm is not counted until it commits; a deleted one no longer is.
    let e = store.keyspace("e").unwrap();
    e.set_alarm(t(500)).unwrap();
    assert_eq!(store.count_due_alarms(t(1_000), u64::MAX).unwrap(), 1);
    e.sync().unwrap();
    assert_eq!(store.count_due_alarms(t(1_000), u64::MAX).unwrap(), 2);
    let a = store.keyspace("a").unwrap();
    a.delete_alarm().unwrap();
    a.sync().unwrap();
    assert_eq!(store.count_due_alarms(t(1_000), u64::MAX).unwrap(), 1);
}

#[test]
fn one_alarm_per_keyspace_replace_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let a = store.keyspace("a").unwrap();
    let b = store.keyspace("b").unwrap();
    a.set_alarm(t(1_000)).unwrap();
    b.set_alarm(t(2_000)).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    a.set_alarm(t(5_000)).unwrap(); // replaces, moves in the index
    assert_eq!(a.get_alarm().unwrap(), Some(t(5_000))); // pending is visible
    assert_eq!(names(store.due_alarms(t(1_500)).unwrap()), ["a"]); // not committed yet
    a.sync().unwrap();
    assert_eq!(names(store.due_alarms(t(10_000)).unwrap()), ["b", "a"]);
    assert_eq!(store.due_alarms(t(1_500)).unwrap(), vec![]);
    b.delete_alarm().unwrap();
    assert_eq!(b.get_alarm().unwrap(), None);
    b.sync().unwrap();
    assert_eq!(names(store.due_alarms(t(10_000)).unwrap()), ["a"]);
    a.delete_alarm().unwrap();
    a.sync().unwrap();
    assert_eq!(store.next_alarm().unwrap(), None);
}

#[test]
fn alarm_commits_atomically_with_data_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let ks = store.keyspace("obj").unwrap();
        ks.put("state", &1u8).unwrap();
        ks.set_alarm(t(7_000)).unwrap();
        // Failed commit: neither the data nor the alarm lands.
        store.fault_injection().fail_next_commit_of("obj");
        assert!(ks.sync().is_err());
        assert_eq!(ks.get_alarm().unwrap(), None);
        assert_eq!(store.next_alarm().unwrap(), None);
        ks.discard_pending();
        ks.put("state", &2u8).unwrap();
        ks.set_alarm(t(8_000)).unwrap();
        ks.sync().unwrap();
    }
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let ks = store.keyspace("obj").unwrap();
    assert_eq!(ks.get::<u8>("state").unwrap(), Some(2));
    assert_eq!(ks.get_alarm().unwrap(), Some(t(8_000)));
    assert_eq!(names(store.due_alarms(t(8_000)).unwrap()), ["obj"]);
}
