//! Opening connections: dialing a node or a seed, the hello exchange on both sides, and
//! the life of a kept connection (its reader, its SWIM datagrams, its close watcher).
//!
//! # The hello exchange
//!
//! The dialer opens lane [`MESH_LANE`] and sends [`Wire::Hello`] (its node id, incarnation,
//! listen address, certificate name and the peers it has confirmed; bounded, see
//! `limits`). The acceptor checks that the
//! hello is who the peer's certificate says ([`proves_identity`]: the name is in the
//! certificate, a client certificate claims a client name, and the node id is
//! [`NodeId::of_name`] of the name), applies the connection rule ([`on_hello`]) and
//! either answers [`Wire::HelloAck`] on its own lane and installs the connection, or
//! closes it with [`CLOSE_DUPLICATE`] (its reason: the acceptor's node id). The dialer
//! checks the ack the same way, and that it reached the node it meant to (a node is dialed
//! by the id and name it was introduced under), and installs the connection once the ack
//! arrives; a refused dialer waits (up to the connect
//! timeout) for the connection the acceptor kept. A hello on [`CONTROL_LANE`] opens a
//! SWIM-only connection instead (see `controls`).
//!
//! Before it waits for a hello, the acceptor closes a revoked certificate's connection and
//! takes a place among the connections waiting for their hello (`limits`: per certificate
//! and in all); with none left it closes the connection at once with [`CLOSE_BUSY`], and
//! the dialer fails with [`DialError::Busy`].
//!
//! Senders wait for a dial for at most [`MeshConfig::connect_timeout`]; one dial per node
//! runs at a time and its failure reaches every sender that waited for it ([`ConnTable`]).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, NodeId};

use super::config::Seed;
use super::conns::{on_hello, Conn, ConnTable, HelloDecision, Installed, Open, Outbox, Peer};
use super::error::DialError;
use super::stats::Count;
use super::wire::{
    Hello, PeerInfo, Wire, CLOSE_BUSY, CLOSE_DUPLICATE, CLOSE_LEAVING, CLOSE_PROTOCOL,
    CLOSE_REPLACED, CONTROL_LANE, MESH_LANE,
};
use super::Inner;
#[cfg(doc)]
use super::MeshConfig;
use crate::endpoint::{Connection, FramedReceiver, CLOSE_NORMAL};

/// Why an acceptor did not keep an incoming connection.
enum Refused {
    /// This mesh is closed.
    Closed,
    /// The connection rule keeps another one.
    Duplicate,
}

/// How a dial ended for the dialer.
enum DialOutcome {
    Up(Arc<Conn>),
    /// The peer keeps another connection (its own dial): wait for it.
    Duplicate(NodeId),
}

/// The application close code of a closed connection, if the peer (or we) closed it so.
pub(super) fn close_code(reason: &quinn::ConnectionError) -> Option<u32> {
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            u32::try_from(close.error_code.into_inner()).ok()
        }
        _ => None,
    }
}

impl Inner {
    /// This node's hello to the peer at `remote`, naming the peers `conns` has confirmed
    /// that `remote` can use (`advertise::shareable`: no loopback addresses to another
    /// host), at most `limits::MAX_HELLO_PEERS` ([`ConnTable::vouched_for`]). A dial-only
    /// client names none: nodes do not take a client's list.
    fn hello(&self, conns: &ConnTable, remote: SocketAddr) -> Hello {
        #[cfg_attr(not(feature = "testing"), allow(unused_mut))]
        let mut peers = if self.config.dial_only {
            Vec::new()
        } else {
            conns.vouched_for(remote)
        };
        #[cfg(feature = "testing")]
        peers.extend_from_slice(conns.forged_hello_peers());
        Hello {
            node: self.node,
            incarnation: self.incarnation,
            listen: self.advertise,
            name: self.name.clone(),
            peers,
        }
    }

    /// Learns from the hello of `conn`'s peer (see [`ConnTable::learn`]), counting and
    /// logging the peers it names that were refused.
    fn learn(&self, conns: &mut ConnTable, conn: &Conn, hello: &Hello, remote: SocketAddr) {
        let role = conn.cert().role;
        let refused = conns.learn(hello, remote, role, Instant::now());
        if refused > 0 {
            self.counters.add(Count::RefusedHelloPeer, refused as u64);
            tracing::warn!(peer = %hello.node, %remote, %role, named = hello.peers.len(), refused, "refused peers named in a hello (a client's, forged ids, or over the bounds)");
        }
    }

