//! HTTP and WebSockets into objects: the node's [`cairn_gateway::Dispatcher`] and
//! [`cairn_gateway::SocketHandler`], the `cairn.http` process that takes requests forwarded
//! over the mesh, and what an object's handlers use ([`ObjectCtx::accept_websocket`],
//! [`ObjectCtx::websockets`]).
//!
//! ```
//! use std::io::{Read, Write};
//! use cairn::bytes::Bytes;
//! use cairn::http;
//! use cairn::prelude::*;
//!
//! struct Hits { n: u64 }
//!
//! impl Object for Hits {
//!     const CLASS: &'static str = "hits";
//!     type Msg = ();
//!     async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
//!         Ok(Hits { n: ctx.storage().get("n")?.unwrap_or(0) })
//!     }
//!     async fn handle(&mut self, (): (), _: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
//!         Ok(())
//!     }
//!     // GET /hits/{key}/...: counts, durably, and answers the count (once it is stored).
//!     async fn fetch(&mut self, req: http::Request<Bytes>, ctx: &mut ObjectCtx<Self>)
//!         -> Result<http::Response<Bytes>, ActorError> {
//!         self.n += 1;
//!         ctx.storage().put("n", &self.n)?;
//!         Ok(http::Response::new(Bytes::from(format!("{} {}", req.uri().path(), self.n))))
//!     }
//! }
//!
//! let node = Node::builder().temporary().http("127.0.0.1:0".parse().unwrap()).start().unwrap();
//! node.host_local::<Hits>();
//! let get = |path: &str| {
//!     let mut tcp = std::net::TcpStream::connect(node.http_addr().unwrap()).unwrap();
//!     write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//!     let mut answer = String::new();
//!     tcp.read_to_string(&mut answer).unwrap();
//!     answer
//! };
//! get("/hits/home/");
//! let answer = get("/hits/home/again");
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.ends_with("/hits/home/again 2"));
//! assert!(get("/nonesuch/home/").starts_with("HTTP/1.1 404")); // class not hosted
//! node.shutdown();
//! ```
//!
//! ## A request's path
//! The gateway parses `/{class}/{key}/{rest...}` and hands the request here. The class's
//! entry in the node's table (filled by `Node::host`/`host_local`) knows the object type:
//! it computes the key's owner exactly as a message send does (see `routing`). On the owner
//! the request becomes one [`ObjectMsg::Http`] in the object's mailbox and
//! [`Object::fetch`] runs like any handler: implicit transaction, output gate (the response
//! is a held [`Reply`], released when the handler's writes are durable), one at a time. On
//! any other node the request, body collected, crosses the mesh to the owner's
//! [`HTTP_PROCESS`], which runs the same path there ([`MAX_HOPS`] bounds re-forwarding
//! while views of the membership differ) and sends the response back.
//!
//! | outcome | answer |
//! |---|---|
//! | class not hosted here | 404 |
//! | object's mailbox full / forwarded requests at [`MAX_FORWARDED`] | 503 + `Retry-After` |
//! | owner unreachable, no owner, nodes disagree | 503 + `Retry-After: 1` |
//! | handler error or panic (its reply dropped) | 500 with the request id |
//! | no answer within the gateway's `handler_timeout` | 504 |
//!
//! ## WebSockets (hibernation)
//! The node that accepted a socket holds it in its gateway's [`Sockets`] registry; the
//! object is not involved in keeping it open and may be evicted. A frame on the socket is
//! routed like a request (to the owner, forwarded if remote) and re-activates the object
//! if it was evicted; the socket reads its next frame once the handler finished. The
//! object acts through [`WebSockets`]: a socket id names the node that holds it, so a send
//! goes to that node's registry (locally, or through its `cairn.http` process); a
//! broadcast and a listing ask every member. Sends from a handler are output: held by the
//! gate until the handler's writes are durable.
//!
//! ## Invariants
//! * Every queue that grows with remote input is bounded: the `cairn.http` mailbox, and
//!   at most [`MAX_FORWARDED`] forwarded requests and events in flight per node.
//! * A request is handled on one node only: its owner as this node sees the mesh.
//!
//! ## Modules
//! This module owns request routing: the node's dispatcher and socket-event handler, the
//! per-class table, and delivering a request or event to the owner's mailbox (or handing
//! it to forwarding). `forward` owns the `cairn.http` process and the wire forms;
//! `websocket` owns the object-facing socket API.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use cairn_gateway::{
    accept_websocket, AcceptWebSocket, Body, DispatchError, DispatchFuture, Dispatcher,
    EventFuture, Gateway, GatewayConfig, GatewayError, ObjectKey, SocketEvent, SocketEventKind,
    SocketHandler, Sockets,
};
use cairn_net::{Mesh, NodeEvent};
use cairn_scheduler::trace::{current_request, with_request};
use cairn_scheduler::{CallError, Ctx, Handle, Message, NodeId, Reply, SendError, SpawnOptions};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::activation::{HandlerFuture, Lookup};
use super::routing::{is_client, BoxFuture, Route, MAX_HOPS};
use super::{Object, ObjectCtx, ObjectMsg, ObjectRef, Objects};
use crate::placement::{self, Candidate};

