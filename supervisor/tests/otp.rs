//! OTP's documented supervisor behaviours, ported. Every wait observes an event (lifecycle
//! channel, exit watch, reply); timeouts are hang guards only.

mod common;

use std::sync::mpsc::channel;
use std::time::Duration;

use cairn_scheduler::ExitReason;
use cairn_supervisor::{
    ChildRef, ChildSpec, DynamicSupervisor, Restart, Shutdown, Strategy, SupervisorSpec,
};
use common::*;

#[test]
fn children_start_in_list_order_and_stop_in_reverse() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(probe("b", &tx))
        .child(probe("c", &tx));
    let sup = start(&rt, spec);
    // start returned: every child has started already, in order.
    let started: Vec<_> = rx.try_iter().collect();
    assert_eq!(started.len(), 3, "start returns after all children started");
    let started: Vec<String> = started
        .into_iter()
        .map(|e| match e {
            Event::Init(id, _) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(started, ["a", "b", "c"]);
    let exited = rt.wait_exit(sup.pid());
    rt.exit(sup.pid(), ExitReason::Shutdown);
    assert_eq!(rt.block_on(exited), ExitReason::Shutdown);
    assert_eq!(
        take(&rx, 3),
        [
            "terminate:c:shutdown",
            "terminate:b:shutdown",
            "terminate:a:shutdown"
        ]
    );
}

#[test]
fn failing_init_fails_the_start_and_stops_started_children_in_reverse() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(probe("b", &tx))
        .child(failing_probe("c", &tx))
        .child(probe("d", &tx));
    assert_start_fails_at(&rt, spec, "c", "refuses");
    assert_eq!(
        take(&rx, 4),
        [
            "init:a",
            "init:b",
            "terminate:b:shutdown",
            "terminate:a:shutdown"
        ]
    );
    no_more(&rx);
}

/// Three children a, b, c under `strategy` (10 restarts allowed), all started, and b
/// asked to crash.
fn three_children_with_b_crashed(
    strategy: Strategy,
) -> (
    cairn_scheduler::Runtime,
    std::sync::mpsc::Receiver<Event>,
    Vec<cairn_scheduler::Pid>,
) {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(strategy)
        .intensity(10, Duration::from_secs(5))
        .child(probe("a", &tx))
        .child(probe("b", &tx))
        .child(probe("c", &tx));
    let sup = start(&rt, spec);
    std::mem::forget(sup);
    let pids = ["a", "b", "c"]
        .iter()
        .map(|id| pid_of(&rt, &rx, id))
        .collect::<Vec<_>>();
    rt.try_send(pids[1], ProbeMsg::Crash).unwrap();
    (rt, rx, pids)
}

#[test]
fn one_for_one_restarts_only_the_failed_child() {
    let (rt, rx, pids) = three_children_with_b_crashed(Strategy::OneForOne);
    assert_eq!(take(&rx, 2), [crashed("b"), "init:b".into()]);
    no_more(&rx);
    assert!(rt.is_alive(pids[0]) && rt.is_alive(pids[2]));
}

#[test]
fn one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order() {
    let (_rt, rx, _pids) = three_children_with_b_crashed(Strategy::OneForAll);
    assert_eq!(
        take(&rx, 6),
        [
            crashed("b"),
            "terminate:c:shutdown".into(),
            "terminate:a:shutdown".into(),
            "init:a".into(),
            "init:b".into(),
            "init:c".into(),
        ]
    );
}

#[test]
fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let (rt, rx, pids) = three_children_with_b_crashed(Strategy::RestForOne);
    assert_eq!(
        take(&rx, 4),
        [
            crashed("b"),
            "terminate:c:shutdown".into(),
            "init:b".into(),
            "init:c".into(),
        ]
    );
    assert!(rt.is_alive(pids[0]));
}

