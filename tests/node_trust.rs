//! `cairn-node` black box, trust and storage faults: a client certificate cannot host
//! objects, an expired certificate is refused at the handshake, a rotated certificate (same
//! name, new serial, the old serial revoked) rejoins, and a node whose disk fails (EIO,
//! through `storage/tests/common/fault_shim.c`) exits with status 74 and restarts on what
//! it acknowledged.
//!
//! Kept apart from `mesh_node.rs` (whose process helpers are copied here): run beside its
//! `a_revoked_serial_is_refused_after_a_reload`, these nodes made that test time out
//! waiting for the revoked node to be declared down.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");
/// Generous: debug builds on a shared two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Lines a child wrote to one stream, with a condvar to wait for more.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.more.notify_all();
            }
        });
        lines
    }

    /// Waits until `done` holds for the lines so far; panics with them at the deadline.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if done(&lines) {
                return lines.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; got:\n{}",
                lines.join("\n")
            );
            lines = self.more.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        let lines = self.wait_until(needle, |l| l.iter().any(|l| l.contains(needle)));
        lines.into_iter().find(|l| l.contains(needle)).unwrap()
    }
}

/// A running `cairn-node run`, killed on drop.
struct NodeProc {
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    addr: SocketAddr,
    id: String,
}

impl NodeProc {
    fn start(name: &str, dir: &Path, cluster: &Path, join: &[SocketAddr]) -> NodeProc {
        NodeProc::start_with(name, dir, cluster, join, |_| {})
    }

    /// [`NodeProc::start`], with `configure` applied to the command last (extra flags,
    /// environment).
    fn start_with(
        name: &str,
        dir: &Path,
        cluster: &Path,
        join: &[SocketAddr],
        configure: impl FnOnce(&mut Command),
    ) -> NodeProc {
        let addr = free_addr();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--name", name, "--workers", "2", "--listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--cluster")
            .arg(cluster);
        if !join.is_empty() {
            let seeds: Vec<String> = join.iter().map(SocketAddr::to_string).collect();
            cmd.arg("--join").arg(seeds.join(","));
        }
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("start cairn-node");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let mut node = NodeProc {
            child,
            stdout,
            stderr,
            addr,
            id: String::new(),
        };
        let ready = node.stdout.wait_for("ready ");
        assert!(ready.contains(&format!("listen={addr}")), "{ready}");
        node.id = field(&ready, "node").to_owned();
        node
    }

    /// Waits until this node has seen `n` distinct peers come up.
    fn wait_peers(&self, n: usize) {
        self.stdout.wait_until(&format!("{n} peers up"), |lines| {
            let up: BTreeSet<&str> = lines
                .iter()
                .filter(|l| l.starts_with("node up "))
                .map(|l| field(l, "node"))
                .collect();
            up.len() >= n
        });
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP port on 127.0.0.1 (QUIC is UDP), released for the node to take.
fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The value of `key=value` in a line of `cairn-node` output.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Runs a short-lived `cairn-node` command to completion: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run cairn-node");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cluster_init(dir: &Path) {
    let (ok, out, err) = cli(&["cluster", "init", dir.to_str().unwrap()]);
    assert!(ok, "cluster init failed: {out}{err}");
}

/// Issues a node certificate for `name` from the CA in `ca` into `dir/certs-NAME`
/// (`extra`: more `cert issue` flags); returns that directory.
fn issue_node(dir: &Path, ca: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(format!("certs-{name}"));
    let mut args = vec![
        "cert",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        name,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, err) = cli(&args);
    assert!(ok, "{stdout}{err}");
    assert!(stdout.contains("serial "), "{stdout}");
    out
}

/// The `--cert/--key/--ca` flags for `name`'s files in `certs`.
fn own_files(name: &str, certs: &Path) -> impl FnOnce(&mut Command) {
    let (cert, key, ca) = (
        certs.join(format!("{name}.pem")),
        certs.join(format!("{name}.key")),
        certs.join("ca.pem"),
    );
    move |cmd: &mut Command| {
        cmd.arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--ca")
            .arg(&ca);
    }
}

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