mod forward;
mod websocket;

pub(crate) use forward::start_forwarding;
use forward::*;
pub use websocket::WebSockets;

pub use cairn_gateway::{
    AutoResponse, SocketError, SocketId, SocketInfo, UpgradeError, WebSocketConfig, WsMessage,
};

/// The registered name of the process on every meshed node that takes HTTP requests and
/// socket events forwarded by other nodes, and socket commands for the sockets it holds.
pub const HTTP_PROCESS: &str = "cairn.http";
/// Forwarded requests and socket events a node runs at once; more are answered 503 (a
/// guess: enough for every connection of a busy edge, small enough to bound memory).
pub const MAX_FORWARDED: usize = 1024;
/// The close code sockets get when their object's owner changed (moved or failed): 1012,
/// Service Restart — the client should reconnect, reaching the new owner.
pub const CLOSE_OWNER_CHANGED: u16 = 1012;
/// How long listing or reading another node's sockets waits for it.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// A call for an object's HTTP or WebSocket handlers (one mailbox message; boxed so every
/// class's mailbox slots stay as small as its own messages).
pub struct HttpCall(Box<CallKind>);

// Boxed whole in `HttpCall`, so the larger `Fetch` costs no mailbox slot anything.
#[allow(clippy::large_enum_variant)]
enum CallKind {
    /// The request, its response's port, and the request id current where it was routed
    /// (the gateway's, or a forwarding node's from the mesh frame).
    Fetch(
        http::Request<Bytes>,
        Reply<Result<http::Response<Bytes>, Failure>>,
        Option<u64>,
    ),
    Socket(SocketId, SocketEventKind, Reply<Result<(), Failure>>),
}

/// Runs the handler an [`HttpCall`] is for (inside the activation's gate): the response
/// and the event's acknowledgement are replies, so they leave once the writes are durable.
pub(super) fn handler<'a, O: Object>(
    object: &'a mut O,
    octx: &'a mut ObjectCtx<O>,
    call: HttpCall,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        match *call.0 {
            CallKind::Fetch(request, reply, request_id) => {
                // The id current where the call was routed (here or, forwarded, on the node
                // that received it): the handler's logs and calls carry it.
                let span = request_span(request_id, "fetch", O::CLASS, octx.key());
                span.in_scope(|| {
                    tracing::debug!(target: "cairn::request", "calling the object's fetch handler");
                });
                let response = within_request(request_id, object.fetch(request, octx))
                    .instrument(span)
                    .await?;
                let _ = reply.send(Ok(response));
            }
            CallKind::Socket(socket, kind, reply) => {
                match kind {
                    SocketEventKind::Message(msg) => {
                        object.websocket_message(socket, msg, octx).await?
                    }
                    SocketEventKind::Close { code, reason } => {
                        object.websocket_close(socket, code, reason, octx).await?
                    }
                    SocketEventKind::Error(error) => {
                        object.websocket_error(socket, error, octx).await?
                    }
                }
                let _ = reply.send(Ok(()));
            }
        }
        Ok(())
    })
}

