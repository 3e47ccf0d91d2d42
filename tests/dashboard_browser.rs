//! The dashboard in a real browser: headless Chromium opens `/cairn/dashboard` of a node in a
//! 3-node mesh under load, sees 3 members up, then sees a stopped member shown down. A
//! screenshot is left at `target/dashboard.png` (the README's picture).
//!
//! Needs `chromium` (Debian's package; `.ci/run` installs it).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::net::ClusterCa;
use cairn::prelude::*;
use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(20);
/// How long a silent member may stay silent (this test stops one politely, so it leaves at
/// once; the bound is for a node that misses the leave).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);

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
            "--window-size=1100,860",
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

    let url = format!("http://{pages}/cairn/dashboard");
    let profile = dir.path().join("chromium");
    let dom = chromium(&profile, &url, &["--dump-dom"]);
    assert!(dom.contains(r#"data-up="3""#), "{dom}");
    for name in ["n1", "n2", "n3"] {
        assert_eq!(member_state(&dom, name), Some("up"), "{name}: {dom}");
    }
    assert!(dom.contains(r#"<td>test-counter</td>"#), "{dom}");

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
    let dom = chromium(&profile, &url, &["--dump-dom"]);
    assert!(dom.contains(r#"data-up="2""#), "{dom}");
    assert_eq!(member_state(&dom, "n3"), Some("down"), "{dom}");
    assert_eq!(member_state(&dom, "n2"), Some("up"), "{dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    chromium(
        &profile,
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    drop(n2);
    drop(n1);
}
