//! Group commit, commit tickets, failure injection and a full map.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};

use cairn_storage::{Config, StorageError, Store};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), Config::default()).unwrap()
}

#[test]
fn hundred_keyspaces_committing_concurrently_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let spaces: Vec<_> = (0..100)
        .map(|i| store.keyspace(&format!("obj/{i}")).unwrap())
        .collect();
    let before = store.stats();
    let hold = store.fault_injection().hold_commits();
    let ready = Arc::new(Barrier::new(101));
    let threads: Vec<_> = spaces
        .into_iter()
        .enumerate()
        .map(|(i, ks)| {
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                ks.put("n", &i).unwrap();
                let t = ks.commit();
                ready.wait();
                t.wait().unwrap();
                ks
            })
        })
        .collect();
    ready.wait(); // all 100 sets are queued
    drop(hold);
    let spaces: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let after = store.stats();
    assert_eq!(after.write_sets - before.write_sets, 100);
    // One commit is one data flush and one meta write: tests/durability.rs counts them.
    assert_eq!(after.commits - before.commits, 1, "{after:?}");
    assert_eq!(after.largest_batch, 100);
    for (i, ks) in spaces.iter().enumerate() {
        assert_eq!(ks.get::<usize>("n").unwrap(), Some(i));
    }
}

#[test]
fn concurrent_committers_without_a_hold_still_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let before = store.stats();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let ks = store.keyspace(&format!("free/{i}")).unwrap();
            std::thread::spawn(move || {
                for round in 0..5u32 {
                    ks.put("round", &round).unwrap();
                    ks.commit().wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = store.stats();
    assert_eq!(after.write_sets - before.write_sets, 500);
    assert!(after.commits - before.commits < 500, "{after:?}");
}

#[test]
fn write_sets_of_one_keyspace_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config {
            max_batch_sets: 3, // force several batches
            ..Config::default()
        },
    )
    .unwrap();
    let ks = store.keyspace("seq").unwrap();
    let hold = store.fault_injection().hold_commits();
    let tickets: Vec<_> = (0..10u32)
        .map(|i| {
            ks.put("v", &i).unwrap();
            ks.put(format!("k{i}"), &i).unwrap();
            ks.commit()
        })
        .collect();
    drop(hold);
    for t in &tickets {
        t.wait().unwrap();
    }
    drop(ks);
    drop(store);
    let store = open(&dir);
    let ks = store.keyspace("seq").unwrap();
    assert_eq!(ks.get::<u32>("v").unwrap(), Some(9));
    assert!(store.stats().largest_batch <= 3);
}

struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn ticket_is_a_future_woken_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("f").unwrap();
    let hold = store.fault_injection().hold_commits();
    ks.put("k", &1u8).unwrap();
    let ticket = ks.commit();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(ticket.clone());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    drop(hold);
    ticket.wait().unwrap();
    // The writer wakes futures just after publishing the result; allow it that instant.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !flag.0.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "waker was never called"
        );
        std::thread::yield_now();
    }
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
}

#[test]
fn injected_failure_fails_the_ticket_and_later_sets_of_that_keyspace_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let bad = store.keyspace("bad").unwrap();
    let good = store.keyspace("good").unwrap();
    bad.put("base", &0u8).unwrap();
    bad.sync().unwrap();

    store.fault_injection().fail_next_commit_of("bad");
    let hold = store.fault_injection().hold_commits();
    bad.put("a", &1u8).unwrap();
    let t1 = bad.commit();
    bad.put("b", &2u8).unwrap(); // built on top of the failing set
    let t2 = bad.commit();
    good.put("g", &3u8).unwrap();
    let tg = good.commit();
    bad.put("c", &4u8).unwrap(); // pending when the failure happens
    drop(hold);
    assert!(matches!(t1.wait(), Err(StorageError::Injected)));
    assert!(matches!(t2.wait(), Err(StorageError::EarlierCommitFailed)));
    tg.wait().unwrap();
    // The failed writes are gone from the keyspace's view, pending ones included.
    assert_eq!(bad.get::<u8>("a").unwrap(), None);
    assert_eq!(bad.get::<u8>("b").unwrap(), None);
    assert_eq!(bad.get::<u8>("c").unwrap(), None);
    assert_eq!(bad.get::<u8>("base").unwrap(), Some(0));
    // The next commit reports the failure once; after that the keyspace works again.
    assert!(matches!(
        bad.commit().wait(),
        Err(StorageError::EarlierCommitFailed)
    ));
    bad.put("d", &5u8).unwrap();
    bad.sync().unwrap();
    assert_eq!(bad.get::<u8>("d").unwrap(), Some(5));
    assert_eq!(good.get::<u8>("g").unwrap(), Some(3));
    assert_eq!(store.stats().failed_write_sets, 2);
}

