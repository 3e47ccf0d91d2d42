//! Online backups (`Store::backup`, LMDB's compacting copy) and restores (`Store::restore`),
//! and the counters a backup's writer load moves (`Stats::commit_latency`, map use).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_storage::{Config, StorageError, Store};

/// A writer commits key after key while a backup is taken. Every key acknowledged before the
/// backup began is in the restored store with its value, and every key in it is one that was
/// written (a consistent snapshot: no torn or invented state).
#[test]
fn a_backup_taken_under_load_restores_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let ks = store.keyspace("load").unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ks, acked, stop) = (ks.clone(), Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ks.put(format!("k{i:08}"), &(i * 7)).unwrap();
                ks.sync().unwrap();
                i += 1;
                acked.store(i, Ordering::Release);
            }
        })
    };
    while acked.load(Ordering::Acquire) < 50 {
        std::thread::yield_now();
    }
    let acked_before = acked.load(Ordering::Acquire);
    let file = dir.path().join("backup.mdb");
    store
        .backup(&std::fs::File::create(&file).unwrap())
        .unwrap();
    // Keep writing after the copy, to show it is a snapshot and not the live file.
    let floor = acked.load(Ordering::Acquire) + 20;
    while acked.load(Ordering::Acquire) < floor {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = acked.load(Ordering::Acquire);

    let fresh = tempfile::tempdir().unwrap();
    Store::restore(&file, fresh.path()).unwrap();
    let restored = Store::open(fresh.path(), Config::default()).unwrap();
    let rks = restored.keyspace("load").unwrap();
    let mut present = 0;
    for i in 0..written {
        match rks.get::<u64>(format!("k{i:08}")).unwrap() {
            Some(v) => {
                assert_eq!(v, i * 7);
                present += 1;
            }
            None => assert!(i >= acked_before, "acknowledged key {i} missing"),
        }
    }
    // A snapshot: a prefix of the writes, not all of them.
    assert!(present >= acked_before && present < written);
    for i in 0..present {
        assert!(rks.get::<u64>(format!("k{i:08}")).unwrap().is_some());
    }
}

/// A restore never overwrites a store: the target must be empty.
#[test]
fn a_restore_into_a_data_dir_with_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.mdb");
    {
        let store = Store::open(dir.path().join("a"), Config::default()).unwrap();
        let ks = store.keyspace("x").unwrap();
        ks.put("k", &1u8).unwrap();
        ks.sync().unwrap();
        store
            .backup(&std::fs::File::create(&file).unwrap())
            .unwrap();
    }
    let target = dir.path().join("b");
    {
        let store = Store::open(&target, Config::default()).unwrap();
        let ks = store.keyspace("x").unwrap();
        ks.put("k", &2u8).unwrap();
        ks.sync().unwrap();
    }
    let err = Store::restore(&file, &target).unwrap_err();
    assert!(matches!(err, StorageError::Exists(_)), "{err}");
    let store = Store::open(&target, Config::default()).unwrap();
    assert_eq!(
        store.keyspace("x").unwrap().get::<u8>("k").unwrap(),
        Some(2)
    );
}

/// Every commit is timed (one histogram observation per LMDB commit), and so is its flush
/// (one per commit too, each within its commit); the map use grows with the data.
#[test]
fn commits_are_timed_and_map_use_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let ks = store.keyspace("x").unwrap();
    let before = store.stats();
    for i in 0..20u32 {
        ks.put(format!("k{i}"), &vec![0u8; 4096]).unwrap();
        ks.sync().unwrap();
    }
    let after = store.stats();
    assert_eq!(
        after.commit_latency.count() - before.commit_latency.count(),
        after.commits - before.commits
    );
    assert!(after.commits - before.commits >= 20);
    assert_eq!(
        after.fsync_latency.count() - before.fsync_latency.count(),
        after.commits - before.commits
    );
    assert!(after.fsync_latency.sum_us <= after.commit_latency.sum_us);
    assert!(after.map_used > before.map_used);
    assert_eq!(after.map_size, Config::default().map_size as u64);
}
