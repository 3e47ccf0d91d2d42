//! The mesh's own send and call API, beside the location-transparent one (`Handle`,
//! `ActorRef`, `Reply`) that goes through the scheduler's router.
//!
//! # Remote calls and [`RemoteReply`]
//!
//! A [`Mesh::call`] puts a [`RemoteReply<R>`] (serde: the caller's node and a reply id)
//! into the request; the caller's mesh keeps the pending id in its reply table; the callee
//! answers with `reply.send(&mesh, value).await`, which sends a reply frame back (or
//! completes locally when the caller is on the same node). Dropping a `RemoteReply`
//! without answering does **not** resolve the caller (it times out) — unless the request
//! could not be delivered at all, which the callee's mesh reports at once
//! ([`MeshCallError::Remote`]).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{NodeId, Pid, Reply};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{MeshCallError, MeshSendError, ReplyError};
use super::replies::Pending;
use super::router::{self, UserQueue};
use super::wire::{decode_payload, encode_payload, Bytes, RemoteFailure, Target, Wire};
use super::{Inner, Mesh};

/// A serializable reply port for [`Mesh::call`]: the caller's node and a reply id.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RemoteReply<R> {
    node: NodeId,
    id: u64,
    #[serde(skip)]
    _answer: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RemoteReply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteReply({}/{})", self.node, self.id)
    }
}

impl<R: Serialize> RemoteReply<R> {
    /// The caller's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Answers the call through `mesh` (the callee's mesh).
    pub async fn send(self, mesh: &Mesh, value: R) -> Result<(), ReplyError> {
        let bytes = encode_payload(&value).map_err(ReplyError::Encode)?;
        mesh.inner
            .answer(self.node, self.id, Ok(Bytes(bytes)))
            .await
    }
}

impl Mesh {
    /// Sends `msg` to `pid`, on this node or another. Returns once the message is in a
    /// local mailbox or queued on the connection to its node (delivery there is not
    /// confirmed: a dead pid there is a dead letter on that node).
    pub async fn send<M>(&self, pid: Pid, msg: M) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if pid.node() == self.inner.node {
            return self.inner.handle.send(pid, msg).await.map_err(local_error);
        }
        self.inner
            .send_remote(pid.node(), Target::Pid(pid), None, msg)
            .await
    }

    /// Sends `msg` to the process registered as `name` on `node`.
    pub async fn send_named<M>(
        &self,
        node: NodeId,
        name: &str,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if node == self.inner.node {
            return match self.inner.handle.whereis(name) {
                Some(pid) => self.inner.handle.send(pid, msg).await.map_err(local_error),
                None => Err(MeshSendError::NoProc(msg)),
            };
        }
        self.inner
            .send_remote(node, Target::Name(name.to_owned()), None, msg)
            .await
    }

    /// Sends `msg` to the process registered as `name` on `node` without waiting: `Full`
    /// when the lane to `node` has no room or its connection is not open yet (this starts
    /// opening it), as `try_send` to a remote pid does.
    pub fn try_send_named<M>(
        &self,
        node: NodeId,
        name: &str,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        let inner = &self.inner;
        if node == inner.node {
            let Some(pid) = inner.handle.whereis(name) else {
                return Err(MeshSendError::NoProc(msg));
            };
            return inner.handle.try_send(pid, msg).map_err(|e| match e {
                cairn_scheduler::SendError::Full(m) => MeshSendError::Full(m),
                other => local_error(other),
            });
        }
        let Some(tag) = inner.registry.tag_of::<M>() else {
            return Err(MeshSendError::Unregistered(msg));
        };
        let target = Target::Name(name.to_owned());
        match inner.try_queue_message(node, target, tag, || encode_payload(&msg)) {
            UserQueue::Queued => Ok(()),
            UserQueue::Full => Err(MeshSendError::Full(msg)),
            UserQueue::Encode(e) => Err(MeshSendError::Encode(msg, e)),
            UserQueue::NotMember => {
                let why = format!("node {node} is not known to this node");
                Err(MeshSendError::Unreachable(msg, node, why))
            }
            UserQueue::Closed => {
                let why = "connection lost".to_owned();
                Err(MeshSendError::Unreachable(msg, node, why))
            }
        }
    }

    /// Calls `pid`: builds the request around a fresh [`RemoteReply`] and waits at most
    /// `timeout` for the answer (the callee answers with [`RemoteReply::send`]).
    pub async fn call<M, R>(
        &self,
        pid: Pid,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        self.call_target(pid.node(), Target::Pid(pid), make, timeout)
            .await
    }

    /// Calls the process registered as `name` on `node`.
    pub async fn call_named<M, R>(
        &self,
        node: NodeId,
        name: &str,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        self.call_target(node, Target::Name(name.to_owned()), make, timeout)
            .await
    }

    async fn call_target<M, R>(
        &self,
        node: NodeId,
        target: Target,
        make: impl FnOnce(RemoteReply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, MeshCallError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let id = inner.next_id();
        let (reply, rx) = Reply::pair();
        if !inner.replies.insert(id, node, Pending::Call(reply)) {
            return Err(MeshCallError::Closed);
        }
        let _cleanup = PendingGuard { inner, id };
        let msg = make(RemoteReply {
            node: inner.node,
            id,
            _answer: PhantomData,
        });
        let sent = if node == inner.node {
            let pid = match target {
                Target::Pid(pid) => Some(pid),
                Target::Name(name) => inner.handle.whereis(&name),
            };
            match pid {
                None => Err(MeshCallError::NoProc),
                Some(pid) => {
                    let send = inner.handle.send(pid, msg);
                    match inner.handle.timeout(timeout, send).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(match local_error(e) {
                            MeshSendError::WrongType(_) => MeshCallError::WrongType,
                            _ => MeshCallError::NoProc,
                        }),
                        Err(_) => Err(MeshCallError::Timeout),
                    }
                }
            }
        } else {
            let send = inner.send_remote(node, target, Some(id), msg);
            match inner.handle.timeout(timeout, send).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(match e {
                    MeshSendError::Unreachable(_, node, why) => {
                        MeshCallError::Unreachable(node, why)
                    }
                    other => MeshCallError::Codec(other.to_string()),
                }),
                Err(_) => Err(MeshCallError::Timeout),
            }
        };
        sent?;
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = match inner.handle.timeout(left, rx).await {
            Err(_) => return Err(MeshCallError::Timeout),
            Ok(Err(_)) => return Err(MeshCallError::Closed),
            Ok(Ok(result)) => result?,
        };
        decode_payload(&bytes.0).map_err(MeshCallError::Codec)
    }
}

