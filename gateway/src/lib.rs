//! # cairn-gateway — HTTP/1.1 and WebSockets on Cairn's own reactor
//!
//! The front door of a Cairn node: requests for `/{class}/{key}/{rest...}` go to an
//! installed [`Dispatcher`] (the object layer), WebSockets are held by the node that
//! accepted them and their events go to an installed [`SocketHandler`]. There is no second
//! runtime: sockets are registered with the scheduler's mio driver, every connection and
//! socket is a Cairn process, and timeouts sleep on the driver's timing wheel.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_gateway::{Body, DispatchFuture, Dispatcher, Gateway, Request, Response, Route};
//!
//! struct Hello;
//! impl Dispatcher for Hello {
//!     fn dispatch(&self, route: Route, _request: Request) -> DispatchFuture {
//!         Box::pin(async move { Ok(Response::new(Body::from(format!("hello {}\n", route.object())))) })
//!     }
//! }
//!
//! let rt = cairn_scheduler::Runtime::builder().workers(1).build().unwrap();
//! let gateway = Gateway::builder(rt.handle(), Arc::new(Hello))
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .unwrap();
//! let addr = gateway.local_addr().unwrap();
//! # use std::io::{Read, Write};
//! let mut client = std::net::TcpStream::connect(addr).unwrap();
//! client.write_all(b"GET /room/lobby/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.ends_with("hello room/lobby\n"));
//! gateway.shutdown();
//! rt.shutdown();
//! ```
//!
//! ## Why these crates
//! * **hyper 1.x** (HTTP/1.1 server, `http1` + `server` features only): its `rt` traits
//!   ([`hyper::rt::Read`]/[`hyper::rt::Write`], `Timer`, `Executor`) make it
//!   runtime-agnostic, so it runs on Cairn as quinn does; it needs only `tokio::sync`.
//! * **async-tungstenite over tungstenite** for WebSockets: tungstenite is the most used
//!   Rust WebSocket implementation, passes the Autobahn suite, and enforces frame and message
//!   size limits itself; async-tungstenite drives it over plain `futures-io` traits, so no
//!   tokio type is involved at all. fastwebsockets is faster but needs tokio's I/O traits,
//!   and its upgrade helper pulls in hyper-util's tokio glue; a WebSocket's cost here is
//!   dominated by the object call behind each message, not by framing.
//!
//! ## Answers
//! | situation | answer |
//! |---|---|
//! | path not `/{class}/{key}/...` (`/` too, unless `index` names a path to serve it as; a path `aliases` lists is served as its target) | 404 |
//! | dispatcher: [`DispatchError::UnknownClass`] | 404 |
//! | class or key not UTF-8, or longer than `max_segment_bytes` | 400 |
//! | malformed request (bad request line, header, chunk, length) | 400 (hyper) |
//! | request head over `max_header_bytes` or `max_headers` fields | 431 (hyper) |
//! | body over `max_body_bytes` (declared, or counted while streaming) | 413 |
//! | body malformed or cut off (bad chunk, early end) | 400 |
//! | head not complete within `header_read_timeout` | connection closed |
//! | no byte moving for `idle_timeout` while waiting on the client | connection closed |
//! | `max_connections` open | 503, `Retry-After: 1` |
//! | handler error ([`DispatchError::Failed`]) or panic | 500, request id in body and log |
//! | [`DispatchError::Overloaded`] | 503, `Retry-After` |
//! | [`DispatchError::Unavailable`] | 503, `Retry-After: 1` |
//! | no answer within `handler_timeout` | 504 |
//! | WebSocket frame or message over the limit | close 1009 |
//! | WebSocket over `max_sockets_per_object` | close 1013 |
//!
//! Every response carries `x-request-id`.
//!
//! ## Pieces
//! - `tcp`: the listener and the stream on the driver (hyper's I/O traits, idle deadline).
//! - [`rt`]: hyper's executor and timer on Cairn.
//! - `conn`: accept loop, connection processes, the connection limit.
//! - `service`: one request: limits, routing, dispatch, error answers.
//! - [`route`]: `/{class}/{key}/{rest}` parsing.
//! - `ws`: sockets held by the gateway, the hibernation-style API.
//! - [`memory`]: serving a connection from bytes in memory (tests, the fuzz target).

#![deny(unsafe_code)]

mod body;
mod config;
mod conn;
mod dispatch;
pub mod memory;
pub mod route;
pub mod rt;
mod service;
#[allow(unsafe_code)] // Reads into uninitialised buffers; see `tcp::as_write_only_bytes`.
mod tcp;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_scheduler::{ActorRef, Ctx, Handle};

