//! Links, monitors and trapping exits: links are bidirectional, monitors one-way; an
//! abnormal exit kills linked processes unless they trap exits; a monitor fires exactly once,
//! at once with `NoProc` for a dead pid.

mod common;

use std::sync::mpsc;

use cairn_scheduler::{Ctx, ExitReason, Message, Pid, Signal, SpawnOptions};
use common::*;

#[test]
fn an_abnormal_exit_kills_linked_processes_with_the_same_reason_both_ways() {
    let rt = runtime(2);
    // Linked at spawn; the newer process crashes and takes the older one along.
    let older = probe(&rt);
    let newer = spawn_probe(&rt, linked_to(older.pid()), None);
    assert_eq!(
        exits_after(&rt, &[newer.pid(), older.pid()], || rt
            .exit(newer.pid(), err("boom"))),
        [err("boom"), err("boom")]
    );

    // Linked from inside a process with `Ctx::link`; the link target crashes by
    // returning an error.
    let a = probe(&rt);
    let b = probe(&rt);
    ask(&rt, &b, |r| Probe::Link(a.pid(), r));
    assert_eq!(
        exits_after(&rt, &[a.pid(), b.pid()], || stop(&a, err("crashed"))),
        [err("crashed"), err("crashed")]
    );
}

#[test]
fn a_panic_propagates_to_linked_processes_as_the_panic_reason() {
    let rt = runtime(2);
    let peer = probe(&rt);
    let crasher = spawn_panicker(&rt, linked_to(peer.pid()));
    panic_takes_along(&rt, &crasher, peer.pid());
}

#[test]
fn a_trapping_process_receives_an_exit_signal_instead_of_dying() {
    let rt = runtime(2);
    let (trapper, rx) = forwarding_trapper(&rt);
    let crasher = spawn_probe(&rt, linked_to(trapper.pid()), None);
    exit_and_wait(&rt, crasher.pid(), err("boom"));
    assert_eq!(recv(&rx), exit_signal(crasher.pid(), err("boom")));
    assert!(answers(&rt, &trapper));

    // An exit signal sent directly (not through a link) is trapped too.
    rt.exit(trapper.pid(), err("direct"));
    assert_eq!(recv(&rx), exit_signal(rt.system_pid(), err("direct")));
    assert!(answers(&rt, &trapper));

    // Trapping can be switched on from inside the body.
    let (tx2, rx2) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let late_trapper = rt.spawn(move |mut ctx: Ctx<()>| async move {
        ctx.trap_exit(true);
        ready_tx.send(()).unwrap();
        while let Some(Message::Signal(s)) = ctx.recv().await {
            tx2.send(s).unwrap();
        }
    });
    recv(&ready);
    rt.exit(late_trapper.pid(), err("late"));
    assert!(matches!(recv(&rx2), Signal::Exit { reason, .. } if reason == err("late")));
    assert!(late_trapper.is_alive());
}

#[test]
fn a_normal_exit_does_not_kill_linked_processes() {
    let rt = runtime(2);
    let plain = probe(&rt);
    let (trapper, rx) = forwarding_trapper(&rt);
    let leaver = spawn_probe(&rt, linked_to(plain.pid()), None);
    ask(&rt, &leaver, |r| Probe::Link(trapper.pid(), r));
    stop_and_wait(&rt, &leaver, ExitReason::Normal);
    // Exit signals to links are sent before the exit is reported, so a non-trapping peer
    // that was going to die is already marked by now.
    assert!(answers(&rt, &plain));
    assert!(rt.is_alive(plain.pid()));
    assert_eq!(recv(&rx), exit_signal(leaver.pid(), ExitReason::Normal));

    // `exit(pid, Normal)` from outside is ignored by a process that does not trap.
    rt.exit(plain.pid(), ExitReason::Normal);
    assert!(answers(&rt, &plain));
}

#[test]
fn kill_is_untrappable_and_linked_peers_see_killed() {
    let rt = runtime(2);
    let victim = trapping_probe(&rt);
    let (tx, rx) = mpsc::channel();
    let trapping_peer = spawn_probe(
        &rt,
        SpawnOptions {
            trap_exit: true,
            link: Some(victim.pid()),
            ..SpawnOptions::default()
        },
        Some(tx),
    );
    let plain_peer = spawn_probe(&rt, linked_to(victim.pid()), None);
    assert_eq!(
        exits_after(&rt, &[victim.pid(), plain_peer.pid()], || rt
            .kill(victim.pid())),
        [ExitReason::Killed, ExitReason::Killed]
    );
    assert_eq!(recv(&rx), exit_signal(victim.pid(), ExitReason::Killed));
    assert!(answers(&rt, &trapping_peer));

    // A process can kill another (trapping) one with `Ctx::exit`.
    let target = trapping_probe(&rt);
    let to = target.pid();
    let killer = rt.spawn(move |mut ctx: Ctx<()>| async move {
        if ctx.recv().await.is_some() {
            ctx.exit(to, ExitReason::Kill);
        }
    });
    assert_eq!(
        exits_after(&rt, &[target.pid(), killer.pid()], || killer
            .try_send(())
            .unwrap()),
        [ExitReason::Killed, ExitReason::Normal]
    );
}

