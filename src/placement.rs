//! Object placement: which node owns the object `(class, key)`.
//!
//! Pure functions, no I/O: the caller passes the live nodes it knows ([`Candidate`]s) and
//! gets the owner back. Every node that sees the same candidates computes the same owner,
//! so a message routed from any node reaches one activation: the owner's.
//!
//! ## Rendezvous hashing
//! Highest-random-weight hashing (Thaler & Ravishankar, 1996): each candidate node gets the
//! score `mix(hash(class, key), node)` and the highest score owns the key. Adding a node
//! moves only the keys it now wins (about 1/n of them), removing one moves only the keys it
//! owned; no ring, no virtual nodes, no state between calls. Cost: one hash per candidate
//! per lookup, fine for meshes of up to a few hundred nodes.
//!
//! ## A stable hash
//! The owner must be the same on every node and across restarts and builds, so std's
//! `DefaultHasher` (SipHash with per-process random keys in `RandomState`, and an algorithm
//! std does not promise to keep) is out. Keys are hashed with 64-bit FNV-1a — `class`, a
//! `0xff` separator (never in UTF-8, so `("ab", "c")` and `("a", "bc")` differ), `key` —
//! and each score is finished with MurmurHash3's `fmix64` avalanche, which FNV alone lacks.
//!
//! ## Location hints
//! With a region hint only candidates whose region equals it compete; if none does,
//! placement fails with [`PlacementError::NoNodeInRegion`] rather than silently placing
//! the object elsewhere.

use cairn_scheduler::stable_hash::{fmix64, fnv1a, FNV_OFFSET};
use cairn_scheduler::NodeId;

/// A live node that may own objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub node: NodeId,
    /// Its region label (`eu`, `us-west`, ...), if it has one.
    pub region: Option<String>,
}

impl Candidate {
    /// A candidate node.
    pub fn new(node: NodeId, region: Option<&str>) -> Candidate {
        Candidate {
            node,
            region: region.map(str::to_owned),
        }
    }
}

/// Why no owner could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// There is no live node that hosts objects.
    #[error("no live node hosts objects")]
    NoNodes,
    /// No live node is in the hinted region.
    #[error("no live node in region {0:?}")]
    NoNodeInRegion(String),
}

/// The stable hash of an object's address; the same on every node, build and run.
pub fn key_hash(class: &str, key: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, class.as_bytes());
    let h = fnv1a(h, &[0xff]);
    fnv1a(h, key.as_bytes())
}

/// The rendezvous score of `node` for a key whose [`key_hash`] is `key_hash`.
pub fn score(key_hash: u64, node: NodeId) -> u64 {
    // The node id is mixed on its own first so that ids that differ in few bits (1, 2, 3)
    // still give unrelated scores.
    fmix64(key_hash ^ fmix64(node.0 ^ 0x9e37_79b9_7f4a_7c15))
}

/// The owner of `(class, key)` among `nodes`, restricted to `region` when given. Ties (equal
/// scores, practically never) go to the lower node id, so the choice stays deterministic.
pub fn owner(
    class: &str,
    key: &str,
    nodes: &[Candidate],
    region: Option<&str>,
) -> Result<NodeId, PlacementError> {
    let h = key_hash(class, key);
    nodes
        .iter()
        .filter(|c| region.is_none() || c.region.as_deref() == region)
        .map(|c| (score(h, c.node), std::cmp::Reverse(c.node)))
        .max()
        .map(|(_, std::cmp::Reverse(node))| node)
        .ok_or_else(|| match region {
            Some(r) => PlacementError::NoNodeInRegion(r.to_owned()),
            None => PlacementError::NoNodes,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEYS: usize = 10_000;

    fn nodes(ids: &[u64]) -> Vec<Candidate> {
        ids.iter()
            .map(|&id| Candidate::new(NodeId(id), None))
            .collect()
    }

    fn owners(nodes: &[Candidate]) -> Vec<NodeId> {
        (0..KEYS)
            .map(|i| owner("counter", &format!("key-{i}"), nodes, None).unwrap())
            .collect()
    }

    #[test]
    fn keys_spread_evenly_over_three_nodes() {
        // Random-looking ids as a mesh node gets, and small consecutive ones.
        for ids in [
            [
                0x5eed_1234_9876_abcd,
                0x0123_4567_89ab_cdef,
                0xfedc_ba98_7654_3210,
            ],
            [1, 2, 3],
        ] {
            let mut counts: HashMap<NodeId, usize> = HashMap::new();
            for o in owners(&nodes(&ids)) {
                *counts.entry(o).or_default() += 1;
            }
            let even = KEYS as f64 / 3.0;
            assert_eq!(counts.len(), 3, "{counts:?}");
            for (node, n) in &counts {
                let off = (*n as f64 - even).abs() / even;
                assert!(
                    off <= 0.15,
                    "node {node} owns {n} of {KEYS} keys ({counts:?})"
                );
            }
        }
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let a = nodes(&[7, 42, 1_000_003]);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(owners(&a), owners(&b));
        // Stable across builds and runs: FNV-1a's published test vector, then a pinned value.
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
        assert_eq!(key_hash("", ""), fnv1a(FNV_OFFSET, &[0xff]));
    }

    #[test]
    fn adding_or_removing_a_node_moves_about_a_fourth_of_the_keys() {
        let three = nodes(&[11, 22, 33]);
        let four = nodes(&[11, 22, 33, 44]);
        let before = owners(&three);
        let after = owners(&four);
        let moved: Vec<usize> = (0..KEYS).filter(|&i| before[i] != after[i]).collect();
        // Every moved key moved to the new node, and about 1/4 of the keys moved.
        assert!(moved.iter().all(|&i| after[i] == NodeId(44)));
        let share = moved.len() as f64 / KEYS as f64;
        assert!((0.20..=0.30).contains(&share), "{share}");
        // Removing node 22 moves exactly the keys it owned.
        let without = owners(&nodes(&[11, 33, 44]));
        for i in 0..KEYS {
            if after[i] == NodeId(22) {
                assert_ne!(without[i], NodeId(22));
            } else {
                assert_eq!(
                    without[i], after[i],
                    "key {i} moved though its owner stayed"
                );
            }
        }
    }

    #[test]
    fn a_region_hint_restricts_the_owners() {
        let mesh = vec![
            Candidate::new(NodeId(1), Some("eu")),
            Candidate::new(NodeId(2), Some("us")),
            Candidate::new(NodeId(3), Some("eu")),
            Candidate::new(NodeId(4), None),
        ];
        let mut eu_owners = std::collections::HashSet::new();
        for i in 0..1_000 {
            let key = format!("k{i}");
            let eu = owner("room", &key, &mesh, Some("eu")).unwrap();
            assert!(eu == NodeId(1) || eu == NodeId(3), "{eu}");
            eu_owners.insert(eu);
            assert_eq!(owner("room", &key, &mesh, Some("us")).unwrap(), NodeId(2));
        }
        assert_eq!(eu_owners.len(), 2, "both eu nodes own some keys");
        assert_eq!(
            owner("room", "k", &mesh, Some("ap")),
            Err(PlacementError::NoNodeInRegion("ap".into()))
        );
        assert_eq!(owner("room", "k", &[], None), Err(PlacementError::NoNodes));
    }
}
