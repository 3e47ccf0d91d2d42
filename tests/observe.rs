//! The observability pages of a real node over HTTP (`cairn::observe`): `/cairn/metrics`
//! parsed by a real OpenMetrics parser (the `prometheus_client` Python package), counters
//! that move with the workload that should move them, `/cairn/status.json`, the dashboard.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn::prelude::*;
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(10);

/// A one-node mesh (so the mesh families are there) serving its pages on a free port.
fn node_with_pages(dir: &std::path::Path, idle: Duration) -> (Node, cairn_gateway_addr::Addr) {
    node_with_pages_of(dir, idle, NodeBuilder::insecure_dev)
}

/// As [`node_with_pages`], with `configure` applied to the builder last.
fn node_with_pages_of(
    dir: &std::path::Path,
    idle: Duration,
    configure: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> (Node, cairn_gateway_addr::Addr) {
    let builder = Node::builder()
        .workers(2)
        .name("obs1")
        .data_dir(dir)
        .object_idle_timeout(idle)
        .listen("127.0.0.1:0".parse().unwrap());
    let node = configure(builder).start().unwrap();
    node.host::<Counter>();
    let gateway = cairn::observe::serve(&node, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = gateway.local_addr().unwrap();
    (node, cairn_gateway_addr::Addr(addr))
}

mod cairn_gateway_addr {
    /// Where a node's pages are served.
    pub struct Addr(pub std::net::SocketAddr);
}

/// `GET path` (or another method) with `connection: close`: status, headers (lowercase
/// names), body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

/// Parses OpenMetrics text with the `prometheus_client` Python package's parser (Debian's
/// python3-prometheus-client); returns `sample name{labels}` -> value. Panics if it does not
/// parse.
fn parse_openmetrics(text: &str) -> HashMap<String, f64> {
    const SCRIPT: &str = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with python3-prometheus-client) is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /cairn/metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, headers, body) = request(addr, "GET", "/cairn/metrics");
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/openmetrics-text"));
    parse_openmetrics(&body)
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {:?}", samples.keys()))
}

/// Polls `scrape` until `ok` holds (counters are read at scrape time; an eviction happens
/// on the node's own schedule).
fn scrape_until(
    addr: SocketAddr,
    ok: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + T;
    loop {
        let samples = scrape(addr);
        if ok(&samples) || Instant::now() > deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every documented family is there and the text parses as OpenMetrics.
#[test]
fn metrics_parse_as_openmetrics_with_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let samples = scrape(addr.0);
    let class = r#"{class="test-counter"}"#;
    for name in [
        "cairn_processes".to_owned(),
        "cairn_run_queue_depth".to_owned(),
        "cairn_scheduler_workers".to_owned(),
        "cairn_scheduler_polls_total".to_owned(),
        "cairn_scheduler_steals_total".to_owned(),
        "cairn_scheduler_parks_total".to_owned(),
        "cairn_process_spawns_total".to_owned(),
        r#"cairn_process_exits_total{reason="normal"}"#.to_owned(),
        r#"cairn_process_exits_total{reason="panic"}"#.to_owned(),
        "cairn_mailbox_full_refusals_total".to_owned(),
        "cairn_mailbox_dead_letters_total".to_owned(),
        "cairn_storage_commits_total".to_owned(),
        "cairn_storage_write_sets_total".to_owned(),
        "cairn_storage_commit_seconds_count".to_owned(),
        r#"cairn_storage_commit_seconds_bucket{le="+Inf"}"#.to_owned(),
        "cairn_storage_fsync_seconds_count".to_owned(),
        "cairn_storage_fsync_seconds_sum".to_owned(),
        r#"cairn_storage_fsync_seconds_bucket{le="+Inf"}"#.to_owned(),
        "cairn_storage_map_used_bytes".to_owned(),
        "cairn_storage_map_size_bytes".to_owned(),
        format!("cairn_objects_active{class}"),
        format!("cairn_object_activations_total{class}"),
        format!("cairn_object_evictions_total{class}"),
        format!("cairn_object_handler_failures_total{class}"),
        format!("cairn_object_write_sets_failed_total{class}"),
        format!("cairn_object_undeliverable_total{class}"),
        format!("cairn_object_handler_seconds_count{class}"),
        format!("cairn_object_gate_hold_seconds_count{class}"),
        format!("cairn_alarms_fired_total{class}"),
        format!("cairn_alarms_retried_total{class}"),
        format!("cairn_alarms_given_up_total{class}"),
        "process_resident_memory_bytes".to_owned(),
        "cairn_mesh_members".to_owned(),
        "cairn_mesh_connected_peers".to_owned(),
        "cairn_mesh_delivered_total".to_owned(),
        "cairn_mesh_dead_letters_total".to_owned(),
        "cairn_mesh_swim_epochs_total".to_owned(),
        r#"cairn_mesh_refused_handshakes_total{reason="handshake"}"#.to_owned(),
        r#"cairn_mesh_refused_handshakes_total{reason="duplicate"}"#.to_owned(),
        r#"cairn_mesh_refused_handshakes_total{reason="revoked"}"#.to_owned(),
        r#"cairn_mesh_refused_handshakes_total{reason="busy"}"#.to_owned(),
        r#"cairn_mesh_refusals_total{what="forged_reply"}"#.to_owned(),
        r#"cairn_mesh_refusals_total{what="hello_peer"}"#.to_owned(),
        r#"cairn_mesh_refusals_total{what="unmet_member"}"#.to_owned(),
        r#"cairn_mesh_refusals_total{what="unauthorized"}"#.to_owned(),
        r#"cairn_mesh_members_by_state{state="alive"}"#.to_owned(),
        r#"cairn_mesh_members_by_state{state="suspect"}"#.to_owned(),
        r#"cairn_mesh_members_by_state{state="down"}"#.to_owned(),
        "cairn_alarms_due".to_owned(),
        "cairn_shard_led".to_owned(),
        "cairn_shard_followed".to_owned(),
        "cairn_shard_commits_total".to_owned(),
        "cairn_shard_failed_proposals_total".to_owned(),
        "cairn_shard_commit_seconds_count".to_owned(),
        r#"cairn_shard_commit_seconds_bucket{le="+Inf"}"#.to_owned(),
        "cairn_shard_follower_lag_entries".to_owned(),
        "cairn_shard_leader_changes_total".to_owned(),
    ] {
        value(&samples, &name);
    }
    assert_eq!(value(&samples, "cairn_scheduler_workers"), 2.0);
    assert_eq!(value(&samples, "cairn_mesh_members"), 1.0);
    assert!(value(&samples, "cairn_processes") >= 1.0);
    assert!(
        value(&samples, "cairn_storage_map_used_bytes")
            <= value(&samples, "cairn_storage_map_size_bytes")
    );
    node.shutdown();
}

/// An activation, its messages and their commits, an eviction, and a `Full` answer each
/// move their counter.
#[test]
fn counters_move_with_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_millis(200));
    let class = r#"{class="test-counter"}"#;
    let before = scrape(addr.0);
    let activations = format!("cairn_object_activations_total{class}");
    let evictions = format!("cairn_object_evictions_total{class}");
    let handled = format!("cairn_object_handler_seconds_count{class}");
    let held = format!("cairn_object_gate_hold_seconds_count{class}");

    let counter = node.object::<Counter>("a");
    for n in 1..=3 {
        let total = node
            .block_on(counter.call(|r| CounterMsg::AddAndGet(1, r), T))
            .unwrap();
        assert_eq!(total, n);
    }
    let after = scrape(addr.0);
    assert_eq!(
        value(&after, &activations) - value(&before, &activations),
        1.0
    );
    assert_eq!(value(&after, &handled) - value(&before, &handled), 3.0);
    // Each answer waited for its write set.
    assert_eq!(value(&after, &held) - value(&before, &held), 3.0);
    assert!(
        value(&after, "cairn_storage_commits_total")
            >= value(&before, "cairn_storage_commits_total") + 1.0
    );
    assert_eq!(value(&after, &format!("cairn_objects_active{class}")), 1.0);

    // Idle for longer than the idle timeout: evicted.
    let evicted = scrape_until(addr.0, |s| {
        value(s, &evictions) > value(&before, &evictions)
    });
    assert_eq!(
        value(&evicted, &evictions) - value(&before, &evictions),
        1.0
    );

    // A process that never receives, with room for one message.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let stuck = node
        .handle()
        .spawn_opts(
            SpawnOptions {
                mailbox_capacity: Some(1),
                ..SpawnOptions::default()
            },
            move |_ctx: Ctx<u32>| async move {
                let _ = cairn::scheduler::block_on(async { wait.recv() });
            },
        )
        .unwrap();
    let refused_before = value(&scrape(addr.0), "cairn_mailbox_full_refusals_total");
    stuck.try_send(1).unwrap();
    assert!(stuck.try_send(2).is_err());
    let refused = value(&scrape(addr.0), "cairn_mailbox_full_refusals_total");
    assert_eq!(refused - refused_before, 1.0);
    drop(release);
    node.shutdown();
}