/// A call that reached an activation deposed since it was routed (its shard is served
/// elsewhere now): routed again, as one more hop, and answered from wherever it lands, so
/// the deposed activation never runs a handler for it. Runs as a process of its own: each
/// call holds a gateway request or a socket event, which the gateway bounds.
pub(super) fn reroute<O: Object>(objects: &Arc<Objects>, key: &str, call: HttpCall) {
    let (objects, key) = (Arc::clone(objects), key.to_owned());
    objects
        .handle
        .clone()
        .spawn(move |_ctx: Ctx<()>| async move {
            match *call.0 {
                CallKind::Fetch(request, reply, request_id) => {
                    let routed = fetch_object::<O>(objects, &key, request, 1);
                    let _ = reply.send(within_request(request_id, routed).await);
                }
                CallKind::Socket(socket, kind, reply) => {
                    let _ = reply.send(event_object::<O>(objects, key, socket, kind, 1).await);
                }
            }
        });
}

/// The span of one request's work for an object (`what`: where it is), with the request id
/// as the gateway shows it in `x-request-id` (16 hex digits), the class and the key's hash
/// (keys may be personal data). Fields are only formatted when the span is enabled.
///
/// No span at all ([`tracing::Span::none`]) when no subscriber takes debug spans, the
/// check `debug_span!` itself makes first: a disabled span still hashes the key and
/// builds its fields, and reports every enter and exit (each poll) to the `log` crate,
/// since tracing's `log` feature is on in the tree (through quinn).
pub(super) fn request_span(
    request: Option<u64>,
    what: &str,
    class: &str,
    key: &str,
) -> tracing::Span {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    if tracing::Level::DEBUG > STATIC_MAX_LEVEL || tracing::Level::DEBUG > LevelFilter::current() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        target: "cairn::request",
        "request",
        request_id = %RequestHex(request),
        what,
        class,
        key_hash = %format_args!("{:016x}", super::activation::key_hash(key)),
    )
}

/// A request id as `x-request-id` shows it (`-` for none).
pub(super) struct RequestHex(pub(super) Option<u64>);

impl std::fmt::Display for RequestHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id:016x}"),
            None => f.write_str("-"),
        }
    }
}

/// The answer of [`Object::fetch`]'s default: 404.
pub fn not_found() -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from_static(b"not found\n"));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}

/// Why a request or event did not reach its object's handler (crosses the mesh).
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
enum Failure {
    #[error("unknown object class {0:?}")]
    UnknownClass(String),
    #[error("overloaded")]
    Overloaded,
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("handler failed: {0}")]
    Failed(String),
}

impl From<Failure> for DispatchError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::UnknownClass(class) => DispatchError::UnknownClass(class),
            Failure::Overloaded => DispatchError::Overloaded {
                retry_after: Duration::from_secs(1),
            },
            Failure::Unavailable(why) => DispatchError::Unavailable(why),
            Failure::Failed(why) => DispatchError::Failed(why),
        }
    }
}

fn call_failure(node: NodeId, e: CallError) -> Failure {
    match e {
        // The gateway's own timeout answers 504 first; this is the owner's silence.
        CallError::Timeout => Failure::Unavailable(format!("node {node} did not answer")),
        other => Failure::Unavailable(format!("node {node}: {other}")),
    }
}

type FetchFn = fn(
    Arc<Objects>,
    &str,
    http::Request<Bytes>,
    u8,
) -> BoxFuture<Result<http::Response<Bytes>, Failure>>;
type EventFn =
    fn(Arc<Objects>, String, SocketId, SocketEventKind, u8) -> BoxFuture<Result<(), Failure>>;

/// A hosted class's entry points (monomorphized when it is hosted).
#[derive(Clone, Copy)]
struct ClassHttp {
    fetch: FetchFn,
    event: EventFn,
}

