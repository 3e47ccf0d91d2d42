//! Mutual TLS: only peers with a certificate from the cluster CA get in.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_net::tls::ALPN;
use cairn_net::{ClusterCa, Endpoint, EndpointOptions, TlsConfig, MAX_FRAME_DEFAULT};
use common::{localhost, runtime, spawn, wait_for_log, Cluster};
use quinn::rustls;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects with `intruder` (expected to be refused), then with a good client; the first
/// connection the server accepts must be the good one.
fn assert_refused_then_good_accepted(
    rt: &cairn_scheduler::Runtime,
    cluster: &Cluster,
    intruder: Endpoint,
) {
    let server = cluster.endpoints[0].clone();
    let server_addr = server.local_addr().unwrap();
    let intruder_addr = intruder.local_addr().unwrap();
    let good = Endpoint::bind(&rt.handle(), localhost(), &cluster.tls("good")).unwrap();
    let good_addr = good.local_addr().unwrap();

    let accepted = spawn(rt, async move {
        server.accept().await.map(|c| c.remote_address())
    });
    let handle = rt.handle();
    rt.block_on(handle.timeout(TIMEOUT, async move {
        // TLS 1.3 clients finish their side of the handshake before the server checks
        // their certificate, so the refusal may arrive as a close right after `connect`.
        match intruder.connect(server_addr, "server").await {
            Err(error) => eprintln!("intruder refused at connect: {error}"),
            Ok(conn) => {
                // Whatever it manages to queue before the refusal reaches it goes nowhere:
                // the server never accepts this connection (checked below: the first
                // connection it accepts is the good one), so no lane of it is ever read.
                match conn.open_lane(0).await {
                    Ok(mut lane) => {
                        let sent = lane.send(&"let me in").await;
                        eprintln!("intruder's frame: {sent:?}");
                    }
                    Err(error) => eprintln!("intruder could not open a lane: {error}"),
                }
                let reason = conn.closed().await;
                eprintln!("intruder closed: {reason}");
                assert!(
                    !matches!(reason, quinn::ConnectionError::TimedOut),
                    "refused explicitly, not by timeout"
                );
            }
        }
        good.connect(server_addr, "server").await.unwrap()
    }))
    .unwrap();
    assert_eq!(accepted.recv_timeout(TIMEOUT).unwrap(), Some(good_addr));
    wait_for_log(&["WARN", "refused a peer", &intruder_addr.to_string()]);
}

#[test]
fn client_with_cert_from_another_ca_is_refused() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["server"]);
    // Trusts the cluster CA (so it would accept the server) but presents a certificate
    // issued by another CA.
    let other = ClusterCa::generate().unwrap();
    let tls = TlsConfig::new(
        cluster.ca.cert_der().clone(),
        other.issue("intruder").unwrap(),
    );
    let intruder = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
    assert_refused_then_good_accepted(&rt, &cluster, intruder);
    wait_for_log(&["WARN", "client certificate not signed by the cluster CA"]);
    rt.shutdown();
}

#[test]
fn client_without_cert_is_refused() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["server"]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cluster.ca.cert_der().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let intruder = Endpoint::bind_with(
        &rt.handle(),
        localhost(),
        EndpointOptions {
            server: None,
            client,
            max_frame: MAX_FRAME_DEFAULT,
        },
    )
    .unwrap();
    assert_refused_then_good_accepted(&rt, &cluster, intruder);
    rt.shutdown();
}

#[test]
fn server_with_cert_from_another_ca_is_refused_by_the_client() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["client"]);
    let other = ClusterCa::generate().unwrap();
    let tls = TlsConfig::new(other.cert_der().clone(), other.issue("server").unwrap());
    let impostor = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
    let addr = impostor.local_addr().unwrap();
    let client = cluster.endpoints[0].clone();
    let handle = rt.handle();
    let result = rt
        .block_on(handle.timeout(TIMEOUT, async move { client.connect(addr, "server").await }))
        .unwrap();
    assert!(result.is_err(), "connected to an impostor");
    rt.shutdown();
}

#[test]
fn insecure_dev_logs_loudly() {
    let rt = runtime();
    let ca = ClusterCa::generate().unwrap();
    let tls = TlsConfig::insecure_dev(ca.issue("dev").unwrap());
    let _endpoint = Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap();
    wait_for_log(&["ERROR", "INSECURE"]);
    rt.shutdown();
}

