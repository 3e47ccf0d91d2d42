//! Fault injection for tests (`testing` feature only): network partitions inside a process.
//!
//! A [`Partition`] names two sets of UDP ports (the mesh's one port per node, on
//! 127.0.0.1). While it lasts, every QUIC socket of this process ([`crate::runtime`])
//! drops the datagrams it would send from one side to the other, and the datagrams it
//! receives from the other side, as a lost packet: everything between the sides goes
//! (SWIM datagrams, frames on lanes, handshakes, acknowledgements), exactly what an
//! nftables rule on those ports does, so QUIC retransmits, idles out and re-dials as over
//! a real broken network. Ports in neither set are not affected.
//!
//! The table is per process: every process that runs a node on either side must install
//! the same partition (test children are told over their stdin). A socket filters on its
//! own traffic only, so one process knowing it is enough to cut that process's nodes off;
//! all of them knowing it makes the cut symmetric.
//!
//! # Invariants
//! * With no partition installed, a socket pays one relaxed atomic load per send and per
//!   receive batch.
//! * Dropping a [`Partition`] heals it (and only it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Whether any partition is installed (the sockets' fast path).
static ANY: AtomicBool = AtomicBool::new(false);
/// An installed partition: its id, one side's ports, the other side's ports.
type Cut = (u64, Vec<u16>, Vec<u16>);
/// Installed partitions.
static CUTS: Mutex<Vec<Cut>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A partition between two sets of ports, in force until dropped or [`Partition::heal`]ed.
#[derive(Debug)]
#[must_use = "dropping a partition heals it"]
pub struct Partition {
    id: u64,
}

impl Partition {
    /// Cuts ports `a` off from ports `b` (both ways) in this process.
    pub fn new(a: &[u16], b: &[u16]) -> Partition {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut cuts = CUTS.lock();
        cuts.push((id, a.to_vec(), b.to_vec()));
        ANY.store(true, Ordering::Release);
        tracing::warn!(?a, ?b, "fault injection: ports partitioned");
        Partition { id }
    }

    /// Heals this partition.
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        let mut cuts = CUTS.lock();
        cuts.retain(|(id, _, _)| *id != self.id);
        ANY.store(!cuts.is_empty(), Ordering::Release);
        tracing::warn!("fault injection: partition healed");
    }
}

/// Whether a datagram between local port `local` and remote port `remote` (either
/// direction) is dropped now.
pub(crate) fn cut(local: u16, remote: u16) -> bool {
    if !ANY.load(Ordering::Relaxed) {
        return false;
    }
    CUTS.lock().iter().any(|(_, a, b)| {
        (a.contains(&local) && b.contains(&remote)) || (b.contains(&local) && a.contains(&remote))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_cuts_both_ways_between_its_sides_only_until_dropped() {
        // Ports no other test of this crate's unit tests uses.
        let p = Partition::new(&[61001], &[61002, 61003]);
        assert!(cut(61001, 61002) && cut(61002, 61001) && cut(61003, 61001));
        assert!(!cut(61002, 61003), "one side talks within itself");
        assert!(!cut(61001, 61004), "a port in neither set");
        let q = Partition::new(&[61004], &[61001]);
        drop(p);
        assert!(!cut(61001, 61002));
        assert!(cut(61004, 61001));
        q.heal();
        assert!(!cut(61004, 61001));
    }
}
