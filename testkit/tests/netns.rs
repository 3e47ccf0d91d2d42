//! The test hosts behave like separate machines: each reaches the others by its own
//! addresses (IPv4 and IPv6), resolves names through its own hosts file, and cut links and
//! partitions drop exactly the traffic they should, until healed.
//!
//! Each check runs a UDP echo server and a client as children inside namespaces: the test
//! binary re-executes itself (`child_role`) with `CAIRN_TESTKIT_ROLE` set.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::Command;
use std::time::Duration;

use cairn_testkit::{require_netns, Host, Net};

const PORT: u16 = 7000;

/// Not a test on its own: the entry point of the children this file starts.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("CAIRN_TESTKIT_ROLE") else {
        return;
    };
    let target = std::env::var("CAIRN_TESTKIT_TARGET").unwrap();
    match role.as_str() {
        "echo" => {
            let socket = UdpSocket::bind(&target).unwrap();
            let mut buf = [0u8; 64];
            loop {
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                socket.send_to(&buf[..n], from).unwrap();
            }
        }
        "ping" => assert!(ping(&target), "no echo from {target}"),
        other => panic!("unknown role {other}"),
    }
}

/// Sends a datagram to `target` (resolving a name if given one) and waits for its echo,
/// retrying a few times while the echo server starts.
fn ping(target: &str) -> bool {
    let addr: SocketAddr = target.to_socket_addrs().unwrap().next().unwrap();
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..15 {
        if socket.send_to(b"ping", addr).is_ok() {
            if let Ok((4, _)) = socket.recv_from(&mut buf) {
                return &buf[..4] == b"ping";
            }
        }
    }
    false
}

fn role(host: &Host, role: &str, target: &str) -> Command {
    let mut cmd = host.command(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env("CAIRN_TESTKIT_ROLE", role)
        .env("CAIRN_TESTKIT_TARGET", target);
    cmd
}

fn start_echo(net: &Net, i: usize) {
    let h = net.host(i);
    net.spawn(role(h, "echo", &format!("{}:{PORT}", h.v4)))
        .unwrap();
    net.spawn(role(h, "echo", &format!("[{}]:{PORT}", h.v6)))
        .unwrap();
}

/// Whether host `from` hears host `to`'s echo at `target`.
fn reaches(net: &Net, from: usize, target: &str) -> bool {
    let status = role(net.host(from), "ping", target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    status.success()
}

#[test]
fn hosts_reach_each_other_by_v4_and_v6_and_the_root_namespace_reaches_them() {
    let Some(net) = require_netns(3) else { return };
    start_echo(&net, 0);
    let h0 = net.host(0);
    assert!(reaches(&net, 1, &format!("{}:{PORT}", h0.v4)));
    assert!(reaches(&net, 2, &format!("[{}]:{PORT}", h0.v6)));
    assert!(
        ping(&format!("{}:{PORT}", h0.v4)),
        "root namespace -> host 0"
    );
    // Each host has only its own address: host 1 cannot bind host 0's.
    assert_ne!(net.host(1).v4, h0.v4);
}

#[test]
fn a_cut_host_hears_nothing_until_healed() {
    let Some(net) = require_netns(2) else { return };
    start_echo(&net, 0);
    let target = format!("{}:{PORT}", net.host(0).v4);
    assert!(reaches(&net, 1, &target));
    net.cut(0).unwrap();
    assert!(!reaches(&net, 1, &target), "cut host still answers");
    net.heal().unwrap();
    assert!(reaches(&net, 1, &target), "healed host does not answer");
}

#[test]
fn a_partition_drops_traffic_between_its_sides_only() {
    let Some(net) = require_netns(3) else { return };
    start_echo(&net, 0);
    let v4 = format!("{}:{PORT}", net.host(0).v4);
    let v6 = format!("[{}]:{PORT}", net.host(0).v6);
    net.partition(&[0], &[1]).unwrap();
    assert!(!reaches(&net, 1, &v4), "partitioned v4 passes");
    assert!(!reaches(&net, 1, &v6), "partitioned v6 passes");
    assert!(reaches(&net, 2, &v4), "host 2 is on neither side");
    net.heal().unwrap();
    assert!(reaches(&net, 1, &v4));
}

#[test]
fn an_unplugged_cable_drops_traffic_until_plugged_back() {
    let Some(net) = require_netns(2) else { return };
    start_echo(&net, 0);
    let target = format!("{}:{PORT}", net.host(0).v4);
    net.unplug(0).unwrap();
    assert!(!reaches(&net, 1, &target));
    net.plug(0).unwrap();
    assert!(reaches(&net, 1, &target));
}

#[test]
fn a_host_resolves_names_from_its_own_hosts_file() {
    let Some(net) = require_netns(2) else { return };
    start_echo(&net, 0);
    net.set_hosts_file(1, &[("seed-0.cairn.test", net.host(0).v4.into())])
        .unwrap();
    assert!(reaches(&net, 1, &format!("seed-0.cairn.test:{PORT}")));
}

#[test]
fn dropping_a_net_removes_its_namespaces_and_bridge() {
    let Some(net) = require_netns(2) else { return };
    let slot = net.slot();
    let ns = net.host(0).ns.clone();
    start_echo(&net, 0);
    drop(net);
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns));
    let bridge = Command::new("ip")
        .args(["link", "show", &format!("cbr{slot}")])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "bridge cbr{slot} left behind");
}
