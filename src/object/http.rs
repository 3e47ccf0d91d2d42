//! HTTP and WebSockets into objects: the node's [`cairn_gateway::Dispatcher`] and
//! [`cairn_gateway::SocketHandler`], the `cairn.http` process that takes requests forwarded
//! over the mesh, and what an object's handlers use ([`ObjectCtx::accept_websocket`],
//! [`ObjectCtx::websockets`]).
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
use cairn_scheduler::{CallError, Ctx, Handle, Message, NodeId, Reply, SendError, SpawnOptions};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::activation::{HandlerFuture, Lookup};
use super::routing::{is_client, BoxFuture, Route, MAX_HOPS};
use super::{Object, ObjectCtx, ObjectMsg, ObjectRef, Objects};
use crate::placement::{self, Candidate};

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

enum CallKind {
    Fetch(http::Request<Bytes>, Reply<http::Response<Bytes>>),
    Socket(SocketId, SocketEventKind, Reply<()>),
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
            CallKind::Fetch(request, reply) => {
                let response = object.fetch(request, octx).await?;
                let _ = reply.send(response);
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
                let _ = reply.send(());
            }
        }
        Ok(())
    })
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

/// The node whose object accepted a WebSocket (a response extension, set at the edge).
#[derive(Clone, Copy, Debug)]
struct AcceptedBy(NodeId);

/// Marks a fetch response as accepting the request's WebSocket (a response extension).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Accepted {
    tags: Vec<String>,
    attachment: Option<Vec<u8>>,
}

type Headers = Vec<(String, Vec<u8>)>;

