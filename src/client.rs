//! Dial-only client nodes ([`crate::NodeBuilder::client`]): their mesh configuration and
//! their scratch store.
//!
//! A client owns no objects and keeps no state, but a node always has a store; a client's
//! is opened in a fresh temporary directory that is removed as soon as the store is open
//! (the open files live on, unlinked, until the node stops), so a client needs no data dir
//! and leaves nothing behind, even when killed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use cairn_net::mesh::Seed;
use cairn_net::{MeshConfig, TlsConfig};
use cairn_storage::Store;

use crate::NodeError;

/// A client's mesh: dial-only, on a socket of any local address — dual-stack `[::]:0`
/// where IPv6 exists, so it reaches IPv4 and IPv6 seeds alike — and a free port.
pub(crate) fn mesh_config(seeds: &[Seed], tls: TlsConfig) -> MeshConfig {
    let mut config = MeshConfig::dial_only(tls);
    config.listen = any_local_addr();
    config.seeds = seeds.to_vec();
    config
}

fn any_local_addr() -> SocketAddr {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    if UdpSocket::bind(v6).is_ok() {
        v6
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    }
}

/// A store in a fresh temporary directory, removed once the store is open, and the
/// client's creation: it has no data dir to count its lives in, so the clock's seconds
/// (wrapping) keep a restarted client's pids apart from its last life's.
pub(crate) fn scratch_store(config: cairn_storage::Config) -> Result<(Store, u32), NodeError> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = since_epoch.as_nanos();
    let dir = std::env::temp_dir().join(format!("cairn-client-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir, config);
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %error, "could not remove a client's scratch store");
    }
    Ok((store?, since_epoch.as_secs() as u32))
}
