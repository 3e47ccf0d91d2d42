//! HTTP and WebSockets into objects, through real nodes on 127.0.0.1 and real clients
//! (curl for HTTP, tungstenite for WebSockets): routing to `Object::fetch`, error answers,
//! durability of a fetch's writes, forwarding from a non-owner node, and hibernating
//! WebSockets across two nodes.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::bytes::Bytes;
use cairn::gateway::GatewayConfig;
use cairn::http;
use cairn::net::NodeEvent;
use cairn::prelude::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

const T: Duration = Duration::from_secs(20);
/// The test class's idle timeout: short, so tests see it evicted.
const IDLE: Duration = Duration::from_millis(300);

/// A room per key: `GET /` answers its durable hit count, `POST /` adds one; `/node`
/// answers the id of the node running the handler; `/fail` errs, `/panic` panics, `/slow`
/// outlives the gateway's handler timeout; `/ws?name=N` accepts a WebSocket tagged `chat`
/// with attachment `N`. A socket message `text` is stored and broadcast as `N: text #seq`.
struct Room {
    hits: u64,
    posts: u64,
}

fn text(status: http::StatusCode, body: String) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response
}

impl Object for Room {
    const CLASS: &'static str = "room";
    type Msg = ();

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Room {
            hits: ctx.storage().get("hits")?.unwrap_or(0),
            posts: ctx.storage().get("posts")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, (): (), _ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }

    fn idle_timeout() -> Option<Duration> {
        Some(IDLE)
    }

    async fn fetch(
        &mut self,
        request: http::Request<Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        // `/room/{key}/{rest}`: the rest decides.
        let rest: String = request
            .uri()
            .path()
            .splitn(4, '/')
            .nth(3)
            .unwrap_or("")
            .to_owned();
        let ok = http::StatusCode::OK;
        match (request.method().as_str(), rest.as_str()) {
            ("GET", "") => Ok(text(ok, format!("hits={}", self.hits))),
            ("POST", "") => {
                self.hits += 1;
                ctx.storage().put("hits", &self.hits)?;
                Ok(text(ok, format!("hits={}", self.hits)))
            }
            (_, "node") => Ok(text(ok, format!("node={}", ctx.handle().node()))),
            (_, "fail") => {
                // Written, then failed: the write must not survive.
                ctx.storage().put("hits", &1000u64)?;
                Err("the room refuses".into())
            }
            (_, "panic") => panic!("the room panics"),
            (_, "slow") => {
                ctx.handle().sleep(Duration::from_secs(30)).await;
                Ok(text(ok, "late".to_owned()))
            }
            (_, "ws") => {
                let name = request
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("name="))
                    .unwrap_or("anon")
                    .to_owned();
                match ctx.accept_websocket(&request, vec!["chat".to_owned()], Some(name.into())) {
                    Ok(response) => Ok(response),
                    Err(e) => Ok(text(http::StatusCode::BAD_REQUEST, e.to_string())),
                }
            }
            _ => Ok(text(
                http::StatusCode::NOT_FOUND,
                "no such room page".to_owned(),
            )),
        }
    }

    async fn websocket_message(
        &mut self,
        socket: SocketId,
        message: WsMessage,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        let WsMessage::Text(said) = message else {
            return Ok(());
        };
        let sockets = ctx.websockets();
        let name = sockets.attachment(socket).await?.unwrap_or_default();
        let name = String::from_utf8_lossy(&name).into_owned();
        if said == "who" {
            let n = sockets.list(Some("chat")).await.len();
            sockets.send(socket, WsMessage::Text(format!("sockets={n}")))?;
            return Ok(());
        }
        self.posts += 1;
        ctx.storage().put("posts", &self.posts)?;
        sockets.broadcast(
            Some("chat"),
            WsMessage::Text(format!("{name}: {said} #{}", self.posts)),
        );
        Ok(())
    }
}

/// A class hosted nowhere over HTTP routes is answered 404; this one exists to have two.
fn start(dir: &Path, name: &str, join: Option<SocketAddr>, http: bool) -> Node {
    let mut b = Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .listen("127.0.0.1:0".parse().unwrap());
    if let Some(seed) = join {
        b = b.join([seed]);
    }
    if http {
        let config = GatewayConfig {
            // Long enough for a panic's backtrace on a loaded machine; short for `/slow`.
            handler_timeout: Duration::from_secs(3),
            ..GatewayConfig::default()
        };
        b = b.http("127.0.0.1:0".parse().unwrap()).http_config(config);
    }
    let node = b.start().unwrap();
    node.host::<Room>();
    node
}

fn cluster(dir: &Path) {
    cairn::net::ClusterCa::generate()
        .unwrap()
        .save(&dir.join("cluster"))
        .unwrap();
}

/// Waits until `node` knows `peer` (subscribing first, so an `Up` cannot slip by).
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

/// A curl answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(method: &str, url: &str, body: Option<&str>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "20", "-X", method, url]);
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    let out = cmd.output().expect("curl runs (CI installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer from {url}: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn url(node: &Node, path: &str) -> String {
    format!("http://{}{path}", node.http_addr().expect("serves HTTP"))
}

