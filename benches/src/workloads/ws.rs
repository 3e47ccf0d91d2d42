//! `ws-broadcast`: one room object with many hibernating WebSockets on one node.
//!
//! S sockets (1,000 at scale 1) connect to `/room/bench/ws` on the node's gateway; the room
//! object is then left to be evicted while they stay open, and the process's resident
//! memory growth per socket is measured (`ws-idle-socket-mem`; clients and server share
//! the process, so this counts both ends of each socket: an upper bound on the server's
//! cost). Then one client sends B messages (100 at scale 1); the room broadcasts each to
//! every socket, and `ws-broadcast` is deliveries (S × B) per second until every client has
//! read all of them (each checks it got exactly B, in order).
//!
//! Clients are threads of this process (tungstenite's blocking client), each reading its
//! share of the sockets in turn: the kernel buffers the small messages meanwhile.

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn::bytes::Bytes;
use cairn::http;
use cairn::prelude::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

use super::{rss_bytes, Config, Row, RESULT_DEADLINE};

/// Client threads reading the sockets.
const CLIENT_THREADS: usize = 8;
/// The room's idle timeout: short, so it is evicted while its sockets stay open.
const IDLE: Duration = Duration::from_millis(200);

/// The benchmark's room: accepts sockets, broadcasts every text message to all of them.
struct Room;

impl Object for Room {
    const CLASS: &'static str = "room";
    type Msg = ();

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Room)
    }

    async fn handle(&mut self, (): (), _ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }

    fn idle_timeout() -> Option<Duration> {
        Some(IDLE)
    }

    async fn fetch(
        &mut self,
        request: http::Request<Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        Ok(ctx.accept_websocket(&request, Vec::new(), None)?)
    }

    async fn websocket_message(
        &mut self,
        _socket: SocketId,
        message: WsMessage,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        ctx.websockets().broadcast(None, message);
        Ok(())
    }
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(url: &str) -> Result<Ws, String> {
    let (socket, _) = tungstenite::connect(url).map_err(|e| format!("connecting: {e}"))?;
    if let MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(RESULT_DEADLINE))
            .map_err(|e| e.to_string())?;
    }
    Ok(socket)
}

/// Reads `b` messages `0..b` in order from every socket.
fn read_all(sockets: &mut [Ws], b: u64) -> Result<(), String> {
    for socket in sockets {
        for i in 0..b {
            match socket.read().map_err(|e| format!("reading: {e}"))? {
                Frame::Text(t) if t.as_str() == i.to_string() => {}
                other => return Err(format!("message {i}: got {other:?}")),
            }
        }
    }
    Ok(())
}

pub fn ws_broadcast(cfg: &Config) -> Result<Vec<Row>, String> {
    let s = cfg.scaled(1_000, 10) as usize;
    let b = cfg.scaled(100, 10);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let node = Node::builder()
        .workers(cfg.workers)
        .data_dir(dir.path())
        .http("127.0.0.1:0".parse().expect("an address"))
        .start()
        .map_err(|e| format!("starting the node: {e}"))?;
    node.host_local::<Room>();
    let addr = node.http_addr().ok_or("no HTTP address")?;
    let url = format!("ws://{addr}/room/bench/ws");

    let rss_before = rss_bytes()?;
    let mut sockets = (0..s)
        .map(|_| connect(&url))
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + RESULT_DEADLINE;
    while node.status().objects.contains_key("room") {
        if Instant::now() > deadline {
            return Err("the room was never evicted".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let per_socket = rss_bytes()?.saturating_sub(rss_before) as f64 / s as f64;

    let mut sender = sockets.pop().ok_or("no sockets")?;
    let (tx, rx) = mpsc::channel();
    let chunk = sockets.len().div_ceil(CLIENT_THREADS).max(1);
    let mut threads = 0;
    while !sockets.is_empty() {
        let mut mine: Vec<Ws> = sockets.drain(..chunk.min(sockets.len())).collect();
        let tx = tx.clone();
        threads += 1;
        std::thread::spawn(move || {
            let _ = tx.send(read_all(&mut mine, b));
        });
    }
    let start = Instant::now();
    for i in 0..b {
        sender
            .send(Frame::text(i.to_string()))
            .map_err(|e| format!("sending: {e}"))?;
    }
    read_all(std::slice::from_mut(&mut sender), b)?;
    for _ in 0..threads {
        rx.recv_timeout(RESULT_DEADLINE)
            .map_err(|e| format!("a client thread: {e}"))??;
    }
    let elapsed = start.elapsed();
    node.shutdown();
    Ok(vec![
        Row::higher(
            "ws-broadcast",
            "deliveries/s",
            super::rate(s as u64 * b, elapsed),
        ),
        Row::lower("ws-idle-socket-mem", "bytes/socket", per_socket),
    ])
}
