//! WebSockets held by the gateway, in the shape of Durable Objects' hibernation API.
//!
//! The node that accepted a socket holds it: one Cairn process per socket owns the
//! connection, and its mailbox is the socket's bounded send queue. The object it is
//! attached to is not involved in keeping it open; it learns of traffic through the
//! installed [`SocketHandler`] and acts through [`Sockets`]:
//!
//! * **Accepting.** A dispatcher answers an upgrade request with [`accept_websocket`]; the
//!   gateway then completes the handshake, registers the socket under the request's object
//!   with its tags and attachment, and spawns its process.
//! * **Events.** Each text or binary message, the client's close, and any error reach
//!   [`SocketHandler::on_event`] in order, one at a time per socket: the socket reads its
//!   next frame only after the handler's future finished (backpressure onto TCP). Messages
//!   sent to the socket meanwhile are still written.
//! * **Auto-response.** If the object set one ([`Sockets::set_auto_response`]), a text
//!   message equal to its request is answered with its response by the socket process,
//!   without calling the handler.
//! * **Acting.** [`Sockets::send`] to one socket, [`Sockets::send_to`] every socket of an
//!   object with a tag, [`Sockets::list`] them, [`Sockets::close`] one, and keep a small
//!   serialized attachment per socket.
//!
//! # Limits
//! Frames and messages over the configured sizes close the socket with 1009 (Message Too
//! Big). An object at its socket limit gets the new socket accepted and closed at once with
//! 1013 (Try Again Later), a code a browser's `CloseEvent` shows, unlike an HTTP refusal
//! of the handshake. A full send queue fails the send ([`SocketError::Full`]).
//!
//! # Invariants
//! * A socket is in the registry from its handshake until it starts closing (a guard
//!   removes it however the process ends), so the object never lists or sends to a
//!   closing socket, and hears of a close only after the socket left the registry; the
//!   object's entry goes when its last socket and its auto-response are gone.
//! * Messages to one socket are written in the order they were sent.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as WsConfig};
use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::WebSocketStream;
use bytes::Bytes;
use cairn_scheduler::{
    catch_unwind_future, ActorRef, Ctx, Handle, NodeId, SendError, SpawnOptions,
};
use futures_util::future::{select, Either};
use futures_util::{SinkExt, StreamExt};
use parking_lot::{Mutex, RwLock};

use crate::config::WebSocketConfig;
use crate::conn::Permit;
use crate::dispatch::{Request, Response};
use crate::route::ObjectKey;
use crate::tcp::TcpConn;

/// Tags per socket at most (Durable Objects allows 10).
pub const MAX_TAGS: usize = 10;
/// Bytes per tag at most (Durable Objects allows 256).
pub const MAX_TAG_BYTES: usize = 256;

/// Names one socket: the node holding it and a number unique on that node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// The node whose gateway holds the socket.
    pub node: NodeId,
    /// Unique among that node's sockets.
    pub seq: u64,
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node.0, self.seq)
    }
}

/// A WebSocket data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl WsMessage {
    fn into_frame(self) -> Message {
        match self {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

/// Something that happened on a socket.
#[derive(Clone, Debug)]
pub struct SocketEvent {
    /// The socket.
    pub socket: SocketId,
    /// The object it is attached to.
    pub object: ObjectKey,
    /// Its tags.
    pub tags: Arc<[String]>,
    /// What happened.
    pub kind: SocketEventKind,
}

/// What happened on a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketEventKind {
    /// The client sent a message (not one answered by the auto-response).
    Message(WsMessage),
    /// The client closed the socket (code 1005 if it gave none, 1006 if the connection
    /// ended without a close frame). The socket is gone.
    Close {
        /// The close code.
        code: u16,
        /// The client's reason.
        reason: String,
    },
    /// The socket failed (protocol error, oversized message, I/O error). It is gone.
    Error(String),
}

/// What a [`SocketHandler`] returns.
pub type EventFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Receives socket events (installed in the gateway by the object layer).
pub trait SocketHandler: Send + Sync + 'static {
    /// Handles one event. The socket reads its next frame once the future completes; a
    /// panic closes the socket with 1011.
    fn on_event(&self, event: SocketEvent) -> EventFuture;
}

