//! hyper's runtime traits on Cairn: [`CairnExecutor`] spawns onto Cairn's scheduler and
//! [`CairnTimer`] sleeps on the driver's timing wheel. (The third trait pair, I/O, is
//! [`crate::tcp::TcpConn`].)
//!
//! hyper 1.x is runtime-agnostic: it asks for an executor (used by HTTP/2 and the client;
//! HTTP/1 serving never spawns) and a timer (needed by the HTTP/1 header-read timeout, the
//! slowloris defence). Both are thin: an executed future becomes a Cairn process whose
//! mailbox is never read, as quinn's tasks do in `cairn-net`'s runtime; a sleep is the
//! driver's [`Sleep`], armed lazily on its first pending poll and cancelled when dropped.
//!
//! # One timer per connection
//!
//! hyper arms its header-read timer for every request head on a keep-alive connection and
//! drops it once the head is read; the gateway's 504 deadline is likewise one per request.
//! A driver timer for each cost four allocations, a wheel insert and a wheel cancel, each
//! under the driver's lock, per request. A gateway connection instead keeps one
//! `ConnClock`: the deadlines of the connection's task (the header read, the handler)
//! wait on one wheel entry, kept while its deadline is no later than the one waited for
//! and re-armed only when it fires (about once per `header_read_timeout` on a busy
//! connection). A fired entry a deadline no longer needs only wakes the connection's task
//! once for nothing. hyper serves one HTTP/1 request at a time, and every deadline of a
//! connection is polled by its one task, so one entry with the latest waker serves them
//! all: whoever is polled after the entry fires re-arms it for its own deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_scheduler::driver::{DriverHandle, Sleep, WakeTimer};
use cairn_scheduler::{Ctx, Handle};
use parking_lot::Mutex;

/// hyper's [`hyper::rt::Executor`] on a Cairn [`Handle`]: each future runs as a process.
#[derive(Clone, Debug)]
pub struct CairnExecutor {
    handle: Handle,
}

impl CairnExecutor {
    /// An executor spawning on `handle`.
    pub fn new(handle: Handle) -> Self {
        CairnExecutor { handle }
    }
}

impl<F> hyper::rt::Executor<F> for CairnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.handle.spawn(move |ctx: Ctx<()>| async move {
            // The context keeps the process's mailbox alive for the task's life.
            let _ctx = ctx;
            future.await;
        });
    }
}

/// hyper's [`hyper::rt::Timer`] on the driver's timing wheel (about 1 ms resolution, never
/// early).
#[derive(Clone, Debug)]
pub struct CairnTimer {
    driver: DriverHandle,
}

impl CairnTimer {
    /// A timer on `driver`.
    pub fn new(driver: DriverHandle) -> Self {
        CairnTimer { driver }
    }
}

impl hyper::rt::Timer for CairnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CairnSleep(self.driver.sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CairnSleep(self.driver.sleep_until(deadline)))
    }
}

/// The driver's [`Sleep`] as a [`hyper::rt::Sleep`] (a newtype: both traits' owners are
/// foreign to this crate).
struct CairnSleep(Sleep);

impl Future for CairnSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for CairnSleep {}

/// One connection's timer: any number of deadlines polled by the connection's task share
/// one driver timer (see the module docs).
pub(crate) struct ConnClock {
    driver: DriverHandle,
    /// Armed for a deadline no later than any deadline pending since it was armed, until
    /// it fires.
    armed: Mutex<Option<WakeTimer>>,
}

impl std::fmt::Debug for ConnClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnClock")
            .field("armed", &*self.armed.lock())
            .finish_non_exhaustive()
    }
}

impl ConnClock {
    /// A clock on `driver`, with nothing armed.
    pub(crate) fn new(driver: &DriverHandle) -> Arc<Self> {
        Arc::new(ConnClock {
            driver: driver.clone(),
            armed: Mutex::new(None),
        })
    }

    /// `Ready` once `Instant::now() >= deadline` (never earlier); else `Pending`, with the
    /// driver timer armed for `deadline` or earlier to wake `cx`.
    pub(crate) fn poll_until(&self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let mut armed = self.armed.lock();
        if let Some(timer) = &*armed {
            if timer.deadline() <= deadline && !timer.poll_fired(cx.waker()) {
                // It fires by `deadline` and wakes `cx` then: no clock to read now.
                return Poll::Pending;
            }
        }
        // It fired (for `deadline` or an earlier one), or none is armed, or it is armed
        // for later than `deadline`.
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        *armed = Some(self.driver.wake_at(deadline, cx.waker().clone()));
        Poll::Pending
    }

    /// hyper's timer for a connection served by this clock's task.
    pub(crate) fn timer(self: &Arc<Self>) -> ConnTimer {
        ConnTimer {
            clock: Arc::clone(self),
        }
    }
}

