//! Pure rebalancing: the next single configuration change that moves a shard's replica set
//! toward its target ([`target_replicas`](crate::placement::target_replicas)).
//!
//! One change at a time, each a plain (non-joint) Raft change, so any majority of the old
//! configuration intersects any majority of the new one:
//! 1. a learner outside the target is removed;
//! 2. a learner in the target that has caught up is promoted to voter;
//! 3. while a learner is still catching up (by snapshot, then log), nothing else happens;
//! 4. a target member that is not a replica yet is added as a learner;
//! 5. a voter outside the target is removed once the target is fully in place (or the shard
//!    has more voters than the replication factor). If that voter is the leader itself, it
//!    first hands leadership to a caught-up voter of the target; the new leader removes it.
//!
//! A shard never drops its last voter, and never adds a member that is down. A voter is
//! removed (or the leader hands over to be removed) only when **every voter that remains is
//! up**, so the smaller set always has a live majority. The target alone does not say so: a
//! member that left for good, or is down, stays in the target for the replacement grace, and
//! a leader whose lease outlived its quorum can still propose. Without this rule such a
//! leader shrank a shard onto [itself, a departed member] by removing a down voter; the down
//! voter's acknowledgement on its return committed its own removal, and the pair could never
//! elect again (simulator seed 244 with leadership spreading).

use cairn_scheduler::NodeId;

/// One configuration step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a non-voting replica (it catches up by snapshot).
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a replica.
    Remove(NodeId),
    /// Hand leadership over before removing the leader itself.
    TransferLeader(NodeId),
}

/// What the planner needs to know about the shard.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// The leader planning (this node).
    pub me: NodeId,
    /// Current voters.
    pub voters: &'a [u64],
    /// Current learners.
    pub learners: &'a [u64],
    /// Target members, best first.
    pub target: &'a [NodeId],
    /// Replication factor.
    pub replication: usize,
}

