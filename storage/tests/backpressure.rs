//! The writer queue is bounded: durable work pushes back on committers when the writer is
//! saturated (here: held on purpose), the queue never holds more than its bound, a commit
//! that finds it full for too long fails with `Overloaded` and keeps its writes, and
//! nothing acknowledged is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_storage::{Config, StorageError, Store};

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `done` holds (checked every few milliseconds), failing at the deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_flood_of_commits_never_queues_more_than_the_bound_and_loses_nothing_acknowledged() {
    const BOUND: usize = 32;
    const THREADS: usize = 16;
    const SPACES: usize = 20; // per thread: 320 keyspaces
    const ROUNDS: u64 = 10; // 3,200 write sets in all
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_queued_sets: BOUND,
        max_batch_sets: 8,
        queue_wait: DEADLINE,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config.clone()).unwrap();
    let handed = Arc::new(AtomicUsize::new(0));
    let hold = store.fault_injection().hold_commits();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let handed = Arc::clone(&handed);
            std::thread::spawn(move || {
                let spaces: Vec<_> = (0..SPACES)
                    .map(|i| store.keyspace(&format!("flood/{t}/{i}")).unwrap())
                    .collect();
                let mut tickets = Vec::new();
                for round in 0..ROUNDS {
                    for ks in &spaces {
                        ks.put("round", &round).unwrap();
                        tickets.push(ks.commit());
                        handed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Every set acknowledged (durable), none refused: waiting was enough.
                for ticket in tickets {
                    ticket.wait().unwrap();
                }
            })
        })
        .collect();

    // The writer is held: the queue fills to its bound and every committer waits there.
    wait_until("a full queue", || {
        store.stats().queued_sets == BOUND as u64 && handed.load(Ordering::SeqCst) >= BOUND
    });
    let stats = store.stats();
    // Reserved places count too: nothing more got in, or is about to.
    assert_eq!(stats.queue_high_water, BOUND as u64, "{stats:?}");

    drop(hold);
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = store.stats();
    let total = THREADS * SPACES * ROUNDS as usize;
    assert_eq!(stats.write_sets, total as u64, "{stats:?}");
    assert!(
        stats.queue_high_water <= BOUND as u64,
        "the queue held {} sets (bound {BOUND})",
        stats.queue_high_water
    );
    assert_eq!(stats.overloaded_commits, 0);
    assert_eq!(stats.queued_sets, 0);

    // Reopened, every keyspace holds its last acknowledged write.
    drop(store);
    let store = Store::open(dir.path(), config).unwrap();
    for t in 0..THREADS {
        for i in 0..SPACES {
            let ks = store.keyspace(&format!("flood/{t}/{i}")).unwrap();
            assert_eq!(ks.get::<u64>("round").unwrap(), Some(ROUNDS - 1), "{t}/{i}");
        }
    }
}

#[test]
fn a_commit_that_finds_the_queue_full_too_long_fails_overloaded_and_keeps_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_queued_sets: 4,
        queue_wait: Duration::from_millis(200),
        ..Config::default()
    };
    let store = Store::open(dir.path(), config.clone()).unwrap();
    let hold = store.fault_injection().hold_commits();
    let first: Vec<_> = (0..4)
        .map(|i| {
            let ks = store.keyspace(&format!("first/{i}")).unwrap();
            ks.put("v", &i).unwrap();
            ks.commit()
        })
        .collect();
    let late = store.keyspace("late").unwrap();
    late.put("v", &99u32).unwrap();
    let refused = late.commit().wait();
    assert!(
        matches!(refused, Err(StorageError::Overloaded { .. })),
        "{refused:?}"
    );
    assert!(
        late.has_pending(),
        "the refused commit's writes were dropped"
    );
    assert_eq!(late.get::<u32>("v").unwrap(), Some(99));
    let stats = store.stats();
    assert_eq!((stats.overloaded_commits, stats.queued_sets), (1, 4));

    drop(hold);
    for ticket in first {
        ticket.wait().unwrap();
    }
    // Not poisoned: the next commit carries the kept writes.
    late.commit().wait().unwrap();
    drop((late, store));
    let store = Store::open(dir.path(), config).unwrap();
    assert_eq!(
        store.keyspace("late").unwrap().get::<u32>("v").unwrap(),
        Some(99)
    );
    for i in 0..4u32 {
        let ks = store.keyspace(&format!("first/{i}")).unwrap();
        assert_eq!(ks.get::<u32>("v").unwrap(), Some(i));
    }
}
