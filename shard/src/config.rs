//! The shard layer's settings, with the reason for each default.

use std::time::Duration;

/// Default number of shards in a cluster: 128. Fixed when the cluster is created and stored
/// (see DESIGN.md "How many shards"): enough to spread load evenly over the ~3–30 nodes a
/// Cairn mesh of 2-core machines runs on (rendezvous over 128 shards × 3 replicas keeps the
/// busiest node within ~1.3× of the mean at 10 nodes), few enough that every node's fixed
/// per-shard cost (ticks, heartbeats, lease renewals: measured by the simulator and bench) stays
/// a small slice of one core.
pub const DEFAULT_SHARDS: u32 = 128;
/// Default replicas per shard (the factor 3): survives any one node's loss.
pub const DEFAULT_REPLICATION: usize = 3;
/// Default Raft tick: 100 ms, TiKV's and etcd's order of magnitude; with the tick counts below
/// a leader is replaced ~1–2 s after it stops, and an idle shard costs a heartbeat every 200 ms.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Default election timeout in ticks (randomized per replica in `[e, 2e)`).
pub const DEFAULT_ELECTION_TICKS: usize = 10;
/// Default heartbeat interval in ticks.
pub const DEFAULT_HEARTBEAT_TICKS: usize = 2;
/// Default bound on the relative clock-rate difference between nodes (0.5 %): NTP-disciplined
/// clocks drift by ppm; this is the margin the lease keeps (see [`ShardConfig::lease`]).
pub const DEFAULT_MAX_CLOCK_DRIFT: f64 = 0.005;
/// Default time a member may be down before its replicas are replaced: 5 minutes, so a
/// restart or a short outage moves no data.
pub const DEFAULT_DOWN_GRACE: Duration = Duration::from_secs(300);
/// Default bound on one Raft entry's batch of proposals: 1 MiB (many write sets per entry,
/// but far below the mesh's frame limit).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
/// Default bound on the bytes of proposals queued for one shard and not yet appended: 8 MiB.
/// Beyond it `propose` fails with `Busy` (back-pressure, DESIGN.md 30).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 << 20;
/// Default number of applied entries kept in the log for lagging followers; older ones are
/// compacted and a follower that far behind catches up by snapshot.
pub const DEFAULT_LOG_KEEP: u64 = 1024;

/// Default bound on leadership transfers a node has in flight to spread leaders
/// ([`ShardConfig::max_leader_transfers`]): 4. A transfer leaves its shard without a serving
/// leader for a round trip or two; a few at a time spread 128 shards in seconds without a
/// burst of elections.
pub const DEFAULT_MAX_LEADER_TRANSFERS: usize = 4;

/// Default shards of each region with shards of its own ([`ShardConfig::regions`]): 8, enough
/// to spread a region's objects over a few members, few enough to leave most shards global.
pub const DEFAULT_REGION_SHARDS: u32 = 8;

/// Settings of a node's shard layer. `shards` and `replication` must be the same on every
/// node of a cluster (they are stored at creation).
#[derive(Clone, Debug, PartialEq)]
pub struct ShardConfig {
    /// Number of shards; keys map to `0..shards`.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: usize,
    /// Raft tick interval.
    pub tick: Duration,
    /// Election timeout in ticks (the minimum of the randomized timeout).
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Bound on clock-rate drift between any two nodes, as a fraction (0.005 = 0.5 %).
    pub max_clock_drift: f64,
    /// A down member keeps its replicas this long before they are replaced.
    pub down_grace: Duration,
    /// Bound on one entry's proposal batch, in bytes.
    pub max_entry_bytes: usize,
    /// Bound on proposals queued per shard, in bytes.
    pub max_pending_bytes: usize,
    /// Applied entries kept for lagging followers.
    pub log_keep: u64,
    /// Ticks between two rebalancing checks of a led shard.
    pub rebalance_ticks: u64,
    /// Leadership transfers toward each shard's preferred leader
    /// ([`leadership`](crate::leadership)) this node may have in flight at once; 0 leaves
    /// leadership where elections put it.
    pub max_leader_transfers: usize,
    /// Regions with shards of their own: objects hinted to one of them live in its shards,
    /// whose replicas stay on that region's members (see
    /// [`placement::object_shard`](crate::placement::object_shard)). Each gets
    /// [`region_shards`](Self::region_shards) of the `shards`, the last ones, in list order.
    /// Like `shards`: the same on every node, fixed when the cluster is created.
    pub regions: Vec<String>,
    /// Shards of each region in [`regions`](Self::regions).
    pub region_shards: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            shards: DEFAULT_SHARDS,
            replication: DEFAULT_REPLICATION,
            tick: DEFAULT_TICK,
            election_ticks: DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: DEFAULT_HEARTBEAT_TICKS,
            max_clock_drift: DEFAULT_MAX_CLOCK_DRIFT,
            down_grace: DEFAULT_DOWN_GRACE,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            log_keep: DEFAULT_LOG_KEEP,
            rebalance_ticks: 10,
            max_leader_transfers: DEFAULT_MAX_LEADER_TRANSFERS,
            regions: Vec::new(),
            region_shards: DEFAULT_REGION_SHARDS,
        }
    }
}

