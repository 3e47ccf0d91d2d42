//! Errors of the send operations. Every error gives the message back to the caller
//! (nothing is dropped silently).
//!
//! `Debug` is written by hand so that it does not require `M: Debug`, as in
//! crossbeam-channel's `err.rs`: a process may send values that are not `Debug`.

use std::fmt;

/// Why [`Mailbox::try_send`](crate::Mailbox::try_send) did not enqueue the message.
#[derive(thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<M> {
    /// The user lane is at capacity, or all free room is owed to senders already waiting
    /// in [`Mailbox::send`](crate::Mailbox::send). The message is given back.
    #[error("sending on a full mailbox")]
    Full(M),
    /// The mailbox was closed (its process ended). The message is given back.
    #[error("sending on a closed mailbox")]
    Closed(M),
}

impl<M> TrySendError<M> {
    /// Takes the message back out of the error.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(msg) | TrySendError::Closed(msg) => msg,
        }
    }

    /// Whether the send failed because the mailbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Whether the send failed because the mailbox was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<M> From<SendError<M>> for TrySendError<M> {
    fn from(err: SendError<M>) -> Self {
        match err {
            SendError::Closed(msg) => TrySendError::Closed(msg),
        }
    }
}

/// Why [`Mailbox::send`](crate::Mailbox::send) did not enqueue the message.
#[derive(thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SendError<M> {
    /// The mailbox was closed before room was found for the message (or while the sender
    /// was waiting for room). The message is given back.
    #[error("sending on a closed mailbox")]
    Closed(M),
}

impl<M> SendError<M> {
    /// Takes the message back out of the error.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Closed(msg) => msg,
        }
    }

    /// Whether the send failed because the mailbox was closed (always true today; kept so
    /// callers read the same as with [`TrySendError`]).
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}
