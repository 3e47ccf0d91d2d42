//! Real mesh nodes on 127.0.0.1 (port 0), several runtimes in one test process.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_net::mesh::wire::{Bytes, Hello, RemoteFailure, Target, Wire, MESH_LANE};
use cairn_net::mesh::Seed;
use cairn_net::{ClusterCa, Endpoint, Mesh, MeshConfig, NodeEvent, TlsConfig};
use cairn_scheduler::{CallError, Ctx, Message, NodeId, Pid, Reply, Runtime, SendError};
use common::{init_logs, localhost, spawn, wait_for_log};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Seq {
        sender: u32,
        seq: u64,
    },
    Done {
        sender: u32,
    },
    Text(String),
    Double(u64, Reply<u64>),
    /// Kept, never answered (the server reports `Held`).
    Hold(Reply<u64>),
    /// A large message (for backpressure).
    Padded {
        seq: u64,
        pad: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Other(u32);

#[derive(Debug, PartialEq)]
enum Report {
    Text(String),
    Done {
        sender: u32,
        count: u64,
        in_order: bool,
    },
    /// The server holds a call's reply: the call reached it.
    Held,
}

struct Node {
    rt: Runtime,
    mesh: Mesh,
}

fn cert_name(n: u64) -> String {
    format!("node-{n}")
}

/// The failure timeout of nodes in tests that are not about failure detection: long, so a
/// machine so loaded that a node misses SWIM probes for the default 5 s (seen at load
/// average 30 on 2 cores) does not declare its peer down mid-test. Detection itself is
/// tested with the default (`lost_node_...` here, `membership.rs`, `tests/mesh_node.rs`).
const QUIET_FAILURE_TIMEOUT: Duration = Duration::from_secs(30);

/// The id of the node named `cert_name(n)`.
fn id(n: u64) -> NodeId {
    NodeId::of_name(&cert_name(n))
}

fn start_node(ca: &ClusterCa, n: u64, seeds: &[&Node], idle: Duration) -> Node {
    start_node_with(ca, n, seeds, idle, QUIET_FAILURE_TIMEOUT)
}

fn start_node_with(
    ca: &ClusterCa,
    n: u64,
    seeds: &[&Node],
    idle: Duration,
    failure_timeout: Duration,
) -> Node {
    init_logs();
    let rt = Runtime::builder().workers(2).node(id(n)).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(&cert_name(n)).unwrap());
    let mut config = MeshConfig::new(localhost(), tls)
        .idle_timeout(idle)
        .failure_timeout(failure_timeout);
    for seed in seeds {
        config = config.seed(seed.mesh.local_addr(), seed.mesh.name());
    }
    let mesh = Mesh::start(&rt.handle(), config).unwrap();
    mesh.declare::<Msg>("test.Msg").unwrap();
    mesh.declare::<Other>("test.Other").unwrap();
    Node { rt, mesh }
}