fn headers_to_wire(headers: &http::HeaderMap) -> Headers {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn headers_from_wire(wire: Headers) -> Result<http::HeaderMap, Failure> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in wire {
        let bad = || Failure::Failed("a forwarded header is invalid".to_owned());
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
        let value = http::HeaderValue::from_bytes(&v).map_err(|_| bad())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A request as it crosses the mesh.
#[derive(Serialize, Deserialize)]
struct WireRequest {
    method: String,
    uri: String,
    headers: Headers,
    body: Vec<u8>,
}

impl WireRequest {
    fn new(request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        WireRequest {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: headers_to_wire(&parts.headers),
            body: body.to_vec(),
        }
    }

    fn into_request(self) -> Result<http::Request<Bytes>, Failure> {
        let bad = |what: &str| Failure::Failed(format!("a forwarded {what} is invalid"));
        let mut request = http::Request::new(Bytes::from(self.body));
        *request.method_mut() = self.method.parse().map_err(|_| bad("method"))?;
        *request.uri_mut() = self.uri.parse().map_err(|_| bad("uri"))?;
        *request.headers_mut() = headers_from_wire(self.headers)?;
        Ok(request)
    }
}

/// A response as it crosses the mesh.
#[derive(Serialize, Deserialize)]
struct WireResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    accept: Option<Accepted>,
}

impl WireResponse {
    fn new(response: http::Response<Bytes>) -> Self {
        let (parts, body) = response.into_parts();
        WireResponse {
            status: parts.status.as_u16(),
            headers: headers_to_wire(&parts.headers),
            body: body.to_vec(),
            accept: parts.extensions.get::<Accepted>().cloned(),
        }
    }

    fn into_response(self) -> Result<http::Response<Bytes>, Failure> {
        let mut response = http::Response::new(Bytes::from(self.body));
        *response.status_mut() = http::StatusCode::from_u16(self.status)
            .map_err(|_| Failure::Failed("a forwarded status is invalid".to_owned()))?;
        *response.headers_mut() = headers_from_wire(self.headers)?;
        if let Some(accept) = self.accept {
            response.extensions_mut().insert(accept);
        }
        Ok(response)
    }
}

/// A WebSocket message as it crosses the mesh.
#[derive(Clone, Serialize, Deserialize)]
enum WireWs {
    Text(String),
    Binary(Vec<u8>),
}

impl From<WsMessage> for WireWs {
    fn from(m: WsMessage) -> Self {
        match m {
            WsMessage::Text(t) => WireWs::Text(t),
            WsMessage::Binary(b) => WireWs::Binary(b.to_vec()),
        }
    }
}

impl From<WireWs> for WsMessage {
    fn from(m: WireWs) -> Self {
        match m {
            WireWs::Text(t) => WsMessage::Text(t),
            WireWs::Binary(b) => WsMessage::Binary(b.into()),
        }
    }
}

/// A socket event as it crosses the mesh.
#[derive(Serialize, Deserialize)]
enum WireEvent {
    Message(WireWs),
    Close { code: u16, reason: String },
    Error(String),
}

impl From<SocketEventKind> for WireEvent {
    fn from(kind: SocketEventKind) -> Self {
        match kind {
            SocketEventKind::Message(m) => WireEvent::Message(m.into()),
            SocketEventKind::Close { code, reason } => WireEvent::Close { code, reason },
            SocketEventKind::Error(e) => WireEvent::Error(e),
        }
    }
}

impl From<WireEvent> for SocketEventKind {
    fn from(event: WireEvent) -> Self {
        match event {
            WireEvent::Message(m) => SocketEventKind::Message(m.into()),
            WireEvent::Close { code, reason } => SocketEventKind::Close { code, reason },
            WireEvent::Error(e) => SocketEventKind::Error(e),
        }
    }
}

/// A listed socket as it crosses the mesh.
#[derive(Serialize, Deserialize)]
struct WireSocket {
    seq: u64,
    tags: Vec<String>,
    attachment: Option<Vec<u8>>,
}

/// What [`HTTP_PROCESS`] takes.
#[derive(Serialize, Deserialize)]
enum HttpMsg {
    /// A request for an object this node owns (as the sender sees the mesh).
    Fetch {
        class: String,
        key: String,
        hops: u8,
        request: WireRequest,
        reply: Reply<Result<WireResponse, Failure>>,
    },
    /// An event of a socket held by the sender, for an object this node owns.
    Event {
        class: String,
        key: String,
        hops: u8,
        /// The socket (its node and number; `SocketId` has no serde form).
        socket: (NodeId, u64),
        event: WireEvent,
        reply: Reply<Result<(), Failure>>,
    },
    /// Queue a message on a socket held here.
    Send { seq: u64, message: WireWs },
    /// Queue a message on every socket held here of an object (with a tag).
    Broadcast {
        class: String,
        key: String,
        tag: Option<String>,
        message: WireWs,
    },
    /// The sockets held here of an object (with a tag).
    List {
        class: String,
        key: String,
        tag: Option<String>,
        reply: Reply<Vec<WireSocket>>,
    },
    /// Close a socket held here.
    Close { seq: u64, code: u16, reason: String },
    /// Replace a held socket's attachment.
    SetAttachment {
        seq: u64,
        attachment: Option<Vec<u8>>,
    },
    /// A held socket's attachment (`None` if it is gone).
    Attachment {
        seq: u64,
        reply: Reply<Option<Option<Vec<u8>>>>,
    },
    /// Set an object's auto-response on this node's sockets.
    AutoResponse {
        class: String,
        key: String,
        auto: Option<(String, String)>,
    },
}

type FetchFn = fn(
    Arc<Objects>,
    String,
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

/// One forwarded request or event running (see [`MAX_FORWARDED`]).
struct ForwardPermit(Arc<AtomicUsize>);

impl Drop for ForwardPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    let gateway = Gateway::builder(handle.clone(), dispatcher)
        .config(options.config)
        .websockets(sockets, events)
        .bind(addr)?;
    let _ = state.gateway.set(gateway);
    Ok(())
}

/// Runs [`HTTP_PROCESS`] on a meshed node (with or without a gateway of its own: it serves
/// requests other nodes' gateways forward to its objects).
pub(crate) fn start_forwarding(mesh: &Mesh, objects: &Arc<Objects>) {
    if let Err(error) = mesh.declare::<HttpMsg>(HTTP_PROCESS) {
        tracing::error!(%error, "cannot declare the HTTP forwarding messages");
        return;
    }
    let weak = Arc::downgrade(objects);
    let state = HttpState::of(&objects.handle);
    let spawned = objects.handle.spawn_opts(
        SpawnOptions {
            name: Some(HTTP_PROCESS.to_owned()),
            local_name: true,
            ..SpawnOptions::default()
        },
        move |ctx| run_forwarding(ctx, weak, state),
    );
    if let Err(error) = spawned {
        tracing::error!(?error, "cannot start the HTTP forwarding process");
    }
    let mut events = mesh.node_events();
    let weak = Arc::downgrade(objects);
    let state = HttpState::of(&objects.handle);
    let mesh = mesh.clone();
    objects.handle.spawn(move |_: Ctx<()>| async move {
        loop {
            if let NodeEvent::Up { .. } | NodeEvent::Down { .. } = events.next().await {
                if weak.upgrade().is_none() {
                    return;
                }
                close_moved_sockets(&mesh, &state);
            }
        }
    });
}

/// Closes the sockets held here of every object whose owner changed since they were
/// accepted ([`CLOSE_OWNER_CHANGED`]), and forgets objects with no socket left.
fn close_moved_sockets(mesh: &Mesh, state: &HttpState) {
    let Some(sockets) = state.sockets.get() else {
        return;
    };
    let candidates: Vec<Candidate> = mesh
        .members()
        .into_iter()
        .filter(|m| !is_client(&m.name))
        .map(|m| Candidate {
            node: m.node,
            region: m.region,
        })
        .collect();
    let mut owners = state.owners.lock();
    owners.retain(|object, owner| {
        if sockets.count(object) == 0 {
            return false;
        }
        let now = placement::owner(&object.class, &object.key, &candidates, None);
        if now == Ok(*owner) {
            return true;
        }
        tracing::info!(%object, was = %owner, now = ?now, "object's owner changed; closing its sockets here");
        for socket in sockets.list(object, None) {
            let _ = sockets.close(socket.id, CLOSE_OWNER_CHANGED, "the object moved; reconnect");
        }
        false
    });
}

async fn run_forwarding(mut ctx: Ctx<HttpMsg>, objects: Weak<Objects>, state: Arc<HttpState>) {
    while let Some(msg) = ctx.recv().await {
        let Message::User(msg) = msg else {
            continue;
        };
        let Some(objects) = objects.upgrade() else {
            return;
        };
        serve_forwarded(ctx.handle(), objects, &state, msg);
    }
}

fn serve_forwarded(handle: &Handle, objects: Arc<Objects>, state: &HttpState, msg: HttpMsg) {
    let sockets = state.sockets.get();
    let node = handle.node();
    let id = |seq| SocketId { node, seq };
    match msg {
        HttpMsg::Fetch {
            class,
            key,
            hops,
            request,
            reply,
        } => {
            let Some(entry) = state.class(&class) else {
                let _ = reply.send(Err(Failure::UnknownClass(class)));
                return;
            };
            let Some(permit) = state.permit() else {
                let _ = reply.send(Err(Failure::Overloaded));
                return;
            };
            handle.spawn(move |_: Ctx<()>| async move {
                let _permit = permit;
                let timeout = forward_timeout(&objects);
                let handle = objects.handle.clone();
                let answer = match request.into_request() {
                    Ok(request) => {
                        within(&handle, timeout, (entry.fetch)(objects, key, request, hops))
                            .await
                            .unwrap_or_else(|| Err(Failure::Unavailable("timed out".to_owned())))
                            .map(WireResponse::new)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            });
        }
        HttpMsg::Event {
            class,
            key,
            hops,
            socket,
            event,
            reply,
        } => {
            let Some(entry) = state.class(&class) else {
                let _ = reply.send(Err(Failure::UnknownClass(class)));
                return;
            };
            let Some(permit) = state.permit() else {
                let _ = reply.send(Err(Failure::Overloaded));
                return;
            };
            let socket = SocketId {
                node: socket.0,
                seq: socket.1,
            };
            handle.spawn(move |_: Ctx<()>| async move {
                let _permit = permit;
                let timeout = forward_timeout(&objects);
                let handle = objects.handle.clone();
                let answer = within(
                    &handle,
                    timeout,
                    (entry.event)(objects, key, socket, event.into(), hops),
                )
                .await
                .unwrap_or_else(|| Err(Failure::Unavailable("timed out".to_owned())));
                let _ = reply.send(answer);
            });
        }
        HttpMsg::Send { seq, message } => {
            if let Some(s) = sockets {
                let _ = s.send(id(seq), message.into());
            }
        }
        HttpMsg::Broadcast {
            class,
            key,
            tag,
            message,
        } => {
            if let Some(s) = sockets {
                s.send_to(&ObjectKey::new(class, key), tag.as_deref(), message.into());
            }
        }
        HttpMsg::List {
            class,
            key,
            tag,
            reply,
        } => {
            let list = sockets.map_or_else(Vec::new, |s| {
                s.list(&ObjectKey::new(class, key), tag.as_deref())
                    .into_iter()
                    .map(|info| WireSocket {
                        seq: info.id.seq,
                        tags: info.tags.to_vec(),
                        attachment: info.attachment.map(|a| a.to_vec()),
                    })
                    .collect()
            });
            let _ = reply.send(list);
        }
        HttpMsg::Close { seq, code, reason } => {
            if let Some(s) = sockets {
                let _ = s.close(id(seq), code, &reason);
            }
        }
        HttpMsg::SetAttachment { seq, attachment } => {
            if let Some(s) = sockets {
                let _ = s.set_attachment(id(seq), attachment.map(Bytes::from));
            }
        }
        HttpMsg::Attachment { seq, reply } => {
            let found = sockets
                .and_then(|s| s.attachment(id(seq)).ok())
                .map(|a| a.map(|b| b.to_vec()));
            let _ = reply.send(found);
        }
        HttpMsg::AutoResponse { class, key, auto } => {
            if let Some(s) = sockets {
                let auto = auto.map(|(request, response)| AutoResponse { request, response });
                s.set_auto_response(&ObjectKey::new(class, key), auto);
            }
        }
    }
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

fn fetch_object<O: Object>(
    objects: Arc<Objects>,
    key: String,
    request: http::Request<Bytes>,
    hops: u8,
) -> BoxFuture<Result<http::Response<Bytes>, Failure>> {
    Box::pin(async move {
        let target = ObjectRef::<O>::new(objects.clone(), &key);
        match target_of(&target, hops).await? {
            Target::Here => {
                let (reply, answer) = Reply::pair();
                deliver_local(&target, CallKind::Fetch(request, reply)).await?;
                let mut response = answer.await.map_err(|e| {
                    Failure::Failed(format!("the object's handler gave no response ({e})"))
                })?;
                response
                    .extensions_mut()
                    .insert(AcceptedBy(objects.handle.node()));
                Ok(response)
            }
            Target::Remote(mesh, node) => {
                let timeout = forward_timeout(&objects);
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
                response.extensions_mut().insert(AcceptedBy(node));
                Ok(response)
            }
        }
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
                    .map_err(|e| Failure::Failed(format!("the socket handler failed ({e})")))
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
        if route.object.class == self.pages.0 {
            return self.pages.1.dispatch(route, request);
        }
        let class = self.state.class(&route.object.class);
        let objects = self.objects.upgrade();
        let state = self.state.clone();
        Box::pin(async move {
            let ObjectKey { class: name, key } = route.object;
            let Some(class) = class else {
                return Err(DispatchError::UnknownClass(name));
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
            let response = (class.fetch)(objects.clone(), key.clone(), request, 0).await?;
            let owner = response.extensions().get::<AcceptedBy>().copied();
            let response = into_gateway_response(response, upgrade);
            if let (http::StatusCode::SWITCHING_PROTOCOLS, Some(AcceptedBy(owner))) =
                (response.status(), owner)
            {
                if objects.is_placed(&name) {
                    let object = ObjectKey::new(name, key);
                    state.owners.lock().insert(object, owner);
                }
            }
            Ok(response)
        })
    }
}

/// A copy of an upgrade request's head, to complete the handshake if the object accepts.
fn upgrade_head(parts: &http::request::Parts) -> Option<cairn_gateway::Request> {
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

impl<O: Object> ObjectCtx<O> {
    /// Inside [`Object::fetch`]: accepts `request`'s WebSocket upgrade, attaching the
    /// socket to this object with `tags` (for [`WebSockets::broadcast`] and
    /// [`WebSockets::list`]) and an initial `attachment`. Return the response from `fetch`.
    /// The node the client reached holds the socket; this object may be evicted while it
    /// stays open.
    pub fn accept_websocket(
        &self,
        request: &http::Request<Bytes>,
        tags: Vec<String>,
        attachment: Option<Bytes>,
    ) -> Result<http::Response<Bytes>, UpgradeError> {
        let mut head = http::Request::new(Body::empty());
        *head.method_mut() = request.method().clone();
        *head.headers_mut() = request.headers().clone();
        // Checks the request and the tags now, so the object learns of a refusal.
        let accept = AcceptWebSocket {
            tags: tags.clone(),
            attachment: attachment.clone(),
            initial: Vec::new(),
        };
        accept_websocket(&head, accept)?;
        let mut response = http::Response::new(Bytes::new());
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        response.extensions_mut().insert(Accepted {
            tags,
            attachment: attachment.map(|a| a.to_vec()),
        });
        Ok(response)
    }

    /// This object's WebSockets, wherever they are held.
    pub fn websockets(&self) -> WebSockets {
        WebSockets {
            handle: self.objects.handle.clone(),
            object: ObjectKey::new(O::CLASS, &*self.key),
        }
    }
}

/// An object's WebSockets (Durable Objects' `getWebSockets`, `send`, attachments). Sends
/// made inside a handler are held until its writes are durable.
pub struct WebSockets {
    handle: Handle,
    object: ObjectKey,
}

impl WebSockets {
    fn local(&self) -> Option<Sockets> {
        HttpState::of(&self.handle).sockets.get().cloned()
    }

    fn is_here(&self, id: SocketId) -> bool {
        id.node == self.handle.node()
    }

    fn peer(&self, node: NodeId) -> cairn_scheduler::NamedRef<HttpMsg> {
        self.handle.named_ref(HTTP_PROCESS, node)
    }

    /// The other member nodes (which may hold sockets of this object).
    fn peers(&self) -> Vec<NodeId> {
        let me = self.handle.node();
        Mesh::from_handle(&self.handle).map_or_else(Vec::new, |mesh| {
            mesh.members()
                .into_iter()
                .filter(|m| m.node != me && !is_client(&m.name))
                .map(|m| m.node)
                .collect()
        })
    }

    /// Runs `f` now, or when the current handler's output is released.
    fn gated(&self, f: impl FnOnce() + Send + 'static) {
        if cairn_scheduler::gate::is_active() {
            let held = Box::pin(async move { f() });
            if let Err(held) = cairn_scheduler::gate::hold_future(held) {
                self.handle.spawn(move |_: Ctx<()>| held);
            }
        } else {
            f();
        }
    }

    /// Queues `message` on socket `id`. A socket held by another node is checked there
    /// (a failure then is logged, not returned).
    pub fn send(&self, id: SocketId, message: WsMessage) -> Result<(), SocketError> {
        if self.is_here(id) {
            let sockets = self.local().ok_or(SocketError::NoSocket(id))?;
            // Checked now, so a closed socket is an error the handler sees.
            sockets.attachment(id)?;
            self.gated(move || {
                if let Err(error) = sockets.send(id, message) {
                    tracing::debug!(%error, "socket send");
                }
            });
            return Ok(());
        }
        let msg = HttpMsg::Send {
            seq: id.seq,
            message: message.into(),
        };
        self.peer(id.node).try_send(msg).map_err(|e| match e {
            SendError::Full(_) => SocketError::Full(id),
            _ => SocketError::NoSocket(id),
        })
    }

    /// Queues `message` on every socket of this object (with `tag`, if given), on every
    /// node.
    pub fn broadcast(&self, tag: Option<&str>, message: WsMessage) {
        if let Some(sockets) = self.local() {
            let (object, tag, message) =
                (self.object.clone(), tag.map(str::to_owned), message.clone());
            self.gated(move || {
                sockets.send_to(&object, tag.as_deref(), message);
            });
        }
        let wire = WireWs::from(message);
        for node in self.peers() {
            let msg = HttpMsg::Broadcast {
                class: self.object.class.clone(),
                key: self.object.key.clone(),
                tag: tag.map(str::to_owned),
                message: wire.clone(),
            };
            if let Err(error) = self.peer(node).try_send(msg) {
                tracing::debug!(%node, %error, "broadcast not sent to a node");
            }
        }
    }

    /// This object's open sockets (with `tag`, if given), on every node that answers
    /// within a short timeout.
    pub async fn list(&self, tag: Option<&str>) -> Vec<SocketInfo> {
        let mut all = self
            .local()
            .map_or_else(Vec::new, |s| s.list(&self.object, tag));
        for node in self.peers() {
            let listed = self
                .peer(node)
                .call(
                    |reply| HttpMsg::List {
                        class: self.object.class.clone(),
                        key: self.object.key.clone(),
                        tag: tag.map(str::to_owned),
                        reply,
                    },
                    PEER_TIMEOUT,
                )
                .await;
            for s in listed.unwrap_or_default() {
                all.push(SocketInfo {
                    id: SocketId { node, seq: s.seq },
                    tags: s.tags.into(),
                    attachment: s.attachment.map(Bytes::from),
                });
            }
        }
        all
    }

    /// Closes socket `id` with `code` and `reason`.
    pub fn close(&self, id: SocketId, code: u16, reason: &str) -> Result<(), SocketError> {
        if self.is_here(id) {
            let sockets = self.local().ok_or(SocketError::NoSocket(id))?;
            sockets.attachment(id)?;
            let reason = reason.to_owned();
            self.gated(move || {
                let _ = sockets.close(id, code, &reason);
            });
            return Ok(());
        }
        let msg = HttpMsg::Close {
            seq: id.seq,
            code,
            reason: reason.to_owned(),
        };
        self.peer(id.node)
            .try_send(msg)
            .map_err(|_| SocketError::NoSocket(id))
    }

    /// Replaces socket `id`'s attachment at once (it survives the object's eviction).
    pub fn set_attachment(
        &self,
        id: SocketId,
        attachment: Option<Bytes>,
    ) -> Result<(), SocketError> {
        if self.is_here(id) {
            let sockets = self.local().ok_or(SocketError::NoSocket(id))?;
            return sockets.set_attachment(id, attachment);
        }
        let msg = HttpMsg::SetAttachment {
            seq: id.seq,
            attachment: attachment.map(|a| a.to_vec()),
        };
        self.peer(id.node)
            .try_send_ungated(msg)
            .map_err(|_| SocketError::NoSocket(id))
    }

    /// Socket `id`'s attachment.
    pub async fn attachment(&self, id: SocketId) -> Result<Option<Bytes>, SocketError> {
        if self.is_here(id) {
            let sockets = self.local().ok_or(SocketError::NoSocket(id))?;
            return sockets.attachment(id);
        }
        let answer = self
            .peer(id.node)
            .call(
                |reply| HttpMsg::Attachment { seq: id.seq, reply },
                PEER_TIMEOUT,
            )
            .await;
        match answer {
            Ok(Some(a)) => Ok(a.map(Bytes::from)),
            _ => Err(SocketError::NoSocket(id)),
        }
    }

    /// Sets (or clears) the text message every node holding this object's sockets answers
    /// itself, without waking the object (e.g. `ping` → `pong`).
    pub fn set_auto_response(&self, auto: Option<AutoResponse>) {
        if let Some(sockets) = self.local() {
            sockets.set_auto_response(&self.object, auto.clone());
        }
        for node in self.peers() {
            let msg = HttpMsg::AutoResponse {
                class: self.object.class.clone(),
                key: self.object.key.clone(),
                auto: auto.clone().map(|a| (a.request, a.response)),
            };
            let _ = self.peer(node).try_send_ungated(msg);
        }
    }
}

/// Runs `fut` to completion or gives up after `timeout` (`None`): a forwarded request holds
/// its permit no longer than its sender waits.
async fn within<T>(handle: &Handle, timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    let mut sleep = pin!(handle.sleep(timeout));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
