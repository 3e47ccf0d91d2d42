//! Dial-only client nodes (`NodeBuilder::client`) against in-process members on 127.0.0.1:
//! no data dir, no membership, calls to objects through one gateway node that forwards to
//! the owner, the cluster's status through that gateway, and a move to the next seed when
//! the gateway goes away.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::cluster_status::ClusterStatus;
use cairn::net::ClusterCa;
use cairn::prelude::*;
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(10);

fn member(dir: &Path, name: &str, join: &[SocketAddr]) -> Node {
    let node = Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .listen("127.0.0.1:0".parse().unwrap())
        .join(join.iter().copied())
        .start()
        .unwrap();
    node.host::<Counter>();
    node
}

fn client(dir: &Path, seeds: &[SocketAddr]) -> Node {
    let node = Node::builder()
        .name("c")
        .workers(2)
        .client()
        // Never created: a client keeps no state.
        .data_dir(dir.join("client-data"))
        .cluster(dir.join("cluster"))
        .join(seeds.iter().copied())
        .start()
        .unwrap();
    node.host::<Counter>();
    node
}

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    dir
}

fn addr(node: &Node) -> SocketAddr {
    node.mesh().unwrap().local_addr()
}

fn wait_members(node: &Node, n: usize) {
    let deadline = Instant::now() + T;
    while node.mesh().unwrap().members().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} never saw {n} members",
            node.name()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every shard has its full replication factor of voters.
fn wait_fully_replicated(node: &Node) {
    let shards = cairn::ShardConfig::default().shards;
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.block_on(node.shards_fully_replicated()) < shards {
        assert!(Instant::now() < deadline, "the shards never got 3 voters");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn add(node: &Node, key: &str) -> Result<u64, ObjectError> {
    let counter = node.object::<Counter>(key);
    node.block_on(counter.call(|r| CounterMsg::AddAndGet(1, r), T))
}

fn status(node: &Node) -> ClusterStatus {
    node.block_on(node.cluster_status(Duration::from_secs(2), T))
        .unwrap()
}

#[test]
fn a_client_reaches_every_owner_through_its_gateway_and_is_no_member() {
    let dir = cluster();
    let a = member(dir.path(), "a", &[]);
    let b = member(dir.path(), "b", &[addr(&a)]);
    wait_members(&a, 2);
    wait_members(&b, 2);
    let c = client(dir.path(), &[addr(&a)]);
    assert!(
        !dir.path().join("client-data").exists(),
        "a client made a data dir"
    );
    let mesh = c.mesh().unwrap();
    assert!(mesh.is_dial_only());
    assert_eq!(c.block_on(mesh.wait_gateway(T)).unwrap(), a.id());
    // Keys owned by either member, all through `a`; each answer comes back to the client.
    for i in 0..12 {
        let key = format!("k{i}");
        assert_eq!(add(&c, &key).unwrap(), 1, "{key}");
        assert_eq!(add(&a, &key).unwrap(), 2, "{key}");
    }
    // Each key runs where its shard's leader is: always a member, never the client.
    for i in 0..12 {
        let owner = a.object::<Counter>(&format!("k{i}")).owner().unwrap();
        assert!([a.id(), b.id()].contains(&owner), "k{i} owned by {owner}");
    }
    // The client is nobody's member, and the cluster status (asked of the gateway) lists
    // the two members with their own answers.
    for m in [&a, &b] {
        assert!(m.mesh().unwrap().members().iter().all(|x| x.node != c.id()));
    }
    let cluster = status(&c);
    assert_eq!(cluster.via, a.id());
    let listed: Vec<NodeId> = cluster.members.iter().map(|m| m.node).collect();
    let mut expected = vec![a.id(), b.id()];
    expected.sort();
    assert_eq!(listed, expected);
    for m in &cluster.members {
        let s = m.status.as_ref().unwrap();
        assert_eq!(s.node, m.node);
        assert_eq!(s.listen, Some(m.addr));
        assert!(!s.client);
    }
}

#[test]
fn a_client_whose_node_goes_away_carries_on_through_another_seed() {
    let dir = cluster();
    // Three members: the shards keep a quorum of voters when `a` goes.
    let a = member(dir.path(), "a", &[]);
    let b = member(dir.path(), "b", &[addr(&a)]);
    let d = member(dir.path(), "d", &[addr(&a)]);
    for m in [&a, &b, &d] {
        wait_members(m, 3);
    }
    wait_fully_replicated(&a);
    let c = client(dir.path(), &[addr(&a), addr(&b)]);
    let mesh = c.mesh().unwrap().clone();
    assert_eq!(c.block_on(mesh.wait_gateway(T)).unwrap(), a.id());
    add(&c, "before").unwrap();
    a.shutdown();
    // The next call may race the loss of `a`; retried, it gets through `b`.
    let deadline = Instant::now() + T;
    let total = loop {
        match add(&c, "after") {
            Ok(n) => break n,
            Err(e) => {
                assert!(Instant::now() < deadline, "no call got through: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(total, 1);
    assert_eq!(mesh.gateway(), Some(b.id()));
    drop(d);
}

/// The system processes a client is served through pass the mesh's check on what a client
/// may reach (the names are this crate's, the check is cairn-net's, which refuses clients
/// every other system process).
#[test]
fn the_system_processes_that_serve_clients_take_their_messages() {
    use cairn::net::mesh::client_may_reach;
    assert!(client_may_reach(cairn::STATUS_PROCESS));
    assert!(client_may_reach(
        cairn::cluster_status::CLUSTER_STATUS_PROCESS
    ));
    assert!(client_may_reach(cairn::object::http::HTTP_PROCESS));
    assert!(!client_may_reach("cairn.alarms"));
}
