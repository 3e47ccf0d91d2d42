//! A pool of threads for blocking work (file I/O, CPU-heavy calls), so workers never block.
//!
//! Threads are started on demand up to [`MAX_BLOCKING_THREADS`] and exit after
//! [`BLOCKING_KEEP_ALIVE`] idle. Shutdown closes the queue and joins them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::reply::{Reply, ReplyReceiver};
use crate::unwind::panic_message;

/// Upper bound on blocking threads (tokio's default is 512).
pub const MAX_BLOCKING_THREADS: usize = 512;
/// How long an idle blocking thread waits for work before it exits.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct BlockingPool {
    name: String,
    tx: Mutex<Option<Sender<Job>>>,
    rx: Receiver<Job>,
    idle: Arc<AtomicUsize>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl BlockingPool {
    pub(crate) fn new(name: &str) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        BlockingPool {
            name: name.to_owned(),
            tx: Mutex::new(Some(tx)),
            rx,
            idle: Arc::new(AtomicUsize::new(0)),
            threads: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn spawn<R, F>(&self, f: F) -> BlockingJoin<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = Reply::pair();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|p| panic_message(&*p));
            let _ = reply.send(result);
        });
        let tx = self.tx.lock().clone();
        let Some(tx) = tx else {
            return BlockingJoin { rx };
        };
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        if self.idle.load(Ordering::Acquire) == 0 && threads.len() < MAX_BLOCKING_THREADS {
            let (rx, idle) = (self.rx.clone(), self.idle.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{}-blocking", self.name))
                .spawn(move || blocking_thread(rx, idle));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, "could not start a blocking thread"),
            }
        }
        drop(threads);
        let _ = tx.send(job);
        BlockingJoin { rx }
    }

    pub(crate) fn shutdown(&self) {
        self.tx.lock().take();
        for t in std::mem::take(&mut *self.threads.lock()) {
            let _ = t.join();
        }
    }
}

fn blocking_thread(rx: Receiver<Job>, idle: Arc<AtomicUsize>) {
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        let job = rx.recv_timeout(BLOCKING_KEEP_ALIVE);
        idle.fetch_sub(1, Ordering::AcqRel);
        match job {
            Ok(job) => job(),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The result of [`crate::Handle::spawn_blocking`]: `Err(panic message)` if the work panicked,
/// or if the runtime was shutting down and never ran it.
pub struct BlockingJoin<R> {
    rx: ReplyReceiver<Result<R, String>>,
}

impl<R> Future for BlockingJoin<R> {
    type Output = Result<R, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err("blocking work was dropped unrun".to_owned())))
    }
}
