//! The dashboard in a real browser: headless Chromium, driven over the DevTools protocol,
//! keeps n1's `/cairn/dashboard` open on a 3-node mesh under load. n1 and n2 run in this
//! process; n3 is a `cairn-node run` child (its own data dir, a free port). The page shows the
//! three members with their regions and exact incarnations, a link between every two nodes
//! that talk (n2–n3 included, which does not involve n1), the shard map with the leaders n1
//! reports, n1's supervision tree (collapsed, then expanded with a crashed child's restart),
//! a busy object at the top of the hottest objects, and charts with data points. Then n3 is
//! killed (SIGKILL): the page must show it down within the failure-detection bound (the
//! failure timeout, README "Membership") plus [`PAGE_MARGIN`], measured from the kill, and
//! then every shard led by n1 or n2, with a leader move away from n3 in its list of moves.
//! A full-page screenshot is left at `target/dashboard.png` (the README's picture).
//!
//! Needs `chromium` (Debian's package; `.ci/run` installs it).

#[path = "common/browser.rs"]
mod browser;
#[path = "../src/bin/cairn-node/demo/counter.rs"]
mod counter;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use browser::Browser;
use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::supervisor::{
    Actor, ActorCtx, ChildSpec, StartOptions, Strategy, Supervisor, SupervisorRef, SupervisorSpec,
};
use counter::{Counter, CounterMsg};
use serde_json::{json, Value};

/// Bound on every wait but the two below.
const T: Duration = Duration::from_secs(30);
/// Every node's failure timeout. The README (section "Membership") states that a killed node
/// is declared down within it; SWIM's probe RTT is a 25th of it, 120 ms, slack enough for
/// three debug nodes and a browser on a loaded 2-core machine.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(3);
/// What the page may add to the detection bound: one poll interval of the page (1 s), its
/// `status.json` asking each member for its links (at most 250 ms), the fetch and the
/// drawing, and this test's DOM polls (every 50 ms), on a loaded machine.
const PAGE_MARGIN: Duration = Duration::from_secs(2);
/// Shards of a cluster (the default; `cairn-node run` has no other).
const SHARDS: usize = cairn::shard::DEFAULT_SHARDS as usize;
/// How long rebalancing may take to give all three nodes a replica of every shard (it adds
/// a learner, catches it up and promotes it, shard by shard) on a loaded machine: measured
/// 6.1–6.4 s from the start at load 5–9, 7.5–20.2 s with six runs at once (load 19).
const REPLICATION_BOUND: Duration = Duration::from_secs(60);
/// Calls made to the busy object (the hot table hears of every 64th).
const BUSY_MESSAGES: u64 = 1_000;
/// The nodes and their regions.
const NODES: [(&str, &str); 3] = [("n1", "eu"), ("n2", "us"), ("n3", "ap")];

/// A worker that crashes when told to.
struct Crashy;

impl Actor for Crashy {
    type Msg = ();

    async fn handle(&mut self, (): (), _ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        Err("told to crash".into())
    }
}

/// On n1: `dash-root` (one-for-one) over `crasher` and a `pool` supervisor (rest-for-one)
/// of two workers; `crasher` is crashed once, so it and its root show one restart.
fn supervision_tree(node: &Node) -> SupervisorRef {
    let pool = SupervisorSpec::new(Strategy::RestForOne)
        .child(ChildSpec::worker("w1", || Crashy))
        .child(ChildSpec::worker("w2", || Crashy));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(ChildSpec::worker("crasher", || Crashy).named("dash-crasher"))
        .child(ChildSpec::supervisor("pool", pool));
    let opts = StartOptions {
        name: Some("dash-root".to_owned()),
        ..StartOptions::default()
    };
    let root = node
        .block_on(Supervisor::start_with(node.handle(), spec, opts))
        .unwrap();
    let crasher = node.whereis("dash-crasher").unwrap();
    node.handle().try_send(crasher, ()).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let info = node.block_on(root.describe(T)).unwrap();
        if info.restarts == 1 && info.children[0].restarts == 1 {
            assert_eq!(info.children[1].restarts, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crash was never restarted: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    root
}

/// Makes [`BUSY_MESSAGES`] calls to an object n1 owns until one shows in n1's hottest objects
/// (a shard's leadership may move while the messages go); returns its key.
fn busy_object(n1: &Node, pages: SocketAddr) -> String {
    let deadline = Instant::now() + T;
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "no busy object was ever shown hot"
        );
        let key = format!("busy{i}");
        let object = n1.object::<Counter>(&key);
        if !matches!(object.owner(), Ok(owner) if owner == n1.id()) {
            continue;
        }
        // Reads: no write to commit through the shard, so the calls are quick.
        let answered = n1.block_on(async {
            for _ in 0..BUSY_MESSAGES {
                object.call(CounterMsg::Get, T).await?;
            }
            Ok::<(), ObjectError>(())
        });
        if answered.is_err() {
            continue; // its shard's leadership moved away from n1 meanwhile
        }
        let s = get_json(pages, "/cairn/status.json");
        let hot = s["hot_objects"].as_array().unwrap();
        assert!(hot.len() <= 20, "{s}");
        if hot.iter().any(|h| h["key"] == key.as_str()) {
            return key;
        }
    }
    unreachable!()
}

