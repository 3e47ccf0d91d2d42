//! Many senders, one receiver, a small mailbox: nothing lost, nothing duplicated,
//! per-sender order kept. Senders mix `send().await`, `try_send` and cancelled sends.
#![cfg(not(loom))]

mod util;

use std::sync::Arc;
use std::task::Waker;
use std::thread;

use cairn_mailbox::{Mailbox, Received};
use util::{block_on, poll_with};

const SENDERS: u32 = 8;
const PER_SENDER: u32 = 100_000;
const CAPACITY: usize = 64;

#[test]
fn eight_senders_one_receiver_lose_nothing_and_keep_per_sender_order() {
    let mb: Arc<Mailbox<(u32, u32), ()>> = Arc::new(Mailbox::new(CAPACITY));

    let senders: Vec<_> = (0..SENDERS)
        .map(|id| {
            let mb = mb.clone();
            thread::spawn(move || {
                for seq in 0..PER_SENDER {
                    let msg = (id, seq);
                    match seq % 4 {
                        // try_send, falling back to waiting.
                        0 => {
                            if let Err(err) = mb.try_send(msg) {
                                assert!(err.is_full());
                                block_on(mb.send(err.into_inner())).unwrap();
                            }
                        }
                        // Queue as a waiter, then cancel and retry: the cancelled send
                        // must not deliver, and must not strand a grant.
                        1 => {
                            let mut fut = mb.send(msg);
                            if poll_with(&mut fut, Waker::noop()).is_pending() {
                                drop(fut);
                                block_on(mb.send(msg)).unwrap();
                            }
                        }
                        _ => block_on(mb.send(msg)).unwrap(),
                    }
                }
            })
        })
        .collect();

    let receiver = {
        let mb = mb.clone();
        thread::spawn(move || {
            let mut next = vec![0u32; SENDERS as usize];
            let total = SENDERS * PER_SENDER;
            for _ in 0..total {
                match block_on(mb.recv()) {
                    Received::Message((id, seq)) => {
                        assert_eq!(seq, next[id as usize], "sender {id} out of order");
                        next[id as usize] += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            next
        })
    };

    for sender in senders {
        sender.join().unwrap();
    }
    let next = receiver.join().unwrap();
    assert!(next.iter().all(|&n| n == PER_SENDER), "counts: {next:?}");
    assert_eq!(mb.try_recv(), None, "more messages than were sent");
    assert_eq!(mb.waiting_senders(), 0);
}