#[test]
fn discard_pending_clears_the_poison_for_a_restarted_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ks = store.keyspace("x").unwrap();
    store.fault_injection().fail_next_commit_of("x");
    ks.put("a", &1u8).unwrap();
    assert!(ks.sync().is_err());
    ks.discard_pending();
    ks.put("b", &2u8).unwrap();
    ks.sync().unwrap();
    assert_eq!(ks.get::<u8>("b").unwrap(), Some(2));
    assert_eq!(ks.get::<u8>("a").unwrap(), None);
}

#[test]
fn failed_group_commit_is_retried_set_by_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let spaces: Vec<_> = (0..5)
        .map(|i| store.keyspace(&format!("r{i}")).unwrap())
        .collect();
    store.fault_injection().fail_next_lmdb_commits(1);
    let hold = store.fault_injection().hold_commits();
    let tickets: Vec<_> = spaces
        .iter()
        .map(|ks| {
            ks.put("k", &1u8).unwrap();
            ks.commit()
        })
        .collect();
    drop(hold);
    for t in &tickets {
        t.wait().unwrap();
    }
    let s = store.stats();
    assert_eq!(s.batch_retries, 1);
    assert_eq!(s.write_sets, 5);
    assert_eq!(s.failed_write_sets, 0);

    // A failing disk that fails the batch and its first retry: only that set fails.
    store.fault_injection().fail_next_lmdb_commits(2);
    let hold = store.fault_injection().hold_commits();
    let tickets: Vec<_> = spaces
        .iter()
        .map(|ks| {
            ks.put("k", &2u8).unwrap();
            ks.commit()
        })
        .collect();
    drop(hold);
    let results: Vec<_> = tickets.iter().map(|t| t.wait().is_ok()).collect();
    assert_eq!(results, [false, true, true, true, true]);
    assert_eq!(spaces[0].get::<u8>("k").unwrap(), Some(1));
    assert_eq!(spaces[1].get::<u8>("k").unwrap(), Some(2));
}

#[test]
fn full_map_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config {
            map_size: 1 << 20, // 1 MiB
            ..Config::default()
        },
    )
    .unwrap();
    let ks = store.keyspace("big").unwrap();
    let small = store.keyspace("small").unwrap();
    small.put("k", &1u8).unwrap();
    small.sync().unwrap();
    let chunk = vec![0xABu8; 64 << 10];
    let mut full = None;
    for i in 0..64 {
        ks.put(format!("chunk{i}"), &chunk).unwrap();
        if let Err(e) = ks.sync() {
            full = Some((i, e));
            break;
        }
    }
    let (i, e) = full.expect("a 1 MiB map must fill up");
    assert!(matches!(e, StorageError::Full), "{e:?}");
    assert!(i > 0);
    // The store still works: reads, and writes once space is freed.
    assert_eq!(small.get::<u8>("k").unwrap(), Some(1));
    ks.discard_pending();
    assert!(ks.get::<Vec<u8>>("chunk0").unwrap().is_some());
    ks.delete_all().unwrap();
    ks.sync().unwrap();
    small.put("k", &2u8).unwrap();
    small.sync().unwrap();
}

#[test]
fn store_sync_waits_for_everything_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            let ks = store.keyspace(&format!("s{i}")).unwrap();
            ks.put("k", &i).unwrap();
            ks.commit()
        })
        .collect();
    store.sync().unwrap();
    assert!(tickets.iter().all(|t| t.is_done()));
}
