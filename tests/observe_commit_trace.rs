//! Every commit carries a span with the object's class and key hash: a `cairn-node run`
//! child with `--log-format json` and `RUST_LOG=cairn::commit=debug` logs each write set's
//! hand-over and outcome inside a `commit` span naming the object (never its key).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");
const DEADLINE: Duration = Duration::from_secs(60);

/// A `cairn-node run` child logging JSON to a file, killed on drop.
struct Running {
    child: std::process::Child,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(dir: &Path, name: &str) -> Running {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--name",
                name,
                "--workers",
                "2",
                "--log-format",
                "json",
            ])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--cluster")
            .arg(dir.join("cluster"))
            .arg("--dev-ca")
            .env("RUST_LOG", "warn,cairn::commit=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines, log }
    }

    /// The first stdout line starting with `prefix`, without it.
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line {prefix:?} from the node"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// The JSON log lines whose message is `message`.
    fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .filter(|l: &serde_json::Value| l["fields"]["message"] == message)
            .collect()
    }
}

/// `curl -X POST`: the status.
fn post(url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-X",
            "POST",
            url,
        ])
        .output()
        .expect("curl runs (CI installs it)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The `commit` span of a log line, if it is in one.
fn commit_span(line: &serde_json::Value) -> Option<serde_json::Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "commit")
        .cloned()
}

#[test]
fn each_commit_is_logged_in_a_span_with_the_objects_class_and_key_hash() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path(), "n1");
    node.line("ready ");
    let http = node.line("http listen=");
    // Two writes to one counter, one to another (the first waits for its shard's election).
    for key in ["alpha", "alpha", "beta"] {
        assert_eq!(post(&format!("http://{http}/counter/{key}/")), 200, "{key}");
    }
    // Each write answered only once durable, so its "committed" line is written by now
    // (logged before the answer is released); the log is read when three are there.
    let deadline = Instant::now() + DEADLINE;
    let committed = loop {
        let lines = node.logged("write set committed");
        let counters: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(commit_span)
            .filter(|s| s["class"] == "counter")
            .collect();
        if counters.len() >= 3 || Instant::now() > deadline {
            break counters;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(committed.len() >= 3, "{committed:?}");
    let hashes: std::collections::BTreeSet<&str> = committed
        .iter()
        .map(|s| s["key_hash"].as_str().expect("a key hash"))
        .collect();
    assert_eq!(hashes.len(), 2, "one hash per key: {committed:?}");
    for hash in &hashes {
        assert_eq!(hash.len(), 16, "{hash}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    }
    // A replicated object's commits go through its shard.
    assert!(
        committed.iter().all(|s| s["replicated"] == true),
        "{committed:?}"
    );
    // Each hand-over is logged in its span too, and keys themselves never are.
    assert!(node
        .logged("committing")
        .iter()
        .filter_map(commit_span)
        .any(|s| s["class"] == "counter"));
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("alpha"), "a key in the log");
}
