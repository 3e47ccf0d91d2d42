//! `ws-broadcast`: one room object with 10,000 hibernating WebSockets on one node, its
//! clients in several processes of their own.
//!
//! The child running the workload starts a node with the gateway on 127.0.0.1 and then
//! [`CLIENT_PROCESSES`] client processes (`cairn-bench --ws-client SOCKETS,MESSAGES,URL`,
//! this binary again), which together connect S − 1 sockets (S = 10,000 at scale 1) to
//! `/room/bench/ws`; the workload holds the S-th, the sender. The room object is then left
//! to be evicted while every socket stays open, and the node process's resident memory
//! growth over the S sockets is `ws-idle-socket-mem` (server side only: the clients are
//! other processes; their own growth is `ws-client-socket-mem`). Then the sender sends B
//! messages (100 at scale 1); the first re-activates the room, which broadcasts each to
//! every socket, and `ws-broadcast` is deliveries (S × B) per second until every client
//! process has read all of them (each socket checks it got exactly `0..B`, in order).
//!
//! The machine's load during the broadcast comes from `/proc/stat`: `ws-broadcast-busy` is
//! the number of CPUs busy, `ws-broadcast-others-busy` the part of it that neither the
//! node's process nor the client processes used (other work on a shared machine).
//!
//! Each process raises its soft open-file limit to what it needs (and the hard limit too
//! when allowed, e.g. as root); if it cannot, the run fails saying `ulimit -n` is too low.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn::bytes::Bytes;
use cairn::gateway::GatewayConfig;
use cairn::http;
use cairn::prelude::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as Frame, WebSocket};

use super::{rss_bytes, Config, Row, RESULT_DEADLINE};

/// Client processes the sockets are spread over.
const CLIENT_PROCESSES: usize = 4;
/// Reader threads in each client process (each reads its share of the sockets in turn;
/// the kernel buffers the small messages meanwhile).
const CLIENT_THREADS: usize = 4;
/// The room's idle timeout: short, so it is evicted while its sockets stay open.
const IDLE: Duration = Duration::from_millis(200);
/// A client process's line once its sockets are open: `tag \t bytes-per-socket`.
const CLIENT_READY: &str = "cairn-bench-ws-ready\t";
/// A client process's line once every socket has read every message.
const CLIENT_DONE: &str = "cairn-bench-ws-done";
/// Open files a process needs besides its sockets (LMDB, pipes, the reactor, stdio).
const SPARE_FILES: u64 = 256;

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

