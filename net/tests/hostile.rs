//! A hostile member: an in-process peer holding a valid cluster certificate that speaks
//! the raw wire protocol (`testing` feature) and lies. Each lie is refused and counted,
//! and the honest nodes carry on.

mod common;

use std::time::{Duration, Instant};

use cairn_net::mesh::wire::{Bytes, Hello, Wire, MESH_LANE};
use cairn_net::{ClusterCa, Endpoint, FramedReceiver, FramedSender, Mesh, TlsConfig};
use cairn_scheduler::{CallError, Ctx, Message, NodeId, Pid, Reply, Runtime};
use common::{localhost, spawn, start_mesh};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Double(u64, Reply<u64>),
    /// Passes the request on to `to` (another node's process): the answer comes from there.
    Forward(Pid, u64, Reply<u64>),
}

const TAG: &str = "hostile.Msg";

/// A peer speaking the wire protocol by hand under node id `node`.
struct Rogue {
    rt: Runtime,
    tx: FramedSender,
    rx: FramedReceiver,
}

impl Rogue {
    /// Connects to `mesh` with a valid certificate named `name`, introducing itself as
    /// `node`.
    fn connect(ca: &ClusterCa, name: &str, node: u64, mesh: &Mesh) -> Rogue {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(name).unwrap());
        let endpoint = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
        let listen = endpoint.local_addr().unwrap();
        let (addr, server) = (mesh.local_addr(), format!("node-{}", mesh.node().0));
        let name = name.to_owned();
        let lanes = rt.block_on(rt.timeout(TIMEOUT, async move {
            let conn = endpoint.connect(addr, &server).await.unwrap();
            let mut tx = conn.open_lane(MESH_LANE).await.unwrap();
            tx.send(&Wire::Hello(Hello {
                node: NodeId(node),
                incarnation: 1,
                listen,
                name,
                peers: vec![],
            }))
            .await
            .unwrap();
            let mut rx = conn.accept_lane().await.unwrap();
            let ack = rx.recv::<Wire>().await.unwrap().unwrap();
            assert!(matches!(ack, Wire::HelloAck(_)), "{ack:?}");
            // Keep the endpoint and connection alive with the lanes.
            std::mem::forget((endpoint, conn));
            (tx, rx)
        }));
        let (tx, rx) = lanes.expect("rogue connected");
        Rogue { rt, tx, rx }
    }

    fn send(&mut self, frame: Wire) {
        let tx = &mut self.tx;
        self.rt
            .block_on(self.rt.timeout(TIMEOUT, tx.send(&frame)))
            .expect("in time")
            .expect("sent");
    }

    /// The next frame that is not membership chatter.
    fn recv_send(&mut self) -> Wire {
        let rx = &mut self.rx;
        self.rt
            .block_on(self.rt.timeout(TIMEOUT, async move {
                loop {
                    match rx.recv::<Wire>().await.unwrap().unwrap() {
                        frame @ Wire::Send { .. } => return frame,
                        _ => continue,
                    }
                }
            }))
            .expect("a message in time")
    }
}

