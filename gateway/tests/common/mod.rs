//! A gateway on 127.0.0.1 with a stand-in for objects: a counter per key, each a Cairn
//! process, reached through the `Dispatcher` and `SocketHandler` seams.
//!
//! Routes (class `counter`): `GET /counter/{k}/` reads, `POST` adds the body's integer;
//! `/fail` errs, `/panic` panics, `/busy` is overloaded, `/slow` never answers, `/ws`
//! accepts a WebSocket tagged by `?tags=a,b`, `/id` answers the request id current in
//! `dispatch` and in its future after a call (`-` for none). Class `echo` answers the request body.
//! Socket messages: `inc` adds 1 and broadcasts `count=N` to the object's sockets;
//! `tag:T:text` sends `text` to the sockets tagged `T`; `attach:x` sets the attachment and
//! `attachment` answers it; `list` answers the object's socket count; `hold` waits until
//! the test releases it (a slow object); `panic` panics.

#![allow(dead_code)] // Each test binary uses part of this.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_gateway::{
    accept_websocket, AcceptWebSocket, Body, DispatchError, DispatchFuture, Dispatcher,
    EventFuture, Gateway, GatewayConfig, Request, RequestId, Response, Route, SocketEvent,
    SocketEventKind, SocketHandler, Sockets, WebSocketConfig, WsMessage,
};
use cairn_scheduler::{ActorRef, Handle, Message, Reply, Runtime};
use parking_lot::{Condvar, Mutex};

/// A counter object's messages.
pub enum CounterMsg {
    Add(i64, Reply<i64>),
}

/// One process per key, made on first use.
pub struct Counters {
    pub handle: Handle,
    processes: Mutex<HashMap<String, ActorRef<CounterMsg>>>,
}

impl Counters {
    fn process(&self, key: &str) -> ActorRef<CounterMsg> {
        self.processes
            .lock()
            .entry(key.to_owned())
            .or_insert_with(|| {
                self.handle.spawn(|mut ctx| async move {
                    let mut total = 0;
                    while let Some(msg) = ctx.recv().await {
                        if let Message::User(CounterMsg::Add(n, reply)) = msg {
                            total += n;
                            let _ = reply.send(total);
                        }
                    }
                })
            })
            .clone()
    }

    /// Adds `n` to `key`'s counter through its process; the new value.
    pub async fn add(&self, key: &str, n: i64) -> i64 {
        let process = self.process(key);
        process
            .call(|reply| CounterMsg::Add(n, reply), Duration::from_secs(5))
            .await
            .expect("counter process answers")
    }
}

pub struct TestDispatcher {
    pub counters: Arc<Counters>,
}

fn ok(body: impl Into<Body>) -> Response {
    Response::new(body.into())
}

impl Dispatcher for TestDispatcher {
    fn dispatch(&self, route: Route, request: Request) -> DispatchFuture {
        let counters = Arc::clone(&self.counters);
        let at_dispatch = RequestId::current();
        Box::pin(async move {
            match (route.class(), route.rest()) {
                ("echo", _) => Ok(ok(request
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| DispatchError::Failed(e.to_string()))?)),
                ("counter", "/") => {
                    let n = if request.method() == http::Method::POST {
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| DispatchError::Failed(e.to_string()))?;
                        std::str::from_utf8(&body)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(0)
                    } else {
                        0
                    };
                    Ok(ok(format!("{}", counters.add(route.key(), n).await)))
                }
                ("counter", "/id") => {
                    // A call to another process: the future is polled again for its answer.
                    counters.add(route.key(), 0).await;
                    let show =
                        |id: Option<RequestId>| id.map_or("-".to_owned(), |id| id.to_string());
                    let in_future = RequestId::current();
                    Ok(ok(format!("{} {}", show(at_dispatch), show(in_future))))
                }
                ("counter", "/fail") => Err(DispatchError::Failed(
                    "the handler failed on purpose".into(),
                )),
                ("counter", "/panic") => panic!("the handler panicked on purpose"),
                ("counter", "/busy") => Err(DispatchError::Overloaded {
                    retry_after: Duration::from_millis(1500),
                }),
                ("counter", "/slow") => std::future::pending().await,
                ("counter", "/ws") => {
                    let tags = request
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("tags="))
                        .map(|t| {
                            t.split(',')
                                .filter(|t| !t.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    let accept = AcceptWebSocket {
                        tags,
                        attachment: Some(Bytes::from_static(b"initial")),
                        initial: vec![WsMessage::Text("welcome".into())],
                    };
                    Ok(accept_websocket(&request, accept).unwrap_or_else(|e| e.into_response()))
                }
                ("counter", _) => {
                    let mut response = ok("no such path\n");
                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                    Ok(response)
                }
                (class, _) => Err(DispatchError::UnknownClass(class.to_owned())),
            }
        })
    }
}

