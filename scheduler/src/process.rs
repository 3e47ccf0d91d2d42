//! Processes: a body future, a mailbox, and the links, monitors and name that outlive a run.
//!
//! A process is an `Arc<Process<M>>`. The process table holds it while it is alive; typed
//! handles ([`crate::ActorRef`]) hold it directly so a send needs no table lookup; its
//! [`Waker`] is the same `Arc`, so a wake is one atomic state change plus a queue push.
//!
//! Exit protocol (`ProcessCore::exit`): under the control lock the process is marked dead
//! and its links, monitors and name are taken; then it leaves the registry and the table;
//! only then are exit signals and `Down` notifications sent. So a process that observes a
//! `Down` can rely on the name being free and the pid no longer resolving, and a link or
//! monitor added concurrently either is in the taken set or sees `dead` and fires `NoProc`
//! at once — never neither, never both.
//!
//! Exit signals follow Erlang (see `receive_exit`): the decision to trap is made when the
//! signal arrives. A signal that ends the process records a pending reason and wakes it; the
//! runner checks the pending reason before every poll, so a process blocked on something
//! other than its mailbox still dies promptly.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::unwind::panic_message;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_mailbox::Mailbox;
use futures_task::{waker_ref, ArcWake};
use parking_lot::Mutex;

use crate::executor::{Runnable, Schedule};
use crate::exit::{ExitReason, MonitorRef, Signal};
use crate::pid::Pid;
use crate::reply::OneShot;
use crate::runtime::Shared;
use crate::task_state::{RunCell, Running};

pub(crate) type Body = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// Who is told when a process exits.
pub(crate) enum Watcher {
    /// A process monitor: `Signal::Down` on the watcher's system lane.
    Process(Pid),
    /// A non-process waiter (tests, `block_on` callers, shutdown): a one-shot with the reason.
    External(Arc<OneShot<ExitReason>>),
}

#[derive(Default)]
pub(crate) struct Control {
    pub(crate) dead: bool,
    pub(crate) pending_exit: Option<ExitReason>,
    pub(crate) links: Vec<Pid>,
    /// The process this one was spawned linked to (its supervisor or spawner), if any.
    pub(crate) parent: Option<Pid>,
    pub(crate) monitors: Vec<(MonitorRef, Watcher)>,
    pub(crate) name: Option<String>,
    /// `name` is registered cluster-wide (the mesh must hear of its release).
    pub(crate) cluster_name: bool,
}

/// The untyped part of a process, shared by every message type.
pub(crate) struct ProcessCore {
    pid: Pid,
    pub(crate) shared: Arc<Shared>,
    pub(crate) trap_exit: AtomicBool,
    /// Set (after `Control::pending_exit`, under the control lock) when an exit is pending,
    /// so a run checks one flag instead of taking the control lock.
    exit_pending: AtomicBool,
    pub(crate) control: Mutex<Control>,
}

impl ProcessCore {
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Records why the process must end (the first reason wins) for its next run.
    pub(crate) fn set_pending_exit(&self, reason: ExitReason) {
        let mut control = self.control.lock();
        control.pending_exit.get_or_insert(reason);
        self.exit_pending.store(true, Ordering::Release);
    }

    /// The pending exit reason, if any (taken: a process ends once).
    #[inline]
    fn take_pending_exit(&self) -> Option<ExitReason> {
        if !self.exit_pending.load(Ordering::Acquire) {
            return None;
        }
        self.control.lock().pending_exit.take()
    }