#[test]
fn restart_types_permanent_transient_temporary() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(5))
        .child(probe("perm", &tx))
        .child(probe("trans", &tx).restart(Restart::Transient))
        .child(probe("temp", &tx).restart(Restart::Temporary));
    let sup = start(&rt, spec);
    let perm = pid_of(&rt, &rx, "perm");
    let trans = pid_of(&rt, &rx, "trans");
    let temp = pid_of(&rt, &rx, "temp");

    // permanent: restarted even after a normal exit
    rt.try_send(perm, ProbeMsg::Exit(ExitReason::Normal))
        .unwrap();
    assert_eq!(take(&rx, 2), ["terminate:perm:normal", "init:perm"]);
    // transient: not after normal, yes after a crash
    rt.try_send(trans, ProbeMsg::Exit(ExitReason::Normal))
        .unwrap();
    assert_eq!(take(&rx, 1), ["terminate:trans:normal"]);
    no_more(&rx);
    let children = rt.block_on(sup.which_children()).unwrap();
    assert_eq!(children[1].id, "trans");
    assert_eq!(
        children[1].pid, None,
        "transient child ended normally stays down"
    );
    // temporary: never restarted, and its spec goes away
    rt.try_send(temp, ProbeMsg::Crash).unwrap();
    assert_eq!(take(&rx, 1), [crashed("temp")]);
    no_more(&rx);
    assert_eq!(child_ids(&rt, &sup), ["perm", "trans"]);
}

#[test]
fn transient_child_is_restarted_after_a_crash_and_after_a_panic() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(5))
        .child(probe("t", &tx).restart(Restart::Transient));
    let _sup = start(&rt, spec);
    let first = pid_of(&rt, &rx, "t");
    let second = crash_and_restart(&rt, &rx, first, "t");
    rt.try_send(second, ProbeMsg::Panic).unwrap();
    assert_eq!(take(&rx, 1), ["terminate:t:panic: panic requested"]);
    let third = pid_of(&rt, &rx, "t");
    assert!(first != second && second != third);
}

#[test]
fn temporary_child_is_not_restarted_when_a_sibling_crash_stops_it_under_one_for_all() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(10, Duration::from_secs(5))
        .child(probe("a", &tx))
        .child(probe("temp", &tx).restart(Restart::Temporary));
    let sup = start(&rt, spec);
    let a = pid_of(&rt, &rx, "a");
    let _temp = pid_of(&rt, &rx, "temp");
    rt.try_send(a, ProbeMsg::Crash).unwrap();
    assert_eq!(
        take(&rx, 3),
        [
            crashed("a"),
            "terminate:temp:shutdown".into(),
            "init:a".into()
        ]
    );
    no_more(&rx);
    assert_eq!(child_ids(&rt, &sup), ["a"]);
}

#[test]
fn intensity_exceeded_shuts_the_supervisor_down_and_its_parent_sees_it() {
    let rt = rt();
    let (tx, rx) = channel();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(5))
        .child(probe("w", &tx));
    let top = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(0, Duration::from_secs(5))
        .child(ChildSpec::supervisor("inner", inner));
    let top = start(&rt, top);
    let inner_pid = rt.block_on(top.which_children()).unwrap()[0].pid.unwrap();
    let inner_exit = rt.wait_exit(inner_pid);
    let top_exit = rt.wait_exit(top.pid());
    let mut pid = pid_of(&rt, &rx, "w");
    for _ in 0..3 {
        pid = crash_and_restart(&rt, &rx, pid, "w");
    }
    rt.try_send(pid, ProbeMsg::Crash).unwrap();
    assert_eq!(
        rt.block_on(inner_exit),
        ExitReason::Shutdown,
        "the 4th crash in 5 s"
    );
    // The parent allows 0 restarts: it gives up too, escalating further.
    assert_eq!(rt.block_on(top_exit), ExitReason::Shutdown);
}

