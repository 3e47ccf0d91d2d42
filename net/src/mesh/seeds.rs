//! Reaching seeds: a seed is an address or a DNS name, resolved again on every attempt
//! (through [`MeshConfig::resolver`](super::MeshConfig::resolver), on the blocking pool),
//! and each resolved address is tried in turn.

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_scheduler::NodeId;

use super::config::{Seed, SeedAddr};
use super::error::DialError;
use super::Inner;

impl Inner {
    /// What `seed` resolves to now.
    pub(super) async fn resolve_seed(&self, seed: &Seed) -> Result<Vec<SocketAddr>, DialError> {
        let failed = |reason: String| DialError::Resolve {
            seed: seed.addr.to_string(),
            reason,
        };
        let addrs = match &seed.addr {
            SeedAddr::Addr(addr) => vec![*addr],
            SeedAddr::Host { .. } => {
                let resolver = Arc::clone(&self.config.resolver);
                let at = seed.addr.clone();
                self.handle
                    .spawn_blocking(move || at.resolve(&*resolver))
                    .await
                    .map_err(failed)?
                    .map_err(|e| failed(e.to_string()))?
            }
        };
        if addrs.is_empty() {
            return Err(failed("no address".to_owned()));
        }
        Ok(addrs)
    }

    /// Resolves `seed` and dials its addresses in turn until one answers: the node there
    /// and the address that worked.
    pub(super) async fn dial_seed(
        self: &Arc<Self>,
        seed: &Seed,
    ) -> Result<(NodeId, SocketAddr), DialError> {
        let addrs = self.resolve_seed(seed).await?;
        let mut last = DialError::Timeout;
        for addr in addrs {
            match self.dial(addr, &seed.name, None).await {
                Ok(node) => return Ok((node, addr)),
                Err(error) => {
                    tracing::debug!(%seed.addr, %addr, %error, "seed address did not answer");
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// Whether `seed` is literally this node's own address (skipped when joining).
    pub(super) fn is_own_seed(&self, seed: &Seed) -> bool {
        matches!(seed.addr, SeedAddr::Addr(a) if a == self.listen || a == self.advertise)
    }
}
