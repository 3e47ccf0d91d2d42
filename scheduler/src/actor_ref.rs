//! Typed handles to processes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use cairn_mailbox::{SendError as MailboxSendError, SendFut as MailboxSendFut, TrySendError};

use crate::exit::Signal;
use crate::pid::Pid;
use crate::process::Process;
use crate::remote::{AnyMessage, BoxFuture, RemoteSendFailure, RemoteSendResult};
use crate::reply::{CallError, Reply};
use crate::runtime::Handle;

/// Why a send failed. Every variant gives the message back: nothing is dropped silently.
#[non_exhaustive]
pub enum SendError<M> {
    /// The mailbox is full (only from `try_send`; `send` waits for room instead).
    Full(M),
    /// The process does not exist or has exited.
    NoProc(M),
    /// The process at that pid takes another message type.
    WrongType(M),
    /// The pid is on a node that is not connected (lost, unknown, or no mesh).
    NoConnection(M),
    /// The pid is on another node and the message type is not registered with the mesh.
    Unregistered(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m)
            | SendError::NoProc(m)
            | SendError::WrongType(m)
            | SendError::NoConnection(m)
            | SendError::Unregistered(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::NoProc(_) => f.write_str("NoProc(..)"),
            SendError::WrongType(_) => f.write_str("WrongType(..)"),
            SendError::NoConnection(_) => f.write_str("NoConnection(..)"),
            SendError::Unregistered(_) => f.write_str("Unregistered(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("mailbox full"),
            SendError::NoProc(_) => f.write_str("no such process"),
            SendError::WrongType(_) => f.write_str("the process takes another message type"),
            SendError::NoConnection(_) => f.write_str("no connection to the process's node"),
            SendError::Unregistered(_) => {
                f.write_str("the message type is not registered with the mesh")
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A typed handle to a process that takes messages of type `M`, on this node or another.
///
/// A local handle holds the process itself, so sending needs no table lookup. A remote one
/// holds the pid and hands messages to the mesh (see [`crate::remote`]), which serializes
/// them only then. Either stays valid after the process exits: sends then return `NoProc`
/// with the message (locally; a remote node reports dead letters on its side).
pub struct ActorRef<M> {
    target: Target<M>,
}

enum Target<M> {
    Local(Arc<Process<M>>),
    Remote { pid: Pid, handle: Handle },
}

impl<M> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        let target = match &self.target {
            Target::Local(p) => Target::Local(p.clone()),
            Target::Remote { pid, handle } => Target::Remote {
                pid: *pid,
                handle: handle.clone(),
            },
        };
        ActorRef { target }
    }
}

impl<M> ActorRef<M> {
    fn pid_of(&self) -> Pid {
        match &self.target {
            Target::Local(p) => p.core.pid(),
            Target::Remote { pid, .. } => *pid,
        }
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.pid_of())
    }
}

impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.target, &other.target) {
            (Target::Local(a), Target::Local(b)) => Arc::ptr_eq(a, b),
            (Target::Remote { pid: a, .. }, Target::Remote { pid: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl<M> Eq for ActorRef<M> {}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn from_process(process: Arc<Process<M>>) -> Self {
        ActorRef {
            target: Target::Local(process),
        }
    }

    pub(crate) fn remote(pid: Pid, handle: Handle) -> Self {
        ActorRef {
            target: Target::Remote { pid, handle },
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.pid_of()
    }

    /// A handle to the runtime the process lives in (for a remote process: this node's).
    pub fn handle(&self) -> Handle {
        match &self.target {
            Target::Local(p) => p.core.handle.clone(),
            Target::Remote { handle, .. } => handle.clone(),
        }
    }

    fn shared(&self) -> &Arc<crate::runtime::Shared> {
        match &self.target {
            Target::Local(p) => p.core.shared(),
            Target::Remote { handle, .. } => &handle.shared,
        }
    }

    /// Whether the process is still running (for a remote process: whether its node is
    /// a connected member; its exit is learned through a monitor).
    pub fn is_alive(&self) -> bool {
        match &self.target {
            Target::Local(p) => !p.mailbox.is_closed(),
            Target::Remote { pid, handle } => {
                handle.shared.router().is_some_and(|r| r.is_up(pid.node()))
            }
        }
    }

    /// Sends without waiting: a full mailbox gives the message back as `Full`. For a
    /// remote process, `Full` means the connection to its node has no room now (its
    /// mailbox being full holds the connection up, so the bound holds end to end).
    ///
    /// Inside a gated handler (durable objects) the message is held until the handler's
    /// writes are durable, and this returns `Ok` at once.
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        if crate::gate::is_active() {
            self.hold(msg);
            return Ok(());
        }
        self.try_send_ungated(msg)
    }

    fn hold(&self, msg: M) {
        let to = self.clone();
        let deliver: crate::gate::Held = Box::new(move || match to.try_send_ungated(msg) {
            Err(SendError::Full(msg)) => crate::gate::HeldSend::Wait(Box::pin(async move {
                let _ = to.send_ungated(msg).await;
            })),
            _ => crate::gate::HeldSend::Done,
        });
        if let Err(deliver) = crate::gate::hold(deliver) {
            deliver();
        }
    }

    /// Sends without waiting and without the output gate (see [`crate::gate`]).
    pub fn try_send_ungated(&self, msg: M) -> Result<(), SendError<M>> {
        match &self.target {
            Target::Local(p) => p.mailbox.try_send(msg).map_err(|e| match e {
                TrySendError::Full(m) => {
                    crate::stats::bump_shared(&p.core.shared().full_refusals);
                    SendError::Full(m)
                }
                TrySendError::Closed(m) => SendError::NoProc(m),
            }),
            Target::Remote { pid, handle } => remote_try_send(*pid, handle, msg),
        }
    }

    /// Sends, waiting (asynchronously) for room; senders waiting on one mailbox get room in
    /// the order they started waiting. Inside a gated handler the message is held (see
    /// [`ActorRef::try_send`]).
    ///
    /// The future does nothing until polled. Its first poll delivers the message if the
    /// mailbox has room (one lock of the mailbox, no allocation); only a full mailbox makes
    /// it wait. Dropping it before it completes never delivers the message.
    pub fn send(&self, msg: M) -> SendFut<'_, M> {
        SendFut {
            to: self,
            msg: Some(msg),
            gated: true,
            wait: Wait::Nothing,
        }
    }

    /// Sends, waiting for room, without the output gate (see [`crate::gate`]).
    pub fn send_ungated(&self, msg: M) -> SendFut<'_, M> {
        SendFut {
            to: self,
            msg: Some(msg),
            gated: false,
            wait: Wait::Nothing,
        }
    }

    /// Sends a request built around a fresh [`Reply`] and waits for the answer, at most
    /// `timeout` in all (waiting for mailbox room included). Requests leave at once even
    /// from a gated handler, which waits for the answer.
    pub async fn call<R>(
        &self,
        make: impl FnOnce(Reply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let deadline = Instant::now() + timeout;
        let (reply, mut rx) = Reply::pair_cached();
        match crate::gate::bypass(|| self.try_send_ungated(make(reply))) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => {
                let driver = &self.shared().driver;
                match crate::time::with_deadline(driver, deadline, self.send_ungated(msg)).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(call_error(&e)),
                    None => return Err(CallError::Timeout),
                }
            }
            Err(e) => return Err(call_error(&e)),
        }
        // The answer needs the callee to run, so the task yields before it looks at the
        // slot, and arms a timer only if the answer is not there after the yield.
        let driver = &self.shared().driver;
        let answer = crate::time::until_after_yield(driver, deadline, Pin::new(&mut rx))
            .await
            .unwrap_or(Err(CallError::Timeout));
        // The slot goes back to this thread's spare if the call is over and nothing else
        // holds it; a call cancelled while it waits drops `rx` as usual.
        rx.recycle();
        answer
    }
}

