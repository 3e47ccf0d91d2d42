//! Waiting for a shard to be served: what a message or request whose shard has no serving
//! leader now waits on before it is routed again (`routing`'s `route_waiting` and
//! `deliver`).
//!
//! A wait ends at the first of two things: the backoff timer (5 ms doubling to 200 ms,
//! for changes this node hears of only by looking, such as another node's leadership), or
//! [`ShardServed::notify`], which the shard driver's `Serving` event calls the moment this
//! node starts serving any shard. A class's router waits on the same signal
//! ([`ShardServed::served`]) beside its mailbox and its parked lanes' timer (`parking`). Before the signal existed a request forwarded to a
//! leader whose lease had lapsed (a configuration change, a late heartbeat round) noticed
//! the lease was back only at its next timer tick: up to 200 ms later, and the steps add
//! up (5 + 10 + … + 200 ms), so forwarded requests stalled 0.3–1.1 s on a loaded machine.
//!
//! Invariants:
//! * No lost wake-up: a waiter passes the [`ShardServed::generation`] it read *before* it
//!   last looked at the route; a notify since then ends its wait at once.
//! * Bounded: a waiter is registered only while its wait future is alive (dropping it
//!   removes its waker), so the table holds at most one waker per task waiting now.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cairn_scheduler::Handle;
use parking_lot::Mutex;

/// The "a shard started being served here" signal of one node (see the module docs).
#[derive(Default)]
pub(crate) struct ShardServed {
    state: Mutex<Waiters>,
    /// Waits ended by [`ShardServed::notify`] rather than by their timer.
    woken: AtomicU64,
    /// Waits ended by their backoff timer.
    timed_out: AtomicU64,
}

#[derive(Default)]
struct Waiters {
    generation: u64,
    next_id: u64,
    /// Waiting tasks by waiter id (few: one per request or message waiting now).
    wakers: Vec<(u64, Waker)>,
}

/// How the waits of a node ended (read by tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardWaits {
    /// Ended by this node starting to serve a shard.
    pub(crate) woken: u64,
    /// Ended by the backoff timer (the route is then looked up again).
    pub(crate) timed_out: u64,
}

impl ShardServed {
    /// The current generation: read it before looking at a route, pass it to [`Self::wait`].
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// This node started serving a shard: ends every wait.
    pub(crate) fn notify(&self) {
        let woken = {
            let mut state = self.state.lock();
            state.generation += 1;
            std::mem::take(&mut state.wakers)
        };
        for (_, waker) in woken {
            waker.wake();
        }
    }

    /// Ready once a notify after `generation` happened (counted as a wait it ended).
    pub(crate) fn served(&self, generation: u64) -> Served<'_> {
        Served {
            signal: self,
            generation,
            id: None,
        }
    }

    /// Waits until a notify after `generation`, or `backoff` elapsed.
    pub(crate) async fn wait(&self, handle: &Handle, generation: u64, backoff: Duration) {
        let mut sleep = pin!(handle.sleep(backoff));
        let mut served = pin!(self.served(generation));
        std::future::poll_fn(|cx| {
            if served.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if sleep.as_mut().poll(cx).is_ready() {
                self.timed_out.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// How the waits so far ended.
    #[cfg(test)]
    pub(crate) fn waits(&self) -> ShardWaits {
        ShardWaits {
            woken: self.woken.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }

    /// Tasks waiting now (read by tests, to notify once a waiter is registered).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().wakers.len()
    }
}

/// Ready once the signal's generation moved past `generation` (see [`ShardServed::served`]).
pub(crate) struct Served<'a> {
    signal: &'a ShardServed,
    generation: u64,
    /// This waiter's id while its waker is registered.
    id: Option<u64>,
}

impl Future for Served<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = this.signal.state.lock();
        if state.generation != this.generation {
            this.id = None; // notify took the waker with the table
            this.signal.woken.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(());
        }
        match this.id {
            Some(id) => match state.wakers.iter_mut().find(|(i, _)| *i == id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => state.wakers.push((id, cx.waker().clone())),
            },
            None => {
                let id = state.next_id;
                state.next_id += 1;
                state.wakers.push((id, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.signal.state.lock().wakers.retain(|(i, _)| *i != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn runtime() -> cairn_scheduler::Runtime {
        cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap()
    }

    /// A wait ends when the node starts serving a shard, not at its timer (an hour here).
    #[test]
    fn a_wait_ends_at_the_notify_not_at_its_timer() {
        let rt = runtime();
        let signal = Arc::new(ShardServed::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = Arc::clone(&signal);
        let handle = rt.handle();
        let generation = signal.generation();
        rt.spawn(move |_ctx: cairn_scheduler::Ctx<()>| async move {
            waiting
                .wait(&handle, generation, Duration::from_secs(3600))
                .await;
            let _ = tx.send(());
        });
        // Notify once the waiter is registered (it is, once its waker is in the table).
        let deadline = Instant::now() + Duration::from_secs(60);
        while signal.waiting() == 0 {
            assert!(Instant::now() < deadline, "the waiter never registered");
            std::thread::yield_now();
        }
        signal.notify();
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the notify ended the wait");
        assert_eq!(
            signal.waits(),
            ShardWaits {
                woken: 1,
                timed_out: 0
            }
        );
        assert!(signal.state.lock().wakers.is_empty());
        rt.shutdown();
    }

    /// A notify between reading the generation and waiting is not lost.
    #[test]
    fn a_notify_before_the_wait_ends_it_at_once() {
        let rt = runtime();
        let signal = ShardServed::default();
        let generation = signal.generation();
        signal.notify();
        rt.block_on(signal.wait(&rt.handle(), generation, Duration::from_secs(3600)));
        assert_eq!(signal.waits().woken, 1);
        rt.shutdown();
    }

    /// Without a notify the timer ends the wait, and the waiter leaves no waker behind.
    #[test]
    fn a_wait_without_notify_times_out_and_unregisters() {
        let rt = runtime();
        let signal = ShardServed::default();
        let generation = signal.generation();
        rt.block_on(signal.wait(&rt.handle(), generation, Duration::from_millis(5)));
        assert_eq!(
            signal.waits(),
            ShardWaits {
                woken: 0,
                timed_out: 1
            }
        );
        assert!(signal.state.lock().wakers.is_empty());
        rt.shutdown();
    }
}
