//! `cairn-node` child processes for the root integration tests that run the binary as a
//! black box (`#[path = "common/node_proc.rs"] mod node_proc;`): [`NodeProc`] starts a
//! `cairn-node run` on a free 127.0.0.1 port and kills it on drop, [`Lines`] collects a
//! child's output and waits on it with a deadline (none sleeps to observe), [`JsonLogged`]
//! is a node with an HTTP port logging JSON to a file, [`cli`] runs a
//! short-lived command, [`issue_node`]/[`own_files`] make and pass node certificates, and
//! [`two_nodes_with_own_certs`] starts the two-node set-up of the certificate tests.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");
/// Generous: debug builds on a shared two-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Lines a child wrote to one stream, with a condvar to wait for more.
#[derive(Default)]
pub struct Lines {
    pub lines: Mutex<Vec<String>>,
    more: Condvar,
}

impl Lines {
    pub fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
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
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
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

    /// Waits for a line containing `needle`; returns the first.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_line(needle, |l| l.contains(needle))
    }

    /// Waits for a line starting with `prefix`; returns the first.
    pub fn wait_for_start(&self, prefix: &str) -> String {
        self.wait_for_line(prefix, |l| l.starts_with(prefix))
    }

    fn wait_for_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let lines = self.wait_until(what, |l| l.iter().any(|l| wanted(l)));
        lines.into_iter().find(|l| wanted(l)).unwrap()
    }
}

/// A running `cairn-node run`, killed on drop.
pub struct NodeProc {
    pub child: Child,
    pub stdout: Arc<Lines>,
    pub stderr: Arc<Lines>,
    pub addr: SocketAddr,
    pub id: String,
}

impl NodeProc {
    pub fn start(name: &str, dir: &Path, cluster: &Path, join: &[SocketAddr]) -> NodeProc {
        NodeProc::start_with(name, dir, cluster, join, |_| {})
    }

    /// [`NodeProc::start`], with `configure` applied to the command last (extra flags,
    /// environment; a `configure` that sends stderr elsewhere, as [`JsonLogged`] does,
    /// leaves [`NodeProc::stderr`] empty).
    pub fn start_with(
        name: &str,
        dir: &Path,
        cluster: &Path,
        join: &[SocketAddr],
        configure: impl FnOnce(&mut Command),
    ) -> NodeProc {
        NodeProc::start_on(name, &dir.join(name), cluster, join, configure)
    }