#[test]
fn a_monitor_fires_exactly_once_with_the_exit_reason() {
    let rt = runtime(2);
    let target = probe(&rt);
    let watcher = probe(&rt);
    let m1 = ask(&rt, &watcher, |r| Probe::Monitor(target.pid(), r));
    let m2 = ask(&rt, &watcher, |r| Probe::Monitor(target.pid(), r));
    assert_ne!(m1, m2);
    // Process monitors added before this watch are notified before it resolves.
    exit_and_wait(&rt, target.pid(), err("down"));
    let signals = signals_of(&rt, &watcher);
    let expected = |monitor| Signal::Down {
        monitor,
        pid: target.pid(),
        reason: err("down"),
    };
    assert_eq!(signals, [expected(m1), expected(m2)]);
    // Monitors are one-way: the watcher lives on; a fired monitor cannot be removed.
    assert!(answers(&rt, &watcher));
    assert!(!ask(&rt, &watcher, |r| Probe::Demonitor(
        target.pid(),
        m1,
        r
    )));
    assert_eq!(signals_of(&rt, &watcher).len(), 2, "a monitor fired twice");
}

#[test]
fn monitoring_an_exited_pid_fires_at_once_with_no_proc() {
    let rt = runtime(2);
    let gone = exited_pid(&rt);
    let watcher = probe(&rt);
    let m = ask(&rt, &watcher, |r| Probe::Monitor(gone, r));
    assert_eq!(
        signals_of(&rt, &watcher),
        [Signal::Down {
            monitor: m,
            pid: gone,
            reason: ExitReason::NoProc
        }]
    );
    assert_eq!(wait_exit(&rt, gone), ExitReason::NoProc);
}

#[test]
fn demonitor_prevents_the_down_signal() {
    let rt = runtime(2);
    let target = probe(&rt);
    let watcher = probe(&rt);
    let m = ask(&rt, &watcher, |r| Probe::Monitor(target.pid(), r));
    assert!(ask(&rt, &watcher, |r| Probe::Demonitor(target.pid(), m, r)));
    assert!(!ask(&rt, &watcher, |r| Probe::Demonitor(
        target.pid(),
        m,
        r
    )));
    exit_and_wait(&rt, target.pid(), err("down"));
    assert_eq!(signals_of(&rt, &watcher), []);
}

#[test]
fn linking_to_an_exited_pid_gives_a_no_proc_exit_signal() {
    let rt = runtime(2);
    let gone = exited_pid(&rt);

    let trapper = trapping_probe(&rt);
    ask(&rt, &trapper, |r| Probe::Link(gone, r));
    assert_eq!(
        signals_of(&rt, &trapper),
        [exit_signal(gone, ExitReason::NoProc)]
    );

    let plain = probe(&rt);
    assert_eq!(
        exit_after(&rt, plain.pid(), || plain
            .try_send(Probe::Link(gone, cairn_scheduler::Reply::pair().0))
            .unwrap()),
        ExitReason::NoProc
    );

    // The same through SpawnOptions::link.
    let (tx, rx) = mpsc::channel();
    let spawned = spawn_probe(
        &rt,
        SpawnOptions {
            link: Some(gone),
            trap_exit: true,
            ..SpawnOptions::default()
        },
        Some(tx),
    );
    assert_eq!(recv(&rx), exit_signal(gone, ExitReason::NoProc));
    assert!(answers(&rt, &spawned));
    let spawned = spawn_probe(&rt, linked_to(gone), None);
    assert!(!answers(&rt, &spawned));
    assert!(!spawned.is_alive());
}

#[test]
fn unlink_prevents_exit_propagation() {
    let rt = runtime(2);
    let crasher = probe(&rt);
    let plain = probe(&rt);
    let trapper = trapping_probe(&rt);
    for p in [&plain, &trapper] {
        ask(&rt, p, |r| Probe::Link(crasher.pid(), r));
        ask(&rt, p, |r| Probe::Unlink(crasher.pid(), r));
    }
    exit_and_wait(&rt, crasher.pid(), err("boom"));
    assert!(answers(&rt, &plain));
    assert_eq!(signals_of(&rt, &trapper), []);

    // Unlinking from the other side works as well.
    let crasher = probe(&rt);
    let peer = spawn_probe(&rt, linked_to(crasher.pid()), None);
    ask(&rt, &crasher, |r| Probe::Unlink(peer.pid(), r));
    stop_and_wait(&rt, &crasher, err("boom"));
    assert!(answers(&rt, &peer));
}

#[test]
fn a_crash_kills_every_process_in_a_chain_of_1000_links() {
    const N: usize = 1_000;
    let rt = runtime(2);
    let mut chain = vec![probe(&rt)];
    for _ in 1..N {
        let prev = chain.last().unwrap().pid();
        chain.push(spawn_probe(&rt, linked_to(prev), None));
    }
    let pids: Vec<Pid> = chain.iter().map(|p| p.pid()).collect();
    let watches: Vec<_> = pids.iter().map(|&p| rt.wait_exit(p)).collect();
    // Crash one in the middle: the signal travels both ways.
    stop(&chain[N / 3], err("chain"));
    for w in watches {
        assert_eq!(within(&rt, w), err("chain"));
    }
    assert_eq!(rt.process_count(), 0);
}
