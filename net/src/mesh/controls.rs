//! SWIM's transport: packets as QUIC datagrams, on the data connection to a member when
//! there is one, else on a *control connection*.
//!
//! foca packets (≤ 1100 bytes) are QUIC datagrams, never plain UDP: only holders of a
//! cluster-CA certificate get a connection, so only they take part. Datagrams, not a lane,
//! because SWIM wants unreliable, unordered delivery: a probe must not wait behind user
//! frames (the mesh lane stalls while a receiver's mailbox is full — that would make a busy
//! node look dead) nor behind retransmissions (a late answer is useless to SWIM; it
//! re-probes).
//!
//! A control connection opens lane [`CONTROL_LANE`] with one hello and then carries
//! datagrams only. It is closed after `2 × failure_timeout` without a packet (nothing can
//! be lost: it carries no lanes), so probing never builds a full mesh of data connections;
//! packets wait in a small queue while one is being dialed.
//!
//! # What this module owns, and its invariants
//!
//! [`Controls`] (behind `Inner::controls`): at most one control connection *used for
//! sending* per node (`slots`), at most `limits::MAX_CONTROLS_PER_PEER` open per node
//! (`all`: both ends may dial at once, the extra one idles out; more are closed on
//! arrival); every open one is closed after [`Inner::control_idle`] without a
//! packet. Once closed (the mesh closed), nothing is installed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, NodeId};

use super::dial::close_code;
use super::error::DialError;
use super::stats::Count;
use super::swim::NodeIdentity;
use super::wire::{
    Hello, PeerInfo, Wire, CLOSE_DUPLICATE, CLOSE_IDLE, CLOSE_LEAVING, CONTROL_LANE,
};
use super::Inner;
use crate::endpoint::Connection;

/// SWIM packets queued for a control connection being dialed. A probe lost here would
/// make a healthy member suspect, so packets wait for the handshake; beyond this many
/// (a peer that does not answer the dial) they are dropped, as UDP would.
const CONTROL_QUEUE: usize = 32;

/// A SWIM-only QUIC connection: opened to a member this node must probe (or answer)
/// but has no data connection to, closed after [`Inner::control_idle`] without a packet.
/// It never carries lanes, so closing it never loses user data.
pub(super) struct Control {
    id: u64,
    node: NodeId,
    conn: Connection,
    last_used: parking_lot::Mutex<Instant>,
}

impl Control {
    fn touch(&self) {
        *self.last_used.lock() = Instant::now();
    }

    fn send(&self, data: bytes::Bytes) {
        self.touch();
        if let Err(error) = self.conn.quinn().send_datagram(data) {
            tracing::debug!(peer = %self.node, %error, "could not send a SWIM datagram");
        }
    }
}

/// What [`Controls::install`] did with a control connection.
enum Installed {
    /// Installed; the packets queued for its node.
    Up(Vec<bytes::Bytes>),
    /// The mesh closed: the caller closes it.
    Closed,
    /// The peer has [`MAX_CONTROLS_PER_PEER`](super::limits::MAX_CONTROLS_PER_PEER)
    /// already: the caller closes it.
    Full,
}

enum ControlSlot {
    Dialing(Vec<bytes::Bytes>),
    Up(Arc<Control>),
}

/// Where a SWIM packet for a node without a data connection goes.
enum Route {
    /// On this control connection.
    Send(Arc<Control>),
    /// Queued until the control connection being dialed is up.
    Queued,
    /// Queued, and a control connection must be dialed.
    Dial,
}

/// The control connections of a mesh (see the module doc).
#[derive(Default)]
pub(super) struct Controls {
    /// The one used to send to each node.
    slots: HashMap<NodeId, ControlSlot>,
    /// Every open one, by id (both ends may dial at once; the extra one idles out).
    all: HashMap<u64, Arc<Control>>,
    closed: bool,
}

impl Controls {
    /// Open control connections (the gauge in `MeshStats`).
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// The open control connections.
    pub(super) fn connections(&self) -> Vec<Connection> {
        self.all.values().map(|c| c.conn.clone()).collect()
    }

