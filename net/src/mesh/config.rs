//! How a mesh runs: its configuration, the seeds it joins through (addresses or DNS names,
//! resolved through a [`Resolver`] on every try) and the address it advertises.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::MAX_FRAME_DEFAULT;
use crate::tls::TlsConfig;

/// Where a seed is: a socket address, or a host name and port resolved on every dial
/// attempt (so a seed behind a DNS record that changes — a Kubernetes headless service, a
/// replaced VM — is found at its new address on the next retry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SeedAddr {
    /// A literal address (`10.0.0.1:7400`, `[fd00::1]:7400`).
    Addr(SocketAddr),
    /// A name to resolve (`db-1.internal:7400`).
    Host {
        /// The DNS name (or `/etc/hosts` entry).
        host: String,
        /// The port.
        port: u16,
    },
}

/// Why a seed could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not HOST:PORT (a name or IP address, IPv6 in brackets, and a port)")]
pub struct SeedAddrError(pub String);

impl FromStr for SeedAddr {
    type Err = SeedAddrError;

    fn from_str(s: &str) -> Result<SeedAddr, SeedAddrError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(SeedAddr::Addr(addr));
        }
        let bad = || SeedAddrError(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // An IPv6 address must come in brackets (caught above); a name has no colon,
        // spaces or brackets.
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !name_ok || host.parse::<IpAddr>().is_ok() {
            return Err(bad());
        }
        Ok(SeedAddr::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl From<SocketAddr> for SeedAddr {
    fn from(addr: SocketAddr) -> SeedAddr {
        SeedAddr::Addr(addr)
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedAddr::Addr(addr) => write!(f, "{addr}"),
            SeedAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Turns seed names into addresses. The mesh calls it on every dial attempt to a named
/// seed, on the blocking pool (it may block on DNS). Tests replace it to change what a
/// name resolves to between retries.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The addresses of `host`, port `port`, in preference order.
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

impl SeedAddr {
    /// The addresses to try now: the literal one, or what `resolver` says the name is.
    pub fn resolve(&self, resolver: &dyn Resolver) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            SeedAddr::Addr(addr) => Ok(vec![*addr]),
            SeedAddr::Host { host, port } => resolver.resolve(host, *port),
        }
    }
}

/// A node to contact at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Where it is.
    pub addr: SeedAddr,
    /// Its TLS name: the node name in its certificate (TLS checks it).
    pub name: String,
}

impl Seed {
    /// A seed at `addr` (a [`SocketAddr`] or a [`SeedAddr`]) whose certificate is issued
    /// for `name`.
    pub fn new(addr: impl Into<SeedAddr>, name: impl Into<String>) -> Seed {
        Seed {
            addr: addr.into(),
            name: name.into(),
        }
    }
}

/// How a [`Mesh`](super::Mesh) runs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Where to accept connections (`127.0.0.1:0` picks a free port; `0.0.0.0:7400` or
    /// `[::]:7400` listens on every interface, see [`MeshConfig::advertise`]).
    pub listen: SocketAddr,
    /// The address other nodes reach this one at, gossiped to every member. `None`: the
    /// listen address when it is a specific one; on an unspecified listen address, the
    /// address this host routes to its seeds from (or its default route). See `advertise`.
    pub advertise: Option<SocketAddr>,
    /// A dial-only client: it takes no connections, is not a SWIM member (never probed,
    /// never listed in [`Mesh::members`](super::Mesh::members) elsewhere) and talks to one
    /// seed at a time, its *gateway* ([`Mesh::gateway`](super::Mesh::gateway)), retrying
    /// the other seeds when it is lost. `listen` is only the local socket (`0.0.0.0:0`).
    pub dial_only: bool,
    /// The cluster CA and this node's certificate.
    pub tls: TlsConfig,
    /// Nodes to contact at start.
    pub seeds: Vec<Seed>,
    /// Resolves seed names (default: [`SystemResolver`]).
    pub resolver: Arc<dyn Resolver>,
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
    /// The operator's revocation list: a file of revoked certificate serials, one a line
    /// (see `revoke`). Read at start (an error then fails the start), checked at every
    /// hello, re-read every [`MeshConfig::revocation_reload`].
    pub revoked: Option<std::path::PathBuf>,
    /// How often the revocation list is re-read (default 10 s).
    pub revocation_reload: Duration,
}

impl MeshConfig {
    /// Defaults: listen on `listen`, no seeds.
    pub fn new(listen: SocketAddr, tls: TlsConfig) -> MeshConfig {
        MeshConfig {
            listen,
            advertise: None,
            dial_only: false,
            tls,
            seeds: Vec::new(),
            resolver: Arc::new(SystemResolver),
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_frame: MAX_FRAME_DEFAULT,
            region: None,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            revoked: None,
            revocation_reload: Duration::from_secs(10),
        }
    }

    /// A dial-only client (see [`MeshConfig::dial_only`]) on a socket of any local
    /// address and a free port.
    pub fn dial_only(tls: TlsConfig) -> MeshConfig {
        let mut config = MeshConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)), tls);
        config.dial_only = true;
        config
    }

    /// Sets the advertised address (see [`MeshConfig::advertise`]).
    pub fn advertise(mut self, addr: SocketAddr) -> MeshConfig {
        self.advertise = Some(addr);
        self
    }

    /// Sets the resolver of seed names.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> MeshConfig {
        self.resolver = resolver;
        self
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

    /// Honours the revocation list at `path`, re-read every `reload` (see
    /// [`MeshConfig::revoked`]).
    pub fn revoked(mut self, path: impl Into<std::path::PathBuf>, reload: Duration) -> MeshConfig {
        self.revoked = Some(path.into());
        self.revocation_reload = reload;
        self
    }

    /// Adds a seed.
    pub fn seed(mut self, addr: impl Into<SeedAddr>, name: impl Into<String>) -> MeshConfig {
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
