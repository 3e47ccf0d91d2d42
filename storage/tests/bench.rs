//! Throughput measurement, ignored by default. Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-storage cargo test --release -p cairn-storage --test bench \
//!     -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use cairn_storage::{Config, Store};

/// 1,000 keyspaces (actors) commit one small write set each per round, all concurrently: 8
/// driver threads of 125 keyspaces, each handing over its 125 sets then waiting their tickets.
#[test]
#[ignore = "benchmark; run explicitly"]
fn acked_write_sets_per_second_with_1000_keyspaces() {
    const KEYSPACES: usize = 1_000;
    const DRIVERS: usize = 8;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let spaces: Vec<_> = (0..KEYSPACES)
        .map(|i| store.keyspace(&format!("bench/{i}")).unwrap())
        .collect();
    let before = store.stats();
    let start = Instant::now();
    let run_for = Duration::from_secs(3);
    let acked: usize = std::thread::scope(|s| {
        let handles: Vec<_> = spaces
            .chunks(KEYSPACES / DRIVERS)
            .map(|mine| {
                s.spawn(move || {
                    let mut acked = 0;
                    let mut round = 0u64;
                    while start.elapsed() < run_for {
                        let tickets: Vec<_> = mine
                            .iter()
                            .map(|ks| {
                                ks.put("counter", &round).unwrap();
                                ks.commit()
                            })
                            .collect();
                        for t in tickets {
                            t.wait().unwrap();
                            acked += 1;
                        }
                        round += 1;
                    }
                    acked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    let s = store.stats();
    let commits = s.commits - before.commits;
    println!(
        "{KEYSPACES} keyspaces: {acked} acked write sets in {secs:.2} s = {:.0}/s; \
         {commits} LMDB commits ({:.0}/s), {:.1} sets per commit, largest batch {}",
        acked as f64 / secs,
        commits as f64 / secs,
        acked as f64 / commits.max(1) as f64,
        s.largest_batch
    );
}
