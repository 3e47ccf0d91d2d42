//! Storage faults: a full disk and a failing one, checked by the crash oracle.
//!
//! The child (this test binary re-executed, `fault_child`) runs under an `LD_PRELOAD` shim
//! (`common/fault_shim.c`) that makes the Nth write or flush of LMDB's `data.mdb` fail with
//! `ENOSPC` or `EIO`. It commits write sets of three keys (`a{i}`, `b{i}` and `last`, each
//! set waited for; the shim is armed once the store is open) and tells the parent how each ended: `ACK i`, `FULL i` or `FATAL i`.
//! After it exits, the parent reopens the store and checks every set: each acknowledged one
//! is there whole, each refused one is absent, `last` names the last acknowledged set.
//!
//! - ENOSPC on a write that grows the file is [`StorageError::Full`], and the store keeps
//!   committing once there is room again (the shim stops failing after a few calls).
//! - EIO on the flush, or on the meta-page write (LMDB's fatal state), is
//!   [`StorageError::Fatal`]: the `on_fatal` hook runs once, every later commit fails with
//!   it although the disk works again, and reopening the store recovers.
//! - A genuinely full file system (a 3 MiB tmpfs; needs root to mount, skipped otherwise and
//!   failed instead under `CAIRN_REQUIRE_MOUNT=1`): commits fail with `Full` until a
//!   ballast file is deleted, then succeed; nothing acknowledged is lost.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cairn_storage::{Config, ListOptions, StorageError, Store};
use cairn_testkit::ChildRun;
use rand::Rng;

const DIR_VAR: &str = "CAIRN_STORAGE_FAULT_DIR";
/// Sets the child tries.
const SETS: u64 = 300;
/// Each `a`/`b` value's size: big enough that most sets grow the file.
const VALUE_LEN: usize = 3_000;

/// How one set ended, as the child saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ack,
    Full,
    Fatal,
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_be_bytes());
    v
}

/// Commits set `i` and waits for it.
fn commit_set(ks: &cairn_storage::Keyspace, i: u64) -> Result<(), StorageError> {
    ks.put(format!("a{i:06}"), &value(i))?;
    ks.put(format!("b{i:06}"), &value(i))?;
    ks.put("last", &i)?;
    ks.commit().wait()
}

/// The child's body; does nothing unless run by a test below.
#[test]
fn fault_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    cairn_testkit::abort_on_panic();
    let store = Store::open(&dir, Config::default()).unwrap();
    store.on_fatal(|error| cairn_testkit::tell_parent(&format!("HOOK {error}")));
    let ks = store.keyspace("faults").unwrap();
    // Arm the shim (its calls count from here): the store is open.
    std::fs::write(std::env::var("CAIRN_FAULT_GATE").unwrap(), b"").unwrap();
    for i in 0..SETS {
        match commit_set(&ks, i) {
            Ok(()) => cairn_testkit::tell_parent(&format!("ACK {i}")),
            Err(StorageError::Full) => {
                // What a restarted incarnation does: drop what the failed set left pending.
                ks.discard_pending();
                cairn_testkit::tell_parent(&format!("FULL {i}"));
            }
            Err(StorageError::Fatal { .. }) => {
                ks.discard_pending();
                cairn_testkit::tell_parent(&format!("FATAL {i}"));
            }
            Err(other) => panic!("set {i}: unexpected error {other:?}"),
        }
    }
    let fatal = store.fatal_error().map_or("-".into(), |e| e.to_string());
    cairn_testkit::tell_parent(&format!("DONE fatal={fatal}"));
}

/// What the child reported.
struct Report {
    outcomes: BTreeMap<u64, Outcome>,
    hooks: usize,
    done: String,
}

