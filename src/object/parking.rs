//! The router's parking lot: messages whose shard has no reachable leader wait here, per
//! shard, instead of holding up the router (and so every other object of the class on this
//! node).
//!
//! A class's router (`routing`) delivers envelopes one at a time. When an envelope's shard
//! has no reachable leader (an election, a failover, a stale replica that knows no leader)
//! it is *parked* on its shard's lane and the router takes the next envelope. Each lane is
//! retried on its own backoff (`RETRY_FIRST` doubling up to `RETRY_MAX`), and every lane is
//! retried at once when this node starts serving a shard (the shard layer's `Serving`
//! event, through `shard_wait`: [`next_wake`]), so a message parked for a shard this node
//! just took over is delivered then, not at its lane's next tick. A message gives up
//! `SHARD_WAIT` after it was first parked, failing as `deliver` does (logged; its reply port
//! is dropped, so a caller gets `NoReply` rather than silence).
//!
//! # Invariants
//! * Order per sender and object holds: while a shard has a lane, every new envelope of that
//!   shard joins the back of it, even if it could be routed now, and a lane is drained front
//!   first, stopping at the first message that must wait again.
//! * The lot is bounded ([`PARK_MAX`] messages per router). While it is full the router
//!   takes no more envelopes ([`next_wake`] waits only for a lane to be due or a shard to be
//!   served): its mailbox fills and senders wait, so a message is never dropped because
//!   others wait. Only then is the class held up on this node (`PARK_MAX` messages waiting
//!   means a long outage); a parked message still gives up after `SHARD_WAIT`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, Message};
use cairn_shard::ShardId;

use super::routing::{Attempt, Envelope, RETRY_FIRST, RETRY_MAX};
use super::shard_wait::ShardServed;
use super::{Object, ObjectRef, Objects};

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

/// What ended a router's wait ([`next_wake`]).
pub(super) enum Wake<M> {
    /// A message or signal arrived.
    Msg(Message<M>),
    /// The earliest parked lane is due.
    Due,
    /// This node started serving a shard: every lane may be delivered now.
    Served,
    /// The mailbox closed.
    Closed,
}

/// A router's wait: for its next message (unless `full`: the lot has no room); with lanes
/// parked (`retry` is the earliest lane's next try), also for that time or for this node to
/// start serving a shard after `generation` (read before the router last looked at a
/// route: no wake-up is lost).
pub(super) async fn next_wake<M: Send + 'static>(
    ctx: &mut Ctx<M>,
    served: &ShardServed,
    generation: u64,
    retry: Option<Instant>,
    full: bool,
) -> Wake<M> {
    let Some(at) = retry else {
        return ctx.recv().await.map_or(Wake::Closed, Wake::Msg);
    };
    let handle = ctx.handle().clone();
    let mut timer = pin!(handle.sleep(at.saturating_duration_since(Instant::now())));
    let mut serving = pin!(served.served(generation));
    std::future::poll_fn(|cx| {
        if serving.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Served);
        }
        if !full {
            if let Poll::Ready(msg) = pin!(ctx.recv()).poll(cx) {
                return Poll::Ready(msg.map_or(Wake::Closed, Wake::Msg));
            }
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Due);
        }
        Poll::Pending
    })
    .await
}

impl<O: Object> Parked<O> {
    /// Whether the lot is full: the router takes no envelope until it has room.
    pub(super) fn is_full(&self) -> bool {
        self.len >= PARK_MAX
    }

