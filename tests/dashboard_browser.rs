//! The dashboard in a real browser: headless Chromium opens `/cairn/dashboard` of a node in a
//! 3-node mesh under load, sees 3 members up and a shard map (every shard led by one of them
//! and followed by the other two), then sees a stopped member shown down and no shard led
//! by it. It also shows n1's supervision tree, collapsed until clicked (expanded, with a
//! crashed child's restart counted), and a busy object at the top of the hottest objects.
//! A screenshot is left at `target/dashboard.png` (the README's picture).
//!
//! Needs `chromium` (Debian's package; `.ci/run` installs it).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::supervisor::{
    Actor, ActorCtx, ChildSpec, StartOptions, Strategy, Supervisor, SupervisorRef, SupervisorSpec,
};
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(20);
/// How long a silent member may stay silent (this test stops one politely, so it leaves at
/// once; the bound is for a node that misses the leave).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shards of a cluster (the default).
const SHARDS: usize = cairn::shard::DEFAULT_SHARDS as usize;
/// How long rebalancing may take to give all three nodes a replica of every shard (it adds
/// a learner, catches it up and promotes it, shard by shard) on a loaded machine.
const REPLICATION_BOUND: Duration = Duration::from_secs(120);

/// Calls made to the busy object (the hot table hears of every 64th).
const BUSY_MESSAGES: u64 = 1_000;

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
        n1.block_on(async {
            for _ in 0..BUSY_MESSAGES {
                object.call(CounterMsg::Get, T).await.unwrap();
            }
        });
        let s = get_json(pages, "/cairn/status.json");
        let hot = s["hot_objects"].as_array().unwrap();
        assert!(hot.len() <= 20, "{s}");
        if hot.iter().any(|h| h["key"] == key.as_str()) {
            return key;
        }
    }
    unreachable!()
}