fn run_child(dir: &Path, shim_env: &[(&str, String)]) -> Report {
    let dir_s = dir.to_str().unwrap();
    let mut child = ChildRun::start("fault_child", &[(DIR_VAR, dir_s)], |cmd: &mut Command| {
        cmd.env("LD_PRELOAD", common::fault_shim())
            .env("CAIRN_FAULT_DIR", dir.join("storage"))
            .env("CAIRN_FAULT_GATE", dir.join("armed"));
        for (k, v) in shim_env {
            cmd.env(k, v);
        }
    });
    let mut report = Report {
        outcomes: BTreeMap::new(),
        hooks: 0,
        done: String::new(),
    };
    for line in child.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let outcome = match word {
            "ACK" => Outcome::Ack,
            "FULL" => Outcome::Full,
            "FATAL" => Outcome::Fatal,
            "HOOK" => {
                report.hooks += 1;
                continue;
            }
            "DONE" => {
                report.done = rest.to_owned();
                continue;
            }
            _ => continue,
        };
        report.outcomes.insert(rest.parse().unwrap(), outcome);
    }
    let (status, stderr) = child.finish();
    assert!(
        status.success(),
        "child failed ({status}); stderr:\n{stderr}"
    );
    assert_eq!(report.outcomes.len() as u64, SETS, "stderr:\n{stderr}");
    report
}

/// The crash oracle: every acknowledged set whole, every refused one absent, a set that
/// failed fatally whole or absent, `last` the latest set stored.
fn check(dir: &Path, outcomes: &BTreeMap<u64, Outcome>) {
    let store = Store::open(dir, Config::default()).unwrap();
    let ks = store.keyspace("faults").unwrap();
    let mut latest = None;
    let mut stored = 0;
    for (&i, &outcome) in outcomes {
        let a: Option<Vec<u8>> = ks.get(format!("a{i:06}")).unwrap();
        let b: Option<Vec<u8>> = ks.get(format!("b{i:06}")).unwrap();
        assert_eq!(a.is_some(), b.is_some(), "set {i} ({outcome:?}) is torn");
        if let Some(a) = a {
            assert!(
                a == value(i) && b == Some(value(i)),
                "set {i}: wrong values"
            );
            latest = Some(i);
            stored += 1;
        }
        match outcome {
            Outcome::Ack => assert!(latest == Some(i), "acknowledged set {i} lost"),
            Outcome::Full => assert!(latest != Some(i), "set {i} refused as Full, yet stored"),
            Outcome::Fatal => {}
        }
    }
    let last: Option<u64> = ks.get("last").unwrap();
    assert_eq!(last, latest, "`last` is not the latest stored set");
    let keys = ks
        .list::<serde::de::IgnoredAny>(&ListOptions::new())
        .unwrap()
        .len();
    assert_eq!(
        keys,
        2 * stored + usize::from(last.is_some()),
        "stray keys stored"
    );
    // A reopened store takes writes again.
    commit_set(&ks, SETS).expect("the reopened store commits");
}

fn count(outcomes: &BTreeMap<u64, Outcome>, which: Outcome) -> usize {
    outcomes.values().filter(|&&o| o == which).count()
}

#[test]
fn enospc_is_full_and_the_store_goes_on_when_space_returns() {
    let (_seed, mut rng) = cairn_testkit::seeded_rng();
    let dir = tempfile::tempdir().unwrap();
    let nth: u32 = rng.gen_range(1..60);
    let times: u32 = rng.gen_range(1..8);
    let report = run_child(
        dir.path(),
        &[
            ("CAIRN_FAULT_OP", "write".into()),
            ("CAIRN_FAULT_ERRNO", "ENOSPC".into()),
            ("CAIRN_FAULT_GROW", "1".into()),
            ("CAIRN_FAULT_NTH", nth.to_string()),
            ("CAIRN_FAULT_TIMES", times.to_string()),
        ],
    );
    let o = &report.outcomes;
    eprintln!(
        "nth {nth} times {times}: {} acked, {} full",
        count(o, Outcome::Ack),
        count(o, Outcome::Full)
    );
    assert!(count(o, Outcome::Full) >= 1, "no commit saw the full disk");
    assert_eq!(count(o, Outcome::Fatal), 0, "ENOSPC must not be fatal");
    assert_eq!(report.hooks, 0);
    assert_eq!(report.done, "fatal=-");
    let last_full = o.iter().rev().find(|(_, &v)| v == Outcome::Full).unwrap().0;
    assert!(
        o.range(last_full..).any(|(_, &v)| v == Outcome::Ack),
        "no commit succeeded after space returned"
    );
    check(dir.path(), o);
}

