//! Behaviour of one mailbox driven by hand: capacity, waiting senders, the system lane,
//! close. Futures are polled manually with counting wakers; no sleeps.
#![cfg(not(loom))]

mod util;

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;

use cairn_mailbox::{Mailbox, Received, RecvFut, SendError, SendFut, TrySendError};
use util::{block_on, poll_with, CountingWaker};

type Mb = Mailbox<u32, &'static str>;

/// A mailbox of capacity 1 already holding message 0.
fn full_mailbox_of_one() -> Mb {
    let mb = Mb::new(1);
    mb.try_send(0).unwrap();
    mb
}

/// A send of `msg` polled once with a fresh counting waker, which it must wait on (the
/// mailbox is full); with that waker's counter and the waker.
#[track_caller]
fn waiting_send(mb: &Mb, msg: u32) -> (SendFut<'_, u32, &'static str>, Arc<CountingWaker>, Waker) {
    let (counter, waker) = CountingWaker::new();
    let mut fut = mb.send(msg);
    assert!(poll_with(&mut fut, &waker).is_pending());
    (fut, counter, waker)
}

/// A receive polled once with a fresh counting waker, which it must wait on (the mailbox is
/// empty); with that waker's counter and the waker.
#[track_caller]
fn waiting_recv(mb: &Mb) -> (RecvFut<'_, u32, &'static str>, Arc<CountingWaker>, Waker) {
    let (counter, waker) = CountingWaker::new();
    let mut recv = mb.recv();
    assert!(poll_with(&mut recv, &waker).is_pending());
    (recv, counter, waker)
}

/// One `poll_recv_deferring` by a receiver whose own waker nobody looks at.
fn poll_deferring(mb: &Mb) -> Poll<Received<u32, &'static str>> {
    mb.poll_recv_deferring(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn mailbox_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Mailbox<u32, String>>();
    assert_send_sync::<Arc<Mailbox<Vec<u8>, String>>>();
}

#[test]
#[should_panic(expected = "capacity must be at least 1")]
fn new_panics_on_zero_capacity() {
    let _ = Mb::new(0);
}

#[test]
fn default_capacity_is_1024() {
    assert_eq!(Mb::DEFAULT_CAPACITY, 1024);
    assert_eq!(Mb::new(Mb::DEFAULT_CAPACITY).capacity(), 1024);
}

#[test]
fn try_send_returns_full_with_the_message_at_capacity() {
    let mb = Mb::new(2);
    assert!(mb.is_empty());
    mb.try_send(1).unwrap();
    mb.try_send(2).unwrap();
    assert_eq!(mb.len(), 2);
    let err = mb.try_send(3).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err, TrySendError::Full(3));
    assert_eq!(err.into_inner(), 3);
    assert_eq!(mb.len(), 2);
}

#[test]
fn try_send_returns_closed_with_the_message_after_close() {
    let mb = Mb::new(2);
    mb.close();
    assert!(mb.is_closed());
    let err = mb.try_send(7).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err, TrySendError::Closed(7));
}

#[test]
fn errors_debug_without_requiring_debug_messages() {
    struct Opaque;
    assert_eq!(format!("{:?}", TrySendError::Full(Opaque)), "Full(..)");
    assert_eq!(format!("{:?}", TrySendError::Closed(Opaque)), "Closed(..)");
    assert_eq!(format!("{:?}", SendError::Closed(Opaque)), "Closed(..)");
    assert_eq!(
        TrySendError::Full(Opaque).to_string(),
        "sending on a full mailbox"
    );
    assert!(SendError::Closed(Opaque).is_closed());
}

#[test]
fn send_completes_at_once_when_there_is_room() {
    let mb = Mb::new(1);
    let mut fut = mb.send(5);
    assert_eq!(poll_with(&mut fut, Waker::noop()), Poll::Ready(Ok(())));
    drop(fut);
    assert_eq!(mb.try_recv(), Some(Received::Message(5)));
}

#[test]
fn send_waits_for_room_and_resumes_when_the_receiver_frees_a_slot() {
    let mb = full_mailbox_of_one();
    let (mut fut, counter, waker) = waiting_send(&mb, 1);
    assert_eq!(mb.waiting_senders(), 1);
    assert_eq!(counter.wakes(), 0);

    assert_eq!(mb.try_recv(), Some(Received::Message(0)));
    assert_eq!(
        counter.wakes(),
        1,
        "freeing a slot must wake the waiting sender"
    );
    assert_eq!(poll_with(&mut fut, &waker), Poll::Ready(Ok(())));
    assert_eq!(mb.waiting_senders(), 0);
    assert_eq!(mb.try_recv(), Some(Received::Message(1)));
}

