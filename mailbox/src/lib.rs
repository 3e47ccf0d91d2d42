//! The mailbox of a Cairn process: a bounded MPSC queue of user messages plus an
//! unbounded system lane for signals, for exactly one receiving process.
//!
//! * The **user lane** is bounded (backpressure, nothing dropped silently):
//!   [`Mailbox::try_send`] on a full mailbox returns the message in [`TrySendError::Full`];
//!   [`Mailbox::send`] waits for room, and waiting senders are served first come, first served.
//! * The **system lane** (exits, monitors, stops) is never full and is always drained before
//!   the user lane (control before data), so exits and monitors get through a flooded mailbox.
//! * [`Mailbox::close`] ends the mailbox: queued user messages are counted as dead letters
//!   ([`dead_letters`]), waiting senders get their messages back, and the receiver gets
//!   [`Received::Closed`]. Nothing is dropped silently.
//!
//! The mailbox is generic over the message type `M` and the signal type `S` and depends on
//! no runtime: it speaks only [`core::task::Waker`]. The protocol and its invariants are
//! documented in the [`mailbox`] module.
//!
//! # Size
//!
//! `size_of::<Mailbox<u64, u64>>()` is **160 bytes** on 64-bit targets (three empty
//! `VecDeque`s, the receiver's `Option<Waker>`, counters, the capacity, a one-byte
//! spin lock and the deferred-wake flag), and an empty mailbox owns no heap memory: nothing is preallocated,
//! whatever the capacity. A test keeps the size under 192 bytes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::task::{Context, Poll, Waker};
//! use cairn_mailbox::{Mailbox, Received, TrySendError};
//!
//! #[derive(Debug, PartialEq)]
//! enum Signal { Stop }
//!
//! let mailbox: Arc<Mailbox<&str, Signal>> = Arc::new(Mailbox::new(2));
//! mailbox.try_send("hello").unwrap();
//! mailbox.try_send("world").unwrap();
//! // The user lane is full: the message comes back.
//! assert_eq!(mailbox.try_send("again"), Err(TrySendError::Full("again")));
//! // The system lane is never full, and is read first.
//! mailbox.send_signal(Signal::Stop).unwrap();
//! assert_eq!(mailbox.try_recv(), Some(Received::Signal(Signal::Stop)));
//! assert_eq!(mailbox.try_recv(), Some(Received::Message("hello")));
//!
//! // Futures work with any executor; here we poll by hand.
//! let mut cx = Context::from_waker(Waker::noop());
//! assert_eq!(mailbox.poll_recv(&mut cx), Poll::Ready(Received::Message("world")));
//! assert_eq!(mailbox.poll_recv(&mut cx), Poll::Pending);
//!
//! // Closing drops what is queued (counted as dead letters) and ends the receiver.
//! mailbox.try_send("late").unwrap();
//! assert_eq!(mailbox.close(), 1);
//! assert_eq!(mailbox.try_recv(), Some(Received::Closed));
//! assert!(mailbox.try_send("after").unwrap_err().is_closed());
//! ```

pub mod error;
pub mod mailbox;
mod spin;
mod sync;

pub use error::{SendError, TrySendError};
pub use mailbox::{dead_letters, Mailbox, Received, RecvFut, SendFut};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Mailbox;

    #[test]
    fn mailbox_of_u64_stays_small() {
        let size = std::mem::size_of::<Mailbox<u64, u64>>();
        assert!(size < 192, "Mailbox<u64, u64> grew to {size} bytes");
    }
}
