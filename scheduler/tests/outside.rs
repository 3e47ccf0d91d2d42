//! Links and monitors made from outside any process (`Handle::link`, `Handle::monitor`)
//! obey the semantics of in-process ones (DESIGN.md semantic 7): each test here is a test of
//! `links.rs` with the link or monitor made from outside.

mod common;

use std::sync::Arc;

use cairn_scheduler::{ExitReason, Handle, NodeId, NotLocal, Pid, SpawnOptions};
use common::*;

fn link(rt: &Handle, a: Pid, b: Pid) {
    rt.link(a, b).expect("both pids are local");
}

#[test]
fn an_abnormal_exit_kills_processes_linked_from_outside_both_ways() {
    let rt = runtime(2);
    // The first argument crashes...
    let (a, b) = (probe(&rt), probe(&rt));
    link(&rt, a.pid(), b.pid());
    assert_eq!(
        exits_after(&rt, &[a.pid(), b.pid()], || rt.exit(a.pid(), err("boom"))),
        [err("boom"), err("boom")]
    );
    // ...or the second one, by returning an error.
    let (a, b) = (probe(&rt), probe(&rt));
    link(&rt, a.pid(), b.pid());
    assert_eq!(
        exits_after(&rt, &[a.pid(), b.pid()], || stop(&b, err("crashed"))),
        [err("crashed"), err("crashed")]
    );
}

#[test]
fn a_panic_propagates_through_a_link_made_from_outside() {
    let rt = runtime(2);
    let peer = probe(&rt);
    let crasher = spawn_panicker(&rt, SpawnOptions::default());
    link(&rt, crasher.pid(), peer.pid());
    panic_takes_along(&rt, &crasher, peer.pid());
}

#[test]
fn a_trapping_process_linked_from_outside_receives_the_exit_signal() {
    let rt = runtime(2);
    let (trapper, rx) = forwarding_trapper(&rt);
    let crasher = probe(&rt);
    link(&rt, trapper.pid(), crasher.pid());
    exit_and_wait(&rt, crasher.pid(), err("boom"));
    assert_eq!(recv(&rx), exit_signal(crasher.pid(), err("boom")));
    assert!(answers(&rt, &trapper));
}

#[test]
fn a_normal_exit_does_not_kill_processes_linked_from_outside() {
    let rt = runtime(2);
    let plain = probe(&rt);
    let (trapper, rx) = forwarding_trapper(&rt);
    let leaver = probe(&rt);
    link(&rt, leaver.pid(), plain.pid());
    link(&rt, trapper.pid(), leaver.pid());
    stop_and_wait(&rt, &leaver, ExitReason::Normal);
    assert!(answers(&rt, &plain));
    assert_eq!(recv(&rx), exit_signal(leaver.pid(), ExitReason::Normal));
}

#[test]
fn kill_reaches_processes_linked_from_outside_as_killed() {
    let rt = runtime(2);
    let victim = trapping_probe(&rt);
    let (trapping_peer, rx) = forwarding_trapper(&rt);
    let plain_peer = probe(&rt);
    link(&rt, victim.pid(), trapping_peer.pid());
    link(&rt, plain_peer.pid(), victim.pid());
    assert_eq!(
        exits_after(&rt, &[victim.pid(), plain_peer.pid()], || rt
            .kill(victim.pid())),
        [ExitReason::Killed, ExitReason::Killed]
    );
    assert_eq!(recv(&rx), exit_signal(victim.pid(), ExitReason::Killed));
    assert!(answers(&rt, &trapping_peer));
}

#[test]
fn an_outside_monitor_fires_exactly_once_with_the_exit_reason() {
    let rt = runtime(2);
    let target = probe(&rt);
    let mut m1 = rt.monitor(target.pid());
    let m2 = rt.monitor(target.pid());
    assert_ne!(m1.monitor_ref(), m2.monitor_ref());
    assert_eq!(m1.pid(), target.pid());
    assert_eq!(m1.try_down(), None, "fired before the exit");
    rt.exit(target.pid(), err("down"));
    assert_eq!(within(&rt, &mut m1), err("down"));
    assert_eq!(within(&rt, m2), err("down"));
    // Fired once: no second reason, and a fired monitor cannot be removed.
    assert_eq!(m1.try_down(), None, "a monitor fired twice");
    assert!(!rt.demonitor(m1));
}

#[test]
fn monitoring_an_exited_pid_from_outside_fires_at_once_with_no_proc() {
    let rt = runtime(2);
    let gone = exited_pid(&rt);
    let mut m = rt.monitor(gone);
    // At once: no waiting needed.
    assert_eq!(m.try_down(), Some(ExitReason::NoProc));
}

#[test]
fn demonitor_from_outside_prevents_the_down_and_flushes_a_fired_one() {
    let rt = runtime(2);
    let target = probe(&rt);
    let removed = rt.monitor(target.pid());
    let witness = rt.monitor(target.pid());
    assert!(rt.demonitor(removed), "an active monitor was not found");
    rt.exit(target.pid(), err("down"));
    assert_eq!(within(&rt, witness), err("down"));

    // Fired but not yet observed: demonitor says it was no longer active, and the reason
    // is gone with the monitor (flushed).
    let target = probe(&rt);
    let fired = rt.monitor(target.pid());
    exit_and_wait(&rt, target.pid(), err("down"));
    assert!(!rt.demonitor(fired));
}