/// The node's HTTP side, installed as a runtime extension by `Objects::start`.
#[derive(Default)]
pub(crate) struct HttpState {
    classes: RwLock<HashMap<String, ClassHttp>>,
    /// The sockets this node's gateway holds (set when the gateway starts).
    sockets: OnceLock<Sockets>,
    gateway: OnceLock<Gateway>,
    /// Forwarded requests and events running now (at most [`MAX_FORWARDED`]).
    forwarded: Arc<AtomicUsize>,
    /// Objects of placed classes with sockets held here, and the owner that accepted them:
    /// when membership changes and an owner is no longer theirs, their sockets are closed
    /// with [`CLOSE_OWNER_CHANGED`]. Bounded by the gateway's socket limit.
    owners: parking_lot::Mutex<HashMap<ObjectKey, NodeId>>,
}

impl HttpState {
    pub(crate) fn of(handle: &Handle) -> Arc<HttpState> {
        handle
            .extension::<HttpState>()
            .expect("Objects::start installs the HTTP state")
    }

    fn class(&self, name: &str) -> Option<ClassHttp> {
        self.classes.read().get(name).copied()
    }

    /// The gateway's address, if it serves.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.gateway.get().and_then(Gateway::local_addr)
    }

    fn permit(&self) -> Option<ForwardPermit> {
        let n = self.forwarded.fetch_add(1, Ordering::AcqRel);
        let permit = ForwardPermit(self.forwarded.clone());
        (n < MAX_FORWARDED).then_some(permit)
    }
}

/// Makes class `O` reachable over HTTP (called when it is hosted).
pub(super) fn register<O: Object>(handle: &Handle) {
    HttpState::of(handle).classes.write().insert(
        O::CLASS.to_owned(),
        ClassHttp {
            fetch: fetch_object::<O>,
            event: event_object::<O>,
        },
    );
}

/// HTTP options of a [`crate::NodeBuilder`].
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpOptions {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) config: GatewayConfig,
}

/// Starts the node's gateway on `options.addr` (if set). Requests for the reserved class
/// `pages.0` go to `pages.1` (the node's observability pages) instead of an object.
pub(crate) fn serve(
    objects: &Arc<Objects>,
    options: HttpOptions,
    pages: (&'static str, Arc<dyn Dispatcher>),
) -> Result<(), GatewayError> {
    let Some(addr) = options.addr else {
        return Ok(());
    };
    let handle = &objects.handle;
    let state = HttpState::of(handle);
    let sockets = Sockets::new(handle.node(), options.config.websocket.clone());
    let _ = state.sockets.set(sockets.clone());
    let dispatcher = Arc::new(ObjectDispatcher {
        objects: Arc::downgrade(objects),
        state: state.clone(),
        pages,
    });
    let events = Arc::new(ObjectEvents {
        objects: Arc::downgrade(objects),
        state: state.clone(),
    });
    let mut config = options.config;
    config.aliases.extend(crate::observe::aliases());
    let gateway = Gateway::builder(handle.clone(), dispatcher)
        .config(config)
        .websockets(sockets, events)
        .bind(addr)?;
    let _ = state.gateway.set(gateway);
    Ok(())
}

/// Puts `call` in the object's mailbox here, re-activating it if needed; a full mailbox is
/// `Overloaded` (never waits: Durable Objects' "overloaded" answer).
async fn deliver_local<O: Object>(target: &ObjectRef<O>, call: CallKind) -> Result<(), Failure> {
    let mut msg = ObjectMsg::Http(HttpCall(Box::new(call)));
    loop {
        match target.activation() {
            Lookup::Live(a) => match a.try_send_ungated(msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(_)) => return Err(Failure::Overloaded),
                // The activation closed meanwhile (evicting): look it up again.
                Err(e) => msg = e.into_inner(),
            },
            Lookup::Exiting(pid) => {
                target.objects.handle.wait_exit(pid).await;
            }
        }
    }
}

