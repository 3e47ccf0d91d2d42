//! Stable node identity: a node's id is the stable hash of its name, kept across restarts
//! on its data dir; every start is a new `creation`, carried in pids, so a pid of an earlier
//! life names no process of the new one (locally and across the mesh); a data dir serves
//! one node at a time, and only the node it was made for.

mod common;

use std::time::Duration;

use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::NodeError;
use common::wait_up;

const T: Duration = Duration::from_secs(20);

/// Answers with the creation of the node life it runs in.
#[derive(Serialize, Deserialize)]
enum Probe {
    Creation(Reply<u32>),
}

fn spawn_probe(node: &Node) -> Pid {
    node.spawn(|mut ctx: Ctx<Probe>| async move {
        let creation = ctx.pid().creation();
        while let Some(msg) = ctx.recv().await {
            if let Message::User(Probe::Creation(reply)) = msg {
                let _ = reply.send(creation);
            }
        }
    })
    .pid()
}

fn local(dir: &std::path::Path, name: &str) -> Result<Node, NodeError> {
    Node::builder().name(name).workers(2).data_dir(dir).start()
}

#[test]
fn a_restarted_node_keeps_its_id_and_pids_of_its_earlier_life_stay_dead() {
    let dir = tempfile::tempdir().unwrap();
    let first = local(dir.path(), "n1").unwrap();
    assert_eq!(first.id(), NodeId::of_name("n1"));
    let old = spawn_probe(&first);
    let old_creation = first.handle().creation();
    assert_eq!(old.creation(), old_creation);
    assert_eq!(
        first.block_on(first.call(old, Probe::Creation, T)),
        Ok(old_creation)
    );
    first.shutdown();
    drop(first);

    let second = local(dir.path(), "n1").unwrap();
    assert_eq!(second.id(), NodeId::of_name("n1"));
    let creation = second.handle().creation();
    assert!(creation > old_creation, "{creation} after {old_creation}");
    // Find the process of the new life in the old pid's slot and generation: only the
    // creation tells the two pids apart.
    let mut others = Vec::new();
    let same_slot = loop {
        let pid = spawn_probe(&second);
        if pid.id() == old.id() {
            break pid;
        }
        others.push(pid);
        assert!(others.len() < 10_000, "the old slot was never reused");
    };
    assert_ne!(same_slot, old);
    assert!(matches!(
        second.try_send(old, Probe::Creation(Reply::pair().0)),
        Err(SendError::NoProc(_))
    ));
    assert_eq!(
        second.block_on(second.call(old, Probe::Creation, T)),
        Err(CallError::NoProc)
    );
    assert!(!second.handle().is_alive(old));
    assert_eq!(
        second.block_on(second.call(same_slot, Probe::Creation, T)),
        Ok(creation)
    );
}

#[test]
fn two_nodes_cannot_share_a_data_dir_and_a_dir_serves_only_its_own_node() {
    let dir = tempfile::tempdir().unwrap();
    let first = local(dir.path(), "n1").unwrap();
    let Err(second) = local(dir.path(), "n1") else {
        panic!("a second node started on a data dir in use");
    };
    assert!(
        matches!(second, NodeError::Storage(StorageError::Locked { .. })),
        "{second}"
    );
    assert!(second.to_string().contains("in use"), "{second}");
    drop(first);

    let Err(other) = local(dir.path(), "n2") else {
        panic!("a node started on another node's data dir");
    };
    assert!(
        matches!(
            &other,
            NodeError::Storage(StorageError::WrongIdentity { found_name, name, .. })
                if found_name == "n1" && name == "n2"
        ),
        "{other}"
    );
    // The refused start took nothing: the right node starts, as its second life.
    let again = local(dir.path(), "n1").unwrap();
    assert_eq!(again.handle().creation(), 2);
}

fn meshed(dir: &std::path::Path, name: &str, join: Option<std::net::SocketAddr>) -> Node {
    let node = common::mesh_builder(dir, name, join).start().unwrap();
    node.mesh()
        .unwrap()
        .declare::<Probe>("test.identity.Probe")
        .unwrap();
    node
}

#[test]
fn a_node_restarted_in_a_mesh_keeps_its_id_and_remote_sends_to_its_old_pids_fail_with_noproc() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let a = meshed(dir.path(), "a", None);
    let seed = a.mesh().unwrap().local_addr();
    let mut events = a.mesh().unwrap().node_events();
    let b = meshed(dir.path(), "b", Some(seed));
    let b_id = NodeId::of_name("b");
    assert_eq!(b.id(), b_id);
    wait_up(&a, &mut events, b_id, T);
    let old = spawn_probe(&b);
    let old_creation = b.handle().creation();
    assert_eq!(
        a.block_on(a.call(old, Probe::Creation, T)),
        Ok(old_creation)
    );

    b.shutdown();
    drop(b);
    let b = meshed(dir.path(), "b", Some(seed));
    assert_eq!(b.id(), b_id, "a restart is the same node");
    wait_up(&a, &mut events, b_id, T);
    let new = spawn_probe(&b);
    let creation = a.block_on(a.call(new, Probe::Creation, T)).unwrap();
    assert!(creation > old_creation);
    // The old pid reaches node b, whose new life refuses it.
    assert_eq!(
        a.block_on(a.call(old, Probe::Creation, T)),
        Err(CallError::NoProc)
    );
    assert_eq!(a.mesh().unwrap().members().len(), 2, "b is one member");
}

/// Placement skips client nodes by the same suffix certificates bind to the client role.
#[test]
fn client_names_mean_the_same_to_placement_and_to_certificates() {
    assert_eq!(
        cairn::object::CLIENT_NAME_SUFFIX,
        cairn::net::CLIENT_NAME_SUFFIX
    );
    assert!(cairn::object::is_client("ops.client"));
    assert_eq!(
        cairn::net::Role::of_name("ops.client"),
        cairn::net::Role::Client
    );
}