pub use body::{Body, BodyError};
pub use config::{GatewayConfig, WebSocketConfig, MIN_HEADER_BYTES};
pub use dispatch::{DispatchError, DispatchFuture, Dispatcher, Request, RequestId, Response};
pub use route::{ObjectKey, Route, RouteError};
pub use tcp::{TcpConn, TcpListener};
pub use ws::{
    accept_websocket, is_websocket_upgrade, AcceptWebSocket, AutoResponse, Delivery, EventFuture,
    SocketError, SocketEvent, SocketEventKind, SocketHandler, SocketId, SocketInfo, Sockets,
    UpgradeError, WsMessage, MAX_TAGS, MAX_TAG_BYTES,
};

use conn::{AcceptCmd, LiveConnections};
use service::Shared;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Binding or registering the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Configures a [`Gateway`].
pub struct GatewayBuilder {
    handle: Handle,
    config: GatewayConfig,
    dispatcher: Arc<dyn Dispatcher>,
    websockets: Option<(Sockets, Arc<dyn SocketHandler>)>,
}

impl GatewayBuilder {
    /// Replaces the default limits.
    pub fn config(mut self, config: GatewayConfig) -> Self {
        self.config = config;
        self
    }

    /// Enables WebSockets: accepted sockets go into `sockets`, their events to `handler`.
    /// Without this, a dispatcher's accept is answered 500.
    pub fn websockets(mut self, sockets: Sockets, handler: Arc<dyn SocketHandler>) -> Self {
        self.websockets = Some((sockets, handler));
        self
    }

    fn shared(self) -> Arc<Shared> {
        Arc::new(Shared::new(
            self.config,
            self.handle,
            self.dispatcher,
            self.websockets,
        ))
    }

    /// Starts serving on `addr` (port 0 picks a free port).
    pub fn bind(self, addr: SocketAddr) -> Result<Gateway, GatewayError> {
        let listener = TcpListener::bind(self.handle.driver(), addr)
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let shared = self.shared();
        let live = Arc::new(LiveConnections::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            let live = Arc::clone(&live);
            shared
                .handle
                .clone()
                .spawn(move |ctx: Ctx<AcceptCmd>| conn::accept_loop(ctx, listener, shared, live))
        };
        tracing::info!(%local_addr, "gateway listening");
        Ok(Gateway {
            shared,
            local_addr: Some(local_addr),
            acceptor: Some(acceptor),
            live,
        })
    }

    /// A gateway with no listener, serving only what [`Gateway::serve_connection`] is given
    /// (tests and the fuzz target).
    pub fn detached(self) -> Gateway {
        Gateway {
            shared: self.shared(),
            local_addr: None,
            acceptor: None,
            live: Arc::new(LiveConnections::default()),
        }
    }
}

/// A running gateway. Dropping it does not stop it: call [`Gateway::shutdown`] (runtime
/// shutdown stops it too).
pub struct Gateway {
    shared: Arc<Shared>,
    local_addr: Option<SocketAddr>,
    acceptor: Option<ActorRef<AcceptCmd>>,
    live: Arc<LiveConnections>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder serving on `handle`'s scheduler and routing to `dispatcher`.
    pub fn builder(handle: Handle, dispatcher: Arc<dyn Dispatcher>) -> GatewayBuilder {
        GatewayBuilder {
            handle,
            config: GatewayConfig::default(),
            dispatcher,
            websockets: None,
        }
    }

    /// The address it listens on (`None` when detached).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The WebSocket registry, if WebSockets are enabled.
    pub fn sockets(&self) -> Option<&Sockets> {
        self.shared.websockets.as_ref().map(|(sockets, _)| sockets)
    }

    /// Open connections and sockets.
    pub fn connections(&self) -> usize {
        self.shared.limiter.active()
    }

    /// The limits in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    /// Serves one connection on the calling task until it ends, with the gateway's limits
    /// and dispatcher (not counted against `max_connections`).
    pub async fn serve_connection<I>(&self, io: I) -> Result<(), hyper::Error>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let clock = rt::ConnClock::new(self.shared.handle.driver());
        let builder = conn::http1_builder(&self.shared, &clock);
        let shared = Arc::clone(&self.shared);
        let ids = std::cell::RefCell::new(service::RequestIds::default());
        let service = hyper::service::service_fn(move |request| {
            let id = ids.borrow_mut().next(&shared);
            service::serve(Arc::clone(&shared), Arc::clone(&clock), id, request)
        });
        builder.serve_connection(io, service).with_upgrades().await
    }

    /// Stops accepting, lets each HTTP connection finish its request in flight, and closes
    /// every WebSocket with 1001 (Going Away). Returns without waiting for them.
    pub fn shutdown(&self) {
        if let Some(acceptor) = &self.acceptor {
            let _ = acceptor.try_send(AcceptCmd::Stop);
        }
        self.live.shutdown_all();
        if let Some(sockets) = self.sockets() {
            sockets.close_all();
        }
    }
}
