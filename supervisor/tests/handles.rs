//! What code outside a tree can do with it: stop a supervisor, walk its children, read
//! start errors that are one level deep, and find a runtime's trees and their restart counts.

mod common;

use std::sync::mpsc::channel;
use std::time::Duration;

use cairn_scheduler::{ExitReason, Pid};
use cairn_supervisor::{
    ChildError, ChildKind, ChildRef, ChildSpec, DynamicSupervisor, StartError, Strategy,
    SupervisorRef, SupervisorSpec,
};
use common::*;

#[test]
fn stop_shuts_the_children_down_in_reverse_order_and_resolves_once_the_supervisor_exited() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(probe("b", &tx));
    let sup = start(&rt, spec);
    assert_eq!(take(&rx, 2), ["init:a", "init:b"]);
    assert_eq!(rt.block_on(sup.stop()), ExitReason::Shutdown);
    // Resolved after the exit: every child has terminated by now, in reverse order.
    assert_eq!(
        rx.try_iter().count(),
        2,
        "stop resolved before the children stopped"
    );
    assert!(!rt.is_alive(sup.pid()));
    // Stopping it again reports that it is gone.
    assert_eq!(rt.block_on(sup.stop()), ExitReason::NoProc);
}

/// Collects `path:kind` for every child of the tree under `sup`, depth first.
fn walk(rt: &cairn_scheduler::Runtime, sup: &SupervisorRef, prefix: &str, out: &mut Vec<String>) {
    for child in rt.block_on(sup.which_children()).unwrap() {
        let path = format!("{prefix}{}", child.id);
        assert!(child.pid.is_some(), "{path} is not running");
        match (&child.kind, &child.supervisor) {
            (ChildKind::Supervisor, Some(sub)) => {
                assert_eq!(Some(sub.pid()), child.pid);
                out.push(format!("{path}:sup"));
                walk(rt, sub, &format!("{path}/"), out);
            }
            (ChildKind::Worker, None) => out.push(format!("{path}:worker")),
            other => panic!("{path}: kind and ref disagree: {other:?}"),
        }
    }
}

#[test]
fn which_children_carries_refs_that_walk_the_whole_tree() {
    let rt = rt();
    let (tx, rx) = channel();
    let leaf_sup = SupervisorSpec::new(Strategy::OneForOne).child(probe("c", &tx));
    let mid_sup = SupervisorSpec::new(Strategy::OneForAll)
        .child(probe("b", &tx))
        .child(ChildSpec::supervisor("leaves", leaf_sup));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(ChildSpec::supervisor("mid", mid_sup));
    let root = start(&rt, spec);
    assert_eq!(take(&rx, 3), ["init:a", "init:b", "init:c"]);

    let mut tree = Vec::new();
    walk(&rt, &root, "", &mut tree);
    assert_eq!(
        tree,
        [
            "a:worker",
            "mid:sup",
            "mid/b:worker",
            "mid/leaves:sup",
            "mid/leaves/c:worker"
        ]
    );

    // A child's ref names it to terminate_child on the supervisor that holds it.
    let mid = rt.block_on(root.which_children()).unwrap()[1]
        .supervisor
        .clone()
        .unwrap();
    let b = rt.block_on(mid.which_children()).unwrap()[0].clone();
    assert!(matches!(b.child_ref(), ChildRef::Pid(p) if Some(p) == b.pid));
    rt.block_on(mid.terminate_child(b.child_ref())).unwrap();
    assert_eq!(take(&rx, 1), ["terminate:b:shutdown"]);
    assert_eq!(child_ids(&rt, &mid), ["leaves"]);
}

#[test]
fn start_child_fails_with_the_childs_own_error() {
    let rt = rt();
    let (tx, _rx) = channel();
    let sup = start_dynamic(&rt, DynamicSupervisor::spec());
    let err = rt
        .block_on(sup.start_child(failing_probe("w", &tx)))
        .unwrap_err();
    assert!(
        matches!(&err, ChildError::Start(StartError::InitFailed(m)) if m.contains("w refuses")),
        "{err:?}"
    );
}

#[test]
fn a_failure_deep_in_a_tree_names_the_path_to_the_child_that_failed() {
    let rt = rt();
    let (tx, _rx) = channel();
    let leaves = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("ok", &tx))
        .child(failing_probe("bad", &tx));
    let mid =
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::supervisor("leaves", leaves));
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::supervisor("mid", mid));
    assert_start_fails_at(&rt, spec, "mid/leaves/bad", "bad refuses");
}

#[test]
fn roots_and_describe_show_the_trees_with_their_restart_counts() {
    let rt = rt();
    let (tx, rx) = channel();
    let leaf = SupervisorSpec::new(Strategy::RestForOne).child(probe("c", &tx));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(probe("a", &tx))
        .child(ChildSpec::supervisor("leaves", leaf).named("leaves"));
    let root = start(&rt, spec);
    let other = start(&rt, SupervisorSpec::new(Strategy::OneForAll));
    assert_eq!(take(&rx, 2), ["init:a", "init:c"]);
    // Two roots (the sub-supervisor is not one), three supervisors running.
    let mut roots: Vec<Pid> = cairn_supervisor::roots(&rt)
        .iter()
        .map(|s| s.pid())
        .collect();
    roots.sort_unstable();
    let mut expected = vec![root.pid(), other.pid()];
    expected.sort_unstable();
    assert_eq!(roots, expected);
    assert_eq!(cairn_supervisor::running(&rt).len(), 3);

    // `a` crashes once: restarted once, counted on it and on the root.
    let a = rt.block_on(root.which_children()).unwrap()[0].pid.unwrap();
    rt.try_send(a, ProbeMsg::Crash).unwrap();
    assert_eq!(take(&rx, 2)[1], "init:a");
    let info = rt.block_on(root.describe(Duration::from_secs(5))).unwrap();
    assert_eq!(info.strategy, Strategy::OneForOne);
    assert!(!info.dynamic);
    assert_eq!(
        (info.max_restarts, info.period),
        (5, Duration::from_secs(10))
    );
    assert_eq!(info.restarts, 1);
    let counts: Vec<(&str, u64)> = info
        .children
        .iter()
        .map(|c| (c.id.as_str(), c.restarts))
        .collect();
    assert_eq!(counts, [("a", 1), ("leaves", 0)]);
    assert_eq!(info.children[1].name.as_deref(), Some("leaves"));
    let sub = info.children[1].supervisor.clone().unwrap();
    let sub = rt.block_on(sub.describe(Duration::from_secs(5))).unwrap();
    assert_eq!((sub.strategy, sub.restarts), (Strategy::RestForOne, 0));
    assert_eq!(sub.children[0].id, "c");

    // A stopped supervisor is no longer listed, nor are the ones under it.
    rt.block_on(root.stop());
    let roots: Vec<Pid> = cairn_supervisor::roots(&rt)
        .iter()
        .map(|s| s.pid())
        .collect();
    assert_eq!(roots, [other.pid()]);
    assert_eq!(cairn_supervisor::running(&rt).len(), 1);
}