/// A second node joins: the first sees it alive, its link's RTT, bytes and frames move
/// with calls it makes, and it is seen down after it leaves.
#[test]
fn mesh_metrics_move_with_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(&dir.path().join("obs1"), Duration::from_secs(30));
    let before = scrape(addr.0);
    assert_eq!(
        value(&before, r#"cairn_mesh_members_by_state{state="alive"}"#),
        0.0
    );
    let seed = node.mesh().unwrap().local_addr();
    let other = Node::builder()
        .workers(2)
        .name("obs2")
        .data_dir(dir.path().join("obs2"))
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure_dev()
        .join([seed])
        .start()
        .unwrap();
    other.host::<Counter>();
    let peer = r#"{peer="obs2"}"#;
    let frames_in = format!("cairn_mesh_received_frames_total{peer}");
    let frames_out = format!("cairn_mesh_sent_frames_total{peer}");
    let bytes_in = format!("cairn_mesh_received_bytes_total{peer}");
    let bytes_out = format!("cairn_mesh_sent_bytes_total{peer}");
    let joined = scrape_until(addr.0, |s| {
        s.get(r#"cairn_mesh_members_by_state{state="alive"}"#) == Some(&1.0)
            && s.contains_key(&frames_in)
    });
    assert_eq!(value(&joined, "cairn_mesh_members"), 2.0);
    assert_eq!(
        value(&joined, r#"cairn_mesh_members_by_state{state="alive"}"#),
        1.0
    );

    // Calls from the new node to objects the first one owns cross the mesh: a request
    // frame in and an answer frame out each.
    let keys: Vec<String> = (0..200)
        .map(|k| format!("k{k}"))
        .filter(|k| other.object::<Counter>(k).owner().ok() == Some(node.id()))
        .take(10)
        .collect();
    assert!(!keys.is_empty(), "no key owned by the first node");
    let before = scrape(addr.0);
    for key in &keys {
        other
            .block_on(
                other
                    .object::<Counter>(key)
                    .call(|r| CounterMsg::AddAndGet(1, r), T),
            )
            .unwrap();
    }
    let after = scrape(addr.0);
    let moved = |name: &str| value(&after, name) - value(&before, name);
    let calls = keys.len() as f64;
    assert!(
        moved(&frames_in) >= calls,
        "{} frames in",
        moved(&frames_in)
    );
    assert!(
        moved(&frames_out) >= calls,
        "{} frames out",
        moved(&frames_out)
    );
    assert!(moved(&bytes_in) > 0.0 && moved(&bytes_out) > 0.0);
    assert!(value(&after, &format!("cairn_mesh_rtt_seconds{peer}")) > 0.0);

    // It leaves: seen down (or forgotten), no longer alive.
    other.shutdown();
    let left = scrape_until(addr.0, |s| {
        s.get(r#"cairn_mesh_members_by_state{state="alive"}"#) == Some(&0.0)
    });
    assert_eq!(
        value(&left, r#"cairn_mesh_members_by_state{state="alive"}"#),
        0.0
    );
    assert_eq!(value(&left, "cairn_mesh_members"), 1.0);
    node.shutdown();
}

/// A one-node cluster leads every shard; its writes move the shard commit counter and
/// histogram, and `status.json` maps every shard to this node.
#[test]
fn shard_metrics_move_with_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    // The first write waits for its shard's election; after it, every shard elects itself.
    node.block_on(
        node.object::<Counter>("warm")
            .call(|r| CounterMsg::AddAndGet(1, r), T),
    )
    .unwrap();
    let shards = 128.0;
    let before = scrape_until(addr.0, |s| value(s, "cairn_shard_led") == shards);
    assert_eq!(value(&before, "cairn_shard_led"), shards);
    assert_eq!(value(&before, "cairn_shard_followed"), 0.0);
    assert!(value(&before, "cairn_shard_leader_changes_total") >= shards);
    assert_eq!(value(&before, "cairn_shard_follower_lag_entries"), 0.0);

    for i in 0..5 {
        node.block_on(
            node.object::<Counter>(&format!("w{i}"))
                .call(|r| CounterMsg::AddAndGet(1, r), T),
        )
        .unwrap();
    }
    let after = scrape(addr.0);
    let moved = |name: &str| value(&after, name) - value(&before, name);
    assert!(moved("cairn_shard_commits_total") >= 5.0);
    assert!(moved("cairn_shard_commit_seconds_count") >= 5.0);
    assert!(moved("cairn_shard_commit_seconds_sum") > 0.0);
    assert_eq!(moved("cairn_shard_failed_proposals_total"), 0.0);

    let (_, _, body) = request(addr.0, "GET", "/cairn/status.json");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sh = &s["shards"];
    assert_eq!(sh["count"], 128);
    assert_eq!(sh["led"], 128);
    assert!(sh["commits"].as_u64().unwrap() >= 6);
    let map = sh["map"].as_array().unwrap();
    assert_eq!(map.len(), 128);
    let me = node.id().to_string();
    for (i, shard) in map.iter().enumerate() {
        assert_eq!(shard["shard"], i as u64);
        assert_eq!(shard["role"], "leader");
        assert_eq!(shard["leader"], me.as_str());
        assert_eq!(shard["voters"], serde_json::json!([me.as_str()]));
    }
    node.shutdown();
}

/// `status.json` has the documented fields with the node's live figures.
#[test]
fn status_json_describes_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    node.block_on(
        node.object::<Counter>("x")
            .call(|r| CounterMsg::AddAndGet(5, r), T),
    )
    .unwrap();
    let (status, headers, body) = request(addr.0, "GET", "/cairn/status.json");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["name"], "obs1");
    assert_eq!(s["node"], node.id().to_string());
    assert!(s["time_ms"].as_u64().unwrap() > 0);
    assert_eq!(s["scheduler"]["workers"], 2);
    assert!(s["scheduler"]["processes"].as_u64().unwrap() >= 1);
    assert!(s["scheduler"]["spawns"].as_u64().unwrap() >= 1);
    assert!(s["scheduler"]["exits"]["normal"].is_u64());
    assert!(s["storage"]["commits"].as_u64().unwrap() >= 1);
    assert!(s["storage"]["map_size"].as_u64().unwrap() > 0);
    assert!(s["rss_bytes"].as_u64().unwrap() > 0);
    let counter = &s["objects"]["test-counter"];
    assert_eq!(counter["active"], 1);
    assert_eq!(counter["activations"], 1);
    assert_eq!(counter["handler_count"], 1);
    let members = s["mesh"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["name"], "obs1");
    assert_eq!(members[0]["self"], true);
    node.shutdown();
}

/// The dashboard and its vendored assets are served; other pages are 404, other methods 405.
#[test]
fn the_dashboard_and_its_assets_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let (status, headers, page) = request(addr.0, "GET", "/cairn/dashboard");
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/html"));
    for asset in [
        "/cairn/assets/dashboard.js",
        "/cairn/assets/uPlot.iife.min.js",
        "/cairn/assets/uPlot.min.css",
    ] {
        let file = asset.rsplit('/').next().unwrap();
        assert!(page.contains(file), "the page does not load {file}");
        let (status, _, body) = request(addr.0, "GET", asset);
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty());
    }
    let (status, _, licence) = request(addr.0, "GET", "/cairn/assets/uPlot.LICENSE");
    assert_eq!(status, 200);
    assert!(licence.contains("MIT License"));
    assert_eq!(request(addr.0, "GET", "/cairn/nothing").0, 404);
    assert_eq!(request(addr.0, "GET", "/other/metrics").0, 404);
    assert_eq!(request(addr.0, "POST", "/cairn/metrics").0, 405);
    node.shutdown();
}

