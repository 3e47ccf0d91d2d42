//! The mesh as the scheduler's [`RemoteRouter`] and [`ReplyCodec`]: what makes a remote pid
//! behave like a local one.
//!
//! - **Messages**: a `send`/`try_send` to a remote pid is serialized here (the type's
//!   tag comes from [`Mesh::declare`](super::Mesh::declare)) and queued on the lane to
//!   its node. `try_send` reports `Full` when that lane has no room, and also while the
//!   connection is still being opened (it starts opening it): queuing behind a pending
//!   dial from a non-waiting call could reorder one sender's messages. `send` waits for
//!   both. Room is checked *before* encoding, so a refused message comes back intact
//!   (a `Reply` inside it is not exported).
//! - **Signals** (exit, link, unlink, monitor, demonitor, down, replies) are queued on the
//!   same lane when it has room, else by a short-lived process that waits for it. If the
//!   node cannot be reached, the scheduler is told the node is down, so links and
//!   monitors towards it fire `NoConnection` instead of waiting forever.
//! - **Replies**: a `Reply` inside an outgoing message is exported into the mesh's pending
//!   table under an id, tagged with the node the message goes to; a lost node fails it
//!   with `NoConnection`. An imported `Reply` answers with a reply frame. The first reply
//!   a message exports is also its frame's `call`: if the receiving node cannot deliver
//!   the message (dead pid, unknown name, unknown tag, malformed payload), it answers that
//!   reply with the failure at once (so a call to a dead remote pid fails with `NoProc`
//!   rather than `NoReply` or a timeout), and the dropped port stays silent.

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::future::poll_fn;
use std::sync::{Arc, Weak};

use cairn_scheduler::remote::{
    with_reply_codec, AnyMessage, BoxFuture, RemotePort, RemoteRouter, RemoteSendFailure,
    RemoteSendResult, ReplyCodec, ReplyCompletion,
};
use cairn_scheduler::{CallError, Ctx, ExitReason, MonitorRef, NodeId, Pid};

use super::conns::Queue;
use super::wire::{Bytes, RemoteFailure, Target, Wire};
use super::Inner;

thread_local! {
    /// The node the message being encoded on this thread goes to (exported replies fail
    /// with `NoConnection` if it is lost).
    static ENCODING_FOR: Cell<NodeId> = const { Cell::new(NodeId(0)) };
    /// The first reply exported while encoding the message on this thread: the frame's
    /// `call`, which the receiving node answers with a failure if it cannot deliver.
    static FIRST_EXPORT: Cell<Option<u64>> = const { Cell::new(None) };
    /// The reply (caller's node, id) that the receiving node is reporting itself, while
    /// an undeliverable message is dropped on this thread: its port stays silent.
    static REPORTED: Cell<Option<(NodeId, u64)>> = const { Cell::new(None) };
}

/// The authenticated node at the other end of the connection a message is being decoded
/// from, when called on the decoding thread during `Deserialize` (e.g. from a
/// `#[serde(skip, default = "..")]` field); `None` elsewhere. Lets a message type check a
/// sender id it carries against the peer's authenticated identity.
pub fn decoding_peer() -> Option<NodeId> {
    let peer = ENCODING_FOR.with(Cell::get);
    (peer.0 != 0).then_some(peer)
}

/// Encodes or decodes one message with this mesh handling its replies, `peer` being the
/// node at the other end.
pub(super) fn with_codec<R>(inner: &Inner, peer: NodeId, f: impl FnOnce() -> R) -> R {
    let previous = ENCODING_FOR.with(|c| c.replace(peer));
    let result = with_reply_codec(&inner.codec, f);
    ENCODING_FOR.with(|c| c.set(previous));
    result
}

/// Encodes a message for `peer`; also returns the first reply it exported.
fn encode_for<R>(inner: &Inner, peer: NodeId, encode: impl FnOnce() -> R) -> (R, Option<u64>) {
    let previous = FIRST_EXPORT.with(|c| c.replace(None));
    let result = with_codec(inner, peer, encode);
    (result, FIRST_EXPORT.with(|c| c.replace(previous)))
}

