//! Pure leader placement: which replica of each shard should lead it, so that leadership —
//! and with it every object activation and every write's proposal, commit and apply work —
//! is spread over the nodes instead of resting wherever elections left it (after bootstrap,
//! the cluster's first node leads every shard).
//!
//! [`preferred_leaders`] takes, per shard, its *candidates*: the members of its target
//! replica set that are up or were declared down less than a *lead grace* ago, in rendezvous
//! order ([`candidates`], built on [`target_replicas`]). The lead grace (the core uses
//! [`LEAD_GRACE_ELECTIONS`] election timeouts, at most the replacement grace) keeps a member
//! that SWIM briefly declares down — a flooded or loaded node does, and rejoins as a new
//! incarnation a second later — from reshuffling every node's preferences: each flap used to
//! move preferences away and back, so leaders chased a moving target and on real nodes never
//! finished spreading. A member down past the lead grace leads nothing, and its shards
//! spread over the others. It gives each shard one candidate, balanced by a
//! bounded-load rendezvous (as "consistent hashing with bounded loads"):
//! 1. every node may be preferred for at most `cap = ⌈shards / nodes⌉` shards, where `nodes`
//!    are the distinct candidates;
//! 2. in shard order, a shard takes its best-scoring candidate still under the cap;
//! 3. a shard whose candidates are all at the cap (possible when candidate sets differ,
//!    e.g. regions) takes its least-loaded candidate, ties to the better score.
//!
//! # Invariants
//! * A pure function of the member ids, regions, liveness and shard count: every node with the
//!   same view computes the same answer, and a restart of the same ids changes nothing.
//! * The preferred leader is always one of the shard's candidates (live, in the target).
//! * When every node is a candidate of every shard (replication ≥ nodes), each node is
//!   preferred for `⌊shards/nodes⌋` or `⌈shards/nodes⌉` shards.
//! * Only the shards whose preferred node left, plus the few the cap then shifts (bounded by
//!   the tests below), change their preferred leader when a node leaves.
//!
//! Acting on it (the current leader hands over, with hysteresis and a rate limit) is the
//! core's job: see `core/leader_balance.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_scheduler::NodeId;

use crate::placement::{target_replicas, Member};
use crate::types::{ShardId, Time};

/// Election timeouts a member may be down and still be preferred to lead (see the module
/// docs): longer than a SWIM flap and its rejoin, short against the replacement grace.
pub const LEAD_GRACE_ELECTIONS: u32 = 10;

/// The leader candidates of one shard: the members of its target replica set
/// ([`target_replicas`], replacement grace `grace`) that are up or down for less than
/// `lead_grace`, best rendezvous score first. A member down longer stays in the target until
/// `grace` (its replicas are kept) but is not preferred to lead. Acting on a preference still
/// needs the member up (the core checks).
pub fn candidates(
    shard: ShardId,
    members: &[Member],
    replication: usize,
    region: Option<&str>,
    now: Time,
    (grace, lead_grace): (Duration, Duration),
) -> Vec<NodeId> {
    target_replicas(shard, members, replication, region, now, grace)
        .into_iter()
        .filter(|id| {
            members
                .iter()
                .any(|m| m.id == *id && m.eligible(now, lead_grace))
        })
        .collect()
}