/// A text request answered with a fixed text response by the gateway itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoResponse {
    /// The exact text message to answer.
    pub request: String,
    /// The answer.
    pub response: String,
}

/// A socket as listed by [`Sockets::list`].
#[derive(Clone, Debug)]
pub struct SocketInfo {
    /// The socket.
    pub id: SocketId,
    /// Its tags.
    pub tags: Arc<[String]>,
    /// Its attachment.
    pub attachment: Option<Bytes>,
}

/// Why a socket operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketError {
    /// No open socket has this id (never existed, closed, or held by another node).
    #[error("no open socket {0}")]
    NoSocket(SocketId),
    /// The socket's send queue is full: its client reads too slowly.
    #[error("socket {0}'s send queue is full")]
    Full(SocketId),
    /// The attachment is larger than the limit.
    #[error("attachment of {len} bytes is larger than {limit}")]
    AttachmentTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// How a dispatcher accepts a WebSocket: put in the 101 response's extensions by
/// [`accept_websocket`].
#[derive(Clone, Debug, Default)]
pub struct AcceptWebSocket {
    /// Tags to list the socket by (at most [`MAX_TAGS`], each at most [`MAX_TAG_BYTES`]).
    pub tags: Vec<String>,
    /// The socket's initial attachment.
    pub attachment: Option<Bytes>,
    /// Messages sent right after the handshake, before anything else.
    pub initial: Vec<WsMessage>,
}

/// Why a request cannot be accepted as a WebSocket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not a WebSocket upgrade request (`GET` with `Upgrade: websocket`, `Connection:
    /// upgrade` and a `Sec-WebSocket-Key`).
    #[error("not a WebSocket upgrade request")]
    NotWebSocket,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (only 13)")]
    UnsupportedVersion,
    /// More than [`MAX_TAGS`] tags, or one longer than [`MAX_TAG_BYTES`].
    #[error("too many or too long tags (at most {MAX_TAGS} of {MAX_TAG_BYTES} bytes)")]
    BadTags,
}

impl UpgradeError {
    /// The answer for the client: 426 with the supported version, else 400.
    pub fn into_response(self) -> Response {
        let mut response = Response::new(self.to_string().into());
        match self {
            UpgradeError::UnsupportedVersion => {
                *response.status_mut() = http::StatusCode::UPGRADE_REQUIRED;
                response.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_VERSION,
                    http::HeaderValue::from_static("13"),
                );
            }
            UpgradeError::NotWebSocket | UpgradeError::BadTags => {
                *response.status_mut() = http::StatusCode::BAD_REQUEST;
            }
        }
        response
    }
}

fn header_has_token(request: &Request, name: http::header::HeaderName, token: &str) -> bool {
    request.headers().get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Whether `request` asks for a WebSocket.
pub fn is_websocket_upgrade(request: &Request) -> bool {
    request.method() == http::Method::GET
        && header_has_token(request, http::header::UPGRADE, "websocket")
        && header_has_token(request, http::header::CONNECTION, "upgrade")
        && request
            .headers()
            .contains_key(http::header::SEC_WEBSOCKET_KEY)
}

/// The 101 response accepting `request` as a WebSocket attached to the request's object
/// with `accept`'s tags and attachment. Return it from the dispatcher.
pub fn accept_websocket(
    request: &Request,
    accept: AcceptWebSocket,
) -> Result<Response, UpgradeError> {
    if !is_websocket_upgrade(request) {
        return Err(UpgradeError::NotWebSocket);
    }
    let headers = request.headers();
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(UpgradeError::UnsupportedVersion);
    }
    if accept.tags.len() > MAX_TAGS || accept.tags.iter().any(|t| t.len() > MAX_TAG_BYTES) {
        return Err(UpgradeError::BadTags);
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or(UpgradeError::NotWebSocket)?;
    let accept_key = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(crate::Body::empty());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    out.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    out.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        http::HeaderValue::from_str(&accept_key).expect("base64 is a valid header value"),
    );
    response.extensions_mut().insert(accept);
    Ok(response)
}

