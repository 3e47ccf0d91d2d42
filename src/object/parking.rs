//! The router's parking lot: messages whose shard has no reachable leader wait here, per
//! shard, instead of holding up the router (and so every other object of the class on this
//! node).
//!
//! A class's router (`routing`) delivers envelopes one at a time. When an envelope's shard
//! has no reachable leader (an election, a failover, a stale replica that knows no leader)
//! it is *parked* on its shard's lane and the router takes the next envelope. Each lane is
//! retried on its own backoff (`RETRY_FIRST` doubling up to `RETRY_MAX`); a message gives up
//! `SHARD_WAIT` after it was first parked, failing as `deliver` does (logged; its reply port
//! is dropped, so a caller gets `NoReply` rather than silence).
//!
//! # Invariants
//! * Order per sender and object holds: while a shard has a lane, every new envelope of that
//!   shard joins the back of it, even if it could be routed now, and a lane is drained front
//!   first, stopping at the first message that must wait again.
//! * The lot is bounded ([`PARK_MAX`] messages per router): beyond it a message that would
//!   be parked fails at once (back-pressure without blocking the class).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_shard::ShardId;

use super::routing::{Attempt, Envelope, RETRY_FIRST, RETRY_MAX};
use super::{Object, ObjectError, ObjectRef, Objects};

/// Messages one router may hold parked at once, over all shards.
pub const PARK_MAX: usize = 1024;

/// One parked message.
struct Waiting<O: Object> {
    key: String,
    region: Option<String>,
    hops: u8,
    msg: O::Msg,
    /// When it stops waiting and fails.
    give_up: Instant,
}

/// One shard's parked messages, in arrival order.
struct Lane<O: Object> {
    queue: VecDeque<Waiting<O>>,
    next_try: Instant,
    backoff: Duration,
}

/// A router's parked messages (see the module doc).
pub(super) struct Parked<O: Object> {
    lanes: BTreeMap<ShardId, Lane<O>>,
    len: usize,
}

impl<O: Object> Default for Parked<O> {
    fn default() -> Self {
        Parked {
            lanes: BTreeMap::new(),
            len: 0,
        }
    }
}

fn target<O: Object>(objects: &Arc<Objects>, key: &str, region: Option<&str>) -> ObjectRef<O> {
    ObjectRef::<O>::new_in(Arc::clone(objects), key, region)
}

fn report<O: Object>(target: &ObjectRef<O>, error: &ObjectError) {
    tracing::warn!(object = %target.name, %error, "router could not deliver a message");
}

impl<O: Object> Parked<O> {
    /// When the earliest lane is due for another try.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.lanes.values().map(|l| l.next_try).min()
    }

    /// Routes a newly arrived envelope: delivered now, or parked behind its shard's lane.
    pub(super) async fn route(&mut self, objects: &Arc<Objects>, env: Envelope<O>) {
        let target = target::<O>(objects, &env.key, env.region.as_deref());
        let shard = target.shard();
        let msg = match shard {
            Some(s) if self.lanes.contains_key(&s) => env.msg,
            _ => match target.try_deliver(env.msg, env.hops, true).await {
                Attempt::Done(Ok(())) => return,
                Attempt::Done(Err(e)) => return report(&target, &e.error),
                Attempt::Wait(msg) => msg,
            },
        };
        let Some(shard) = shard else {
            return; // `Wait` comes only with replicated shards
        };
        if self.len >= PARK_MAX {
            let shard = shard.0;
            let error = ObjectError::ShardUnavailable {
                name: target.name.to_string(),
                shard,
            };
            tracing::warn!(object = %target.name, shard, parked = self.len, "too many messages wait for their shards' leaders; failing one");
            return report(&target, &error);
        }
        let now = Instant::now();
        let lane = self.lanes.entry(shard).or_insert_with(|| Lane {
            queue: VecDeque::new(),
            next_try: now + RETRY_FIRST,
            backoff: RETRY_FIRST,
        });
        lane.queue.push_back(Waiting {
            key: env.key,
            region: env.region,
            hops: env.hops,
            msg,
            give_up: now + super::SHARD_WAIT,
        });
        self.len += 1;
    }

    /// Tries every lane that is due, front first (see the module doc).
    pub(super) async fn retry_due(&mut self, objects: &Arc<Objects>) {
        let now = Instant::now();
        let due: Vec<ShardId> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.next_try <= now)
            .map(|(&s, _)| s)
            .collect();
        for shard in due {
            let Some(lane) = self.lanes.get_mut(&shard) else {
                continue;
            };
            while let Some(w) = lane.queue.pop_front() {
                self.len -= 1;
                let target = target::<O>(objects, &w.key, w.region.as_deref());
                let may_wait = Instant::now() < w.give_up;
                match target.try_deliver(w.msg, w.hops, may_wait).await {
                    Attempt::Done(Ok(())) => {}
                    Attempt::Done(Err(e)) => report(&target, &e.error),
                    Attempt::Wait(msg) => {
                        lane.queue.push_front(Waiting { msg, ..w });
                        self.len += 1;
                        lane.next_try = Instant::now() + lane.backoff;
                        lane.backoff = (lane.backoff * 2).min(RETRY_MAX);
                        break;
                    }
                }
            }
            if lane.queue.is_empty() {
                self.lanes.remove(&shard);
            }
        }
    }
}
