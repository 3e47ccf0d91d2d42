//! `cairn-node` black box, trust and storage faults: a node handed the CA's key refuses to
//! start (unless `--dev-ca`), a client certificate cannot host objects, an expired
//! certificate is refused at start and at the handshake (and one about to expire is
//! warned of), a certificate rotated on disk is used without a restart (on SIGHUP, and
//! by the file watcher within its interval with no signal), a certificate for another name
//! or region is refused on reload and the old one stays in use, SIGHUP re-reads the
//! revocation list at once, a rotated certificate (same name, new serial, the old serial
//! revoked) rejoins, and a node whose disk fails (EIO, through
//! `storage/tests/common/fault_shim.c`) exits with status 74 and restarts on what it
//! acknowledged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{
    cli, cli_in, cluster_init, free_addr, issue_node, issue_node_into, own_files, serial_of,
    two_nodes_with_own_certs, Lines, NodeProc, TwoNodes, BIN, DEADLINE,
};

/// `send counter KEY ARGS...` through `via`: (success, stdout + stderr).
fn send_counter(via: SocketAddr, cluster: &Path, key: &str, op: &[&str]) -> (bool, String) {
    let via = via.to_string();
    let mut args = vec!["send", "counter", key];
    args.extend_from_slice(op);
    args.extend_from_slice(&["--join", &via, "--cluster", cluster.to_str().unwrap()]);
    args.push("--dev-ca");
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

/// What the rotation tests start from: n1 and n2 on their own certificates
/// ([`two_nodes_with_own_certs`]) in a fresh directory, and the serials they started on.
struct Rotation {
    nodes: TwoNodes,
    /// The serials of n1's and n2's first certificates.
    serials: [String; 2],
    /// Last, so that it is removed after the nodes are killed.
    dir: tempfile::TempDir,
}

impl Rotation {
    fn start() -> Rotation {
        let dir = tempfile::tempdir().unwrap();
        let nodes = two_nodes_with_own_certs(dir.path());
        let serials = [
            serial_of(&nodes.certs[0].join("n1.pem")),
            serial_of(&nodes.certs[1].join("n2.pem")),
        ];
        Rotation {
            nodes,
            serials,
            dir,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `name` a certificate from the set-up's CA into `dir/certs-NAME` (`extra`: more
    /// `cert issue` flags); returns that directory.
    fn issue(&self, name: &str, extra: &[&str]) -> PathBuf {
        issue_node(self.dir(), &self.nodes.ca, name, extra)
    }

    /// Issues `name` (n1 or n2) a new certificate (same name, new serial) into
    /// `dir/certs-NAME-rotated`: that directory and the new serial.
    fn reissue(&self, name: &str) -> (PathBuf, String) {
        let rotated = self.dir().join(format!("certs-{name}-rotated"));
        issue_node_into(&rotated, &self.nodes.ca, name, &[]);
        let serial = serial_of(&rotated.join(format!("{name}.pem")));
        assert!(
            !self.serials.contains(&serial),
            "{name} reissued its serial {serial}"
        );
        (rotated, serial)
    }

    /// Starts n3 on a certificate of its own, joined through n1 (`configure`: more flags),
    /// and waits until it sees both others.
    fn start_n3(&self, configure: impl FnOnce(&mut Command)) -> NodeProc {
        let c3 = self.issue("n3", &[]);
        let no_ca = self.dir().join("no-ca");
        let n3 = NodeProc::start_with("n3", self.dir(), &no_ca, &[self.nodes.n1.addr], |cmd| {
            own_files("n3", &c3)(cmd);
            configure(cmd);
        });
        n3.wait_peers(2);
        n3
    }

    /// n1's output so far, which must not say that n2 went down.
    fn n1_kept_n2(&self) -> Vec<String> {
        let lines = self.nodes.n1.stdout.wait_until("lines", |_| true);
        let down = format!("node down node={}", self.nodes.n2.id);
        assert!(
            !lines.iter().any(|l| l.contains(&down)),
            "n1 lost n2: {lines:?}"
        );
        lines
    }
}

/// Waits for the wall clock to pass the end of a certificate issued `--days 0` at `issued`
/// (whole seconds). What is tested is time itself, so this waits on the clock, not on
/// another thread.
fn wait_past(issued: u64) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= issued + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_expired_certificate_is_refused_at_start_and_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    // n1's certificate ends in three days: it runs, and warns.
    let c1 = issue_node(dir.path(), &ca, "n1", &["--days", "3"]);
    // Valid for 0 days: it ends the second it is issued.
    let c2 = issue_node(dir.path(), &ca, "n2", &["--days", "0"]);
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let no_ca = dir.path().join("no-ca");
    let n1 = NodeProc::start_with("n1", dir.path(), &no_ca, &[], own_files("n1", &c1));
    let warning = n1.stderr.wait_for("certificate expires soon");
    assert!(warning.contains("days_left=2"), "{warning}");
    wait_past(issued);

    // A node refuses to start on its own expired certificate...
    let (ok, out, err) = run_refused(dir.path(), "n2", "n2", &c2);
    assert!(!ok && !out.contains("ready "), "started expired: {out}");
    assert!(
        err.contains("the certificate of \"n2\" is expired (valid from"),
        "{err}"
    );
    // ...and a peer that shows it anyway (here a bare endpoint) is refused at the handshake.
    let (rt, endpoint) = bare_endpoint(&c2, "n2");
    let dialer = endpoint.clone();
    let addr = n1.addr;
    let _ = rt.block_on(rt.timeout(Duration::from_secs(20), async move {
        dialer
            .connect(addr, cairn::net::SEED_SERVER_NAME)
            .await
            .map(drop)
    }));
    let refused = n1.stderr.wait_for("certificate expired");
    assert!(refused.contains("refused a peer"), "{refused}");
    drop(endpoint);
    rt.shutdown();
}

#[test]
fn a_rotated_certificate_rejoins_under_the_same_name_and_the_old_serial_is_revoked() {
    let mut fx = Rotation::start();

    // Rotation: a new certificate for n2 (same name, new serial) into a new directory; the
    // old serial goes on the revocation list; n2 restarts on its data dir with the new files.
    let (rotated, _) = fx.reissue("n2");
    let id = fx.nodes.n2.id.clone();
    drop(fx.nodes.n2);
    std::fs::write(&fx.nodes.revoked, &fx.serials[1]).unwrap();
    fx.nodes.n1.stderr.wait_for("revocation list reloaded");
    let no_ca = fx.dir.path().join("no-ca");
    fx.nodes.n2 = NodeProc::start_with(
        "n2",
        fx.dir.path(),
        &no_ca,
        &[fx.nodes.n1.addr],
        own_files("n2", &rotated),
    );
    let TwoNodes { n1, n2, .. } = &fx.nodes;
    assert_eq!(
        n2.id, id,
        "the node id comes from the name, not the certificate"
    );
    n2.wait_peers(1);
    // The mesh works through the rotated node: a client (with a client certificate of its
    // own) adds through n2 and reads the same total through either node.
    let ops = fx.issue("ops", &["--role", "client"]);
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

/// `cairn-node run --name NAME` on a free port with `args`, to completion (it must fail):
/// (success, stdout, stderr).
fn run_with(dir: &Path, name: &str, args: &[&str]) -> (bool, String, String) {
    let listen = free_addr().to_string();
    let data = dir.join(name);
    let mut all = vec![
        "run",
        "--name",
        name,
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    cli(&all)
}

#[test]
fn a_node_or_a_client_handed_the_ca_key_refuses_unless_told_it_is_a_development_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let cluster_arg = cluster.to_str().unwrap();
    // With a seed, and alone: a CA directory means the CA's key, refused either way.
    let seed = free_addr().to_string();
    for args in [
        vec!["--cluster", cluster_arg],
        vec!["--cluster", cluster_arg, "--join", &seed],
    ] {
        let (ok, out, err) = run_with(dir.path(), "n1", &args);
        assert!(
            !ok && !out.contains("ready "),
            "started with the CA key: {out}"
        );
        assert!(
            err.contains("holds the cluster CA's private key")
                && err.contains("cert issue")
                && err.contains("--dev-ca"),
            "{err}"
        );
    }
    // The CA's key given as the node's own key does not pass either.
    let certs = issue_node(dir.path(), &cluster, "n1", &[]);
    let ca_key = cluster.join("ca.key");
    let (ok, out, err) = run_with(
        dir.path(),
        "n1",
        &[
            "--cert",
            certs.join("n1.pem").to_str().unwrap(),
            "--key",
            ca_key.to_str().unwrap(),
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
        ],
    );
    assert!(!ok && !out.contains("ready "), "{out}");
    assert!(err.contains("is not the key of the certificate"), "{err}");

    // Told so (--dev-ca, what NodeProc passes with a CA directory), it starts and says so.
    let n1 = NodeProc::start("n1", dir.path(), &cluster, &[]);
    n1.stderr
        .wait_for("DEVELOPMENT: this node holds the cluster CA's private key");

    // The one-node default on a fresh machine (no --cluster, no --join) still starts: it
    // makes a local CA and says so.
    let cwd = tempfile::tempdir().unwrap();
    let default = start_default(cwd.path());
    default.stdout.wait_for("ready ");
    default
        .stderr
        .wait_for("created a local cluster CA for this one-node development mesh");
    assert!(cwd.path().join("cluster/ca.key").exists());
    // Its `send` and `status` use that development CA without being told.
    let via = default.addr.to_string();
    let (ok, out, err) = cli_in(
        cwd.path(),
        &["send", "counter", "k", "add", "1", "--join", &via],
    );
    assert!(ok && out.contains("sent add 1"), "{out}{err}");
    drop(default);
    // It reuses the CA it made on its next start.
    let again = start_default(cwd.path());
    again.stdout.wait_for("ready ");
    drop(again);

    // But not an operator's CA found in ./cluster (made by `ca init`): that is refused like
    // any CA key without --dev-ca.
    let operators = tempfile::tempdir().unwrap();
    cluster_init(&operators.path().join("cluster"));
    let mut refused = start_default(operators.path());
    let err = refused
        .stderr
        .wait_for("holds the cluster CA's private key");
    let status = refused.child.wait().unwrap();
    assert!(!status.success(), "{err}");

    // Nor do `send` and `status` issue themselves a certificate from it: they are told to
    // use a client certificate, before they dial anything.
    let seed = free_addr().to_string();
    for command in [&["send", "counter", "k", "get"][..], &["status"]] {
        let args = [command, &["--join", &seed]].concat();
        let (ok, out, err) = cli_in(operators.path(), &args);
        assert!(!ok, "{command:?} used an operator's CA key: {out}");
        assert!(
            err.contains("holds the cluster CA's private key")
                && err.contains("--role client")
                && err.contains("--dev-ca"),
            "{err}"
        );
    }
}

#[test]
fn a_certificate_rotated_on_disk_is_used_for_new_connections_without_a_restart() {
    let mut fx = Rotation::start();

    // A new certificate for n1 (same name, new serial) replaces its files in place, and the
    // operator tells n1 with SIGHUP.
    let (rotated, new_serial) = fx.reissue("n1");
    replace_files(&rotated, "n1", &fx.nodes.certs[0], "n1");
    hangup(&fx.nodes.n1);
    let reloaded = format!("serial={new_serial}");
    fx.nodes
        .n1
        .stderr
        .wait_until("n1 on its new certificate", |lines| {
            lines
                .iter()
                .any(|l| l.contains("new connections use it") && l.contains(&reloaded))
        });

    // A node started now that has n1's old serial on its revocation list gets in through
    // n1 only if n1 shows it the new certificate; it then sees both members.
    let list = fx.dir().join("revoked-n3.txt");
    let old_serial = &fx.serials[0];
    std::fs::write(&list, format!("{old_serial}  # n1's old certificate\n")).unwrap();
    let _n3 = fx.start_n3(|cmd| {
        cmd.arg("--revoked").arg(&list);
    });

    // n1 never restarted, and its connection to n2 (made on the old certificate) carried on.
    assert!(fx.nodes.n1.child.try_wait().unwrap().is_none(), "n1 exited");
    let lines = fx.n1_kept_n2();
    assert_eq!(lines.iter().filter(|l| l.starts_with("ready ")).count(), 1);
}

/// `cairn-node run` with no --cluster and no --join (the one-node default) in `cwd`.
fn start_default(cwd: &Path) -> NodeProc {
    let addr = free_addr();
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--workers", "2", "--listen", &addr.to_string()])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    NodeProc {
        child,
        stdout,
        stderr,
        addr,
        id: String::new(),
    }
}

/// Sends `node` SIGHUP (`systemctl reload`): it re-reads its certificate files and its
/// revocation list.
fn hangup(node: &NodeProc) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Copies `name`'s certificate and key from the directory `from` over `name`'s files in
/// `to` (the key first, as `cp KEY PEM` does).
fn replace_files(from: &Path, from_name: &str, to: &Path, name: &str) {
    for ext in ["key", "pem"] {
        std::fs::copy(
            from.join(format!("{from_name}.{ext}")),
            to.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
}

/// A bare mesh endpoint (no node behind it) on 127.0.0.1, on a runtime of its own, holding
/// the certificate of node `name` issued into `certs`.
fn bare_endpoint(certs: &Path, name: &str) -> (cairn::scheduler::Runtime, cairn::net::Endpoint) {
    let read = |file: String| std::fs::read_to_string(certs.join(file)).unwrap();
    let cert = cairn::net::NodeCert::from_pem(
        name,
        &read(format!("{name}.pem")),
        &read(format!("{name}.key")),
    )
    .unwrap();
    let tls = cairn::net::TlsConfig::from_pem(&read("ca.pem".into()), cert).unwrap();
    let rt = cairn::scheduler::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let endpoint =
        cairn::net::Endpoint::bind(&rt.handle(), "127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    (rt, endpoint)
}

/// The serial of the certificate `node` shows a new connection dialed to it by its name
/// `name`, from a bare endpoint holding the certificate of node `probe` (issued into
/// `certs`).
fn presented_serial(node: &NodeProc, name: &str, certs: &Path, probe: &str) -> String {
    let (rt, endpoint) = bare_endpoint(certs, probe);
    let (dialer, addr, name) = (endpoint.clone(), node.addr, name.to_owned());
    let conn = rt
        .block_on(rt.timeout(DEADLINE, async move { dialer.connect(addr, &name).await }))
        .expect("connected in time")
        .expect("connected");
    let serial = cairn::net::tls::peer_identity(conn.quinn())
        .expect("a certificate of the CA")
        .serial
        .to_string();
    drop(conn);
    drop(endpoint);
    rt.shutdown();
    serial
}

/// How late past the README's "sees the files change within 5 s" (the watcher's
/// interval) a reload may be seen here: a loaded two-core machine, a debug build, and the
/// node's log line travelling through a pipe.
const WATCH_MARGIN: Duration = Duration::from_secs(10);

#[test]
fn a_certificate_replaced_on_disk_is_used_within_the_watch_interval_without_a_signal() {
    let fx = Rotation::start();
    let n1 = &fx.nodes.n1;
    let probe = fx.issue("probe", &[]);
    assert_eq!(presented_serial(n1, "n1", &probe, "probe"), fx.serials[0]);

    // A new certificate for n1 over its files, and no signal: n1 looks at them every
    // TLS_WATCH_INTERVAL.
    let (rotated, new_serial) = fx.reissue("n1");
    replace_files(&rotated, "n1", &fx.nodes.certs[0], "n1");
    let written = Instant::now();
    let reloaded = format!("serial={new_serial}");
    n1.stderr.wait_until("n1 to see its files change", |lines| {
        lines
            .iter()
            .any(|l| l.contains("certificate files changed; reloaded") && l.contains(&reloaded))
    });
    let took = written.elapsed();
    let bound = cairn::tls_reload::TLS_WATCH_INTERVAL + WATCH_MARGIN;
    assert!(
        took <= bound,
        "reloaded {took:?} after the files changed (bound {bound:?})"
    );

    // A connection made now is shown the new certificate; the one to n2 carried on.
    assert_eq!(presented_serial(n1, "n1", &probe, "probe"), new_serial);
    fx.n1_kept_n2();
    let stderr = n1.stderr.wait_until("lines", |_| true);
    assert!(
        !stderr.iter().any(|l| l.contains("SIGHUP")),
        "n1 was signalled: {stderr:?}"
    );
}

#[test]
fn a_certificate_for_another_name_or_region_is_refused_on_reload_and_the_old_one_stays() {
    let mut fx = Rotation::start();
    let (n1, certs) = (&fx.nodes.n1, &fx.nodes.certs);
    let probe = fx.issue("probe", &[]);
    let refusals = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("certificate not reloaded; the current one stays in use"))
            .cloned()
            .collect()
    };

    // Another node's certificate (and key) over n1's files, then SIGHUP: refused.
    let other = fx.issue("n9", &[]);
    replace_files(&other, "n9", &certs[0], "n1");
    hangup(n1);
    let lines = n1
        .stderr
        .wait_until("the other name refused", |l| !refusals(l).is_empty());
    let refused = refusals(&lines);
    assert!(refused[0].contains("is not for node \"n1\""), "{refused:?}");

    // n1's own name, but in a region n1 does not run in (it runs in none): refused too.
    let elsewhere = fx.dir().join("certs-n1-eu");
    issue_node_into(&elsewhere, &fx.nodes.ca, "n1", &["--region", "eu"]);
    replace_files(&elsewhere, "n1", &certs[0], "n1");
    hangup(n1);
    let lines = n1
        .stderr
        .wait_until("the other region refused", |l| refusals(l).len() >= 2);
    let refused = refusals(&lines);
    assert!(refused[1].contains("is for region \"eu\""), "{refused:?}");

    // Nothing changed: a new connection is shown the old certificate, no reload took, and
    // the node works: a node started now joins through it and sees both members.
    assert_eq!(presented_serial(n1, "n1", &probe, "probe"), fx.serials[0]);
    let stderr = n1.stderr.wait_until("lines", |_| true);
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("new connections use it") || l.contains("reloaded on SIGHUP")),
        "a refused certificate was taken: {stderr:?}"
    );
    let _n3 = fx.start_n3(|_| {});
    assert!(fx.nodes.n1.child.try_wait().unwrap().is_none(), "n1 exited");
    fx.n1_kept_n2();
}

/// How often `cairn-node run` re-reads `--revoked` by itself (README: every 10 s).
const REREAD: Duration = Duration::from_secs(10);

#[test]
fn a_serial_added_to_the_revocation_list_is_refused_at_once_on_sighup() {
    // n2 kept running (its process is killed on drop).
    let fx = Rotation::start();
    let TwoNodes { revoked, n1, .. } = &fx.nodes;
    let n2_serial = &fx.serials[1];
    let reloads = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("revocation list reloaded"))
            .count()
    };

    // First the periodic re-read's phase: a serial nobody holds goes on the list, and n1
    // is seen to take it by itself. Its next periodic re-read is REREAD after that one.
    std::fs::write(revoked, "0badc0de  # nobody\n").unwrap();
    n1.stderr
        .wait_until("a periodic re-read", |l| reloads(l) == 1);
    let periodic = Instant::now();

    // n2's serial goes on the list, and SIGHUP: n1 re-reads it at once and closes n2's
    // connection, long before its next periodic re-read could.
    std::fs::write(revoked, format!("0badc0de\n{n2_serial}  # n2\n")).unwrap();
    hangup(n1);
    let refused = format!("serial={n2_serial}");
    n1.stderr.wait_until("n2 refused", |lines| {
        lines.iter().any(|l| {
            l.contains("refused a peer whose certificate is revoked") && l.contains(&refused)
        })
    });
    let took = periodic.elapsed();
    assert!(
        took < REREAD / 2,
        "n2 refused {took:?} after the last periodic re-read: not on SIGHUP"
    );
    let lines = n1.stderr.wait_until("lines", |_| true);
    assert_eq!(reloads(&lines), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("SIGHUP: reloading")));
}