    /// Dials a seed until it answers once (backoff 100 ms doubling to 5 s), or the mesh
    /// closes: seeds may start after this node. A named seed is resolved again on every
    /// try. Then announces this node to it (SWIM join), until the seed is a live member
    /// here.
    pub(super) async fn join_seed(self: Arc<Self>, seed: Seed) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dial_seed(&seed).await {
                Ok((node, addr)) => {
                    let info = PeerInfo {
                        node,
                        addr,
                        name: seed.name.clone(),
                    };
                    self.announce_until_joined(node, &info).await;
                    return;
                }
                Err(DialError::SelfDial) => {
                    tracing::debug!(seed = %seed.addr, "a seed is this node itself");
                    return;
                }
                Err(error) => {
                    if self.is_closed() {
                        return;
                    }
                    tracing::warn!(seed = %seed.addr, %error, retry_in = ?backoff, "could not join through a seed");
                }
            }
            self.handle.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The established connection to `node`, if any (never dials).
    pub(super) fn up_conn(&self, node: NodeId) -> Option<Arc<Conn>> {
        self.conns.lock().up(node)
    }

    /// The connection to `node`, dialing it if needed.
    pub(super) async fn conn(self: &Arc<Self>, node: NodeId) -> Result<Arc<Conn>, DialError> {
        // The common case, an open connection, needs no connect timeout (arming one cost
        // about 400 instructions per message in callgrind).
        if let Some(conn) = self.up_conn(node) {
            return Ok(conn);
        }
        let mut mine: Option<u64> = None;
        let wait = poll_fn(|cx| {
            let open = self
                .conns
                .lock()
                .poll_open(node, &mut mine, cx, || self.next_id());
            match open {
                Open::Ready(result) => Poll::Ready(result),
                Open::Wait => Poll::Pending,
                Open::Dial(info, attempt) => {
                    self.spawn_dial(node, info, attempt);
                    Poll::Pending
                }
            }
        });
        match self.handle.timeout(self.config.connect_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(DialError::Timeout),
        }
    }