/// Waits until `a` and `b` are connected both ways.
fn wait_connected(a: &Node, b: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.mesh.is_connected(b.mesh.node()) && b.mesh.is_connected(a.mesh.node())) {
        assert!(Instant::now() < deadline, "nodes did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two nodes, 2 seeds 1.
fn pair(idle: Duration) -> (ClusterCa, Node, Node) {
    pair_with(idle, QUIET_FAILURE_TIMEOUT)
}

fn pair_with(idle: Duration, failure_timeout: Duration) -> (ClusterCa, Node, Node) {
    let ca = ClusterCa::generate().unwrap();
    let a = start_node_with(&ca, 1, &[], idle, failure_timeout);
    let b = start_node_with(&ca, 2, &[&a], idle, failure_timeout);
    wait_connected(&a, &b);
    (ca, a, b)
}

/// A server process on `node`: checks per-sender order, answers `Double`, holds `Hold`.
fn spawn_server(node: &Node, name: Option<&str>) -> (Pid, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel();
    let body = move |mut ctx: Ctx<Msg>| async move {
        let mut next: HashMap<u32, u64> = HashMap::new();
        let mut in_order: HashMap<u32, bool> = HashMap::new();
        let mut held = Vec::new();
        while let Some(msg) = ctx.recv().await {
            let Message::User(msg) = msg else { continue };
            match msg {
                Msg::Seq { sender, seq } => {
                    let expected = next.entry(sender).or_insert(0);
                    if seq != *expected {
                        in_order.insert(sender, false);
                    }
                    *expected = seq + 1;
                }
                Msg::Done { sender } => {
                    let _ = tx.send(Report::Done {
                        sender,
                        count: next.get(&sender).copied().unwrap_or(0),
                        in_order: in_order.get(&sender).copied().unwrap_or(true),
                    });
                }
                Msg::Text(text) => {
                    let _ = tx.send(Report::Text(text));
                }
                Msg::Double(n, reply) => {
                    reply.send(n * 2).unwrap();
                }
                Msg::Hold(reply) => {
                    held.push(reply);
                    let _ = tx.send(Report::Held);
                }
                Msg::Padded { .. } => {}
            }
        }
    };
    let pid = match name {
        Some(name) => node.rt.spawn_named(name, body).unwrap().pid(),
        None => node.rt.spawn(body).pid(),
    };
    (pid, rx)
}

fn shutdown(nodes: Vec<Node>) {
    for node in &nodes {
        node.mesh.close();
    }
    for node in nodes {
        node.rt.shutdown();
    }
}

#[test]
fn send_by_pid_and_by_name_across_nodes() {
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, Some("inbox"));
    assert!(a.mesh.peers().iter().any(|p| p.node == id(2)));
    assert!(b.mesh.peers().iter().any(|p| p.node == id(1)));

    let handle = a.rt.handle();
    a.rt.block_on(async {
        handle.send(pid, Msg::Text("by pid".into())).await.unwrap();
        handle
            .named_ref("inbox", id(2))
            .send(Msg::Text("by name".into()))
            .await
            .unwrap();
    });
    let got = |r: &mpsc::Receiver<Report>| r.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(got(&reports), Report::Text("by pid".into()));
    assert_eq!(got(&reports), Report::Text("by name".into()));

    // Location transparency: the same calls reach a local process.
    let (local, local_reports) = spawn_server(&a, Some("local-inbox"));
    a.rt.block_on(async {
        handle.send(local, Msg::Text("local".into())).await.unwrap();
        handle
            .named_ref("local-inbox", id(1))
            .send(Msg::Text("local name".into()))
            .await
            .unwrap();
    });
    assert_eq!(got(&local_reports), Report::Text("local".into()));
    assert_eq!(got(&local_reports), Report::Text("local name".into()));

    // And back from B to A.
    b.rt.block_on(b.rt.send(local, Msg::Text("from b".into())))
        .unwrap();
    assert_eq!(got(&local_reports), Report::Text("from b".into()));

    // Unregistered type: given back.
    #[derive(Serialize, Deserialize)]
    struct Unknown(u8);
    match a.rt.block_on(handle.send(pid, Unknown(7))) {
        Err(SendError::Unregistered(Unknown(7))) => {}
        other => panic!("expected Unregistered, got {other:?}"),
    }
    shutdown(vec![a, b]);
}

fn run_senders(a: &Node, to: Pid, senders: u32, per_sender: u64) {
    let waits: Vec<_> = (0..senders)
        .map(|sender| {
            let to = a.rt.actor_ref::<Msg>(to).unwrap();
            spawn(&a.rt, async move {
                for seq in 0..per_sender {
                    to.send(Msg::Seq { sender, seq }).await.unwrap();
                }
                to.send(Msg::Done { sender }).await.unwrap();
            })
        })
        .collect();
    for wait in waits {
        wait.recv_timeout(TIMEOUT).expect("sender finished");
    }
}

#[test]
fn one_sender_100k_messages_arrive_in_order() {
    const N: u64 = 100_000;
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, None);
    run_senders(&a, pid, 1, N);
    assert_eq!(
        reports.recv_timeout(TIMEOUT).unwrap(),
        Report::Done {
            sender: 0,
            count: N,
            in_order: true
        }
    );
    assert_eq!(b.mesh.stats().delivered, N + 1);
    shutdown(vec![a, b]);
}