/// Where a request or event for `(O, key)` runs: here, or on the owner through its
/// [`HTTP_PROCESS`].
enum Target {
    Here,
    Remote(Mesh, NodeId),
}

async fn target_of<O: Object>(target: &ObjectRef<O>, hops: u8) -> Result<Target, Failure> {
    match target
        .route_waiting(hops)
        .await
        .map_err(|e| Failure::Unavailable(e.to_string()))?
    {
        Route::Local => Ok(Target::Here),
        Route::Remote(mesh, node, _, _) => {
            if hops >= MAX_HOPS {
                tracing::warn!(object = %target.name, owner = %node, "dropping a request: nodes disagree about its owner");
                return Err(Failure::Unavailable(
                    "nodes disagree about the object's owner".to_owned(),
                ));
            }
            Ok(Target::Remote(mesh, node))
        }
    }
}

/// How long a forwarded request may wait for its owner: past the gateway's own
/// `handler_timeout` (which answers 504 first).
fn forward_timeout(objects: &Objects) -> Duration {
    HttpState::of(&objects.handle)
        .gateway
        .get()
        .map_or(GatewayConfig::default().handler_timeout, |g| {
            g.config().handler_timeout
        })
        + Duration::from_secs(1)
}

/// Routes `request` to the object `(O, key)` and answers with its response. The reference
/// is made before the future, which then holds no copy of `key` (nor its caller one).
fn fetch_object<O: Object>(
    objects: Arc<Objects>,
    key: &str,
    request: http::Request<Bytes>,
    hops: u8,
) -> BoxFuture<Result<http::Response<Bytes>, Failure>> {
    let target = ObjectRef::<O>::new(objects, key);
    Box::pin(async move {
        let objects = &target.objects;
        match target_of(&target, hops).await? {
            Target::Here => {
                let (reply, answer) = Reply::pair();
                let call = CallKind::Fetch(request, reply, current_request());
                deliver_local(&target, call).await?;
                let mut response = answer.await.map_err(|e| {
                    Failure::Failed(format!("the object's handler gave no response ({e})"))
                })??;
                // Read only for an accepted WebSocket: a plain response allocates no
                // extension map for it.
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    response
                        .extensions_mut()
                        .insert(AcceptedBy(objects.handle.node()));
                }
                Ok(response)
            }
            // Boxed on its own: the mesh call's state is larger than the whole local path,
            // and inlined it made every request's future (local ones too) too large for
            // the allocator's small-size caches, each paying a slow-path malloc and free.
            Target::Remote(mesh, node) => {
                let key = target.key().to_owned();
                forward_fetch::<O>(objects, key, request, hops, mesh, node).await
            }
        }
    })
}

/// [`fetch_object`]'s remote path: the request crosses the mesh to `node`'s
/// [`HTTP_PROCESS`] and its answer comes back.
fn forward_fetch<O: Object>(
    objects: &Objects,
    key: String,
    request: http::Request<Bytes>,
    hops: u8,
    mesh: Mesh,
    node: NodeId,
) -> BoxFuture<Result<http::Response<Bytes>, Failure>> {
    tracing::debug!(
        target: "cairn::request",
        request_id = %RequestHex(current_request()),
        owner = %node,
        hops,
        "forwarding the request to the object's owner"
    );
    let timeout = forward_timeout(objects);
    Box::pin(async move {
        let request = WireRequest::new(request);
        let answer = mesh
            .handle()
            .named_ref::<HttpMsg>(HTTP_PROCESS, node)
            .call(
                |reply| HttpMsg::Fetch {
                    class: O::CLASS.to_owned(),
                    key,
                    hops: hops + 1,
                    request,
                    reply,
                },
                timeout,
            )
            .await
            .map_err(|e| call_failure(node, e))?;
        let mut response = answer?.into_response()?;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            response.extensions_mut().insert(AcceptedBy(node));
        }
        Ok(response)
    })
}

