//! The mesh's errors: starting a mesh, opening a connection, and the mesh's own send and
//! call API.

use std::fmt;
use std::sync::Arc;

use cairn_scheduler::NodeId;

use super::wire::RemoteFailure;
use crate::endpoint::{ConnectError, LaneError, RecvError, SendError};

/// Why [`Mesh::start`](super::Mesh::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding the endpoint failed.
    #[error(transparent)]
    Bind(#[from] crate::endpoint::BindError),
    /// A configuration value is out of range.
    #[error("bad mesh configuration: {0}")]
    Config(String),
}

/// Why a connection to a node could not be opened (dialing, the hello exchange, or waiting
/// for the connection the peer kept). Cloned to every sender that waited for the dial.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// This mesh is closed.
    #[error("mesh closed")]
    Closed,
    /// The node is neither a member nor named by any hello or seed: no address to dial.
    #[error("node {0} is not known to this node")]
    UnknownNode(NodeId),
    /// No connection within [`MeshConfig::connect_timeout`](super::MeshConfig::connect_timeout).
    #[error("timed out connecting")]
    Timeout,
    /// The QUIC connection could not be made (unreachable, TLS refused).
    #[error("cannot connect: {0}")]
    Connect(Arc<ConnectError>),
    /// The mesh lane could not be opened or accepted.
    #[error("mesh lane: {0}")]
    Lane(Arc<LaneError>),
    /// The hello could not be sent.
    #[error("sending the hello: {0}")]
    Send(SendError),
    /// The peer's first frame could not be read.
    #[error("reading the peer's hello: {0}")]
    Recv(Arc<RecvError>),
    /// The peer's lane ended before it sent a hello.
    #[error("the peer closed its lane before its hello")]
    NoHello,
    /// The peer's first frame was not a hello acknowledgement.
    #[error("the peer did not answer with a hello")]
    NotAHello,
    /// The peer's hello names a node its certificate does not carry.
    #[error("the peer claims name {0:?}, which its certificate does not carry")]
    NameNotCertified(String),
    /// The address dialed is this node's own.
    #[error("dialed this node itself")]
    SelfDial,
    /// The peer kept another connection (its own dial) and that one did not come up in
    /// time, or the node at the address has another id.
    #[error("node {0} did not come up (it kept another connection, or has another id)")]
    NotUp(NodeId),
}

impl From<ConnectError> for DialError {
    fn from(e: ConnectError) -> DialError {
        DialError::Connect(Arc::new(e))
    }
}

impl From<LaneError> for DialError {
    fn from(e: LaneError) -> DialError {
        DialError::Lane(Arc::new(e))
    }
}

impl From<SendError> for DialError {
    fn from(e: SendError) -> DialError {
        DialError::Send(e)
    }
}

impl From<RecvError> for DialError {
    fn from(e: RecvError) -> DialError {
        DialError::Recv(Arc::new(e))
    }
}

/// Why a [`Mesh::send`](super::Mesh::send) did not deliver; every variant gives the message back.
#[non_exhaustive]
pub enum MeshSendError<M> {
    /// No such local process (remote dead letters are counted on the remote node).
    NoProc(M),
    /// The local process takes another message type.
    WrongType(M),
    /// The message type is not registered with [`Mesh::register`](super::Mesh::register).
    Unregistered(M),
    /// The message could not be serialized.
    Encode(M, String),
    /// No connection to the node could be opened, or it was lost while sending.
    Unreachable(M, NodeId, String),
    /// Only from [`Mesh::try_send_named`](super::Mesh::try_send_named): no room on the lane to the node now, or its
    /// connection is still being opened (opening has started); `send_named` waits instead.
    Full(M),
}

impl<M> MeshSendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            MeshSendError::NoProc(m)
            | MeshSendError::WrongType(m)
            | MeshSendError::Unregistered(m)
            | MeshSendError::Encode(m, _)
            | MeshSendError::Unreachable(m, _, _)
            | MeshSendError::Full(m) => m,
        }
    }
}

impl<M> fmt::Debug for MeshSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<M> fmt::Display for MeshSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshSendError::NoProc(_) => f.write_str("no such process"),
            MeshSendError::WrongType(_) => f.write_str("the process takes another message type"),
            MeshSendError::Unregistered(_) => {
                f.write_str("the message type is not registered with the mesh")
            }
            MeshSendError::Encode(_, e) => write!(f, "cannot serialize the message: {e}"),
            MeshSendError::Unreachable(_, node, e) => write!(f, "node {node} unreachable: {e}"),
            MeshSendError::Full(_) => f.write_str("no room on the way to the node now"),
        }
    }
}

impl<M> std::error::Error for MeshSendError<M> {}

/// Why a [`Mesh::call`](super::Mesh::call) returned no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshCallError {
    /// No answer within the timeout.
    #[error("call timed out")]
    Timeout,
    /// No connection to the callee's node could be opened.
    #[error("node {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The connection to the callee's node was lost while waiting.
    #[error("connection to node {0} lost")]
    NoConnection(NodeId),
    /// The callee's node could not deliver the request.
    #[error(transparent)]
    Remote(#[from] RemoteFailure),
    /// No such local process.
    #[error("no such process")]
    NoProc,
    /// The local process takes another message type.
    #[error("the process takes another message type")]
    WrongType,
    /// The request or answer type is not registered / cannot be (de)serialized.
    #[error("codec: {0}")]
    Codec(String),
    /// This mesh is closed.
    #[error("mesh closed")]
    Closed,
}

/// Why [`RemoteReply::send`](super::RemoteReply::send) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The value could not be serialized.
    #[error("cannot serialize the answer: {0}")]
    Encode(String),
    /// The caller's node is unreachable.
    #[error("caller's node {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The caller stopped waiting (timed out) — local callers only.
    #[error("the caller stopped waiting")]
    Gone,
}
