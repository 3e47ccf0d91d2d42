//! `cairn-node` on separate hosts: each node runs in a network namespace of its own, with
//! its own addresses, on a private bridge (`cairn_testkit::Net`). Covers what one host
//! cannot show: a node listening on every interface known by its advertised address, a seed
//! joined by DNS name (an `/etc/hosts` entry inside the namespace), IPv6 namespace
//! addresses, dial-only clients from another host (and their move to another seed), a
//! partitioned host declared down and back after healing, at its advertised address.
//!
//! Needs root (namespaces); skipped with a message otherwise, failed instead under
//! `CAIRN_REQUIRE_NETNS=1` (CI).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::{require_netns, Host, Net};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");
const PORT: u16 = 7400;

/// A `cairn-node run` inside a host, its stdout and stderr in files.
struct NodeProc {
    pid: u32,
    out: PathBuf,
    err: PathBuf,
    id: String,
    name: String,
}

impl NodeProc {
    /// Starts `cairn-node run --name NAME ARGS…` on `host`; waits for its `ready` line.
    fn start(net: &Net, host: &Host, dir: &Path, name: &str, args: &[&str]) -> NodeProc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let mut cmd = host.command(BIN);
        cmd.args([
            "run",
            "--name",
            name,
            "--workers",
            "2",
            "--failure-timeout",
            "1",
        ])
        .args(args)
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--cluster")
        .arg(dir.join("cluster"))
        .arg("--dev-ca")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
        let pid = net.spawn(cmd).unwrap();
        let mut node = NodeProc {
            pid,
            out,
            err,
            id: String::new(),
            name: name.to_owned(),
        };
        let ready = node.wait_line("ready", |l| l.starts_with("ready "));
        node.id = field(&ready, "node").to_owned();
        node
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (10 s at most) for a stdout line matching `pred`.
    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.stdout().lines().find(|l| pred(l)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} line; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The peers this node has seen come up (`node up` lines): node id → address.
    fn peers_up(&self) -> BTreeMap<String, String> {
        self.stdout()
            .lines()
            .filter(|l| l.starts_with("node up "))
            .map(|l| (field(l, "node").to_owned(), field(l, "addr").to_owned()))
            .collect()
    }

    fn wait_peers(&self, n: usize) {
        self.wait_line(&format!("{n} peers"), |_| self.peers_up().len() >= n);
    }
}