#[test]
fn shutdown_timeout_kills_a_child_that_ignores_shutdown() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(stubborn_probe("s", &tx).shutdown(Shutdown::Timeout(Duration::from_millis(50))));
    let sup = start(&rt, spec);
    let pid = pid_of(&rt, &rx, "s");
    let exited = rt.wait_exit(pid);
    let started = std::time::Instant::now();
    rt.block_on(sup.terminate_child(ChildRef::Id("s".into())))
        .unwrap();
    assert_eq!(rt.block_on(exited), ExitReason::Killed);
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "waited the timeout first"
    );
    no_more(&rx); // killed: terminate did not run
}

#[test]
fn brutal_kill_is_immediate_and_skips_terminate_while_timeout_runs_terminate() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("brutal", &tx).shutdown(Shutdown::Brutal))
        .child(probe("polite", &tx).shutdown(Shutdown::Timeout(Duration::from_secs(5))));
    let sup = start(&rt, spec);
    let brutal = pid_of(&rt, &rx, "brutal");
    let _polite = pid_of(&rt, &rx, "polite");
    let exited = rt.wait_exit(brutal);
    rt.block_on(sup.terminate_child(ChildRef::Id("brutal".into())))
        .unwrap();
    assert_eq!(rt.block_on(exited), ExitReason::Killed);
    no_more(&rx);
    rt.block_on(sup.terminate_child(ChildRef::Id("polite".into())))
        .unwrap();
    assert_eq!(take(&rx, 1), ["terminate:polite:shutdown"]);
}

#[test]
fn named_child_name_moves_to_the_restarted_pid() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(5))
        .child(probe("n", &tx).named("the-probe"));
    let _sup = start(&rt, spec);
    let first = pid_of(&rt, &rx, "n");
    assert_eq!(rt.whereis("the-probe"), Some(first));
    rt.try_send(first, ProbeMsg::Panic).unwrap();
    assert_eq!(take(&rx, 1), ["terminate:n:panic: panic requested"]);
    let second = pid_of(&rt, &rx, "n");
    assert_ne!(first, second);
    assert_eq!(rt.whereis("the-probe"), Some(second));
    let answered = rt
        .block_on(rt.call(second, ProbeMsg::Pid, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(answered, second);
}

#[test]
fn dynamic_supervisor_keeps_exact_counts_through_ten_thousand_children_and_random_crashes() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = DynamicSupervisor::spec().intensity(100_000, Duration::from_secs(5));
    let sup = start_dynamic(&rt, spec);
    const N: usize = 10_000;
    let mut pids = Vec::with_capacity(N);
    for i in 0..N {
        let pid = rt
            .block_on(sup.start_child(probe(&format!("c{i}"), &tx)))
            .unwrap();
        pids.push(pid);
    }
    assert_eq!(rx.try_iter().count(), N);
    // Crash a pseudo-random 10%, half by error, half by panic.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut crashed = std::collections::HashSet::new();
    while crashed.len() < N / 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        crashed.insert((x % N as u64) as usize);
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (k, &i) in crashed.iter().enumerate() {
        let msg = if k % 2 == 0 {
            ProbeMsg::Crash
        } else {
            ProbeMsg::Panic
        };
        rt.try_send(pids[i], msg).unwrap();
    }
    // Each crash yields a terminate and a fresh init.
    let mut inits = 0;
    let mut terminates = 0;
    while inits < crashed.len() || terminates < crashed.len() {
        match next(&rx) {
            Event::Init(..) => inits += 1,
            Event::Terminate(_, reason) => {
                assert!(!reason.is_orderly(), "{reason:?}");
                terminates += 1;
            }
        }
    }
    std::panic::set_hook(prev);
    let counts = rt.block_on(sup.count_children()).unwrap();
    assert_eq!(counts.specs, N);
    assert_eq!(counts.active, N);
    assert_eq!(counts.workers, N);
    for &i in &crashed {
        assert!(!rt.is_alive(pids[i]));
    }
}