    /// Handles an exit signal from `from` (Erlang's rules). `via_link` signals also remove
    /// the link they travelled on. Returns true if the process must be woken to die.
    fn receive_exit(&self, from: Pid, reason: ExitReason, via_link: bool) -> ExitDecision {
        let mut control = self.control.lock();
        if control.dead {
            return ExitDecision::Ignore;
        }
        if via_link {
            control.links.retain(|&p| p != from);
        }
        if reason == ExitReason::Kill && !via_link {
            control.pending_exit.get_or_insert(ExitReason::Killed);
            self.exit_pending.store(true, Ordering::Release);
            return ExitDecision::Die;
        }
        if self.trap_exit.load(Ordering::Acquire) {
            return ExitDecision::Deliver(Signal::Exit { from, reason });
        }
        if reason == ExitReason::Normal && from != self.pid {
            return ExitDecision::Ignore;
        }
        control.pending_exit.get_or_insert(reason);
        self.exit_pending.store(true, Ordering::Release);
        ExitDecision::Die
    }

    /// Releases links, monitors and name, leaves the table, then notifies everyone.
    fn exit(&self, reason: &ExitReason) {
        let (links, monitors, name, cluster_name) = {
            let mut control = self.control.lock();
            control.dead = true;
            (
                std::mem::take(&mut control.links),
                std::mem::take(&mut control.monitors),
                control.name.take(),
                control.cluster_name,
            )
        };
        let shared = &self.shared;
        if let Some(name) = name {
            shared.registry_remove(&name, self.pid, cluster_name);
        }
        match reason {
            ExitReason::Panic(_) => tracing::error!(pid = %self.pid, %reason, "process crashed"),
            r if r.is_orderly() => tracing::trace!(pid = %self.pid, %reason, "process exited"),
            _ => tracing::debug!(pid = %self.pid, %reason, "process exited"),
        }
        shared.table.remove(self.pid);
        for linked in links {
            shared.exit_signal(linked, self.pid, reason.clone(), true);
        }
        for (monitor, watcher) in monitors {
            shared.notify_down(watcher, monitor, self.pid, reason.clone());
        }
    }
}

enum ExitDecision {
    Ignore,
    Die,
    Deliver(Signal),
}

/// A process receiving messages of type `M`.
pub(crate) struct Process<M> {
    pub(crate) core: ProcessCore,
    pub(crate) mailbox: Mailbox<M, Signal>,
    /// The scheduling state and the body it guards (no lock: see `task_state`).
    run: RunCell<Option<Body>>,
}

/// The type-erased view the table, the executor and the exit protocol use.
pub(crate) trait AnyProcess: Runnable {
    fn core(&self) -> &ProcessCore;
    /// Pushes a signal on the system lane (wakes the receiver). False if closed.
    fn push_signal(&self, signal: Signal) -> bool;
    /// Schedules a run (used after recording a pending exit).
    fn wake_process(self: Arc<Self>);
    /// Ends the process without running its body any further: drops the body, closes the
    /// mailbox and exits with `Killed` (leftovers at runtime shutdown, or a spawn undone by
    /// a name conflict). Never called while the process runs (workers are joined first at
    /// shutdown; a spawn undone has not been scheduled yet).
    fn force_stop(&self);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<M: Send + 'static> Process<M> {
    pub(crate) fn new(pid: Pid, shared: Arc<Shared>, capacity: usize) -> Self {
        Process {
            core: ProcessCore {
                pid,
                shared,
                trap_exit: AtomicBool::new(false),
                exit_pending: AtomicBool::new(false),
                control: Mutex::new(Control::default()),
            },
            mailbox: Mailbox::new(capacity),
            run: RunCell::new(None),
        }
    }

    /// Installs the body and schedules the first run. The process was created `SCHEDULED`
    /// and is in no queue yet, so this thread claims it like a runner to write the body.
    pub(crate) fn start(self: Arc<Self>, body: Body) {
        let mut run = self
            .run
            .start()
            .expect("a new process is scheduled and not done");
        run.with_body(|slot| *slot = Some(body));
        // A wake during the install (an exit signal) re-queues it; otherwise queue it now.
        if run.end() || self.run.state().wake() {
            self.schedule(Schedule::Spawned);
        }
    }

