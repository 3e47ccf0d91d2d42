//! How a mesh runs: its configuration and the seeds it joins through.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::MAX_FRAME_DEFAULT;
use crate::tls::TlsConfig;

/// A node to contact at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Its listen address.
    pub addr: SocketAddr,
    /// Its TLS name: the node name in its certificate (TLS checks it).
    pub name: String,
}

impl Seed {
    /// A seed at `addr` whose certificate is issued for `name`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Seed {
        Seed {
            addr,
            name: name.into(),
        }
    }
}

/// How a [`Mesh`](super::Mesh) runs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Where to accept connections (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The cluster CA and this node's certificate.
    pub tls: TlsConfig,
    /// Nodes to contact at start.
    pub seeds: Vec<Seed>,
    /// A connection with no packet from the peer for this long is lost (default 3 s).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well below `idle_timeout` (default 1 s).
    pub keep_alive: Duration,
    /// How long a send waits for a connection to be opened (default 5 s).
    pub connect_timeout: Duration,
    /// Largest frame sent or accepted (default 16 MiB).
    pub max_frame: usize,
    /// This node's region label (e.g. `eu`), visible to every member in
    /// [`Mesh::members`](super::Mesh::members).
    pub region: Option<String>,
    /// A dead, hung or cut-off node is declared down by SWIM within about this long
    /// (default 5 s; at least 250 ms). Probe period, probe RTT and suspicion time derive
    /// from it (see `MESH.md`, *Failure detection*).
    pub failure_timeout: Duration,
}

impl MeshConfig {
    /// Defaults: listen on `listen`, no seeds.
    pub fn new(listen: SocketAddr, tls: TlsConfig) -> MeshConfig {
        MeshConfig {
            listen,
            tls,
            seeds: Vec::new(),
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_frame: MAX_FRAME_DEFAULT,
            region: None,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
        }
    }

    /// Sets this node's region label.
    pub fn region(mut self, region: impl Into<String>) -> MeshConfig {
        self.region = Some(region.into());
        self
    }

    /// Sets the failure timeout (see [`MeshConfig::failure_timeout`]).
    pub fn failure_timeout(mut self, timeout: Duration) -> MeshConfig {
        self.failure_timeout = timeout;
        self
    }

    /// Adds a seed.
    pub fn seed(mut self, addr: SocketAddr, name: impl Into<String>) -> MeshConfig {
        self.seeds.push(Seed::new(addr, name));
        self
    }

    /// Sets the idle timeout and a keep-alive interval of a third of it.
    pub fn idle_timeout(mut self, idle: Duration) -> MeshConfig {
        self.idle_timeout = idle;
        self.keep_alive = idle / 3;
        self
    }
}

/// Default [`MeshConfig::failure_timeout`]: a hung or cut-off node is to be declared down
/// within 5 s (the project's design asks for at most 5 s by default).
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