#[test]
fn three_senders_to_one_remote_receiver_each_keep_their_order() {
    const N: u64 = 30_000;
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, None);
    run_senders(&a, pid, 3, N);
    let mut done: Vec<Report> = (0..3)
        .map(|_| reports.recv_timeout(TIMEOUT).unwrap())
        .collect();
    done.sort_by_key(|r| match r {
        Report::Done { sender, .. } => *sender,
        Report::Text(_) | Report::Held => u32::MAX,
    });
    for (sender, report) in done.into_iter().enumerate() {
        assert_eq!(
            report,
            Report::Done {
                sender: sender as u32,
                count: N,
                in_order: true
            }
        );
    }
    shutdown(vec![a, b]);
}

/// The receiver stops after its first message (waiting on a gate) with a mailbox of 8. The
/// sender must stall: between the two there is room only for the sender's buffer
/// (`SEND_BUFFER_HIGH_WATER`, 1 MiB), QUIC's stream window (quinn's default, 1.25 MB), one
/// read chunk and the mailbox — about 650 of these 4 KiB messages, far below `MAX_AHEAD`.
/// A sender that never waited would send all `N`.
#[test]
fn a_full_remote_mailbox_slows_the_sender_without_losing_or_reordering() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const N: u64 = 4_000;
    const PAD: usize = 4096;
    const MAX_AHEAD: u64 = 1_500;
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (tx, reports) = mpsc::channel();
    let (release, gate) = Reply::<()>::pair();
    let opts = cairn_scheduler::SpawnOptions {
        mailbox_capacity: Some(8),
        ..Default::default()
    };
    let pid =
        b.rt.spawn_opts(opts, move |mut ctx: Ctx<Msg>| async move {
            let mut gate = Some(gate);
            let mut next = 0;
            let mut in_order = true;
            while let Some(Message::User(msg)) = ctx.recv().await {
                match msg {
                    Msg::Padded { seq, .. } => {
                        in_order &= seq == next;
                        next = seq + 1;
                        if let Some(gate) = gate.take() {
                            let _ = gate.await;
                        }
                    }
                    Msg::Done { sender } => {
                        let _ = tx.send(Report::Done {
                            sender,
                            count: next,
                            in_order,
                        });
                    }
                    _ => {}
                }
            }
        })
        .unwrap()
        .pid();
    let sent = Arc::new(AtomicU64::new(0));
    let to = a.rt.actor_ref::<Msg>(pid).unwrap();
    let counter = Arc::clone(&sent);
    let sender = spawn(&a.rt, async move {
        for seq in 0..N {
            let pad = vec![0; PAD];
            to.send(Msg::Padded { seq, pad }).await.unwrap();
            counter.store(seq + 1, Ordering::SeqCst);
        }
        to.send(Msg::Done { sender: 0 }).await.unwrap();
    });
    // A bounded poll until the sender stops making progress (or finishes, which fails).
    let deadline = Instant::now() + TIMEOUT;
    let mut last = (0, Instant::now());
    loop {
        let now = sent.load(Ordering::SeqCst);
        if now == N || (now > 0 && now == last.0 && last.1.elapsed() > Duration::from_millis(300)) {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        assert!(Instant::now() < deadline, "the sender made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    eprintln!("the sender stalled after {stalled_at} of {N} messages");
    assert!(
        stalled_at <= MAX_AHEAD,
        "the sender ran {stalled_at} messages ahead of a stopped receiver"
    );
    release.send(()).unwrap();
    sender.recv_timeout(TIMEOUT).expect("sender finished");
    assert_eq!(
        reports.recv_timeout(TIMEOUT).unwrap(),
        Report::Done {
            sender: 0,
            count: N,
            in_order: true
        }
    );
    assert_eq!(b.mesh.stats().dead_letters, 0);
    shutdown(vec![a, b]);
}

#[test]
fn a_seed_that_starts_later_is_joined() {
    let ca = ClusterCa::generate().unwrap();
    // Reserve a port for the seed, start the joiner first, then the seed there.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    init_logs();
    let rt = Runtime::builder().workers(2).node(id(2)).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(&cert_name(2)).unwrap());
    let joiner = Mesh::start(
        &rt.handle(),
        MeshConfig::new(localhost(), tls).seed(port, cert_name(1)),
    )
    .unwrap();
    // The joiner tried the seed's address and found nobody there.
    wait_for_log(&["could not join through a seed", &port.to_string()]);
    let seed_rt = Runtime::builder().workers(2).node(id(1)).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(&cert_name(1)).unwrap());
    let seed = Mesh::start(&seed_rt.handle(), MeshConfig::new(port, tls)).unwrap();
    let a = Node {
        rt: seed_rt,
        mesh: seed,
    };
    let b = Node { rt, mesh: joiner };
    wait_connected(&a, &b);
    shutdown(vec![a, b]);
}