/// Raises this process's soft open-file limit to at least `need` (and the hard limit, if
/// that is too low and the process may raise it).
fn raise_fd_limit(need: u64) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= need) {
        return Ok(());
    }
    let maximum = match limit.maximum {
        Some(max) if max < need => Some(need),
        other => other,
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(need),
            maximum,
        },
    )
    .map_err(|e| {
        format!(
            "cannot raise the open-file limit to {need} (soft {:?}, hard {:?}): {e}; \
             raise it with `ulimit -n {need}` first",
            limit.current, limit.maximum
        )
    })
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn machine_jiffies() -> Result<(u64, u64), String> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(|e| format!("reading /proc/stat: {e}"))?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// User + system jiffies of process `pid` (all its threads); `"self"` for this one.
fn process_jiffies(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The body of `cairn-bench --ws-client SOCKETS,MESSAGES,URL`: opens the sockets, says
/// so on stdout, reads every message on each, says so, and then holds the sockets open
/// until stdin closes.
pub fn client(spec: &str) -> Result<(), String> {
    let mut parts = spec.splitn(3, ',');
    let (Some(n), Some(b), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "--ws-client {spec:?}: expected SOCKETS,MESSAGES,URL"
        ));
    };
    let n: usize = n.parse().map_err(|e| format!("SOCKETS {n:?}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("MESSAGES {b:?}: {e}"))?;
    raise_fd_limit(n as u64 + SPARE_FILES)?;
    let before = rss_bytes()?;
    let mut sockets = (0..n)
        .map(|_| connect(url))
        .collect::<Result<Vec<_>, _>>()?;
    let per_socket = rss_bytes()?.saturating_sub(before) / n.max(1) as u64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{CLIENT_READY}{per_socket}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;

    let chunk = n.div_ceil(CLIENT_THREADS).max(1);
    let mut readers = Vec::new();
    while !sockets.is_empty() {
        let mut mine: Vec<Ws> = sockets.drain(..chunk.min(sockets.len())).collect();
        readers.push(std::thread::spawn(move || {
            read_all(&mut mine, b).map(|()| mine)
        }));
    }
    let mut held = Vec::new();
    for reader in readers {
        held.push(reader.join().map_err(|_| "a reader thread panicked")??);
    }
    writeln!(out, "{CLIENT_DONE}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
    Ok(())
}

/// The client processes' stdout lines: `(client, Some(line))`, and `(client, None)` when
/// its stdout closed.
type Lines = mpsc::Receiver<(usize, Option<String>)>;

/// A client process seen from the workload (its stdout lines arrive as [`Lines`]).
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Kills the client processes still running when dropped (a failed run).
struct Clients(Vec<Client>);

impl Clients {
    /// Starts `shares.len()` client processes, client `i` opening `shares[i]` sockets; every
    /// line they print arrives on the returned channel as `(i, line)`, and `(i, None)` when
    /// its stdout closes.
    fn start(shares: &[usize], b: u64, url: &str) -> Result<(Clients, Lines), String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let mut clients = Clients(Vec::new());
        for (i, &n) in shares.iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("--ws-client")
                .arg(format!("{n},{b},{url}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start client process {i}: {e}"))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().ok_or("no client stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send((i, Some(line)));
                }
                let _ = tx.send((i, None));
            });
            clients.0.push(Client { child, stdin });
        }
        Ok((clients, rx))
    }

    /// Waits until every client has printed a line starting with `tag`; returns the rest
    /// of each such line, by client.
    fn wait_all(&self, rx: &Lines, tag: &str) -> Result<Vec<String>, String> {
        let mut got: Vec<Option<String>> = vec![None; self.0.len()];
        let deadline = Instant::now() + RESULT_DEADLINE;
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, Some(line))) => {
                    if let Some(rest) = line.strip_prefix(tag) {
                        got[i] = Some(rest.to_owned());
                    }
                }
                Ok((i, None)) => return Err(format!("client process {i} ended early")),
                Err(_) => return Err(format!("client processes: no {tag:?} in time")),
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn cpu_jiffies(&self) -> u64 {
        self.0
            .iter()
            .map(|c| process_jiffies(&c.child.id().to_string()))
            .sum()
    }

    /// Closes every client's stdin and waits for them to exit.
    fn finish(mut self) -> Result<(), String> {
        for c in &mut self.0 {
            drop(c.stdin.take());
        }
        for (i, c) in self.0.iter_mut().enumerate() {
            let status = c.child.wait().map_err(|e| format!("client {i}: {e}"))?;
            if !status.success() {
                return Err(format!("client process {i} exited with {status}"));
            }
        }
        self.0.clear();
        Ok(())
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

pub fn ws_broadcast(cfg: &Config) -> Result<Vec<Row>, String> {
    let s = cfg.scaled(10_000, 10) as usize;
    let b = cfg.scaled(100, 10);
    raise_fd_limit(s as u64 + SPARE_FILES)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let node = Node::builder()
        .workers(cfg.workers)
        .data_dir(dir.path())
        .http("127.0.0.1:0".parse().expect("an address"))
        .http_config(GatewayConfig {
            max_connections: s + 64,
            ..GatewayConfig::default()
        })
        .start()
        .map_err(|e| format!("starting the node: {e}"))?;
    node.host_local::<Room>();
    let addr = node.http_addr().ok_or("no HTTP address")?;
    let url = format!("ws://{addr}/room/bench/ws");

    // S − 1 client sockets over the client processes, plus the sender here.
    let processes = CLIENT_PROCESSES.min(s - 1).max(1);
    let shares: Vec<usize> = (0..processes)
        .map(|i| (s - 1) / processes + usize::from(i < (s - 1) % processes))
        .collect();
    let rss_before = rss_bytes()?;
    let (clients, lines) = Clients::start(&shares, b, &url)?;
    let client_mem = clients.wait_all(&lines, CLIENT_READY)?;
    let mut sender = connect(&url)?;
    let deadline = Instant::now() + RESULT_DEADLINE;
    while node.status().objects.contains_key("room") {
        if Instant::now() > deadline {
            return Err("the room was never evicted".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let per_socket = rss_bytes()?.saturating_sub(rss_before) as f64 / s as f64;
    let client_per_socket = client_mem
        .iter()
        .map(|m| {
            m.parse::<f64>()
                .map_err(|e| format!("client memory {m:?}: {e}"))
        })
        .sum::<Result<f64, String>>()?
        / processes as f64;

    let (busy0, total0) = machine_jiffies()?;
    let ours0 = process_jiffies("self") + clients.cpu_jiffies();
    let start = Instant::now();
    for i in 0..b {
        sender
            .send(Frame::text(i.to_string()))
            .map_err(|e| format!("sending: {e}"))?;
    }
    read_all(std::slice::from_mut(&mut sender), b)?;
    clients.wait_all(&lines, CLIENT_DONE)?;
    let elapsed = start.elapsed();
    let (busy1, total1) = machine_jiffies()?;
    let ours1 = process_jiffies("self") + clients.cpu_jiffies();

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let window = (total1 - total0).max(1) as f64;
    let busy = (busy1 - busy0) as f64 / window * cpus;
    let others = (busy1 - busy0).saturating_sub(ours1 - ours0) as f64 / window * cpus;
    drop(sender);
    clients.finish()?;
    node.shutdown();
    Ok(vec![
        Row::higher(
            "ws-broadcast",
            "deliveries/s",
            super::rate(s as u64 * b, elapsed),
        ),
        Row::lower("ws-idle-socket-mem", "bytes/socket", per_socket),
        Row::lower("ws-client-socket-mem", "bytes/socket", client_per_socket),
        Row::lower("ws-broadcast-busy", "cpus", busy),
        Row::lower("ws-broadcast-others-busy", "cpus", others),
    ])
}
