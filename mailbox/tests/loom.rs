//! Loom models of the mailbox protocol. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p cairn-mailbox --release --test loom`.
//!
//! Each model is kept to at most three threads and a handful of lock operations so that
//! loom explores every interleaving in seconds. The mailbox's own invariant checks are
//! active under loom (see `CHECK_INVARIANTS`).
#![cfg(loom)]

use std::task::{Context, Poll, Waker};

use cairn_mailbox::{Mailbox, Received, SendError, TrySendError};
use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;

type Mb = Mailbox<u32, &'static str>;

/// A mailbox of capacity 1 already holding message 0.
fn full_mailbox_of_one() -> Arc<Mb> {
    let mb = Arc::new(Mb::new(1));
    mb.try_send(0).unwrap();
    mb
}

fn poll_noop<F: std::future::Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Preemption bound for the three-thread model. Unbounded, it explores the full state
/// space in about a minute (it passed when this was written); loom's docs recommend a
/// bound of 2-3, which in practice finds the same bugs, and keeps the run to seconds.
const THREE_THREAD_PREEMPTION_BOUND: usize = 3;

#[test]
fn loom_two_senders_one_receiver_no_lost_wakeup() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(THREE_THREAD_PREEMPTION_BOUND);
    builder.check(|| {
        // Capacity 1: at least one sender has to wait, and the receiver may block too.
        let mb = Arc::new(Mb::new(1));
        let senders: Vec<_> = [1, 2]
            .into_iter()
            .map(|i| {
                let mb = mb.clone();
                thread::spawn(move || block_on(mb.send(i)).unwrap())
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..2 {
            match block_on(mb.recv()) {
                Received::Message(m) => got.push(m),
                other => panic!("unexpected {other:?}"),
            }
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        for sender in senders {
            sender.join().unwrap();
        }
    });
}

#[test]
fn loom_waiting_sender_keeps_fifo() {
    loom::model(|| {
        let mb = full_mailbox_of_one();
        // The first waiter is queued before the second sender exists.
        let mut first = mb.send(1);
        assert!(poll_noop(&mut first).is_pending());
        let second = {
            let mb = mb.clone();
            thread::spawn(move || block_on(mb.send(2)).unwrap())
        };
        assert_eq!(mb.try_recv(), Some(Received::Message(0)));
        block_on(first).unwrap();
        // Whatever the interleaving, the older waiter's message comes first.
        assert_eq!(block_on(mb.recv()), Received::Message(1));
        assert_eq!(block_on(mb.recv()), Received::Message(2));
        second.join().unwrap();
    });
}

#[test]
fn loom_try_send_does_not_overtake_a_waiting_sender() {
    loom::model(|| {
        let mb = full_mailbox_of_one();
        let mut waiting = mb.send(1);
        assert!(poll_noop(&mut waiting).is_pending());
        let newcomer = {
            let mb = mb.clone();
            thread::spawn(move || mb.try_send(9))
        };
        assert_eq!(mb.try_recv(), Some(Received::Message(0)));
        block_on(waiting).unwrap();
        // Before the recv the lane was full; after it the slot was owed to the waiter.
        assert_eq!(newcomer.join().unwrap(), Err(TrySendError::Full(9)));
        assert_eq!(mb.try_recv(), Some(Received::Message(1)));
    });
}

#[test]
fn loom_cancelled_granted_sender_passes_the_grant_on() {
    loom::model(|| {
        let mb = full_mailbox_of_one();
        let mut cancelled = mb.send(1);
        assert!(poll_noop(&mut cancelled).is_pending());
        let next = {
            let mb = mb.clone();
            thread::spawn(move || block_on(mb.send(2)).unwrap())
        };
        assert_eq!(mb.try_recv(), Some(Received::Message(0))); // grants `cancelled`
        drop(cancelled); // ... which must hand the slot to `next` and wake it
        assert_eq!(block_on(mb.recv()), Received::Message(2));
        next.join().unwrap();
    });
}

#[test]
fn loom_signal_wakes_receiver_blocked_on_empty_user_lane() {
    loom::model(|| {
        let mb = Arc::new(Mb::new(1));
        let signaller = {
            let mb = mb.clone();
            thread::spawn(move || mb.send_signal("exit").unwrap())
        };
        assert_eq!(block_on(mb.recv()), Received::Signal("exit"));
        signaller.join().unwrap();
    });
}

#[test]
fn loom_close_returns_waiting_senders_message() {
    loom::model(|| {
        let mb = full_mailbox_of_one();
        let sender = {
            let mb = mb.clone();
            thread::spawn(move || block_on(mb.send(1)))
        };
        assert_eq!(mb.close(), 1);
        assert_eq!(sender.join().unwrap(), Err(SendError::Closed(1)));
    });
}

#[test]
fn loom_close_wakes_blocked_receiver() {
    loom::model(|| {
        let mb = Arc::new(Mb::new(1));
        let receiver = {
            let mb = mb.clone();
            thread::spawn(move || block_on(mb.recv()))
        };
        mb.close();
        assert_eq!(receiver.join().unwrap(), Received::Closed);
    });
}

/// Two senders block on a full mailbox of one; the receiver takes messages with
/// `poll_recv_deferring` (grant now, wake later) and ends a "turn" with `wake_deferred`
/// after its second message only. Every message arrives: a deferred grant is always woken,
/// by the end of the turn or by the receiver parking.
#[test]
fn loom_deferred_grants_are_never_forgotten() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(THREE_THREAD_PREEMPTION_BOUND);
    builder.check(|| {
        let mb = full_mailbox_of_one();
        let senders: Vec<_> = [1, 2]
            .into_iter()
            .map(|i| {
                let mb = mb.clone();
                thread::spawn(move || block_on(mb.send(i)).unwrap())
            })
            .collect();
        let mut got = Vec::new();
        for turn in 0..3 {
            match block_on(std::future::poll_fn(|cx| mb.poll_recv_deferring(cx))) {
                Received::Message(m) => got.push(m),
                other => panic!("unexpected {other:?}"),
            }
            if turn == 1 {
                mb.wake_deferred();
            }
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        for sender in senders {
            sender.join().unwrap();
        }
    });
}
