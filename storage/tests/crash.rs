//! Crash consistency: an acknowledged write set survives, one that was not acknowledged is
//! wholly present or wholly absent — after `kill -9`, and after a power loss.
//!
//! The parent test re-executes this test binary as a child (`crash_child`, switched on by an
//! environment variable). The child's threads each drive one keyspace of the round, pipelining
//! write sets of three keys (`a{i}`, `b{i}`, `last`) and printing `ACK <thread> <i>` once set
//! `i`'s ticket resolved `Ok`. The parent kills the child (SIGKILL) after a seeded number of
//! acknowledgements — in even rounds early (from before the first one to a few dozen), in odd
//! rounds late (hundreds to thousands) — reopens the store and checks every round so far
//! against the model: every acknowledged set present, every set all-or-nothing, each
//! keyspace's sets a prefix of its hand-over order, and earlier rounds exactly as they were.
//!
//! A kill keeps the page cache, so it cannot tell a synced write from an unsynced one. The
//! power-loss variant runs the child under an `LD_PRELOAD` shim (`common/powerloss_shim.c`)
//! and, after the kill, replaces the store's file with what a power loss would have left:
//! only writes a completed sync covered, plus a seeded share of the unsynced ones. A store
//! that acknowledged before syncing (`MDB_NOSYNC`, say) fails it.
//!
//! A panic in any child thread aborts the child at once (it then ends before it is killed,
//! which fails the round, with its stderr in the message). `CAIRN_SEED` replays a run; the
//! `#[ignore]`d soaks run 100 rounds of each (`cargo test -p cairn-storage --test crash --
//! --ignored`).

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cairn_storage::{Config, ListOptions, Store};
use cairn_testkit::ChildRun;
use common::PowerLoss;
use rand::Rng;

const DIR_VAR: &str = "CAIRN_STORAGE_CRASH_DIR";
const ROUND_VAR: &str = "CAIRN_STORAGE_CRASH_ROUND";
const THREADS: usize = 4;
/// Sets each child thread keeps in flight before waiting for the oldest.
const PIPELINE: usize = 3;
/// Upper bound on sets per child thread, so an orphaned child ends by itself.
const MAX_SETS: u64 = 20_000;
/// Rounds run in CI, per kind of crash; the soaks run [`SOAK_ROUNDS`].
const CI_ROUNDS: u32 = 10;
const SOAK_ROUNDS: u32 = 100;

fn ks_name(round: u32, t: usize) -> String {
    format!("r{round}/w{t}")
}