/// A worker that ignores its messages.
struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }
}

fn status(addr: SocketAddr) -> serde_json::Value {
    let (code, _, body) = request(addr, "GET", "/cairn/status.json");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// The root supervisor registered as `name` in a status document.
fn root_named<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["supervisors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sv| sv["name"] == name)
        .unwrap_or_else(|| panic!("no root supervisor {name} in {s}"))
}

fn child<'a>(sv: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    sv["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no child {id} in {sv}"))
}

fn start_root(node: &Node, name: &str, spec: SupervisorSpec) -> SupervisorRef {
    let opts = StartOptions {
        name: Some(name.to_owned()),
        ..StartOptions::default()
    };
    node.block_on(Supervisor::start_with(node.handle(), spec, opts))
        .unwrap()
}

/// status.json lists a supervision tree (strategy, children with ids, names and pids, the
/// sub-supervisor's own tree), and a killed child's restart shows: its count and its
/// supervisor's move from 0 to 1 and it has a new pid.
#[test]
fn status_json_shows_supervision_trees_and_a_kill_moves_the_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let pool = SupervisorSpec::new(Strategy::RestForOne)
        .child(ChildSpec::worker("w1", || Idle))
        .child(ChildSpec::worker("w2", || Idle));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(ChildSpec::worker("victim", || Idle).named("obs-victim"))
        .child(ChildSpec::supervisor("pool", pool));
    let _root = start_root(&node, "obs-root", spec);
    let victim_pid = node.whereis("obs-victim").unwrap();

    let s = status(addr.0);
    let root = root_named(&s, "obs-root");
    assert_eq!(root["busy"], false, "{root}");
    assert_eq!(root["strategy"], "one_for_one");
    assert_eq!(root["dynamic"], false);
    assert_eq!(root["max_restarts"], 5);
    assert_eq!(root["period_ms"], 10_000);
    assert_eq!(root["restarts"], 0);
    assert_eq!(root["children_total"], 2);
    let victim = child(root, "victim");
    assert_eq!(victim["kind"], "worker");
    assert_eq!(victim["restart"], "permanent");
    assert_eq!(victim["name"], "obs-victim");
    assert_eq!(victim["pid"], victim_pid.to_string());
    assert_eq!(victim["restarts"], 0);
    assert!(victim["supervisor"].is_null());
    let pool = child(root, "pool");
    assert_eq!(pool["kind"], "supervisor");
    assert_eq!(pool["supervisor"]["strategy"], "rest_for_one");
    assert_eq!(pool["supervisor"]["pid"], pool["pid"]);
    for id in ["w1", "w2"] {
        assert!(child(&pool["supervisor"], id)["pid"].is_string());
    }

    node.handle().kill(victim_pid);
    let deadline = Instant::now() + T;
    let after = loop {
        let s = status(addr.0);
        let root = root_named(&s, "obs-root").clone();
        if child(&root, "victim")["restarts"] == 1 {
            break root;
        }
        assert!(Instant::now() < deadline, "the kill never showed: {root}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(after["restarts"], 1, "{after}");
    let victim = child(&after, "victim");
    assert!(victim["pid"].is_string(), "{victim}");
    assert_ne!(victim["pid"], victim_pid.to_string());
    assert_eq!(child(&after, "pool")["restarts"], 0);
    assert_eq!(child(&after, "pool")["supervisor"]["restarts"], 0);
    node.shutdown();
}

/// A supervisor with more children than are listed shows MAX_CHILDREN of them and the
/// total; a tree deeper than MAX_DEPTH is walked MAX_DEPTH levels, below which a
/// supervisor child is listed without its tree.
#[test]
fn status_json_bounds_the_trees() {
    use cairn::observe::status::{MAX_CHILDREN, MAX_DEPTH};
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let wide = start_root(&node, "obs-wide", DynamicSupervisor::spec());
    for i in 0..MAX_CHILDREN + 5 {
        node.block_on(wide.start_child(ChildSpec::worker(format!("w{i}"), || Idle)))
            .unwrap();
    }
    let mut spec =
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker("leaf", || Idle));
    for level in (2..=MAX_DEPTH + 3).rev() {
        spec = SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::supervisor(format!("l{level}"), spec));
    }
    let _deep = start_root(&node, "obs-deep", spec);

    let s = status(addr.0);
    let wide = root_named(&s, "obs-wide");
    assert_eq!(wide["dynamic"], true);
    assert_eq!(wide["children_total"], MAX_CHILDREN + 5);
    assert_eq!(wide["children"].as_array().unwrap().len(), MAX_CHILDREN);

    let mut sv = root_named(&s, "obs-deep");
    let mut levels = 1;
    while !sv["children"][0]["supervisor"].is_null() {
        sv = &sv["children"][0]["supervisor"];
        levels += 1;
    }
    assert_eq!(levels, MAX_DEPTH, "{s}");
    let cut = &sv["children"][0];
    assert_eq!(cut["kind"], "supervisor", "{cut}");
    assert!(cut["pid"].is_string(), "{cut}");
    assert!(s["supervisors_total"].as_u64().unwrap() >= (1 + MAX_DEPTH + 2) as u64);
    node.shutdown();
}

