//! `cairn-node`'s observability commands against real node processes: `run --metrics`,
//! `status --json`, and `backup` of a running node's data dir, `restore` into a new one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");
/// Generous: debug builds on a shared machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The store size every node here runs with (not the 1 GiB default, so that a flag that
/// never reaches the store shows).
const MAP_SIZE: &str = "64M";

/// A `cairn-node run` child (a free port, the test's cluster CA), killed on drop.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(data_dir: &Path, cluster: &Path, metrics: bool) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--name", "n1", "--workers", "2"])
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--cluster")
            .arg(cluster)
            .arg("--dev-ca")
            .args(["--map-size", MAP_SIZE])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if metrics {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
        let mut child = cmd.spawn().expect("start cairn-node");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The value of `key=` on the first stdout line starting with `prefix`.
    fn field(&mut self, prefix: &str, key: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{key}=")))
                    .unwrap_or_else(|| panic!("no {key}= in {line}"))
                    .to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line {prefix:?}; got {:?}", self.seen),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run cairn-node")
}

fn ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "cairn-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn get(addr: &str, path: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

/// A running node serves its metrics on `--metrics`, `status --json` reports it, a backup
/// taken while it runs restores into a new data dir whose node has the same object state,
/// and a second restore into that dir is refused.
#[test]
fn metrics_status_json_backup_and_restore_of_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let (data, restored, file) = (
        dir.path().join("n1"),
        dir.path().join("restored"),
        dir.path().join("n1.backup"),
    );
    let cluster = dir.path().join("cluster");
    let cluster = cluster.to_str().unwrap();
    ok(&["cluster", "init", cluster]);
    let mut node = Running::start(&data, cluster.as_ref(), true);
    let metrics = node.field("metrics ", "listen");
    let listen = node.field("ready ", "listen");
    let join = ["--join", listen.as_str(), "--cluster", cluster, "--dev-ca"];

    let added = ok(&[&["send", "counter", "k", "add", "5"][..], &join].concat());
    assert!(added.contains("sent add 5"), "{added}");
    // A get is answered only once the add it follows is durable (the output gate).
    let total = ok(&[&["send", "counter", "k", "get"][..], &join].concat());
    assert!(total.contains("counter/k = 5"), "{total}");

    let page = get(&metrics, "/cairn/metrics");
    assert!(
        page.contains(r#"cairn_object_activations_total{class="counter"} 1"#),
        "{page}"
    );
    // `--map-size` reached the store.
    assert!(
        page.lines()
            .any(|l| l == format!("cairn_storage_map_size_bytes {}", 64 << 20)),
        "{page}"
    );

    let status: serde_json::Value =
        serde_json::from_str(&ok(&[&["status", "--json"][..], &join].concat())).unwrap();
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{status}");
    assert_eq!(members[0]["name"], "n1");
    assert_eq!(members[0]["objects"]["counter"], 1);

    let backup = ok(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(backup.contains("written to"), "{backup}");
    // Never over an existing file.
    let again = cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    drop(node);

    ok(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    let refused = cli(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already holds a store"));

    let mut node = Running::start(&restored, cluster.as_ref(), false);
    let listen = node.field("ready ", "listen");
    let join = ["--join", listen.as_str(), "--cluster", cluster, "--dev-ca"];
    let total = ok(&[&["send", "counter", "k", "get"][..], &join].concat());
    assert!(total.contains("counter/k = 5"), "{total}");
}
