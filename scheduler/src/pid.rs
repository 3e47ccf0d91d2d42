//! Process identifiers.
//!
//! A [`Pid`] names one incarnation of one process on one node. Its `id` packs the
//! process-table slot (low 32 bits) and that slot's generation (high 32 bits), so a
//! pid kept after its process exited never reaches a process that later reuses the slot.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a node of the mesh. A single local runtime is node 0 unless configured.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A process identifier: the node it lives on plus a slot index and generation.
///
/// Displays like Erlang's pids: `<node.index.generation>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    node: NodeId,
    id: u64,
}

impl Pid {
    pub(crate) fn new(node: NodeId, index: u32, generation: u32) -> Self {
        Pid {
            node,
            id: (u64::from(generation) << 32) | u64::from(index),
        }
    }

    /// Rebuilds a pid from its parts (for codecs; a made-up pid simply names no process).
    pub fn from_parts(node: NodeId, id: u64) -> Self {
        Pid { node, id }
    }

    /// The node this process lives on.
    pub fn node(&self) -> NodeId {
        self.node
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
        write!(
            f,
            "<{}.{}.{}>",
            self.node.0,
            self.index(),
            self.generation()
        )
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
        let pid = Pid::new(NodeId(3), 17, 2);
        assert_eq!(pid.to_string(), "<3.17.2>");
        assert_eq!(Pid::from_parts(pid.node(), pid.id()), pid);
        assert_eq!(pid.index(), 17);
        assert_eq!(pid.generation(), 2);
    }
}