/// One object driven ten times as hard as three others is first among the hottest objects,
/// with its messages counted; keys never appear in the metrics.
#[test]
fn the_hottest_object_is_first_in_status_json() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let hot = node.object::<Counter>("hot");
    let warm: Vec<_> = (0..3)
        .map(|i| node.object::<Counter>(&format!("warm{i}")))
        .collect();
    // 1,280 reads of `hot` (20 reports to the table, one every 64th), and 142 or 143 of
    // each warm object (2 reports each), interleaved.
    node.block_on(async {
        for i in 0..1_280usize {
            hot.call(CounterMsg::Get, T).await.unwrap();
            if i % 3 == 0 {
                warm[(i / 3) % 3].call(CounterMsg::Get, T).await.unwrap();
            }
        }
    });
    let s = status(addr.0);
    let list = s["hot_objects"].as_array().unwrap();
    assert!(list.len() <= cairn::observe::status::HOT_SHOWN, "{s}");
    assert_eq!(list[0]["key"], "hot", "{s}");
    assert_eq!(list[0]["class"], "test-counter");
    assert_eq!(list[0]["messages"], 1_280);
    let rate = list[0]["rate"].as_f64().unwrap();
    for i in 0..3 {
        let w = list
            .iter()
            .find(|h| h["key"] == format!("warm{i}").as_str())
            .unwrap_or_else(|| panic!("warm{i} not listed: {s}"));
        assert_eq!(w["messages"], 128);
        assert!(rate > 5.0 * w["rate"].as_f64().unwrap(), "{s}");
    }
    let (_, _, metrics) = request(addr.0, "GET", "/cairn/metrics");
    assert!(!metrics.contains("warm0"), "a key in a metric label");
    node.shutdown();
}

/// `GET /metrics` (Prometheus' default path) is the same page as `/cairn/metrics`, on the
/// pages' own port (`cairn-node run --metrics`) and on the node's HTTP port beside its
/// objects; the alias is that exact path only.
#[test]
fn slash_metrics_is_served_on_the_pages_port_and_the_http_port() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pages) = node_with_pages_of(dir.path(), Duration::from_secs(30), |b| {
        b.insecure_dev().http("127.0.0.1:0".parse().unwrap())
    });
    let http = node.http_addr().expect("the node's HTTP port");
    for at in [pages.0, http] {
        for path in ["/metrics", "/metrics?name[]=cairn_processes"] {
            let (status, headers, body) = request(at, "GET", path);
            assert_eq!(status, 200, "{path} on {at}: {body}");
            assert!(
                headers["content-type"].starts_with("application/openmetrics-text"),
                "{path} on {at}: {headers:?}"
            );
            let samples = parse_openmetrics(&body);
            assert_eq!(value(&samples, "cairn_scheduler_workers"), 2.0);
            value(&samples, "cairn_storage_fsync_seconds_count");
        }
        assert_eq!(request(at, "GET", "/cairn/metrics").0, 200, "{at}");
        assert_eq!(request(at, "POST", "/metrics").0, 405, "{at}");
        for other in ["/metricsx", "/metrics/", "/metrics/more", "/other"] {
            assert_eq!(request(at, "GET", other).0, 404, "{other} on {at}");
        }
    }
    node.shutdown();
}