fn doubler(rt: &Runtime) -> Pid {
    rt.spawn(|mut ctx: Ctx<Msg>| async move {
        while let Some(Message::User(msg)) = ctx.recv().await {
            match msg {
                Msg::Double(n, reply) => reply.send(n * 2).unwrap(),
                Msg::Forward(to, n, reply) => {
                    let handle = ctx.handle().clone();
                    handle.send(to, Msg::Double(n, reply)).await.unwrap()
                }
            }
        }
    })
    .pid()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn encoded(value: u64) -> Bytes {
    Bytes(rmp_serde::to_vec_named(&value).unwrap())
}

#[test]
fn a_reply_from_a_node_the_call_was_not_sent_to_completes_nothing() {
    let ca = ClusterCa::generate().unwrap();
    let (rt, mesh) = start_mesh(&ca, 1, &[], IDLE);
    mesh.declare::<Msg>(TAG).unwrap();
    let mut callee = Rogue::connect(&ca, "rogue-callee", 66, &mesh);
    let mut forger = Rogue::connect(&ca, "rogue-forger", 67, &mesh);

    // A call to a process of node 66.
    let target = Pid::from_parts(NodeId(66), 0, 5);
    let handle = rt.handle();
    let answer = spawn(&rt, async move {
        handle.call(target, |r| Msg::Double(21, r), TIMEOUT).await
    });
    let Wire::Send { call: Some(id), .. } = callee.recv_send() else {
        panic!("the call carries its reply id");
    };

    // Node 67 learned the id somehow and answers first: refused, the call keeps waiting.
    forger.send(Wire::Reply {
        id,
        result: Ok(encoded(666)),
    });
    wait_until("the forged reply to be counted", || {
        mesh.stats().forged_replies == 1
    });
    assert!(
        answer.try_recv().is_err(),
        "a forged answer completed the call"
    );

    // The node the call went to answers: that completes it.
    callee.send(Wire::Reply {
        id,
        result: Ok(encoded(42)),
    });
    assert_eq!(
        answer.recv_timeout(TIMEOUT).unwrap(),
        Ok::<u64, CallError>(42)
    );
    assert_eq!(mesh.stats().forged_replies, 1);
    mesh.close();
    rt.shutdown();
}

#[test]
fn reply_ids_on_the_wire_are_not_sequential() {
    let ca = ClusterCa::generate().unwrap();
    let (rt, mesh) = start_mesh(&ca, 1, &[], IDLE);
    mesh.declare::<Msg>(TAG).unwrap();
    let mut callee = Rogue::connect(&ca, "rogue-callee", 66, &mesh);
    let target = Pid::from_parts(NodeId(66), 0, 5);
    let mut ids = Vec::new();
    for n in 0..8 {
        let handle = rt.handle();
        let _pending = spawn(&rt, async move {
            handle
                .call(target, |r| Msg::Double(n, r), Duration::from_secs(1))
                .await
        });
        let Wire::Send { call: Some(id), .. } = callee.recv_send() else {
            panic!("the call carries its reply id");
        };
        ids.push(id);
    }
    let close = ids
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) < 1 << 32)
        .count();
    assert!(close < 2, "reply ids are guessable: {ids:?}");
    mesh.close();
    rt.shutdown();
}

#[test]
fn a_reply_passed_on_to_a_third_node_is_answered_through_the_node_that_passed_it() {
    let ca = ClusterCa::generate().unwrap();
    let (rt1, m1) = start_mesh(&ca, 1, &[], IDLE);
    let (rt2, m2) = start_mesh(&ca, 2, &[&m1], IDLE);
    let (rt3, m3) = start_mesh(&ca, 3, &[&m1], IDLE);
    for mesh in [&m1, &m2, &m3] {
        mesh.declare::<Msg>(TAG).unwrap();
    }
    for (a, b) in [(&m1, &m2), (&m1, &m3)] {
        wait_until("the nodes to connect", || {
            a.is_connected(b.node()) && b.is_connected(a.node())
        });
    }
    // Node 2 dials node 3 when it first passes something on; it has to know it first.
    wait_until("node 2 to learn of node 3", || {
        m2.members().iter().any(|m| m.node == NodeId(3))
    });
    let forwarder = doubler(&rt2);
    let answerer = doubler(&rt3);
    // Node 1 calls node 2, which passes the Reply on to node 3; node 3 answers.
    let v = rt1
        .block_on(rt1.call(forwarder, |r| Msg::Forward(answerer, 21, r), TIMEOUT))
        .unwrap();
    assert_eq!(v, 42);
    // A pid on node 3 that does not exist: node 3's failure report travels back.
    let nobody = Pid::from_parts(NodeId(3), 0, u64::MAX - 1);
    let r: Result<u64, _> =
        rt1.block_on(rt1.call(forwarder, |r| Msg::Forward(nobody, 1, r), TIMEOUT));
    assert_eq!(r, Err(CallError::NoProc));
    for mesh in [&m1, &m2, &m3] {
        assert_eq!(mesh.stats().forged_replies, 0, "{:?}", mesh.stats());
    }
    for mesh in [&m1, &m2, &m3] {
        mesh.close();
    }
    for rt in [rt1, rt2, rt3] {
        rt.shutdown();
    }
}
