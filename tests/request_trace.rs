//! One request followed across nodes: two `cairn-node run` processes with `--log-format
//! json` and `RUST_LOG=cairn::request=debug`; an HTTP request that the receiving node
//! forwards to the object's owner is logged with the same request id (its `x-request-id`)
//! on both nodes — the id travelled in the mesh frame.

use std::process::Command;
use std::time::Instant;

#[path = "common/node_proc.rs"]
mod node_proc;

use node_proc::{cluster_init, JsonLogged, DEADLINE};

/// A node of this test: `dir/NAME`, its requests logged (`cairn::request=debug`).
fn start(dir: &std::path::Path, name: &str, join: &[std::net::SocketAddr]) -> JsonLogged {
    let cluster = dir.join("cluster");
    JsonLogged::start(name, dir, &cluster, join, "warn,cairn::request=debug")
}

/// The JSON log lines of `node` that carry `request_id` (as a field of the event or of a
/// span).
fn lines_of(node: &JsonLogged, request_id: &str) -> Vec<serde_json::Value> {
    let needle = format!(r#""request_id":"{request_id}""#);
    node.lines(|l| l.contains(&needle))
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
    cluster_init(&dir.path().join("cluster"));
    let n1 = start(dir.path(), "n1", &[]);
    let n2 = start(dir.path(), "n2", &[n1.node.addr]);
    n2.node.wait_peers(1);
    let nodes = [(&n1, &n2, &n1.http), (&n2, &n1, &n2.http)];

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
        let forwarded = lines_of(gateway, &id)
            .iter()
            .any(|l| message(l) == "forwarding the request to the object's owner");
        if forwarded {
            break (id, gateway, owner);
        }
    };

    // The receiving node logged it in its request span (class and key hash)...
    let sent = lines_of(from, &id);
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
    let got = lines_of(to, &id);
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
        got.iter().chain(&lines_of(from, &id)).cloned().collect();
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
    assert!(lines_of(to, "ffffffffffffffff").is_empty());
}