/// Future returned by [`ActorRef::send`] and [`ActorRef::send_ungated`].
///
/// A local target's mailbox is known since the `ActorRef` was made, so the local path
/// never looks at the mesh: the first poll pushes into the mailbox (or queues as a waiting
/// sender when it is full) under one lock. A remote target's path lives in `#[cold]`
/// functions of its own.
#[must_use = "futures do nothing unless polled; dropping a SendFut drops its message"]
pub struct SendFut<'a, M> {
    to: &'a ActorRef<M>,
    /// The message until the first poll.
    msg: Option<M>,
    /// Whether an active output gate holds the message.
    gated: bool,
    /// What the future waits for after a first poll that could not deliver.
    wait: Wait<'a, M>,
}

enum Wait<'a, M> {
    /// Nothing (not polled yet, or resolved).
    Nothing,
    /// Queued for room in a full local mailbox.
    Local(MailboxSendFut<'a, M, Signal>),
    /// Waiting for room on the connection to the target's node.
    Remote(BoxFuture<RemoteSendResult>),
}

// Never pinned structurally: the message and the mailbox's future (itself `Unpin`) move
// freely, and the remote future is boxed.
impl<M> Unpin for SendFut<'_, M> {}

impl<M: Send + 'static> Future for SendFut<'_, M> {
    type Output = Result<(), SendError<M>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(msg) = this.msg.take() {
            if this.gated && crate::gate::is_active() {
                this.to.hold(msg);
                return Poll::Ready(Ok(()));
            }
            match &this.to.target {
                Target::Local(p) => match p.mailbox.try_send(msg) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(TrySendError::Closed(m)) => return Poll::Ready(Err(SendError::NoProc(m))),
                    Err(TrySendError::Full(m)) => this.wait = Wait::Local(p.mailbox.send(m)),
                },
                Target::Remote { pid, handle } => match remote_send_start(*pid, handle, msg) {
                    Ok(fut) => this.wait = Wait::Remote(fut),
                    Err(done) => return Poll::Ready(done),
                },
            }
        }
        this.poll_wait(cx)
    }
}