fn eio_is_fatal(shim_env: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let report = run_child(dir.path(), shim_env);
    let o = &report.outcomes;
    let first_fatal = *o
        .iter()
        .find(|(_, &v)| v == Outcome::Fatal)
        .expect("no commit saw the I/O error")
        .0;
    assert!(
        o.range(first_fatal..).all(|(_, &v)| v == Outcome::Fatal),
        "a commit succeeded after the fatal error: {o:?}"
    );
    assert_eq!(count(o, Outcome::Full), 0);
    assert_eq!(report.hooks, 1, "the on_fatal hook runs exactly once");
    assert!(
        report.done.contains("storage failed"),
        "fatal_error() after EIO: {}",
        report.done
    );
    check(dir.path(), o);
}

#[test]
fn eio_on_a_flush_is_fatal_and_loses_no_acknowledged_write() {
    let (_seed, mut rng) = cairn_testkit::seeded_rng();
    let nth: u32 = rng.gen_range(1..60);
    // One failed flush only: the disk "works" again at once, yet the store takes no more.
    eio_is_fatal(&[
        ("CAIRN_FAULT_OP", "sync".into()),
        ("CAIRN_FAULT_ERRNO", "EIO".into()),
        ("CAIRN_FAULT_NTH", nth.to_string()),
        ("CAIRN_FAULT_TIMES", "1".into()),
    ]);
}

#[test]
fn eio_on_the_meta_page_is_fatal_and_loses_no_acknowledged_write() {
    let (_seed, mut rng) = cairn_testkit::seeded_rng();
    let nth: u32 = rng.gen_range(1..60);
    eio_is_fatal(&[
        ("CAIRN_FAULT_OP", "write".into()),
        ("CAIRN_FAULT_ERRNO", "EIO".into()),
        ("CAIRN_FAULT_BELOW", "8192".into()),
        ("CAIRN_FAULT_NTH", nth.to_string()),
        ("CAIRN_FAULT_TIMES", "1".into()),
    ]);
}

/// Unmounts (lazily) when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_tmpfs_is_full_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_MOUNT").is_none(),
            "cannot mount a tmpfs (needs root) and CAIRN_REQUIRE_MOUNT is set"
        );
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let _mount = Mount(dir.path().to_owned());
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();
    let config = Config {
        map_size: 64 << 20,
        ..Config::default()
    };
    let mut outcomes = BTreeMap::new();
    {
        let store = Store::open(dir.path(), config.clone()).unwrap();
        let ks = store.keyspace("faults").unwrap();
        let mut fulls = 0;
        let mut freed = false;
        let mut i = 0;
        while i < 1_000 && !(freed && outcomes.values().rev().take(3).all(|&o| o == Outcome::Ack)) {
            match commit_set(&ks, i) {
                Ok(()) => {
                    outcomes.insert(i, Outcome::Ack);
                }
                Err(StorageError::Full) => {
                    ks.discard_pending();
                    outcomes.insert(i, Outcome::Full);
                    assert!(!freed || fulls < 50, "still full after freeing 1 MiB");
                    fulls += 1;
                    if fulls == 3 && !freed {
                        std::fs::remove_file(&ballast).unwrap();
                        freed = true;
                    }
                }
                Err(other) => panic!("set {i}: {other:?} (expected Full)"),
            }
            i += 1;
        }
        assert!(freed, "3 MiB never filled up: {outcomes:?}");
        assert!(store.fatal_error().is_none());
        eprintln!(
            "tmpfs: {} acked, {} full",
            count(&outcomes, Outcome::Ack),
            count(&outcomes, Outcome::Full)
        );
    }
    check(dir.path(), &outcomes);
}