#[test]
fn dynamic_supervisor_enforces_max_children_and_terminates_by_pid() {
    let rt = rt();
    let (tx, rx) = channel();
    let sup = start_dynamic(&rt, DynamicSupervisor::spec().max_children(2));
    let a = rt.block_on(sup.start_child(probe("a", &tx))).unwrap();
    rt.block_on(sup.start_child(probe("b", &tx))).unwrap();
    let err = rt.block_on(sup.start_child(probe("c", &tx))).unwrap_err();
    assert!(
        matches!(err, cairn_supervisor::ChildError::MaxChildren),
        "{err:?}"
    );
    rt.block_on(sup.terminate_child(ChildRef::Pid(a))).unwrap();
    assert_eq!(rt.block_on(sup.count_children()).unwrap().active, 1);
    assert_eq!(take(&rx, 3), ["init:a", "init:b", "terminate:a:shutdown"]);
}

/// OTP's simple_one_for_one (and Elixir's DynamicSupervisor) delete a child that is not
/// restarted: a transient child that ended normally leaves no dead spec behind and gives its
/// `max_children` slot back. (A static supervisor keeps the spec: see
/// `restart_types_permanent_transient_temporary`.)
#[test]
fn dynamic_supervisor_deletes_a_transient_child_that_ended_normally_and_frees_its_slot() {
    let rt = rt();
    let (tx, rx) = channel();
    let sup = start_dynamic(&rt, DynamicSupervisor::spec().max_children(1));
    for (id, reason) in [("a", ExitReason::Normal), ("b", ExitReason::Shutdown)] {
        let pid = rt
            .block_on(sup.start_child(probe(id, &tx).restart(Restart::Transient)))
            .unwrap_or_else(|e| panic!("{id}: the slot must be free again: {e:?}"));
        assert_eq!(take(&rx, 1), [format!("init:{id}")]);
        // Links fire before monitors, so once this watch resolves the exit signal is already
        // on the supervisor's control lane, ahead of the calls below.
        let exited = rt.wait_exit(pid);
        rt.try_send(pid, ProbeMsg::Exit(reason.clone())).unwrap();
        assert_eq!(rt.block_on(exited), reason);
        assert_eq!(take(&rx, 1), [format!("terminate:{id}:{reason}")]);
        assert_eq!(rt.block_on(sup.which_children()).unwrap(), []);
        assert_eq!(rt.block_on(sup.count_children()).unwrap().specs, 0);
    }
    rt.block_on(sup.start_child(probe("c", &tx))).unwrap();
    assert_eq!(take(&rx, 1), ["init:c"]);
}

#[test]
fn dynamic_children_are_not_restarted_when_the_dynamic_supervisor_restarts() {
    let rt = rt();
    let (tx, rx) = channel();
    let top = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(5))
        .child(ChildSpec::supervisor("pool", DynamicSupervisor::spec()).named("pool"));
    let _top = start(&rt, top);
    let pool = rt.whereis("pool").unwrap();
    let pool_ref = cairn_supervisor::SupervisorRef::from_pid(&rt, pool).unwrap();
    for i in 0..5 {
        rt.block_on(pool_ref.start_child(probe(&format!("d{i}"), &tx)))
            .unwrap();
    }
    assert_eq!(rx.try_iter().count(), 5);
    let exited = rt.wait_exit(pool);
    rt.kill(pool);
    assert_eq!(rt.block_on(exited), ExitReason::Killed);
    // The children die with their supervisor (linked), and the new pool starts empty.
    let new_pool = loop {
        match rt.whereis("pool") {
            Some(p) if p != pool => break p,
            _ => std::thread::yield_now(),
        }
    };
    let new_ref = cairn_supervisor::SupervisorRef::from_pid(&rt, new_pool).unwrap();
    let counts = rt.block_on(new_ref.count_children()).unwrap();
    assert_eq!(counts.specs, 0);
    for _ in 0..5 {
        match next(&rx) {
            Event::Terminate(_, reason) => assert_eq!(reason, ExitReason::Killed),
            other => panic!("{other:?}"),
        }
    }
    no_more(&rx);
}