    /// [`NodeProc::start_with`] on the data dir `data_dir` (not `dir/name`).
    pub fn start_on(
        name: &str,
        data_dir: &Path,
        cluster: &Path,
        join: &[SocketAddr],
        configure: impl FnOnce(&mut Command),
    ) -> NodeProc {
        let addr = free_addr();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--name", name, "--workers", "2", "--listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cluster")
            .arg(cluster);
        // A node issuing itself a certificate from the CA's key is a development set-up,
        // which `run` accepts only when told so (nodes given --cert have no CA there).
        if cluster.join("ca.key").exists() {
            cmd.arg("--dev-ca");
        }
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
        let stderr = child
            .stderr
            .take()
            .map_or_else(Default::default, Lines::collect);
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

    /// The value of `key=` on the first stdout line starting with `prefix` (waiting for it),
    /// e.g. `printed("http ", "listen")`.
    pub fn printed(&self, prefix: &str, key: &str) -> String {
        field(&self.stdout.wait_for_start(prefix), key).to_owned()
    }

    /// Waits until this node has seen `n` distinct peers come up.
    pub fn wait_peers(&self, n: usize) {
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
pub fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The value of `key=value` in a line of `cairn-node` output.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A `cairn-node run` child with an HTTP port that logs JSON (`--log-format json`) into
/// a file: a file, not a pipe, so that what the node wrote before it answered a request is
/// there to read when the answer arrives.
pub struct JsonLogged {
    pub node: NodeProc,
    /// The log file, `dir/NAME.log`.
    pub log: PathBuf,
    /// Its HTTP address (`--http` on a free port).
    pub http: String,
}

impl JsonLogged {
    /// [`NodeProc::start`], logging at `rust_log` (`RUST_LOG`) into `dir/NAME.log` instead
    /// of [`NodeProc::stderr`].
    pub fn start(
        name: &str,
        dir: &Path,
        cluster: &Path,
        join: &[SocketAddr],
        rust_log: &str,
    ) -> JsonLogged {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let node = NodeProc::start_with(name, dir, cluster, join, |cmd| {
            cmd.args(["--log-format", "json", "--http", "127.0.0.1:0"])
                .env("RUST_LOG", rust_log)
                .stderr(file);
        });
        let http = node.printed("http ", "listen");
        JsonLogged { node, log, http }
    }

    /// The log's lines that `keep` picks, each parsed (a picked line that is not JSON fails
    /// the test).
    pub fn lines(&self, keep: impl Fn(&str) -> bool) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| keep(l))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Runs a short-lived `cairn-node` command to completion: (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    cli_in(Path::new("."), args)
}

/// [`cli`] run in the directory `cwd` (where the defaults `./cluster` and `./data` are).
pub fn cli_in(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
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

pub fn cluster_init(dir: &Path) {
    let (ok, out, err) = cli(&["cluster", "init", dir.to_str().unwrap()]);
    assert!(ok, "cluster init failed: {out}{err}");
}

/// Issues a node certificate for `name` from the CA in `ca` into `dir/certs-NAME`
/// (`extra`: more `cert issue` flags); returns that directory.
pub fn issue_node(dir: &Path, ca: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(format!("certs-{name}"));
    issue_node_into(&out, ca, name, extra);
    out
}

/// Issues a node certificate for `name` from the CA in `ca` into the directory `out`
/// (`extra`: more `cert issue` flags).
pub fn issue_node_into(out: &Path, ca: &Path, name: &str, extra: &[&str]) {
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
}

/// The `--cert/--key/--ca` flags for `name`'s files in `certs`.
pub fn own_files(name: &str, certs: &Path) -> impl FnOnce(&mut Command) {
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

/// The serial of the certificate in `pem` (as `cert serial` prints it).
pub fn serial_of(pem: &Path) -> String {
    let (ok, serial, err) = cli(&["cert", "serial", pem.to_str().unwrap()]);
    assert!(ok, "{serial}{err}");
    serial.trim().to_owned()
}

/// The set-up the certificate tests share: an offline CA in `dir/ca`, certificates for
/// `n1` and `n2` (`certs[0]`, `certs[1]`, from `cert issue`), an empty revocation list
/// `revoked` that n1 honours, and the two nodes started from their own files only, n2
/// joined to n1 and seen by it.
pub struct TwoNodes {
    pub ca: std::path::PathBuf,
    pub certs: [std::path::PathBuf; 2],
    pub revoked: std::path::PathBuf,
    pub n1: NodeProc,
    pub n2: NodeProc,
}

pub fn two_nodes_with_own_certs(dir: &Path) -> TwoNodes {
    let ca = dir.join("ca");
    let (ok, out, err) = cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let c1 = issue_node(dir, &ca, "n1", &[]);
    let c2 = issue_node(dir, &ca, "n2", &[]);
    let revoked = dir.join("revoked.txt");
    std::fs::write(&revoked, "# revoked serials\n").unwrap();
    let no_ca = dir.join("no-ca");
    let list = revoked.clone();
    let n1 = NodeProc::start_with("n1", dir, &no_ca, &[], |cmd| {
        own_files("n1", &c1)(cmd);
        cmd.arg("--revoked").arg(&list);
    });
    let n2 = NodeProc::start_with("n2", dir, &no_ca, &[n1.addr], own_files("n2", &c2));
    n1.wait_peers(1);
    TwoNodes {
        ca,
        certs: [c1, c2],
        revoked,
        n1,
        n2,
    }
}
