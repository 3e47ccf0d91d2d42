//! Every commit carries a span with the object's class and key hash: a `cairn-node run`
//! child with `--log-format json` and `RUST_LOG=cairn::commit=debug` logs each write set's
//! hand-over and outcome inside a `commit` span naming the object (never its key).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{cluster_init, JsonLogged, DEADLINE};

/// The JSON log lines of `node` whose message is `message`.
fn logged(node: &JsonLogged, message: &str) -> Vec<serde_json::Value> {
    node.lines(|l| l.starts_with('{'))
        .into_iter()
        .filter(|l| l["fields"]["message"] == message)
        .collect()
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
    let cluster = dir.path().join("cluster");
    cluster_init(&cluster);
    let node = JsonLogged::start("n1", dir.path(), &cluster, &[], "warn,cairn::commit=debug");
    let http = &node.http;
    // Two writes to one counter, one to another (the first waits for its shard's election).
    for key in ["alpha", "alpha", "beta"] {
        assert_eq!(post(&format!("http://{http}/counter/{key}/")), 200, "{key}");
    }
    // Each write answered only once durable, so its "committed" line is written by now
    // (logged before the answer is released); the log is read when three are there.
    let deadline = Instant::now() + DEADLINE;
    let committed = loop {
        let lines = logged(&node, "write set committed");
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
    assert!(logged(&node, "committing")
        .iter()
        .filter_map(commit_span)
        .any(|s| s["class"] == "counter"));
    let text = std::fs::read_to_string(&node.log).unwrap();
    assert!(!text.contains("alpha"), "a key in the log");
}
