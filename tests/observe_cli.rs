//! `cairn-node`'s observability commands against real node processes: `run --metrics`,
//! `status --json`, and `backup` of a running node's data dir, `restore` into a new one.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{cli, cluster_init, NodeProc, DEADLINE};

/// The store size every node here runs with (not the 1 GiB default, so that a flag that
/// never reaches the store shows).
const MAP_SIZE: &str = "64M";

/// `n1` on `data_dir` (with `--metrics` on a free port if `metrics`).
fn start(data_dir: &Path, cluster: &Path, metrics: bool) -> NodeProc {
    NodeProc::start_on("n1", data_dir, cluster, &[], |cmd| {
        cmd.args(["--map-size", MAP_SIZE]);
        if metrics {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
    })
}

/// `cairn-node args`, which must succeed: its stdout.
fn ok(args: &[&str]) -> String {
    let (ok, out, err) = cli(args);
    assert!(ok, "cairn-node {args:?} failed: {err}");
    out
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
    cluster_init(cluster.as_ref());
    let node = start(&data, cluster.as_ref(), true);
    let metrics = node.printed("metrics ", "listen");
    let listen = node.addr.to_string();
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
    let (again, _, _) = cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(!again);
    drop(node);

    ok(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    let (refused, _, err) = cli(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(!refused);
    assert!(err.contains("already holds a store"), "{err}");

    let node = start(&restored, cluster.as_ref(), false);
    let listen = node.addr.to_string();
    let join = ["--join", listen.as_str(), "--cluster", cluster, "--dev-ca"];
    let total = ok(&[&["send", "counter", "k", "get"][..], &join].concat());
    assert!(total.contains("counter/k = 5"), "{total}");
}