/// hyper's [`hyper::rt::Timer`] for one connection: its sleeps wait on the connection's
/// [`ConnClock`] (one wheel entry for every head of a keep-alive connection, not one each).
/// Only for a connection whose hyper future is polled by one task.
#[derive(Clone, Debug)]
pub(crate) struct ConnTimer {
    clock: Arc<ConnClock>,
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ConnSleep {
            clock: Arc::clone(&self.clock),
            deadline,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ConnSleep>() {
            Some(mut sleep) => sleep.deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A deadline on a [`ConnClock`]; dropping it leaves the clock's entry to fire once.
struct ConnSleep {
    clock: Arc<ConnClock>,
    deadline: Instant,
}

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.clock.poll_until(self.deadline, cx)
    }
}

impl hyper::rt::Sleep for ConnSleep {}

/// Runs `fut` until `deadline` on `clock`: `None` if the deadline passed first. `fut` is
/// polled first, so a deadline is never looked at for a future that is ready at once.
pub(crate) async fn until<F: Future>(
    clock: &ConnClock,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        clock.poll_until(deadline, cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::{Executor, Timer};

    fn runtime() -> cairn_scheduler::Runtime {
        cairn_scheduler::Runtime::builder()
            .workers(1)
            .build()
            .unwrap()
    }

    #[test]
    fn executor_runs_the_future_as_a_process() {
        let rt = runtime();
        let executor = CairnExecutor::new(rt.handle());
        let before = rt.handle().process_count();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        executor.execute(async move {
            started_tx.send(()).unwrap();
            // Blocks the worker briefly; fine in a test with nothing else to run.
            let _ = release_rx.recv_timeout(Duration::from_secs(5));
        });
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            rt.handle().process_count(),
            before + 1,
            "one process per task"
        );
        release_tx.send(()).unwrap();
        rt.shutdown();
    }

    fn armed_deadline(clock: &ConnClock) -> Option<Instant> {
        clock.armed.lock().as_ref().map(WakeTimer::deadline)
    }

    #[test]
    fn a_conn_clock_keeps_one_entry_for_later_deadlines_and_rearms_for_earlier_ones() {
        let rt = runtime();
        let clock = ConnClock::new(rt.handle().driver());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let now = Instant::now();
        let first = now + Duration::from_secs(3600);
        assert!(clock.poll_until(first, &mut cx).is_pending());
        assert_eq!(armed_deadline(&clock), Some(first));
        // A later deadline (the next head on a keep-alive connection, a handler's 504)
        // waits on the entry already armed: no wheel insert, no cancel.
        for later in 1..=3 {
            let deadline = first + Duration::from_secs(later);
            assert!(clock.poll_until(deadline, &mut cx).is_pending());
            assert_eq!(armed_deadline(&clock), Some(first), "re-armed for {later}");
        }
        // An earlier one must not wait for it.
        let earlier = now + Duration::from_secs(60);
        assert!(clock.poll_until(earlier, &mut cx).is_pending());
        assert_eq!(armed_deadline(&clock), Some(earlier));
        // A passed deadline is ready without touching the entry.
        assert!(clock.poll_until(now, &mut cx).is_ready());
        assert_eq!(armed_deadline(&clock), Some(earlier));
        rt.shutdown();
    }

    #[test]
    fn a_conn_clock_entry_fired_for_an_earlier_deadline_is_rearmed_never_early() {
        let rt = runtime();
        let clock = ConnClock::new(rt.handle().driver());
        let start = Instant::now();
        let early = start + Duration::from_millis(20);
        let late = start + Duration::from_millis(150);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Armed for `early` (a header read), then waited on for `late` (a handler).
        assert!(clock.poll_until(early, &mut cx).is_pending());
        rt.block_on(std::future::poll_fn(|cx| clock.poll_until(late, cx)));
        assert!(
            Instant::now() >= late,
            "ready {:?} after the start, before its deadline",
            start.elapsed()
        );
        // Through hyper's timer, with `reset` moving a sleep without replacing it.
        let timer = clock.timer();
        let mut sleep = hyper::rt::Timer::sleep(&timer, Duration::from_secs(3600));
        let target = Instant::now() + Duration::from_millis(10);
        hyper::rt::Timer::reset(&timer, &mut sleep, target);
        assert!(sleep.as_mut().downcast_mut_pin::<ConnSleep>().is_some());
        rt.block_on(sleep);
        assert!(Instant::now() >= target);
        assert!(start.elapsed() < Duration::from_secs(60));
        rt.shutdown();
    }

    #[test]
    fn until_answers_a_ready_future_and_times_out_a_silent_one() {
        let rt = runtime();
        let clock = ConnClock::new(rt.handle().driver());
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(rt.block_on(until(&clock, far, async { 7 })), Some(7));
        assert!(
            armed_deadline(&clock).is_none(),
            "nothing armed for a ready future"
        );
        let deadline = Instant::now() + Duration::from_millis(30);
        let silent = std::future::pending::<()>();
        assert_eq!(rt.block_on(until(&clock, deadline, silent)), None);
        assert!(Instant::now() >= deadline);
        rt.shutdown();
    }

    #[test]
    fn timer_sleeps_until_the_deadline_and_never_earlier() {
        let rt = runtime();
        let timer = CairnTimer::new(rt.handle().driver().clone());
        let start = Instant::now();
        rt.block_on(timer.sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_millis(15);
        rt.block_on(timer.sleep_until(deadline));
        assert!(Instant::now() >= deadline);
        // hyper's default `reset` replaces the sleep; the new deadline must hold.
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        let target = Instant::now() + Duration::from_millis(10);
        timer.reset(&mut sleep, target);
        rt.block_on(sleep);
        assert!(Instant::now() >= target);
        assert!(start.elapsed() < Duration::from_secs(60));
        rt.shutdown();
    }
}