#[test]
fn remote_call_returns_the_value_and_fails_fast_or_times_out() {
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, Some("doubler"));
    let rt = &a.rt;
    let second = Duration::from_secs(5);

    let v = rt
        .block_on(rt.call(pid, |r| Msg::Double(21, r), second))
        .unwrap();
    assert_eq!(v, 42);
    let doubler = rt.named_ref::<Msg>("doubler", id(2));
    let v: u64 = rt
        .block_on(doubler.call(|r| Msg::Double(4, r), second))
        .unwrap();
    assert_eq!(v, 8);

    // A dead remote pid: an error at once, not a hang.
    let dead = b.rt.spawn(|_ctx: Ctx<Msg>| async {}).pid();
    b.rt.block_on(b.rt.wait_exit(dead));
    let started = Instant::now();
    let r: Result<u64, _> = rt.block_on(rt.call(dead, |r| Msg::Double(1, r), second));
    assert_eq!(r, Err(CallError::NoProc));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Unknown name: the same.
    let nobody = rt.named_ref::<Msg>("nobody", id(2));
    let r: Result<u64, _> = rt.block_on(nobody.call(|r| Msg::Double(1, r), second));
    assert_eq!(r, Err(CallError::NoProc));
    assert!(b.mesh.stats().dead_letters >= 2);

    // The callee holds the reply: the call times out.
    let started = Instant::now();
    let r: Result<u64, _> = rt.block_on(rt.call(pid, Msg::Hold, Duration::from_millis(200)));
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(reports.recv_timeout(TIMEOUT).unwrap(), Report::Held);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2));

    // Calls keep working after.
    let v = rt
        .block_on(rt.call(pid, |r| Msg::Double(5, r), second))
        .unwrap();
    assert_eq!(v, 10);
    shutdown(vec![a, b]);
}

#[test]
fn lost_node_fails_pending_calls_and_reports_down_within_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let (_ca, a, b) = pair_with(idle, cairn_net::mesh::DEFAULT_FAILURE_TIMEOUT);
    let (pid, reports) = spawn_server(&b, None);
    let mut events = a.mesh.node_events();
    let handle = a.rt.handle();
    let call = spawn(&a.rt, async move {
        let r: Result<u64, _> = handle.call(pid, Msg::Hold, TIMEOUT).await;
        r
    });
    // The call reached B (which holds its reply) before B goes.
    assert_eq!(reports.recv_timeout(TIMEOUT).unwrap(), Report::Held);
    let started = Instant::now();
    // B's runtime stops without closing its mesh: A sees only silence.
    b.rt.shutdown();
    drop(b);
    let r = call.recv_timeout(TIMEOUT).unwrap();
    let detected = started.elapsed();
    assert_eq!(r, Err(CallError::NoConnection));
    let down = a.rt.block_on(a.rt.timeout(Duration::from_secs(10), async {
        loop {
            if let NodeEvent::Down { node, .. } = events.next().await {
                return node;
            }
        }
    }));
    assert_eq!(down, Ok(id(2)));
    assert!(
        detected < idle + Duration::from_secs(2),
        "detected after {detected:?}"
    );
    eprintln!("node loss detected after {detected:?} (idle timeout {idle:?})");

    // Sending to it now fails with the message given back.
    match a.rt.block_on(a.rt.send(pid, Msg::Text("late".into()))) {
        Err(SendError::NoConnection(Msg::Text(t))) => assert_eq!(t, "late"),
        other => panic!("expected NoConnection, got {other:?}"),
    }
    shutdown(vec![a]);
}

