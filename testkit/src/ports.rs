//! Partitions between processes on one host's loopback, by port: an nftables table in the
//! current network namespace drops every TCP and UDP packet between a port of one side and
//! a port of the other, both ways. Mesh nodes on 127.0.0.1 send and receive on their one
//! listening port (QUIC), so cutting ports cuts nodes, while a third party (the test's own
//! caller node, on another port) still reaches both sides.
//!
//! # What it owns, and its invariants
//! A [`PortPartition`] owns the table `inet cairn_ports_<pid>_<n>` (unique per process and
//! partition), so parallel tests never touch each other's rules; dropping it deletes the
//! table (healing exactly that partition). A process killed while holding one leaves the
//! table behind; it only names that process's ports.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{run, run_with_stdin, NetError};

/// Drops packets between two sets of local ports until dropped (see the module doc).
#[derive(Debug)]
pub struct PortPartition {
    /// The table; `None` once healed.
    table: Option<String>,
}

impl PortPartition {
    /// Starts dropping every packet between a port in `a` and a port in `b`. Needs root
    /// and `nft`: [`NetError::Unavailable`] otherwise.
    pub fn new(a: &[u16], b: &[u16]) -> Result<PortPartition, NetError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if Command::new("nft").arg("--version").output().is_err() {
            return Err(NetError::Unavailable(
                "`nft` (Debian package nftables) is not installed".into(),
            ));
        }
        let table = format!(
            "cairn_ports_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let set = |ports: &[u16]| {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("{{ {} }}", list.join(", "))
        };
        let (a, b) = (set(a), set(b));
        let script = format!(
            "table inet {table} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    meta l4proto {{ tcp, udp }} th sport {a} th dport {b} drop\n    meta l4proto {{ tcp, udp }} th sport {b} th dport {a} drop\n  }}\n}}\n"
        );
        let mut cmd = Command::new("nft");
        cmd.args(["-f", "-"]);
        match run_with_stdin(cmd, &script) {
            Ok(()) => Ok(PortPartition { table: Some(table) }),
            Err(NetError::Command { stderr, .. }) if stderr.contains("Operation not permitted") => {
                Err(NetError::Unavailable(stderr))
            }
            Err(e) => Err(e),
        }
    }

    /// Heals the partition (as dropping it does), reporting a failure to remove the rules.
    pub fn heal(mut self) -> Result<(), NetError> {
        match self.table.take() {
            Some(table) => run(&["nft", "delete", "table", "inet", &table]),
            None => Ok(()),
        }
    }
}

impl Drop for PortPartition {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            let _ = run(&["nft", "delete", "table", "inet", &table]);
        }
    }
}

/// Skips the calling test (returns `None`, printing why) when packets cannot be dropped
/// here; with `CAIRN_REQUIRE_NETNS=1` (CI, root) it panics instead.
pub fn require_port_partition(a: &[u16], b: &[u16]) -> Option<PortPartition> {
    match PortPartition::new(a, b) {
        Ok(p) => Some(p),
        Err(NetError::Unavailable(why)) if std::env::var_os("CAIRN_REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED: this test needs nftables (run as root): {why}");
            None
        }
        Err(e) => panic!("cannot partition ports: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn echo_once(from: &UdpSocket, to: &UdpSocket) -> bool {
        // A packet dropped on the output hook fails the send itself (EPERM).
        if from.send_to(b"x", to.local_addr().unwrap()).is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        to.recv_from(&mut buf).is_ok()
    }

    #[test]
    fn a_partition_drops_exactly_the_packets_between_its_sides_until_healed() {
        let socket = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        };
        let (a, b, c) = (socket(), socket(), socket());
        let port = |s: &UdpSocket| s.local_addr().unwrap().port();
        let Some(cut) = require_port_partition(&[port(&a)], &[port(&b)]) else {
            return;
        };
        assert!(!echo_once(&a, &b), "a -> b passed the partition");
        assert!(!echo_once(&b, &a), "b -> a passed the partition");
        assert!(echo_once(&a, &c), "a -> c was dropped");
        assert!(echo_once(&c, &b), "c -> b was dropped");
        cut.heal().unwrap();
        assert!(echo_once(&a, &b), "a -> b still dropped after healing");
    }
}
