//! The refutation budget: how many *fresh* suspicions one peer may hand this node.
//!
//! A fresh suspicion is one its subject must refute by raising its SWIM incarnation: a
//! `Suspect` update about a known member (or this node) at or above the incarnation this
//! node holds for it, from a sender that is not the subject. The membership screen turns a
//! third party's `Down` into such a suspicion, and caps each jump at
//! [`MAX_INCARNATION_BUMP`](super::screen::MAX_INCARNATION_BUMP); without a budget, a
//! member that kept declaring a victim down would still make the victim's `u16`
//! incarnation climb by up to that much per packet, until it reached the top, where a
//! suspicion can no longer be refuted.
//!
//! Each sender has a token bucket ([`BURST`] tokens, one more every [`REFILL`]), separate
//! for suspicions about this node and about others; a fresh suspicion over budget is left
//! out of the packet and counted as a refused membership update. Honest members rarely
//! suspect anyone, and a dropped relay of a real suspicion only delays it: this node's own
//! probes and timers (`membership`) still decide who is down. The table holds one bucket
//! per sender that spent tokens recently, at most [`MAX_SENDERS`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_scheduler::NodeId;
use foca::{Member, State};

use super::screen::View;
use super::swim::NodeIdentity;

/// Fresh suspicions a sender may hand this node at once.
pub(crate) const BURST: u32 = 4;

/// One more fresh suspicion per this long.
pub(crate) const REFILL: Duration = Duration::from_millis(500);

/// The most senders tracked at once (beyond, a new sender's fresh suspicions are
/// refused until buckets refill).
pub(crate) const MAX_SENDERS: usize = 4096;

/// One sender's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    at: Instant,
}

impl Bucket {
    /// Adds the tokens earned since `at`, up to [`BURST`].
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_nanos() / REFILL.as_nanos();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(BURST);
            self.at = if self.tokens == BURST {
                now
            } else {
                self.at + REFILL * earned
            };
        }
    }
}

/// Token buckets by sender (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    buckets: HashMap<(NodeId, bool), Bucket>,
}

impl Budget {
    /// Spends one of `sender`'s tokens at `now` for a fresh suspicion (`about_me`: of this
    /// node); false when it has none left.
    pub(crate) fn take(&mut self, sender: NodeId, about_me: bool, now: Instant) -> bool {
        let key = (sender, about_me);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_SENDERS {
            // Full buckets are as good as none.
            self.buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST
            });
            if self.buckets.len() >= MAX_SENDERS {
                return false;
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        bucket.refill(now);
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }
}

/// Whether `update` from `sender` is a fresh suspicion (see the module doc), and whether
/// it is about this node.
pub(crate) fn fresh(
    sender: NodeId,
    update: &Member<NodeIdentity>,
    view: &View<'_>,
) -> Option<bool> {
    let node = update.id().node;
    if update.state() != State::Suspect || node == sender {
        return None;
    }
    if node == view.me.node {
        return (update.id() == view.me && update.incarnation() >= view.my_incarnation)
            .then_some(true);
    }
    let known = view.known.get(&node)?;
    let fresh = known.id() == update.id()
        && (update.incarnation() > known.incarnation()
            || (update.incarnation() == known.incarnation() && known.state() == State::Alive));
    fresh.then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeIdentity {
        NodeIdentity {
            node: NodeId(n),
            name: format!("node-{n}"),
            addr: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(),
            region: None,
            incarnation: 100,
            epoch: 0,
        }
    }

    #[test]
    fn a_sender_gets_a_burst_then_one_per_refill() {
        let mut budget = Budget::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert!(budget.take(NodeId(9), false, t0));
        }
        assert!(!budget.take(NodeId(9), false, t0));
        // Another sender, and suspicions of this node, have buckets of their own.
        assert!(budget.take(NodeId(8), false, t0));
        assert!(budget.take(NodeId(9), true, t0));
        // One token per REFILL, never more than BURST.
        assert!(!budget.take(NodeId(9), false, t0 + REFILL / 2));
        assert!(budget.take(NodeId(9), false, t0 + REFILL));
        assert!(!budget.take(NodeId(9), false, t0 + REFILL));
        let later = t0 + REFILL * 100;
        for _ in 0..BURST {
            assert!(budget.take(NodeId(9), false, later));
        }
        assert!(!budget.take(NodeId(9), false, later));
        // Over ten seconds of trying all the time: the burst plus one per refill.
        let mut budget = Budget::default();
        let taken = (0..10_000)
            .filter(|ms| budget.take(NodeId(9), false, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(taken, BURST as usize + 19);
    }

    #[test]
    fn the_table_of_senders_is_bounded() {
        let mut budget = Budget::default();
        let t0 = Instant::now();
        for n in 0..MAX_SENDERS as u64 {
            assert!(budget.take(NodeId(n), false, t0));
        }
        assert!(!budget.take(NodeId(u64::MAX), false, t0));
        // Once buckets are full again, they make room.
        assert!(budget.take(NodeId(u64::MAX), false, t0 + REFILL));
        assert!(budget.buckets.len() <= MAX_SENDERS);
    }

    #[test]
    fn only_suspicions_that_force_a_refutation_are_fresh() {
        let me = id(1);
        let known = [
            Member::new(id(2), 5, State::Alive),
            Member::new(id(3), 5, State::Suspect),
        ]
        .into_iter()
        .map(|m| (m.id().node, m))
        .collect();
        let view = View {
            me: &me,
            my_incarnation: 3,
            known,
            room_for_unmet: 0,
        };
        let suspect = |n, inc| Member::new(id(n), inc, State::Suspect);
        assert_eq!(fresh(NodeId(9), &suspect(2, 5), &view), Some(false));
        assert_eq!(fresh(NodeId(9), &suspect(2, 6), &view), Some(false));
        assert_eq!(fresh(NodeId(9), &suspect(2, 4), &view), None, "stale");
        assert_eq!(
            fresh(NodeId(9), &suspect(3, 5), &view),
            None,
            "already suspect"
        );
        assert_eq!(fresh(NodeId(9), &suspect(3, 6), &view), Some(false));
        assert_eq!(fresh(NodeId(9), &suspect(1, 3), &view), Some(true));
        assert_eq!(fresh(NodeId(9), &suspect(1, 2), &view), None);
        assert_eq!(
            fresh(NodeId(2), &suspect(2, 9), &view),
            None,
            "its own word"
        );
        assert_eq!(fresh(NodeId(9), &suspect(4, 0), &view), None, "unknown");
        let alive = Member::new(id(2), 9, State::Alive);
        assert_eq!(fresh(NodeId(9), &alive, &view), None);
    }
}