/// What the socket process is told.
#[derive(Debug)]
pub(crate) enum SocketCmd {
    Send(Message),
    Close(CloseFrame),
}

/// Registry entry of one open socket.
struct Entry {
    object: ObjectKey,
    tags: Arc<[String]>,
    attachment: Option<Bytes>,
    tx: ActorRef<SocketCmd>,
}

/// An object's sockets and its auto-response.
#[derive(Default)]
struct ObjectSockets {
    ids: Vec<u64>,
    auto_response: Arc<RwLock<Option<AutoResponse>>>,
}

impl ObjectSockets {
    fn is_unused(&self) -> bool {
        self.ids.is_empty() && self.auto_response.read().is_none()
    }
}

#[derive(Default)]
struct State {
    sockets: HashMap<u64, Entry>,
    objects: HashMap<ObjectKey, ObjectSockets>,
}

struct Registry {
    node: NodeId,
    config: WebSocketConfig,
    next_seq: AtomicU64,
    state: Mutex<State>,
}

/// The sockets a gateway holds, and what objects can do with them. Cheap to clone.
#[derive(Clone)]
pub struct Sockets {
    registry: Arc<Registry>,
}

impl fmt::Debug for Sockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sockets")
            .field("node", &self.registry.node)
            .field("open", &self.len())
            .finish()
    }
}

/// The outcome of [`Sockets::send_to`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Sockets the message was queued on.
    pub queued: usize,
    /// Sockets skipped because their send queue was full.
    pub full: Vec<SocketId>,
}

