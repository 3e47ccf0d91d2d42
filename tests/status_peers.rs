//! `/cairn/status.json` gives this node's own view of the mesh: it lists as "down" the
//! nodes this node met and lost, never the nodes another node merely named in its hello
//! (hearsay, which any member can make up by the thousand).

mod common;

use std::net::SocketAddr;
use std::path::Path;

use cairn::net::mesh::{PeerInfo, Seed};
use cairn::prelude::*;
use common::http::{curl, wait_until};

/// A mesh node on a free loopback port.
fn start(dir: &Path, name: &str) -> Node {
    Node::builder()
        .workers(1)
        .name(name)
        .data_dir(dir.join(name))
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure_dev()
        .start()
        .unwrap()
}

/// `status.json`'s members: (name, state) pairs, sorted.
fn members(pages: SocketAddr) -> Vec<(String, String)> {
    let answer = curl("GET", &format!("http://{pages}/cairn/status.json"), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let status: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let mut members: Vec<(String, String)> = status["mesh"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no mesh members in {status}"))
        .iter()
        .map(|m| {
            let field = |f: &str| m[f].as_str().unwrap_or_else(|| panic!("{f} in {m}"));
            (field("name").to_owned(), field("state").to_owned())
        })
        .collect();
    members.sort();
    members
}

fn pair(name: &str, state: &str) -> (String, String) {
    (name.to_owned(), state.to_owned())
}

/// A peer's hello names 50 nodes nobody met (each entry true to its name's id, so only the
/// confirmed/hearsay distinction keeps it off the page). The node keeps them for dialing,
/// but its status page lists the peer alone — up, then down once it is gone — and never
/// the invented ones.
#[test]
fn status_json_lists_only_nodes_this_node_met_never_those_another_node_named() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "peers-a");
    let gateway = cairn::observe::serve(&node, "127.0.0.1:0".parse().unwrap()).unwrap();
    let pages = gateway.local_addr().unwrap();

    let chatty = start(dir.path(), "peers-b");
    let invented: Vec<PeerInfo> = (0..50u16)
        .map(|k| {
            let name = format!("invented-{k}");
            PeerInfo {
                node: NodeId::of_name(&name),
                addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + k)),
                name,
            }
        })
        .collect();
    let chatty_mesh = chatty.mesh().unwrap();
    chatty_mesh.forge_hello_peers(invented.clone());
    let seed = Seed::new(
        node.mesh().unwrap().local_addr(),
        cairn::net::SEED_SERVER_NAME,
    );
    chatty
        .block_on(chatty_mesh.join(seed))
        .expect("joined through the first node");

    // The node took the invented names from the hello (it would dial them if asked):
    // without the confirmed/hearsay distinction they would be on its page.
    let heard = node.mesh().unwrap().peers();
    for p in &invented {
        assert!(heard.contains(p), "{} not heard of: {heard:?}", p.name);
    }

    wait_until("the peer is up on the status page", || {
        members(pages).contains(&pair("peers-b", "up"))
    });
    assert_eq!(
        members(pages),
        vec![pair("peers-a", "up"), pair("peers-b", "up")]
    );

    // The peer goes away: the node met it, so it lists it down; still nothing invented.
    chatty.shutdown();
    wait_until("the peer is down on the status page", || {
        members(pages).contains(&pair("peers-b", "down"))
    });
    assert_eq!(
        members(pages),
        vec![pair("peers-a", "up"), pair("peers-b", "down")]
    );
    node.shutdown();
}
