//! Meshes across hosts, as far as one host shows it: the advertised address (never an
//! unspecified or another host's loopback address), seeds by DNS name resolved again on
//! every retry (through the `Resolver` seam), IPv6, dial-only clients and a clean leave.
//! The same behaviour across real separate hosts (network namespaces) is in the cairn
//! crate's `tests/hosts_netns.rs`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_net::mesh::advertise::{self, AdvertiseError, AdvertiseSource};
use cairn_net::mesh::{Resolver, SeedAddr};
use cairn_net::{ClusterCa, Mesh, MeshConfig, MeshError, NodeEvent, TlsConfig};
use cairn_scheduler::{NodeId, Runtime};
use common::{id, init_logs};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn runtime(n: u64) -> Runtime {
    init_logs();
    Runtime::builder().workers(2).node(id(n)).build().unwrap()
}

fn tls(ca: &ClusterCa, n: u64) -> TlsConfig {
    TlsConfig::new(
        ca.cert_der().clone(),
        ca.issue(&format!("node-{n}")).unwrap(),
    )
}

/// Waits up to 10 s for `cond`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn member_addr(mesh: &Mesh, node: NodeId) -> Option<SocketAddr> {
    mesh.members()
        .into_iter()
        .find(|m| m.node == node)
        .map(|m| m.addr)
}

#[test]
fn the_advertised_address_follows_the_rules() {
    let no_route = |_: IpAddr| None;
    let route = |_: IpAddr| Some("10.1.2.3".parse().unwrap());
    // Configured wins; port 0 there means the bound port.
    assert_eq!(
        advertise::choose(a("0.0.0.0:7400"), Some(a("10.9.9.9:0")), &[], no_route),
        Ok((a("10.9.9.9:7400"), AdvertiseSource::Configured))
    );
    assert_eq!(
        advertise::choose(a("0.0.0.0:7400"), Some(a("0.0.0.0:7400")), &[], route),
        Err(AdvertiseError::Unspecified(a("0.0.0.0:7400")))
    );
    // A specific listen address is advertised as bound.
    assert_eq!(
        advertise::choose(a("10.0.0.5:7400"), None, &[], no_route),
        Ok((a("10.0.0.5:7400"), AdvertiseSource::Listen))
    );
    // On every interface: the address routing to the seed.
    assert_eq!(
        advertise::choose(a("0.0.0.0:7400"), None, &[a("10.1.2.1:7400")], route),
        Ok((
            a("10.1.2.3:7400"),
            AdvertiseSource::RouteToSeed(a("10.1.2.1:7400"))
        ))
    );
    // No seed: the default route.
    assert_eq!(
        advertise::choose(a("[::]:7400"), None, &[], route),
        Ok((a("10.1.2.3:7400"), AdvertiseSource::DefaultRoute))
    );
    // A route that only gives loopback or unspecified is no route.
    let loopback_route = |_: IpAddr| Some("127.0.0.1".parse().unwrap());
    assert_eq!(
        advertise::choose(
            a("0.0.0.0:7400"),
            None,
            &[a("10.1.2.1:7400")],
            loopback_route
        ),
        Err(AdvertiseError::NoRoutableAddress {
            listen: a("0.0.0.0:7400")
        })
    );
    // Every seed on loopback: one machine, so loopback it is.
    assert_eq!(
        advertise::choose(a("0.0.0.0:7400"), None, &[a("127.0.0.1:7401")], no_route),
        Ok((
            a("127.0.0.1:7400"),
            AdvertiseSource::RouteToSeed(a("127.0.0.1:7401"))
        ))
    );
    // Nothing at all: an error naming the way out.
    let error = advertise::choose(a("0.0.0.0:7400"), None, &[], no_route).unwrap_err();
    assert!(error.to_string().contains("--advertise"), "{error}");
}

#[test]
fn loopback_and_unspecified_addresses_are_never_shared_across_hosts() {
    assert!(advertise::shareable(a("127.0.0.1:7400"), a("127.0.0.1:9")));
    assert!(!advertise::shareable(a("127.0.0.1:7400"), a("10.0.0.2:9")));
    assert!(!advertise::shareable(a("[::1]:7400"), a("[fd00::2]:9")));
    assert!(!advertise::shareable(a("0.0.0.0:7400"), a("127.0.0.1:9")));
    assert!(!advertise::shareable(a("[::]:7400"), a("[::1]:9")));
    assert!(advertise::shareable(a("[fd00::1]:7400"), a("[fd00::2]:9")));
}