impl Sockets {
    /// An empty registry for the gateway of node `node`, with `config`'s limits.
    pub fn new(node: NodeId, config: WebSocketConfig) -> Self {
        Sockets {
            registry: Arc::new(Registry {
                node,
                config,
                next_seq: AtomicU64::new(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &WebSocketConfig {
        &self.registry.config
    }

    /// Open sockets on this node.
    pub fn len(&self) -> usize {
        self.registry.state.lock().sockets.len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open sockets attached to `object`.
    pub fn count(&self, object: &ObjectKey) -> usize {
        self.registry
            .state
            .lock()
            .objects
            .get(object)
            .map_or(0, |o| o.ids.len())
    }

    fn id(&self, seq: u64) -> SocketId {
        SocketId {
            node: self.registry.node,
            seq,
        }
    }

    fn local_seq(&self, id: SocketId) -> Result<u64, SocketError> {
        if id.node == self.registry.node {
            Ok(id.seq)
        } else {
            Err(SocketError::NoSocket(id))
        }
    }

    fn command(&self, id: SocketId, cmd: SocketCmd) -> Result<(), SocketError> {
        let seq = self.local_seq(id)?;
        let tx = {
            let state = self.registry.state.lock();
            let entry = state.sockets.get(&seq).ok_or(SocketError::NoSocket(id))?;
            entry.tx.clone()
        };
        match tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(SocketError::Full(id)),
            Err(_) => Err(SocketError::NoSocket(id)),
        }
    }

    /// Queues `message` on socket `id`.
    pub fn send(&self, id: SocketId, message: WsMessage) -> Result<(), SocketError> {
        self.command(id, SocketCmd::Send(message.into_frame()))
    }

    /// Queues `message` on every socket of `object` (with `tag`, if given).
    pub fn send_to(&self, object: &ObjectKey, tag: Option<&str>, message: WsMessage) -> Delivery {
        let targets: Vec<(u64, ActorRef<SocketCmd>)> = {
            let state = self.registry.state.lock();
            let Some(sockets) = state.objects.get(object) else {
                return Delivery::default();
            };
            sockets
                .ids
                .iter()
                .filter_map(|seq| state.sockets.get(seq).map(|e| (*seq, e)))
                .filter(|(_, e)| tag.is_none_or(|t| e.tags.iter().any(|have| have == t)))
                .map(|(seq, e)| (seq, e.tx.clone()))
                .collect()
        };
        let frame = message.into_frame();
        let mut delivery = Delivery::default();
        for (seq, tx) in targets {
            match tx.try_send(SocketCmd::Send(frame.clone())) {
                Ok(()) => delivery.queued += 1,
                Err(SendError::Full(_)) => delivery.full.push(self.id(seq)),
                Err(_) => {} // Closed since listed.
            }
        }
        delivery
    }

    /// The sockets of `object` (with `tag`, if given), in the order they were accepted.
    pub fn list(&self, object: &ObjectKey, tag: Option<&str>) -> Vec<SocketInfo> {
        let state = self.registry.state.lock();
        let Some(sockets) = state.objects.get(object) else {
            return Vec::new();
        };
        sockets
            .ids
            .iter()
            .filter_map(|seq| state.sockets.get(seq).map(|e| (*seq, e)))
            .filter(|(_, e)| tag.is_none_or(|t| e.tags.iter().any(|have| have == t)))
            .map(|(seq, e)| SocketInfo {
                id: self.id(seq),
                tags: Arc::clone(&e.tags),
                attachment: e.attachment.clone(),
            })
            .collect()
    }

    /// Closes socket `id` with `code` and `reason` (no close event follows).
    pub fn close(&self, id: SocketId, code: u16, reason: &str) -> Result<(), SocketError> {
        self.command(
            id,
            SocketCmd::Close(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }),
        )
    }

    /// Replaces socket `id`'s attachment.
    pub fn set_attachment(
        &self,
        id: SocketId,
        attachment: Option<Bytes>,
    ) -> Result<(), SocketError> {
        self.check_attachment(attachment.as_ref())?;
        let seq = self.local_seq(id)?;
        let mut state = self.registry.state.lock();
        let entry = state
            .sockets
            .get_mut(&seq)
            .ok_or(SocketError::NoSocket(id))?;
        entry.attachment = attachment;
        Ok(())
    }

    /// Socket `id`'s attachment.
    pub fn attachment(&self, id: SocketId) -> Result<Option<Bytes>, SocketError> {
        let seq = self.local_seq(id)?;
        let state = self.registry.state.lock();
        let entry = state.sockets.get(&seq).ok_or(SocketError::NoSocket(id))?;
        Ok(entry.attachment.clone())
    }

    /// Sets (or clears, with `None`) `object`'s auto-response.
    pub fn set_auto_response(&self, object: &ObjectKey, auto_response: Option<AutoResponse>) {
        let mut state = self.registry.state.lock();
        let entry = state.objects.entry(object.clone()).or_default();
        *entry.auto_response.write() = auto_response;
        if entry.is_unused() {
            state.objects.remove(object);
        }
    }

    fn check_attachment(&self, attachment: Option<&Bytes>) -> Result<(), SocketError> {
        let limit = self.registry.config.max_attachment_bytes;
        match attachment {
            Some(a) if a.len() > limit => Err(SocketError::AttachmentTooLarge {
                len: a.len(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Registers a socket whose process is `tx`; `Err(())` if `object` is at its limit.
    fn open(
        &self,
        seq: u64,
        object: &ObjectKey,
        tags: Arc<[String]>,
        attachment: Option<Bytes>,
        tx: ActorRef<SocketCmd>,
    ) -> Result<Arc<RwLock<Option<AutoResponse>>>, ()> {
        let mut state = self.registry.state.lock();
        let entry = state.objects.entry(object.clone()).or_default();
        if entry.ids.len() >= self.registry.config.max_sockets_per_object {
            if entry.is_unused() {
                state.objects.remove(object);
            }
            return Err(());
        }
        entry.ids.push(seq);
        let auto_response = Arc::clone(&entry.auto_response);
        state.sockets.insert(
            seq,
            Entry {
                object: object.clone(),
                tags,
                attachment,
                tx,
            },
        );
        Ok(auto_response)
    }

    fn remove(&self, seq: u64) {
        let mut state = self.registry.state.lock();
        let Some(entry) = state.sockets.remove(&seq) else {
            return;
        };
        if let Some(object) = state.objects.get_mut(&entry.object) {
            object.ids.retain(|s| *s != seq);
            if object.is_unused() {
                state.objects.remove(&entry.object);
            }
        }
    }

    /// Tells every socket to close with 1001 (Going Away).
    pub(crate) fn close_all(&self) {
        let targets: Vec<ActorRef<SocketCmd>> = self
            .registry
            .state
            .lock()
            .sockets
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in targets {
            let _ = tx.try_send(SocketCmd::Close(CloseFrame {
                code: CloseCode::Away,
                reason: "server shutting down".into(),
            }));
        }
    }
}

/// Removes a socket from the registry when its process ends, however it ends.
struct Registered {
    sockets: Sockets,
    seq: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sockets.remove(self.seq);
    }
}

/// Everything a socket process needs besides its connection.
pub(crate) struct NewSocket {
    pub(crate) sockets: Sockets,
    pub(crate) handler: Arc<dyn SocketHandler>,
    pub(crate) object: ObjectKey,
    pub(crate) accept: AcceptWebSocket,
    pub(crate) permit: Permit,
}

/// Spawns the process that completes `upgrade` and runs the socket.
pub(crate) fn spawn_socket(handle: &Handle, upgrade: hyper::upgrade::OnUpgrade, new: NewSocket) {
    let capacity = new.sockets.registry.config.send_queue.max(1);
    let spawned = handle.spawn_opts(
        SpawnOptions {
            mailbox_capacity: Some(capacity),
            ..SpawnOptions::default()
        },
        move |ctx: Ctx<SocketCmd>| async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, object = %new.object, "WebSocket upgrade did not complete");
                    return;
                }
            };
            let config = ws_config(new.sockets.config());
            match upgraded.downcast::<TcpConn>() {
                Ok(parts) => {
                    let mut io = parts.io;
                    // An attached socket may rightly stay silent for hours.
                    io.set_idle_timeout(None);
                    let ws = WebSocketStream::from_partially_read(
                        FuturesIo(io),
                        parts.read_buf.to_vec(),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    run_socket(ctx, ws, new).await;
                }
                Err(upgraded) => {
                    let ws =
                        WebSocketStream::from_raw_socket(FuturesIo(upgraded), Role::Server, Some(config))
                            .await;
                    run_socket(ctx, ws, new).await;
                }
            }
        },
    );
    if let Err(error) = spawned {
        tracing::error!(%error, "spawning a WebSocket process failed");
    }
}

fn ws_config(config: &WebSocketConfig) -> WsConfig {
    WsConfig::default()
        // Small buffers: most sockets are idle and memory per socket matters.
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_message_bytes.saturating_mul(2).max(64 * 1024))
        .max_frame_size(Some(config.max_frame_bytes))
        .max_message_size(Some(config.max_message_bytes))
}

/// How a socket's life ended, as told to the handler.
enum Ending {
    /// The client closed: `Close` event.
    ClientClosed(u16, String),
    /// The socket failed: `Error` event, and a close frame with this code if one can still
    /// be sent.
    Failed(String, Option<CloseCode>),
    /// The object or the gateway closed it: no event.
    ServerClosed,
}

async fn run_socket<S>(mut ctx: Ctx<SocketCmd>, mut ws: WebSocketStream<S>, new: NewSocket)
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let NewSocket {
        sockets,
        handler,
        object,
        accept,
        permit,
    } = new;
    let _permit = permit;
    let close_timeout = sockets.config().close_timeout;
    let seq = sockets.registry.next_seq.fetch_add(1, Ordering::Relaxed);
    let id = sockets.id(seq);
    let tags: Arc<[String]> = accept.tags.into();
    let auto_response = match sockets.open(
        seq,
        &object,
        Arc::clone(&tags),
        accept.attachment,
        ctx.me(),
    ) {
        Ok(auto_response) => auto_response,
        Err(()) => {
            tracing::debug!(%object, "object at its socket limit: closing the new socket with 1013");
            let frame = CloseFrame {
                code: CloseCode::Again,
                reason: "too many sockets for this object".into(),
            };
            close_gracefully(ctx.handle(), &mut ws, frame, close_timeout).await;
            return;
        }
    };
    let registered = Registered {
        sockets: sockets.clone(),
        seq,
    };
    for message in accept.initial {
        if ws.feed(message.into_frame()).await.is_err() {
            return;
        }
    }
    let ending = loop {
        if ctx.mailbox_len() == 0 {
            // Batch writes: flush only once nothing more is queued.
            if let Err(error) = ws.flush().await {
                break Ending::Failed(error.to_string(), None);
            }
        }
        let next = match select(pin!(ctx.recv()), ws.next()).await {
            Either::Left((cmd, _)) => Either::Left(cmd),
            Either::Right((frame, _)) => Either::Right(frame),
        };
        match next {
            Either::Left(Some(cairn_scheduler::Message::User(SocketCmd::Send(frame)))) => {
                if let Err(error) = ws.feed(frame).await {
                    break Ending::Failed(error.to_string(), None);
                }
            }
            Either::Left(Some(cairn_scheduler::Message::User(SocketCmd::Close(frame)))) => {
                // Closing: no longer listed or sendable while the client's reply is awaited.
                sockets.remove(seq);
                close_gracefully(ctx.handle(), &mut ws, frame, close_timeout).await;
                break Ending::ServerClosed;
            }
            Either::Left(Some(cairn_scheduler::Message::Signal(_))) => {}
            Either::Left(None) => break Ending::ServerClosed,
            Either::Right(Some(Ok(frame))) => {
                let message = match frame {
                    Message::Text(text) => {
                        let answer = auto_response
                            .read()
                            .as_ref()
                            .filter(|auto| auto.request == text.as_str())
                            .map(|auto| auto.response.clone());
                        if let Some(answer) = answer {
                            if let Err(error) = ws.feed(Message::Text(answer.into())).await {
                                break Ending::Failed(error.to_string(), None);
                            }
                            continue;
                        }
                        WsMessage::Text(text.as_str().to_owned())
                    }
                    Message::Binary(bytes) => WsMessage::Binary(bytes),
                    Message::Close(frame) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.as_str().to_owned())
                        });
                        // tungstenite queued the close reply; reading on sends it.
                        drain(ctx.handle(), &mut ws, close_timeout).await;
                        break Ending::ClientClosed(code, reason);
                    }
                    // Pings are answered by tungstenite; pongs and raw frames need nothing.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                let event = SocketEvent {
                    socket: id,
                    object: object.clone(),
                    tags: Arc::clone(&tags),
                    kind: SocketEventKind::Message(message),
                };
                let delivered = deliver(&mut ctx, &mut ws, &*handler, event).await;
                if let Err(panic) = delivered.handler {
                    tracing::error!(socket = %id, %object, %panic, "WebSocket handler panicked; closing the socket");
                    let frame = CloseFrame {
                        code: CloseCode::Error,
                        reason: "internal error".into(),
                    };
                    sockets.remove(seq);
                    close_gracefully(ctx.handle(), &mut ws, frame, close_timeout).await;
                    break Ending::Failed(format!("handler panicked: {panic}"), None);
                }
                if let Some(error) = delivered.write_error {
                    break Ending::Failed(error, None);
                }
                if let Some(frame) = delivered.close {
                    sockets.remove(seq);
                    close_gracefully(ctx.handle(), &mut ws, frame, close_timeout).await;
                    break Ending::ServerClosed;
                }
            }
            Either::Right(Some(Err(error))) if is_abrupt_end(&error) => {
                break Ending::ClientClosed(1006, String::new());
            }
            Either::Right(Some(Err(error))) => {
                let code = match &error {
                    tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
                    tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
                    tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
                    _ => None,
                };
                break Ending::Failed(error.to_string(), code);
            }
            Either::Right(None) => break Ending::ClientClosed(1006, String::new()),
        }
    };
    let kind = match ending {
        Ending::ServerClosed => return,
        Ending::ClientClosed(code, reason) => SocketEventKind::Close { code, reason },
        Ending::Failed(message, code) => {
            tracing::debug!(socket = %id, %object, %message, "WebSocket failed");
            sockets.remove(seq);
            if let Some(code) = code {
                let frame = CloseFrame {
                    code,
                    reason: message.chars().take(100).collect::<String>().into(),
                };
                close_gracefully(ctx.handle(), &mut ws, frame, close_timeout).await;
            }
            SocketEventKind::Error(message)
        }
    };
    // Gone from the registry before the object hears of it, so it never lists a dead socket.
    drop(registered);
    let event = SocketEvent {
        socket: id,
        object: object.clone(),
        tags,
        kind,
    };
    if let Err(panic) = catch_unwind_future(handler.on_event(event)).await {
        tracing::error!(socket = %id, %object, %panic, "WebSocket handler panicked on a closing event");
    }
}

