//! The context a process body runs with: its mailbox, its pid, and the process-only
//! operations (trap exits, link, monitor).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_mailbox::Received;

use crate::actor_ref::ActorRef;
use crate::exit::{IntoExitReason, MonitorRef, Signal};
use crate::pid::Pid;
use crate::process::{Process, Watcher};
use crate::runtime::{Handle, SpawnOptions};

/// What a process receives: a user message, or a system signal (signals come first).
#[derive(Debug)]
pub enum Message<M> {
    /// A message from the user lane.
    User(M),
    /// A signal from the system lane: an exit from a link while trapping, a monitor's `Down`.
    Signal(Signal),
}

/// A process's own context; only its body has it.
pub struct Ctx<M> {
    process: Arc<Process<M>>,
}

impl<M: Send + 'static> Ctx<M> {
    pub(crate) fn new(process: Arc<Process<M>>) -> Self {
        Ctx { process }
    }

    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.process.core.pid()
    }

    /// The runtime this process runs in.
    pub fn handle(&self) -> &Handle {
        &self.process.core.handle
    }

    /// A typed handle to this process.
    pub fn me(&self) -> ActorRef<M> {
        ActorRef::from_process(self.process.clone())
    }

    /// Waits for the next signal or message. Each message counts against the per-turn budget
    /// ([`crate::MESSAGE_BUDGET`]); when it is spent, this yields the worker once first.
    ///
    /// Returns `None` only once the mailbox is closed, which happens after the body has been
    /// dropped — so a running body always gets `Some`. The `Option` lets a receive loop read
    /// `while let Some(msg) = ctx.recv().await { .. }` and end normally.
    pub fn recv(&mut self) -> Recv<'_, M> {
        Recv { ctx: self }
    }

    /// The next signal or message if one is queued (no waiting, no budget).
    pub fn try_recv(&mut self) -> Option<Message<M>> {
        match self.process.mailbox.try_recv()? {
            Received::Signal(s) => Some(Message::Signal(s)),
            Received::Message(m) => Some(Message::User(m)),
            Received::Closed => None,
        }
    }

    /// Waits at most `timeout` for the next signal or message.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Message<M>> {
        let deadline = std::time::Instant::now() + timeout;
        let driver = self.process.core.shared().driver.clone();
        crate::time::with_deadline(&driver, deadline, self.recv())
            .await
            .flatten()
    }

    /// Closes this process's mailbox if nothing is queued and no sender waits; returns whether
    /// it closed. After `true`, every send returns the message (`NoProc`), so the body should
    /// return promptly: this is how idle processes (evicted objects) stop without losing mail.
    pub fn close_if_idle(&self) -> bool {
        self.process.mailbox.close_if_empty()
    }

    /// Messages queued in the user lane.
    pub fn mailbox_len(&self) -> usize {
        self.process.mailbox.len()
    }

    /// Turns exit trapping on or off: when on, exit signals (other than `Kill`) arrive as
    /// [`Signal::Exit`] instead of ending the process.
    pub fn trap_exit(&self, on: bool) {
        self.process.core.trap_exit.store(on, Ordering::Release);
    }

    /// Links this process with `pid` (bidirectional). A dead `pid` sends us an exit signal
    /// with `NoProc`.
    pub fn link(&self, pid: Pid) {
        self.handle().link_pair(self.pid(), pid);
    }

    /// Removes a link.
    pub fn unlink(&self, pid: Pid) {
        self.handle().unlink_pair(self.pid(), pid);
    }

    /// Monitors `pid`: exactly one [`Signal::Down`] arrives when it exits (at once, with
    /// `NoProc`, if it is already gone).
    pub fn monitor(&self, pid: Pid) -> MonitorRef {
        self.handle().add_monitor(Watcher::Process(self.pid()), pid)
    }

    /// Cancels a monitor; returns whether it was still active.
    pub fn demonitor(&self, pid: Pid, monitor: MonitorRef) -> bool {
        self.handle().remove_monitor(pid, monitor)
    }

    /// Sends an exit signal to `pid` from this process.
    pub fn exit(&self, pid: Pid, reason: crate::ExitReason) {
        self.handle()
            .shared
            .exit_signal(pid, self.pid(), reason, false);
    }

    /// Spawns a process linked to this one (the link exists before the child first runs).
    pub fn spawn_link<N, F, Fut>(&self, body: F) -> ActorRef<N>
    where
        N: Send + 'static,
        F: FnOnce(Ctx<N>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.handle()
            .spawn_opts(
                SpawnOptions {
                    link: Some(self.pid()),
                    ..SpawnOptions::default()
                },
                body,
            )
            .expect("spawn without a name cannot fail")
    }
}

/// Future returned by [`Ctx::recv`].
pub struct Recv<'a, M> {
    ctx: &'a mut Ctx<M>,
}

impl<M: Send + 'static> Future for Recv<'_, M> {
    type Output = Option<Message<M>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message<M>>> {
        if !crate::budget::try_consume() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.ctx.process.mailbox.poll_recv_deferring(cx) {
            Poll::Ready(Received::Signal(s)) => Poll::Ready(Some(Message::Signal(s))),
            Poll::Ready(Received::Message(m)) => Poll::Ready(Some(Message::User(m))),
            Poll::Ready(Received::Closed) => Poll::Ready(None),
            Poll::Pending => {
                crate::budget::refund();
                Poll::Pending
            }
        }
    }
}