    /// Closes the table; returns the open connections, to be closed.
    pub(super) fn close(&mut self) -> Vec<Arc<Control>> {
        self.closed = true;
        self.slots.clear();
        self.all.drain().map(|(_, c)| c).collect()
    }

    fn route(&mut self, node: NodeId, data: &bytes::Bytes) -> Option<Route> {
        if self.closed {
            return None;
        }
        Some(match self.slots.get_mut(&node) {
            Some(ControlSlot::Up(control)) => Route::Send(Arc::clone(control)),
            Some(ControlSlot::Dialing(queued)) => {
                if queued.len() < CONTROL_QUEUE {
                    queued.push(data.clone());
                }
                Route::Queued
            }
            None => {
                self.slots
                    .insert(node, ControlSlot::Dialing(vec![data.clone()]));
                Route::Dial
            }
        })
    }

    /// Adds an open control connection; returns the packets queued for its node.
    fn install(&mut self, control: &Arc<Control>) -> Installed {
        if self.closed {
            return Installed::Closed;
        }
        let per_peer = self.all.values().filter(|c| c.node == control.node).count();
        if per_peer >= super::limits::MAX_CONTROLS_PER_PEER {
            return Installed::Full;
        }
        self.all.insert(control.id, Arc::clone(control));
        Installed::Up(match self.slots.get_mut(&control.node) {
            Some(ControlSlot::Up(_)) => Vec::new(),
            Some(slot @ ControlSlot::Dialing(_)) => {
                match std::mem::replace(slot, ControlSlot::Up(Arc::clone(control))) {
                    ControlSlot::Dialing(queued) => queued,
                    ControlSlot::Up(_) => Vec::new(),
                }
            }
            None => {
                self.slots
                    .insert(control.node, ControlSlot::Up(Arc::clone(control)));
                Vec::new()
            }
        })
    }

    /// A dial to `node` failed: its queued packets are dropped.
    fn dial_failed(&mut self, node: NodeId) {
        if matches!(self.slots.get(&node), Some(ControlSlot::Dialing(_))) {
            self.slots.remove(&node);
        }
    }

    fn remove(&mut self, control: &Control) {
        self.all.remove(&control.id);
        if matches!(self.slots.get(&control.node), Some(ControlSlot::Up(c)) if c.id == control.id) {
            self.slots.remove(&control.node);
        }
    }

    /// Removes and returns the connections idle for longer than `idle` (`None` once closed).
    fn take_idle(&mut self, idle: Duration) -> Option<Vec<Arc<Control>>> {
        if self.closed {
            return None;
        }
        let stale: Vec<Arc<Control>> = self
            .all
            .values()
            .filter(|c| c.last_used.lock().elapsed() > idle)
            .cloned()
            .collect();
        for control in &stale {
            self.remove(control);
        }
        Some(stale)
    }
}

impl Inner {
    /// Sends a packet to `to`: on the data connection to it if there is one, else on a
    /// control connection (dialed in the background, the packet queued meanwhile).
    pub(super) fn send_swim(self: &Arc<Self>, to: NodeIdentity, data: bytes::Bytes) {
        if self.is_closed() {
            return;
        }
        let conn = {
            let mut conns = self.conns.lock();
            // Listed (for dialing), not confirmed: foca may target a member it only heard of.
            conns.list_if_new(PeerInfo {
                node: to.node,
                addr: to.addr,
                name: to.name.clone(),
            });
            conns.up(to.node)
        };
        if let Some(conn) = conn {
            conn.send_swim(data);
            return;
        }
        let route = self.controls.lock().route(to.node, &data);
        match route {
            None | Some(Route::Queued) => {}
            Some(Route::Send(control)) => control.send(data),
            Some(Route::Dial) => {
                let inner = Arc::clone(self);
                self.handle
                    .spawn(move |_ctx: Ctx<()>| async move { inner.dial_control(to).await });
            }
        }
    }

    /// How long a control connection may go without a SWIM packet before it is closed:
    /// two failure timeouts, so members probed (or probing) regularly keep theirs.
    fn control_idle(&self) -> Duration {
        self.config.failure_timeout * 2
    }