/// The value of `key=value` in a line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Runs a short `cairn-node` command on `host` to completion: (success, stdout, stderr).
fn cli(host: &Host, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = host
        .command(BIN)
        .args(args)
        .arg("--cluster")
        .arg(dir.join("cluster"))
        .arg("--dev-ca")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cluster_init(dir: &Path) {
    let out = Command::new(BIN)
        .args(["cluster", "init"])
        .arg(dir.join("cluster"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `status` from `host` through `join`: member lines by node id.
fn status(host: &Host, dir: &Path, join: &str) -> BTreeMap<String, String> {
    let (ok, out, err) = cli(host, dir, &["status", "--join", join]);
    assert!(ok, "status through {join} failed: {out}{err}");
    out.lines()
        .filter(|l| l.starts_with("member "))
        .map(|l| (field(l, "node").to_owned(), l.to_owned()))
        .collect()
}

fn v4(host: &Host) -> SocketAddr {
    SocketAddr::new(host.v4.into(), PORT)
}

fn v6(host: &Host) -> SocketAddr {
    SocketAddr::new(host.v6.into(), PORT)
}

/// Every address a node reported for a peer is one of the hosts' own (never unspecified,
/// never loopback).
fn assert_routable(node: &NodeProc, hosts: &[&Host]) {
    let allowed: BTreeSet<String> = hosts
        .iter()
        .flat_map(|h| [v4(h).to_string(), v6(h).to_string()])
        .collect();
    for (peer, addr) in node.peers_up() {
        assert!(
            allowed.contains(&addr),
            "{} saw {peer} at {addr}, not a host address",
            node.name
        );
    }
    // The logs too: every member and connection a node logs is at a host address.
    let logs = std::fs::read_to_string(&node.err).unwrap_or_default();
    for line in logs
        .lines()
        .filter(|l| l.contains("member up") || l.contains("mesh connection up"))
    {
        let addr = field(line, "addr");
        assert!(allowed.contains(addr), "{}: {line}", node.name);
    }
}

#[test]
fn a_mixed_mesh_forms_across_hosts_and_a_client_on_a_fourth_sees_it() {
    let Some(net) = require_netns(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cluster_init(dir);
    let [h0, h1, h2, h3] = [net.host(0), net.host(1), net.host(2), net.host(3)];
    // n1 listens on every interface and says where it is reached.
    let n1 = NodeProc::start(
        &net,
        h0,
        dir,
        "n1",
        &[
            "--listen",
            &format!("0.0.0.0:{PORT}"),
            "--advertise",
            &v4(h0).to_string(),
        ],
    );
    // n2 listens on every interface too, finds n1 by DNS name and derives its address.
    net.set_hosts_file(1, &[("n1.cairn.test", h0.v4.into())])
        .unwrap();
    let n2 = NodeProc::start(
        &net,
        h1,
        dir,
        "n2",
        &[
            "--listen",
            &format!("0.0.0.0:{PORT}"),
            "--join",
            &format!("n1.cairn.test:{PORT}"),
        ],
    );
    let ready = n2.wait_line("ready", |l| l.starts_with("ready "));
    assert_eq!(field(&ready, "advertise"), v4(h1).to_string(), "{ready}");
    // n3 listens on its specific address and joins by IP.
    let n3 = NodeProc::start(
        &net,
        h2,
        dir,
        "n3",
        &[
            "--listen",
            &v4(h2).to_string(),
            "--join",
            &v4(h1).to_string(),
        ],
    );
    let nodes = [&n1, &n2, &n3];
    for n in nodes {
        n.wait_peers(2);
        assert_routable(n, &[h0, h1, h2]);
    }
    // From a fourth host, through every node: objects reach their owner, and the status
    // lists all three at their advertised addresses.
    let mut owners = BTreeSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let join = format!("{}:{PORT}", [h0, h1, h2][i].v4);
        for key in ["alice", "bob", "carol", "dave"] {
            let (ok, out, err) = cli(
                h3,
                dir,
                &["send", "counter", key, "add", "1", "--join", &join],
            );
            assert!(ok, "send {key} through {} failed: {out}{err}", n.name);
            owners.insert((key, field(out.trim(), "owner").to_owned()));
        }
        let members = status(h3, dir, &join);
        assert_eq!(members.len(), 3, "{members:?}");
        for (m, host) in nodes.iter().zip([h0, h1, h2]) {
            let line = &members[&m.id];
            assert_eq!(field(line, "listen"), v4(host).to_string(), "{line}");
        }
    }
    for n in nodes {
        assert_routable(n, &[h0, h1, h2]);
    }
    // Every node sent each key to one owner, and each key counted three adds.
    assert_eq!(owners.len(), 4, "nodes disagree about owners: {owners:?}");
    for key in ["alice", "bob", "carol", "dave"] {
        let (ok, out, err) = cli(
            h3,
            dir,
            &["send", "counter", key, "get", "--join", &v4(h2).to_string()],
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("counter/{key} = 3 ")), "{out}");
    }
}

#[test]
fn a_mesh_runs_on_ipv6_namespace_addresses() {
    let Some(net) = require_netns(3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cluster_init(dir);
    let [h0, h1, h2] = [net.host(0), net.host(1), net.host(2)];
    let n1 = NodeProc::start(&net, h0, dir, "n1", &["--listen", &v6(h0).to_string()]);
    let n2 = NodeProc::start(
        &net,
        h1,
        dir,
        "n2",
        &[
            "--listen",
            "[::]:7400",
            "--advertise",
            &v6(h1).to_string(),
            "--join",
            &v6(h0).to_string(),
        ],
    );
    for n in [&n1, &n2] {
        n.wait_peers(1);
        assert_routable(n, &[h0, h1]);
    }
    assert_eq!(n1.peers_up()[&n2.id], v6(h1).to_string());
    let members = status(h2, dir, &v6(h1).to_string());
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(field(&members[&n1.id], "listen"), v6(h0).to_string());
}

#[test]
fn a_partitioned_host_is_declared_down_and_back_at_its_advertised_address() {
    let Some(net) = require_netns(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cluster_init(dir);
    let [h0, h1, h2, h3] = [net.host(0), net.host(1), net.host(2), net.host(3)];
    let n1 = NodeProc::start(&net, h0, dir, "n1", &["--listen", &v4(h0).to_string()]);
    let n2 = NodeProc::start(
        &net,
        h1,
        dir,
        "n2",
        &[
            "--listen",
            &v4(h1).to_string(),
            "--join",
            &v4(h0).to_string(),
        ],
    );
    let n3 = NodeProc::start(
        &net,
        h2,
        dir,
        "n3",
        &[
            "--listen",
            &format!("0.0.0.0:{PORT}"),
            "--advertise",
            &v4(h2).to_string(),
            "--join",
            &v4(h0).to_string(),
        ],
    );
    for n in [&n1, &n2, &n3] {
        n.wait_peers(2);
    }
    net.partition(&[0, 1], &[2]).unwrap();
    let down = format!("node down node={}", n3.id);
    for n in [&n1, &n2] {
        n.wait_line("n3 down", |l| l.starts_with(&down));
    }
    net.heal().unwrap();
    // Back without a restart (a new incarnation), at its advertised address.
    for n in [&n1, &n2] {
        n.wait_line("n3 up again", |_| {
            let text = n.stdout();
            let after = &text[text.find(&down).unwrap()..];
            after.lines().any(|l| {
                l.starts_with(&format!("node up node={} ", n3.id))
                    && field(l, "addr") == v4(h2).to_string()
            })
        });
    }
    // A client whose first seed is dead carries on through the next one.
    net.kill(n1.pid);
    let join = format!("{},{}", v4(h0), v4(h1));
    let members = status(h3, dir, &join);
    assert!(members.contains_key(&n2.id), "{members:?}");
}

#[test]
fn a_node_on_every_interface_with_no_route_and_no_advertise_fails_clearly() {
    let Some(net) = require_netns(1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cluster_init(dir);
    // A namespace has no default route and this node has no seed: nothing to derive from.
    let out = net
        .host(0)
        .command(BIN)
        .args([
            "run",
            "--name",
            "n1",
            "--listen",
            "0.0.0.0:7400",
            "--data-dir",
        ])
        .arg(dir.join("n1"))
        .arg("--cluster")
        .arg(dir.join("cluster"))
        .arg("--dev-ca")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(err.contains("--advertise"), "{err}");
}
