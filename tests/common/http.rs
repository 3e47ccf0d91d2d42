//! HTTP and WebSocket clients for the root integration tests that reach a node's HTTP
//! port (`common::http`): curl for HTTP, raw TCP for what curl will not send, tungstenite
//! for WebSockets, and a bounded wait on observed state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

/// How long a client waits for any answer.
pub const T: Duration = Duration::from_secs(20);

/// A curl answer: status, headers (lower-case names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn curl(method: &str, url: &str, body: Option<&str>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "20", "-X", method, url]);
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    let out = cmd.output().expect("curl runs (CI installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer from {url}: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

pub fn ws(addr: SocketAddr, path: &str) -> Ws {
    let (socket, response) =
        tungstenite::connect(format!("ws://{addr}{path}")).expect("the WebSocket is accepted");
    assert_eq!(response.status(), 101);
    if let MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(T)).unwrap();
    }
    socket
}

pub fn read_text(socket: &mut Ws) -> String {
    loop {
        match socket.read().expect("a message before the timeout") {
            Frame::Text(t) => return t.to_string(),
            Frame::Ping(_) | Frame::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Polls `cond` until it holds (the state observed is another node's, reached by
/// status requests; no fixed sleep).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    super::poll_for(what, T, || cond().then_some(()));
}

/// The code of the close frame `socket` receives next (skipping other frames).
pub fn close_code(socket: &mut Ws) -> Option<u16> {
    loop {
        match socket.read() {
            Ok(Frame::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it or `T`
/// passes; the answer as text.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// How long until the server closes `stream` (a read returns end of file or an error).
pub fn time_until_closed(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => continue,
        }
    }
}
