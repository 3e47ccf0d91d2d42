//! Typed handles to processes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_mailbox::{SendError as MailboxSendError, TrySendError};

use crate::pid::Pid;
use crate::process::Process;
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
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::NoProc(m) | SendError::WrongType(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::NoProc(_) => f.write_str("NoProc(..)"),
            SendError::WrongType(_) => f.write_str("WrongType(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("mailbox full"),
            SendError::NoProc(_) => f.write_str("no such process"),
            SendError::WrongType(_) => f.write_str("the process takes another message type"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A typed handle to a process that takes messages of type `M`.
///
/// It holds the process itself, so sending needs no table lookup. It stays valid after the
/// process exits: sends then return `NoProc` with the message.
pub struct ActorRef<M> {
    process: Arc<Process<M>>,
}

impl<M> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        ActorRef {
            process: self.process.clone(),
        }
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.process.core.pid())
    }
}

impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.process, &other.process)
    }
}

impl<M> Eq for ActorRef<M> {}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn from_process(process: Arc<Process<M>>) -> Self {
        ActorRef { process }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.process.core.pid()
    }

    /// A handle to the runtime the process lives in.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.process.core.shared.clone(),
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&self) -> bool {
        !self.process.mailbox.is_closed()
    }

    /// Sends without waiting: a full mailbox gives the message back as `Full`.
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
        self.process.mailbox.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) => SendError::Full(m),
            TrySendError::Closed(m) => SendError::NoProc(m),
        })
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
        self.process
            .mailbox
            .send(msg)
            .await
            .map_err(|MailboxSendError::Closed(m)| SendError::NoProc(m))
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
                let driver = &self.process.core.shared.driver;
                match crate::time::with_deadline(driver, deadline, self.send_ungated(msg)).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return Err(CallError::NoProc),
                    None => return Err(CallError::Timeout),
                }
            }
            Err(_) => return Err(CallError::NoProc),
        }
        // A local answer is often there already: no timer needed then.
        if let Some(v) = rx.try_recv() {
            return Ok(v);
        }
        let driver = &self.process.core.shared.driver;
        crate::time::with_deadline(driver, deadline, rx)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}
