//! The address a node advertises: what peers are told to dial it at (in hellos and in its
//! SWIM identity, gossiped to every member).
//!
//! # Rules (the invariants this module keeps)
//!
//! - An explicit [`MeshConfig::advertise`](super::MeshConfig::advertise) wins; it must be a
//!   specific address (port 0 means "the port actually bound").
//! - Else a specific listen address is advertised as bound.
//! - Else (listening on `0.0.0.0` / `[::]`) the node advertises the local address its host
//!   routes to its first reachable seed from — the address that seed, and hosts like it,
//!   can reach it at; loopback when every seed is on loopback (one machine); else its
//!   default-route address. Nothing found: [`AdvertiseError`]
//!   at start, asking for `--advertise`.
//! - [`shareable`]: an unspecified address (or port 0: a dial-only client) is never
//!   gossiped nor learned, and a loopback address is never told to a peer on another host.
//!
//! Finding the route's source address opens a UDP socket and `connect`s it: the kernel
//! picks the source address; no packet is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// How the advertised address was chosen (said in the node's start log and `ready` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertiseSource {
    /// Given by configuration.
    Configured,
    /// The specific listen address.
    Listen,
    /// The local address routing to this seed address.
    RouteToSeed(SocketAddr),
    /// The local address of the default route.
    DefaultRoute,
}

/// No usable address to advertise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertiseError {
    /// The configured advertise address is unspecified.
    #[error("cannot advertise {0}: peers cannot dial an unspecified address; give the host's reachable address")]
    Unspecified(SocketAddr),
    /// Listening on every interface and no routable address was found.
    #[error("listening on {listen}, which peers cannot dial, and no routable address was found (no seed route, no default route): set the advertised address (--advertise HOST:PORT)")]
    NoRoutableAddress {
        /// The bound address.
        listen: SocketAddr,
    },
}

/// The address to advertise for a node bound at `bound` (port known), configured
/// `configured`, with seeds at `seeds` (resolved). `route` finds the local source address
/// for a destination ([`route_source`] in production; a stub in tests).
pub fn choose(
    bound: SocketAddr,
    configured: Option<SocketAddr>,
    seeds: &[SocketAddr],
    route: impl Fn(IpAddr) -> Option<IpAddr>,
) -> Result<(SocketAddr, AdvertiseSource), AdvertiseError> {
    if let Some(addr) = configured {
        if addr.ip().is_unspecified() {
            return Err(AdvertiseError::Unspecified(addr));
        }
        let port = if addr.port() == 0 {
            bound.port()
        } else {
            addr.port()
        };
        return Ok((
            SocketAddr::new(addr.ip(), port),
            AdvertiseSource::Configured,
        ));
    }
    if !bound.ip().is_unspecified() {
        return Ok((bound, AdvertiseSource::Listen));
    }
    // An IPv4 socket reaches IPv4 only; `[::]` is dual-stack on Linux.
    let reachable = |ip: &IpAddr| bound.is_ipv6() || ip.is_ipv4();
    let usable = |ip: IpAddr| !ip.is_unspecified() && !ip.is_loopback();
    for seed in seeds
        .iter()
        .filter(|s| reachable(&s.ip()) && !s.ip().is_loopback())
    {
        if let Some(ip) = route(seed.ip()).filter(|ip| usable(*ip)) {
            return Ok((
                SocketAddr::new(ip, bound.port()),
                AdvertiseSource::RouteToSeed(*seed),
            ));
        }
    }
    // One machine: every seed on loopback, so loopback is how they reach this node.
    if !seeds.is_empty() && seeds.iter().all(|s| s.ip().is_loopback()) {
        let ip = seeds[0].ip();
        return Ok((
            SocketAddr::new(ip, bound.port()),
            AdvertiseSource::RouteToSeed(seeds[0]),
        ));
    }
    let probes: [IpAddr; 2] = [
        // Documentation prefixes (TEST-NET-1, 2001:db8::/32): routed by a default route
        // only, never used.
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ];
    for probe in probes.iter().filter(|p| reachable(p)) {
        if let Some(ip) = route(*probe).filter(|ip| usable(*ip)) {
            return Ok((
                SocketAddr::new(ip, bound.port()),
                AdvertiseSource::DefaultRoute,
            ));
        }
    }
    Err(AdvertiseError::NoRoutableAddress { listen: bound })
}

/// The local address the kernel would send from to reach `dest` (no packet is sent).
pub fn route_source(dest: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dest {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(SocketAddr::new(dest, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Whether `addr` (a node's advertised address) may be told to, or learned from, the peer
/// at `peer`: never an unspecified address or port 0 (nobody can dial it: a dial-only
/// client), and a loopback address only between nodes on loopback (one host).
pub fn shareable(addr: SocketAddr, peer: SocketAddr) -> bool {
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return false;
    }
    !addr.ip().is_loopback() || is_loopback(peer.ip())
}

/// Loopback, also as an IPv4-mapped IPv6 address (what a dual-stack socket reports).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// The address a dial-only client says it listens at: none (unspecified, port 0), which
/// [`shareable`] keeps from ever being learned or gossiped.
pub(super) fn nowhere() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_is_shared_only_with_loopback_peers() {
        assert!(shareable(a("127.0.0.1:7400"), a("127.0.0.1:9")));
        assert!(shareable(a("127.0.0.1:7400"), a("[::ffff:127.0.0.1]:9")));
        assert!(!shareable(a("127.0.0.1:7400"), a("10.0.0.2:9")));
        assert!(!shareable(a("[::1]:7400"), a("[fd00::2]:9")));
        assert!(shareable(a("10.0.0.1:7400"), a("10.0.0.2:9")));
    }

    #[test]
    fn unspecified_or_portless_is_never_shared() {
        assert!(!shareable(a("0.0.0.0:7400"), a("127.0.0.1:9")));
        assert!(!shareable(a("[::]:7400"), a("10.0.0.2:9")));
        assert!(!shareable(nowhere(), a("10.0.0.2:9")));
    }
}
