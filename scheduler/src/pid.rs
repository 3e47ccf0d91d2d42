//! Node and process identifiers.
//!
//! A [`NodeId`] is the stable hash of the node's name ([`NodeId::of_name`]): the same on
//! every start and on every machine, so a restarted node is the same node (placement does
//! not move) and names, not ids, are what certificates bind.
//!
//! A [`Pid`] names one process of one *life* of one node. Its `creation` is the node's
//! start counter (persisted in its data dir and raised on every start), so a pid kept from
//! an earlier life never reaches a process of the new one, though the node id is the same.
//! Its `id` packs the process-table slot (low 32 bits) and that slot's generation (high 32
//! bits), so a pid kept after its process exited never reaches a process that later
//! reuses the slot.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a node of the mesh: [`NodeId::of_name`] of its name. A runtime built without
/// one is node 0.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of the node named `name`: its [`stable_hash`](crate::stable_hash) (FNV-1a
    /// finished with `fmix64`), never 0. Stable across restarts, builds and machines, so
    /// every member computes the same id from the name in a peer's certificate.
    pub fn of_name(name: &str) -> NodeId {
        use crate::stable_hash::{fmix64, fnv1a, FNV_OFFSET};
        NodeId(fmix64(fnv1a(FNV_OFFSET, name.as_bytes())).max(1))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A process identifier: the node it lives on, that node's life (`creation`), and a slot
/// index and generation.
///
/// Displays like Erlang's pids: `<node.index.generation>`; the creation shows after a `@`
/// when it is not 0 (`<node.index.generation@creation>`), so two lives' pids read apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    node: NodeId,
    creation: u32,
    id: u64,
}

impl Pid {
    pub(crate) fn new(node: NodeId, creation: u32, index: u32, generation: u32) -> Self {
        Pid {
            node,
            creation,
            id: (u64::from(generation) << 32) | u64::from(index),
        }
    }

    /// Rebuilds a pid from its parts (for codecs; a made-up pid simply names no process).
    pub fn from_parts(node: NodeId, creation: u32, id: u64) -> Self {
        Pid { node, creation, id }
    }

    /// The node this process lives on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The life of its node it was spawned in (the node's start counter).
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// The packed slot index and generation.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn index(&self) -> u32 {
        self.id as u32
    }

    pub(crate) fn generation(&self) -> u32 {
        (self.id >> 32) as u32
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}", self.node.0, self.index(), self.generation())?;
        if self.creation != 0 {
            write!(f, "@{}", self.creation)?;
        }
        f.write_str(">")
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_displays_like_erlang_and_round_trips_its_parts() {
        let pid = Pid::new(NodeId(3), 0, 17, 2);
        assert_eq!(pid.to_string(), "<3.17.2>");
        assert_eq!(Pid::from_parts(pid.node(), pid.creation(), pid.id()), pid);
        assert_eq!(pid.index(), 17);
        assert_eq!(pid.generation(), 2);
        let later = Pid::new(NodeId(3), 4, 17, 2);
        assert_eq!(later.to_string(), "<3.17.2@4>");
        assert_eq!(later.creation(), 4);
    }

    #[test]
    fn a_pid_of_another_life_is_another_pid() {
        let old = Pid::new(NodeId(3), 1, 17, 2);
        let new = Pid::new(NodeId(3), 2, 17, 2);
        assert_ne!(old, new);
        assert_eq!(old.node(), new.node());
    }

    /// Every node computes a peer's id from its name: these values must never change.
    #[test]
    fn node_ids_are_the_stable_hash_of_the_name() {
        use crate::stable_hash::{fmix64, fnv1a, FNV_OFFSET};
        assert_eq!(NodeId::of_name("n1").0, fmix64(fnv1a(FNV_OFFSET, b"n1")));
        assert_eq!(NodeId::of_name("n1"), NodeId::of_name("n1"));
        assert_ne!(NodeId::of_name("n1"), NodeId::of_name("n2"));
        assert_ne!(NodeId::of_name(""), NodeId(0));
        assert_eq!(NodeId::of_name("n1").0, 0xf5c0_8557_ac1e_5104_u64);
    }
}