#[test]
fn seed_addresses_parse_as_ip_or_name() {
    assert_eq!(
        "10.0.0.1:7400".parse::<SeedAddr>(),
        Ok(SeedAddr::Addr(a("10.0.0.1:7400")))
    );
    assert_eq!(
        "[fd00::1]:7400".parse::<SeedAddr>(),
        Ok(SeedAddr::Addr(a("[fd00::1]:7400")))
    );
    assert_eq!(
        "db-1.internal:7400".parse::<SeedAddr>(),
        Ok(SeedAddr::Host {
            host: "db-1.internal".into(),
            port: 7400
        })
    );
    for bad in ["db-1.internal", "fd00::1:7400", ":7400", "a b:1", "x:99999"] {
        assert!(bad.parse::<SeedAddr>().is_err(), "{bad} parsed");
    }
}

#[test]
fn an_unspecified_advertised_address_fails_at_start() {
    let rt = runtime(1);
    let ca = ClusterCa::generate().unwrap();
    let config = MeshConfig::new(a("0.0.0.0:0"), tls(&ca, 1)).advertise(a("0.0.0.0:7400"));
    match Mesh::start(&rt.handle(), config) {
        Err(MeshError::Advertise(AdvertiseError::Unspecified(_))) => {}
        other => panic!("expected an advertise error, got {other:?}"),
    }
}

#[test]
fn a_node_on_every_interface_is_known_by_a_dialable_address() {
    let ca = ClusterCa::generate().unwrap();
    let (rt1, rt2) = (runtime(1), runtime(2));
    let seed = Mesh::start(
        &rt1.handle(),
        MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 1)),
    )
    .unwrap();
    let config = MeshConfig::new(a("0.0.0.0:0"), tls(&ca, 2)).seed(seed.local_addr(), "node-1");
    let wide = Mesh::start(&rt2.handle(), config).unwrap();
    assert!(wide.local_addr().ip().is_unspecified());
    let advertised = wide.advertised_addr();
    assert_eq!(
        advertised,
        SocketAddr::new(seed.local_addr().ip(), wide.local_addr().port())
    );
    wait_until("the seed to see node 2", || {
        member_addr(&seed, id(2)).is_some()
    });
    assert_eq!(member_addr(&seed, id(2)), Some(advertised));
    let peer = seed.peers().into_iter().find(|p| p.node == id(2)).unwrap();
    assert_eq!(peer.addr, advertised);
}

/// A resolver whose answer the test changes, counting its calls.
#[derive(Debug, Default)]
struct StubResolver {
    answer: Mutex<Vec<SocketAddr>>,
    calls: AtomicUsize,
}

impl Resolver for StubResolver {
    fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(host, "seed.cairn.test");
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.answer.lock().unwrap().clone())
    }
}

#[test]
fn a_named_seed_is_resolved_again_on_every_retry() {
    let ca = ClusterCa::generate().unwrap();
    let (rt1, rt2) = (runtime(1), runtime(2));
    let seed = Mesh::start(
        &rt1.handle(),
        MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 1)),
    )
    .unwrap();
    // At first the name points at a port nobody listens on (a moved seed).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let resolver = Arc::new(StubResolver {
        answer: Mutex::new(vec![dead]),
        ..StubResolver::default()
    });
    let mut config = MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 2))
        .resolver(resolver.clone())
        .seed(
            "seed.cairn.test:7400".parse::<SeedAddr>().unwrap(),
            "node-1",
        );
    config.connect_timeout = Duration::from_millis(300);
    let joiner = Mesh::start(&rt2.handle(), config).unwrap();
    wait_until("two resolutions", || {
        resolver.calls.load(Ordering::SeqCst) >= 2
    });
    assert!(member_addr(&joiner, id(1)).is_none());
    // The record changes: the next retry finds the seed.
    *resolver.answer.lock().unwrap() = vec![seed.local_addr()];
    wait_until("joining through the renamed seed", || {
        member_addr(&joiner, id(1)) == Some(seed.local_addr())
    });
}