/// The child's body; does nothing unless run by a test below.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    cairn_testkit::abort_on_panic();
    let round: u32 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let store = Store::open(&dir, Config::default()).unwrap();
    let keyspaces: Vec<_> = (0..THREADS)
        .map(|t| store.keyspace(&ks_name(round, t)).unwrap())
        .collect();
    cairn_testkit::tell_parent("READY");
    let threads: Vec<_> = keyspaces
        .into_iter()
        .enumerate()
        .map(|(t, ks)| {
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
                        cairn_testkit::tell_parent(&format!("ACK {t} {i}"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    Kill9,
    /// Kill, then keep only the synced writes, and each unsynced one with a probability
    /// drawn per round from {0, ½, 1}.
    PowerLoss,
}

/// What the parent knows after each round: sets committed per (round, thread).
type Observed = BTreeMap<(u32, usize), u64>;

fn run_rounds(crash: Crash, rounds: u32) {
    let (_seed, mut rng) = cairn_testkit::seeded_rng();
    let dir = tempfile::tempdir().unwrap();
    // The path LMDB is given, so the shim can recognise the store's file by prefix.
    let storage = dir.path().join("storage");
    let mut observed = Observed::new();
    for round in 0..rounds {
        // Even rounds: kill at READY (nothing acknowledged) or after a few dozen acks.
        // Odd rounds: after hundreds to thousands, with many group commits behind.
        let kill_after: usize = if round % 2 == 0 {
            rng.gen_range(0..40)
        } else {
            rng.gen_range(300..3_000)
        };
        let round_s = round.to_string();
        let env = [
            (DIR_VAR, dir.path().to_str().unwrap()),
            (ROUND_VAR, round_s.as_str()),
        ];
        let mut child = ChildRun::start("crash_child", &env, |cmd| {
            if crash == Crash::PowerLoss {
                common::under_shim(cmd, &storage, None);
            }
        });
        let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
        let mut acks = 0;
        let mut killed = false;
        let mut ready = false;
        for line in child.lines() {
            if line == "READY" {
                ready = true;
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let (t, i) = rest.split_once(' ').unwrap();
                let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
                let previous = acked.insert(t, i);
                assert!(
                    previous.is_none_or(|p| p + 1 == i),
                    "round {round} thread {t}: acks out of order ({previous:?} then {i})"
                );
                acks += 1;
            }
            if ready && acks >= kill_after && !killed {
                // Not a wait for anything: a seeded delay that spreads the kill over the
                // writer's cycle (collecting a batch, writing pages, inside fdatasync).
                std::thread::sleep(Duration::from_micros(rng.gen_range(0..3_000)));
                child.child.kill().unwrap(); // SIGKILL; lines already written are still read
                killed = true;
            }
        }
        let (status, stderr) = child.finish();
        assert!(
            killed,
            "round {round}: the child ended by itself ({status}) after {acks} acks; stderr:\n{stderr}"
        );
        let loss = match crash {
            Crash::Kill9 => PowerLoss::default(),
            Crash::PowerLoss => {
                let keep = [0.0, 0.5, 1.0][rng.gen_range(0..3)];
                common::power_loss(&storage, &mut rng, keep)
            }
        };
        let store = Store::open(dir.path(), Config::default()).unwrap();
        for t in 0..THREADS {
            let count = check_keyspace(&store, round, t);
            if let Some(&max_acked) = acked.get(&t) {
                assert!(
                    count > max_acked,
                    "round {round} thread {t}: acknowledged set {max_acked} lost (have {count}; \
                     {crash:?}, {loss:?})"
                );
            }
            observed.insert((round, t), count);
        }
        recheck_earlier_rounds(&store, round, &observed);
        eprintln!(
            "round {round}: killed after {acks} acks (aimed at {kill_after}); {loss:?}; \
             sets kept: {:?}",
            (0..THREADS)
                .map(|t| observed[&(round, t)])
                .collect::<Vec<_>>()
        );
    }
}

/// Checks keyspace `(round, t)` is whole and ordered; returns how many sets it holds.
fn check_keyspace(store: &Store, round: u32, t: usize) -> u64 {
    let ks = store.keyspace(&ks_name(round, t)).unwrap();
    let entries: Vec<(Vec<u8>, u64)> = ks.list(&ListOptions::new()).unwrap();
    let mut a = BTreeSet::new();
    let mut b = BTreeSet::new();
    let mut last = None;
    for (k, v) in entries {
        let k = String::from_utf8(k).unwrap();
        let index = |s: &str| -> u64 {
            let i = s.parse().unwrap();
            assert_eq!(v, i, "round {round} thread {t}: {k} holds {v}");
            i
        };
        match k.split_at(1) {
            ("a", i) => assert!(a.insert(index(i))),
            ("b", i) => assert!(b.insert(index(i))),
            _ if k == "last" => last = Some(v),
            _ => panic!("round {round} thread {t}: unexpected key {k}"),
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
    count
}

/// No later crash may change what an earlier round left.
fn recheck_earlier_rounds(store: &Store, round: u32, observed: &Observed) {
    for (&(r, t), &count) in observed.range(..(round, 0)) {
        assert_eq!(
            check_keyspace(store, r, t),
            count,
            "round {r} thread {t} changed during the crash of round {round}"
        );
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    run_rounds(Crash::Kill9, CI_ROUNDS);
}

#[test]
fn acknowledged_writes_survive_power_loss() {
    run_rounds(Crash::PowerLoss, CI_ROUNDS);
}

#[test]
#[ignore = "soak: 100 rounds"]
fn soak_kill_9() {
    run_rounds(Crash::Kill9, SOAK_ROUNDS);
}

#[test]
#[ignore = "soak: 100 rounds"]
fn soak_power_loss() {
    run_rounds(Crash::PowerLoss, SOAK_ROUNDS);
}
