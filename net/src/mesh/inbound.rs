//! What arrives on a kept connection's lane: user messages delivered into local
//! mailboxes, replies completing pending calls, process signals applied to local
//! processes, and membership syncs.
//!
//! # Bad input
//!
//! A frame that is not a valid mesh frame closes that connection (logged, counted in
//! [`MeshStats::protocol_errors`](super::MeshStats::protocol_errors)); an unknown tag or a
//! payload that does not decode as its registered type is logged and counted
//! (`bad_messages`) and the connection carries on. A message for a dead pid or an unknown
//! name is a dead letter (logged, `dead_letters`); if it carried a reply (a call), the
//! caller is told why at once (the frame's `call`, see `router`). A node may only speak
//! for its own processes: a signal about another node's process is ignored and counted.
//! What a peer may do at all (its role, system processes) is `authz`'s call, made here
//! before anything is delivered or applied; a refused call is answered
//! `RemoteFailure::Unauthorized`. Nothing on this path panics.
//!
//! # Ordering
//!
//! One reader process per connection delivers frames one by one; on a full mailbox it
//! waits (`send().await`) before taking the next frame, so every sender→receiver pair keeps
//! its order and mailboxes stay bounded end to end (the cost: one full mailbox holds up
//! every message from that node).

use std::sync::Arc;

use cairn_scheduler::{MonitorRef, NodeId, Pid};

use super::authz;
use super::conns::{Conn, Peer};
use super::registry::Delivery;
use super::replies::Answered;
use super::router::{with_codec, Reported};
use super::stats::Count;
use super::wire::{Bytes, RemoteFailure, Target, Wire};
use super::Inner;
use crate::endpoint::{FramedReceiver, RecvError};

impl Inner {
    pub(super) async fn read_conn(self: &Arc<Self>, conn: &Conn, mut rx: FramedReceiver) {
        loop {
            match rx.recv::<Wire>().await {
                Ok(Some(frame)) => {
                    conn.received_frame();
                    self.handle_frame(conn, frame).await
                }
                Ok(None) => return,
                Err(RecvError::Frame(error)) => {
                    // The receiver has logged it and closed the connection.
                    self.counters.bump(Count::ProtocolError);
                    tracing::warn!(peer = %conn.node(), %error, "mesh connection closed: bad frame");
                    return;
                }
                Err(error) => {
                    tracing::debug!(peer = %conn.node(), %error, "mesh lane ended");
                    return;
                }
            }
        }
    }

    async fn handle_frame(self: &Arc<Self>, conn: &Conn, frame: Wire) {
        match frame {
            Wire::Send {
                from,
                to,
                tag,
                call,
                payload,
                request,
            } => {
                let report = Reported {
                    peer: conn.node(),
                    call,
                    request,
                };
                if let Some(request) = request {
                    tracing::debug!(
                        target: "cairn::request",
                        request_id = %format_args!("{request:016x}"),
                        peer = %conn.node(),
                        %tag,
                        "mesh frame received for a request"
                    );
                }
                let allowed = authz::check_send(conn.cert().role, &to, |pid| self.local_name(pid))
                    .map_err(|denied| self.unauthorized(conn.node(), &denied));
                let result = match allowed {
                    Ok(()) => self.deliver(report, &to, &tag, &payload.0).await,
                    Err(failure) => Err(failure),
                };
                match &result {
                    Err(RemoteFailure::Unauthorized(_)) => {}
                    Ok(()) => {
                        self.counters.bump(Count::Delivered);
                    }
                    Err(RemoteFailure::NoProc) => {
                        self.counters.bump(Count::DeadLetter);
                        tracing::warn!(peer = %conn.node(), ?from, ?to, %tag, "dead letter: no such process");
                    }
                    Err(failure) => {
                        self.counters.bump(Count::BadMessage);
                        tracing::warn!(peer = %conn.node(), ?from, ?to, %tag, %failure, "undeliverable message");
                    }
                }
                if let (Some(id), Err(failure)) = (call, result) {
                    let answer = Wire::Reply {
                        id,
                        result: Err(failure),
                    };
                    if let Err(error) = conn.send(&answer).await {
                        tracing::debug!(peer = %conn.node(), %error, "could not report a failed call");
                    }
                }
            }
            Wire::Reply { id, result } => self.complete(conn.node(), id, result),
            signal @ (Wire::Exit { .. }
            | Wire::Link { .. }
            | Wire::Unlink { .. }
            | Wire::Monitor { .. }
            | Wire::Demonitor { .. }
            | Wire::Down { .. }) => {
                let role = conn.cert().role;
                match authz::check_signal(role, &signal, |pid| self.local_name(pid)) {
                    Ok(()) => self.apply_signal(conn.node(), signal),
                    Err(denied) => drop(self.unauthorized(conn.node(), &denied)),
                }
            }
            Wire::SyncRequest { .. } | Wire::Sync { .. }
                if authz::check_membership(conn.cert().role).is_err() =>
            {
                drop(self.unauthorized(conn.node(), &authz::Denied::ClientMembership));
            }
            Wire::SyncRequest { mut names } => {
                let answer = Wire::Sync {
                    members: self.membership_snapshot(),
                    names: self.name_claims(),
                };
                if let Err(error) = conn.send(&answer).await {
                    tracing::debug!(peer = %conn.node(), %error, "could not answer a sync request");
                }
                // The asker speaks for its own processes only.
                let asked = names.len();
                names.retain(|claim| claim.pid.node() == conn.node());
                if names.len() < asked {
                    drop(self.unauthorized(conn.node(), &authz::Denied::OthersNames));
                }
                // All of the asker's names: its word on every rumour about it.
                self.apply_name_sync(conn.node(), names, true);
            }
            Wire::Sync { members, names } => {
                // Only an answer this node asked for (`membership`).
                if self.take_sync_request(conn.node()) {
                    self.apply_membership_snapshot(conn.node(), &members.0);
                    self.apply_name_sync(conn.node(), names, false);
                }
            }
            Wire::Hello(_) | Wire::HelloAck(_) => {
                tracing::warn!(peer = %conn.node(), "unexpected hello on an established connection; ignored");
                self.counters.bump(Count::ProtocolError);
            }
        }
    }

