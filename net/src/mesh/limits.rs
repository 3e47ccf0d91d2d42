//! What one peer may cost this node: explicit QUIC transport limits for mesh
//! connections, the refusal of streams the mesh never asked for, a bound on
//! connections that have not said hello yet, and bounds on the peers hellos name and on
//! the members gossip introduces.
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
//!   instead of this node growing a waiting process per signal;
//! * connections waiting for their hello (accepted, TLS done, no hello read yet: each may
//!   park up to [`CONNECTION_WINDOW`] for up to the connect timeout): at most
//!   [`MAX_PENDING_HELLOS_PER_PEER`] per certificate (by serial) and
//!   [`MAX_PENDING_HELLOS`] from all peers together ([`PendingHellos`]). One more is closed
//!   on arrival with [`CLOSE_BUSY`](super::wire::CLOSE_BUSY) and counted
//!   ([`MeshStats::refused_pending_hellos`](super::MeshStats::refused_pending_hellos)); its
//!   dialer sees [`DialError::Busy`](super::DialError::Busy). So one certificate holder
//!   makes this node hold at most 8 MiB of unread data before hellos, all peers together
//!   128 MiB. (Without these bounds nothing limited them: the mesh takes every accepted
//!   connection off the endpoint's accept queue at once, and the queue's 1,024 alone
//!   would be 2 GiB.) A peer without a certificate counts against the global bound only;
//!   in insecure development mode (`TlsConfig::insecure_dev`) anyone can make
//!   certificates, so there only the global bound means anything. A revoked certificate
//!   is closed on arrival, before it takes a place.
//! * peers named in hellos (`Hello::peers`: where to dial other nodes), kept in the
//!   connection table (`conns`): taken from members only (a client's list is ignored
//!   and counted); at most [`MAX_HELLO_PEERS`] entries of one hello are looked at, and an
//!   entry is taken only if its node id is [`NodeId::of_name`](cairn_scheduler::NodeId::of_name)
//!   of its name and the name has 1 to [`MAX_PEER_NAME_LEN`] bytes; such hearsay is added
//!   only while the table holds fewer than [`MAX_KNOWN_PEERS`] nodes. Everything else is
//!   dropped and counted ([`MeshStats::refused_hello_peers`](super::MeshStats::refused_hello_peers)).
//!   Hearsay never costs more than [`MAX_KNOWN_PEERS`] entries of at most
//!   [`MAX_PEER_NAME_LEN`] bytes of name (under 10 MiB with the table's own overhead),
//!   however many hellos a member sends; a hello is looked at in one pass over at most
//!   [`MAX_HELLO_PEERS`] entries, and a full table is scanned for expired hearsay only
//!   once something in it can have expired.
//!   Hearsay stops being hearsay when the node becomes a member or a SWIM target
//!   (listed: kept for dialing) or speaks to this node itself (a hello, a screened SWIM
//!   packet: confirmed); what is still hearsay after [`UNCONFIRMED_PEER_TTL`] is dropped
//!   when room is needed (an honest node is a member within seconds, so only the stale and
//!   the made-up stay hearsay that long; pruning only under pressure keeps a small
//!   cluster's or a client's entries however old). A node's own hello names only nodes it
//!   has confirmed (met itself: not members it only heard of by gossip), at most
//!   [`MAX_HELLO_PEERS`] of them (so it always encodes, in about 300 KiB at most, far
//!   below the 16 MiB frame limit), and never hearsay: made-up peers are not passed on.
//! * members this node has not met (`screen`, `membership`): gossip (or a sync) from one
//!   member may name members foca does not know yet, and foca takes every one of them
//!   (alive, then probed, suspected and held down for an hour), and the connection table
//!   lists each as an address to dial. Such an introduction by a third party is taken only
//!   while foca holds fewer than [`MAX_UNMET_MEMBERS`] other nodes this node has not met
//!   (met: a hello its certificate proved, or a screened SWIM packet from the node itself),
//!   and only if the member's node id is its name's and the name has 1 to
//!   [`MAX_PEER_NAME_LEN`] bytes (as for hello peers). The rest is refused and counted
//!   ([`MeshStats::refused_unmet_members`](super::MeshStats::refused_unmet_members)). A
//!   node introducing itself (its own packet, on a connection its certificate proved) is
//!   never refused: an honest member gossip could not introduce is taken when it probes
//!   or gossips to this node itself, which SWIM has every member do within a probe round.
//!   A listed entry of the connection table (a member as foca reports it, not met) is
//!   removed when foca forgets the member (`Down`, then removed after its hour), so the
//!   listed entries follow foca's table and a liar's made-up members cost at most
//!   [`MAX_UNMET_MEMBERS`] records in each, of at most [`MAX_PEER_NAME_LEN`] bytes of name,
//!   however long it keeps gossiping. Met entries are not bounded here: only a certificate
//!   holder makes one, for its own id. A met entry's address changes only on the node's
//!   own word (its hello, its screened SWIM packet), never on gossip: a liar cannot
//!   redirect where this node dials an honest member.
//!
//! The per-certificate bound is 4, not 2: a node may have three dials of its own to one
//! peer waiting for their hellos at once (a seed join, a data dial, a SWIM control dial),
//! and its own dials should not be refused. The global bound refuses well-behaved peers
//! too while it is full (a holder of many certificates can fill it for a connect timeout
//! at a time); their dials fail with `Busy` and are retried (a seed join backs off, a
//! sender's next message dials again), and established connections are untouched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::Ctx;
use parking_lot::Mutex;
use quinn::VarInt;

