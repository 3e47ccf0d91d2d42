//! What one peer may cost this node: explicit QUIC transport limits for mesh
//! connections, and the refusal of streams the mesh never asked for.
//!
//! quinn's defaults suit a general server, not a mesh that uses exactly one
//! unidirectional stream per direction (its lane) and datagrams: 100 concurrent streams
//! of each kind, an unbounded connection receive window and 1.25 MB of datagram buffer
//! would let one member make this node buffer well over 100 MB per connection, in streams
//! nobody reads. Here:
//!
//! * bidirectional streams: none; unidirectional: [`MAX_UNI_STREAMS`] (the lane, plus
//!   room for a control hello or a replaced lane);
//! * receive windows: [`STREAM_WINDOW`] per stream and [`CONNECTION_WINDOW`] per
//!   connection, so unread data a peer can park here is bounded per connection;
//! * datagram buffers: [`DATAGRAM_BUFFER`] each way (SWIM packets are ≤ 1100 bytes and
//!   handled at once; SWIM tolerates loss);
//! * streams opened after the lane are stopped at once and counted
//!   ([`MeshStats::refused_streams`](super::MeshStats::refused_streams)), which also
//!   gives the peer its stream credit back only for it to be refused again;
//! * control connections: at most [`MAX_CONTROLS_PER_PEER`] per peer (one dialed by
//!   each side); more are closed on arrival and counted;
//! * signals (replies, exits, downs) waiting for room on a peer's full lane: at most
//!   [`MAX_SIGNAL_WAITERS`] per connection. A peer that leaves that many unsent does not
//!   read its lane; the connection is closed ([`CLOSE_OVERLOADED`](super::wire::CLOSE_OVERLOADED))
//!   and counted, so its links and monitors fire `NoConnection` as for a lost connection,
//!   instead of this node growing a waiting process per signal.

use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::Ctx;
use quinn::VarInt;

use super::stats::Count;
use super::Inner;
use crate::endpoint::Connection;

/// Concurrent unidirectional streams a peer may open on one mesh connection.
pub(crate) const MAX_UNI_STREAMS: u32 = 4;
/// Receive window of one stream: about one second of a busy lane on a LAN, and as much
/// as the sender buffers (`SEND_BUFFER_HIGH_WATER`).
pub(crate) const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of a whole connection.
pub(crate) const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;
/// Send window of a connection (unacknowledged data in flight).
pub(crate) const SEND_WINDOW: u64 = 2 * STREAM_WINDOW as u64;
/// Datagram buffer each way: about 60 SWIM packets.
pub(crate) const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Control connections kept per peer (both sides may dial at once).
pub(crate) const MAX_CONTROLS_PER_PEER: usize = 2;
/// Signals one connection may have waiting for room on its lane (see the module doc).
pub(crate) const MAX_SIGNAL_WAITERS: usize = 1024;
/// Stream error code for a stream the mesh did not ask for.
pub(crate) const STOP_UNEXPECTED_STREAM: u32 = 8;

/// The transport configuration of every mesh connection, both directions.
pub(crate) fn transport(idle: quinn::IdleTimeout, keep_alive: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(keep_alive))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    transport
}

impl Inner {
    /// Stops every further stream the peer opens on `conn` (its lane is already
    /// accepted), until the connection closes.
    pub(super) fn refuse_extra_streams(self: &Arc<Self>, conn: &Connection) {
        let inner = Arc::clone(self);
        let quic = conn.quinn().clone();
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            while let Ok(mut stream) = quic.accept_uni().await {
                inner.counters.bump(Count::RefusedStream);
                tracing::warn!(remote = %quic.remote_address(), "peer opened a stream the mesh did not ask for; stopped");
                let _ = stream.stop(VarInt::from_u32(STOP_UNEXPECTED_STREAM));
            }
        });
    }
}
