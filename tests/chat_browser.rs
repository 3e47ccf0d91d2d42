//! The chat example in a real browser: headless Chromium (Debian's `chromium`; `.ci/run`
//! installs it), driven over the DevTools protocol, opens the room page through the two
//! nodes of a 3-node mesh that do not own the room. One page joins from the front page
//! (`/`, a room and a name picked in its form), the other at the room's own page. One
//! posts, the other must show the post; after the room object was evicted the room still
//! delivers (hibernation); a reload shows the history. A screenshot is saved to
//! `target/chat-browser.png`.

#[path = "../examples/chat/room.rs"]
mod room;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::gateway::GatewayConfig;
use cairn::net::NodeEvent;
use cairn::prelude::*;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

const T: Duration = Duration::from_secs(30);

fn start(dir: &Path, name: &str, join: Option<SocketAddr>) -> Node {
    let mut b = Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .listen("127.0.0.1:0".parse().unwrap())
        // Short, so the room is evicted while its pages stay connected.
        .object_idle_timeout(Duration::from_millis(300))
        .http("127.0.0.1:0".parse().unwrap())
        // The front page, as `cairn-node --http` serves it.
        .http_config(GatewayConfig {
            index: Some("/chatroom/lobby/".to_owned()),
            ..GatewayConfig::default()
        });
    if let Some(seed) = join {
        b = b.join([seed]);
    }
    let node = b.start().unwrap();
    node.host::<room::ChatRoom>();
    node
}

fn wait_knows(node: &Node, peer: NodeId) {
    let mesh = node.mesh().unwrap();
    let mut events = mesh.node_events();
    if mesh.members().iter().any(|m| m.node == peer) {
        return;
    }
    let up = node.block_on(node.handle().timeout(T, async {
        loop {
            if let NodeEvent::Up { node, .. } = events.next().await {
                if node == peer {
                    return;
                }
            }
        }
    }));
    assert!(up.is_ok(), "{peer} never came up on {}", node.name());
}

/// A headless Chromium, killed on drop.
struct Browser {
    child: std::process::Child,
    devtools: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=900,700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is installed (.ci/run installs Debian's `chromium`)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("DevTools listening on ")
                    .map(|(_, u)| u.to_owned())
            })
            .expect("chromium prints its DevTools address");
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let (devtools, _) = tungstenite::connect(url).expect("DevTools accepts");
        if let MaybeTlsStream::Plain(s) = devtools.get_ref() {
            s.set_read_timeout(Some(T)).unwrap();
        }
        Browser {
            child,
            devtools,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends a DevTools command (to a page when `session` is set) and waits for its result.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_command(session, method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Self::command`], with DevTools' error as an `Err` (e.g. an evaluation while the
    /// page navigates).
    fn try_command(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.devtools.send(Frame::text(msg.to_string())).unwrap();
        loop {
            let frame = self.devtools.read().expect("DevTools answers");
            let Frame::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                return match v.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Opens `url` in a new tab; answers the tab's session.
    fn open(&mut self, url: &str) -> String {
        let target = self.command(None, "Target.createTarget", json!({ "url": url }));
        let id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": id, "flatten": true }),
        );
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self.command(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// [`Self::eval`] for polling: `null` while the page is between documents.
    fn poll(&mut self, session: &str, expression: &str) -> Value {
        self.try_command(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )
        .map_or(Value::Null, |r| r["result"]["value"].clone())
    }

    /// Waits until `expression` evaluates to `want` in the page.
    fn wait_until(&mut self, session: &str, expression: &str, want: Value) {
        let deadline = Instant::now() + T;
        loop {
            let got = self.poll(session, expression);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} never became {want}; it is {got}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The page's chat lines.
    fn lines(&mut self, session: &str) -> Vec<String> {
        let v = self.poll(
            session,
            "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)",
        );
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Waits until the page shows `line` (polling the DOM; fails at the deadline).
    fn wait_for_line(&mut self, session: &str, line: &str) {
        let deadline = Instant::now() + T;
        loop {
            let lines = self.lines(session);
            if lines.iter().any(|l| l == line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {line:?}; it shows {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_connected(&mut self, session: &str) {
        self.wait_until(
            session,
            "document.getElementById('status').textContent",
            json!("connected"),
        );
    }

    /// Types `text` into the page's box and submits it, as a user would.
    fn say(&mut self, session: &str, text: &str) {
        let js = format!(
            "document.getElementById('text').value = {}; document.querySelector('#form button').click(); true",
            json!(text)
        );
        assert_eq!(self.eval(session, &js), json!(true));
    }

    fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self.command(
            Some(session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
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
                wait_knows(x, y.id());
            }
        }
    }
    // Both pages reach the room through a node that does not own it.
    let owner = owner_of_lobby(&nodes);
    let edges: Vec<&Node> = nodes.into_iter().filter(|n| n.id() != owner).collect();
    let (one, two) = (edges[0], edges[1]);
    let http = |node: &Node| node.http_addr().unwrap();

    let mut browser = Browser::launch();
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
