//! Pure placement: which shard holds an object, and which members should replicate a shard.
//!
//! * [`shard_of`]: `(class, key)` → shard, a stable hash (64-bit FNV-1a of `class`, a `0xff`
//!   separator that never occurs in UTF-8, `key`; finished with MurmurHash3's `fmix64`) modulo
//!   the cluster's shard count. Every node, build and run computes the same shard.
//! * [`target_replicas`]: the members a shard's replica set moves toward — the `replication`
//!   highest rendezvous scores `fmix64(shard_hash ^ fmix64(node))` among *eligible* members:
//!   up, or down for less than the grace period (a restart moves nothing), and in the shard's
//!   region when it has one (a region's objects keep every replica in that region).
//!   Rendezvous hashing moves only the shards a joining member now wins, or a leaving member
//!   held.

use std::time::Duration;

use cairn_scheduler::stable_hash::{fmix64, fnv1a, FNV_OFFSET};
use cairn_scheduler::NodeId;

use crate::config::ShardConfig;
use crate::types::{ShardId, Time};

/// The stable hash of an object's address `(class, key)`.
pub fn key_hash(class: &str, key: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, class.as_bytes());
    let h = fnv1a(h, &[0xff]);
    fmix64(fnv1a(h, key.as_bytes()))
}

/// The shard of `(class, key)` in a cluster of `shards` shards (> 0).
pub fn shard_of(class: &str, key: &str, shards: u32) -> ShardId {
    ShardId((key_hash(class, key) % u64::from(shards.max(1))) as u32)
}

/// The shard of the object `(class, key)` placed with location hint `region`.
///
/// Without a hint, or with a region that has no shards of its own
/// ([`ShardConfig::regions`]), one of the global shards `0..global_shards()`. With a region
/// that has shards, one of that region's: their replicas stay inside the region
/// ([`shard_region`], [`target_replicas`]). The hint is part of the object's identity (the
/// object layer names it `class@region/key`), so a hinted and an unhinted object of one key
/// are two objects, each in exactly one shard.
pub fn object_shard(class: &str, key: &str, region: Option<&str>, cfg: &ShardConfig) -> ShardId {
    let global = cfg.global_shards();
    let own = region.and_then(|r| cfg.regions.iter().position(|x| x == r));
    match own {
        Some(i) if cfg.region_shards > 0 => {
            let within = key_hash(class, key) % u64::from(cfg.region_shards);
            ShardId(global + i as u32 * cfg.region_shards + within as u32)
        }
        _ => shard_of(class, key, global),
    }
}

/// The region `shard` is confined to, if it is one of a region's own shards.
pub fn shard_region(shard: ShardId, cfg: &ShardConfig) -> Option<&str> {
    let offset = shard.0.checked_sub(cfg.global_shards())?;
    let i = (offset / cfg.region_shards.max(1)) as usize;
    cfg.regions.get(i).map(String::as_str)
}

/// Whether a member is reachable, as the failure detector (SWIM) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Alive.
    Up,
    /// Declared down at this time (the node's clock).
    Down {
        /// When it was declared down.
        since: Time,
    },
}

/// A cluster member as the shard layer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its stable id (BOARD decision 2); never 0.
    pub id: NodeId,
    /// Its region, if any.
    pub region: Option<String>,
    /// Up or down.
    pub liveness: Liveness,
}

impl Member {
    /// A live member.
    pub fn up(id: NodeId, region: Option<&str>) -> Member {
        Member {
            id,
            region: region.map(str::to_owned),
            liveness: Liveness::Up,
        }
    }

    /// Whether it still counts as a replica holder at `now`: up, or down for less than `grace`.
    pub fn eligible(&self, now: Time, grace: Duration) -> bool {
        match self.liveness {
            Liveness::Up => true,
            Liveness::Down { since } => now.saturating_sub(since) < grace,
        }
    }
}

/// The rendezvous score of `node` for `shard`.
pub fn score(shard: ShardId, node: NodeId) -> u64 {
    fmix64(
        fmix64(u64::from(shard.0) ^ 0x5348_4152_4453_4831) ^ fmix64(node.0 ^ 0x9e37_79b9_7f4a_7c15),
    )
}

