//! The chat example in a real browser: headless Chromium (Debian's `chromium`; `.ci/run`
//! installs it), driven over the DevTools protocol, opens the room page through the two
//! nodes of a 3-node mesh that do not own the room. One page joins from the front page
//! (`/`, a room and a name picked in its form), the other at the room's own page. One
//! posts, the other must show the post; after the room object was evicted the room still
//! delivers (hibernation); a reload shows the history. A screenshot is saved to
//! `target/chat-browser.png`.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "../examples/chat/room.rs"]
mod room;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use browser::Browser;
use cairn::gateway::GatewayConfig;
use cairn::prelude::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn start(dir: &Path, name: &str, join: Option<SocketAddr>) -> Node {
    let node = common::mesh_builder(dir, name, join)
        // Short, so the room is evicted while its pages stay connected.
        .object_idle_timeout(Duration::from_millis(300))
        .http("127.0.0.1:0".parse().unwrap())
        // The front page, as `cairn-node --http` serves it.
        .http_config(GatewayConfig {
            index: Some("/chatroom/lobby/".to_owned()),
            ..GatewayConfig::default()
        })
        .start()
        .unwrap();
    node.host::<room::ChatRoom>();
    node
}

/// What a test does on the chat page, as a user would.
trait ChatPage {
    /// Waits until the page shows `line` (polling the DOM; fails at the deadline).
    fn wait_for_line(&mut self, session: &str, line: &str);
    fn wait_connected(&mut self, session: &str);
    /// Types `text` into the page's box and submits it.
    fn say(&mut self, session: &str, text: &str);
}

/// The page's chat lines, as text.
const LINES_JS: &str = "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)";

impl ChatPage for Browser {
    fn wait_for_line(&mut self, session: &str, line: &str) {
        let want = json!(line);
        self.wait_for(
            session,
            &format!("the line {line:?}"),
            LINES_JS,
            Instant::now() + T,
            |lines| lines.as_array().is_some_and(|l| l.contains(&want)),
        );
    }

    fn wait_connected(&mut self, session: &str) {
        self.wait_until(
            session,
            "document.getElementById('status').textContent",
            json!("connected"),
        );
    }

    fn say(&mut self, session: &str, text: &str) {
        let js = format!(
            "document.getElementById('text').value = {}; document.querySelector('#form button').click(); true",
            json!(text)
        );
        assert_eq!(self.eval(session, &js), json!(true));
    }
}

/// The node every node routes the room `lobby` to (once they agree).
fn owner_of_lobby(nodes: &[&Node]) -> NodeId {
    let deadline = Instant::now() + T;
    loop {
        let seen: Vec<Option<NodeId>> = nodes
            .iter()
            .map(|n| n.object::<room::ChatRoom>("lobby").owner().ok())
            .collect();
        if let Some(owner) = seen[0].filter(|o| seen.iter().all(|s| *s == Some(*o))) {
            return owner;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn activations(node: &Node) -> u64 {
    node.object_stats()
        .get("chatroom")
        .map_or(0, |s| s.activations)
}

#[test]
fn two_pages_on_two_non_owners_of_a_three_node_mesh_chat_through_a_hibernating_room() {
    let dir = tempfile::tempdir().unwrap();
    cairn::net::ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let a = start(dir.path(), "a", None);
    let seed = a.mesh().unwrap().local_addr();
    let b = start(dir.path(), "b", Some(seed));
    let c = start(dir.path(), "c", Some(seed));
    let nodes = [&a, &b, &c];
    for x in nodes {
        for y in nodes {
            if x.id() != y.id() {
                common::wait_knows(x, y.id(), T);
            }
        }
    }
    // Both pages reach the room through a node that does not own it.
    let owner = owner_of_lobby(&nodes);
    let edges: Vec<&Node> = nodes.into_iter().filter(|n| n.id() != owner).collect();
    let (one, two) = (edges[0], edges[1]);
    let http = |node: &Node| node.http_addr().unwrap();

    let mut browser = Browser::launch(&["--window-size=900,700"]);
    // Alice comes to the front page of one edge and picks the room and her name there.
    let alice = browser.open(&format!("http://{}/", http(one)));
    browser.wait_until(
        &alice,
        "document.getElementById('room-name').value",
        json!("lobby"),
    );
    let join = "document.getElementById('member-name').value = 'alice'; \
                document.querySelector('#join button').click(); true";
    assert_eq!(browser.eval(&alice, join), json!(true));
    browser.wait_until(&alice, "location.pathname", json!("/chatroom/lobby/"));
    browser.wait_connected(&alice);
    // Bob opens the room's page on the other edge, after alice, so she sees him arrive.
    let bob = browser.open(&format!("http://{}/chatroom/lobby/?name=bob", http(two)));
    browser.wait_connected(&bob);
    browser.wait_for_line(&alice, "* bob is here");

    browser.say(&alice, "hello from one edge");
    browser.wait_for_line(&bob, "alice: hello from one edge");
    browser.say(&bob, "hi alice");
    browser.wait_for_line(&alice, "bob: hi alice");

    // The room is evicted while both pages stay connected ...
    let deadline = Instant::now() + T;
    while nodes
        .iter()
        .any(|n| n.status().objects.contains_key("chatroom"))
    {
        assert!(Instant::now() < deadline, "the room was never evicted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and still delivers: the next post wakes it.
    browser.say(&bob, "still there?");
    browser.wait_for_line(&alice, "bob: still there?");

    // A reload shows the history from the room's storage.
    browser.eval(&alice, "window.oldPage = true");
    browser.command(Some(&alice), "Page.reload", json!({}));
    browser.wait_until(&alice, "window.oldPage === undefined", json!(true));
    browser.wait_connected(&alice);
    browser.wait_for_line(&alice, "alice: hello from one edge");
    browser.wait_for_line(&alice, "bob: still there?");

    // The room only ever ran on its owner.
    assert_eq!((activations(one), activations(two)), (0, 0));
    let owner = nodes.into_iter().find(|n| n.id() == owner).unwrap();
    assert!(activations(owner) >= 2, "activated, evicted, woken");

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chat-browser.png");
    browser.screenshot(&alice, &shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
}