/// A message being delivered from `peer` whose frame names reply `call`: if it cannot be
/// delivered, the receiving node answers `call` with the failure itself, so the port of
/// that reply stays silent while the message is dropped here (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct Reported {
    pub(super) peer: NodeId,
    pub(super) call: Option<u64>,
    /// The request the message was sent for (made current while it is decoded).
    pub(super) request: Option<u64>,
}

impl Reported {
    /// Runs `f` (a delivery that may drop its message) with the reply's port silent.
    pub(super) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        let previous = REPORTED.with(|c| c.replace(self.call.map(|id| (self.peer, id))));
        let result = cairn_scheduler::trace::with_request(self.request, f);
        REPORTED.with(|c| c.set(previous));
        result
    }

    /// Drops an undelivered message with the reply's port silent.
    pub(super) fn drop_message<M>(self, msg: M) {
        self.run(|| drop(msg));
    }
}

/// The scheduler's handle on the mesh (weak: the mesh may close before the runtime).
pub(super) struct MeshRouter {
    pub(super) inner: Weak<Inner>,
}

/// The mesh's reply table, as the scheduler's codec.
pub(super) struct MeshCodec {
    pub(super) inner: Weak<Inner>,
}

/// An imported reply: answers go to `node` as a reply frame for `id`.
struct MeshPort {
    inner: Weak<Inner>,
    node: NodeId,
    id: u64,
}

/// What [`Inner::try_queue_message`] did with a user message.
enum UserQueue {
    Queued,
    /// No room on the lane now, or its connection is still being opened (now started).
    Full,
    /// The node is neither a member nor connected.
    NotMember,
    /// The payload did not serialize.
    Encode(String),
    /// The connection was lost.
    Closed,
}

impl MeshRouter {
    /// Queues a user message for `to` on `node` without waiting (remote `try_send`).
    fn try_send_to(&self, node: NodeId, to: Target, msg: AnyMessage) -> RemoteSendResult {
        let Some(inner) = self.inner.upgrade() else {
            return Err((RemoteSendFailure::NoConnection, msg));
        };
        let (tag, encode) = match encoder(&inner, msg.as_ref()) {
            Ok(found) => found,
            Err(failure) => return Err((failure, msg)),
        };
        match inner.try_queue_message(node, &to, tag, || encode(msg.as_ref())) {
            UserQueue::Queued => Ok(()),
            UserQueue::Full => Err((RemoteSendFailure::Full, msg)),
            UserQueue::Encode(e) => Err((encode_failed(&to, tag, &e), msg)),
            UserQueue::NotMember | UserQueue::Closed => Err((RemoteSendFailure::NoConnection, msg)),
        }
    }

    /// Queues a user message for `to` on `node`, waiting for the connection and for room.
    fn send_to(&self, node: NodeId, to: Target, msg: AnyMessage) -> BoxFuture<RemoteSendResult> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return Err((RemoteSendFailure::NoConnection, msg));
            };
            let (tag, encode) = match encoder(&inner, msg.as_ref()) {
                Ok(found) => found,
                Err(failure) => return Err((failure, msg)),
            };
            let Ok(conn) = inner.conn(node).await else {
                return Err((RemoteSendFailure::NoConnection, msg));
            };
            loop {
                poll_fn(|cx| conn.poll_room(cx)).await;
                let make = || inner.message_frame(node, &to, tag, || encode(msg.as_ref()));
                match conn.try_queue(make) {
                    Queue::Queued => return Ok(()),
                    // Another sender took the room first.
                    Queue::NoRoom => continue,
                    Queue::Failed(e) => return Err((encode_failed(&to, tag, &e), msg)),
                    Queue::Closed => return Err((RemoteSendFailure::NoConnection, msg)),
                }
            }
        })
    }
}

/// The registered tag and serializer of a type-erased message.
fn encoder(
    inner: &Inner,
    msg: &dyn Any,
) -> Result<(&'static str, super::registry::Encode), RemoteSendFailure> {
    inner
        .registry
        .encoder(msg.type_id())
        .ok_or(RemoteSendFailure::Unregistered)
}

fn encode_failed(to: &Target, tag: &str, error: &str) -> RemoteSendFailure {
    tracing::error!(?to, tag, %error, "message could not be serialized");
    RemoteSendFailure::Unregistered
}

