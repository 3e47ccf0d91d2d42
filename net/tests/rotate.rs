//! Certificate rotation without a restart (`Mesh::reload_tls`, `mesh/rotate.rs`), seen
//! from raw peers on 127.0.0.1: connections made after a reload, in either direction, show
//! the new certificate and still get the mesh's transport limits (`mesh::limits`, not
//! quinn's defaults), and a certificate for another name or region is refused without
//! changing anything.

mod common;

use std::time::Duration;

use cairn_net::mesh::wire::{Hello, PeerInfo, Wire, MESH_LANE};
use cairn_net::tls::{peer_identity, Serial};
use cairn_net::{
    ClusterCa, Connection, Endpoint, FramedReceiver, FramedSender, Mesh, MeshError, Role, TlsConfig,
};
use cairn_scheduler::{NodeId, Runtime};
use common::{localhost, spawn, start_mesh, start_node};

const TIMEOUT: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(5);

/// The mesh's datagram buffer (`mesh::limits::DATAGRAM_BUFFER`, crate-private; copied
/// here). quinn's default is 1 MiB.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// quinn opens a stream on the credit the peer granted at the handshake, with no round
/// trip: an open not done within this is waiting for credit the peer has not given (as in
/// `hostile.rs`).
const NOT_GRANTED: Duration = Duration::from_millis(500);

/// A raw peer: its own runtime and an endpoint holding a certificate of `ca` named `name`.
fn raw_endpoint(ca: &ClusterCa, name: &str) -> (Runtime, Endpoint) {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(name).unwrap());
    let endpoint = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
    (rt, endpoint)
}

/// A raw peer's connection to a mesh, with its lanes (dropping them would finish them).
struct Introduced {
    conn: Connection,
    _lanes: (FramedSender, FramedReceiver),
}

/// Connects `endpoint` to `mesh` and says hello under `name` (naming `peers`); returns the
/// connection once the mesh acknowledged the hello.
fn introduce(
    rt: &Runtime,
    endpoint: &Endpoint,
    name: &str,
    peers: Vec<PeerInfo>,
    mesh: &Mesh,
) -> Introduced {
    let (addr, server) = (mesh.local_addr(), mesh.name().to_owned());
    let hello = Hello {
        node: NodeId::of_name(name),
        incarnation: 1,
        listen: endpoint.local_addr().unwrap(),
        name: name.to_owned(),
        peers,
    };
    let dialer = endpoint.clone();
    rt.block_on(rt.timeout(TIMEOUT, async move {
        let conn = dialer.connect(addr, &server).await.unwrap();
        let mut tx = conn.open_lane(MESH_LANE).await.unwrap();
        tx.send(&Wire::Hello(hello)).await.unwrap();
        let mut rx = conn.accept_lane().await.unwrap();
        let ack = rx.recv::<Wire>().await.unwrap().unwrap();
        assert!(matches!(ack, Wire::HelloAck(_)), "{ack:?}");
        Introduced {
            conn,
            _lanes: (tx, rx),
        }
    }))
    .expect("the hello acknowledged in time")
}

/// The serial of the certificate the other end of `conn` showed.
fn presented(conn: &Connection) -> Serial {
    peer_identity(conn.quinn())
        .expect("a certificate of the CA")
        .serial
}

/// Whether the other end of `conn` grants it a bidirectional stream.
fn bidi_granted(rt: &Runtime, conn: &Connection) -> bool {
    let quic = conn.quinn().clone();
    rt.block_on(rt.timeout(NOT_GRANTED, quic.open_bi())).is_ok()
}

/// Rotates `mesh` (named `name`) to a new certificate of `ca`: its serial, as the mesh
/// reports it, checked against the certificate's and the previous one's.
fn rotate(ca: &ClusterCa, mesh: &Mesh, name: &str) -> Serial {
    let old = mesh.certificate_serial().expect("a serial at start");
    let cert = ca.issue(name).unwrap();
    let serial = cert.identity().unwrap().serial;
    assert_ne!(serial, old, "a new certificate has a new serial");
    let reloaded = mesh
        .reload_tls(&TlsConfig::new(ca.cert_der().clone(), cert))
        .unwrap();
    assert_eq!(reloaded, serial);
    assert_eq!(mesh.certificate_serial(), Some(serial.clone()));
    serial
}

