//! What code outside a tree can do with it: stop a supervisor, walk its children, and read
//! start errors that are one level deep.

mod common;

use std::sync::mpsc::channel;

use cairn_scheduler::ExitReason;
use cairn_supervisor::{
    ChildError, ChildKind, ChildRef, ChildSpec, DynamicSupervisor, StartError, Strategy,
    Supervisor, SupervisorRef, SupervisorSpec,
};
use common::*;

#[test]
fn stop_shuts_the_children_down_in_reverse_order_and_resolves_once_the_supervisor_exited() {
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &tx))
        .child(probe("b", &tx));
    let sup = rt.block_on(Supervisor::start(&rt, spec)).unwrap();
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
    let root = rt.block_on(Supervisor::start(&rt, spec)).unwrap();
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
    let ids: Vec<_> = rt
        .block_on(mid.which_children())
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["leaves"]);
}

#[test]
fn start_child_fails_with_the_childs_own_error() {
    let rt = rt();
    let (tx, _rx) = channel();
    let sup = rt
        .block_on(DynamicSupervisor::start(&rt, DynamicSupervisor::spec()))
        .unwrap();
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
    let err = rt.block_on(Supervisor::start(&rt, spec)).unwrap_err();
    match err {
        StartError::Child { id, cause } => {
            assert_eq!(id, "mid/leaves/bad");
            assert!(
                matches!(*cause, StartError::InitFailed(ref m) if m.contains("bad refuses")),
                "{cause:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