/// A key of `room` whose owner is `want`, as `nodes[0]` routes it now (the leader of the
/// key's shard; waits for the first elections).
fn key_owned_by(nodes: &[&Node], want: NodeId) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = (0..1000)
            .map(|i| format!("r{i}"))
            .find(|k| nodes[0].object::<Room>(k).owner().ok() == Some(want));
        if let Some(key) = found {
            return key;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no key is owned by {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fetch_routes_to_the_object_and_its_writes_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let node = start(dir.path(), "a", None, true);
    let a = curl("POST", &url(&node, "/room/lobby/"), None);
    assert_eq!((a.status, a.body.as_str()), (200, "hits=1"));
    let a = curl("POST", &url(&node, "/room/lobby"), None);
    assert_eq!((a.status, a.body.as_str()), (200, "hits=2"));
    let a = curl("GET", &url(&node, "/room/other/"), None);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "hits=0"),
        "keys are apart"
    );
    assert!(a.header("x-request-id").is_some());
    drop(node);
    // Every answered POST was durable: a new node on the same data dir sees both.
    let node = start(dir.path(), "a", None, true);
    let a = curl("GET", &url(&node, "/room/lobby/"), None);
    assert_eq!((a.status, a.body.as_str()), (200, "hits=2"));
}

#[test]
fn the_http_port_also_serves_the_nodes_pages_under_the_reserved_class() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let node = start(dir.path(), "a", None, true);
    assert_eq!(curl("POST", &url(&node, "/room/lobby/"), None).status, 200);
    let page = curl("GET", &url(&node, "/cairn/metrics"), None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains(r#"cairn_object_activations_total{class="room"} 1"#),
        "{}",
        page.body
    );
    let status = curl("GET", &url(&node, "/cairn/status.json"), None);
    assert_eq!(status.status, 200);
    assert!(
        status.body.contains(r#""name":"a""#) || status.body.contains(r#""name": "a""#),
        "{}",
        status.body
    );
    assert_eq!(curl("GET", &url(&node, "/cairn/nothing"), None).status, 404);
}

#[test]
fn errors_are_answered_404_500_and_504() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let node = start(dir.path(), "a", None, true);
    let a = curl("GET", &url(&node, "/nosuchclass/k/"), None);
    assert_eq!(a.status, 404, "unknown class: {}", a.body);
    let a = curl("GET", &url(&node, "/room/k/nosuchpage"), None);
    assert_eq!(a.status, 404, "the object's own 404");

    for page in ["fail", "panic"] {
        let a = curl("POST", &url(&node, &format!("/room/k/{page}")), None);
        assert_eq!(a.status, 500, "{page}: {}", a.body);
        let id = a.header("x-request-id").expect("a request id").to_owned();
        assert!(
            a.body.contains(&id),
            "{page}: the body names {id}: {}",
            a.body
        );
    }
    // The failed handler's write was discarded, and the object still answers.
    let a = curl("GET", &url(&node, "/room/k/"), None);
    assert_eq!((a.status, a.body.as_str()), (200, "hits=0"));

    let a = curl("GET", &url(&node, "/room/k/slow"), None);
    assert_eq!(a.status, 504, "{}", a.body);
}

#[test]
fn a_request_to_a_non_owner_is_forwarded_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    // Only `b` serves HTTP; `a` (which created the shards and leads them) owns the key.
    let b_seed = start(dir.path(), "a", None, false);
    let a = start(
        dir.path(),
        "b",
        Some(b_seed.mesh().unwrap().local_addr()),
        true,
    );
    let b = b_seed;
    wait_knows(&a, b.id());
    wait_knows(&b, a.id());
    let key = key_owned_by(&[&a, &b], b.id());
    let ans = curl("GET", &url(&a, &format!("/room/{key}/node")), None);
    assert_eq!(
        (ans.status, ans.body.clone()),
        (200, format!("node={}", b.id()))
    );
    let ans = curl("POST", &url(&a, &format!("/room/{key}/")), Some("x"));
    assert_eq!((ans.status, ans.body.as_str()), (200, "hits=1"));
    assert_eq!(b.status().objects.get("room"), Some(&1), "active on b");
    assert_eq!(a.status().objects.get("room"), None, "never on a");
    // A handler failing on the owner is a 500 at the edge, with the edge's request id.
    let ans = curl("GET", &url(&a, &format!("/room/{key}/fail")), None);
    assert_eq!(ans.status, 500);
    let id = ans.header("x-request-id").unwrap();
    assert!(ans.body.contains(id));
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn ws(node: &Node, path: &str) -> Ws {
    let addr = node.http_addr().unwrap();
    let (socket, response) =
        tungstenite::connect(format!("ws://{addr}{path}")).expect("the WebSocket is accepted");
    assert_eq!(response.status(), 101);
    if let MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(T)).unwrap();
    }
    socket
}

