//! `cairn-node` processes joined into a mesh on 127.0.0.1: objects placed on one owner,
//! reached from every node; a node holding another CA's certificate refused.
//!
//! Each node is a child process on free ports with its own temp data dir, killed when the
//! test ends (also on failure). Tests wait on the children's output with deadlines; none
//! sleeps to observe.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{
    cli, cluster_init, field, free_addr, issue_node, own_files, serial_of,
    two_nodes_with_own_certs, Lines, NodeProc, TwoNodes, BIN,
};

/// `status` through `via`: member lines by node id.
fn status(via: SocketAddr, cluster: &Path) -> HashMap<String, String> {
    let (ok, out, err) = cli(&[
        "status",
        "--join",
        &via.to_string(),
        "--cluster",
        cluster.to_str().unwrap(),
        "--dev-ca",
    ]);
    assert!(ok, "status failed: {out}{err}");
    out.lines()
        .filter(|l| l.starts_with("member "))
        .map(|l| (field(l, "node").to_owned(), l.to_owned()))
        .collect()
}

/// Live `counter` activations in a status line.
fn counters(line: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("counter="))
        .map_or(0, |n| n.parse().unwrap())
}

/// The log line every node writes once it is in the mesh.
const JOINED: &str = "node joined the mesh";

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start_with("n1", dir.path(), &cluster, &[], |cmd| {
        cmd.env_remove("NO_COLOR");
    });
    let lines = n1
        .stderr
        .wait_until(JOINED, |l| l.iter().any(|l| l.contains(JOINED)));
    for line in &lines {
        assert!(!line.contains('\x1b'), "escape code in {line:?}");
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start_with("n1", dir.path(), &cluster, &[], |cmd| {
        cmd.args(["--log-format", "json"]);
    });
    let lines = n1
        .stderr
        .wait_until(JOINED, |l| l.iter().any(|l| l.contains(JOINED)));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let joined = events
        .iter()
        .find(|e| e["fields"]["message"] == JOINED)
        .expect("the join event");
    assert_eq!(joined["level"], "INFO");
    assert_eq!(joined["fields"]["name"], "n1");
}

#[test]
fn a_counter_reached_from_every_node_has_one_activation_on_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    let n2 = NodeProc::start("n2", dir.path(), &cluster, &[n1.addr]);
    // n3 names both seeds so every pair has a data connection before the first send.
    let n3 = NodeProc::start("n3", dir.path(), &cluster, &[n1.addr, n2.addr]);
    let nodes = [&n1, &n2, &n3];
    for n in nodes {
        n.wait_peers(2);
    }

    // The same key sent from every node lands on one owner.
    let mut owners = BTreeSet::new();
    for n in nodes {
        let (ok, out, err) = cli(&[
            "send",
            "counter",
            "alice",
            "add",
            "5",
            "--join",
            &n.addr.to_string(),
            "--cluster",
            cluster.to_str().unwrap(),
            "--dev-ca",
        ]);
        assert!(ok, "send through {} failed: {out}{err}", n.id);
        owners.insert(field(out.trim(), "owner").to_owned());
    }
    assert_eq!(
        owners.len(),
        1,
        "nodes disagree about the owner: {owners:?}"
    );
    let owner = owners.into_iter().next().unwrap();
    assert!(
        nodes.iter().any(|n| n.id == owner),
        "owner {owner} is not a node"
    );

    // The adds are one-way: each reached its node (the client's round trip after it says
    // so), which forwards it to the key's shard leader. Once all three are applied...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = cli(&[
            "send",
            "counter",
            "alice",
            "get",
            "--join",
            &n1.addr.to_string(),
            "--cluster",
            cluster.to_str().unwrap(),
            "--dev-ca",
        ]);
        if ok && out.contains("counter/alice = 15 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three adds never all landed: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... a call from every node reads the one total (the Reply crosses the mesh and back).
    for n in nodes {
        let (ok, out, err) = cli(&[
            "send",
            "counter",
            "alice",
            "get",
            "--join",
            &n.addr.to_string(),
            "--cluster",
            cluster.to_str().unwrap(),
            "--dev-ca",
        ]);
        assert!(ok, "get through {} failed: {out}{err}", n.id);
        assert!(out.contains("counter/alice = 15 "), "{out}");
    }

    // Every node's view of the mesh: three members, one counter activation cluster-wide (on
    // the node leading the key's shard; a client's `owner=` is where it routes first).
    for via in nodes {
        let members = status(via.addr, &cluster);
        assert_eq!(members.len(), 3, "{members:?}");
        let total: usize = nodes.iter().map(|n| counters(&members[&n.id])).sum();
        assert_eq!(total, 1, "{members:?}");
    }
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let other = dir.path().join("other");
    cluster_init(&good);
    cluster_init(&other);
    let n1 = NodeProc::start("n1", dir.path(), &good, &[]);
    let intruder = NodeProc::start("intruder", dir.path(), &other, &[n1.addr]);

    // The handshake fails on both sides, and both say so.
    intruder.stderr.wait_for("could not join through a seed");
    n1.stderr.wait_for("refused a peer");
    // The mesh does not know the intruder...
    let members = status(n1.addr, &good);
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members.contains_key(&n1.id));
    // ...and a client holding the other CA's certificate cannot get in either.
    let (ok, out, err) = cli(&[
        "status",
        "--join",
        &n1.addr.to_string(),
        "--cluster",
        other.to_str().unwrap(),
        "--dev-ca",
    ]);
    assert!(!ok, "a foreign client got a status: {out}");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(!intruder
        .stdout
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("node up")));
}

