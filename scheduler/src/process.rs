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
use crate::exit::{ExitReason, IntoExitReason, MonitorRef, Signal};
use crate::pid::Pid;
use crate::reply::OneShot;
use crate::runtime::{Handle, Shared};
use crate::task_state::{RunCell, Running};

/// Who is told when a process exits.
pub(crate) enum Watcher {
    /// A process monitor: `Signal::Down` on the watcher's system lane.
    Process(Pid),
    /// A non-process waiter (tests, `block_on` callers, shutdown): a one-shot with the reason.
    External(Arc<OneShot<ExitReason>>),
}

/// A process's links: a set, in the order they were made. The first is inline (most
/// processes have at most one, their supervisor or spawner), so a linked spawn allocates
/// nothing for it; a `Vec` holds them from the second on.
#[derive(Default, Debug)]
pub(crate) enum Links {
    #[default]
    None,
    One(Pid),
    Many(Vec<Pid>),
}

impl Links {
    /// The links, in the order they were made.
    pub(crate) fn as_slice(&self) -> &[Pid] {
        match self {
            Links::None => &[],
            Links::One(pid) => std::slice::from_ref(pid),
            Links::Many(pids) => pids,
        }
    }

    /// Links `pid` (nothing if it is linked already).
    pub(crate) fn insert(&mut self, pid: Pid) {
        match self {
            Links::None => *self = Links::One(pid),
            Links::One(first) if *first == pid => {}
            Links::One(first) => *self = Links::Many(vec![*first, pid]),
            Links::Many(pids) if pids.contains(&pid) => {}
            Links::Many(pids) => pids.push(pid),
        }
    }

    /// Unlinks `pid` (nothing if it is not linked).
    pub(crate) fn remove(&mut self, pid: Pid) {
        match self {
            Links::One(first) if *first == pid => *self = Links::None,
            Links::Many(pids) => pids.retain(|&p| p != pid),
            Links::None | Links::One(_) => {}
        }
    }
}

#[derive(Default)]
pub(crate) struct Control {
    pub(crate) dead: bool,
    pub(crate) pending_exit: Option<ExitReason>,
    pub(crate) links: Links,
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
    /// The runtime, as the handle the process's `Ctx` lends out (no count change per
    /// spawn beyond this one).
    pub(crate) handle: Handle,
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

    /// The runtime this process lives in.
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
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
            control.links.remove(from);
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
    fn exit(&self, reason: ExitReason) {
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
        let shared = self.shared();
        if let Some(name) = name {
            shared.registry_remove(&name, self.pid, cluster_name);
        }
        match &reason {
            ExitReason::Panic(_) => tracing::error!(pid = %self.pid, %reason, "process crashed"),
            r if r.is_orderly() => tracing::trace!(pid = %self.pid, %reason, "process exited"),
            _ => tracing::debug!(pid = %self.pid, %reason, "process exited"),
        }
        shared.table.remove(self.pid);
        shared
            .exec
            .count(|c| &c.exits[crate::stats::ExitKind::of(&reason).index()]);
        // The reason is cloned for every recipient but the last, which takes it (a reason
        // with a message is a `String`: one allocation less per exit in the common case of
        // one link, a supervised worker's).
        let mut reason = Some(reason);
        let links = links.as_slice();
        let last_link = links.len().checked_sub(1).filter(|_| monitors.is_empty());
        for (i, &linked) in links.iter().enumerate() {
            let r = if Some(i) == last_link {
                reason.take()
            } else {
                reason.clone()
            };
            shared.exit_signal(linked, self.pid, r.expect("taken by the last only"), true);
        }
        let count = monitors.len();
        for (i, (monitor, watcher)) in monitors.into_iter().enumerate() {
            let r = if i + 1 == count {
                reason.take()
            } else {
                reason.clone()
            };
            shared.notify_down(
                watcher,
                monitor,
                self.pid,
                r.expect("taken by the last only"),
            );
        }
    }
}

enum ExitDecision {
    Ignore,
    Die,
    Deliver(Signal),
}

/// A process receiving messages of type `M`: one allocation holding its core, its mailbox
/// and its body `B`.
///
/// A process is created with its concrete body type (`BodySlot<Fut>`) and is shared as
/// `Arc<Process<M>>` (`B = dyn Body`: an unsizing coercion of the same allocation), so a
/// spawn allocates once for all three instead of a process plus a boxed future.
pub(crate) struct Process<M, B: ?Sized = dyn Body> {
    pub(crate) core: ProcessCore,
    pub(crate) mailbox: Mailbox<M, Signal>,
    /// The scheduling state and the body it guards (no lock: see `task_state`). Last: it
    /// is the unsized part.
    run: RunCell<B>,
}

/// A process body as the process sees it, whatever the future's type.
pub(crate) trait Body: Send {
    /// Polls the body; `None` if it was never installed or is already dropped.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Option<Poll<ExitReason>>;
    /// Drops the body's future in place (idempotent).
    fn drop_body(&mut self);
}

/// The body of a process: its future, in place inside the process's allocation.
pub(crate) struct BodySlot<Fut>(Option<Fut>);

impl<Fut> Body for BodySlot<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    #[inline]
    #[allow(unsafe_code)] // Pinning the future in place; see the SAFETY note.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Option<Poll<ExitReason>> {
        let fut = self.0.as_mut()?;
        // SAFETY: the future is pinned: it lives inside the process's `Arc` allocation, which
        // never moves, it is never moved out of its slot (`install` writes it before the
        // first poll; `drop_body` drops it in place), and the slot is dropped only with the
        // allocation. (Tests: every spawned process is polled through here.)
        let fut = unsafe { Pin::new_unchecked(fut) };
        Some(fut.poll(cx).map(IntoExitReason::into_exit_reason))
    }

    fn drop_body(&mut self) {
        self.0 = None;
    }
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
    /// Puts `self` as an `Arc<Process<M>>` into `out` if `out` is an
    /// `Option<Arc<Process<M>>>` for this process's `M` (a typed lookup by pid).
    fn fill_typed(self: Arc<Self>, out: &mut dyn Any);
}