    async fn dial_control(self: &Arc<Self>, to: NodeIdentity) {
        let hello = Hello {
            node: self.node,
            incarnation: self.incarnation,
            listen: self.advertise,
            name: self.name.clone(),
            peers: Vec::new(),
        };
        let dial = async {
            let conn = self.endpoint.connect(to.addr, &to.name).await?;
            let mut lane = conn.open_lane(CONTROL_LANE).await?;
            lane.send(&Wire::Hello(hello)).await?;
            // Dropping the lane finishes it once the hello is written.
            Ok::<_, DialError>(conn)
        };
        let result = match self.handle.timeout(self.config.connect_timeout, dial).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout),
        };
        match result {
            Ok(conn) => self.run_control(conn, to.node),
            Err(error) => {
                self.controls.lock().dial_failed(to.node);
                tracing::debug!(peer = %to.node, addr = %to.addr, %error, "SWIM control connection failed; its packets are dropped");
            }
        }
    }

    /// An incoming control connection from `node` (its hello was on [`CONTROL_LANE`]).
    pub(super) fn accept_control(self: &Arc<Self>, conn: Connection, node: NodeId) {
        self.run_control(conn, node);
    }

    fn run_control(self: &Arc<Self>, conn: Connection, node: NodeId) {
        let control = Arc::new(Control {
            id: self.next_id(),
            node,
            conn,
            last_used: parking_lot::Mutex::new(Instant::now()),
        });
        let installed = self.controls.lock().install(&control);
        let queued = match installed {
            Installed::Up(queued) => queued,
            Installed::Closed => {
                control.conn.close(CLOSE_LEAVING, b"mesh closed");
                return;
            }
            Installed::Full => {
                tracing::warn!(peer = %node, "too many SWIM control connections from one peer; closed");
                self.counters.bump(Count::RefusedControlConnection);
                control
                    .conn
                    .close(CLOSE_DUPLICATE, b"too many control connections");
                return;
            }
        };
        // Both directions are checked here, once installed: a dialed control connection
        // carries no hello back, and a reload that revoked the peer while this one was
        // being set up enumerated the connections before it was among them.
        if self.refuse_revoked(&control.conn) {
            self.controls.lock().remove(&control);
            return;
        }
        // Its hello lane is read: any further stream is refused (`limits`).
        self.refuse_extra_streams(&control.conn);
        tracing::debug!(peer = %node, queued = queued.len(), "SWIM control connection up");
        for packet in queued {
            control.send(packet);
        }
        let inner = Arc::clone(self);
        let reader = Arc::clone(&control);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let region = crate::tls::peer_identity(reader.conn.quinn()).and_then(|c| c.region);
            while let Ok(packet) = reader.conn.quinn().read_datagram().await {
                reader.touch();
                inner.swim_packet(reader.node, region.as_deref(), &packet);
            }
        });
        let inner = Arc::clone(self);
        self.handle.spawn(move |_ctx: Ctx<()>| async move {
            let reason = control.conn.closed().await;
            inner.controls.lock().remove(&control);
            if close_code(&reason) == Some(CLOSE_LEAVING) {
                inner.peer_left(control.node);
            }
            tracing::debug!(peer = %control.node, %reason, "SWIM control connection closed");
        });
    }

    /// Closes control connections idle for longer than [`Inner::control_idle`], until
    /// the mesh closes.
    pub(super) async fn sweep_controls(self: &Arc<Self>) {
        let idle = self.control_idle();
        loop {
            self.handle.sleep(idle / 2).await;
            let Some(stale) = self.controls.lock().take_idle(idle) else {
                return;
            };
            for control in stale {
                tracing::debug!(peer = %control.node, "closing an idle SWIM control connection");
                control.conn.close(CLOSE_IDLE, b"idle");
            }
        }
    }
}

/// Closes control connections (the mesh is closing).
pub(super) fn close_all(controls: Vec<Arc<Control>>) {
    for control in controls {
        control.conn.close(CLOSE_LEAVING, b"mesh closed");
    }
}