#[test]
fn blocked_send_on_another_thread_resumes_when_room_frees() {
    let mb = Arc::new(full_mailbox_of_one());
    let sender = {
        let mb = mb.clone();
        thread::spawn(move || block_on(mb.send(1)))
    };
    // Receive both messages; the receiver blocks (parks) until the sender gets through.
    assert_eq!(block_on(mb.recv()), Received::Message(0));
    assert_eq!(block_on(mb.recv()), Received::Message(1));
    assert_eq!(sender.join().unwrap(), Ok(()));
}

#[test]
fn waiting_senders_are_granted_room_in_fifo_order() {
    let mb = full_mailbox_of_one();
    let mut wakers: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
    let mut futs: Vec<_> = (1..=3).map(|i| mb.send(i)).collect();
    for (fut, (_, waker)) in futs.iter_mut().zip(&wakers) {
        assert!(poll_with(fut, waker).is_pending());
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let Some(Received::Message(m)) = mb.try_recv() else {
            panic!("expected a message")
        };
        order.push(m);
        // Poll the waiters newest first: only the oldest one may get through.
        let mut completed = None;
        for i in (0..futs.len()).rev() {
            if poll_with(&mut futs[i], &wakers[i].1).is_ready() {
                assert!(completed.is_none(), "two senders got one slot");
                completed = Some(i);
            }
        }
        let i = completed.expect("the freed slot went to nobody");
        assert_eq!(i, 0, "a newer waiter overtook an older one");
        drop(futs.remove(0));
        wakers.remove(0);
    }
    assert_eq!(mb.try_recv(), Some(Received::Message(3)));
    assert_eq!(order, [0, 1, 2]);
}

#[test]
fn only_the_oldest_waiter_is_woken_when_one_slot_frees() {
    let mb = full_mailbox_of_one();
    let (mut f1, c1, w1) = waiting_send(&mb, 1);
    let (mut f2, c2, w2) = waiting_send(&mb, 2);
    mb.try_recv().unwrap();
    assert_eq!((c1.wakes(), c2.wakes()), (1, 0));
    assert!(poll_with(&mut f2, &w2).is_pending());
    assert_eq!(poll_with(&mut f1, &w1), Poll::Ready(Ok(())));
}

#[test]
fn try_send_does_not_overtake_a_waiting_sender() {
    let mb = full_mailbox_of_one();
    let (mut fut, _, _) = waiting_send(&mb, 1);
    // The slot freed here is owed to the waiting sender, not to the newcomer.
    assert_eq!(mb.try_recv(), Some(Received::Message(0)));
    assert_eq!(mb.len(), 0);
    assert_eq!(mb.try_send(9), Err(TrySendError::Full(9)));
    // A fresh `send` queues behind too.
    let (mut late, _, _) = waiting_send(&mb, 8);
    assert_eq!(poll_with(&mut fut, Waker::noop()), Poll::Ready(Ok(())));
    assert_eq!(mb.try_recv(), Some(Received::Message(1)));
    assert_eq!(poll_with(&mut late, Waker::noop()), Poll::Ready(Ok(())));
    assert_eq!(mb.try_recv(), Some(Received::Message(8)));
}

#[test]
fn dropping_a_granted_sender_passes_the_grant_to_the_next_waiter() {
    let mb = full_mailbox_of_one();
    let (f1, c1, _w1) = waiting_send(&mb, 1);
    let (mut f2, c2, w2) = waiting_send(&mb, 2);

    mb.try_recv().unwrap(); // grants f1
    assert_eq!((c1.wakes(), c2.wakes()), (1, 0));
    drop(f1); // cancelled after its grant: the grant must move to f2
    assert_eq!(
        c2.wakes(),
        1,
        "the passed-on grant must wake the next waiter"
    );
    assert_eq!(poll_with(&mut f2, &w2), Poll::Ready(Ok(())));
    // The cancelled message was never delivered.
    assert_eq!(mb.try_recv(), Some(Received::Message(2)));
    assert_eq!(mb.try_recv(), None);
    // And no capacity leaked: the one slot is usable again.
    mb.try_send(3).unwrap();
    assert!(mb.try_send(4).unwrap_err().is_full());
}