/// The nodes' failure timeout (`cairn-node run --failure-timeout`, default 5 s): the README
/// promises a killed or frozen member is declared down within it, so that is the bound, with
/// no slack (measured from the signal to the observer's `node down` line, which includes
/// the time the line takes to reach this test).
const DOWN_WITHIN: Duration = Duration::from_secs(5);

/// Waits until `observer` reports `node` down; how long that took since `since`.
fn wait_down(observer: &NodeProc, node: &str, since: Instant) -> Duration {
    observer.stdout.wait_for(&format!("node down node={node} "));
    since.elapsed()
}

// Failure detection by SWIM (foca) on real processes: a SIGKILLed node and a SIGSTOPped one
// (a real hang, sockets open) are declared down within the failure timeout.

#[test]
fn a_killed_node_is_declared_down_and_a_restart_is_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    let mut n2 = NodeProc::start("n2", dir.path(), &cluster, &[n1.addr]);
    n1.wait_peers(1);
    n2.wait_peers(1);

    let killed = Instant::now();
    n2.child.kill().unwrap(); // SIGKILL: no goodbye on the wire
    n2.child.wait().unwrap();
    let took = wait_down(&n1, &n2.id, killed);
    eprintln!("killed node declared down after {took:?}");
    assert!(took <= DOWN_WITHIN, "declared down after {took:?}");

    // Same name and data, new process: the same node id (its identity is its name, kept
    // in its data dir), back up as a new incarnation of the same node.
    let old_id = n2.id.clone();
    let n2b = NodeProc::start("n2", dir.path(), &cluster, &[n1.addr]);
    assert_eq!(n2b.id, old_id);
    let up = format!("node up node={} ", n2b.id);
    n1.stdout.wait_until("n2 up again", |lines| {
        lines.iter().filter(|l| l.starts_with(&up)).count() >= 2
    });
}

#[test]
fn a_second_node_on_a_data_dir_in_use_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    let data = dir.path().join("n1");
    let (ok, out, err) = cli(&[
        "run",
        "--name",
        "n1",
        "--listen",
        &free_addr().to_string(),
        "--data-dir",
        data.to_str().unwrap(),
        "--cluster",
        cluster.to_str().unwrap(),
        "--dev-ca",
    ]);
    assert!(
        !ok,
        "a second node started on a data dir in use: {out}{err}"
    );
    assert!(err.contains("is in use by another node"), "{err}");
    assert!(!out.contains("ready "), "{out}");
    drop(n1);
}

#[test]
fn a_frozen_node_is_declared_down() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    let n2 = NodeProc::start("n2", dir.path(), &cluster, &[n1.addr]);
    n1.wait_peers(1);
    n2.wait_peers(1);

    // SIGSTOP: the process hangs with its sockets open (a hung node, not a closed one).
    let frozen = Instant::now();
    signal(&n2, "-STOP");
    let took = wait_down(&n1, &n2.id, frozen);
    signal(&n2, "-CONT");
    eprintln!("frozen node declared down after {took:?}");
    assert!(took <= DOWN_WITHIN, "declared down after {took:?}");
}

fn signal(node: &NodeProc, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(node.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} failed");
}

#[test]
fn a_first_node_without_a_cluster_makes_one_and_stores_under_data() {
    let cwd = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut child = Command::new(BIN)
        .args(["run", "--workers", "2", "--listen", &addr.to_string()])
        .current_dir(cwd.path())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let node = NodeProc {
        child,
        stdout,
        stderr: Arc::new(Lines::default()),
        addr,
        id: String::new(),
    };
    let ready = node.stdout.wait_for("ready ");
    assert!(ready.contains(&format!("listen={addr}")), "{ready}");
    assert!(cwd.path().join("cluster/ca.pem").exists());
    assert!(cwd.path().join("data").is_dir());
    // The new CA is the cluster's: a client holding it gets in.
    let members = status(addr, &cwd.path().join("cluster"));
    assert_eq!(members.len(), 1, "{members:?}");
}