/// The outcome of [`deliver`].
struct Delivered {
    /// The handler's completion, or its panic message.
    handler: Result<(), String>,
    /// A close asked for while the handler ran, to do now.
    close: Option<CloseFrame>,
    /// Writing to the client failed meanwhile.
    write_error: Option<String>,
}

/// Runs the handler on `event` while still writing what is sent to this socket, so a slow
/// handler stalls neither the socket's outgoing messages nor, by filling it, its queue. A
/// close asked for meanwhile is handed back, to be done once the handler finished.
async fn deliver<S>(
    ctx: &mut Ctx<SocketCmd>,
    ws: &mut WebSocketStream<S>,
    handler: &dyn SocketHandler,
    event: SocketEvent,
) -> Delivered
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let mut call = pin!(catch_unwind_future(handler.on_event(event)));
    let mut delivered = Delivered {
        handler: Ok(()),
        close: None,
        write_error: None,
    };
    loop {
        if delivered.close.is_some() || delivered.write_error.is_some() {
            // Stop taking commands: finish the handler, then act.
            delivered.handler = call.await;
            return delivered;
        }
        match select(call.as_mut(), pin!(ctx.recv())).await {
            Either::Left((result, _)) => {
                delivered.handler = result;
                return delivered;
            }
            Either::Right((Some(cairn_scheduler::Message::User(SocketCmd::Send(frame))), _)) => {
                let mut written = ws.feed(frame).await;
                if written.is_ok() && ctx.mailbox_len() == 0 {
                    written = ws.flush().await;
                }
                if let Err(error) = written {
                    delivered.write_error = Some(error.to_string());
                }
            }
            Either::Right((Some(cairn_scheduler::Message::User(SocketCmd::Close(frame))), _)) => {
                delivered.close = Some(frame);
            }
            Either::Right((Some(cairn_scheduler::Message::Signal(_)), _)) => {}
            Either::Right((None, _)) => {
                delivered.handler = call.await;
                return delivered;
            }
        }
    }
}