#[test]
fn dropping_an_outside_monitor_removes_it() {
    let rt = runtime(2);
    let target = probe(&rt);
    let dropped = rt.monitor(target.pid());
    let kept = rt.monitor(target.pid());
    let dropped_ref = dropped.monitor_ref();
    drop(dropped);
    // The target no longer holds the dropped monitor: a process removing it by its ref
    // finds nothing (demonitor is keyed by the monitor ref alone).
    let watcher = probe(&rt);
    assert!(!ask(&rt, &watcher, |r| Probe::Demonitor(
        target.pid(),
        dropped_ref,
        r
    )));
    rt.exit(target.pid(), err("down"));
    assert_eq!(within(&rt, kept), err("down"));
}

#[test]
fn linking_from_outside_to_an_exited_pid_gives_a_no_proc_exit_signal() {
    let rt = runtime(2);
    let gone = exited_pid(&rt);
    // Whichever side the exited pid is given on.
    for gone_first in [false, true] {
        let (trapper, rx) = forwarding_trapper(&rt);
        if gone_first {
            link(&rt, gone, trapper.pid());
        } else {
            link(&rt, trapper.pid(), gone);
        }
        assert_eq!(recv(&rx), exit_signal(gone, ExitReason::NoProc));
        assert!(answers(&rt, &trapper));

        let plain = probe(&rt);
        assert_eq!(
            exit_after(&rt, plain.pid(), || if gone_first {
                link(&rt, gone, plain.pid())
            } else {
                link(&rt, plain.pid(), gone)
            }),
            ExitReason::NoProc
        );
    }
}

#[test]
fn unlink_from_outside_prevents_exit_propagation() {
    let rt = runtime(2);
    let crasher = probe(&rt);
    let plain = probe(&rt);
    let trapper = trapping_probe(&rt);
    for p in [&plain, &trapper] {
        link(&rt, p.pid(), crasher.pid());
        rt.unlink(crasher.pid(), p.pid()).unwrap();
    }
    exit_and_wait(&rt, crasher.pid(), err("boom"));
    assert!(answers(&rt, &plain));
    assert_eq!(signals_of(&rt, &trapper), []);

    // A link made inside a process can be removed from outside too.
    let crasher = probe(&rt);
    let peer = probe(&rt);
    ask(&rt, &peer, |r| Probe::Link(crasher.pid(), r));
    rt.unlink(peer.pid(), crasher.pid()).unwrap();
    stop_and_wait(&rt, &crasher, err("boom"));
    assert!(answers(&rt, &peer));
}

#[test]
fn a_crash_kills_every_process_in_a_chain_of_1000_outside_links() {
    const N: usize = 1_000;
    let rt = runtime(2);
    let chain: Vec<_> = (0..N).map(|_| probe(&rt)).collect();
    for pair in chain.windows(2) {
        link(&rt, pair[0].pid(), pair[1].pid());
    }
    let watches: Vec<_> = chain.iter().map(|p| rt.monitor(p.pid())).collect();
    stop(&chain[N / 3], err("chain"));
    for w in watches {
        assert_eq!(within(&rt, w), err("chain"));
    }
    assert_eq!(rt.process_count(), 0);
}

#[test]
fn linking_two_remote_pids_is_refused() {
    let rt = runtime(1);
    let elsewhere = NodeId(rt.node().0 + 7);
    let (a, b) = (
        Pid::from_parts(elsewhere, 0, 1),
        Pid::from_parts(elsewhere, 0, 2),
    );
    assert_eq!(rt.link(a, b), Err(NotLocal(a, b)));
    assert_eq!(rt.unlink(a, b), Err(NotLocal(a, b)));
}

/// Monitors added from many threads while the target exits: each fires exactly once —
/// with the exit reason if it was in place before the exit, with `NoProc` otherwise —
/// and none is lost in between (the runtime's "never neither, never both").
#[test]
fn outside_monitors_racing_an_exit_each_fire_exactly_once() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 200;
    const PER_THREAD: usize = 8;
    let rt = runtime(2);
    for _ in 0..ROUNDS {
        let target = probe(&rt);
        let start = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (rt, start, pid) = (rt.handle(), start.clone(), target.pid());
                std::thread::spawn(move || {
                    start.wait();
                    let monitors: Vec<_> = (0..PER_THREAD).map(|_| rt.monitor(pid)).collect();
                    monitors
                        .into_iter()
                        .map(|mut m| {
                            let reason = within(&rt, &mut m);
                            assert_eq!(m.try_down(), None, "fired twice");
                            reason
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        start.wait();
        rt.exit(target.pid(), err("race"));
        for t in threads {
            for reason in t.join().unwrap() {
                assert!(
                    reason == err("race") || reason == ExitReason::NoProc,
                    "unexpected reason {reason:?}"
                );
            }
        }
    }
}
