//! Leader balancing: a shard's leader hands leadership to the shard's preferred leader
//! ([`crate::leadership`]), TiKV/PD style, so that each node leads its share of the shards.
//!
//! Once per election timeout of a led shard, halfway between two of raft-rs's check-quorum
//! rounds (each resets every peer's `recent_active`, so a look right after one sees no peer
//! active), the leader transfers leadership (raft-rs `transfer_leader`) to the preferred leader
//! only if all of these hold:
//! * this node serves the shard (leader, lease, own-term entry applied), and no
//!   configuration change is pending;
//! * the preferred leader is another node, a *voter* (not a learner), `Up` (it stays
//!   preferred for a short lead grace while down, see [`crate::leadership`]; it is waited
//!   for then), recently active, not being sent a snapshot, and has acknowledged everything
//!   committed (raft-rs then sends it the rest and `MsgTimeoutNow` once it has all of it);
//! * hysteresis: the shard's preferred leader has not changed for
//!   [`STABLE_ELECTIONS`] election timeouts, and this node has led the shard for
//!   [`HOLD_ELECTIONS`] election timeouts (a node that just received a shard never hands it
//!   on at once, so two nodes whose membership views disagree cannot bounce it quickly);
//! * rate limit: fewer than [`ShardConfig::max_leader_transfers`] transfers of this node are
//!   in flight.
//!
//! # Safety (one node acknowledges)
//! A transfer starts as every hand-over does (`handing_over`): the lease is dropped *before*
//! any message of the round leaves (the driver publishes the lease board first), no lease is
//! renewed in this term again, and proposals are refused (`NotLeader`; raft-rs drops them
//! too while `lead_transferee` is set). This matters because the transferee campaigns with
//! the transfer context, and voters grant that vote even while they back our lease. The
//! serving change reports `Stopped`, so the object layer deactivates the shard's objects and
//! routes their queued mail on, as on any deposition.
//!
//! **Abort.** A transfer not completed within one election timeout, or dropped by raft-rs
//! (at the leader's next check-quorum round), is aborted by stepping
//! down (follower in the same term, no leader). Staying leader and renewing the lease would
//! not be safe: the `MsgTimeoutNow` may still be in the network, and would elect the
//! transferee later against our new lease. Stepping down makes the next leader's term
//! higher than the one that message carries.

use std::collections::BTreeMap;

use cairn_scheduler::NodeId;
use raft::{ProgressState, StateRole};

use super::{redraw_election_timeout, MultiRaft};
use crate::leadership::{candidates, preferred_leaders, LEAD_GRACE_ELECTIONS};
use crate::placement::shard_region;
use crate::placement::Liveness;
use crate::types::ShardId;

/// Election timeouts a node must have led a shard before it hands it to another.
pub(super) const HOLD_ELECTIONS: u64 = 5;
/// Election timeouts a shard's preferred leader must have stayed the same.
pub(super) const STABLE_ELECTIONS: u64 = 2;

/// The node's leader-balancing state (see the module docs).
#[derive(Debug, Default)]
pub(super) struct LeaderBalance {
    /// The preferred leader of every shard, as last computed.
    preferred: Vec<Option<NodeId>>,
    /// The tick count it was computed at.
    computed_at: Option<u64>,
    /// Per shard: the tick count since which its preferred leader is what it is.
    stable_since: Vec<u64>,
    /// Shards this node leads: (term, tick count it first led in that term).
    led_since: BTreeMap<ShardId, (u64, u64)>,
    /// Transfers in flight: shard → (term, tick count started).
    transfers: BTreeMap<ShardId, (u64, u64)>,
    /// Transfers started and aborted since the start.
    started: u64,
    aborted: u64,
}

impl MultiRaft {
    /// Leader balancing's work on every tick: note when each led term began, forget
    /// transfers that completed, and abort (step down from) those older than an election
    /// timeout.
    pub(super) fn leader_balance_tick(&mut self) {
        let ticks = self.ticks;
        let e = self.cfg.election_ticks as u64;
        let lb = &mut self.leader_balance;
        let mut led = BTreeMap::new();
        for (&sid, r) in &self.replicas {
            let raft = &r.raw.raft;
            if raft.state == StateRole::Leader {
                let since = match lb.led_since.get(&sid) {
                    Some(&(t, since)) if t == raft.term => since,
                    _ => ticks,
                };
                led.insert(sid, (raft.term, since));
            }
        }
        lb.led_since = led;
        let mut finished = Vec::new();
        for (&sid, &(term, started)) in &lb.transfers {
            let Some(r) = self.replicas.get_mut(&sid) else {
                finished.push(sid);
                continue;
            };
            if r.raw.raft.term != term || r.raw.raft.state != StateRole::Leader {
                let (t, leader) = (r.raw.raft.term, r.raw.raft.leader_id);
                tracing::debug!(shard = %sid, term = t, leader, waited = ticks - started, "leadership transfer done");
                finished.push(sid);
            } else if ticks - started >= e || r.raw.raft.lead_transferee.is_none() {
                // raft-rs itself drops a transfer at the leader's next check-quorum round.
                tracing::info!(shard = %sid, term, "leadership transfer timed out; stepping down");
                r.raw.raft.become_follower(term, raft::INVALID_ID);
                redraw_election_timeout(&mut self.rng, &mut r.raw);
                lb.aborted += 1;
                finished.push(sid);
            }
        }
        for sid in finished {
            lb.transfers.remove(&sid);
        }
    }