/// Removes a call's pending entry however the call ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.replies.forget(self.id);
    }
}

fn local_error<M>(e: cairn_scheduler::SendError<M>) -> MeshSendError<M> {
    match e {
        cairn_scheduler::SendError::WrongType(m) => MeshSendError::WrongType(m),
        other => MeshSendError::NoProc(other.into_inner()),
    }
}

impl Inner {
    async fn answer(
        self: &Arc<Self>,
        node: NodeId,
        id: u64,
        result: Result<Bytes, RemoteFailure>,
    ) -> Result<(), ReplyError> {
        if node == self.node {
            return match self.replies.complete(id, result) {
                true => Ok(()),
                false => Err(ReplyError::Gone),
            };
        }
        let conn = self
            .conn(node)
            .await
            .map_err(|e| ReplyError::Unreachable(node, e.to_string()))?;
        conn.send(&Wire::Reply { id, result })
            .await
            .map_err(|e| ReplyError::Unreachable(node, e.to_string()))
    }

    async fn send_remote<M>(
        self: &Arc<Self>,
        node: NodeId,
        to: Target,
        call: Option<u64>,
        msg: M,
    ) -> Result<(), MeshSendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        let Some(tag) = self.registry.tag_of::<M>() else {
            return Err(MeshSendError::Unregistered(msg));
        };
        // Under the codec, so a `Reply` inside the message is exported (as the router's
        // sends do), e.g. in a request to a process known only by its name there.
        let payload = match router::with_codec(self, node, || encode_payload(&msg)) {
            Ok(p) => p,
            Err(e) => return Err(MeshSendError::Encode(msg, e)),
        };
        let conn = match self.conn(node).await {
            Ok(conn) => conn,
            Err(e) => return Err(MeshSendError::Unreachable(msg, node, e.to_string())),
        };
        let frame = Wire::Send {
            from: None,
            to,
            tag: tag.to_owned(),
            call,
            payload: Bytes(payload),
        };
        match conn.send(&frame).await {
            Ok(()) => Ok(()),
            Err(e) => Err(MeshSendError::Unreachable(msg, node, e.to_string())),
        }
    }
}