/// The fsync histogram takes one observation per LMDB commit (as many as the commit
/// histogram), each within its commit (so its sum is at most the commit sum), and moves
/// with acknowledged writes: each waited for at least one flush of its own.
#[test]
fn the_fsync_histogram_moves_with_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let fsyncs = "cairn_storage_fsync_seconds_count";
    let commits = "cairn_storage_commit_seconds_count";
    // Both are read from one snapshot, but a commit records its flush first: wait for the
    // two to agree (no commit half-recorded) before comparing.
    let settled = |s: &HashMap<String, f64>| value(s, fsyncs) == value(s, commits);
    let before = scrape_until(addr.0, settled);
    const WRITES: u64 = 5;
    for i in 0..WRITES {
        let total = node
            .block_on(
                node.object::<Counter>(&format!("f{i}"))
                    .call(|r| CounterMsg::AddAndGet(1, r), T),
            )
            .unwrap();
        assert_eq!(total, 1);
    }
    let after = scrape_until(addr.0, settled);
    let moved = |name: &str| value(&after, name) - value(&before, name);
    assert!(moved(fsyncs) >= WRITES as f64, "{} flushes", moved(fsyncs));
    assert_eq!(moved(fsyncs), moved(commits));
    assert_eq!(
        value(&after, r#"cairn_storage_fsync_seconds_bucket{le="+Inf"}"#),
        value(&after, fsyncs)
    );
    assert!(
        value(&after, "cairn_storage_fsync_seconds_sum")
            <= value(&after, "cairn_storage_commit_seconds_sum")
    );
    let s = status(addr.0);
    assert_eq!(
        s["storage"]["fsync_count"].as_f64().unwrap(),
        s["storage"]["commit_count"].as_f64().unwrap(),
        "{s}"
    );
    node.shutdown();
}

/// Parks, steals and the run-queue depth move: idle workers park after each scrape wakes
/// them; children spawned by one busy process are stolen by the other worker; with both
/// workers blocked, processes spawned meanwhile wait in the run queue (read through
/// `Node::metrics`, since serving the page needs a worker).
#[test]
fn scheduler_counters_move_with_work() {
    use std::sync::mpsc::channel;
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages(dir.path(), Duration::from_secs(30));
    let parks = "cairn_scheduler_parks_total";
    let steals = "cairn_scheduler_steals_total";
    let before = scrape(addr.0);
    let parked = scrape_until(addr.0, |s| value(s, parks) > value(&before, parks));
    assert!(value(&parked, parks) > value(&before, parks));

    // One process spawns busy children onto its worker's spawn stack; the other worker,
    // woken for them, steals from it.
    const CHILDREN: usize = 64;
    let (done, finished) = channel::<()>();
    node.handle().spawn(move |ctx: Ctx<()>| async move {
        for _ in 0..CHILDREN {
            let done = done.clone();
            ctx.handle().spawn(move |_ctx: Ctx<()>| async move {
                // Work that holds its worker, as a computation would.
                std::thread::sleep(Duration::from_millis(2));
                let _ = done.send(());
            });
        }
    });
    for _ in 0..CHILDREN {
        finished.recv_timeout(T).unwrap();
    }
    let after = scrape(addr.0);
    assert!(
        value(&after, steals) > value(&before, steals),
        "no steal: {} before, {} after",
        value(&before, steals),
        value(&after, steals)
    );

    // Both workers blocked: the first blocker spawns the second onto its own spawn stack
    // (the other worker, woken for it, steals it) before it blocks.
    let (blocked, all_blocked) = channel::<()>();
    let (release_first, wait_first) = channel::<()>();
    let (release_second, wait_second) = channel::<()>();
    node.handle().spawn(move |ctx: Ctx<()>| async move {
        let second = blocked.clone();
        ctx.handle().spawn(move |_ctx: Ctx<()>| async move {
            let _ = second.send(());
            let _ = wait_second.recv();
        });
        let _ = blocked.send(());
        let _ = wait_first.recv();
    });
    for _ in 0..2 {
        all_blocked.recv_timeout(T).unwrap();
    }
    const QUEUED: usize = 20;
    for _ in 0..QUEUED {
        node.handle().spawn(|_ctx: Ctx<()>| async {});
    }
    let queued = parse_openmetrics(&node.metrics().encode());
    let depth = value(&queued, "cairn_run_queue_depth");
    drop((release_first, release_second));
    assert!(depth >= QUEUED as f64, "run queue depth {depth}");
    let drained = scrape_until(addr.0, |s| {
        value(s, "cairn_run_queue_depth") < QUEUED as f64
    });
    assert!(value(&drained, "cairn_run_queue_depth") < QUEUED as f64);
    node.shutdown();
}

/// What a [`FailingAlarm`] takes.
#[derive(serde::Serialize, serde::Deserialize)]
enum FailingMsg {
    /// Sets the alarm to now; answers once it is stored.
    SetNow(Reply<()>),
    /// Answers the alarm as the object sees it.
    GetAlarm(Reply<Option<SystemTime>>),
}

/// Per key: deliveries of [`FailingAlarm`]'s alarm so far, and whether the first may end.
fn alarm_probes() -> &'static std::sync::Mutex<HashMap<String, (u32, bool)>> {
    static PROBES: std::sync::OnceLock<std::sync::Mutex<HashMap<String, (u32, bool)>>> =
        std::sync::OnceLock::new();
    PROBES.get_or_init(Default::default)
}

/// An object whose alarm always fails; the first delivery waits until the test lets it go
/// on ([`alarm_probes`]).
struct FailingAlarm;