    /// Runs dial `attempt` to `node` in a process of its own; its failure is recorded in
    /// the table and wakes the senders waiting for it.
    fn spawn_dial(self: &Arc<Self>, node: NodeId, info: PeerInfo, attempt: u64) {
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let result = inner.dial(info.addr, &info.name, Some(node)).await;
            let still_dialing = |inner: &Inner| inner.conns.lock().is_dialing(node, attempt);
            if result.is_ok() && still_dialing(&inner) {
                // The peer kept its own connection (it is dialing us, or still holds
                // one we lost): give it the connect timeout to show up.
                let deadline = Instant::now() + inner.config.connect_timeout;
                while still_dialing(&inner) && Instant::now() < deadline {
                    inner.handle.sleep(Duration::from_millis(10)).await;
                }
            }
            if !still_dialing(&inner) {
                return;
            }
            let error = match result {
                Ok(_) => DialError::NotUp(node),
                Err(e) => e,
            };
            tracing::warn!(%node, addr = %info.addr, %error, "could not connect to a node");
            let waiters = inner.conns.lock().dial_failed(node, attempt, error);
            for w in waiters {
                w.wake();
            }
        });
    }

    /// Starts opening the connection to `node` in the background (if not under way).
    pub(super) fn open_soon(self: &Arc<Self>, node: NodeId) {
        if self.conns.lock().has_slot(node) {
            return;
        }
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            if let Err(error) = inner.conn(node).await {
                tracing::debug!(peer = %node, %error, "could not open a connection");
            }
        });
    }

    /// Dials `addr`, exchanges hellos and installs the connection. `expect`: the node we
    /// meant to reach (`None` for seeds). `Ok(node)` also when the peer kept its own
    /// connection.
    pub(super) async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        name: &str,
        expect: Option<NodeId>,
    ) -> Result<NodeId, DialError> {
        let timeout = self.config.connect_timeout;
        match self
            .handle
            .timeout(timeout, self.dial_inner(addr, name, expect))
            .await
        {
            Err(_) => Err(DialError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(DialOutcome::Duplicate(node))) => {
                tracing::debug!(%node, "peer kept its own connection");
                Ok(node)
            }
            Ok(Ok(DialOutcome::Up(conn))) => Ok(conn.node()),
        }
    }

    async fn dial_inner(
        self: &Arc<Self>,
        addr: SocketAddr,
        name: &str,
        expect: Option<NodeId>,
    ) -> Result<DialOutcome, DialError> {
        let quic = self.endpoint.connect(addr, name).await?;
        // Any step may fail because the acceptor closed the connection (busy: at once,
        // before the hello; duplicate: after it): its close code says why.
        let first = async {
            let outbox = Outbox::new(quic.open_lane(MESH_LANE).await?);
            let hello = self.hello(&self.conns.lock(), addr);
            outbox.send_first(&Wire::Hello(hello))?;
            let mut rx = quic.accept_lane().await?;
            let frame = rx.recv::<Wire>().await?;
            Ok::<_, DialError>((outbox, rx, frame))
        };
        let (outbox, rx, frame) = match first.await {
            Ok(v) => v,
            Err(e) => {
                if let Some(quinn::ConnectionError::ApplicationClosed(close)) =
                    quic.quinn().close_reason()
                {
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_BUSY) {
                        return Err(DialError::Busy);
                    }
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_DUPLICATE) {
                        let node = std::str::from_utf8(&close.reason)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .map(NodeId)
                            .unwrap_or_default();
                        return Ok(DialOutcome::Duplicate(node));
                    }
                }
                return Err(e);
            }
        };
        let peer = match frame {
            Some(Wire::HelloAck(peer)) => peer,
            other => {
                quic.close(CLOSE_PROTOCOL, b"expected a hello ack");
                return Err(match other {
                    None => DialError::NoHello,
                    Some(_) => DialError::NotAHello,
                });
            }
        };
        if let Err(error) = proves_identity(&quic, &peer) {
            self.counters.bump(Count::ProtocolError);
            quic.close(CLOSE_PROTOCOL, b"hello does not match the certificate");
            return Err(error);
        }
        if self.refuse_revoked(&quic) {
            return Err(DialError::Revoked(peer.name));
        }
        if let Some(expected) = expect.filter(|&e| e != peer.node) {
            // Introduced under another id (a stale or forged peer list): not the node meant.
            tracing::warn!(%expected, found = %peer.node, %addr, "dialed node has another id; closing");
            quic.close(CLOSE_PROTOCOL, b"not the node dialed");
            return Err(DialError::NotTheNode {
                expected,
                found: peer.node,
            });
        }
        if peer.node == self.node {
            quic.close(CLOSE_NORMAL, b"dialed myself");
            return Err(DialError::SelfDial);
        }
        let conn = Arc::new(Conn::new(self.next_id(), &peer, true, quic, outbox));
        // The acceptor decided this connection is the one kept: install it.
        let installed = {
            let mut conns = self.conns.lock();
            self.learn(&mut conns, &conn, &peer, addr);
            if conns.is_closed() {
                drop(conns);
                conn.quic().close(CLOSE_NORMAL, b"mesh closed");
                return Err(DialError::Closed);
            }
            conns.install(Arc::clone(&conn))
        };
        self.installed(&conn, installed);
        self.run_conn(&conn, rx);
        Ok(DialOutcome::Up(conn))
    }

    /// Takes an incoming connection: a place among those waiting for their hello
    /// (`limits`), hello, keep-or-refuse, hello ack.
    pub(super) async fn serve_incoming(self: Arc<Self>, quic: Connection) {
        let remote = quic.remote_address();
        // A revoked certificate takes no place among those waiting for a hello.
        if self.refuse_revoked(&quic) {
            return;
        }
        let cert = crate::tls::peer_identity(quic.quinn()).map(|c| c.serial);
        let waiting = match self.pending_hellos.admit(cert.clone()) {
            Ok(waiting) => waiting,
            Err(full) => {
                self.counters.bump(Count::RefusedPendingHello);
                let serial = cert.map(|s| s.to_string()).unwrap_or_default();
                tracing::warn!(%remote, %serial, reason = %full, "refused a connection before its hello: too many waiting");
                quic.close(CLOSE_BUSY, b"too many connections waiting for their hello");
                return;
            }
        };
        let first = async {
            let mut rx = quic.accept_lane().await?;
            let frame = rx.recv::<Wire>().await?;
            Ok::<_, DialError>((rx, frame))
        };
        let (rx, hello) = match self
            .handle
            .timeout(self.config.connect_timeout, first)
            .await
        {
            Ok(Ok((rx, Some(Wire::Hello(hello))))) => (rx, hello),
            Ok(Ok(_)) => {
                tracing::warn!(%remote, "mesh peer did not start with a hello; closing");
                self.counters.bump(Count::ProtocolError);
                quic.close(CLOSE_PROTOCOL, b"expected a hello");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%remote, %error, "mesh peer failed before its hello");
                return;
            }
            Err(_) => {
                tracing::warn!(%remote, "mesh peer sent no hello in time; closing");
                quic.close(CLOSE_PROTOCOL, b"no hello");
                return;
            }
        };
        // Said hello: from here the connection's cost is bounded by the connection rules.
        drop(waiting);
        if hello.node == self.node {
            quic.close(CLOSE_NORMAL, b"same node id");
            tracing::warn!(%remote, node = %hello.node, "refused a peer with this node's own id");
            return;
        }
        if proves_identity(&quic, &hello).is_err() {
            self.counters.bump(Count::ProtocolError);
            quic.close(CLOSE_PROTOCOL, b"hello does not match the certificate");
            return;
        }
        if self.refuse_revoked(&quic) {
            return;
        }
        if rx.lane() == CONTROL_LANE {
            // A SWIM-only connection (see `controls`): no lanes, no connection rule.
            let role = super::authz::PeerCert::of(&quic, &hello.name).role;
            if let Err(denied) = super::authz::check_membership(role) {
                self.unauthorized(hello.node, &denied);
                quic.close(CLOSE_PROTOCOL, b"clients take no part in membership");
                return;
            }
            self.accept_control(quic, hello.node);
            return;
        }
        let outbox = match quic.open_lane(MESH_LANE).await {
            Ok(tx) => Outbox::new(tx),
            Err(error) => {
                tracing::warn!(%remote, %error, "could not open the mesh lane");
                return;
            }
        };
        let conn = Arc::new(Conn::new(self.next_id(), &hello, false, quic, outbox));
        // Decide and install under one lock, so no other connection to the node slips in.
        let decided = {
            let mut conns = self.conns.lock();
            self.learn(&mut conns, &conn, &hello, remote);
            if conns.is_closed() {
                Err(Refused::Closed)
            } else if on_hello(&conns, &hello) == HelloDecision::Refuse {
                Err(Refused::Duplicate)
            } else {
                let ack = Wire::HelloAck(self.hello(&conns, remote));
                match conn.send_first(&ack) {
                    Ok(()) => Ok(conns.install(Arc::clone(&conn))),
                    Err(error) => {
                        tracing::warn!(%remote, %error, "could not send the hello ack");
                        return;
                    }
                }
            }
        };
        let installed = match decided {
            Ok(installed) => installed,
            Err(Refused::Closed) => {
                conn.quic().close(CLOSE_NORMAL, b"mesh closed");
                return;
            }
            Err(Refused::Duplicate) => {
                self.counters.bump(Count::DuplicateRefused);
                tracing::info!(local = %self.node, peer = %hello.node, "refusing a duplicate connection (both dialed; the lower node's dial is kept)");
                conn.quic()
                    .close(CLOSE_DUPLICATE, self.node.0.to_string().as_bytes());
                return;
            }
        };
        self.installed(&conn, installed);
        self.run_conn(&conn, rx);
    }

    /// After `conn` was installed: wakes the senders that waited for it, closes and
    /// reports the connection it replaced.
    fn installed(&self, conn: &Conn, installed: Installed<Conn>) {
        for w in installed.woken {
            w.wake();
        }
        if let Some(old) = installed.replaced {
            old.quic()
                .close(CLOSE_REPLACED, b"replaced by a newer connection");
            if old.incarnation() != conn.incarnation() {
                self.connection_lost(conn.node(), "replaced by a new incarnation");
            }
        }
        // Checked again once installed: a reload that revoked the peer while this hello
        // was in flight enumerated the connections before this one was among them.
        self.refuse_revoked(conn.quic());
        // `NodeEvent::Up` comes from membership (SWIM), not from connections.
        if conn.addr().port() == 0 {
            // A dial-only client: it has no address to give (`advertise::nowhere`).
            let remote = conn.quic().remote_address();
            tracing::info!(local = %self.node, peer = %conn.node(), %remote, "dial-only client connected");
        } else {
            tracing::info!(local = %self.node, peer = %conn.node(), addr = %conn.addr(), "mesh connection up");
        }
    }

    /// The data connection to `node` is gone (lost, or the node was declared down):
    /// calls waiting for answers from it fail with `NoConnection`.
    pub(super) fn connection_lost(&self, node: NodeId, reason: &str) {
        self.replies.fail_node(node);
        tracing::info!(local = %self.node, peer = %node, %reason, "mesh connection lost");
    }

    /// Spawns the reader, the datagram reader and the close watcher of a kept connection.
    fn run_conn(self: &Arc<Self>, conn: &Arc<Conn>, rx: FramedReceiver) {
        // Its lane is accepted: any further stream is refused (`limits`).
        self.refuse_extra_streams(conn.quic());
        let inner = Arc::clone(self);
        let reader = Arc::clone(conn);
        self.handle
            .spawn(move |_ctx: Ctx<()>| async move { inner.read_conn(&reader, rx).await });
        // SWIM packets arrive as datagrams on any mesh connection (see `membership`).
        let inner = Arc::clone(self);
        let datagrams = Arc::clone(conn);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let member = super::authz::check_membership(datagrams.cert().role);
            while let Ok(packet) = datagrams.quic().quinn().read_datagram().await {
                match &member {
                    Ok(()) => inner.swim_packet(
                        datagrams.node(),
                        datagrams.cert().region.as_deref(),
                        &packet,
                    ),
                    Err(denied) => drop(inner.unauthorized(datagrams.node(), denied)),
                }
            }
        });
        let inner = Arc::clone(self);
        let conn = Arc::clone(conn);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let reason = conn.quic().closed().await;
            let code = close_code(&reason);
            if code == Some(CLOSE_LEAVING) {
                tracing::info!(peer = %conn.node(), "peer left the cluster");
                inner.peer_left(conn.node());
            }
            if !inner.conns.lock().remove_if_current(conn.node(), conn.id()) {
                return;
            }
            if code == Some(CLOSE_REPLACED) {
                // The peer replaced this connection with a newer one from the same
                // incarnation (a re-dial whose ack is on its way): not a node loss.
                tracing::debug!(peer = %conn.node(), "mesh connection replaced by the peer");
            } else {
                inner.connection_lost(conn.node(), &reason.to_string());
            }
        });
    }
}