    async fn deliver(
        &self,
        report: Reported,
        to: &Target,
        tag: &str,
        payload: &[u8],
    ) -> Result<(), RemoteFailure> {
        let delivered = self.registry.with_deliverer(tag, |deliverer| {
            let pid = match to {
                Target::Pid(pid) if pid.node() == self.node => Some(*pid),
                Target::Pid(_) => None,
                Target::Name(name) => self.handle.whereis(name),
            };
            let Some(pid) = pid else {
                return Delivery::Failed(RemoteFailure::NoProc);
            };
            report.run(|| {
                with_codec(self, report.peer, || {
                    deliverer.deliver(&self.handle, pid, payload, report)
                })
            })
        });
        let Some(delivery) = delivered else {
            return Err(RemoteFailure::UnknownTag(tag.to_owned()));
        };
        match delivery {
            Delivery::Done => Ok(()),
            Delivery::Failed(f) => Err(f),
            // A full mailbox: wait here, holding up the lane, so order is kept.
            Delivery::Wait(fut) => fut.await,
        }
    }

    /// An answer (or a failure report) from `peer` for reply `id` of this node.
    pub(super) fn complete(&self, peer: NodeId, id: u64, result: Result<Bytes, RemoteFailure>) {
        match self.replies.complete(peer, id, result) {
            Answered::Completed => {}
            Answered::Unknown => {
                tracing::debug!(%peer, id, "answer to a call nobody waits for (timed out?)");
            }
            Answered::Forged => {
                tracing::warn!(%peer, id, "answer from a node the call was not sent to; dropped");
                self.counters.bump(Count::ForgedReply);
            }
        }
    }

    /// The name the local process `pid` is registered under (`None` for another node's).
    fn local_name(&self, pid: Pid) -> Option<String> {
        if pid.node() == self.node {
            self.handle.name_of(pid)
        } else {
            None
        }
    }

    /// Logs and counts a refusal by `authz`; the failure to answer a call with.
    pub(super) fn unauthorized(&self, peer: NodeId, denied: &authz::Denied) -> RemoteFailure {
        tracing::warn!(%peer, %denied, "refused: not authorized");
        self.counters.bump(Count::Unauthorized);
        RemoteFailure::Unauthorized(denied.to_string())
    }

    /// Applies a signal frame from `peer` to local processes.
    fn apply_signal(&self, peer: NodeId, frame: Wire) {
        let Some(inbound) = self.inbound() else {
            return;
        };
        let from_peer = |pid: Pid| pid.node() == peer;
        match frame {
            Wire::Exit {
                to,
                from,
                reason,
                link,
            } if from_peer(from) => inbound.exit(to, from, reason, link),
            Wire::Link { to, from } if from_peer(from) => inbound.link(to, from),
            Wire::Unlink { to, from } if from_peer(from) => inbound.unlink(to, from),
            Wire::Monitor {
                target,
                watcher,
                monitor,
            } if from_peer(watcher) => {
                inbound.monitor(target, watcher, MonitorRef::from_raw(monitor))
            }
            Wire::Demonitor { target, monitor } => {
                inbound.demonitor(target, MonitorRef::from_raw(monitor))
            }
            Wire::Down {
                monitor,
                target,
                reason,
            } if from_peer(target) => inbound.down(MonitorRef::from_raw(monitor), target, reason),
            other => {
                // A node may only speak for its own processes.
                tracing::warn!(%peer, frame = ?other, "signal about another node's process; ignored");
                self.counters.bump(Count::BadMessage);
            }
        }
    }
}