impl Object for FailingAlarm {
    const CLASS: &'static str = "obs-failing-alarm";
    type Msg = FailingMsg;

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(FailingAlarm)
    }

    async fn handle(
        &mut self,
        msg: FailingMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            FailingMsg::SetNow(reply) => {
                ctx.storage().set_alarm(SystemTime::now())?;
                let _ = reply.send(());
            }
            FailingMsg::GetAlarm(reply) => {
                let _ = reply.send(ctx.storage().get_alarm()?);
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        let first = {
            let mut probes = alarm_probes().lock().unwrap();
            let probe = probes.entry(ctx.key().to_owned()).or_default();
            probe.0 += 1;
            probe.0 == 1
        };
        while first && !alarm_probes().lock().unwrap()[ctx.key()].1 {
            ctx.handle().sleep(Duration::from_millis(5)).await;
        }
        Err("this alarm always fails".into())
    }
}

/// Deliveries of `key`'s alarm so far.
fn alarm_deliveries(key: &str) -> u32 {
    alarm_probes().lock().unwrap().get(key).map_or(0, |p| p.0)
}

/// Sets `key`'s alarm on `node` and checks the alarm families: the alarm is due while its
/// first delivery runs (fired 1); let go, it fails, is retried twice and given up: fired
/// 3, retried 2, given up 1, and nothing due after.
fn check_a_failing_alarm(node: &Node, addr: SocketAddr, key: &str) {
    let class = r#"{class="obs-failing-alarm"}"#;
    let fired = format!("cairn_alarms_fired_total{class}");
    let retried = format!("cairn_alarms_retried_total{class}");
    let given_up = format!("cairn_alarms_given_up_total{class}");
    node.block_on(node.object::<FailingAlarm>(key).call(FailingMsg::SetNow, T))
        .unwrap();
    let deadline = Instant::now() + T;
    while alarm_deliveries(key) == 0 {
        assert!(Instant::now() < deadline, "the alarm was never delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Still stored, so still due, while it runs (its deletion is not committed before the
    // handler ends).
    let running = scrape(addr);
    assert_eq!(value(&running, "cairn_alarms_due"), 1.0);
    assert_eq!(value(&running, &fired), 1.0);
    assert_eq!(value(&running, &retried), 0.0);
    assert_eq!(value(&running, &given_up), 0.0);

    alarm_probes().lock().unwrap().get_mut(key).unwrap().1 = true;
    let gave_up = scrape_until(addr, |s| value(s, &given_up) == 1.0);
    assert_eq!(value(&gave_up, &given_up), 1.0);
    assert_eq!(value(&gave_up, &fired), 3.0);
    assert_eq!(value(&gave_up, &retried), 2.0);
    assert_eq!(alarm_deliveries(key), 3);
    let done = scrape_until(addr, |s| value(s, "cairn_alarms_due") == 0.0);
    assert_eq!(
        value(&done, "cairn_alarms_due"),
        0.0,
        "the given-up alarm is still stored"
    );
    let left = node
        .block_on(
            node.object::<FailingAlarm>(key)
                .call(FailingMsg::GetAlarm, T),
        )
        .unwrap();
    assert_eq!(left, None, "the given-up alarm is still set");
}

/// The alarm families move with a failing alarm of a local node's object.
#[test]
fn alarm_metrics_move_with_a_failing_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .workers(2)
        .name("obs1")
        .data_dir(dir.path())
        .alarm_retries(Duration::from_millis(20), 2)
        .start()
        .unwrap();
    node.host::<FailingAlarm>();
    let pages = cairn::observe::serve(&node, "127.0.0.1:0".parse().unwrap()).unwrap();
    check_a_failing_alarm(&node, pages.local_addr().unwrap(), "local");
    node.shutdown();
}

/// The same with a replicated object (a one-node mesh): its alarm changes travel in Raft
/// entries, where the give-up's deletion of the alarm was once lost (the object still saw
/// its alarm after `alarms_given_up` moved, and it was delivered again 30 s later).
#[test]
fn alarm_metrics_move_with_a_replicated_objects_failing_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_pages_of(dir.path(), Duration::from_secs(30), |b| {
        b.insecure_dev().alarm_retries(Duration::from_millis(20), 2)
    });
    node.host::<FailingAlarm>();
    check_a_failing_alarm(&node, addr.0, "replicated");
    node.shutdown();
}

