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
use std::task::{Context, Poll, Wake, Waker};

use cairn_mailbox::Mailbox;
use parking_lot::Mutex;

use crate::executor::{Runnable, Schedule};
use crate::exit::{ExitReason, MonitorRef, Signal};
use crate::pid::Pid;
use crate::reply::OneShot;
use crate::runtime::Shared;
use crate::task_state::TaskState;

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
    pub(crate) state: TaskState,
    pub(crate) trap_exit: AtomicBool,
    pub(crate) control: Mutex<Control>,
}

impl ProcessCore {
    pub(crate) fn pid(&self) -> Pid {
        self.pid
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
            return ExitDecision::Die;
        }
        if self.trap_exit.load(Ordering::Acquire) {
            return ExitDecision::Deliver(Signal::Exit { from, reason });
        }
        if reason == ExitReason::Normal && from != self.pid {
            return ExitDecision::Ignore;
        }
        control.pending_exit.get_or_insert(reason);
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
    body: Mutex<Option<Body>>,
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
    /// a name conflict).
    fn force_stop(&self);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<M: Send + 'static> Process<M> {
    pub(crate) fn new(pid: Pid, shared: Arc<Shared>, capacity: usize) -> Self {
        Process {
            core: ProcessCore {
                pid,
                shared,
                state: TaskState::new_scheduled(),
                trap_exit: AtomicBool::new(false),
                control: Mutex::new(Control::default()),
            },
            mailbox: Mailbox::new(capacity),
            body: Mutex::new(None),
        }
    }

    pub(crate) fn set_body(&self, body: Body) {
        *self.body.lock() = Some(body);
    }

    fn finish(self: &Arc<Self>, reason: ExitReason) {
        let body = self.body.lock().take();
        drop_quietly(body);
        self.core.state.complete();
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
        if !self.core.state.start_run() {
            return;
        }
        let pending = self.core.control.lock().pending_exit.take();
        if let Some(reason) = pending {
            self.finish(reason);
            return;
        }
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut body = self.body.lock();
        let Some(fut) = body.as_mut() else {
            // Already stopped by `force_stop` (runtime shutdown): nothing left to run.
            return;
        };
        crate::budget::reset();
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        match polled {
            Ok(Poll::Pending) => {
                drop(body);
                if self.core.state.end_run() {
                    let exec = self.core.shared.exec.clone();
                    exec.schedule(self, Schedule::Yielded);
                }
            }
            Ok(Poll::Ready(reason)) => {
                let done = body.take();
                drop(body);
                drop_quietly(done);
                self.finish(reason);
            }
            Err(payload) => {
                let done = body.take();
                drop(body);
                drop_quietly(done);
                self.finish(ExitReason::Panic(panic_message(&*payload)));
            }
        }
    }
}

impl<M: Send + 'static> Wake for Process<M> {
    fn wake(self: Arc<Self>) {
        if self.core.state.wake() {
            let exec = self.core.shared.exec.clone();
            exec.schedule(self, Schedule::Woken);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.core.state.wake() {
            self.core
                .shared
                .exec
                .schedule(self.clone(), Schedule::Woken);
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
        Wake::wake(self)
    }

    fn force_stop(&self) {
        self.core.state.complete();
        let body = self.body.lock().take();
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