#[test]
fn dropping_the_only_granted_sender_frees_its_slot() {
    let mb = full_mailbox_of_one();
    let (f1, _, _) = waiting_send(&mb, 1);
    mb.try_recv().unwrap(); // grants f1
    assert!(mb.try_send(9).is_err());
    drop(f1);
    assert_eq!(mb.waiting_senders(), 0);
    mb.try_send(9).unwrap();
}

#[test]
fn dropping_an_ungranted_sender_removes_its_waiter() {
    let mb = full_mailbox_of_one();
    let (f1, _, _) = waiting_send(&mb, 1);
    let (mut f2, c2, w2) = waiting_send(&mb, 2);
    drop(f1);
    assert_eq!(mb.waiting_senders(), 1);
    mb.try_recv().unwrap();
    assert_eq!(c2.wakes(), 1, "the slot must go to the remaining waiter");
    assert_eq!(poll_with(&mut f2, &w2), Poll::Ready(Ok(())));
    assert_eq!(mb.try_recv(), Some(Received::Message(2)));
}

#[test]
fn system_lane_is_not_blocked_by_a_full_user_lane_and_is_drained_first() {
    let mb = full_mailbox_of_one();
    for sig in ["exit", "down", "stop"] {
        mb.send_signal(sig).unwrap();
    }
    assert_eq!(mb.signal_len(), 3);
    assert_eq!(mb.try_recv(), Some(Received::Signal("exit")));
    assert_eq!(mb.try_recv(), Some(Received::Signal("down")));
    mb.send_signal("late").unwrap();
    assert_eq!(mb.try_recv(), Some(Received::Signal("stop")));
    assert_eq!(mb.try_recv(), Some(Received::Signal("late")));
    assert_eq!(mb.try_recv(), Some(Received::Message(0)));
    assert_eq!(mb.try_recv(), None);
}

#[test]
fn signal_wakes_a_receiver_blocked_on_an_empty_mailbox() {
    let mb = Mb::new(4);
    let (mut recv, counter, waker) = waiting_recv(&mb);
    mb.send_signal("exit").unwrap();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(
        poll_with(&mut recv, &waker),
        Poll::Ready(Received::Signal("exit"))
    );
}

#[test]
fn message_wakes_a_receiver_blocked_on_an_empty_mailbox() {
    let mb = Mb::new(4);
    let (mut recv, counter, waker) = waiting_recv(&mb);
    mb.try_send(1).unwrap();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(
        poll_with(&mut recv, &waker),
        Poll::Ready(Received::Message(1))
    );
}

#[test]
fn blocked_receiver_on_another_thread_gets_a_signal() {
    let mb = Arc::new(Mb::new(4));
    let receiver = {
        let mb = mb.clone();
        thread::spawn(move || block_on(mb.recv()))
    };
    mb.send_signal("exit").unwrap();
    assert_eq!(receiver.join().unwrap(), Received::Signal("exit"));
}

#[test]
fn close_returns_the_number_of_dropped_messages_and_is_idempotent() {
    let mb = Mb::new(4);
    mb.try_send(1).unwrap();
    mb.try_send(2).unwrap();
    mb.send_signal("exit").unwrap();
    assert_eq!(mb.close(), 2);
    assert_eq!(mb.close(), 0);
    assert!(mb.is_empty());
    assert_eq!(mb.signal_len(), 0);
}

#[test]
fn close_gives_waiting_senders_their_messages_back() {
    let mb = full_mailbox_of_one();
    let (mut f1, c1, w1) = waiting_send(&mb, 1);
    let (mut f2, c2, w2) = waiting_send(&mb, 2);
    assert_eq!(mb.close(), 1);
    assert_eq!(
        (c1.wakes(), c2.wakes()),
        (1, 1),
        "close must wake every waiting sender"
    );
    assert_eq!(
        poll_with(&mut f2, &w2),
        Poll::Ready(Err(SendError::Closed(2)))
    );
    assert_eq!(
        poll_with(&mut f1, &w1),
        Poll::Ready(Err(SendError::Closed(1)))
    );
    assert_eq!(mb.waiting_senders(), 0);
}