fn start(dir: &Path, name: &str, region: &str, join: Option<SocketAddr>) -> Node {
    let mut b = Node::builder()
        .name(name)
        .region(region)
        .workers(1)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .failure_timeout(FAILURE_TIMEOUT)
        .listen("127.0.0.1:0".parse().unwrap());
    if let Some(seed) = join {
        b = b.join([seed]);
    }
    let node = b.start().unwrap();
    node.host::<Counter>();
    node
}

/// A `cairn-node run` child (it hosts the demo classes, `counter` among them), killed on
/// drop; its log is printed if the test fails.
struct ChildNode {
    child: std::process::Child,
    id: String,
    log: PathBuf,
}

impl ChildNode {
    fn start(dir: &Path, name: &str, region: &str, seed: SocketAddr) -> ChildNode {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-node"))
            .args(["run", "--name", name, "--region", region, "--workers", "1"])
            .args(["--listen", "127.0.0.1:0", "--join", &seed.to_string()])
            .arg("--failure-timeout")
            .arg(FAILURE_TIMEOUT.as_secs_f64().to_string())
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--cluster")
            .arg(dir.join("cluster"))
            .arg("--dev-ca")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // `ready node=<id> name=... listen=...`: it accepts connections.
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("ready "))
            .unwrap_or_else(|| {
                panic!(
                    "{name} never got ready: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        // Keep draining its stdout (`node up`/`node down` lines) so it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        let id = ready
            .split(' ')
            .find_map(|w| w.strip_prefix("node="))
            .unwrap()
            .to_owned();
        ChildNode { child, id, log }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        self.child.kill().unwrap();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- the child's log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The width and height in a PNG's header.
fn png_size(path: &Path) -> (u64, u64) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let be = |at: usize| u64::from(u32::from_be_bytes(png[at..at + 4].try_into().unwrap()));
    (be(16), be(20))
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// The page's members table: name → (state, its cells' text).
const MEMBERS_JS: &str = "Object.fromEntries(\
    Array.from(document.querySelectorAll('#members tbody tr')).map(tr => [tr.dataset.member, \
    [tr.dataset.state, Array.from(tr.cells).map(td => td.textContent)]]))";
/// The page's shard map: [shard, leader name, follower names space-separated] per column.
const SHARD_MAP_JS: &str = "Array.from(document.querySelectorAll('#shardmap g[data-shard]'))\
    .map(g => [Number(g.dataset.shard), g.dataset.leader, g.dataset.followers])";
/// Every shard's title: its leader, voters and learners as the page names them.
const SHARD_TITLES_JS: &str =
    "Array.from(document.querySelectorAll('#shardmap g[data-shard] title')).map(t => t.textContent)";
/// The shard table: name → [shards it leads, shards it follows].
const SHARD_COUNTS_JS: &str =
    "Object.fromEntries(Array.from(document.querySelectorAll('#shard-members tbody tr'))\
    .map(tr => [tr.dataset.member, [Number(tr.dataset.led), Number(tr.dataset.followed)]]))";
/// The pairs of nodes the mesh picture links, each as "a b" (sorted names).
const LINKS_JS: &str = "Array.from(document.querySelectorAll('#mesh line[data-link]'))\
    .map(l => l.dataset.link).sort()";
/// The page's latest leader moves: [sequence number, shard, from, to].
const MOVES_JS: &str = "Array.from(document.querySelectorAll('#shard-moves li')).map(li => \
    [Number(li.dataset.seq), Number(li.dataset.shard), li.dataset.from, li.dataset.to])";
/// Whether the object classes table lists `counter`.
const COUNTER_CLASS_JS: &str = "Array.from(document.querySelectorAll('#classes td'))\
    .some(td => td.textContent === 'counter')";
/// The hottest objects: [key, class] each.
const HOT_JS: &str = "Array.from(document.querySelectorAll('#hot tr[data-hot]'))\
    .map(tr => [tr.dataset.hot, tr.dataset.class])";
/// Where the last chart ends, from the top of the page.
const CHARTS_BOTTOM_JS: &str =
    "document.getElementById('chart-memory').getBoundingClientRect().bottom + window.scrollY";
/// Per chart, how many of its points have a positive value in its first data series (the
/// rate chart: in its object messages series).
const CHART_POINTS_JS: &str = "(() => { const c = window.dashboardCharts; \
    const pos = (u, k) => u.data[k].filter(v => v != null && v > 0).length; \
    return { rate: pos(c.rate, 2), commit: pos(c.commit, 1), memory: pos(c.memory, 1) }; })()";

/// The shard map as n1's `status.json` has it: (shard, leader name).
fn leaders_reported(pages: SocketAddr, names: &[(String, &str)]) -> Vec<(u64, String)> {
    let s = get_json(pages, "/cairn/status.json");
    let name = |id: &Value| {
        names
            .iter()
            .find(|(i, _)| id == i.as_str())
            .map_or_else(String::new, |(_, n)| (*n).to_owned())
    };
    s["shards"]["map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["shard"].as_u64().unwrap(), name(&v["leader"])))
        .collect()
}

fn shard_map(v: &Value) -> Vec<(u64, String, String)> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Calls counters through `node` until `stop`, one call at a time, a few tens a second.
fn load(node: &Node, stop: &AtomicBool) {
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let object = node.object::<Counter>(&format!("load{}", i % 16));
        // Calls to a dead node's objects fail until their shards have new leaders.
        let _ = node.block_on(object.call(|r| CounterMsg::AddAndGet(1, r), Duration::from_secs(2)));
        // Deliberate pacing: a light load, not a wait for an event.
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn the_dashboard_shows_the_mesh_and_a_killed_member_going_down() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let n1 = start(dir.path(), "n1", NODES[0].1, None);
    let seed = n1.mesh().unwrap().local_addr();
    let n2 = start(dir.path(), "n2", NODES[1].1, Some(seed));
    let mut n3 = ChildNode::start(dir.path(), "n3", NODES[2].1, seed);
    let pages = cairn::observe::serve(&n1, "127.0.0.1:0".parse().unwrap()).unwrap();
    let pages = pages.local_addr().unwrap();
    let deadline = Instant::now() + T;
    while [&n1, &n2]
        .iter()
        .any(|n| n.mesh().unwrap().members().len() < 3)
    {
        assert!(Instant::now() < deadline, "the mesh never formed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let names: Vec<(String, &str)> = vec![
        (n1.id().to_string(), "n1"),
        (n2.id().to_string(), "n2"),
        (n3.id.clone(), "n3"),
    ];
    // Every shard replicated on all three (n1 created them; rebalancing adds the others).
    let deadline = Instant::now() + REPLICATION_BOUND;
    loop {
        let s = get_json(pages, "/cairn/status.json");
        let map = s["shards"]["map"].as_array().unwrap().clone();
        let full = map.len() == SHARDS
            && map
                .iter()
                .all(|v| v["voters"].as_array().unwrap().len() == 3 && v["leader"].is_string());
        if full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shards never fully replicated: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "replicated on all three {:?} after the start",
        started.elapsed()
    );
    // For scripts, status.json has each member's links as the member says (n2 comes to talk
    // to n3 once leadership spreads: Raft between their replicas) and the exact
    // incarnation, which a JSON number read as a double would round.
    let deadline = Instant::now() + T;
    let members = loop {
        let s = get_json(pages, "/cairn/status.json");
        let members = s["mesh"]["members"].clone();
        let n2 = members
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "n2");
        if n2.is_some_and(|m| {
            m["links"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(n3.id)))
        }) {
            break members;
        }
        assert!(
            Instant::now() < deadline,
            "status.json never had n2 linked to n3: {members}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for m in n1.mesh().unwrap().members() {
        let shown = members
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == m.name.as_str())
            .unwrap();
        assert_eq!(
            shown["incarnation_exact"],
            m.incarnation.to_string().as_str()
        );
    }

    let _tree = supervision_tree(&n1);
    let busy = busy_object(&n1, pages);

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Some load all along: counters on all three nodes, called from n2 (stopped however
        // this scope ends, so that a failing test does not wait for it for ever).
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| load(&n2, &stop));
        let mut browser = Browser::launch(&[
            "--hide-scrollbars",
            // Smaller than the page: the screenshot must be of the full page.
            "--window-size=1100,800",
        ]);
        let page = browser.open(&format!("http://{pages}/cairn/dashboard"));
        {
            // Members: their regions and exact incarnations, as n1 knows them.
            let members = browser.wait_for(
                &page,
                "three members up",
                MEMBERS_JS,
                Instant::now() + T,
                |v| NODES.iter().all(|(n, _)| v[n][0] == "up"),
            );
            let known = n1.mesh().unwrap().members();
            for (name, region) in NODES {
                let m = known.iter().find(|m| m.name == name).unwrap();
                let cells = &members[name][1];
                assert_eq!(cells[1], region, "{name}'s region: {members}");
                assert_eq!(
                    cells[2],
                    m.incarnation.to_string().as_str(),
                    "{name}'s incarnation: {members}"
                );
            }
            assert_eq!(
                browser.eval(&page, "document.getElementById('members').dataset.up"),
                "3"
            );
            // Links between every two nodes: n2–n3 too, which n1 only hears of.
            browser.wait_for(&page, "the links", LINKS_JS, Instant::now() + T, |v| {
                *v == json!(["n1 n2", "n1 n3", "n2 n3"])
            });
            // The shard map: every shard led by one of the three and followed by the other
            // two, with the leaders n1 reports (they move while leadership spreads, so until
            // the page and status.json agree; a shard between two leaders shows none, and
            // its three replicas as followers); n3 leads some.
            let held_by_all_three = |(_, leader, followers): &(u64, String, String)| {
                let mut all: Vec<&str> = followers.split(' ').chain([leader.as_str()]).collect();
                all.sort_unstable();
                all == ["n1", "n2", "n3"]
            };
            let deadline = Instant::now() + T;
            loop {
                let v = browser.eval(&page, SHARD_MAP_JS);
                let map = shard_map(&v);
                let shown: Vec<(u64, String)> =
                    map.iter().map(|(s, l, _)| (*s, l.clone())).collect();
                if map.len() == SHARDS
                    && map.iter().all(held_by_all_three)
                    && map.iter().any(|(_, l, _)| l == "n3")
                    && shown == leaders_reported(pages, &names)
                {
                    break;
                }
                if Instant::now() >= deadline {
                    // The titles name every voter and learner, and status.json is what the
                    // page drew from.
                    let titles = browser.eval(&page, SHARD_TITLES_JS);
                    let status = get_json(pages, "/cairn/status.json");
                    panic!(
                        "the page never showed n1's shard leaders, each shard on n1, n2 and \
                         n3: {v}; the map's titles: {titles}; n1's status: {status}"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The table beside it: who leads and follows how many (read with the map in one
            // evaluation, so both are of the same poll).
            let both = browser.eval(&page, &format!("[{SHARD_MAP_JS}, {SHARD_COUNTS_JS}]"));
            let (map, counts) = (shard_map(&both[0]), &both[1]);
            let led = |n: &str| counts[n][0].as_u64().unwrap();
            let followed = |n: &str| counts[n][1].as_u64().unwrap();
            for (n, _) in NODES {
                let shown = map.iter().filter(|(_, l, _)| l == n).count() as u64;
                assert_eq!(led(n), shown, "{n}: {counts}");
                assert_eq!(led(n) + followed(n), SHARDS as u64, "{n} hosts every shard");
            }
        }
        assert_eq!(browser.eval(&page, COUNTER_CLASS_JS), true);
        // The hottest objects: the busy one.
        let hot = browser.wait_for(&page, "the busy object", HOT_JS, Instant::now() + T, |v| {
            v.as_array()
                .is_some_and(|a| a.contains(&json!([busy, "counter"])))
        });
        assert!(hot.as_array().unwrap().len() <= 20);
        // The supervision tree, collapsed: the root with its restart, no children drawn.
        let root = "document.querySelector('details[data-sup=\"dash-root\"]')";
        assert_eq!(
            browser.eval(&page, &format!("{root}.dataset.restarts")),
            "1"
        );
        assert_eq!(
            browser.eval(&page, &format!("{root}.dataset.strategy")),
            "one_for_one"
        );
        assert_eq!(
            browser.eval(&page, "document.querySelector('[data-child]') === null"),
            true,
            "drawn while collapsed"
        );
        // Expanded (`#expand` clicks every tree open): children with their restarts, and the
        // sub-supervisor's own children.
        browser.eval(&page, "location.hash = 'expand'");
        browser.wait_for(
            &page,
            "the expanded tree",
            "document.querySelector('[data-child=\"w2\"]') !== null",
            Instant::now() + T,
            |v| *v == json!(true),
        );
        let child = |id: &str| format!("document.querySelector('[data-child=\"{id}\"]')");
        assert_eq!(
            browser.eval(&page, &format!("{}.dataset.restarts", child("crasher"))),
            "1"
        );
        assert_eq!(
            browser.eval(&page, &format!("{}.dataset.restarts", child("pool"))),
            "0"
        );
        assert_eq!(browser.eval(&page, &format!("{root}.open")), true);
        assert_eq!(
            browser.eval(
                &page,
                "document.querySelector('details[data-sup=\"pool\"]').dataset.strategy"
            ),
            "rest_for_one"
        );
        // The charts have points: object messages, commits and memory over the page's polls.
        let points = browser.wait_for(
            &page,
            "points in every chart",
            CHART_POINTS_JS,
            Instant::now() + T,
            |v| {
                ["rate", "commit", "memory"]
                    .iter()
                    .all(|c| v[c].as_u64() >= Some(2))
            },
        );
        eprintln!("chart points: {points}");

        // Kill n3: the page shows it down within the failure-detection bound.
        // Leaders still move while leadership spreads: the moves that count come after this.
        let moves = browser.eval(&page, MOVES_JS);
        let moves_before = moves
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m[0].as_u64())
            .max()
            .unwrap_or(0);
        let killed = Instant::now();
        n3.kill();
        browser.wait_for(&page, "n3 down", MEMBERS_JS, killed + T, |v| {
            v["n3"][0] == "down"
        });
        let shown_down = killed.elapsed();
        eprintln!(
            "n3 shown down on the page {shown_down:?} after its kill (bound {:?})",
            FAILURE_TIMEOUT + PAGE_MARGIN
        );
        assert!(
            shown_down <= FAILURE_TIMEOUT + PAGE_MARGIN,
            "n3 shown down {shown_down:?} after its kill; the bound is the failure timeout \
             {FAILURE_TIMEOUT:?} + {PAGE_MARGIN:?} for the page"
        );
        let members = browser.eval(&page, MEMBERS_JS);
        assert_eq!(members["n1"][0], "up", "{members}");
        assert_eq!(members["n2"][0], "up", "{members}");
        assert_eq!(
            browser.eval(&page, "document.getElementById('members').dataset.up"),
            "2"
        );
        // n3's shards get new leaders (an election timeout or two), and the page shows them
        // moving away from n3.
        browser.wait_for(
            &page,
            "every shard led by n1 or n2",
            SHARD_MAP_JS,
            killed + T,
            |v| {
                let map = shard_map(v);
                map.len() == SHARDS && map.iter().all(|(_, l, _)| l == "n1" || l == "n2")
            },
        );
        assert_eq!(
            browser.eval(
                &page,
                "document.querySelector('#shard-members tr[data-member=\"n3\"]').dataset.led"
            ),
            "0"
        );
        let after_kill = |m: &Value| m[0].as_u64() > Some(moves_before);
        let moves = browser.wait_for(&page, "a leader move from n3", MOVES_JS, killed + T, |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|m| after_kill(m) && m[2] == "n3")
        });
        for m in moves.as_array().unwrap().iter().filter(|m| after_kill(m)) {
            assert!(
                m[3] == "n1" || m[3] == "n2",
                "a move to a dead node: {moves}"
            );
        }
        // No link to a dead node.
        browser.wait_for(&page, "n3's links gone", LINKS_JS, killed + T, |v| {
            *v == json!(["n1 n2"])
        });

        // A full-page screenshot: the charts at the bottom are in it.
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("dashboard.png");
        let (w, h) = browser.full_page_screenshot(&page, &shot);
        assert_eq!(png_size(&shot), (w, h));
        let charts_bottom = browser.eval(&page, CHARTS_BOTTOM_JS);
        assert!(
            charts_bottom.as_f64().unwrap() <= h as f64 && h > 800,
            "the screenshot ({w}x{h}) ends above the charts (at {charts_bottom})"
        );
        eprintln!("screenshot {} ({w}x{h})", shot.display());
    });
    drop(n2);
    drop(n1);
    eprintln!("the test took {:?}", started.elapsed());
}