/// The owner-only bits of a file's mode.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_offline_ca_issues_certificates_and_nodes_join_with_only_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_arg = ca.to_str().unwrap();
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca_arg]);
    assert!(ok, "{out}{err}");
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let (ok, _, err) = cli(&["ca", "init", "--dir", ca_arg]);
    assert!(!ok && err.contains("refusing to replace it"), "{err}");

    let issue = |name: &str, role: &str| {
        let out = dir.path().join(format!("certs-{name}"));
        let (ok, stdout, err) = cli(&[
            "cert",
            "issue",
            "--ca",
            ca_arg,
            "--name",
            name,
            "--role",
            role,
            "--days",
            "30",
            "--out",
            out.to_str().unwrap(),
        ]);
        (ok, stdout + &err, out)
    };
    let mut files = Vec::new();
    for name in ["n1", "n2"] {
        let (ok, text, out) = issue(name, "node");
        assert!(ok, "{text}");
        assert!(text.contains("valid 30 days"), "{text}");
        assert_eq!(mode(&out.join(format!("{name}.key"))), 0o600);
        assert!(out.join("ca.pem").exists() && !out.join("ca.key").exists());
        files.push(out);
    }
    // A client's name gets its suffix; a node's cannot carry it.
    let (ok, text, out) = issue("ops", "client");
    assert!(ok && out.join("ops.client.pem").exists(), "{text}");
    assert_eq!(mode(&out.join("ops.client.key")), 0o600);
    let (ok, text, _) = issue("x.client", "node");
    assert!(!ok && text.contains("for clients"), "{text}");
    // `cluster issue DIR NAME` takes the same choices: role, lifetime and region.
    let legacy = dir.path().join("certs-edge");
    let (ok, stdout, err) = cli(&[
        "cluster",
        "issue",
        ca_arg,
        "edge",
        "--client",
        "--days",
        "7",
        "--region",
        "eu",
        "--out",
        legacy.to_str().unwrap(),
    ]);
    assert!(ok && stdout.contains("valid 7 days"), "{stdout}{err}");
    let pem = std::fs::read_to_string(legacy.join("edge.client.pem")).unwrap();
    let identity = cairn::net::tls::CertIdentity::of_pem(&pem).unwrap();
    assert_eq!(identity.role, cairn::net::Role::Client);
    assert_eq!(identity.region.as_deref(), Some("eu"));
    assert_eq!(mode(&legacy.join("edge.client.key")), 0o600);

    // Nodes given only their certificate, their key and the CA certificate (no CA key
    // anywhere near them) form a mesh.
    let no_ca = dir.path().join("no-ca");
    let n1 = NodeProc::start_with("n1", dir.path(), &no_ca, &[], own_files("n1", &files[0]));
    let n2 = NodeProc::start_with(
        "n2",
        dir.path(),
        &no_ca,
        &[n1.addr],
        own_files("n2", &files[1]),
    );
    n1.wait_peers(1);
    n2.wait_peers(1);
    assert!(!no_ca.exists(), "a node made a CA of its own");

    // A node handed another node's certificate does not start.
    let (ok, out, err) = cli(&[
        "run",
        "--name",
        "n3",
        "--listen",
        &free_addr().to_string(),
        "--data-dir",
        dir.path().join("n3").to_str().unwrap(),
        "--cert",
        files[0].join("n1.pem").to_str().unwrap(),
        "--key",
        files[0].join("n1.key").to_str().unwrap(),
        "--ca",
        files[0].join("ca.pem").to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("the certificate is not for node \"n3\""),
        "{err}"
    );
}
#[test]
fn a_revoked_serial_is_refused_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let TwoNodes {
        certs,
        revoked,
        n1,
        n2,
        ..
    } = two_nodes_with_own_certs(dir.path());

    // The operator revokes n2 (its serial, as `cert serial` prints it): after the next
    // reload n1 refuses it and declares it down.
    let serial = serial_of(&certs[1].join("n2.pem"));
    std::fs::write(&revoked, format!("{serial}  # n2, compromised\n")).unwrap();
    n1.stderr.wait_for("certificate is revoked");
    let down = format!("node down node={}", n2.id);
    n1.stdout.wait_for(&down);
    // It stays out: every new hello of it is refused.
    let refusals = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("certificate is revoked"))
            .count()
    };
    n1.stderr
        .wait_until("n2's next attempt refused", |l| refusals(l) >= 2);
    let ups = n1.stdout.wait_until("lines", |_| true);
    let after_down = ups.iter().skip_while(|l| !l.contains(&down)).skip(1);
    assert!(
        !after_down
            .clone()
            .any(|l| l.contains(&format!("node up node={}", n2.id))),
        "a revoked node came back: {ups:?}"
    );
}

#[test]
fn a_node_cannot_run_in_a_region_its_certificate_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let certs = issue_node(dir.path(), &ca, "n1", &["--region", "eu"]);
    let run = |region: &str| {
        cli(&[
            "run",
            "--name",
            "n1",
            "--listen",
            &free_addr().to_string(),
            "--data-dir",
            dir.path().join(format!("n1-{region}")).to_str().unwrap(),
            "--region",
            region,
            "--cert",
            certs.join("n1.pem").to_str().unwrap(),
            "--key",
            certs.join("n1.key").to_str().unwrap(),
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
        ])
    };
    let (ok, out, err) = run("us");
    assert!(!ok, "{out}");
    assert!(err.contains("is for region \"eu\""), "{err}");
}