fn event_object<O: Object>(
    objects: Arc<Objects>,
    key: String,
    socket: SocketId,
    kind: SocketEventKind,
    hops: u8,
) -> BoxFuture<Result<(), Failure>> {
    Box::pin(async move {
        let target = ObjectRef::<O>::new(objects.clone(), &key);
        match target_of(&target, hops).await? {
            Target::Here => {
                let (reply, answer) = Reply::pair();
                // Events wait for room (backpressure onto the socket), never refused.
                target
                    .send_ungated(ObjectMsg::Http(HttpCall(Box::new(CallKind::Socket(
                        socket, kind, reply,
                    )))))
                    .await;
                answer
                    .await
                    .map_err(|e| Failure::Failed(format!("the socket handler failed ({e})")))?
            }
            Target::Remote(mesh, node) => {
                let timeout = forward_timeout(&objects);
                let answer = mesh
                    .handle()
                    .named_ref::<HttpMsg>(HTTP_PROCESS, node)
                    .call(
                        |reply| HttpMsg::Event {
                            class: O::CLASS.to_owned(),
                            key,
                            hops: hops + 1,
                            socket: (socket.node, socket.seq),
                            event: kind.into(),
                            reply,
                        },
                        timeout,
                    )
                    .await
                    .map_err(|e| call_failure(node, e))?;
                answer
            }
        }
    })
}