/// The `data-restarts` of the element carrying `attr="value"` in `dom`, if it is there.
fn restarts_of(dom: &str, attr: &str, value: &str) -> Option<String> {
    let at = dom.find(&format!(r#"{attr}="{value}""#))?;
    let tag = &dom[dom[..at].rfind('<')?..];
    let tag = &tag[..tag.find('>')?];
    let needle = r#"data-restarts=""#;
    let at = tag.find(needle)? + needle.len();
    tag[at..].split('"').next().map(str::to_owned)
}

fn start(dir: &std::path::Path, name: &str, join: Option<SocketAddr>) -> Node {
    let mut b = Node::builder()
        .name(name)
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

/// Runs headless Chromium on `url` with its own profile directory; `args` say what to
/// produce (`--dump-dom`, `--screenshot=..`). Virtual time lets the page's 1 s polls run.
fn chromium(profile: &std::path::Path, url: &str, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,1100",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is needed (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn member_state<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(r#"<tr data-member="{name}" data-state=""#);
    let at = dom.find(&needle)? + needle.len();
    dom[at..].split('"').next()
}

/// Loads `url` in Chromium until its DOM satisfies `ok` (at most [`T`]); returns that DOM.
fn dom_until(
    profile: &std::path::Path,
    url: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + T;
    loop {
        let dom = chromium(profile, url, &["--dump-dom"]);
        if ok(&dom) {
            return dom;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}: {dom}"
        );
    }
}

/// Whether `dom`'s shard map shows every shard, each with a leader.
fn every_shard_led(dom: &str) -> bool {
    let map = shard_map(dom);
    map.len() == SHARDS && map.iter().all(|(_, leader, _)| !leader.is_empty())
}

/// The shard map's columns in `dom`: (shard, leader name, follower names space-separated).
fn shard_map(dom: &str) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<g data-shard=\"") {
        rest = &rest[at..];
        let attr = |name: &str| {
            let needle = format!(r#"{name}=""#);
            let at = rest.find(&needle).unwrap() + needle.len();
            rest[at..].split('"').next().unwrap().to_owned()
        };
        out.push((
            attr("data-shard").parse().unwrap(),
            attr("data-leader"),
            attr("data-followers"),
        ));
        rest = &rest[1..];
    }
    out
}

/// Attribute `attr` of member `name`'s row in the shard table.
fn member_attr(dom: &str, name: &str, attr: &str) -> String {
    let table = &dom[dom.find(r#"id="shard-members""#).expect("no shard table")..];
    let row = &table[table
        .find(&format!(r#"<tr data-member="{name}""#))
        .unwrap_or_else(|| panic!("no shard row of {name}"))..];
    let needle = format!(r#"{attr}=""#);
    let at = row.find(&needle).unwrap() + needle.len();
    row[at..].split('"').next().unwrap().to_owned()
}

#[test]
fn the_dashboard_shows_the_mesh_and_a_member_going_down() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let n1 = start(dir.path(), "n1", None);
    let seed = n1.mesh().unwrap().local_addr();
    let n2 = start(dir.path(), "n2", Some(seed));
    let n3 = start(dir.path(), "n3", Some(seed));
    let pages = cairn::observe::serve(&n1, "127.0.0.1:0".parse().unwrap()).unwrap();
    let pages = pages.local_addr().unwrap();
    let deadline = Instant::now() + T;
    while n1.mesh().unwrap().members().len() < 3 {
        assert!(Instant::now() < deadline, "the mesh never formed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Some load: objects on all three nodes, called from n1.
    for i in 0..30 {
        n1.block_on(
            n1.object::<Counter>(&format!("k{i}"))
                .call(|r| CounterMsg::AddAndGet(1, r), T),
        )
        .unwrap();
    }

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

    let _tree = supervision_tree(&n1);
    let busy = busy_object(&n1, pages);

    let url = format!("http://{pages}/cairn/dashboard");
    let profile = dir.path().join("chromium");
    // Leaders move while rebalancing settles (hand-overs): load the page until it shows a
    // leader for every shard.
    let dom = dom_until(&profile, &url, "a leader for every shard", every_shard_led);
    assert!(dom.contains(r#"data-up="3""#), "{dom}");
    for name in ["n1", "n2", "n3"] {
        assert_eq!(member_state(&dom, name), Some("up"), "{name}: {dom}");
    }
    assert!(dom.contains(r#"<td>test-counter</td>"#), "{dom}");
    // The hottest objects: the busy one, with a rate.
    let hot = &dom[dom
        .find(r#"<tr data-hot="busy"#)
        .expect("no hot objects shown")..];
    assert!(
        dom.contains(&format!(
            r#"<tr data-hot="{busy}" data-class="test-counter""#
        )),
        "{busy} not hot: {hot}"
    );
    // The supervision tree, collapsed: the root with its restart, no children drawn.
    assert_eq!(
        restarts_of(&dom, "data-sup", "dash-root").as_deref(),
        Some("1"),
        "{dom}"
    );
    assert!(dom.contains(r#"data-strategy="one_for_one""#), "{dom}");
    assert!(
        !dom.contains(r#"data-child="crasher""#),
        "drawn while collapsed: {dom}"
    );
    // Expanded (the page clicks every tree open): children with their restarts, and the
    // sub-supervisor's own children.
    let expanded = format!("{url}#expand");
    // The shard map is checked on this page too, so it waits for a leader for every shard
    // again (under load an election may be under way in any one snapshot).
    let dom = dom_until(
        &profile,
        &expanded,
        "the expanded tree and a leader for every shard",
        |dom| dom.contains(r#"data-child="w2""#) && every_shard_led(dom),
    );
    assert!(dom.contains(r#"<details data-sup="dash-root""#), "{dom}");
    assert!(dom.contains(r#"open="""#), "{dom}");
    assert_eq!(
        restarts_of(&dom, "data-child", "crasher").as_deref(),
        Some("1"),
        "{dom}"
    );
    assert_eq!(
        restarts_of(&dom, "data-child", "pool").as_deref(),
        Some("0"),
        "{dom}"
    );
    assert!(dom.contains(r#"data-strategy="rest_for_one""#), "{dom}");
    assert!(dom.contains(r#"data-child="w1""#), "{dom}");
    // The shard map: every shard has a leader among the three, and the other two follow.
    let map = shard_map(&dom);
    assert_eq!(map.len(), SHARDS, "{dom}");
    for (shard, leader, followers) in &map {
        assert!(
            ["n1", "n2", "n3"].contains(&leader.as_str()),
            "s{shard}: {leader}"
        );
        let mut all: Vec<&str> = followers.split(' ').chain([leader.as_str()]).collect();
        all.sort_unstable();
        assert_eq!(all, ["n1", "n2", "n3"], "s{shard}");
    }
    let led: usize = ["n1", "n2", "n3"]
        .iter()
        .map(|n| member_attr(&dom, n, "data-led").parse::<usize>().unwrap())
        .sum();
    assert_eq!(led, SHARDS);
    for n in ["n1", "n2", "n3"] {
        let both = member_attr(&dom, n, "data-led").parse::<usize>().unwrap()
            + member_attr(&dom, n, "data-followed")
                .parse::<usize>()
                .unwrap();
        assert_eq!(both, SHARDS, "{n} hosts every shard");
    }

    let n3_id = n3.id();
    n3.shutdown();
    // n1 learns it within the failure-detection bound.
    let deadline = Instant::now() + FAILURE_TIMEOUT * 3;
    loop {
        let s = get_json(pages, "/cairn/status.json");
        let down = s["mesh"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "n3" && m["state"] == "down");
        if down {
            break;
        }
        assert!(Instant::now() < deadline, "n3 never shown down: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // n3's shards get new leaders (an election timeout or two).
    let n3_id = n3_id.to_string();
    let deadline = Instant::now() + T;
    loop {
        let s = get_json(pages, "/cairn/status.json");
        let map = s["shards"]["map"].as_array().unwrap().clone();
        if map
            .iter()
            .all(|v| v["leader"].is_string() && v["leader"] != n3_id.as_str())
        {
            break;
        }
        assert!(Instant::now() < deadline, "n3's shards never moved: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = dom_until(&profile, &url, "every shard led by n1 or n2", |dom| {
        let map = shard_map(dom);
        map.len() == SHARDS && map.iter().all(|(_, l, _)| l == "n1" || l == "n2")
    });
    assert_eq!(member_attr(&dom, "n3", "data-led"), "0");
    assert!(dom.contains(r#"data-up="2""#), "{dom}");
    assert_eq!(member_state(&dom, "n3"), Some("down"), "{dom}");
    assert_eq!(member_state(&dom, "n2"), Some("up"), "{dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    chromium(
        &profile,
        &format!("{url}#expand"),
        &[&format!("--screenshot={}", shot.display())],
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    drop(n2);
    drop(n1);
}