impl<M: Send + 'static> SendFut<'_, M> {
    /// Polls what a first poll left to wait for (a full mailbox, a remote connection).
    #[cold]
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError<M>>> {
        let out = match &mut self.wait {
            Wait::Local(fut) => ready!(Pin::new(fut).poll(cx))
                .map_err(|MailboxSendError::Closed(m)| SendError::NoProc(m)),
            Wait::Remote(fut) => ready!(fut.as_mut().poll(cx)).map_err(give_back),
            Wait::Nothing => panic!("ActorRef's SendFut polled after completion"),
        };
        self.wait = Wait::Nothing;
        Poll::Ready(out)
    }
}

impl<M> fmt::Debug for SendFut<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.msg, &self.wait) {
            (Some(_), _) => "not polled",
            (None, Wait::Local(_)) => "waiting for room",
            (None, Wait::Remote(_)) => "waiting for the connection",
            (None, Wait::Nothing) => "done",
        };
        f.debug_struct("SendFut")
            .field("to", &self.to.pid_of())
            .field("state", &state)
            .finish()
    }
}

/// `try_send` to a pid on another node: the mesh's router takes it, if there is one.
#[cold]
fn remote_try_send<M: Send + 'static>(
    pid: Pid,
    handle: &Handle,
    msg: M,
) -> Result<(), SendError<M>> {
    match handle.shared.router() {
        Some(router) => router.try_send(pid, Box::new(msg)).map_err(give_back),
        None => Err(SendError::NoConnection(msg)),
    }
}

/// The first step of `send` to a pid on another node: delivered at once if the connection
/// has room, else the router's future that waits for it.
#[cold]
fn remote_send_start<M: Send + 'static>(
    pid: Pid,
    handle: &Handle,
    msg: M,
) -> Result<BoxFuture<RemoteSendResult>, Result<(), SendError<M>>> {
    let Some(router) = handle.shared.router() else {
        return Err(Err(SendError::NoConnection(msg)));
    };
    match router.try_send(pid, Box::new(msg)) {
        Ok(()) => Err(Ok(())),
        Err((RemoteSendFailure::Full, msg)) => Ok(router.send(pid, msg)),
        Err(refused) => Err(Err(give_back(refused))),
    }
}

