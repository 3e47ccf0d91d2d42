//! The process-wide dead-letter counter. Its own test binary with a single test, so no
//! other test closes mailboxes concurrently and the counts are exact.
#![cfg(not(loom))]

use cairn_mailbox::{dead_letters, Mailbox};

#[test]
fn close_and_drop_count_dropped_user_messages_as_dead_letters() {
    let start = dead_letters();

    let mb: Mailbox<u32, u32> = Mailbox::new(8);
    mb.try_send(1).unwrap();
    mb.try_send(2).unwrap();
    mb.try_send(3).unwrap();
    mb.send_signal(9).unwrap(); // signals are not dead letters
    assert_eq!(mb.close(), 3);
    assert_eq!(dead_letters(), start + 3);
    assert_eq!(mb.close(), 0, "a second close drops nothing");
    drop(mb);
    assert_eq!(
        dead_letters(),
        start + 3,
        "dropping a closed mailbox counts nothing"
    );

    // Dropping an unclosed mailbox closes it: its messages are not lost silently.
    let mb: Mailbox<u32, u32> = Mailbox::new(8);
    mb.try_send(4).unwrap();
    mb.try_send(5).unwrap();
    drop(mb);
    assert_eq!(dead_letters(), start + 5);
}