/// The members `shard` should be replicated on: the `replication` best-scoring eligible
/// members (in `region` when given), best first. Fewer if fewer are eligible.
pub fn target_replicas(
    shard: ShardId,
    members: &[Member],
    replication: usize,
    region: Option<&str>,
    now: Time,
    grace: Duration,
) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = members
        .iter()
        .filter(|m| m.id.0 != 0 && m.eligible(now, grace))
        .filter(|m| region.is_none() || m.region.as_deref() == region)
        .map(|m| (score(shard, m.id), m.id))
        .collect();
    // Highest score first; ties (practically never) to the lower id, deterministically.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().take(replication).map(|s| s.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|&i| Member::up(NodeId(i), None)).collect()
    }

    #[test]
    fn shard_of_is_stable_and_spreads_keys() {
        assert_eq!(
            shard_of("counter", "alice", 128),
            shard_of("counter", "alice", 128)
        );
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            counts[shard_of("c", &format!("k{i}"), 16).0 as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_join_moves_only_shards_the_newcomer_wins() {
        let before = members(&[11, 22, 33, 44]);
        let mut after = before.clone();
        after.push(Member::up(NodeId(55), None));
        let g = Duration::from_secs(60);
        for s in 0..128 {
            let a = target_replicas(ShardId(s), &before, 3, None, Time::ZERO, g);
            let b = target_replicas(ShardId(s), &after, 3, None, Time::ZERO, g);
            let kept: Vec<_> = a.iter().filter(|n| b.contains(n)).collect();
            assert!(kept.len() >= 2, "shard {s}: {a:?} -> {b:?}");
            if !b.contains(&NodeId(55)) {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn a_member_down_less_than_the_grace_keeps_its_replicas() {
        let mut ms = members(&[1, 2, 3, 4]);
        let g = Duration::from_secs(60);
        let before: Vec<_> = (0..64)
            .map(|s| target_replicas(ShardId(s), &ms, 3, None, Time::ZERO, g))
            .collect();
        ms[0].liveness = Liveness::Down {
            since: Duration::from_secs(10),
        };
        for s in 0..64u32 {
            let t = target_replicas(ShardId(s), &ms, 3, None, Duration::from_secs(69), g);
            assert_eq!(t, before[s as usize]);
            let t = target_replicas(ShardId(s), &ms, 3, None, Duration::from_secs(70), g);
            assert!(!t.contains(&NodeId(1)));
        }
    }

    #[test]
    fn a_hinted_object_of_a_region_with_shards_lives_in_that_regions_shards() {
        let cfg = ShardConfig {
            shards: 16,
            regions: vec!["eu".into(), "us".into()],
            region_shards: 4,
            ..ShardConfig::default()
        };
        for i in 0..200 {
            let key = format!("k{i}");
            let plain = object_shard("c", &key, None, &cfg);
            assert!(plain.0 < 8 && shard_region(plain, &cfg).is_none());
            let eu = object_shard("c", &key, Some("eu"), &cfg);
            assert!((8..12).contains(&eu.0), "{eu}");
            assert_eq!(shard_region(eu, &cfg), Some("eu"));
            let us = object_shard("c", &key, Some("us"), &cfg);
            assert_eq!(shard_region(us, &cfg), Some("us"));
            // A region without shards of its own: the global shards.
            assert_eq!(object_shard("c", &key, Some("mars"), &cfg), plain);
        }
    }

    #[test]
    fn a_regional_shard_stays_in_its_region() {
        let ms = vec![
            Member::up(NodeId(1), Some("eu")),
            Member::up(NodeId(2), Some("us")),
            Member::up(NodeId(3), Some("eu")),
        ];
        for s in 0..32 {
            let t = target_replicas(ShardId(s), &ms, 3, Some("eu"), Time::ZERO, Duration::ZERO);
            assert_eq!(t.len(), 2);
            assert!(!t.contains(&NodeId(2)));
        }
    }
}