/// Why a request could not be sent, as the caller sees it.
fn call_error<M>(error: &SendError<M>) -> CallError {
    match error {
        SendError::WrongType(_) | SendError::Unregistered(_) => CallError::WrongType,
        SendError::NoConnection(_) => CallError::NoConnection,
        SendError::Full(_) | SendError::NoProc(_) => CallError::NoProc,
    }
}

/// Turns the router's refusal back into a typed error with the message.
fn give_back<M: 'static>((failure, msg): (RemoteSendFailure, AnyMessage)) -> SendError<M> {
    // The router gives back the box it was handed (its contract), so this always holds.
    let msg = *msg
        .downcast::<M>()
        .expect("RemoteRouter returned a different message than it was given");
    match failure {
        RemoteSendFailure::Full => SendError::Full(msg),
        RemoteSendFailure::NoConnection => SendError::NoConnection(msg),
        RemoteSendFailure::Unregistered => SendError::Unregistered(msg),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use super::{ActorRef, SendError, Target};
    use crate::{Ctx, Runtime, SpawnOptions};

    /// A process that never reads its mailbox (capacity `capacity`), so a test can watch it.
    fn idle(rt: &Runtime, capacity: usize) -> ActorRef<u32> {
        rt.spawn_opts(
            SpawnOptions {
                mailbox_capacity: Some(capacity),
                ..SpawnOptions::default()
            },
            |_ctx: Ctx<u32>| std::future::pending::<()>(),
        )
        .unwrap()
    }

    fn queued(actor: &ActorRef<u32>) -> usize {
        match &actor.target {
            Target::Local(p) => p.mailbox.len(),
            Target::Remote { .. } => unreachable!("a local process"),
        }
    }

    #[test]
    fn send_future_delivers_only_when_polled_and_nothing_when_dropped_unpolled() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let actor = idle(&rt, 4);
        let mut cx = Context::from_waker(Waker::noop());
        let fut = actor.send(1);
        assert_eq!(queued(&actor), 0, "a send future is lazy");
        drop(fut);
        assert_eq!(
            queued(&actor),
            0,
            "an unpolled send future delivers nothing"
        );
        let mut fut = actor.send(2);
        assert!(matches!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(queued(&actor), 1);
        rt.shutdown();
    }

    #[test]
    fn send_future_waits_for_room_in_a_full_mailbox_and_gets_it_when_a_slot_frees() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let actor = idle(&rt, 1);
        actor.try_send(1).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut fut = actor.send(2);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending(), "full: waits");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending(), "still full");
        let Target::Local(p) = &actor.target else {
            unreachable!("a local process")
        };
        assert!(p.mailbox.try_recv().is_some(), "the receiver frees a slot");
        assert!(matches!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(queued(&actor), 1, "the waiting message took the freed slot");
        rt.shutdown();
    }

    #[test]
    fn send_future_gives_the_message_back_when_the_process_is_gone() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let actor = idle(&rt, 1);
        actor.try_send(1).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiting = actor.send(2);
        assert!(Pin::new(&mut waiting).poll(&mut cx).is_pending());
        rt.kill(actor.pid());
        let gone = rt.block_on(rt.wait_exit(actor.pid()));
        assert_eq!(gone, crate::ExitReason::Killed);
        match Pin::new(&mut waiting).poll(&mut cx) {
            Poll::Ready(Err(SendError::NoProc(2))) => {}
            other => panic!("a waiting sender gets its message back, got {other:?}"),
        }
        let mut late = actor.send(3);
        match Pin::new(&mut late).poll(&mut cx) {
            Poll::Ready(Err(SendError::NoProc(3))) => {}
            other => panic!("a send to a dead process gives the message back, got {other:?}"),
        }
        rt.shutdown();
    }
}
