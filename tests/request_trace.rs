//! One request followed across nodes: two `cairn-node run` processes with `--log-format
//! json` and `RUST_LOG=cairn::request=debug`; an HTTP request that the receiving node
//! forwards to the object's owner is logged with the same request id (its `x-request-id`)
//! on both nodes — the id travelled in the mesh frame.

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
    fn start(dir: &Path, name: &str, join: Option<&str>) -> Running {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args([
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
        .env("RUST_LOG", "warn,cairn::request=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(seed) = join {
            cmd.args(["--join", seed]);
        }
        let mut child = cmd.spawn().unwrap();
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

    /// The JSON log lines that carry `request_id` (as a field of the event or of a span).
    fn lines_of(&self, request_id: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let needle = format!(r#""request_id":"{request_id}""#);
        text.lines()
            .filter(|l| l.contains(&needle))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// `curl -i`: (status, x-request-id).
fn post(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20", "-X", "POST", url])
        .output()
        .expect("curl runs (CI installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let id = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, id)
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn a_forwarded_request_is_logged_with_one_id_on_both_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Running::start(dir.path(), "n1", None);
    let ready = n1.line("ready ");
    let seed = ready
        .split(' ')
        .find_map(|f| f.strip_prefix("listen="))
        .unwrap()
        .to_owned();
    let http1 = n1.line("http listen=");
    let n2 = Running::start(dir.path(), "n2", Some(&seed));
    let http2 = n2.line("http listen=");
    n2.line("node up ");
    let nodes = [(&n1, &n2, &http1), (&n2, &n1, &http2)];

    // Requests to either node for many keys: some are for objects the other node owns.
    let deadline = Instant::now() + DEADLINE;
    let mut key = 0;
    let (id, from, to) = loop {
        assert!(Instant::now() < deadline, "no request was ever forwarded");
        let (gateway, owner, http) = nodes[key % 2];
        let (status, id) = post(&format!("http://{http}/counter/k{key}/"));
        key += 1;
        if status != 200 || id.is_empty() {
            continue;
        }
        let forwarded = gateway
            .lines_of(&id)
            .iter()
            .any(|l| message(l) == "forwarding the request to the object's owner");
        if forwarded {
            break (id, gateway, owner);
        }
    };

    // The receiving node logged it in its request span (class and key hash)...
    let sent = from.lines_of(&id);
    let span = sent
        .iter()
        .find_map(|l| {
            l["spans"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "request")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no request span: {sent:?}"));
    assert_eq!(span["request_id"], id.as_str());
    assert_eq!(span["class"], "counter");
    assert_eq!(span["key_hash"].as_str().unwrap().len(), 16);

    // ...and the owner logged the same id: the frame that brought it and the forwarded
    // request.
    let got = to.lines_of(&id);
    let messages: Vec<&str> = got.iter().map(message).collect();
    for expected in [
        "mesh frame received for a request",
        "serving a request forwarded by another node",
    ] {
        assert!(
            messages.contains(&expected),
            "the owner did not log {expected:?} for {id}: {got:?}"
        );
    }
    // The object's handler ran for it on the owner (or, while a shard's leader moves, on
    // the node the owner forwarded it on to: that hop carries the id too).
    let everywhere: Vec<serde_json::Value> =
        got.iter().chain(&from.lines_of(&id)).cloned().collect();
    let in_handler = everywhere.iter().any(|l| {
        message(l) == "calling the object's fetch handler"
            && l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["name"] == "request"
                        && s["what"] == "fetch"
                        && s["class"] == "counter"
                        && s["request_id"] == id.as_str()
                })
            })
    });
    assert!(in_handler, "no handler logged {id}: {everywhere:?}");
    // An id that was never issued is nowhere.
    assert!(to.lines_of("ffffffffffffffff").is_empty());
}