#[test]
fn close_gives_a_granted_but_unpolled_sender_its_message_back() {
    let mb = full_mailbox_of_one();
    let (mut f1, _, _) = waiting_send(&mb, 1);
    mb.try_recv().unwrap(); // grants f1
    assert_eq!(mb.close(), 0);
    assert_eq!(
        poll_with(&mut f1, Waker::noop()),
        Poll::Ready(Err(SendError::Closed(1)))
    );
}

#[test]
fn send_on_a_closed_mailbox_returns_the_message() {
    let mb = Mb::new(1);
    mb.close();
    assert_eq!(block_on(mb.send(4)), Err(SendError::Closed(4)));
    assert_eq!(mb.send_signal("exit"), Err("exit"));
}

#[test]
fn recv_returns_closed_after_close_and_close_wakes_the_receiver() {
    let mb = Mb::new(4);
    let (mut recv, counter, waker) = waiting_recv(&mb);
    mb.close();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(poll_with(&mut recv, &waker), Poll::Ready(Received::Closed));
    assert_eq!(mb.try_recv(), Some(Received::Closed));
    assert_eq!(block_on(mb.recv()), Received::Closed);
}

#[test]
fn try_recv_on_an_empty_open_mailbox_is_none() {
    let mb = Mb::new(4);
    assert_eq!(mb.try_recv(), None);
}

#[test]
fn queued_messages_are_dropped_outside_the_lock() {
    // A message whose destructor uses the mailbox would deadlock if close() dropped it
    // while holding the lock.
    struct Reentrant(Arc<Mailbox<Option<Reentrant>, ()>>);
    impl Drop for Reentrant {
        fn drop(&mut self) {
            let _ = self.0.len();
        }
    }
    let mb: Arc<Mailbox<Option<Reentrant>, ()>> = Arc::new(Mailbox::new(2));
    mb.try_send(Some(Reentrant(mb.clone()))).unwrap();
    assert_eq!(mb.close(), 1);
}

#[test]
fn a_deferring_receiver_grants_at_once_and_wakes_the_sender_at_the_end_of_its_turn() {
    let mb = Mb::new(2);
    mb.try_send(0).unwrap();
    mb.try_send(1).unwrap();
    let (mut fut, counter, waker) = waiting_send(&mb, 2);
    assert_eq!(poll_deferring(&mb), Poll::Ready(Received::Message(0)));
    assert_eq!(
        counter.wakes(),
        0,
        "the wake-up waits for the end of the turn"
    );
    // The slot is granted already: no one else can take it, and the sender gets in if
    // polled for any reason.
    assert_eq!(mb.try_send(9), Err(TrySendError::Full(9)));
    mb.wake_deferred();
    assert_eq!(counter.wakes(), 1, "the end of the turn wakes the grantee");
    mb.wake_deferred();
    assert_eq!(counter.wakes(), 1, "once");
    assert_eq!(poll_with(&mut fut, &waker), Poll::Ready(Ok(())));
    assert_eq!(mb.try_recv(), Some(Received::Message(1)));
    assert_eq!(mb.try_recv(), Some(Received::Message(2)));
}

#[test]
fn a_deferring_receiver_that_parks_wakes_its_grantees_first() {
    let mb = full_mailbox_of_one();
    let (mut f1, c1, w1) = waiting_send(&mb, 1);
    let (mut f2, c2, w2) = waiting_send(&mb, 2);
    assert_eq!(poll_deferring(&mb), Poll::Ready(Received::Message(0)));
    assert_eq!((c1.wakes(), c2.wakes()), (0, 0));
    // Nothing queued (the grantee has not pushed yet): the receiver parks, waking it.
    assert!(poll_deferring(&mb).is_pending());
    assert_eq!(
        (c1.wakes(), c2.wakes()),
        (1, 0),
        "FIFO: only the oldest was granted"
    );
    assert_eq!(poll_with(&mut f1, &w1), Poll::Ready(Ok(())));
    assert!(poll_with(&mut f2, &w2).is_pending());
}

#[test]
fn close_wakes_a_sender_whose_grant_wake_up_was_deferred() {
    let mb = full_mailbox_of_one();
    let (mut fut, counter, waker) = waiting_send(&mb, 1);
    assert!(poll_deferring(&mb).is_ready());
    assert_eq!(mb.close(), 0);
    assert_eq!(counter.wakes(), 1);
    assert_eq!(
        poll_with(&mut fut, &waker),
        Poll::Ready(Err(SendError::Closed(1)))
    );
}
