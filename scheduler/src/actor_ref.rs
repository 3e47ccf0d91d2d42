//! Typed handles to processes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_mailbox::{SendError as MailboxSendError, TrySendError};

use crate::pid::Pid;
use crate::process::Process;
use crate::remote::{AnyMessage, RemoteSendFailure};
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
            Target::Local(p) => Handle {
                shared: p.core.shared.clone(),
            },
            Target::Remote { handle, .. } => handle.clone(),
        }
    }

    fn shared(&self) -> &Arc<crate::runtime::Shared> {
        match &self.target {
            Target::Local(p) => &p.core.shared,
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
                TrySendError::Full(m) => SendError::Full(m),
                TrySendError::Closed(m) => SendError::NoProc(m),
            }),
            Target::Remote { pid, handle } => match handle.shared.router() {
                Some(router) => router.try_send(*pid, Box::new(msg)).map_err(give_back),
                None => Err(SendError::NoConnection(msg)),
            },
        }
    }

    /// Sends, waiting (asynchronously) for room; senders waiting on one mailbox get room in
    /// the order they started waiting. Inside a gated handler the message is held (see
    /// [`ActorRef::try_send`]).
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        if crate::gate::is_active() {
            self.hold(msg);
            return Ok(());
        }
        self.send_ungated(msg).await
    }

    /// Sends, waiting for room, without the output gate (see [`crate::gate`]).
    pub async fn send_ungated(&self, msg: M) -> Result<(), SendError<M>> {
        // Fast path: room now (and nobody waiting ahead of us) needs no send future.
        let msg = match self.try_send_ungated(msg) {
            Err(SendError::Full(msg)) => msg,
            done => return done,
        };
        match &self.target {
            Target::Local(p) => p
                .mailbox
                .send(msg)
                .await
                .map_err(|MailboxSendError::Closed(m)| SendError::NoProc(m)),
            Target::Remote { pid, handle } => match handle.shared.router() {
                Some(router) => router.send(*pid, Box::new(msg)).await.map_err(give_back),
                None => Err(SendError::NoConnection(msg)),
            },
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
        let (reply, rx) = Reply::pair();
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
        // A local answer is often there already: no timer needed then.
        if let Some(v) = rx.try_recv() {
            return Ok(v);
        }
        let driver = &self.shared().driver;
        crate::time::with_deadline(driver, deadline, rx)
            .await
            .unwrap_or(Err(CallError::Timeout))
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