/// Whether `error` means the client went away without a close frame (reported as a
/// close with 1006, as browsers do).
fn is_abrupt_end(error: &tungstenite::Error) -> bool {
    match error {
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => true,
        tungstenite::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Sends `frame` and waits (at most `timeout`) for the client's close reply.
async fn close_gracefully<S>(
    handle: &Handle,
    ws: &mut WebSocketStream<S>,
    frame: CloseFrame,
    timeout: std::time::Duration,
) where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    if ws.close(Some(frame)).await.is_ok() {
        drain(handle, ws, timeout).await;
    }
}

/// Reads until the stream ends (which flushes a queued close reply), at most `timeout`.
async fn drain<S>(handle: &Handle, ws: &mut WebSocketStream<S>, timeout: std::time::Duration)
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let _ = handle
        .timeout(timeout, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
}

/// hyper's I/O traits seen as futures-io's, which async-tungstenite reads and writes.
struct FuturesIo<T>(T);

impl<T: hyper::rt::Read + Unpin> futures_io::AsyncRead for FuturesIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read_buf = hyper::rt::ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, read_buf.unfilled()))?;
        Poll::Ready(Ok(read_buf.filled().len()))
    }
}

impl<T: hyper::rt::Write + Unpin> futures_io::AsyncWrite for FuturesIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(version: &str) -> Request {
        http::Request::builder()
            .method("GET")
            .uri("/room/a/ws")
            .header("upgrade", "WebSocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", version)
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(crate::Body::empty())
            .unwrap()
    }

    #[test]
    fn accept_answers_101_with_the_rfc_accept_key() {
        let response =
            accept_websocket(&upgrade_request("13"), AcceptWebSocket::default()).unwrap();
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455 section 1.3's worked example.
        assert_eq!(
            response.headers()[http::header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(response.extensions().get::<AcceptWebSocket>().is_some());
    }

    #[test]
    fn accept_refuses_plain_requests_old_versions_and_bad_tags() {
        let plain = http::Request::new(crate::Body::empty());
        assert_eq!(
            accept_websocket(&plain, AcceptWebSocket::default()).unwrap_err(),
            UpgradeError::NotWebSocket
        );
        let old = accept_websocket(&upgrade_request("8"), AcceptWebSocket::default()).unwrap_err();
        assert_eq!(old, UpgradeError::UnsupportedVersion);
        assert_eq!(
            old.into_response().status(),
            http::StatusCode::UPGRADE_REQUIRED
        );
        let many = AcceptWebSocket {
            tags: (0..=MAX_TAGS).map(|i| i.to_string()).collect(),
            ..AcceptWebSocket::default()
        };
        assert_eq!(
            accept_websocket(&upgrade_request("13"), many).unwrap_err(),
            UpgradeError::BadTags
        );
        let long = AcceptWebSocket {
            tags: vec!["x".repeat(MAX_TAG_BYTES + 1)],
            ..AcceptWebSocket::default()
        };
        assert_eq!(
            accept_websocket(&upgrade_request("13"), long).unwrap_err(),
            UpgradeError::BadTags
        );
    }

    #[test]
    fn sockets_on_another_node_are_unknown_and_attachments_are_bounded() {
        let sockets = Sockets::new(NodeId(1), WebSocketConfig::default());
        let foreign = SocketId {
            node: NodeId(2),
            seq: 1,
        };
        assert_eq!(
            sockets.send(foreign, WsMessage::Text("x".into())),
            Err(SocketError::NoSocket(foreign))
        );
        let local = SocketId {
            node: NodeId(1),
            seq: 7,
        };
        assert_eq!(sockets.attachment(local), Err(SocketError::NoSocket(local)));
        let big = Bytes::from(vec![0; sockets.config().max_attachment_bytes + 1]);
        assert!(matches!(
            sockets.set_attachment(local, Some(big)),
            Err(SocketError::AttachmentTooLarge { .. })
        ));
        // An auto-response alone keeps the object's entry; clearing it drops the entry.
        let object = ObjectKey::new("room", "a");
        sockets.set_auto_response(
            &object,
            Some(AutoResponse {
                request: "ping".into(),
                response: "pong".into(),
            }),
        );
        assert_eq!(sockets.registry.state.lock().objects.len(), 1);
        sockets.set_auto_response(&object, None);
        assert!(sockets.registry.state.lock().objects.is_empty());
    }
}