impl RemoteRouter for MeshRouter {
    fn try_send(&self, to: Pid, msg: AnyMessage) -> RemoteSendResult {
        self.try_send_to(to.node(), Target::Pid(to), msg)
    }

    fn send(&self, to: Pid, msg: AnyMessage) -> BoxFuture<RemoteSendResult> {
        self.send_to(to.node(), Target::Pid(to), msg)
    }

    fn try_send_named(&self, node: NodeId, name: &str, msg: AnyMessage) -> RemoteSendResult {
        self.try_send_to(node, Target::Name(name.to_owned()), msg)
    }

    fn send_named(&self, node: NodeId, name: &str, msg: AnyMessage) -> BoxFuture<RemoteSendResult> {
        self.send_to(node, Target::Name(name.to_owned()), msg)
    }

    fn exit(&self, to: Pid, from: Pid, reason: ExitReason, via_link: bool) {
        self.signal(
            to.node(),
            Wire::Exit {
                to,
                from,
                reason,
                link: via_link,
            },
        );
    }

    fn link(&self, to: Pid, from: Pid) {
        self.signal(to.node(), Wire::Link { to, from });
    }

    fn unlink(&self, to: Pid, from: Pid) {
        self.signal(to.node(), Wire::Unlink { to, from });
    }

    fn monitor(&self, target: Pid, watcher: Pid, monitor: MonitorRef) {
        self.signal(
            target.node(),
            Wire::Monitor {
                target,
                watcher,
                monitor: monitor.to_raw(),
            },
        );
    }

    fn demonitor(&self, target: Pid, monitor: MonitorRef) {
        self.signal(
            target.node(),
            Wire::Demonitor {
                target,
                monitor: monitor.to_raw(),
            },
        );
    }

    fn down(&self, watcher: Pid, monitor: MonitorRef, target: Pid, reason: ExitReason) {
        self.signal(
            watcher.node(),
            Wire::Down {
                monitor: monitor.to_raw(),
                target,
                reason,
            },
        );
    }

    fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.upgrade()?.cluster_whereis(name)
    }

    fn name_registered(&self, name: &str, pid: Pid) {
        if let Some(inner) = self.inner.upgrade() {
            inner.claimed_by_scheduler(name, pid);
        }
    }

    fn name_released(&self, name: &str, pid: Pid) {
        if let Some(inner) = self.inner.upgrade() {
            inner.release(name, pid);
        }
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.inner.upgrade().is_some_and(|i| i.is_member(node))
    }
}

impl MeshRouter {
    fn signal(&self, node: NodeId, frame: Wire) {
        if let Some(inner) = self.inner.upgrade() {
            inner.send_signal(node, frame);
        }
    }
}