    /// Queues the process: on this thread's worker if it is one of the runtime's (no
    /// reference count traffic for the executor), else through the injector.
    #[inline]
    fn schedule(self: Arc<Self>, how: Schedule) {
        let exec = Arc::as_ptr(&self.core.shared.exec);
        if let Err(process) = crate::executor::schedule_on_current(exec, self, how) {
            let exec = process.core.shared.exec.clone();
            exec.schedule(process, how);
        }
    }

    /// The end of a process: body dropped, mailbox closed, links, monitors and name released.
    fn finish(
        &self,
        run: Running<'_, Option<Body>>,
        mut run_body: Option<Body>,
        reason: ExitReason,
    ) {
        drop_quietly(run_body.take());
        run.complete();
        self.mailbox.close();
        self.core.exit(&reason);
    }
}

/// Drops a body, containing a panic from its destructors.
fn drop_quietly(body: Option<Body>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(body))) {
        tracing::error!(
            panic = panic_message(&*payload),
            "a process body panicked while being dropped"
        );
    }
}

impl<M: Send + 'static> Runnable for Process<M> {
    fn run(self: Arc<Self>) {
        let Some(mut run) = self.run.start() else {
            // Already stopped by `force_stop` (runtime shutdown): a stale queue entry.
            return;
        };
        if let Some(reason) = self.core.take_pending_exit() {
            let body = run.with_body(Option::take);
            self.finish(run, body, reason);
            return;
        }
        // A waker borrowing `self`'s reference: no count change unless a mailbox keeps a
        // clone of it.
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        crate::budget::reset();
        let polled = run.with_body(|body| {
            let fut = body.as_mut()?;
            Some(catch_unwind(AssertUnwindSafe(|| {
                fut.as_mut().poll(&mut cx)
            })))
        });
        let reason = match polled {
            Some(Ok(Poll::Pending)) => {
                if run.end() {
                    self.schedule(Schedule::Yielded);
                }
                return;
            }
            Some(Ok(Poll::Ready(reason))) => reason,
            Some(Err(payload)) => ExitReason::Panic(panic_message(&*payload)),
            // Never installed (a spawn undone): nothing to run.
            None => {
                run.complete();
                return;
            }
        };
        let body = run.with_body(Option::take);
        self.finish(run, body, reason);
    }
}

impl<M: Send + 'static> ArcWake for Process<M> {
    fn wake(self: Arc<Self>) {
        if self.run.state().wake() {
            self.schedule(Schedule::Woken);
        }
    }

    fn wake_by_ref(this: &Arc<Self>) {
        if this.run.state().wake() {
            this.clone().schedule(Schedule::Woken);
        }
    }
}

impl<M: Send + 'static> AnyProcess for Process<M> {
    fn core(&self) -> &ProcessCore {
        &self.core
    }

    fn push_signal(&self, signal: Signal) -> bool {
        self.mailbox.send_signal(signal).is_ok()
    }

    fn wake_process(self: Arc<Self>) {
        ArcWake::wake(self)
    }

    fn force_stop(&self) {
        let Some(mut stopped) = self.run.stop() else {
            // Running (its runner ends it) or finished already: nothing to stop.
            tracing::debug!(pid = %self.core.pid, "force_stop on a running or finished process");
            return;
        };
        let body = stopped.with_body(Option::take);
        drop_quietly(body);
        self.mailbox.close();
        self.core.exit(&ExitReason::Killed);
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Delivers an exit signal to `target` (already looked up).
pub(crate) fn deliver_exit(
    target: Arc<dyn AnyProcess>,
    from: Pid,
    reason: ExitReason,
    via_link: bool,
) {
    match target.core().receive_exit(from, reason, via_link) {
        ExitDecision::Ignore => {}
        ExitDecision::Die => target.wake_process(),
        ExitDecision::Deliver(signal) => {
            target.push_signal(signal);
        }
    }
}

impl<M> std::fmt::Debug for Process<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.core.pid)
            .finish()
    }
}