/// One preferred leader per shard (`None` for a shard without candidates), from each shard's
/// `candidates` in preference order (see the module docs).
pub fn preferred_leaders(candidates: &[Vec<NodeId>]) -> Vec<Option<NodeId>> {
    let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
    for c in candidates {
        for &n in c {
            load.entry(n).or_insert(0);
        }
    }
    if load.is_empty() {
        return vec![None; candidates.len()];
    }
    let with = candidates.iter().filter(|c| !c.is_empty()).count();
    let cap = with.div_ceil(load.len());
    let mut out = vec![None; candidates.len()];
    let mut overflow = Vec::new();
    for (s, c) in candidates.iter().enumerate() {
        if c.is_empty() {
            continue;
        }
        match c.iter().find(|&n| load[n] < cap) {
            Some(&n) => {
                *load.get_mut(&n).expect("listed") += 1;
                out[s] = Some(n);
            }
            None => overflow.push(s),
        }
    }
    for s in overflow {
        let c = &candidates[s];
        let (_, &n) = c
            .iter()
            .enumerate()
            .min_by_key(|&(rank, n)| (load[n], rank))
            .expect("not empty");
        *load.get_mut(&n).expect("listed") += 1;
        out[s] = Some(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::placement::Liveness;

    const SHARDS: u32 = 128;
    const GRACE: Duration = Duration::from_secs(300);
    const LEAD: Duration = Duration::from_secs(10);
    const GRACES: (Duration, Duration) = (GRACE, LEAD);

    fn members(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|&i| Member::up(NodeId(i), None)).collect()
    }

    fn plan_at(ms: &[Member], replication: usize, now: Time) -> Vec<Option<NodeId>> {
        let c: Vec<Vec<NodeId>> = (0..SHARDS)
            .map(|s| candidates(ShardId(s), ms, replication, None, now, GRACES))
            .collect();
        preferred_leaders(&c)
    }

    fn plan(ms: &[Member], replication: usize) -> Vec<Option<NodeId>> {
        plan_at(ms, replication, Time::ZERO)
    }

    fn counts(p: &[Option<NodeId>]) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for n in p.iter().flatten() {
            *m.entry(*n).or_insert(0) += 1;
        }
        m
    }

    /// Node ids as the mesh makes them: random 64-bit numbers (fixed here).
    const IDS: [u64; 5] = [
        0x9f3a_51c2_0b7e_4d11,
        0x1c44_e0d9_a2f3_7b05,
        0x6e81_3b2a_f0c4_99d7,
        0x3d07_c6b1_58e2_a4f9,
        0xb2e9_0f47_1d6c_3a85,
    ];

    #[test]
    fn three_nodes_each_prefer_a_third_of_the_shards() {
        // Several id sets, so the balance is not luck of one draw.
        for k in 0..20u64 {
            let ids: Vec<u64> = IDS[..3]
                .iter()
                .map(|i| i.rotate_left(k as u32 * 7))
                .collect();
            let p = plan(&members(&ids), 3);
            assert!(p.iter().all(Option::is_some));
            let c = counts(&p);
            assert_eq!(c.len(), 3, "{c:?}");
            for (&n, &led) in &c {
                // 128 / 3 = 42.7: 42 or 43 each.
                assert!((42..=43).contains(&led), "{n}: {led} of {c:?}");
            }
        }
    }

    #[test]
    fn the_choice_survives_a_restart_and_any_member_order() {
        let ms = members(&IDS[..3]);
        let mut rev = ms.clone();
        rev.reverse();
        assert_eq!(plan(&ms, 3), plan(&rev, 3));
        // A restart keeps the id; a member briefly down (a SWIM flap: within the lead
        // grace) changes no preference, and back up neither.
        let mut down = ms.clone();
        let since = Duration::from_secs(1);
        down[1].liveness = Liveness::Down { since };
        let before = plan(&ms, 3);
        assert_eq!(
            plan_at(&down, 3, since + LEAD - Duration::from_millis(1)),
            before
        );
        // Down past the lead grace (still inside the replacement grace): it leads nothing,
        // and few shards of the live nodes move.
        let during = plan_at(&down, 3, since + LEAD);
        assert!(during
            .iter()
            .all(|p| p.is_some() && *p != Some(NodeId(IDS[1]))));
        let shifted = (0..SHARDS as usize)
            .filter(|&s| before[s] != Some(NodeId(IDS[1])) && before[s] != during[s])
            .count();
        assert!(shifted <= 8, "{shifted} shards of live nodes moved");
        // No history: back up, every shard prefers what it preferred before.
        assert_eq!(plan(&members(&IDS[..3]), 3), before);
    }

    #[test]
    fn a_leaving_node_moves_its_shards_and_few_others() {
        for (n, replication) in [(4usize, 3usize), (5, 3), (4, 4)] {
            let before = plan(&members(&IDS[..n]), replication);
            let gone = NodeId(IDS[0]);
            let after = plan(&members(&IDS[1..n]), replication);
            let mut others_moved = 0;
            for s in 0..SHARDS as usize {
                assert!(after[s].is_some() && after[s] != Some(gone));
                if before[s] != Some(gone) && before[s] != after[s] {
                    others_moved += 1;
                }
            }
            // The cap grows from ⌈128/n⌉ to ⌈128/(n−1)⌉: a node that inherits the leaver's
            // shards may pass it and shed a few of its own. A handful of 128.
            assert!(
                others_moved <= 8,
                "{n} nodes, factor {replication}: {others_moved} shards moved without need"
            );
            let c = counts(&after);
            let (lo, hi) = (*c.values().min().unwrap(), *c.values().max().unwrap());
            assert!(hi - lo <= 2, "{c:?}");
        }
    }

    #[test]
    fn a_down_member_leads_nothing_and_regions_keep_their_leaders() {
        let mut ms = members(&IDS[..3]);
        ms[2].liveness = Liveness::Down {
            since: Duration::ZERO,
        };
        let p = plan_at(&ms, 3, LEAD);
        assert!(p.iter().all(|n| n.is_some() && *n != Some(NodeId(IDS[2]))));
        let c = counts(&p);
        assert!(c.values().all(|&k| k == 64), "{c:?}");
        // A regional shard's leader is in its region.
        let ms = vec![
            Member::up(NodeId(1), Some("eu")),
            Member::up(NodeId(2), Some("us")),
            Member::up(NodeId(3), Some("eu")),
        ];
        let c: Vec<Vec<NodeId>> = (0..16)
            .map(|s| {
                let region = (s >= 8).then_some("eu");
                candidates(ShardId(s), &ms, 3, region, Time::ZERO, GRACES)
            })
            .collect();
        let p = preferred_leaders(&c);
        assert!(p[8..].iter().all(|n| *n != Some(NodeId(2))), "{p:?}");
        assert_eq!(preferred_leaders(&[vec![], vec![]]), vec![None, None]);
    }
}