impl Inner {
    /// A user message frame for `to` on `node`, its payload encoded with this mesh
    /// handling the `Reply`s inside it.
    fn message_frame(
        &self,
        node: NodeId,
        to: &Target,
        tag: &'static str,
        encode: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Wire, String> {
        let (payload, call) = encode_for(self, node, encode);
        Ok(Wire::Send {
            from: None,
            to: to.clone(),
            tag: Cow::Borrowed(tag),
            call,
            payload: Bytes(payload?),
            request: cairn_scheduler::trace::current_request(),
        })
    }

    /// Queues a user message for `to` on `node` without waiting: the one path of remote
    /// `try_send`, by pid or by name. Room is checked before
    /// encoding, so a refused message has exported no `Reply`; while the connection is
    /// still opening the answer is `Full` (and the dial is started), since queuing behind
    /// a pending dial could reorder one sender's messages.
    fn try_queue_message(
        self: &Arc<Self>,
        node: NodeId,
        to: &Target,
        tag: &'static str,
        encode: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> UserQueue {
        let conn = match self.up_conn(node) {
            Some(conn) => conn,
            None if self.is_member(node) => {
                self.open_soon(node);
                return UserQueue::Full;
            }
            None => return UserQueue::NotMember,
        };
        match conn.try_queue(|| self.message_frame(node, to, tag, encode)) {
            Queue::Queued => UserQueue::Queued,
            Queue::NoRoom => UserQueue::Full,
            Queue::Failed(e) => UserQueue::Encode(e),
            Queue::Closed => UserQueue::Closed,
        }
    }

    /// Queues a signal frame for `node`: now if its lane has room, else from a process
    /// that waits for the lane (at most `MAX_SIGNAL_WAITERS` per connection: a peer that
    /// leaves more waiting does not read its lane, and its connection is closed). An
    /// unreachable node is reported down to the scheduler.
    pub(super) fn send_signal(self: &Arc<Self>, node: NodeId, frame: Wire) {
        if node == self.node {
            // A reply of this node's own that came back in a message. Replies are
            // re-exported when passed on, so only a forged message names one: checked
            // (and refused) like any answer.
            if let Wire::Reply { id, result } = frame {
                self.complete(node, id, result);
            }
            return;
        }
        let waiting_on = match self.up_conn(node) {
            Some(conn) => {
                if let Queue::Queued = conn.try_queue(|| Ok(frame.clone())) {
                    return;
                }
                if !conn.wait_for_room(super::limits::MAX_SIGNAL_WAITERS) {
                    if conn.mark_overloaded() {
                        tracing::warn!(peer = %node, "the peer leaves its lane unread: closing its connection");
                        self.counters.bump(super::stats::Count::SignalOverflow);
                        conn.quic()
                            .close(super::wire::CLOSE_OVERLOADED, b"lane left unread");
                    }
                    return;
                }
                Some(conn)
            }
            None => None,
        };
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let mut sent = Err(String::new());
            if let Some(conn) = waiting_on {
                sent = conn.send(&frame).await.map_err(|e| e.to_string());
                conn.signal_sent();
            }
            if sent.is_err() {
                // No connection, or the one waited on was replaced or lost meanwhile.
                sent = match inner.conn(node).await {
                    Ok(conn) => conn.send(&frame).await.map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
            }
            if let Err(error) = sent {
                tracing::debug!(peer = %node, %error, "signal not sent: the node is unreachable");
                if let Some(inbound) = inner.inbound() {
                    inbound.node_down(node);
                }
            }
        });
    }
}

impl ReplyCodec for MeshCodec {
    fn export(&self, complete: ReplyCompletion) -> (NodeId, u64) {
        let peer = ENCODING_FOR.with(Cell::get);
        let Some(inner) = self.inner.upgrade() else {
            complete(Err(CallError::NoConnection));
            return (NodeId(0), 0);
        };
        let Some(id) = inner.replies.export(peer, complete) else {
            return (NodeId(0), 0);
        };
        FIRST_EXPORT.with(|c| {
            if c.get().is_none() {
                c.set(Some(id));
            }
        });
        (inner.node, id)
    }

    fn import(&self, node: NodeId, id: u64) -> Box<dyn RemotePort> {
        Box::new(MeshPort {
            inner: self.inner.clone(),
            node,
            id,
        })
    }

    fn forget(&self, id: u64) {
        if let Some(inner) = self.inner.upgrade() {
            inner.replies.forget(id);
        }
    }
}

impl MeshPort {
    fn reply(&self, result: Result<Bytes, RemoteFailure>) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let frame = Wire::Reply {
            id: self.id,
            result,
        };
        inner.send_signal(self.node, frame);
        true
    }
}

impl RemotePort for MeshPort {
    fn answer(self: Box<Self>, value: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.inner.strong_count() == 0 {
            return Err(value);
        }
        self.reply(Ok(Bytes(value)));
        Ok(())
    }

    fn dropped(self: Box<Self>) {
        if REPORTED.with(Cell::get) == Some((self.node, self.id)) {
            // The message carrying it was not delivered; the receiving node reports why.
            return;
        }
        self.reply(Err(RemoteFailure::Dropped));
    }

    fn fail(self: Box<Self>, failure: CallError) {
        let failure = match failure {
            CallError::NoProc => RemoteFailure::NoProc,
            CallError::WrongType => RemoteFailure::WrongType,
            CallError::BadReply(why) => RemoteFailure::Malformed(why),
            // The wire has no word for the rest (a lost or slow node further along): the
            // caller hears that no answer will come.
            _ => RemoteFailure::Dropped,
        };
        self.reply(Err(failure));
    }
}
