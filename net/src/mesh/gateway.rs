//! Dial-only clients ([`MeshConfig::dial_only`](super::MeshConfig::dial_only)): a client
//! keeps one connection, to its *gateway* — the first seed that answers — and sends
//! everything there; the gateway forwards (object envelopes to their owners, replies back).
//! When the gateway's connection is lost the client dials the next seed (round robin,
//! names resolved again), backing off 100 ms doubling to 2 s after a round with no answer.
//!
//! # Invariants
//! - A client never announces itself to SWIM and runs no anti-entropy sync: it is never a
//!   member, never probed. It takes no connections (its endpoint has no server config) and
//!   its hellos advertise no address (`advertise::nowhere`), so no node learns or gossips
//!   one for it.
//! - [`Gateway`] holds the current gateway's node id only while its connection is up.

use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::NodeId;
use parking_lot::Mutex;

use super::error::DialError;
use super::Inner;

/// The current gateway of a dial-only client.
#[derive(Default)]
pub(super) struct Gateway {
    current: Mutex<Option<NodeId>>,
}

impl Gateway {
    pub(super) fn get(&self) -> Option<NodeId> {
        *self.current.lock()
    }

    fn set(&self, node: Option<NodeId>) {
        *self.current.lock() = node;
    }
}

impl Inner {
    /// A dial-only client's gateway, if connected.
    pub(super) fn gateway(&self) -> Option<NodeId> {
        self.gateway.get().filter(|n| self.conns.lock().is_up(*n))
    }

    /// Keeps a dial-only client connected to one seed until the mesh closes.
    pub(super) async fn keep_gateway(self: Arc<Self>) {
        let seeds = self.config.seeds.clone();
        if seeds.is_empty() {
            tracing::warn!("a dial-only client without seeds reaches nobody");
            return;
        }
        let mut next = 0;
        let mut backoff = Duration::from_millis(100);
        let mut failed_in_a_row = 0;
        while !self.is_closed() {
            let seed = &seeds[next % seeds.len()];
            next += 1;
            match self.dial_seed(seed).await {
                Ok((node, addr)) => {
                    failed_in_a_row = 0;
                    backoff = Duration::from_millis(100);
                    let Some(conn) = self.up_conn(node) else {
                        continue;
                    };
                    tracing::info!(gateway = %node, %addr, "client connected to its gateway");
                    self.gateway.set(Some(node));
                    let reason = conn.quic().closed().await;
                    self.gateway.set(None);
                    tracing::info!(gateway = %node, %reason, "client lost its gateway; trying the next seed");
                }
                Err(error) => {
                    if self.is_closed() {
                        return;
                    }
                    tracing::warn!(seed = %seed.addr, %error, "client could not reach a seed");
                    failed_in_a_row += 1;
                    if failed_in_a_row >= seeds.len() {
                        failed_in_a_row = 0;
                        self.handle.sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` for a dial-only client's gateway.
    pub(super) async fn wait_gateway(&self, timeout: Duration) -> Result<NodeId, DialError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(node) = self.gateway() {
                return Ok(node);
            }
            if self.is_closed() {
                return Err(DialError::Closed);
            }
            if std::time::Instant::now() >= deadline {
                return Err(DialError::NoGateway);
            }
            self.handle.sleep(Duration::from_millis(10)).await;
        }
    }
}