/// `cairn_alarms_due` is counted at scrape time. The alarm process is held inside a
/// delivery (the named process's `wrap` blocks until the test lets it go), so it scans no
/// more; meanwhile an alarm committed due by a plain keyspace (no wake-up), one falling due
/// by the clock alone, and deletions each show at the very next scrape. A figure kept by
/// the alarm process's last scan stays at 1 throughout.
#[test]
fn alarms_due_is_counted_at_scrape_time_not_at_the_alarm_processs_last_scan() {
    use std::sync::mpsc::channel;
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let start = SystemTime::now();
    let clock = cairn::object::WallClock::manual(start);
    let node = Node::builder()
        .workers(2)
        .name("obs1")
        .data_dir(dir.path())
        .wall_clock(clock.clone())
        .start()
        .unwrap();
    let pages = cairn::observe::serve(&node, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = pages.local_addr().unwrap();
    let due = || value(&scrape(addr), "cairn_alarms_due");
    assert_eq!(due(), 0.0);

    let held = node.keyspace("obs-held").unwrap();
    held.set_alarm(start - Duration::from_secs(1)).unwrap();
    held.sync().unwrap();
    let (entered_tx, entered_rx) = channel();
    let (release_tx, release_rx) = channel::<()>();
    let release_rx = Mutex::new(release_rx);
    node.spawn_named("obs-held", move |mut ctx: Ctx<SystemTime>| async move {
        ctx.receive_alarms_as(move |at| {
            let _ = entered_tx.send(());
            // Holds the alarm process (on its worker) until the test lets go or is gone.
            let _ = release_rx.lock().unwrap().recv();
            at
        })
        .unwrap();
        while ctx.recv().await.is_some() {}
    })
    .unwrap();
    entered_rx
        .recv_timeout(T)
        .expect("the alarm process delivers the held alarm");
    assert_eq!(due(), 1.0);

    // Committed due by a keyspace's own commit, which wakes no one.
    let plain = node.keyspace("obs-plain").unwrap();
    plain.set_alarm(start - Duration::from_secs(1)).unwrap();
    plain.sync().unwrap();
    assert_eq!(due(), 2.0, "an alarm committed due is not counted");
    // Set for later, then due by the clock alone.
    let later = node.keyspace("obs-later").unwrap();
    later.set_alarm(start + Duration::from_secs(3600)).unwrap();
    later.sync().unwrap();
    assert_eq!(due(), 2.0, "an alarm not yet due is counted");
    clock.advance(Duration::from_secs(7200));
    assert_eq!(due(), 3.0, "an alarm due by the clock is not counted");
    // Deleted, all three.
    for ks in [&held, &plain, &later] {
        ks.delete_alarm().unwrap();
        ks.sync().unwrap();
    }
    assert_eq!(due(), 0.0, "deleted alarms are still counted");
    drop(release_tx);
    node.shutdown();
}

/// A peer holding another CA's certificate is refused at the TLS handshake, and that
/// refusal is counted (`reason="handshake"`), not only duplicate connections.
#[test]
fn a_peer_of_another_ca_is_a_refused_handshake() {
    let dir = tempfile::tempdir().unwrap();
    for ca in ["ca1", "ca2"] {
        cairn::net::ClusterCa::generate()
            .unwrap()
            .save(&dir.path().join(ca))
            .unwrap();
    }
    let ca1 = dir.path().join("ca1");
    let (node, addr) = node_with_pages_of(&dir.path().join("obs1"), Duration::from_secs(30), |b| {
        b.cluster(ca1)
    });
    let refused = r#"cairn_mesh_refused_handshakes_total{reason="handshake"}"#;
    assert_eq!(value(&scrape(addr.0), refused), 0.0);
    let seed = node.mesh().unwrap().local_addr();
    let stranger = Node::builder()
        .workers(1)
        .name("stranger")
        .data_dir(dir.path().join("stranger"))
        .cluster(dir.path().join("ca2"))
        .listen("127.0.0.1:0".parse().unwrap())
        .join([seed])
        .start();
    let after = scrape_until(addr.0, |s| value(s, refused) >= 1.0);
    assert!(value(&after, refused) >= 1.0, "{after:?}");
    assert_eq!(value(&after, "cairn_mesh_members"), 1.0);
    assert_eq!(
        value(&after, r#"cairn_mesh_members_by_state{state="alive"}"#),
        0.0
    );
    if let Ok(stranger) = stranger {
        stranger.shutdown();
    }
    node.shutdown();
}

/// The samples of the mesh's two refusal families (`cairn_mesh_refusals_total{what}`,
/// `cairn_mesh_refused_handshakes_total{reason}`) in `samples`, sorted.
fn refusal_samples(samples: &HashMap<String, f64>) -> std::collections::BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(name, _)| {
            name.starts_with("cairn_mesh_refusals_total{")
                || name.starts_with("cairn_mesh_refused_handshakes_total{")
        })
        .map(|(name, v)| (name.clone(), *v))
        .collect()
}

/// Whether the node closed `conn` as busy (too many connections waiting for a hello).
fn closed_busy(conn: &cairn::net::Connection) -> bool {
    conn.peer_close_code() == Some(cairn::net::mesh::wire::CLOSE_BUSY)
}

/// An endpoint on `rt` dialing with a certificate named `name` issued by `issuer`, trusting
/// `root`'s nodes.
fn raw_endpoint(
    rt: &cairn::scheduler::Runtime,
    root: &cairn::net::ClusterCa,
    issuer: &cairn::net::ClusterCa,
    name: &str,
) -> cairn::net::Endpoint {
    let tls = cairn::net::TlsConfig::new(root.cert_der().clone(), issuer.issue(name).unwrap());
    cairn::net::Endpoint::bind(&rt.handle(), "127.0.0.1:0".parse().unwrap(), &tls).unwrap()
}