/// The gateway's way into objects.
struct ObjectDispatcher {
    objects: Weak<Objects>,
    state: Arc<HttpState>,
    /// A reserved class name and what serves it.
    pages: (&'static str, Arc<dyn Dispatcher>),
}

impl Dispatcher for ObjectDispatcher {
    fn dispatch(
        &self,
        route: cairn_gateway::Route,
        request: cairn_gateway::Request,
    ) -> DispatchFuture {
        if route.class() == self.pages.0 {
            return self.pages.1.dispatch(route, request);
        }
        let class = self.state.class(route.class());
        let objects = self.objects.upgrade();
        let state = self.state.clone();
        // The gateway makes its request id current while this runs and while the future is
        // polled, so the calls made for it (also across the mesh) carry it.
        let request_id = current_request();
        let span = request_span(request_id, "gateway", route.class(), route.key());
        let work = async move {
            let Some(class) = class else {
                return Err(DispatchError::UnknownClass(route.class().to_owned()));
            };
            let objects = objects
                .ok_or_else(|| DispatchError::Unavailable("the node is stopping".to_owned()))?;
            let (parts, body) = request.into_parts();
            // Over the limit or cut off: the gateway answers 413/400 whatever this says.
            let body = body
                .collect()
                .await
                .map_err(|e| DispatchError::Failed(format!("reading the body: {e}")))?;
            let upgrade = upgrade_head(&parts);
            let request = http::Request::from_parts(parts, body);
            let response = (class.fetch)(objects.clone(), route.key(), request, 0).await?;
            let owner = response.extensions().get::<AcceptedBy>().copied();
            let response = into_gateway_response(response, upgrade);
            if let (http::StatusCode::SWITCHING_PROTOCOLS, Some(AcceptedBy(owner))) =
                (response.status(), owner)
            {
                if objects.is_placed(route.class()) {
                    state.owners.lock().insert(route.object(), owner);
                }
            }
            Ok(response)
        };
        Box::pin(work.instrument(span))
    }
}

/// `future` with `request` current while it is polled, as the scheduler's `in_request`,
/// but pinned where it is awaited: no allocation (this wraps every request's handler).
///
/// A struct, not an `async fn`: an `async fn` keeps its argument and the pinned local it is
/// moved into as two slots of its state, so it was twice the size of `future`. The
/// dispatcher's boxed future then outgrew the allocator's small-size caches, and every
/// request paid a slow-path `malloc` and `free` (and the copies) for it.
fn within_request<F: Future>(request: Option<u64>, future: F) -> WithinRequest<F> {
    WithinRequest { request, future }
}

pin_project_lite::pin_project! {
    /// See [`within_request`].
    struct WithinRequest<F> {
        request: Option<u64>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for WithinRequest<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        with_request(*this.request, || future.poll(cx))
    }
}

/// A copy of an upgrade request's head, to complete the handshake if the object accepts
/// (none, and no copy of the headers, for a request without `Upgrade`).
fn upgrade_head(parts: &http::request::Parts) -> Option<cairn_gateway::Request> {
    if !parts.headers.contains_key(http::header::UPGRADE) {
        return None;
    }
    let mut head = http::Request::new(Body::empty());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.headers_mut() = parts.headers.clone();
    cairn_gateway::is_websocket_upgrade(&head).then_some(head)
}

fn into_gateway_response(
    response: http::Response<Bytes>,
    upgrade: Option<cairn_gateway::Request>,
) -> cairn_gateway::Response {
    let (mut parts, body) = response.into_parts();
    if let Some(accept) = parts.extensions.remove::<Accepted>() {
        let Some(head) = upgrade else {
            return UpgradeError::NotWebSocket.into_response();
        };
        let accept = AcceptWebSocket {
            tags: accept.tags,
            attachment: accept.attachment.map(Bytes::from),
            initial: Vec::new(),
        };
        return accept_websocket(&head, accept).unwrap_or_else(UpgradeError::into_response);
    }
    http::Response::from_parts(parts, Body::from(body))
}

/// The gateway's sockets' way into objects.
struct ObjectEvents {
    objects: Weak<Objects>,
    state: Arc<HttpState>,
}

impl SocketHandler for ObjectEvents {
    fn on_event(&self, event: SocketEvent) -> EventFuture {
        let class = self.state.class(&event.object.class);
        let objects = self.objects.upgrade();
        Box::pin(async move {
            let (Some(class), Some(objects)) = (class, objects) else {
                return;
            };
            let object = event.object.to_string();
            if let Err(error) =
                (class.event)(objects, event.object.key, event.socket, event.kind, 0).await
            {
                tracing::warn!(%object, socket = %event.socket, %error, "socket event not handled");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Waker};

    #[test]
    fn within_request_is_no_larger_than_its_future_and_an_id() {
        // A future with a large state, as the dispatcher's is.
        let inner = async {
            let state = [7u8; 512];
            std::future::ready(()).await;
            state[0]
        };
        let inner_size = std::mem::size_of_val(&inner);
        let wrapped = within_request(Some(1), inner);
        assert!(
            // The id (16 bytes) and padding to its alignment.
            std::mem::size_of_val(&wrapped) <= inner_size + 16 + 8,
            "within_request keeps a second copy of its future: {} bytes for a {inner_size}-byte future",
            std::mem::size_of_val(&wrapped)
        );
    }

    #[test]
    #[cfg(feature = "cli")] // tracing-subscriber
    fn a_request_span_is_none_without_a_debug_subscriber_and_recorded_with_one() {
        // No subscriber anywhere in this test binary: nothing to build, enter or log.
        assert!(request_span(Some(1), "gateway", "hits", "home").is_none());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(Some(1), "gateway", "hits", "home");
            assert!(!span.is_disabled(), "a debug subscriber gets the span");
            assert_eq!(span.metadata().map(|m| m.name()), Some("request"));
        });
    }

    #[test]
    fn within_request_makes_its_id_current_while_polled_and_restores_the_previous() {
        let mut seen = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        with_request(Some(5), || {
            let mut polls = 0;
            let probe = std::future::poll_fn(|cx| {
                seen.push(current_request());
                polls += 1;
                if polls < 2 {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            let mut wrapped = pin!(within_request(Some(0xabc), probe));
            assert!(wrapped.as_mut().poll(&mut cx).is_pending());
            assert_eq!(current_request(), Some(5), "restored between polls");
            assert!(wrapped.as_mut().poll(&mut cx).is_ready());
            assert_eq!(current_request(), Some(5), "restored after the last poll");
        });
        assert_eq!(seen, [Some(0xabc), Some(0xabc)]);
    }
}
