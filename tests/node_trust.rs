//! `cairn-node` black box, trust and storage faults: a client certificate cannot host
//! objects, an expired certificate is refused at the handshake, a rotated certificate (same
//! name, new serial, the old serial revoked) rejoins, and a node whose disk fails (EIO,
//! through `storage/tests/common/fault_shim.c`) exits with status 74 and restarts on what
//! it acknowledged.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{cli, cluster_init, free_addr, issue_node, own_files, NodeProc};

/// `send counter KEY ARGS...` through `via`: (success, stdout + stderr).
fn send_counter(via: SocketAddr, cluster: &Path, key: &str, op: &[&str]) -> (bool, String) {
    let via = via.to_string();
    let mut args = vec!["send", "counter", key];
    args.extend_from_slice(op);
    args.extend_from_slice(&["--join", &via, "--cluster", cluster.to_str().unwrap()]);
    let (ok, out, err) = cli(&args);
    (ok, out + &err)
}

#[test]
fn a_node_whose_disk_fails_exits_non_zero_and_restarts_on_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let shim = cairn_testkit::shim::build_c_shim(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("storage/tests/common/fault_shim.c"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    );
    let armed = dir.path().join("armed");
    let storage = dir.path().join("n1").join("storage");
    let gate = armed.clone();
    // Every flush of the store's data file fails with EIO once `armed` exists.
    let mut n1 = NodeProc::start_with("n1", dir.path(), &cluster, &[], |cmd| {
        cmd.args(["--map-size", "64M"])
            .env("LD_PRELOAD", &shim)
            .env("CAIRN_FAULT_DIR", &storage)
            .env("CAIRN_FAULT_OP", "sync")
            .env("CAIRN_FAULT_ERRNO", "EIO")
            .env("CAIRN_FAULT_GATE", &gate);
    });
    let (ok, out) = send_counter(n1.addr, &cluster, "alice", &["add", "3"]);
    assert!(ok, "{out}");
    // A call's answer leaves only after the writes before it are durable: 3 is acknowledged.
    let (ok, out) = send_counter(n1.addr, &cluster, "alice", &["get"]);
    assert!(ok && out.contains("counter/alice = 3"), "{out}");

    std::fs::write(&armed, b"").unwrap();
    // The next commit's flush fails: the node stops with a clear message and a non-zero status.
    let _ = send_counter(n1.addr, &cluster, "alice", &["add", "4"]);
    let last = n1.stderr.wait_for("exiting with status 74");
    assert!(
        last.contains("storage failed") && last.contains("Input/output error"),
        "{last}"
    );
    // It exits right after that line.
    let status = n1.child.wait().unwrap();
    assert_eq!(status.code(), Some(74), "{status}");

    // Restarted by its "supervisor" on a working disk, it serves what it acknowledged.
    std::fs::remove_file(&armed).unwrap();
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    let (ok, out) = send_counter(n1.addr, &cluster, "alice", &["get"]);
    assert!(
        ok && (out.contains("counter/alice = 3 ") || out.contains("counter/alice = 7 ")),
        "{out}"
    );
}

/// `cairn-node run` as `name` with the files in `certs`, to completion (it must fail):
/// (success, stdout, stderr).
fn run_refused(dir: &Path, name: &str, file: &str, certs: &Path) -> (bool, String, String) {
    cli(&[
        "run",
        "--name",
        name,
        "--listen",
        &free_addr().to_string(),
        "--data-dir",
        dir.join(name).to_str().unwrap(),
        "--cert",
        certs.join(format!("{file}.pem")).to_str().unwrap(),
        "--key",
        certs.join(format!("{file}.key")).to_str().unwrap(),
        "--ca",
        certs.join("ca.pem").to_str().unwrap(),
    ])
}