#[test]
fn a_mesh_runs_on_ipv6_loopback() {
    let v6 = a("[::1]:0");
    if std::net::UdpSocket::bind(v6).is_err() {
        // CI has IPv6; a machine without it cannot run this.
        assert!(std::env::var_os("CI").is_none(), "no IPv6 loopback on CI");
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let ca = ClusterCa::generate().unwrap();
    let (rt1, rt2) = (runtime(1), runtime(2));
    let one = Mesh::start(&rt1.handle(), MeshConfig::new(v6, tls(&ca, 1))).unwrap();
    let seed: SeedAddr = format!("[::1]:{}", one.local_addr().port())
        .parse()
        .unwrap();
    let two = Mesh::start(
        &rt2.handle(),
        MeshConfig::new(v6, tls(&ca, 2)).seed(seed, "node-1"),
    )
    .unwrap();
    wait_until("both to see each other over IPv6", || {
        member_addr(&one, id(2)) == Some(two.local_addr())
            && member_addr(&two, id(1)) == Some(one.local_addr())
    });
    assert!(one.local_addr().is_ipv6());
}

fn client(ca: &ClusterCa, n: u64, seeds: &[&Mesh]) -> (Runtime, Mesh) {
    let rt = runtime(n);
    let mut config = MeshConfig::dial_only(tls(ca, n));
    config.connect_timeout = Duration::from_millis(500);
    for s in seeds {
        config = config.seed(s.local_addr(), s.name());
    }
    let mesh = Mesh::start(&rt.handle(), config).unwrap();
    (rt, mesh)
}

#[test]
fn a_dial_only_client_is_no_member_and_moves_to_another_seed() {
    let ca = ClusterCa::generate().unwrap();
    let (rt1, rt2) = (runtime(1), runtime(2));
    let one = Mesh::start(
        &rt1.handle(),
        MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 1)),
    )
    .unwrap();
    let two = Mesh::start(
        &rt2.handle(),
        MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 2)).seed(one.local_addr(), "node-1"),
    )
    .unwrap();
    wait_until("a two-node mesh", || one.members().len() == 2);
    let (rt9, c) = client(&ca, 9, &[&one, &two]);
    assert!(c.is_dial_only());
    assert!(c.advertised_addr().ip().is_unspecified());
    assert!(
        c.local_addr().ip().is_unspecified(),
        "clients bind any local address"
    );
    let gateway = rt9
        .block_on(c.wait_gateway(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(gateway, id(1), "the first seed that answers");
    assert!(one.is_connected(id(9)));
    // Not a member, not learned as dialable, not gossiped: nobody will probe or dial it. An
    // absence has no event to wait on: this is a window of three gossip rounds (one every
    // `failure_timeout / 25` = 200 ms) in which a wrongly announced client would show up.
    std::thread::sleep(Duration::from_millis(600));
    for m in [&one, &two] {
        assert!(m.members().iter().all(|x| x.node != id(9)));
        assert!(m.peers().iter().all(|p| p.node != id(9)));
    }
    assert_eq!(c.members().len(), 1, "a client sees no membership");
    // Its node goes away: the client carries on through the next seed.
    one.close_and_flush(Duration::from_millis(50));
    drop(rt1);
    wait_until("the client to move to node 2", || {
        c.gateway() == Some(id(2))
    });
}

#[test]
fn a_closed_node_is_seen_leaving_at_once_even_as_its_runtime_stops() {
    let ca = ClusterCa::generate().unwrap();
    let (rt1, rt2) = (runtime(1), runtime(2));
    // A failure timeout far beyond this test's wait: only the leave can end it.
    let slow = Duration::from_secs(60);
    let one = Mesh::start(
        &rt1.handle(),
        MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 1)).failure_timeout(slow),
    )
    .unwrap();
    let mut config = MeshConfig::new(a("127.0.0.1:0"), tls(&ca, 2))
        .failure_timeout(slow)
        .seed(one.local_addr(), "node-1");
    config.idle_timeout = Duration::from_secs(60);
    let two = Mesh::start(&rt2.handle(), config).unwrap();
    wait_until("a two-node mesh", || {
        one.members().len() == 2 && two.members().len() == 2 && two.is_connected(id(1))
    });
    let mut events = two.node_events();
    one.close_and_flush(Duration::from_millis(50));
    rt1.shutdown();
    let handle = rt2.handle();
    let down = rt2.block_on(handle.timeout(Duration::from_secs(10), async {
        loop {
            if let NodeEvent::Down { node, .. } = events.next().await {
                return node;
            }
        }
    }));
    assert_eq!(down.ok(), Some(id(1)), "the leave was not seen");
}