/// Whether `hello` is who the peer's certificate says it is: the node id is
/// [`NodeId::of_name`] of the name (always, even without certificates), and the name is one
/// the certificate allows ([`CertIdentity::allows`](crate::tls::CertIdentity::allows): in it,
/// not the shared seed name, a client name for a client certificate). So a member can pose
/// neither as another node nor under another node's id, and cannot replace its link. Without
/// a certificate (insecure dev mode) only the id is checked.
fn proves_identity(conn: &Connection, hello: &Hello) -> Result<(), DialError> {
    let remote = conn.remote_address();
    if hello.node != NodeId::of_name(&hello.name) {
        tracing::warn!(%remote, name = %hello.name, node = %hello.node, "refused a peer whose hello id is not its name's");
        return Err(DialError::WrongNodeId {
            name: hello.name.clone(),
            node: hello.node,
        });
    }
    match crate::tls::peer_identity(conn.quinn()) {
        None => Ok(()),
        Some(cert) if cert.allows(&hello.name) => Ok(()),
        Some(cert) => {
            tracing::warn!(%remote, claimed = %hello.name, certified = ?cert.names, role = %cert.role, "refused a peer whose hello name its certificate does not allow");
            Err(DialError::NameNotCertified(hello.name.clone()))
        }
    }
}