#[test]
fn closed_mesh_is_seen_down_at_once() {
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, None);
    let mut events = a.mesh.node_events();
    let handle = a.rt.handle();
    let call = spawn(&a.rt, async move {
        let r: Result<u64, _> = handle.call(pid, Msg::Hold, TIMEOUT).await;
        r
    });
    // The call reached B (which holds its reply) before B goes.
    assert_eq!(reports.recv_timeout(TIMEOUT).unwrap(), Report::Held);
    let started = Instant::now();
    b.mesh.close();
    let r = call.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r, Err(CallError::NoConnection));
    assert!(started.elapsed() < Duration::from_secs(1));
    let down = a.rt.block_on(a.rt.timeout(Duration::from_secs(5), async {
        loop {
            if let NodeEvent::Down { node, .. } = events.next().await {
                return node;
            }
        }
    }));
    assert_eq!(down, Ok(id(2)));
    shutdown(vec![a, b]);
}

#[test]
fn simultaneous_dials_keep_one_connection_dialed_by_the_lower_node() {
    let ca = ClusterCa::generate().unwrap();
    let hub = start_node(&ca, 1, &[], Duration::from_secs(3));
    let x = start_node(&ca, 5, &[&hub], Duration::from_secs(3));
    wait_connected(&hub, &x);
    let y = start_node(&ca, 3, &[&hub], Duration::from_secs(3));
    wait_connected(&hub, &y);
    // y learned x from the hub's hello; x learns y by joining through the hub again
    // (which replaces its connection to the hub without a node-down).
    let mut x_events = x.mesh.node_events();
    x.rt.block_on(x.mesh.join(Seed::new(hub.mesh.local_addr(), cert_name(1))))
        .unwrap();
    assert!(x.mesh.peers().iter().any(|p| p.node == id(3)));
    assert!(y.mesh.peers().iter().any(|p| p.node == id(5)));
    // A pid's node is reachable once it is a member (SWIM, on control connections): wait
    // for that, with no data connection between x and y yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    let is_member = |of: &Node, n: u64| of.mesh.members().iter().any(|m| m.node == id(n));
    while !(is_member(&x, 3) && is_member(&y, 5)) {
        assert!(
            Instant::now() < deadline,
            "x and y did not see each other up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!x.mesh.is_connected(id(3)) && !y.mesh.is_connected(id(5)));
    let (on_x, x_reports) = spawn_server(&x, None);
    let (on_y, y_reports) = spawn_server(&y, None);
    // Both send first at once: both dial.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = [(&x, on_y), (&y, on_x)]
        .into_iter()
        .map(|(from, to)| {
            let handle = from.rt.handle();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for seq in 0..1000 {
                    handle
                        .block_on(handle.send(to, Msg::Seq { sender: 9, seq }))
                        .unwrap();
                }
                handle
                    .block_on(handle.send(to, Msg::Done { sender: 9 }))
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for reports in [x_reports, y_reports] {
        assert_eq!(
            reports.recv_timeout(TIMEOUT).unwrap(),
            Report::Done {
                sender: 9,
                count: 1000,
                in_order: true
            }
        );
    }
    let on_x_side = x.mesh.connection_info(id(3)).unwrap();
    let on_y_side = y.mesh.connection_info(id(5)).unwrap();
    assert_eq!(on_x_side.dialed_by, on_y_side.dialed_by);
    assert_eq!(
        on_x_side.dialed_by,
        id(3).min(id(5)),
        "the lower node's dial is kept"
    );
    // Nothing along the way (the re-join, the dials, 2,000 messages) looked like a node
    // loss to x.
    while let Some(event) = x_events.try_next() {
        assert!(!matches!(event, NodeEvent::Down { .. }), "{event:?}");
    }
    let refused = x.mesh.stats().duplicates_refused + y.mesh.stats().duplicates_refused;
    eprintln!("duplicate dials refused: {refused}");
    assert!(refused <= 1);
    shutdown(vec![hub, x, y]);
}

#[test]
fn unknown_tags_and_garbage_payloads_are_counted_and_the_mesh_carries_on() {
    let (ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, Some("inbox"));
    let b_addr = b.mesh.local_addr();

    // A hand-made peer (valid certificate) speaking the wire protocol badly.
    let rogue_rt = Runtime::builder().workers(1).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue("rogue").unwrap());
    let rogue = Endpoint::bind(&rogue_rt.handle(), localhost(), &tls).unwrap();
    let rogue_addr = rogue.local_addr().unwrap();
    let outcome = rogue_rt.block_on(rogue_rt.timeout(TIMEOUT, async move {
        let conn = rogue.connect(b_addr, &cert_name(2)).await.unwrap();
        let mut lane = conn.open_lane(MESH_LANE).await.unwrap();
        lane.send(&Wire::Hello(Hello {
            node: NodeId::of_name("rogue"),
            incarnation: 1,
            listen: rogue_addr,
            name: "rogue".into(),
            peers: vec![],
        }))
        .await
        .unwrap();
        let mut rx = conn.accept_lane().await.unwrap();
        let ack = rx.recv::<Wire>().await.unwrap().unwrap();
        assert!(matches!(ack, Wire::HelloAck(h) if h.node == id(2)));
        let send = |to: Target, tag: &str, call: Option<u64>, payload: Vec<u8>| Wire::Send {
            from: None,
            to,
            tag: tag.to_owned().into(),
            call,
            payload: Bytes(payload),
            request: None,
        };
        let to = Target::Pid(pid);
        // Unknown tag, as a call: answered with a failure.
        lane.send(&send(to.clone(), "no.such.tag", Some(7), vec![0x01]))
            .await
            .unwrap();
        // Garbage payloads for a known tag.
        lane.send(&send(
            to.clone(),
            "test.Msg",
            Some(8),
            vec![0xc1, 0xff, 0x00],
        ))
        .await
        .unwrap();
        lane.send(&send(to.clone(), "test.Msg", None, vec![]))
            .await
            .unwrap();
        // The wrong type for the process.
        lane.send(&send(to.clone(), "test.Other", Some(9), vec![0x05]))
            .await
            .unwrap();
        // A well-formed message after all that is delivered.
        let ok = rmp_serde::to_vec_named(&Msg::Text("rogue but fine".into())).unwrap();
        lane.send(&send(Target::Name("inbox".into()), "test.Msg", None, ok))
            .await
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(rx.recv::<Wire>().await.unwrap().unwrap());
        }
        // Now a frame that is not a mesh frame at all: the connection is closed.
        lane.send(&"not a mesh frame").await.unwrap();
        let closed = conn.closed().await;
        (answers, closed)
    }));
    let (answers, closed) = outcome.expect("rogue peer finished");
    assert_eq!(
        answers,
        vec![
            Wire::Reply {
                id: 7,
                result: Err(RemoteFailure::UnknownTag("no.such.tag".into()))
            },
            Wire::Reply {
                id: 8,
                result: Err(RemoteFailure::Malformed(match &answers[1] {
                    Wire::Reply {
                        result: Err(RemoteFailure::Malformed(m)),
                        ..
                    } => m.clone(),
                    other => panic!("expected Malformed, got {other:?}"),
                }))
            },
            Wire::Reply {
                id: 9,
                result: Err(RemoteFailure::WrongType)
            },
        ]
    );
    assert!(closed.to_string().contains("closed"), "{closed}");
    assert_eq!(
        reports.recv_timeout(TIMEOUT).unwrap(),
        Report::Text("rogue but fine".into())
    );
    let stats = b.mesh.stats();
    assert_eq!(stats.bad_messages, 4, "{stats:?}");
    assert_eq!(stats.protocol_errors, 1, "{stats:?}");
    wait_for_log(&["undeliverable message", "no.such.tag"]);
    wait_for_log(&["peer sent an invalid frame"]);

    // The real mesh carries on.
    a.rt.block_on(a.rt.send(pid, Msg::Text("still here".into())))
        .unwrap();
    assert_eq!(
        reports.recv_timeout(TIMEOUT).unwrap(),
        Report::Text("still here".into())
    );
    let v =
        a.rt.block_on(a.rt.call(pid, |r| Msg::Double(50, r), TIMEOUT))
            .unwrap();
    assert_eq!(v, 100);
    rogue_rt.shutdown();
    shutdown(vec![a, b]);
}

#[test]
fn a_node_without_a_cluster_ca_certificate_cannot_join() {
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, _reports) = spawn_server(&b, None);
    let other_ca = ClusterCa::generate().unwrap();
    let intruder = start_node(&other_ca, 7, &[&a], Duration::from_secs(3));
    wait_for_log(&["refused a peer"]);
    // The intruder's own join attempt through A has ended, refused.
    wait_for_log(&[
        "could not join through a seed",
        &a.mesh.local_addr().to_string(),
    ]);
    assert!(
        intruder.mesh.peers().is_empty(),
        "{:?}",
        intruder.mesh.peers()
    );
    assert!(!a.mesh.peers().iter().any(|p| p.node == id(7)));
    // It cannot send either: the message comes back.
    match intruder
        .rt
        .block_on(intruder.rt.send(pid, Msg::Text("let me in".into())))
    {
        Err(SendError::NoConnection(Msg::Text(_))) => {}
        other => panic!("expected NoConnection, got {other:?}"),
    }
    // Dialing directly fails at the handshake.
    let joined = intruder.rt.block_on(
        intruder
            .mesh
            .join(Seed::new(b.mesh.local_addr(), cert_name(2))),
    );
    assert!(joined.is_err());
    assert!(!b.mesh.peers().iter().any(|p| p.node == id(7)));
    shutdown(vec![a, b, intruder]);
}

/// `cargo test --release -p cairn-net --test mesh -- --ignored --nocapture`
#[test]
#[ignore]
fn remote_throughput_and_call_latency() {
    const N: u64 = 1_000_000;
    let (_ca, a, b) = pair(Duration::from_secs(3));
    let (pid, reports) = spawn_server(&b, None);
    run_senders(&a, pid, 1, 10_000); // warm-up
    reports.recv_timeout(TIMEOUT).unwrap();
    let (pid, reports) = spawn_server(&b, None);
    let started = Instant::now();
    run_senders(&a, pid, 1, N);
    let report = reports.recv_timeout(TIMEOUT).unwrap();
    let elapsed = started.elapsed();
    assert!(matches!(report, Report::Done { in_order: true, .. }));
    println!(
        "remote one-way: {N} msgs in {elapsed:?} = {:.0} msgs/s",
        N as f64 / elapsed.as_secs_f64()
    );

    const SENDERS: u32 = 4;
    let (pid, reports) = spawn_server(&b, None);
    let started = Instant::now();
    run_senders(&a, pid, SENDERS, N / u64::from(SENDERS));
    for _ in 0..SENDERS {
        reports.recv_timeout(TIMEOUT).unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "remote one-way, {SENDERS} senders: {N} msgs in {elapsed:?} = {:.0} msgs/s",
        N as f64 / elapsed.as_secs_f64()
    );

    const CALLS: usize = 20_000;
    let server = a.rt.actor_ref::<Msg>(pid).unwrap();
    let lat = spawn(&a.rt, async move {
        let mut lat = Vec::with_capacity(CALLS);
        for i in 0..CALLS + 1000 {
            let t = Instant::now();
            let v: u64 = server
                .call(|r| Msg::Double(i as u64, r), TIMEOUT)
                .await
                .unwrap();
            assert_eq!(v, 2 * i as u64);
            if i >= 1000 {
                lat.push(t.elapsed());
            }
        }
        lat
    })
    .recv_timeout(TIMEOUT)
    .unwrap();
    let mut sorted = lat.clone();
    sorted.sort();
    let total: Duration = lat.iter().sum();
    println!(
        "remote call: {CALLS} sequential calls, {:.0} calls/s, p50 {:?}, p99 {:?}",
        CALLS as f64 / total.as_secs_f64(),
        sorted[CALLS / 2],
        sorted[CALLS * 99 / 100]
    );
    shutdown(vec![a, b]);
}

/// A runtime has one mesh: the scheduler hands every remote pid to it, so a second one
/// would never see its own traffic.
#[test]
fn a_second_mesh_on_one_runtime_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    let a = start_node(&ca, 1, &[], Duration::from_secs(3));
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(&cert_name(1)).unwrap());
    let second = Mesh::start(&a.rt.handle(), MeshConfig::new(localhost(), tls));
    assert!(
        matches!(second, Err(cairn_net::MeshError::AlreadyStarted)),
        "{second:?}"
    );
    // The first one carries on.
    assert_eq!(
        cairn_net::Mesh::from_handle(&a.rt.handle()).unwrap().node(),
        id(1)
    );
    shutdown(vec![a]);
}