/// The next change, if any. `caught_up(id)`: the replica acknowledged entries near the commit
/// index; `up(id)`: the failure detector reports the member up (a learner on a down node
/// would never catch up, and a shard shrunk onto a down voter may never elect again). The
/// planning leader counts as up.
pub fn plan(
    input: &PlanInput<'_>,
    caught_up: impl Fn(u64) -> bool,
    up: impl Fn(u64) -> bool,
) -> Option<Change> {
    let up = |id: u64| id == input.me.0 || up(id);
    // Removing `v` leaves only live voters (hence a live majority of the smaller set).
    let removable = |v: u64| input.voters.iter().all(|&o| o == v || up(o));
    let in_target = |id: u64| input.target.iter().any(|t| t.0 == id);
    if input.target.is_empty() {
        return None;
    }
    let mut learners = input.learners.to_vec();
    learners.sort_unstable();
    if let Some(&l) = learners.iter().find(|&&l| !in_target(l)) {
        return Some(Change::Remove(NodeId(l)));
    }
    if let Some(&l) = learners.iter().find(|&&l| caught_up(l)) {
        return Some(Change::Promote(NodeId(l)));
    }
    if !learners.is_empty() {
        return None;
    }
    if let Some(t) = input
        .target
        .iter()
        .find(|t| !input.voters.contains(&t.0) && up(t.0))
    {
        return Some(Change::AddLearner(*t));
    }
    let all_target_in = input.target.iter().all(|t| input.voters.contains(&t.0));
    if input.voters.len() > input.replication || all_target_in {
        let mut extra: Vec<u64> = input
            .voters
            .iter()
            .copied()
            .filter(|&v| !in_target(v))
            .collect();
        extra.sort_unstable();
        // Remove others before handing leadership away; a down voter is the only one whose
        // removal can leave every other voter up.
        extra.sort_by_key(|&v| v == input.me.0);
        if let Some(&v) = extra.iter().find(|&&v| removable(v)) {
            if input.voters.len() <= 1 {
                return None;
            }
            if v == input.me.0 {
                return input
                    .target
                    .iter()
                    .find(|t| input.voters.contains(&t.0) && t.0 != v && caught_up(t.0))
                    .map(|t| Change::TransferLeader(*t));
            }
            return Some(Change::Remove(NodeId(v)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    /// `me`'s view of a shard of factor 3 with `voters` and `learners`, moving to `target`.
    fn shard<'a>(
        me: u64,
        voters: &'a [u64],
        learners: &'a [u64],
        target: &'a [NodeId],
    ) -> PlanInput<'a> {
        PlanInput {
            me: NodeId(me),
            voters,
            learners,
            target,
            replication: 3,
        }
    }

    fn step(voters: &[u64], learners: &[u64], target: &[u64], me: u64) -> Option<Change> {
        let target = ids(target);
        plan(&shard(me, voters, learners, &target), |_| true, |_| true)
    }

    #[test]
    fn a_join_is_learner_then_promote_then_remove() {
        assert_eq!(
            step(&[1, 2, 3], &[], &[1, 2, 4], 1),
            Some(Change::AddLearner(NodeId(4)))
        );
        assert_eq!(
            step(&[1, 2, 3], &[4], &[1, 2, 4], 1),
            Some(Change::Promote(NodeId(4)))
        );
        assert_eq!(
            step(&[1, 2, 3, 4], &[], &[1, 2, 4], 1),
            Some(Change::Remove(NodeId(3)))
        );
        assert_eq!(step(&[1, 2, 4], &[], &[1, 2, 4], 1), None);
    }

    #[test]
    fn a_lagging_learner_blocks_other_changes() {
        let target = ids(&[1, 2, 4]);
        let p = plan(
            &PlanInput {
                me: NodeId(1),
                voters: &[1, 2, 3],
                learners: &[4],
                target: &target,
                replication: 3,
            },
            |id| id != 4,
            |_| true,
        );
        assert_eq!(p, None);
    }

    #[test]
    fn the_leader_hands_over_before_it_is_removed() {
        assert_eq!(
            step(&[1, 2, 3, 4], &[], &[2, 3, 4], 1),
            Some(Change::TransferLeader(NodeId(2)))
        );
    }

    #[test]
    fn a_bootstrapped_shard_grows_to_the_replication_factor() {
        assert_eq!(
            step(&[1], &[], &[2, 1, 3], 1),
            Some(Change::AddLearner(NodeId(2)))
        );
        assert_eq!(step(&[1], &[], &[1], 1), None);
    }

    /// Seed 244's trajectory: node 0 left for good seconds ago but is still inside the
    /// replacement grace, so it is in the target; node 3 (a voter, down past the grace, about
    /// to come back) and node 1 are not. Removing node 3 would shrink the shard onto
    /// [0, 2]: once node 3's acknowledgement committed it, that pair could never elect again.
    #[test]
    fn a_voter_is_not_removed_onto_a_member_that_is_down() {
        let target = ids(&[0x1000, 0x4dde]);
        let input = shard(0x4dde, &[0x1000, 0x4dde, 0x6ccd], &[], &target);
        let up = |id: u64| id == 0x4dde;
        assert_eq!(plan(&input, |_| true, up), None);
        // Once node 0 is up again the removal is safe: [0, 2] keeps both live.
        let up = |id: u64| id != 0x6ccd;
        assert_eq!(
            plan(&input, |_| true, up),
            Some(Change::Remove(NodeId(0x6ccd)))
        );
    }

    #[test]
    fn a_removal_keeps_a_live_majority_and_every_remaining_voter_live() {
        let target = ids(&[1, 2, 4]);
        let input = shard(1, &[1, 2, 3, 4], &[], &target);
        // Voter 2 of the target is down (restarting): removing 3 would leave [1, 2, 4]
        // one failure from a stall with a member that may not return; wait.
        assert_eq!(plan(&input, |_| true, |id| id != 2), None);
        assert_eq!(
            plan(&input, |_| true, |_| true),
            Some(Change::Remove(NodeId(3)))
        );
        // The voter removed may itself be down: replacing a dead voter is the point.
        assert_eq!(
            plan(&input, |_| true, |id| id != 3),
            Some(Change::Remove(NodeId(3)))
        );
    }

    #[test]
    fn the_leader_does_not_hand_over_to_be_removed_onto_a_down_member() {
        let target = ids(&[2, 3, 4]);
        let input = shard(1, &[1, 2, 3, 4], &[], &target);
        assert_eq!(plan(&input, |_| true, |id| id != 4), None);
        assert_eq!(
            plan(&input, |_| true, |_| true),
            Some(Change::TransferLeader(NodeId(2)))
        );
    }

    #[test]
    fn a_down_member_is_not_added_and_the_last_voter_stays() {
        let target = ids(&[1, 2]);
        let p = plan(&shard(1, &[1], &[], &target), |_| true, |id| id != 2);
        assert_eq!(p, None);
        assert_eq!(
            step(&[5], &[], &[1], 5),
            Some(Change::AddLearner(NodeId(1)))
        );
    }
}
