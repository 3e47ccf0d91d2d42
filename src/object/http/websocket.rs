//! WebSocket hosting as an object sees it: accepting an upgrade inside `fetch`
//! ([`ObjectCtx::accept_websocket`]) and acting on sockets ([`ObjectCtx::websockets`],
//! [`WebSockets`]: send, broadcast, list, attachments, close).
//!
//! Owns: the object-facing socket API. The sockets themselves live in the gateway's
//! registry on the node that accepted them, so the object may be evicted while they stay
//! open.
//!
//! Invariants:
//! * A socket id names the node holding it: a send goes to that node's registry, locally
//!   or through its `cairn.http` process; a broadcast and a listing ask every member.
//! * Sends from a handler are output, held by the gate until its writes are durable.

use super::*;

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