impl<M: Send + 'static> Process<M> {
    /// The process's body type-erased, for a typed lookup: `Some` if it takes `M`.
    pub(crate) fn downcast(process: Arc<dyn AnyProcess>) -> Option<Arc<Process<M>>> {
        let mut out: Option<Arc<Process<M>>> = None;
        process.fill_typed(&mut out);
        out
    }
}

impl<M, Fut> Process<M, BodySlot<Fut>>
where
    M: Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    /// A process with no body yet (see [`Process::start`]).
    pub(crate) fn new(pid: Pid, shared: Arc<Shared>, capacity: usize) -> Self {
        Process {
            core: ProcessCore {
                pid,
                handle: Handle { shared },
                trap_exit: AtomicBool::new(false),
                exit_pending: AtomicBool::new(false),
                control: Mutex::new(Control::default()),
            },
            mailbox: Mailbox::new(capacity),
            run: RunCell::new(BodySlot(None)),
        }
    }

    /// Installs the body and schedules the first run. The process was created `SCHEDULED`
    /// and is in no queue yet, so this thread claims it like a runner to write the body.
    pub(crate) fn start(self: Arc<Self>, body: Fut) {
        let mut run = self
            .run
            .start()
            .expect("a new process is scheduled and not done");
        run.with_body(|slot| slot.0 = Some(body));
        // A wake during the install (an exit signal) re-queues it; otherwise queue it now.
        if run.end() || self.run.state().wake() {
            self.schedule(Schedule::Spawned);
        }
    }
}

impl<M: Send + 'static, B: Body + 'static> Process<M, B> {
    /// Queues the process: on this thread's worker if it is one of the runtime's (no
    /// reference count traffic for the executor), else through the injector.
    #[inline(always)]
    fn schedule(self: Arc<Self>, how: Schedule) {
        let exec = Arc::as_ptr(&self.core.shared().exec);
        if let Err(process) = crate::executor::schedule_on_current(exec, self, how) {
            let exec = process.core.shared().exec.clone();
            exec.schedule(process, how);
        }
    }

    /// The end of a process: body dropped, mailbox closed, links, monitors and name released.
    fn finish(&self, mut run: Running<'_, B>, reason: ExitReason) {
        run.with_body(drop_quietly);
        run.complete();
        self.mailbox.close();
        self.core.exit(reason);
    }
}

/// Drops a body's future, containing a panic from its destructors.
fn drop_quietly<B: Body + ?Sized>(body: &mut B) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.drop_body())) {
        tracing::error!(
            panic = panic_message(&*payload),
            "a process body panicked while being dropped"
        );
    }
}

impl<M: Send + 'static, B: Body + 'static> Runnable for Process<M, B> {
    fn run(self: Arc<Self>) {
        let Some(mut run) = self.run.start() else {
            // Already stopped by `force_stop` (runtime shutdown): a stale queue entry.
            return;
        };
        if let Some(reason) = self.core.take_pending_exit() {
            self.finish(run, reason);
            return;
        }
        // A waker borrowing `self`'s reference: no count change unless a mailbox keeps a
        // clone of it.
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        crate::budget::reset();
        let polled =
            run.with_body(|body| catch_unwind(AssertUnwindSafe(|| body.poll_body(&mut cx))));
        let reason = match polled {
            Ok(Some(Poll::Pending)) => {
                // Senders granted room during this turn (see `poll_recv_deferring`) are
                // woken once, now, whatever the body waits for next.
                self.mailbox.wake_deferred();
                if run.end() {
                    self.schedule(Schedule::Yielded);
                }
                return;
            }
            Ok(Some(Poll::Ready(reason))) => reason,
            Err(payload) => ExitReason::Panic(panic_message(&*payload)),
            // Never installed (a spawn undone): nothing to run.
            Ok(None) => {
                run.complete();
                return;
            }
        };
        self.finish(run, reason);
    }
}

impl<M: Send + 'static, B: Body + 'static> ArcWake for Process<M, B> {
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

impl<M: Send + 'static, B: Body + 'static> AnyProcess for Process<M, B> {
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
        stopped.with_body(drop_quietly);
        self.mailbox.close();
        self.core.exit(ExitReason::Killed);
    }

    fn fill_typed(self: Arc<Self>, out: &mut dyn Any) {
        if let Some(slot) = out.downcast_mut::<Option<Arc<Process<M>>>>() {
            *slot = Some(self);
        }
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

impl<M, B: ?Sized> std::fmt::Debug for Process<M, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.core.pid)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid::NodeId;

    fn pid(index: u32) -> Pid {
        Pid::new(NodeId(0), 0, index, 0)
    }

    #[test]
    fn links_are_a_set_in_link_order_with_the_first_inline() {
        let mut links = Links::default();
        links.insert(pid(1));
        links.insert(pid(1));
        assert!(matches!(links, Links::One(p) if p == pid(1)));
        links.insert(pid(2));
        links.insert(pid(3));
        links.insert(pid(2));
        assert_eq!(links.as_slice(), [pid(1), pid(2), pid(3)]);
        links.remove(pid(2));
        links.remove(pid(9));
        assert_eq!(links.as_slice(), [pid(1), pid(3)]);
        let mut one = Links::default();
        one.insert(pid(4));
        one.remove(pid(5));
        assert_eq!(one.as_slice(), [pid(4)]);
        one.remove(pid(4));
        assert!(one.as_slice().is_empty());
    }
}
