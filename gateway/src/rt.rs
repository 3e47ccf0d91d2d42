//! hyper's runtime traits on Cairn: [`CairnExecutor`] spawns onto Cairn's scheduler and
//! [`CairnTimer`] sleeps on the driver's timing wheel. (The third trait pair, I/O, is
//! [`crate::tcp::TcpConn`].)
//!
//! hyper 1.x is runtime-agnostic: it asks for an executor (used by HTTP/2 and the client;
//! HTTP/1 serving never spawns) and a timer (needed by the HTTP/1 header-read timeout, the
//! slowloris defence). Both are thin: an executed future becomes a Cairn process whose
//! mailbox is never read, as quinn's tasks do in `cairn-net`'s runtime; a sleep is the
//! driver's [`Sleep`], armed lazily on its first pending poll and cancelled when dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_scheduler::driver::{DriverHandle, Sleep};
use cairn_scheduler::{Ctx, Handle};

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