#[test]
fn a_connection_accepted_after_a_reload_shows_the_new_certificate_and_keeps_the_limits() {
    let ca = ClusterCa::generate().unwrap();
    let (rt, mesh) = start_mesh(&ca, 1, &[], IDLE);
    let serial = rotate(&ca, &mesh, "node-1");

    let (peer_rt, endpoint) = raw_endpoint(&ca, "rogue-after-reload");
    let peer = introduce(&peer_rt, &endpoint, "rogue-after-reload", vec![], &mesh);
    let conn = &peer.conn;
    assert_eq!(
        presented(conn),
        serial,
        "the mesh showed its old certificate"
    );
    // The server configuration the reload installed has the mesh's transport limits.
    assert!(
        !bidi_granted(&peer_rt, conn),
        "a bidirectional stream was granted after the reload (quinn's default: 100)"
    );
    let node_side = mesh
        .quic_connection(NodeId::of_name("rogue-after-reload"))
        .expect("connected");
    let space = node_side.quinn().datagram_send_buffer_space();
    assert!(
        (DATAGRAM_BUFFER - 8 * 1024..=DATAGRAM_BUFFER).contains(&space),
        "datagram send buffer space {space} after the reload (quinn's default buffer: 1 MiB)"
    );
    assert!(mesh.is_connected(NodeId::of_name("rogue-after-reload")));
    drop(peer);
    drop(endpoint);
    peer_rt.shutdown();
    mesh.close();
    rt.shutdown();
}

#[test]
fn a_connection_dialed_after_a_reload_shows_the_new_certificate_and_keeps_the_limits() {
    let ca = ClusterCa::generate().unwrap();
    let (rt, mesh) = start_mesh(&ca, 1, &[], IDLE);
    let serial = rotate(&ca, &mesh, "node-1");

    // A raw listener the mesh learns of from another peer's hello, then dials.
    let (peer_rt, listener) = raw_endpoint(&ca, "rogue-listener");
    let target = NodeId::of_name("rogue-listener");
    let (intro_rt, intro) = raw_endpoint(&ca, "rogue-introducer");
    let introduced = PeerInfo {
        node: target,
        addr: listener.local_addr().unwrap(),
        name: "rogue-listener".to_owned(),
    };
    let _introducer = introduce(
        &intro_rt,
        &intro,
        "rogue-introducer",
        vec![introduced],
        &mesh,
    );
    let dialer = mesh.clone();
    // The listener never answers the mesh's hello: that dial fails at its connect timeout,
    // after what is looked at here.
    let _dial = spawn(&rt, async move { dialer.connect(target).await });
    let accept = listener.clone();
    let conn = peer_rt
        .block_on(peer_rt.timeout(TIMEOUT, async move { accept.accept().await }))
        .expect("the mesh dialed in time")
        .expect("a connection");
    assert_eq!(
        presented(&conn),
        serial,
        "the mesh dialed with its old certificate"
    );
    // The client configuration the reload installed has the mesh's transport limits.
    assert!(
        !bidi_granted(&peer_rt, &conn),
        "a bidirectional stream was granted on a dialed connection after the reload (quinn's default: 100)"
    );
    drop(conn);
    drop((listener, intro));
    peer_rt.shutdown();
    intro_rt.shutdown();
    mesh.close();
    rt.shutdown();
}

#[test]
fn a_certificate_for_another_name_or_region_is_refused_and_changes_nothing() {
    let ca = ClusterCa::generate().unwrap();
    let (rt, mesh) = start_node(&ca, 1, &[], 2, |config| {
        config.idle_timeout(IDLE).region("eu")
    });
    let serial = mesh.certificate_serial().expect("a serial at start");
    let try_reload = |name: &str, region: Option<&str>| {
        let cert = ca.issue_in(name, Role::Node, 30, region).unwrap();
        mesh.reload_tls(&TlsConfig::new(ca.cert_der().clone(), cert))
    };

    let refusals = [
        (try_reload("node-2", None), "is not for \"node-1\""),
        (try_reload("node-2", Some("eu")), "is not for \"node-1\""),
        (try_reload("node-1", Some("us")), "is for region \"us\""),
    ];
    for (result, why) in refusals {
        match result {
            Err(MeshError::Config(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("not refused ({why}): {other:?}"),
        }
    }
    // Nothing changed: the serial reported, and the certificate a new connection sees;
    // and the mesh takes new peers.
    assert_eq!(mesh.certificate_serial(), Some(serial.clone()));
    let (peer_rt, endpoint) = raw_endpoint(&ca, "rogue-after-refusals");
    let peer = introduce(&peer_rt, &endpoint, "rogue-after-refusals", vec![], &mesh);
    assert_eq!(
        presented(&peer.conn),
        serial,
        "a refused certificate is in use"
    );

    // The control: the same name in the same region is a rotation, and is taken.
    let rotated = try_reload("node-1", Some("eu")).expect("a rotation in the same region");
    assert_ne!(rotated, serial);
    assert_eq!(mesh.certificate_serial(), Some(rotated));
    drop(peer);
    drop(endpoint);
    peer_rt.shutdown();
    mesh.close();
    rt.shutdown();
}
