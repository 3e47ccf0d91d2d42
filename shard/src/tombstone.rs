//! Telling a replica that was removed while it was cut off: "not a member as of index N".
//!
//! A replica removed from its shard while it could not hear the leader never applies its
//! removal: the leader stops sending to it once the removal applied. It keeps its state,
//! campaigns (pre-vote) forever and its node knows no leader for the shard. TiKV answers a
//! stale peer with a tombstone message; we do the same, with a rule that one hostile member
//! cannot use to strip replicas.
//!
//! # The rules
//! * **Reply.** An initialized replica that receives a Raft message for its shard from a
//!   node outside its applied configuration (voters and learners) answers with
//!   [`NotMember`]`{ index }`, `index` being its applied index: "the configuration committed
//!   as of `index` does not hold you". It still steps the message as before (nothing else
//!   changes for Raft). At most one reply per (shard, node) is queued per round.
//! * **Accept.** A replica counts a claim only if it is initialized, not leading, the
//!   claimant is one of its *voters* (as it knows them; never itself), `index` is above its
//!   own applied index (it has not applied that far, so it cannot know better), and its log
//!   holds no configuration change after `index` (one that may add it back: the claim says
//!   nothing about it). It destroys itself once such claims come from a **majority of its
//!   voters** (at most all voters but itself: a 2-voter configuration needs the other one),
//!   each from a distinct claimant.
//!
//! # Why this is safe
//! An honest claimant applies entries in order, so its configuration at its applied index
//! is the committed configuration as of that index: the claim is true. If the replica was
//! added back later, it is a learner first (rebalancing adds learners and promotes only those
//! that acknowledged being caught up), and a learner that acknowledged anything holds the
//! re-adding entry in its log, so no claim older than that entry counts. A replica that
//! destroys itself is recreated empty by the next message of a leader that wants it, and an
//! empty replica never votes (see `core`). A single hostile member can forge one claim; a
//! majority of the replica's voters cannot all be that member (except in a 2-voter
//! configuration, where the other voter alone could already make it apply any entry).
//!
//! # What it does not cover
//! A stale replica whose old voters have all left the shard (or are down) hears no majority
//! and keeps its state; it cannot win an election, and the router does not wait on it (it
//! guesses a likely replica on a first hop, and parks messages per shard).

use std::collections::BTreeMap;

use cairn_scheduler::NodeId;
use serde::{Deserialize, Serialize};

use crate::types::ShardId;
use crate::wire::WireBatch;

/// "You are not a member of `shard` as of my applied `index`": see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotMember {
    /// The shard.
    pub shard: ShardId,
    /// The replica told (node id).
    pub to: u64,
    /// The claimant (node id); must be the transport's peer.
    pub from: u64,
    /// The claimant's applied index: its configuration as of there leaves `to` out.
    pub index: u64,
}

/// The tombstone bookkeeping of one node: replies to send, claims heard.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    /// Replies queued for the next round.
    replies: Vec<NotMember>,
    /// Per shard, claimant → highest index it claimed.
    claims: BTreeMap<ShardId, BTreeMap<u64, u64>>,
}

/// What the accepting replica knows of itself (see [`removal_confirmed`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Receiver<'a> {
    /// This node.
    pub me: u64,
    /// Its voters (applied configuration).
    pub voters: &'a [u64],
    /// Its applied index.
    pub applied: u64,
    /// The highest index of a configuration change in its log not applied yet, if any.
    pub unapplied_conf: Option<u64>,
    /// Whether it leads the shard.
    pub leading: bool,
    /// Whether it has a configuration at all.
    pub initialized: bool,
}

impl Tombstones {
    /// Queues a reply to `from`'s message for `shard` if `from` is outside `conf` (the
    /// replier's voters and learners).
    pub(crate) fn reply_if_stranger(
        &mut self,
        me: NodeId,
        shard: ShardId,
        from: NodeId,
        conf: (&[u64], &[u64]),
        applied: u64,
    ) {
        let (voters, learners) = conf;
        if voters.is_empty() || voters.contains(&from.0) || learners.contains(&from.0) {
            return;
        }
        if self
            .replies
            .iter()
            .any(|r| r.shard == shard && r.to == from.0)
        {
            return;
        }
        tracing::debug!(%shard, to = %from, index = applied, "telling a former replica it is not a member");
        self.replies.push(NotMember {
            shard,
            to: from.0,
            from: me.0,
            index: applied,
        });
    }

    /// Whether replies wait to be sent.
    pub(crate) fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Takes the queued replies.
    pub(crate) fn take_replies(&mut self) -> Vec<NotMember> {
        std::mem::take(&mut self.replies)
    }

    /// Records `claim` (already checked to come from its claimant, for this node) and tells
    /// whether the replica should destroy itself now.
    pub(crate) fn on_claim(&mut self, claim: &NotMember, receiver: Receiver<'_>) -> bool {
        let claims = self.claims.entry(claim.shard).or_default();
        let best = claims.entry(claim.from).or_insert(0);
        *best = (*best).max(claim.index);
        removal_confirmed(receiver, claims)
    }

    /// Forgets the claims about `shard` (its replica is gone).
    pub(crate) fn forget(&mut self, shard: ShardId) {
        self.claims.remove(&shard);
    }
}

