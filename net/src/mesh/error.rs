//! The mesh's errors: starting a mesh, opening a connection. (Sends and calls fail with
//! the scheduler's `SendError` and `CallError`, as local ones do.)

use std::sync::Arc;

use cairn_scheduler::NodeId;

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
    /// A mesh was already started on this runtime (a node has one mesh: the scheduler
    /// hands every remote pid to it).
    #[error("a mesh is already started on this runtime")]
    AlreadyStarted,
    /// No address peers can reach this node at (see `advertise`).
    #[error(transparent)]
    Advertise(#[from] super::advertise::AdvertiseError),
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
    /// The peer's certificate is on the revocation list.
    #[error("the certificate of {0:?} is revoked")]
    Revoked(String),
    /// The peer's lane ended before it sent a hello.
    #[error("the peer closed its lane before its hello")]
    NoHello,
    /// The peer's first frame was not a hello acknowledgement.
    #[error("the peer did not answer with a hello")]
    NotAHello,
    /// The peer's hello names a node its certificate does not carry (or a node name on a
    /// client certificate).
    #[error("the peer claims name {0:?}, which its certificate does not allow")]
    NameNotCertified(String),
    /// The peer's hello carries a node id that is not its name's (`NodeId::of_name`).
    #[error("the peer named {name:?} claims node id {node}, which is not its name's")]
    WrongNodeId {
        /// The name it claims.
        name: String,
        /// The id it claims.
        node: NodeId,
    },
    /// The node at the address is not the node dialed (introduced under another id).
    #[error("expected node {expected} there, found node {found}")]
    NotTheNode {
        /// The node meant.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// The address dialed is this node's own.
    #[error("dialed this node itself")]
    SelfDial,
    /// The peer kept another connection (its own dial) and that one did not come up in
    /// time, or the node at the address has another id.
    #[error("node {0} did not come up (it kept another connection, or has another id)")]
    NotUp(NodeId),
    /// A seed's name could not be resolved (or resolved to no address).
    #[error("resolving seed {seed}: {reason}")]
    Resolve {
        /// The seed.
        seed: String,
        /// Why.
        reason: String,
    },
    /// The node had as many connections waiting for their hello as it allows (from this
    /// node's certificate, or from all peers) and closed this one at once; a later dial
    /// may pass.
    #[error("the node is busy: too many connections waiting for their hello")]
    Busy,
    /// This mesh is a dial-only client and has no gateway (no seed answered yet).
    #[error("no gateway: none of the seeds answered")]
    NoGateway,
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
