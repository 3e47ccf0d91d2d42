//! Crash consistency under `kill -9`: an acknowledged write set survives, one that was not
//! acknowledged is wholly present or wholly absent.
//!
//! The parent test re-executes this test binary as a child (`crash_child`, switched on by an
//! environment variable). The child's threads each drive one keyspace, pipelining write sets
//! of three keys (`a{i}`, `b{i}`, `last`) and printing `ACK <thread> <i>` once set `i`'s ticket
//! resolved `Ok`. The parent SIGKILLs the child after a random number of acknowledgements,
//! reopens the store and checks against that model: every acknowledged set is present, every
//! set is all-or-nothing, and each keyspace's sets are a prefix of its hand-over order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use cairn_storage::{Config, ListOptions, Store};
use rand::Rng;

const DIR_VAR: &str = "CAIRN_STORAGE_CRASH_DIR";
const ROUND_VAR: &str = "CAIRN_STORAGE_CRASH_ROUND";
const THREADS: usize = 4;
/// Sets each child thread keeps in flight before waiting for the oldest.
const PIPELINE: usize = 3;
/// Upper bound on sets per child thread, so an orphaned child ends by itself.
const MAX_SETS: u64 = 20_000;

fn ks_name(round: u32, t: usize) -> String {
    format!("r{round}/w{t}")
}

/// The child's body; does nothing unless run by `acknowledged_writes_survive_kill_9`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let store = Store::open(&dir, Config::default()).unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let ks = store.keyspace(&ks_name(round, t)).unwrap();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut inflight = VecDeque::new();
                for i in 0..MAX_SETS {
                    ks.put(format!("a{i:06}"), &i).unwrap();
                    ks.put(format!("b{i:06}"), &i).unwrap();
                    ks.put("last", &i).unwrap();
                    inflight.push_back((i, ks.commit()));
                    if inflight.len() >= PIPELINE {
                        let (i, ticket) = inflight.pop_front().unwrap();
                        ticket.wait().unwrap();
                        let mut o = out.lock().unwrap();
                        writeln!(o, "ACK {t} {i}").unwrap();
                        o.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    for round in 0..3u32 {
        let kill_after = rng.gen_range(20..300);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(ROUND_VAR, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
        let mut n = 0;
        let mut killed = false;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (t, i) = rest.split_once(' ').unwrap();
            acked
                .entry(t.parse().unwrap())
                .or_default()
                .insert(i.parse().unwrap());
            n += 1;
            if n == kill_after {
                child.kill().unwrap(); // SIGKILL; lines already written are still read
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child exited before being killed: {status:?}");

        let store = Store::open(dir.path(), Config::default()).unwrap();
        for t in 0..THREADS {
            let ks = store.keyspace(&ks_name(round, t)).unwrap();
            let entries: Vec<(Vec<u8>, u64)> = ks.list(&ListOptions::new()).unwrap();
            let mut a = BTreeSet::new();
            let mut b = BTreeSet::new();
            let mut last = None;
            for (k, v) in entries {
                let k = String::from_utf8(k).unwrap();
                match k.split_at(1) {
                    ("a", i) => assert!(
                        a.insert(i.parse::<u64>().unwrap()) && v == i.parse::<u64>().unwrap()
                    ),
                    ("b", i) => assert!(
                        b.insert(i.parse::<u64>().unwrap()) && v == i.parse::<u64>().unwrap()
                    ),
                    _ if k == "last" => last = Some(v),
                    _ => panic!("unexpected key {k}"),
                }
            }
            assert_eq!(a, b, "round {round} thread {t}: a torn write set");
            let count = a.len() as u64;
            assert!(
                a.iter().copied().eq(0..count),
                "round {round} thread {t}: sets out of order"
            );
            assert_eq!(
                last,
                count.checked_sub(1),
                "round {round} thread {t}: `last` torn"
            );
            if let Some(max_acked) = acked.get(&t).and_then(|s| s.last()) {
                assert!(
                    count > *max_acked,
                    "round {round} thread {t}: acknowledged set {max_acked} lost (have {count})"
                );
            }
        }
        let total: usize = acked.values().map(BTreeSet::len).sum();
        assert_eq!(total, n);
    }
}
