//! What an application writes and sees: the [`Object`] trait, the [`ObjectCtx`] its callbacks
//! get, the errors of sending to objects, and the messages an activation's process takes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_scheduler::{CallError, Ctx, Handle, NodeId, Pid};
use cairn_storage::Keyspace;
use cairn_supervisor::ActorError;

use super::alarms::{ALARM_MAX_RETRIES, ALARM_RETRY_BASE};
use super::{ObjectRef, Objects};
use crate::placement::PlacementError;

/// Default idle time after which an object is evicted from memory.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A durable object class.
///
/// The message-enum form (what `#[cairn::object]` generates, see [`crate::rpc`]): the state
/// is loaded in `activate`, each message's writes commit together and a `Reply` leaves once
/// they are durable; `alarm` runs when the time set with `set_alarm` comes.
///
/// ```
/// use cairn::prelude::*;
///
/// struct Counter { total: u64 }
///
/// enum CounterMsg {
///     Add(u64, Reply<u64>),
///     Reset,
/// }
///
/// impl Object for Counter {
///     const CLASS: &'static str = "counter";
///     type Msg = CounterMsg;
///
///     async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
///         Ok(Counter { total: ctx.storage().get("total")?.unwrap_or(0) })
///     }
///
///     async fn handle(&mut self, msg: CounterMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
///         match msg {
///             CounterMsg::Add(n, reply) => {
///                 self.total += n;
///                 ctx.storage().put("total", &self.total)?;
///                 // Reset in an hour, even if the node restarts meanwhile.
///                 ctx.storage().set_alarm(SystemTime::now() + Duration::from_secs(3600))?;
///                 let _ = reply.send(self.total); // leaves once the writes are durable
///             }
///             CounterMsg::Reset => self.alarm(ctx).await?,
///         }
///         Ok(())
///     }
///
///     async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
///         self.total = 0;
///         ctx.storage().delete("total")?;
///         Ok(())
///     }
/// }
///
/// let node = Node::builder().temporary().start().unwrap();
/// node.host_local::<Counter>(); // `host` on a mesh: its messages must then serialize
/// let visits = node.object::<Counter>("visits");
/// let add = |n| visits.call(move |r| CounterMsg::Add(n, r), Duration::from_secs(5));
/// assert_eq!(node.block_on(add(2)).unwrap(), 2);
/// assert_eq!(node.block_on(add(3)).unwrap(), 5);
/// node.block_on(visits.send(CounterMsg::Reset)).unwrap();
/// assert_eq!(node.block_on(add(1)).unwrap(), 1);
///
/// // A send that fails gives the message back.
/// let too_long = node.object::<Counter>(&"k".repeat(100_000)); // ObjectError::KeyTooLong
/// let failed = node.block_on(too_long.send(CounterMsg::Reset)).unwrap_err();
/// assert!(matches!(failed.into_inner(), CounterMsg::Reset));
/// node.shutdown();
/// ```
pub trait Object: Send + Sized + 'static {
    /// The class name; objects are addressed by `(CLASS, key)`.
    const CLASS: &'static str;
    /// The messages it handles.
    type Msg: Send + 'static;

    /// Builds the in-memory state, usually from `ctx.storage()`. Runs on every activation.
    fn activate(ctx: &mut ObjectCtx<Self>)
        -> impl Future<Output = Result<Self, ActorError>> + Send;

    /// Handles one message. Its writes commit atomically; what it sends leaves once durable.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// How long this class's objects stay in memory without messages (default: the node's
    /// idle timeout, [`crate::NodeBuilder::object_idle_timeout`]).
    fn idle_timeout() -> Option<Duration> {
        None
    }

    /// Runs at eviction, after the mailbox closed (no message can arrive any more). Its writes
    /// commit before the activation ends.
    fn deactivate(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Answers an HTTP request for `/{CLASS}/{key}/...` (routed to the object's owner; see
    /// [`crate::object::http`]). A handler like [`Object::handle`]: its writes commit
    /// atomically and the response leaves once they are durable. An error or panic answers
    /// 500. To accept a WebSocket, return [`ObjectCtx::accept_websocket`]'s response. The
    /// default answers 404.
    #[cfg(feature = "http")]
    fn fetch(
        &mut self,
        request: ::http::Request<bytes::Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<::http::Response<bytes::Bytes>, ActorError>> + Send {
        let _ = (request, ctx);
        async { Ok(super::http::not_found()) }
    }

    /// A message arrived on one of this object's WebSockets (re-activating it if it was
    /// evicted). The socket reads its next message once this handler finished.
    #[cfg(feature = "http")]
    fn websocket_message(
        &mut self,
        socket: super::http::SocketId,
        message: super::http::WsMessage,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (socket, message, ctx);
        async { Ok(()) }
    }

    /// A client closed one of this object's WebSockets (it is gone already).
    #[cfg(feature = "http")]
    fn websocket_close(
        &mut self,
        socket: super::http::SocketId,
        code: u16,
        reason: String,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (socket, code, reason, ctx);
        async { Ok(()) }
    }

    /// One of this object's WebSockets failed (protocol error, oversized message); it is
    /// gone.
    #[cfg(feature = "http")]
    fn websocket_error(
        &mut self,
        socket: super::http::SocketId,
        error: String,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (socket, error, ctx);
        async { Ok(()) }
    }

    /// Runs when the object's alarm fires. The alarm is already cleared in this handler's
    /// write set (so `get_alarm()` is `None` unless the handler sets a new one); an error
    /// restores it and retries later with backoff ([`ObjectCtx::alarm_retry_count`]).
    fn alarm(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }
}

/// Errors from sending to objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The class is not hosted on this node ([`crate::Node::host`]).
    #[error("object class {0:?} is not hosted on this node")]
    NotHosted(&'static str),
    /// The object's name `class[@region]/key` would not parse back into its parts: the
    /// class name is empty or contains `@` or `/`, or the location hint is empty or
    /// contains `/` (see `docs/location_hints.md`). Nothing was sent.
    #[error("object {name:?}: {reason}")]
    BadName {
        /// The name as it would be.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `class/key` is longer than a storage name may be.
    #[error("object name {len} bytes long; at most {max}")]
    KeyTooLong {
        /// Length of `class/key`.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A call got no answer.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No node can own the object (none hosts objects, or none is in the hinted region).
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The owner's node could not be reached (or the message could not be serialized).
    #[error("object owner {node} unreachable: {reason}")]
    Unreachable {
        /// The owner.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The message crossed the mesh [`MAX_HOPS`](super::MAX_HOPS) times without reaching its
    /// owner.
    #[error("object {name} not delivered: nodes disagree about its owner")]
    Misrouted {
        /// `class/key`.
        name: String,
    },
    /// The object's shard had no reachable leader within
    /// `SHARD_WAIT` (election, failover, or no majority of its replicas
    /// alive). Retryable: nothing was delivered.
    #[error("object {name}: shard {shard} has no reachable leader")]
    ShardUnavailable {
        /// `class/key`.
        name: String,
        /// The shard.
        shard: u32,
    },
}

/// Whether an operation that failed with an [`ObjectError`] may be tried again, and what
/// the failed attempt may have done: Durable Objects' `retryable`, with the at-most-once
/// question answered ([`ObjectError::retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The object never got the message (no reachable leader of its shard, no owner, a
    /// lost route, an unreachable owner at send time): trying again cannot apply it twice.
    Safe,
    /// The message may have been handled, and its writes committed, before the failure (no
    /// answer within the timeout, a dropped reply after a failed commit or a crash, a lost
    /// connection): try again only if the operation is idempotent, or ask the object first.
    IfIdempotent,
    /// Trying again fails the same way: a bad or too long name, a class not hosted here,
    /// the handler's own error, an answer of another type.
    Never,
}

impl ObjectError {
    /// Whether this failure may be retried, and whether the object may have handled the
    /// message (see [`Retry`]). Routing already retries what it safely can within the
    /// message's time (a shard without a leader, a stale owner), so a `Safe` error means
    /// that time ran out.
    pub fn retry(&self) -> Retry {
        match self {
            ObjectError::ShardUnavailable { .. }
            | ObjectError::Misrouted { .. }
            | ObjectError::Unreachable { .. }
            | ObjectError::Placement(_) => Retry::Safe,
            ObjectError::NotHosted(_)
            | ObjectError::BadName { .. }
            | ObjectError::KeyTooLong { .. } => Retry::Never,
            ObjectError::Call(call) => match call {
                // Not taken: the process was gone, or the request found no route.
                CallError::NoProc | CallError::Unroutable(_) => Retry::Safe,
                CallError::Timeout | CallError::NoReply | CallError::NoConnection => {
                    Retry::IfIdempotent
                }
                CallError::Failed(never) => match *never {},
                CallError::WrongType | CallError::BadReply(_) => Retry::Never,
                // A kind added later: assume the worst about what the attempt did.
                _ => Retry::IfIdempotent,
            },
        }
    }
}

/// Why [`ObjectRef::send`](super::ObjectRef::send) did not deliver a message, with the
/// message: nothing is dropped silently.
///
/// `Debug` does not need the message to be `Debug`; `?` turns it into its [`ObjectError`]
/// (dropping the message) where that is all a caller wants.
pub struct ObjectSendError<M> {
    /// Why.
    pub error: ObjectError,
    /// The message that was not delivered.
    pub msg: M,
}

impl<M> ObjectSendError<M> {
    pub(crate) fn new(error: ObjectError, msg: M) -> Self {
        ObjectSendError { error, msg }
    }

    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        self.msg
    }
}

impl<M> std::fmt::Debug for ObjectSendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<M> std::fmt::Display for ObjectSendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<M> std::error::Error for ObjectSendError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl<M> From<ObjectSendError<M>> for ObjectError {
    fn from(e: ObjectSendError<M>) -> Self {
        e.error
    }
}

/// Object settings.
#[derive(Clone, Debug)]
pub(crate) struct ObjectsConfig {
    /// Idle time before eviction.
    pub(crate) idle_timeout: Duration,
    /// Delay before the first retry of a failed alarm; doubles on each further failure.
    pub(crate) alarm_retry_base: Duration,
    /// Retries of a failing alarm before it is dropped.
    pub(crate) alarm_max_retries: u32,
    /// The wall clock alarms are read against.
    pub(crate) clock: super::WallClock,
    /// The replicated shards' settings (mesh nodes; see `replication`).
    #[cfg(feature = "mesh")]
    pub(crate) shards: cairn_shard::ShardConfig,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            alarm_retry_base: ALARM_RETRY_BASE,
            alarm_max_retries: ALARM_MAX_RETRIES,
            clock: super::WallClock::system(),
            #[cfg(feature = "mesh")]
            shards: cairn_shard::ShardConfig::default(),
        }
    }
}

/// The messages an activation's process takes (its pid is [`ObjectRef::pid`]). Applications
/// send through [`ObjectRef`], which wraps theirs in `User`.
pub enum ObjectMsg<M> {
    /// An application message.
    User(M),
    /// The alarm set for `at` is due.
    Alarm(SystemTime),
    /// This node no longer owns the object: finish what is queued, then deactivate.
    Handoff,
    /// An HTTP request or a WebSocket event for the object's handlers.
    #[cfg(feature = "http")]
    Http(super::http::HttpCall),
}

/// What an object's callbacks get: its storage, key, and process context.
pub struct ObjectCtx<O: Object> {
    pub(super) ctx: Ctx<ObjectMsg<O::Msg>>,
    pub(super) storage: Keyspace,
    pub(super) key: Arc<str>,
    pub(super) region: Option<Arc<str>>,
    pub(super) objects: Arc<Objects>,
    /// Failures of the alarm being delivered, counted per activation.
    pub(super) alarm_retries: u32,
    /// The class's counters (see `stats`).
    pub(super) stats: Arc<super::stats::ClassStats>,
    /// Handler calls of this activation (sampled for the hottest objects, see `stats`).
    pub(super) handled: u64,
}

impl<O: Object> ObjectCtx<O> {
    /// The object's durable keyspace (its name: `class/key`, or `class@region/key`).
    pub fn storage(&self) -> &Keyspace {
        &self.storage
    }

    /// Sets the object's alarm to `at`, replacing any other, as one of this handler's
    /// writes: it takes effect when they commit, and not if the handler crashes. The same
    /// as `storage().set_alarm(at)`, which stages it the same way and cannot fail either,
    /// but without a `Result`: a typed method answering its own error type
    /// (`Result<T, E>`) needs no conversion from `StorageError` to set one.
    pub fn set_alarm(&self, at: SystemTime) {
        if let Err(e) = self.storage.set_alarm(at) {
            // The keyspace only records the alarm in its pending write set.
            unreachable!("staging an alarm failed: {e}");
        }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current activation's pid.
    pub fn pid(&self) -> Pid {
        self.ctx.pid()
    }

    /// The runtime.
    pub fn handle(&self) -> &Handle {
        self.ctx.handle()
    }

    /// A reference to another object (of any hosted class).
    pub fn object<P: Object>(&self, key: &str) -> ObjectRef<P> {
        ObjectRef::new(self.objects.clone(), key)
    }

    /// Inside [`Object::alarm`]: how many times this alarm has failed before (0 on the
    /// first delivery).
    pub fn alarm_retry_count(&self) -> u32 {
        self.alarm_retries
    }

    /// A reference to another object, placed within `region` (see [`crate::Node::object_in`]).
    pub fn object_in<P: Object>(&self, key: &str, region: &str) -> ObjectRef<P> {
        ObjectRef::new_in(self.objects.clone(), key, Some(region))
    }

    /// A reference to this object (with the location hint it was activated with).
    pub fn me(&self) -> ObjectRef<O> {
        ObjectRef::new_in(self.objects.clone(), &self.key, self.region.as_deref())
    }
}