/// Adds `replies` to a round's batches, one batch per destination node.
pub(crate) fn add_replies(batches: &mut Vec<(NodeId, WireBatch)>, replies: Vec<NotMember>) {
    for reply in replies {
        let to = NodeId(reply.to);
        match batches.iter_mut().find(|(n, _)| *n == to) {
            Some((_, b)) => b.not_members.push(reply),
            None => batches.push((
                to,
                WireBatch {
                    not_members: vec![reply],
                    ..WireBatch::default()
                },
            )),
        }
    }
}

/// The accept rule of the module doc: whether `claims` (claimant → index) confirm that the
/// receiver was removed.
pub(crate) fn removal_confirmed(r: Receiver<'_>, claims: &BTreeMap<u64, u64>) -> bool {
    if !r.initialized || r.leading {
        return false;
    }
    let others = r.voters.iter().filter(|&&v| v != r.me).count();
    let needed = (r.voters.len() / 2 + 1).min(others);
    if needed == 0 {
        return false;
    }
    let valid = claims
        .iter()
        .filter(|&(&claimant, &index)| {
            claimant != r.me
                && r.voters.contains(&claimant)
                && index > r.applied
                && r.unapplied_conf.is_none_or(|c| c <= index)
        })
        .count();
    valid >= needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(voters: &[u64]) -> Receiver<'_> {
        Receiver {
            me: 3,
            voters,
            applied: 10,
            unapplied_conf: None,
            leading: false,
            initialized: true,
        }
    }

    fn claims(list: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_majority_of_the_old_voters_confirms_a_removal() {
        let v = [1, 2, 3];
        assert!(removal_confirmed(
            receiver(&v),
            &claims(&[(1, 20), (2, 15)])
        ));
        // One voice is not enough: a single (possibly hostile) member cannot strip a replica.
        assert!(!removal_confirmed(receiver(&v), &claims(&[(1, 20)])));
        // Five voters: three of the four others.
        let v5 = [1, 2, 3, 4, 5];
        assert!(!removal_confirmed(
            receiver(&v5),
            &claims(&[(1, 20), (2, 20)])
        ));
        assert!(removal_confirmed(
            receiver(&v5),
            &claims(&[(1, 20), (2, 20), (5, 11)])
        ));
    }

    #[test]
    fn forged_and_stale_claims_are_ignored() {
        let v = [1, 2, 3];
        // A claimant outside the receiver's voters (e.g. the node that replaced it, or a
        // stranger) does not count, nor does the receiver itself.
        assert!(!removal_confirmed(
            receiver(&v),
            &claims(&[(1, 20), (9, 20)])
        ));
        assert!(!removal_confirmed(
            receiver(&v),
            &claims(&[(1, 20), (3, 20)])
        ));
        // A claimant that has not applied past the receiver knows no better.
        assert!(!removal_confirmed(
            receiver(&v),
            &claims(&[(1, 20), (2, 10)])
        ));
        // A configuration change after the claim may have added the receiver back.
        let pending = Receiver {
            unapplied_conf: Some(21),
            ..receiver(&v)
        };
        assert!(!removal_confirmed(pending, &claims(&[(1, 20), (2, 20)])));
        let covered = Receiver {
            unapplied_conf: Some(12),
            ..receiver(&v)
        };
        assert!(removal_confirmed(covered, &claims(&[(1, 20), (2, 20)])));
        // A leader or an empty replica never destroys itself on claims.
        let leading = Receiver {
            leading: true,
            ..receiver(&v)
        };
        assert!(!removal_confirmed(leading, &claims(&[(1, 20), (2, 20)])));
        let empty = Receiver {
            initialized: false,
            ..receiver(&v)
        };
        assert!(!removal_confirmed(empty, &claims(&[(1, 20), (2, 20)])));
        // A configuration of itself alone: nobody can tell it.
        assert!(!removal_confirmed(receiver(&[3]), &claims(&[(1, 20)])));
    }

    #[test]
    fn two_voters_need_the_other_one() {
        assert!(removal_confirmed(receiver(&[1, 3]), &claims(&[(1, 20)])));
        assert!(!removal_confirmed(receiver(&[1, 3]), &claims(&[(2, 20)])));
    }

    #[test]
    fn a_stranger_gets_one_reply_per_round_and_members_none() {
        let mut t = Tombstones::default();
        let conf: (&[u64], &[u64]) = (&[1, 2], &[4]);
        t.reply_if_stranger(NodeId(1), ShardId(0), NodeId(3), conf, 7);
        t.reply_if_stranger(NodeId(1), ShardId(0), NodeId(3), conf, 7);
        t.reply_if_stranger(NodeId(1), ShardId(0), NodeId(2), conf, 7);
        t.reply_if_stranger(NodeId(1), ShardId(0), NodeId(4), conf, 7);
        let replies = t.take_replies();
        assert_eq!(
            replies,
            vec![NotMember {
                shard: ShardId(0),
                to: 3,
                from: 1,
                index: 7
            }]
        );
        // An uninitialized replica (no configuration) claims nothing.
        t.reply_if_stranger(NodeId(1), ShardId(0), NodeId(3), (&[], &[]), 7);
        assert!(!t.has_replies());
    }
}