    /// When the earliest lane is due for another try.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.lanes.values().map(|l| l.next_try).min()
    }

    /// Makes every lane due now (this node started serving a shard); their backoff stays,
    /// so a lane that must wait again still backs off.
    pub(super) fn wake_all(&mut self) {
        let now = Instant::now();
        for lane in self.lanes.values_mut() {
            lane.next_try = lane.next_try.min(now);
        }
    }

    /// Routes a newly arrived envelope: delivered now, or parked behind its shard's lane.
    pub(super) async fn route(&mut self, objects: &Arc<Objects>, env: Envelope<O>) {
        let target = target::<O>(objects, &env.key, env.region.as_deref());
        let shard = target.shard();
        let msg = match shard {
            Some(s) if self.lanes.contains_key(&s) => env.msg,
            _ => match target.try_deliver(env.msg, env.hops, true).await {
                Attempt::Done(Ok(())) => return,
                Attempt::Done(Err(e)) => return target.undeliverable(&e.error),
                Attempt::Wait(msg) => msg,
            },
        };
        let Some(shard) = shard else {
            return; // `Wait` comes only with replicated shards
        };
        // The router takes an envelope only while the lot has room (`next_wake`), and one
        // envelope parks at most one message.
        debug_assert!(!self.is_full(), "a full router took an envelope");
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
                    Attempt::Done(Err(e)) => target.undeliverable(&e.error),
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_supervisor::ActorError;
    use std::sync::mpsc;

    use super::super::ObjectCtx;

    struct Nothing;

    impl Object for Nothing {
        const CLASS: &'static str = "nothing";
        type Msg = ();
        async fn activate(_: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
            Ok(Nothing)
        }
        async fn handle(&mut self, (): (), _: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
            Ok(())
        }
    }

    fn runtime() -> cairn_scheduler::Runtime {
        cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const PATIENCE: Duration = Duration::from_secs(60);

    /// Spawns a router-like process waiting with a lane due in an hour; its wake comes back
    /// on the channel.
    fn wait_parked(
        rt: &cairn_scheduler::Runtime,
        served: &Arc<ShardServed>,
        generation: u64,
    ) -> mpsc::Receiver<&'static str> {
        let (tx, rx) = mpsc::channel();
        let served = Arc::clone(served);
        rt.spawn(move |mut ctx: Ctx<()>| async move {
            let retry = Some(Instant::now() + HOUR);
            let wake = match next_wake(&mut ctx, &served, generation, retry, false).await {
                Wake::Served => "served",
                Wake::Due => "due",
                Wake::Msg(_) => "message",
                Wake::Closed => "closed",
            };
            let _ = tx.send(wake);
        });
        rx
    }

    /// A router whose only lane is due in an hour wakes when this node starts serving a
    /// shard (without the signal this waits an hour and fails).
    #[test]
    fn a_parked_router_wakes_when_this_node_serves_a_shard() {
        let rt = runtime();
        let served = Arc::new(ShardServed::default());
        let rx = wait_parked(&rt, &served, served.generation());
        let deadline = Instant::now() + PATIENCE;
        while served.waiting() == 0 {
            assert!(Instant::now() < deadline, "the router never waited");
            std::thread::yield_now();
        }
        served.notify();
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("served"));
        assert_eq!(served.waiting(), 0);
        rt.shutdown();
    }

    /// A shard served after the router read the generation, before it waits, is not lost.
    #[test]
    fn a_shard_served_before_the_router_waits_ends_its_wait_at_once() {
        let rt = runtime();
        let served = Arc::new(ShardServed::default());
        let generation = served.generation();
        served.notify();
        let rx = wait_parked(&rt, &served, generation);
        assert_eq!(rx.recv_timeout(PATIENCE), Ok("served"));
        rt.shutdown();
    }

    /// A router whose lot is full takes no message however long one waits in its mailbox: it
    /// wakes for a due lane (or a served shard) only, so senders wait instead of the router
    /// failing what it cannot park.
    #[test]
    fn a_full_router_takes_no_message_until_a_lane_is_due() {
        let rt = runtime();
        let served = Arc::new(ShardServed::default());
        let generation = served.generation();
        let (tx, rx) = mpsc::channel();
        let router = rt.spawn({
            let served = Arc::clone(&served);
            move |mut ctx: Ctx<()>| async move {
                let due = Instant::now() + Duration::from_millis(300);
                let full = next_wake(&mut ctx, &served, generation, Some(due), true).await;
                let _ = tx.send((matches!(full, Wake::Due), Instant::now() >= due));
                // With room again the waiting message is taken.
                let room = next_wake(&mut ctx, &served, generation, Some(due + HOUR), false).await;
                let _ = tx.send((matches!(room, Wake::Msg(Message::User(()))), true));
            }
        });
        rt.block_on(router.send(())).unwrap();
        assert_eq!(
            rx.recv_timeout(PATIENCE),
            Ok((true, true)),
            "woke for the lane, not the message"
        );
        assert_eq!(
            rx.recv_timeout(PATIENCE),
            Ok((true, true)),
            "took the message once it had room"
        );
        rt.shutdown();
    }

    /// On the signal every lane is due, and keeps its backoff for its next wait.
    #[test]
    fn waking_makes_every_lane_due_and_keeps_its_backoff() {
        let mut parked = Parked::<Nothing>::default();
        let later = Instant::now() + HOUR;
        for shard in [3, 7] {
            let lane = Lane {
                queue: VecDeque::new(),
                next_try: later,
                backoff: RETRY_MAX,
            };
            parked.lanes.insert(ShardId(shard), lane);
        }
        assert!(parked.next_retry() > Some(Instant::now()));
        parked.wake_all();
        let now = Instant::now();
        assert!(parked.next_retry() <= Some(now));
        assert!(parked
            .lanes
            .values()
            .all(|l| l.next_try <= now && l.backoff == RETRY_MAX));
    }
}