/// Refusals provoked over the wire show in `/cairn/metrics` by exactly what was provoked,
/// and no other refusal moves: a certificate of another CA dials twice (`reason=
/// "handshake"` +2), a revoked certificate of the cluster's CA dials once (`reason=
/// "revoked"` +1), a member's certificate opens a fifth connection while four wait for
/// their hello (`reason="busy"` +1), and a member speaking the wire protocol by hand
/// (valid certificate, proper hello) sends three membership syncs nobody asked for
/// (`what="unrequested_sync"` +3).
#[test]
fn refusals_provoked_by_rogue_peers_are_scraped_by_exactly_their_count() {
    use cairn::net::mesh::wire::{Bytes, Hello, Wire, MESH_LANE};
    use cairn::net::ClusterCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&dir.path().join("ca")).unwrap();
    let other_ca = ClusterCa::generate().unwrap();
    let revoked = ca.issue("rogue-revoked").unwrap();
    let list = dir.path().join("revoked.txt");
    std::fs::write(&list, format!("{}\n", revoked.identity().unwrap().serial)).unwrap();
    let ca_dir = dir.path().join("ca");
    let (node, addr) = node_with_pages_of(&dir.path().join("obs1"), Duration::from_secs(30), |b| {
        b.cluster(ca_dir).revoked(list)
    });
    let mesh = node.mesh().unwrap();
    let (seed, server) = (mesh.local_addr(), mesh.name().to_owned());
    let before = refusal_samples(&scrape(addr.0));
    assert!(before.len() >= 15, "{before:?}");

    let rt = cairn::scheduler::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let dial = |endpoint: &cairn::net::Endpoint| {
        let (endpoint, server) = (endpoint.clone(), server.clone());
        rt.block_on(rt.timeout(T, async move { endpoint.connect(seed, &server).await }))
            .expect("the dial ends in time")
    };
    // Another CA's certificate: refused in the handshake, once per dial.
    let stranger = raw_endpoint(&rt, &ca, &other_ca, "stranger");
    for _ in 0..2 {
        let _refused = dial(&stranger);
    }
    // A revoked certificate: handshaken, then closed before its hello.
    let revoked = {
        let tls = cairn::net::TlsConfig::new(ca.cert_der().clone(), revoked);
        cairn::net::Endpoint::bind(&rt.handle(), "127.0.0.1:0".parse().unwrap(), &tls).unwrap()
    };
    let _closed = dial(&revoked).expect("the TLS handshake of a revoked certificate succeeds");
    // A member's certificate dials silent connections (no lane, no hello) until one is
    // refused as busy: at most four of one certificate wait for their hello at once.
    let silent = raw_endpoint(&rt, &ca, &ca, "rogue-silent");
    let mut held: Vec<cairn::net::Connection> = Vec::new();
    loop {
        let conn = dial(&silent).expect("a member's certificate is handshaken");
        let refused = common::poll_for("the node to take or refuse the connection", T, || {
            if closed_busy(&conn) {
                return Some(true);
            }
            // (One that waited past the connect timeout was closed, uncounted: still open
            // are the ones the node holds.)
            let open = 1 + held
                .iter()
                .filter(|c| c.quinn().close_reason().is_none())
                .count();
            (mesh.stats().pending_hellos as usize == open).then_some(false)
        });
        if refused {
            break;
        }
        held.push(conn);
        assert!(held.len() < 20, "20 silent connections and none refused");
    }
    // A member that says its hello, then sends syncs nobody asked for.
    let name = "rogue-syncer";
    let rogue = raw_endpoint(&rt, &ca, &ca, name);
    let listen = rogue.local_addr().unwrap();
    let conn = dial(&rogue).expect("the rogue member connects");
    let lanes = {
        let conn = conn.clone();
        rt.block_on(rt.timeout(T, async move {
            let mut tx = conn.open_lane(MESH_LANE).await.unwrap();
            tx.send(&Wire::Hello(Hello {
                node: NodeId::of_name(name),
                incarnation: 1,
                listen,
                name: name.to_owned(),
                peers: Vec::new(),
            }))
            .await
            .unwrap();
            let mut rx = conn.accept_lane().await.unwrap();
            match rx.recv::<Wire>().await.unwrap() {
                Some(Wire::HelloAck(_)) => {}
                other => panic!("expected a hello ack, got {other:?}"),
            }
            for _ in 0..3 {
                tx.send(&Wire::Sync {
                    members: Bytes(rmp_serde::to_vec(&Vec::<u8>::new()).unwrap()),
                    names: Vec::new(),
                })
                .await
                .unwrap();
            }
            (tx, rx)
        }))
        .expect("the rogue member's hello and syncs in time")
    };

    let mut expected = before.clone();
    for (sample, by) in [
        (
            r#"cairn_mesh_refused_handshakes_total{reason="handshake"}"#,
            2.0,
        ),
        (
            r#"cairn_mesh_refused_handshakes_total{reason="revoked"}"#,
            1.0,
        ),
        (r#"cairn_mesh_refused_handshakes_total{reason="busy"}"#, 1.0),
        (r#"cairn_mesh_refusals_total{what="unrequested_sync"}"#, 3.0),
    ] {
        *expected
            .get_mut(sample)
            .unwrap_or_else(|| panic!("no {sample}")) += by;
    }
    let after = scrape_until(addr.0, |s| refusal_samples(s) == expected);
    assert_eq!(refusal_samples(&after), expected);
    // Nothing more arrives late.
    let again = refusal_samples(&scrape(addr.0));
    assert_eq!(again, expected);
    drop((lanes, conn, held));
    rt.shutdown();
    node.shutdown();
}

/// A three-node cluster (4 shards, 3 replicas each) with one node cut off: writes still
/// commit on the other two, and the leader of a shard they write to reports the cut-off
/// follower's lag (`cairn_shard_follower_lag_entries` > 0); 0 before the cut.
#[test]
fn follower_lag_shows_a_cut_off_follower() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    cairn::net::ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    const SHARDS: u32 = 4;
    let start = |name: &str, join: Option<SocketAddr>| {
        let mut b = Node::builder()
            .name(name)
            .workers(2)
            .data_dir(dir.path().join(name))
            .cluster(dir.path().join("cluster"))
            .shards(cairn::ShardConfig {
                shards: SHARDS,
                replication: 3,
                ..cairn::ShardConfig::default()
            })
            .listen("127.0.0.1:0".parse().unwrap());
        if let Some(seed) = join {
            b = b.join([seed]);
        }
        let node = b.start().unwrap();
        node.host::<Counter>();
        node
    };
    let a = start("lag-a", None);
    let seed = a.mesh().unwrap().local_addr();
    let b = start("lag-b", Some(seed));
    let c = start("lag-c", Some(seed));
    let nodes = [&a, &b, &c];
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes
        .iter()
        .any(|n| n.block_on(n.shards_fully_replicated()) < SHARDS)
    {
        assert!(
            Instant::now() < deadline,
            "the shards never got 3 replicas each"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lag = |n: &Node| {
        value(
            &parse_openmetrics(&n.metrics().encode()),
            "cairn_shard_follower_lag_entries",
        )
    };
    // Caught up: a write through every shard, then no lag anywhere.
    for i in 0..16 {
        a.block_on(
            a.object::<Counter>(&format!("l{i}"))
                .call(|r| CounterMsg::AddAndGet(1, r), T),
        )
        .unwrap();
    }
    let deadline = Instant::now() + T;
    while nodes.iter().any(|n| lag(n) != 0.0) {
        assert!(Instant::now() < deadline, "followers never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }

    let port = |n: &Node| n.mesh().unwrap().local_addr().port();
    let cut = cairn::net::faults::Partition::new(&[port(&c)], &[port(&a), port(&b)]);
    // Keep writing through `a` (shards led by `c` stall until `a` and `b` elect a leader
    // of their own; their calls time out and are not counted).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let refs: Vec<_> = (0..16)
            .map(|i| a.object::<Counter>(&format!("l{i}")))
            .collect();
        let handle = a.handle().clone();
        std::thread::spawn(move || {
            let mut acked = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for r in &refs {
                    let call = r.call(
                        |reply| CounterMsg::AddAndGet(1, reply),
                        Duration::from_secs(2),
                    );
                    if cairn::scheduler::block_on(handle.timeout(Duration::from_secs(3), call))
                        .is_ok_and(|answer| answer.is_ok())
                    {
                        acked += 1;
                    }
                }
            }
            acked
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let lagging = loop {
        let seen = [lag(&a), lag(&b)];
        if seen.iter().any(|&l| l > 0.0) {
            break seen;
        }
        assert!(Instant::now() < deadline, "no follower lag seen");
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(acked > 0, "no write committed without the cut-off node");
    assert!(lagging.iter().any(|&l| l > 0.0), "{lagging:?}");
    drop(cut);
    for n in nodes {
        n.shutdown();
    }
}