/// A member's hello name must be one its certificate carries: a node holding a valid
/// cluster certificate for `node-9` cannot join as `node-1`.
#[test]
fn a_node_claiming_a_name_its_certificate_lacks_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    let (seed_rt, seed) = common::start_mesh(&ca, 2, &[], Duration::from_secs(3));
    // Its id is the one of the name it claims (as a mesh requires of itself).
    let rt = cairn_scheduler::Runtime::builder()
        .workers(1)
        .node(cairn_scheduler::NodeId::of_name("node-1"))
        .build()
        .unwrap();
    let real = ca.issue("node-9").unwrap();
    let posing = cairn_net::NodeCert::from_pem("node-1", real.cert_pem(), real.key_pem()).unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), posing);
    let config = cairn_net::MeshConfig::new(localhost(), tls).seed(seed.local_addr(), "node-2");
    let imposter = cairn_net::Mesh::start(&rt.handle(), config).unwrap();
    wait_for_log(&[
        "refused a peer whose hello name its certificate does not allow",
        "node-1",
    ]);
    assert!(
        !seed.members().iter().any(|m| m.node == imposter.node()),
        "the imposter became a member"
    );
    // Nor can it send: there is no connection to carry the message, which comes back.
    seed.declare::<String>("test.mtls.Text").unwrap();
    imposter.declare::<String>("test.mtls.Text").unwrap();
    let target = seed_rt
        .spawn(|mut ctx: cairn_scheduler::Ctx<String>| async move {
            ctx.recv().await;
        })
        .pid();
    match rt.block_on(rt.send(target, "let me in".to_owned())) {
        Err(cairn_scheduler::SendError::NoConnection(text)) => assert_eq!(text, "let me in"),
        other => panic!("expected NoConnection, got {other:?}"),
    }
    assert!(!imposter.is_connected(seed.node()));
    assert_eq!(seed.stats().delivered, 0, "{:?}", seed.stats());
}

/// No certificate carries a name shared by every node: a dial by name must reach the node
/// that certificate names, and a seed known only by address (dialed under
/// `SEED_SERVER_NAME`) must show a *node* certificate of this cluster, which the hello then
/// binds (tests/identity.rs).
#[test]
fn a_dial_by_name_reaches_that_node_only_and_a_seed_by_address_must_be_a_node() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["dialer", "node-a"]);
    let dialer = cluster.endpoints[0].clone();
    let node_a = cluster.endpoints[1].local_addr().unwrap();
    let names = cairn_net::CertIdentity::of_cert(cluster.ca.issue("node-a").unwrap().cert_der())
        .unwrap()
        .names;
    assert_eq!(
        names,
        ["node-a"],
        "a node certificate names its holder only"
    );

    // A client certificate (clients host nothing) and a foreign CA's node certificate.
    let client = TlsConfig::new(
        cluster.ca.cert_der().clone(),
        cluster
            .ca
            .issue_as("ops.client", cairn_net::Role::Client, 1)
            .unwrap(),
    );
    let client = Endpoint::bind(&rt.handle(), localhost(), &client).unwrap();
    let other = ClusterCa::generate().unwrap();
    let foreign = TlsConfig::new(other.cert_der().clone(), other.issue("node-a").unwrap());
    let foreign = Endpoint::bind(&rt.handle(), localhost(), &foreign).unwrap();
    let (client, foreign) = (client.local_addr().unwrap(), foreign.local_addr().unwrap());

    let seed = cairn_net::SEED_SERVER_NAME;
    let handle = rt.handle();
    let outcomes = rt
        .block_on(handle.timeout(TIMEOUT, async move {
            let mut outcomes = Vec::new();
            for (addr, name) in [
                (node_a, "node-a"),
                (node_a, seed),
                (node_a, "node-b"),
                (client, seed),
                (foreign, seed),
            ] {
                let result = dialer.connect(addr, name).await;
                if let Err(error) = &result {
                    eprintln!("dial {name} at {addr}: {error}");
                }
                outcomes.push(result.is_ok());
            }
            outcomes
        }))
        .unwrap();
    assert_eq!(
        outcomes,
        [true, true, false, false, false],
        "node-a by name and as a seed; refused: node-a as node-b, a client as a seed, \
         a foreign CA's node as a seed"
    );
    rt.shutdown();
}
