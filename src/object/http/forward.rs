//! Forwarding over the mesh: the `cairn.http` process ([`HTTP_PROCESS`]) that takes
//! requests and socket events other nodes' gateways route to this node's objects, and the
//! wire forms they travel in.
//!
//! Owns: the wire types (requests, responses, socket events and listings as they cross
//! nodes), the process's loop, the count of forwarded work in flight, and closing the
//! sockets this node holds for objects whose owner changed.
//!
//! Invariants:
//! * At most [`MAX_FORWARDED`] forwarded requests and events run at once on a node (a
//!   [`ForwardPermit`] each); more are answered 503, never queued.
//! * A forwarded request holds its permit no longer than its sender waits ([`within`]).
//! * Wire input is checked as it is decoded: bad header names or values are a failure
//!   answer, never a panic.

use super::*;

/// The node whose object accepted a WebSocket (a response extension, set at the edge).
#[derive(Clone, Copy, Debug)]
pub(super) struct AcceptedBy(pub(super) NodeId);

/// Marks a fetch response as accepting the request's WebSocket (a response extension).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Accepted {
    pub(super) tags: Vec<String>,
    pub(super) attachment: Option<Vec<u8>>,
}

pub(super) type Headers = Vec<(String, Vec<u8>)>;

pub(super) fn headers_to_wire(headers: &http::HeaderMap) -> Headers {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

pub(super) fn headers_from_wire(wire: Headers) -> Result<http::HeaderMap, Failure> {
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
pub(super) struct WireRequest {
    pub(super) method: String,
    pub(super) uri: String,
    pub(super) headers: Headers,
    pub(super) body: Vec<u8>,
}

impl WireRequest {
    pub(super) fn new(request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        WireRequest {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: headers_to_wire(&parts.headers),
            body: body.to_vec(),
        }
    }

    pub(super) fn into_request(self) -> Result<http::Request<Bytes>, Failure> {
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
pub(super) struct WireResponse {
    pub(super) status: u16,
    pub(super) headers: Headers,
    pub(super) body: Vec<u8>,
    pub(super) accept: Option<Accepted>,
}

impl WireResponse {
    pub(super) fn new(response: http::Response<Bytes>) -> Self {
        let (parts, body) = response.into_parts();
        WireResponse {
            status: parts.status.as_u16(),
            headers: headers_to_wire(&parts.headers),
            body: body.to_vec(),
            accept: parts.extensions.get::<Accepted>().cloned(),
        }
    }

    pub(super) fn into_response(self) -> Result<http::Response<Bytes>, Failure> {
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
pub(super) enum WireWs {
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
pub(super) enum WireEvent {
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
pub(super) struct WireSocket {
    pub(super) seq: u64,
    pub(super) tags: Vec<String>,
    pub(super) attachment: Option<Vec<u8>>,
}

/// What [`HTTP_PROCESS`] takes.
#[derive(Serialize, Deserialize)]
pub(super) enum HttpMsg {
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

/// One forwarded request or event running (see [`MAX_FORWARDED`]).
pub(super) struct ForwardPermit(pub(super) Arc<AtomicUsize>);

impl Drop for ForwardPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
pub(super) fn close_moved_sockets(mesh: &Mesh, state: &HttpState) {
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

pub(super) async fn run_forwarding(
    mut ctx: Ctx<HttpMsg>,
    objects: Weak<Objects>,
    state: Arc<HttpState>,
) {
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

pub(super) fn serve_forwarded(
    handle: &Handle,
    objects: Arc<Objects>,
    state: &HttpState,
    msg: HttpMsg,
) {
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
            // The request id came in the mesh frame and is kept by the reply.
            let request_id = reply.request_id();
            let span = request_span(request_id, "forwarded", &class, &key);
            span.in_scope(|| {
                tracing::debug!(
                    target: "cairn::request",
                    request_id = %RequestHex(request_id),
                    hops,
                    "serving a request forwarded by another node"
                );
            });
            handle.spawn(move |_: Ctx<()>| {
                let work = async move {
                    let _permit = permit;
                    let timeout = forward_timeout(&objects);
                    let handle = objects.handle.clone();
                    let answer = match request.into_request() {
                        Ok(request) => within(
                            &handle,
                            timeout,
                            (entry.fetch)(objects, &key, request, hops),
                        )
                        .await
                        .unwrap_or_else(|| Err(Failure::Unavailable("timed out".to_owned())))
                        .map(WireResponse::new),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                };
                within_request(request_id, work.instrument(span))
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

/// Runs `fut` to completion or gives up after `timeout` (`None`): a forwarded request holds
/// its permit no longer than its sender waits.
pub(super) async fn within<T>(
    handle: &Handle,
    timeout: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
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