fn read_text(socket: &mut Ws) -> String {
    loop {
        match socket.read().expect("a message before the timeout") {
            Frame::Text(t) => return t.to_string(),
            Frame::Ping(_) | Frame::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Polls `cond` until it holds (the state observed is another node's, reached by
/// status requests; no fixed sleep).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn websockets_on_two_nodes_share_a_room_that_hibernates() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    // `b` is the node named "a": it created the shards and leads them, so the room lives
    // there; alice connects through the other node, bob through `b`.
    let b = start(dir.path(), "a", None, true);
    let a = start(dir.path(), "b", Some(b.mesh().unwrap().local_addr()), true);
    wait_knows(&a, b.id());
    wait_knows(&b, a.id());
    let key = key_owned_by(&[&a, &b], b.id());
    let mut alice = ws(&a, &format!("/room/{key}/ws?name=alice"));
    let mut bob = ws(&b, &format!("/room/{key}/ws?name=bob"));

    alice.send(Frame::text("who")).unwrap();
    assert_eq!(
        read_text(&mut alice),
        "sockets=2",
        "the list spans both nodes"
    );

    alice.send(Frame::text("hello")).unwrap();
    assert_eq!(read_text(&mut bob), "alice: hello #1");
    assert_eq!(read_text(&mut alice), "alice: hello #1");

    // The room is evicted while both sockets stay open ...
    wait_until("the room to be evicted", || {
        !b.status().objects.contains_key("room")
    });
    // ... and the next message wakes it, with its storage and the sockets' attachments.
    bob.send(Frame::text("still here")).unwrap();
    assert_eq!(read_text(&mut alice), "bob: still here #2");
    assert_eq!(read_text(&mut bob), "bob: still here #2");
    assert_eq!(a.status().objects.get("room"), None, "never active on a");
}

/// Kills the child on drop (also when the test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cairn_node_run_http_serves_the_demo_counter() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_cairn-node"))
            .args(["run", "--name", "n1", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--cluster")
            .arg(dir.path().join("cluster"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("http listen=").map(str::to_owned))
        .expect("the node announces its HTTP address");
    let base = format!("http://{addr}/counter/visits/");
    let a = curl("POST", &base, Some("5"));
    assert_eq!((a.status, a.body.as_str()), (200, "5\n"));
    let a = curl("POST", &base, None);
    assert_eq!((a.status, a.body.as_str()), (200, "6\n"));
    let a = curl("GET", &base, None);
    assert_eq!((a.status, a.body.as_str()), (200, "6\n"));
    let a = curl("POST", &base, Some("lots"));
    assert_eq!(a.status, 400, "{}", a.body);
}

#[test]
fn http_is_off_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let node = start(dir.path(), "a", None, false);
    assert_eq!(node.http_addr(), None);
}

#[test]
fn a_full_mailbox_is_answered_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig {
        handler_timeout: Duration::from_secs(3),
        ..GatewayConfig::default()
    };
    // A local node whose objects' mailboxes hold two messages.
    let node = Node::builder()
        .workers(2)
        .mailbox_capacity(2)
        .data_dir(dir.path())
        .http("127.0.0.1:0".parse().unwrap())
        .http_config(config)
        .start()
        .unwrap();
    node.host::<Room>();
    let slow = url(&node, "/room/busy/slow");
    let busy = std::thread::spawn(move || curl("GET", &slow, None).status);
    // The room is busy once it is active (the slow request is being handled).
    wait_until("the room to be busy", || {
        node.status().objects.contains_key("room")
    });
    let page = url(&node, "/room/busy/");
    let answers: Vec<Answer> = (0..6)
        .map(|_| {
            let page = page.clone();
            std::thread::spawn(move || curl("GET", &page, None))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(
        refused.len() >= 3,
        "six requests behind a busy object with room for two: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for a in refused {
        assert!(a.header("retry-after").is_some(), "503 without Retry-After");
    }
    assert_eq!(busy.join().unwrap(), 504);
}

#[test]
fn sockets_are_closed_1012_when_their_objects_owner_fails() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let a = start(dir.path(), "a", None, true);
    let b = start(dir.path(), "b", Some(a.mesh().unwrap().local_addr()), false);
    wait_knows(&a, b.id());
    wait_knows(&b, a.id());
    let key = key_owned_by(&[&a, &b], b.id());
    let other = key_owned_by(&[&a, &b], a.id());
    let mut moved = ws(&a, &format!("/room/{key}/ws?name=m"));
    let mut stays = ws(&a, &format!("/room/{other}/ws?name=s"));
    moved.send(Frame::text("hi")).unwrap();
    assert_eq!(read_text(&mut moved), "m: hi #1");

    // `b` goes: its objects now belong to `a`, and their sockets are told to reconnect.
    drop(b);
    let code = loop {
        match moved.read() {
            Ok(Frame::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1012));
    // A socket whose object stayed where it was is not touched.
    stays.send(Frame::text("still")).unwrap();
    assert_eq!(read_text(&mut stays), "s: still #1");
}