    /// Recomputes every shard's preferred leader, once per tick at most.
    fn refresh_preferred(&mut self) {
        if self.leader_balance.computed_at == Some(self.ticks) {
            return;
        }
        let lead_grace = (self.cfg.tick * self.cfg.election_ticks as u32 * LEAD_GRACE_ELECTIONS)
            .min(self.cfg.down_grace);
        let cands: Vec<Vec<NodeId>> = (0..self.cfg.shards)
            .map(|s| {
                let sid = ShardId(s);
                let region = self
                    .regions
                    .get(&sid)
                    .map(String::as_str)
                    .or_else(|| shard_region(sid, &self.cfg));
                candidates(
                    sid,
                    &self.members,
                    self.cfg.replication,
                    region,
                    self.now,
                    (self.cfg.down_grace, lead_grace),
                )
            })
            .collect();
        let preferred = preferred_leaders(&cands);
        let lb = &mut self.leader_balance;
        lb.preferred.resize(preferred.len(), None);
        lb.stable_since.resize(preferred.len(), self.ticks);
        for (i, p) in preferred.into_iter().enumerate() {
            if lb.preferred[i] != p {
                lb.preferred[i] = p;
                lb.stable_since[i] = self.ticks;
            }
        }
        lb.computed_at = Some(self.ticks);
    }

    /// Hands `sid`'s leadership to its preferred leader if every condition of the module
    /// docs holds.
    pub(super) fn balance_leader(&mut self, sid: ShardId) {
        let max = self.cfg.max_leader_transfers;
        if max == 0 || self.members.is_empty() {
            return;
        }
        self.refresh_preferred();
        let Some(to) = self.preferred_leader(sid) else {
            return;
        };
        let led = self
            .replicas
            .get(&sid)
            .is_some_and(|r| r.raw.raft.state == StateRole::Leader);
        if to == self.me || !led {
            return;
        }
        if let Err(why) = self.try_transfer(sid, to) {
            tracing::debug!(shard = %sid, to = %to, why, "leadership not handed over now");
        }
    }

    /// Starts the transfer of `sid` (led here) to `to`, or says which condition of the
    /// module docs does not hold.
    fn try_transfer(&mut self, sid: ShardId, to: NodeId) -> Result<(), &'static str> {
        let (ticks, now) = (self.ticks, self.now);
        let e = self.cfg.election_ticks as u64;
        let lb = &mut self.leader_balance;
        if lb.transfers.len() >= self.cfg.max_leader_transfers {
            return Err("transfers in flight at the limit");
        }
        if ticks - lb.stable_since[sid.0 as usize] < STABLE_ELECTIONS * e {
            return Err("preference not stable yet");
        }
        let r = self.replicas.get_mut(&sid).ok_or("no replica")?;
        let term = r.raw.raft.term;
        let held = lb
            .led_since
            .get(&sid)
            .is_some_and(|&(t, since)| t == term && ticks - since >= HOLD_ELECTIONS * e);
        if !held {
            return Err("not led long enough in this term");
        }
        if !Self::replica_serving(r, now) {
            return Err("not serving");
        }
        if r.raw.raft.has_pending_conf() {
            return Err("configuration change pending");
        }
        let raft = &r.raw.raft;
        // A preferred member SWIM calls down (a flap, within the lead grace) is waited for.
        let up = self
            .members
            .iter()
            .any(|m| m.id == to && m.liveness == Liveness::Up);
        if !up {
            return Err("preferred leader not up");
        }
        if !raft.prs().conf().voters().contains(to.0) {
            return Err("preferred leader not a voter");
        }
        let committed = raft.raft_log.committed;
        let p = raft.prs().get(to.0).ok_or("no progress")?;
        // Not `Replicate`: raft-rs leaves a voter of an idle shard in `Probe` (it moves
        // only on an append answer), and transfer_leader catches it up itself.
        if p.state == ProgressState::Snapshot {
            return Err("preferred leader being sent a snapshot");
        }
        if !p.recent_active {
            return Err("preferred leader not recently active");
        }
        if p.matched < committed {
            return Err("preferred leader behind the commit index");
        }
        tracing::debug!(shard = %sid, to = %to, term, "handing leadership to the preferred leader");
        r.handing_over = Some((term, ticks));
        r.lease = None;
        r.raw.transfer_leader(to.0);
        lb.transfers.insert(sid, (term, ticks));
        lb.started += 1;
        Ok(())
    }

    /// Leadership transfers toward preferred leaders this node started, and how many of
    /// them it aborted (stepped down after an election timeout without a successor).
    pub fn leader_transfers(&self) -> (u64, u64) {
        (self.leader_balance.started, self.leader_balance.aborted)
    }

    /// The preferred leader of `shard` as this node last computed it (see
    /// [`crate::leadership`]); `None` before the first computation or without candidates.
    pub fn preferred_leader(&self, shard: ShardId) -> Option<NodeId> {
        self.leader_balance
            .preferred
            .get(shard.0 as usize)
            .copied()
            .flatten()
    }
}
