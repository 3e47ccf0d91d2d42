//! Durable work pushes back: an object whose commits do not complete stops taking
//! messages once `MAX_HELD_HANDLERS` handlers wait on them, its mailbox fills, and senders
//! wait — instead of write sets and held output queueing without bound.

mod common;

use std::time::Duration;

use common::{Counter, CounterMsg};

const T: Duration = Duration::from_secs(5);
/// Held handlers (activation.rs) plus a default mailbox, plus the one being handled.
const BOUND: u64 = 1024 + 1024 + 1;

#[test]
fn an_object_whose_commits_stall_stops_taking_messages_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::node(dir.path(), 2, Duration::from_secs(30));
    node.host_local::<Counter>();
    let counter = node.object::<Counter>("stalled");
    node.block_on(counter.send(CounterMsg::Add(0))).unwrap();
    let store = node.store().clone();
    let hold = store.fault_injection().hold_commits();
    // Send until a send has waited 300 ms for room (or 10,000 went in).
    let handle = node.handle().clone();
    let sender = counter.clone();
    let sent = node.block_on(async move {
        let mut sent = 0u64;
        while sent < 10_000 {
            let send = sender.send(CounterMsg::Add(1));
            match handle.timeout(Duration::from_millis(300), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("send failed: {e:?}"),
                Err(_) => break,
            }
        }
        sent
    });
    assert!(
        sent <= BOUND,
        "{sent} messages taken while no commit completed"
    );
    assert!(sent >= 1024, "only {sent} messages taken");
    drop(hold);
    let total = node.block_on(counter.call(CounterMsg::Get, T)).unwrap();
    assert_eq!(total, sent, "a message was lost");
}
