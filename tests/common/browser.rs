//! A headless Chromium driven over the DevTools protocol, for the root integration tests
//! that open pages in a real browser (`#[path = "common/browser.rs"] mod browser;`).
//! Needs `chromium` (Debian's package; `.ci/run` installs it).

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

/// How long DevTools may take to answer a command, and [`Browser::wait_until`]'s bound.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a page is evaluated again while a test waits on it.
const POLL: Duration = Duration::from_millis(50);

/// A headless Chromium, killed on drop.
pub struct Browser {
    child: std::process::Child,
    devtools: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium (a fresh profile, `about:blank`) with `args` after the headless
    /// ones (e.g. `--window-size=W,H`), and connects to its DevTools.
    pub fn launch(args: &[&str]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .args(args)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is installed (.ci/run installs Debian's `chromium`)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("DevTools listening on ")
                    .map(|(_, u)| u.to_owned())
            })
            .expect("chromium prints its DevTools address");
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let (devtools, _) = tungstenite::connect(url).expect("DevTools accepts");
        if let MaybeTlsStream::Plain(s) = devtools.get_ref() {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        Browser {
            child,
            devtools,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends a DevTools command to the page of `session` (or to the browser) and waits for
    /// its result; DevTools' error fails the test.
    pub fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_command(session, method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Self::command`], with DevTools' error as an `Err` (e.g. an evaluation while the
    /// page navigates).
    pub fn try_command(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.devtools.send(Frame::text(msg.to_string())).unwrap();
        loop {
            let frame = self.devtools.read().expect("DevTools answers");
            let Frame::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                return match v.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Opens `url` in a new tab; answers the tab's session.
    pub fn open(&mut self, url: &str) -> String {
        let target = self.command(None, "Target.createTarget", json!({ "url": url }));
        let id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": id, "flatten": true }),
        );
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    /// The value of `expression` in the page (`null` if it throws); DevTools' error fails
    /// the test.
    pub fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self.command(Some(session), "Runtime.evaluate", evaluate(expression));
        r["result"]["value"].clone()
    }

    /// [`Self::eval`] for polling: `null` while the page is between documents.
    pub fn poll(&mut self, session: &str, expression: &str) -> Value {
        self.try_command(Some(session), "Runtime.evaluate", evaluate(expression))
            .map_or(Value::Null, |r| r["result"]["value"].clone())
    }

    /// Evaluates `expression` (every 50 ms, with [`Self::poll`]: the page may navigate
    /// meanwhile) until `ok` takes its value, at most until `deadline`; returns that value.
    pub fn wait_for(
        &mut self,
        session: &str,
        what: &str,
        expression: &str,
        deadline: Instant,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        loop {
            let v = self.poll(session, expression);
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {expression} is {v}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to [`WAIT`], polling) until `expression` evaluates to `want` in the page.
    pub fn wait_until(&mut self, session: &str, expression: &str, want: Value) {
        let what = want.to_string();
        self.wait_for(session, &what, expression, Instant::now() + WAIT, |v| {
            *v == want
        });
    }

    /// A screenshot of the window, as PNG.
    pub fn screenshot(&mut self, session: &str, path: &Path) {
        self.capture(session, json!({ "format": "png" }), path);
    }

    /// A screenshot of the whole page (beyond the window), as PNG; returns the page's size
    /// in CSS pixels.
    pub fn full_page_screenshot(&mut self, session: &str, path: &Path) -> (u64, u64) {
        let metrics = self.command(Some(session), "Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap().ceil(),
            size["height"].as_f64().unwrap().ceil(),
        );
        let params = json!({
            "format": "png",
            "captureBeyondViewport": true,
            "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 },
        });
        self.capture(session, params, path);
        (w as u64, h as u64)
    }

    fn capture(&mut self, session: &str, params: Value, path: &Path) {
        let shot = self.command(Some(session), "Page.captureScreenshot", params);
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// `Runtime.evaluate`'s parameters for `expression`, its value returned as JSON.
fn evaluate(expression: &str) -> Value {
    json!({ "expression": expression, "returnByValue": true })
}
