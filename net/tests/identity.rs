//! Hellos are bound to certificates: a member holding a valid cluster certificate for one
//! name can introduce itself neither under another name nor under another node's id, on
//! either side of the hello exchange, and so cannot take over another node's live link.

mod common;

use std::time::{Duration, Instant};

use cairn_net::mesh::wire::{Hello, Wire, MESH_LANE};
use cairn_net::mesh::{DialError, Seed};
use cairn_net::{ClusterCa, Endpoint, Mesh, TlsConfig};
use cairn_scheduler::{NodeId, Runtime};
use common::{id, localhost, start_mesh};

const TIMEOUT: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(5);

/// Two honest nodes (`node-1`, `node-2`) connected both ways.
fn pair(ca: &ClusterCa) -> [(Runtime, Mesh); 2] {
    let one = start_mesh(ca, 1, &[], IDLE);
    let two = start_mesh(ca, 2, &[&one.1], IDLE);
    let deadline = Instant::now() + TIMEOUT;
    while !(one.1.is_connected(id(2)) && two.1.is_connected(id(1))) {
        assert!(Instant::now() < deadline, "the pair never connected");
        std::thread::sleep(Duration::from_millis(5));
    }
    [one, two]
}

/// Dials `mesh` with a certificate for `cert_name` and sends `hello`; whether the mesh
/// answered with a hello ack (`false`: it closed the connection instead).
fn try_hello(
    ca: &ClusterCa,
    cert_name: &str,
    mesh: &Mesh,
    make: impl FnOnce(std::net::SocketAddr) -> Hello,
) -> bool {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(cert_name).unwrap());
    let endpoint = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
    let hello = make(endpoint.local_addr().unwrap());
    let (addr, server) = (mesh.local_addr(), mesh.name().to_owned());
    let acked = rt.block_on(rt.timeout(TIMEOUT, async move {
        let conn = endpoint.connect(addr, &server).await.unwrap();
        let mut tx = conn.open_lane(MESH_LANE).await.unwrap();
        tx.send(&Wire::Hello(hello)).await.unwrap();
        let acked = match conn.accept_lane().await {
            Ok(mut rx) => matches!(rx.recv::<Wire>().await, Ok(Some(Wire::HelloAck(_)))),
            Err(_) => false,
        };
        conn.close(0, b"done");
        endpoint.close();
        acked
    }));
    rt.shutdown();
    acked.expect("the hello exchange ended in time")
}

fn hello(node: NodeId, name: &str, listen: std::net::SocketAddr) -> Hello {
    Hello {
        node,
        // A newer incarnation than any real node's: were it believed, it would replace
        // the named node's link.
        incarnation: u64::MAX,
        listen,
        name: name.to_owned(),
        peers: vec![],
    }
}

#[test]
fn a_member_posing_as_another_node_is_refused_and_cannot_replace_its_link() {
    let ca = ClusterCa::generate().unwrap();
    let [(rt1, m1), (rt2, m2)] = pair(&ca);
    let link = m1.connection_info(id(2)).unwrap();
    let errors = m1.stats().protocol_errors;
    let mut events = m1.node_events();

    // A valid certificate for node-3, claiming node-2 outright.
    assert!(!try_hello(&ca, "node-3", &m1, |at| hello(
        id(2),
        "node-2",
        at
    )));
    // ... claiming node-2's id under its own name.
    assert!(!try_hello(&ca, "node-3", &m1, |at| hello(
        id(2),
        "node-3",
        at
    )));
    // ... claiming the name seeds known by address are dialed under.
    assert!(!try_hello(&ca, "node-3", &m1, |at| {
        hello(
            NodeId::of_name(cairn_net::SEED_SERVER_NAME),
            cairn_net::SEED_SERVER_NAME,
            at,
        )
    }));
    // A client certificate claiming to be node-2.
    assert!(!try_hello(&ca, "ops.client", &m1, |at| hello(
        id(2),
        "node-2",
        at
    )));
    assert_eq!(m1.stats().protocol_errors, errors + 4);

    // node-2's link is the one it was, and nobody saw it go down.
    assert_eq!(m1.connection_info(id(2)), Some(link));
    assert!(m2.is_connected(id(1)));
    while let Some(event) = events.try_next() {
        assert!(
            !matches!(event, cairn_net::NodeEvent::Down { .. }),
            "{event:?}"
        );
    }
    assert!(!m1.members().iter().any(|m| m.name == "node-3"));

    // The same certificate under its own name and id is let in: the refusals above were
    // about the identity claimed, not the certificate.
    assert!(try_hello(&ca, "node-3", &m1, |at| hello(
        id(3),
        "node-3",
        at
    )));
    m1.close();
    m2.close();
    rt1.shutdown();
    rt2.shutdown();
}

#[test]
fn a_dialed_peer_acking_under_another_identity_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    let [(rt1, m1), (rt2, m2)] = pair(&ca);
    let link = m1.connection_info(id(2)).unwrap();

    // A rogue acceptor with a valid certificate for node-3 that answers every hello as
    // node-2.
    let rogue_rt = Runtime::builder().workers(1).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue("node-3").unwrap());
    let endpoint = Endpoint::bind(&rogue_rt.handle(), localhost(), &tls).unwrap();
    let rogue_addr = endpoint.local_addr().unwrap();
    rogue_rt.spawn(move |_ctx: cairn_scheduler::Ctx<()>| async move {
        while let Some(conn) = endpoint.accept().await {
            let Ok(mut rx) = conn.accept_lane().await else {
                continue;
            };
            let _ = rx.recv::<Wire>().await;
            if let Ok(mut tx) = conn.open_lane(MESH_LANE).await {
                let _ = tx
                    .send(&Wire::HelloAck(hello(id(2), "node-2", rogue_addr)))
                    .await;
            }
            // Keep the connection open for the dialer to judge.
            std::mem::forget((conn, rx));
        }
    });

    let joined = rt1.block_on(rt1.timeout(TIMEOUT, m1.join(Seed::new(rogue_addr, "node-3"))));
    assert!(
        matches!(joined, Ok(Err(DialError::NameNotCertified(ref name))) if name == "node-2"),
        "{joined:?}"
    );
    assert_eq!(m1.connection_info(id(2)), Some(link));
    assert!(m2.is_connected(id(1)));
    rogue_rt.shutdown();
    m1.close();
    m2.close();
    rt1.shutdown();
    rt2.shutdown();
}

#[test]
fn a_mesh_whose_node_id_is_not_its_names_does_not_start() {
    let ca = ClusterCa::generate().unwrap();
    let rt = Runtime::builder()
        .workers(1)
        .node(NodeId(7))
        .build()
        .unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue("node-7").unwrap());
    let refused = Mesh::start(&rt.handle(), cairn_net::MeshConfig::new(localhost(), tls));
    assert!(
        matches!(&refused, Err(cairn_net::MeshError::Config(why)) if why.contains("of_name(\"node-7\")")),
        "{:?}",
        refused.map(|m| m.node())
    );
    rt.shutdown();
}