#[test]
fn a_client_certificate_cannot_host_objects() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let certs = issue_node(dir.path(), &ca, "ops", &["--role", "client"]);
    // Under its own (client) name: refused as a client.
    let (ok, out, err) = run_refused(dir.path(), "ops.client", "ops.client", &certs);
    assert!(!ok && !out.contains("ready "), "{out}");
    assert!(err.contains("cannot host objects"), "{err}");
    // Under a node's name: the certificate is not for it.
    let (ok, out, err) = run_refused(dir.path(), "ops", "ops.client", &certs);
    assert!(!ok && !out.contains("ready "), "{out}");
    assert!(
        err.contains("the certificate is not for node \"ops\""),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let c1 = issue_node(dir.path(), &ca, "n1", &[]);
    // Valid for 0 days: it ends the second it is issued.
    let c2 = issue_node(dir.path(), &ca, "n2", &["--days", "0"]);
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Wait for the wall clock to pass its end (certificate times are whole seconds); what
    // is tested here is time itself, so this waits on the clock, not on another thread.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= issued + 1
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let no_ca = dir.path().join("no-ca");
    let n1 = NodeProc::start_with("n1", dir.path(), &no_ca, &[], own_files("n1", &c1));
    let n2 = NodeProc::start_with("n2", dir.path(), &no_ca, &[n1.addr], own_files("n2", &c2));
    let refused = n1.stderr.wait_for("certificate expired");
    assert!(refused.contains("refused a peer"), "{refused}");
    let lines = n1.stdout.wait_until("lines", |_| true);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&format!("node up node={}", n2.id))),
        "a node with an expired certificate joined: {lines:?}"
    );
}

#[test]
fn a_rotated_certificate_rejoins_under_the_same_name_and_the_old_serial_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let c1 = issue_node(dir.path(), &ca, "n1", &[]);
    let c2 = issue_node(dir.path(), &ca, "n2", &[]);
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "").unwrap();
    let no_ca = dir.path().join("no-ca");
    let list = revoked.clone();
    let n1 = NodeProc::start_with("n1", dir.path(), &no_ca, &[], |cmd| {
        own_files("n1", &c1)(cmd);
        cmd.arg("--revoked").arg(&list);
    });
    let n2 = NodeProc::start_with("n2", dir.path(), &no_ca, &[n1.addr], own_files("n2", &c2));
    n1.wait_peers(1);

    // Rotation: a new certificate for n2 (same name, new serial) into a new directory; the
    // old serial goes on the revocation list; n2 restarts on its data dir with the new files.
    let old_serial = cli(&["cert", "serial", c2.join("n2.pem").to_str().unwrap()]).1;
    let rotated = dir.path().join("certs-n2-rotated");
    let (ok, text, err) = cli(&[
        "cert",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "n2",
        "--out",
        rotated.to_str().unwrap(),
    ]);
    assert!(ok, "{text}{err}");
    let new_serial = cli(&["cert", "serial", rotated.join("n2.pem").to_str().unwrap()]).1;
    assert_ne!(old_serial.trim(), new_serial.trim());
    let id = n2.id.clone();
    drop(n2);
    std::fs::write(&revoked, &old_serial).unwrap();
    n1.stderr.wait_for("revocation list reloaded");
    let n2 = NodeProc::start_with(
        "n2",
        dir.path(),
        &no_ca,
        &[n1.addr],
        own_files("n2", &rotated),
    );
    assert_eq!(
        n2.id, id,
        "the node id comes from the name, not the certificate"
    );
    n2.wait_peers(1);
    // The mesh works through the rotated node: a client (with a client certificate of its
    // own) adds through n2 and reads the same total through either node.
    let ops = issue_node(dir.path(), &ca, "ops", &["--role", "client"]);
    let (cert, key, ca_pem) = (
        ops.join("ops.client.pem"),
        ops.join("ops.client.key"),
        ops.join("ca.pem"),
    );
    let send = |via: SocketAddr, op: &[&str]| {
        let via = via.to_string();
        let mut args = vec!["send", "counter", "bob"];
        args.extend_from_slice(op);
        args.extend_from_slice(&["--join", &via, "--cert", cert.to_str().unwrap()]);
        args.extend_from_slice(&[
            "--key",
            key.to_str().unwrap(),
            "--ca",
            ca_pem.to_str().unwrap(),
        ]);
        let (ok, out, err) = cli(&args);
        assert!(ok, "{out}{err}");
        out
    };
    send(n2.addr, &["add", "5"]);
    for via in [n1.addr, n2.addr] {
        let out = send(via, &["get"]);
        assert!(out.contains("counter/bob = 5 "), "{out}");
    }
}