impl ShardConfig {
    /// How long a leader may acknowledge after the *send* time of a heartbeat round that a
    /// quorum answered.
    ///
    /// Why it is safe: a follower that answered reset its election clock on receipt (after
    /// the send) and, with check-quorum, grants no vote and starts no election until
    /// `election_ticks` of its own ticks have passed — at least `election_ticks - 1` tick
    /// intervals of its clock, since its first tick may come right after the receipt. Every
    /// quorum that could elect a successor contains such a follower. Measured on the leader's
    /// clock, which may run slow while the follower's runs fast, that is at least
    /// `(election_ticks - 1) · tick · (1 - drift) / (1 + drift)`.
    pub fn lease(&self) -> Duration {
        let ticks = self.election_ticks.saturating_sub(1) as f64;
        let secs = ticks * self.tick.as_secs_f64() * (1.0 - self.max_clock_drift)
            / (1.0 + self.max_clock_drift);
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("shards must be at least 1".into());
        }
        if self.replication == 0 {
            return Err("replication must be at least 1".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks + 1 {
            return Err("election_ticks must exceed heartbeat_ticks + 1 (and both ≥ 1)".into());
        }
        if self.tick.is_zero() {
            return Err("tick must be positive".into());
        }
        if !(0.0..0.5).contains(&self.max_clock_drift) {
            return Err("max_clock_drift must be in [0, 0.5)".into());
        }
        if self.max_entry_bytes == 0 || self.max_pending_bytes < self.max_entry_bytes {
            return Err("max_pending_bytes must be ≥ max_entry_bytes > 0".into());
        }
        let regional = u64::from(self.region_shards) * self.regions.len() as u64;
        if !self.regions.is_empty()
            && (self.region_shards == 0 || regional >= u64::from(self.shards))
        {
            return Err(format!(
                "{} regions × {} region_shards must be ≥ 1 and leave a global shard of {}",
                self.regions.len(),
                self.region_shards,
                self.shards
            ));
        }
        for (i, r) in self.regions.iter().enumerate() {
            if r.is_empty() || self.regions[..i].contains(r) {
                return Err(format!("region {r:?} is empty or listed twice"));
            }
        }
        Ok(())
    }

    /// Shards that hold objects without a location hint (or hinted to a region without
    /// shards of its own): `0..global_shards()`.
    pub fn global_shards(&self) -> u32 {
        self.shards
            .saturating_sub(self.region_shards.saturating_mul(self.regions.len() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_shorter_than_a_followers_vote_refusal_with_drift() {
        let c = ShardConfig::default();
        let refusal = c.tick * (c.election_ticks as u32 - 1);
        assert!(c.lease() < refusal);
        // Slow leader clock vs fast follower clock: lease in real time stays inside refusal.
        let real_lease = c.lease().as_secs_f64() / (1.0 - c.max_clock_drift);
        let real_refusal = refusal.as_secs_f64() / (1.0 + c.max_clock_drift);
        assert!(real_lease <= real_refusal + 1e-9);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_settings_are_rejected() {
        let c = ShardConfig {
            election_ticks: 2,
            heartbeat_ticks: 2,
            ..ShardConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(ShardConfig {
            shards: 0,
            ..ShardConfig::default()
        }
        .validate()
        .is_err());
        let regions = |names: &[&str], region_shards| ShardConfig {
            shards: 16,
            regions: names.iter().map(|r| (*r).to_owned()).collect(),
            region_shards,
            ..ShardConfig::default()
        };
        assert!(regions(&["eu", "us"], 4).validate().is_ok());
        assert_eq!(regions(&["eu", "us"], 4).global_shards(), 8);
        assert!(regions(&["eu", "eu"], 4).validate().is_err());
        assert!(
            regions(&["eu", "us"], 8).validate().is_err(),
            "no global shard left"
        );
        assert!(regions(&["eu"], 0).validate().is_err());
    }
}