#[test]
fn deep_tree_escalation_goes_only_as_far_as_intensity_allows() {
    let rt = rt();
    let (tx, rx) = channel();
    // depth 5: l1 > l2 > l3 > l4 > l5 > leaf; each level allows one restart in 5 s.
    let mut spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(1, Duration::from_secs(5))
        .child(probe("leaf", &tx));
    for level in (2..=5).rev() {
        spec = SupervisorSpec::new(Strategy::OneForOne)
            .intensity(1, Duration::from_secs(5))
            .child(ChildSpec::supervisor(format!("l{level}"), spec));
    }
    let l1 = start(&rt, spec);
    let chain = |rt: &cairn_scheduler::Runtime| {
        // pids of l2..l5 following first children
        let mut pids = Vec::new();
        let mut sup = l1.clone();
        for _ in 2..=5 {
            let child = rt.block_on(sup.which_children()).unwrap()[0].pid.unwrap();
            pids.push(child);
            sup = cairn_supervisor::SupervisorRef::from_pid(rt, child).unwrap();
        }
        pids
    };
    let before = chain(&rt);
    let mut leaf = pid_of(&rt, &rx, "leaf");
    // 1st crash: l5 restarts the leaf.
    leaf = crash_and_restart(&rt, &rx, leaf, "leaf");
    assert_eq!(chain(&rt), before);
    // 2nd crash: l5 exceeds 1 in 5 s and exits; l4 restarts l5 (and a new leaf).
    leaf = crash_and_restart(&rt, &rx, leaf, "leaf");
    let after2 = chain(&rt);
    assert_eq!(after2[..3], before[..3], "l2..l4 unchanged");
    assert_ne!(after2[3], before[3], "l5 restarted");
    // 3rd crash: the new l5 restarts the leaf itself (its own window is fresh).
    leaf = crash_and_restart(&rt, &rx, leaf, "leaf");
    assert_eq!(chain(&rt), after2);
    // 4th crash: l5 gives up again; l4 has now restarted twice in 5 s: it gives up; l3 restarts l4.
    let _leaf = crash_and_restart(&rt, &rx, leaf, "leaf");
    let after4 = chain(&rt);
    assert_eq!(after4[..2], before[..2], "l2, l3 unchanged");
    assert_ne!(after4[2], after2[2], "l4 restarted");
    assert!(rt.is_alive(l1.pid()));
}

#[test]
fn runtime_shutdown_stops_trees_in_order_and_runs_terminate() {
    let rt = rt();
    let (tx, rx) = channel();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("x", &tx))
        .child(probe("y", &tx));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(ChildSpec::supervisor("inner", inner))
        .child(probe("c", &tx));
    let _sup = start(&rt, spec);
    assert_eq!(take(&rx, 4), ["init:a", "init:x", "init:y", "init:c"]);
    rt.shutdown();
    assert_eq!(
        take(&rx, 4),
        [
            "terminate:c:shutdown",
            "terminate:y:shutdown",
            "terminate:x:shutdown",
            "terminate:a:shutdown"
        ]
    );
    assert_eq!(rt.process_count(), 0);
}

#[test]
fn a_static_supervisor_refuses_a_duplicate_child_id_and_a_dynamic_one_does_not_check() {
    let rt = rt();
    let (tx, _rx) = channel();
    let sup = start(
        &rt,
        SupervisorSpec::new(Strategy::OneForOne).child(probe("a", &tx)),
    );
    let err = rt.block_on(sup.start_child(probe("a", &tx))).unwrap_err();
    assert!(
        matches!(err, cairn_supervisor::ChildError::DuplicateId(ref id) if id == "a"),
        "{err:?}"
    );
    let pool = start_dynamic(&rt, DynamicSupervisor::spec());
    rt.block_on(pool.start_child(probe("w", &tx))).unwrap();
    rt.block_on(pool.start_child(probe("w", &tx))).unwrap();
    assert_eq!(rt.block_on(pool.count_children()).unwrap().active, 2);
}