/// Records every socket event, so tests wait on them instead of sleeping.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<Vec<SocketEvent>>,
    changed: Condvar,
}

impl EventLog {
    /// Waits (at most 10 s) until some event satisfies `pred`; returns it.
    pub fn wait_for(&self, mut pred: impl FnMut(&SocketEvent) -> bool) -> SocketEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut events = self.events.lock();
        loop {
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                !self.changed.wait_until(&mut events, deadline).timed_out(),
                "no matching socket event in 10 s; saw {:?}",
                *events
            );
        }
    }

    pub fn all(&self) -> Vec<SocketEvent> {
        self.events.lock().clone()
    }
}

pub struct TestHandler {
    pub sockets: Sockets,
    pub counters: Arc<Counters>,
    pub log: Arc<EventLog>,
    pub hold: Arc<Hold>,
}

/// `hold` makes the handler wait until released: a slow object.
#[derive(Default)]
pub struct Hold {
    pub started: AtomicBool,
    pub release: AtomicBool,
}

impl SocketHandler for TestHandler {
    fn on_event(&self, event: SocketEvent) -> EventFuture {
        let sockets = self.sockets.clone();
        let counters = Arc::clone(&self.counters);
        let log = Arc::clone(&self.log);
        let hold = Arc::clone(&self.hold);
        Box::pin(async move {
            if let SocketEventKind::Message(WsMessage::Text(text)) = &event.kind {
                let id = event.socket;
                if text == "inc" {
                    let n = counters.add(&event.object.key, 1).await;
                    sockets.send_to(&event.object, None, WsMessage::Text(format!("count={n}")));
                } else if let Some(rest) = text.strip_prefix("tag:") {
                    let (tag, body) = rest.split_once(':').unwrap();
                    sockets.send_to(&event.object, Some(tag), WsMessage::Text(body.to_owned()));
                } else if let Some(value) = text.strip_prefix("attach:") {
                    sockets
                        .set_attachment(id, Some(Bytes::from(value.to_owned())))
                        .unwrap();
                } else if text == "attachment" {
                    let a = sockets.attachment(id).unwrap().unwrap_or_default();
                    sockets.send(id, WsMessage::Binary(a)).unwrap();
                } else if text == "list" {
                    let n = sockets.list(&event.object, None).len();
                    sockets
                        .send(id, WsMessage::Text(format!("sockets={n}")))
                        .unwrap();
                } else if text == "hold" {
                    hold.started.store(true, Ordering::Release);
                    while !hold.release.load(Ordering::Acquire) {
                        counters.handle.sleep(Duration::from_millis(5)).await;
                    }
                } else if text == "panic" {
                    panic!("socket handler panicked on purpose");
                }
            }
            log.events.lock().push(event);
            log.changed.notify_all();
        })
    }
}

pub struct TestGateway {
    pub rt: Runtime,
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub log: Arc<EventLog>,
    pub sockets: Sockets,
    pub hold: Arc<Hold>,
}

impl TestGateway {
    pub fn start(config: GatewayConfig, ws: WebSocketConfig) -> Self {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let handle = rt.handle();
        let counters = Arc::new(Counters {
            handle: handle.clone(),
            processes: Mutex::new(HashMap::new()),
        });
        let sockets = Sockets::new(handle.node(), ws);
        let log = Arc::new(EventLog::default());
        let hold = Arc::new(Hold::default());
        let handler = Arc::new(TestHandler {
            sockets: sockets.clone(),
            counters: Arc::clone(&counters),
            log: Arc::clone(&log),
            hold: Arc::clone(&hold),
        });
        let gateway = Gateway::builder(handle, Arc::new(TestDispatcher { counters }))
            .config(config)
            .websockets(sockets.clone(), handler)
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let addr = gateway.local_addr().unwrap();
        TestGateway {
            rt,
            gateway,
            addr,
            log,
            sockets,
            hold,
        }
    }

    pub fn default() -> Self {
        Self::start(GatewayConfig::default(), WebSocketConfig::default())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits (at most 10 s) until `cond` holds.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.gateway.shutdown();
        self.rt.shutdown();
    }
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -s -i` with `args`; panics if curl is missing (`.ci/run` installs it).
pub fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_response(&text).unwrap_or_else(|| {
        panic!(
            "curl {args:?} gave no response: {text:?} {:?}",
            output.status
        )
    })
}

/// Parses the last response head in `text` (curl prints `100 Continue` heads too).
pub fn parse_response(text: &str) -> Option<Curl> {
    let start = text.rfind("HTTP/1.1 ")?;
    let (head, body) = text[start..].split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Curl {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// Sends `raw` on a fresh connection and reads until the server closes (or 10 s).
pub fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `stream` until the server closes it; how long that took.
pub fn time_until_closed(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the server did not close the connection within 30 s")
            }
            Err(_) => return start.elapsed(),
        }
    }
}