use super::stats::Count;
use super::Inner;
use crate::endpoint::Connection;
use crate::tls::Serial;

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
/// Accepted connections one certificate may have waiting for their hello at once (see the
/// module doc).
pub(crate) const MAX_PENDING_HELLOS_PER_PEER: usize = 4;
/// Accepted connections all peers together may have waiting for their hello at once.
pub(crate) const MAX_PENDING_HELLOS: usize = 64;

/// Entries of one hello's peer list looked at; the rest are refused (see the module
/// doc). Also the most a node names in its own hello.
pub(crate) const MAX_HELLO_PEERS: usize = 1024;
/// Nodes the connection table holds before it takes no more hearsay from hellos (like
/// the membership sync bound, `screen::MAX_SYNC_MEMBERS`).
pub(crate) const MAX_KNOWN_PEERS: usize = 16_384;
/// Longest node name taken from a hello's peer list: a DNS name's 253 bytes (a node is
/// dialed by its name, as the TLS server name).
pub(crate) const MAX_PEER_NAME_LEN: usize = 253;
/// Other nodes foca may hold (any state) that this node has not met before gossip from
/// a third party may introduce no more (see the module doc; like the membership sync
/// bound, `screen::MAX_SYNC_MEMBERS`, so a node joining a cluster of that size takes every
/// member from its first sync).
pub(crate) const MAX_UNMET_MEMBERS: usize = 16_384;
/// How long a peer named in another node's hello may stay unconfirmed before it may be
/// dropped to make room (see the module doc).
pub(crate) const UNCONFIRMED_PEER_TTL: Duration = Duration::from_secs(600);

/// Incoming connections waiting for their hello, counted per certificate serial and in
/// all (a leaf lock).
#[derive(Default)]
pub(super) struct PendingHellos {
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    total: usize,
    /// Only serials with a connection waiting (so at most [`MAX_PENDING_HELLOS`] entries).
    by_cert: HashMap<Serial, usize>,
}

/// Why [`PendingHellos::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TooManyPending {
    /// Its certificate has [`MAX_PENDING_HELLOS_PER_PEER`] waiting already.
    Peer,
    /// All peers together have [`MAX_PENDING_HELLOS`] waiting already.
    All,
}

impl std::fmt::Display for TooManyPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooManyPending::Peer => write!(
                f,
                "its certificate has {MAX_PENDING_HELLOS_PER_PEER} connections waiting for their hello"
            ),
            TooManyPending::All => write!(
                f,
                "{MAX_PENDING_HELLOS} connections are waiting for their hello"
            ),
        }
    }
}

/// A connection's place among those waiting for their hello; given back when dropped.
pub(super) struct PendingHello<'a> {
    table: &'a PendingHellos,
    cert: Option<Serial>,
}

impl PendingHellos {
    /// Takes a place for a connection from the holder of `cert` (`None`: no certificate),
    /// if both bounds allow one more.
    pub(super) fn admit(&self, cert: Option<Serial>) -> Result<PendingHello<'_>, TooManyPending> {
        let mut state = self.state.lock();
        if state.total >= MAX_PENDING_HELLOS {
            return Err(TooManyPending::All);
        }
        if let Some(serial) = &cert {
            let waiting = state.by_cert.entry(serial.clone()).or_default();
            if *waiting >= MAX_PENDING_HELLOS_PER_PEER {
                return Err(TooManyPending::Peer);
            }
            *waiting += 1;
        }
        state.total += 1;
        Ok(PendingHello { table: self, cert })
    }

    /// Connections waiting for their hello now.
    pub(super) fn len(&self) -> usize {
        self.state.lock().total
    }
}

impl Drop for PendingHello<'_> {
    fn drop(&mut self) {
        let mut state = self.table.state.lock();
        state.total -= 1;
        if let Some(serial) = &self.cert {
            if let Some(waiting) = state.by_cert.get_mut(serial) {
                *waiting -= 1;
                if *waiting == 0 {
                    state.by_cert.remove(serial);
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(n: u8) -> Option<Serial> {
        Some(Serial::from_bytes(&[n]))
    }

    #[test]
    fn a_certificate_waits_with_at_most_its_share_and_gets_it_back() {
        let table = PendingHellos::default();
        let held: Vec<_> = (0..MAX_PENDING_HELLOS_PER_PEER)
            .map(|_| table.admit(serial(1)).expect("within the bound"))
            .collect();
        assert_eq!(table.admit(serial(1)).err(), Some(TooManyPending::Peer));
        // Another certificate is not held up by this one.
        let other = table.admit(serial(2)).expect("another certificate");
        assert_eq!(table.len(), MAX_PENDING_HELLOS_PER_PEER + 1);
        drop(held);
        drop(other);
        assert_eq!(table.len(), 0);
        assert!(table.state.lock().by_cert.is_empty());
        table.admit(serial(1)).expect("places given back");
    }

    #[test]
    fn all_peers_together_wait_with_at_most_the_global_bound() {
        let table = PendingHellos::default();
        let mut held = Vec::new();
        for k in 0..MAX_PENDING_HELLOS {
            // Without a certificate, or one place per certificate: only the global bound.
            let cert = if k % 2 == 0 { None } else { serial(k as u8) };
            held.push(table.admit(cert).expect("within the bound"));
        }
        assert_eq!(table.admit(None).err(), Some(TooManyPending::All));
        assert_eq!(table.admit(serial(200)).err(), Some(TooManyPending::All));
        // A refusal leaves nothing behind.
        assert!(!table
            .state
            .lock()
            .by_cert
            .contains_key(&Serial::from_bytes(&[200])));
        held.pop();
        table.admit(serial(200)).expect("a place given back");
    }
}
