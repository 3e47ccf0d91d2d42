//! Durability you can count: the flushes the store really makes, seen at the system-call
//! boundary by the `LD_PRELOAD` shim in `common/powerloss_shim.c` (which counts `fsync`,
//! `fdatasync`, `msync` and writes through `O_DSYNC` descriptors on the store's file).
//!
//! Every LMDB commit of the store must be exactly one `fdatasync` of the data pages followed
//! by one synchronous (`O_DSYNC`) write of the meta page, done before its tickets resolve; a
//! group commit of many write sets is still one of each. The child (`flush_child`, this binary
//! re-executed under the shim) makes its checks as it goes and the parent requires that it
//! ran and passed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use cairn_storage::{Config, Store};
use cairn_testkit::ChildRun;
use common::Flushes;

const DIR_VAR: &str = "CAIRN_STORAGE_FLUSH_DIR";
const COUNTS_VAR: &str = "CAIRN_STORAGE_FLUSH_COUNTS";
const KEYSPACES: usize = 100;
const SEQUENTIAL: u64 = 20;

/// Flushes and commits since `base`.
fn since(counts: &Path, store: &Store, base: (Flushes, u64)) -> (Flushes, u64) {
    let now = Flushes::read(counts);
    let f = Flushes {
        fsync: now.fsync - base.0.fsync,
        fdatasync: now.fdatasync - base.0.fdatasync,
        dsync_writes: now.dsync_writes - base.0.dsync_writes,
        writes: now.writes - base.0.writes,
        msync: now.msync - base.0.msync,
    };
    (f, store.stats().commits - base.1)
}

/// The child's body; does nothing unless run by the test below (under the shim).
#[test]
fn flush_child() {
    let (Ok(dir), Ok(counts)) = (std::env::var(DIR_VAR), std::env::var(COUNTS_VAR)) else {
        return;
    };
    let counts = PathBuf::from(counts);
    // The parent created the store, so opening it commits nothing.
    let store = Store::open(&dir, Config::default()).unwrap();
    let base = |store: &Store| (Flushes::read(&counts), store.stats().commits);

    // One group commit of 100 keyspaces' sets: one fdatasync, one meta write.
    let spaces: Vec<_> = (0..KEYSPACES)
        .map(|i| store.keyspace(&format!("obj/{i}")).unwrap())
        .collect();
    let start = base(&store);
    let hold = store.fault_injection().hold_commits();
    let queued = Arc::new(Barrier::new(KEYSPACES + 1));
    let threads: Vec<_> = spaces
        .into_iter()
        .enumerate()
        .map(|(i, ks)| {
            let queued = Arc::clone(&queued);
            std::thread::spawn(move || {
                ks.put("n", &i).unwrap();
                let ticket = ks.commit();
                queued.wait();
                ticket.wait().unwrap();
            })
        })
        .collect();
    queued.wait();
    drop(hold);
    for t in threads {
        t.join().unwrap();
    }
    let (flushes, commits) = since(&counts, &store, start);
    assert_eq!(commits, 1, "the held sets did not commit as one group");
    assert_eq!(
        (flushes.fdatasync, flushes.dsync_writes),
        (1, 1),
        "one group commit must be one data flush and one synchronous meta write: {flushes:?}"
    );

    // Sequential commits: each ticket resolves only after its own flushes happened.
    let ks = store.keyspace("seq").unwrap();
    let start = base(&store);
    for i in 1..=SEQUENTIAL {
        ks.put("i", &i).unwrap();
        ks.commit().wait().unwrap();
        let (flushes, commits) = since(&counts, &store, start);
        assert_eq!(commits, i);
        assert_eq!(
            (flushes.fdatasync, flushes.dsync_writes),
            (i, i),
            "commit {i} was acknowledged before its flushes: {flushes:?}"
        );
    }
    let (flushes, _) = since(&counts, &store, start);
    assert_eq!(
        (flushes.fsync, flushes.msync),
        (0, 0),
        "unexpected flush kinds (a writable map would hide writes from the shim): {flushes:?}"
    );
    cairn_testkit::tell_parent("FLUSHES CHECKED");
}

#[test]
fn every_commit_is_one_data_flush_and_one_synchronous_meta_write_before_its_ack() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Config::default()).unwrap());
    let counts = dir.path().join("flush-counts");
    let storage = dir.path().join("storage");
    let env = [
        (DIR_VAR, dir.path().to_str().unwrap()),
        (COUNTS_VAR, counts.to_str().unwrap()),
    ];
    let mut child = ChildRun::start("flush_child", &env, |cmd| {
        common::under_shim(cmd, &storage, Some(&counts));
    });
    let lines: Vec<String> = child.lines().collect();
    let checked = lines.iter().any(|l| l == "FLUSHES CHECKED");
    let (status, stderr) = child.finish();
    assert!(
        status.success() && checked,
        "the child under the shim failed ({status}, checks ran: {checked}); stderr:\n{stderr}"
    );
}
