//! `send_interval_with` (a message factory, no `Clone`) and what dropping a `TimerRef`
//! does: nothing — as with Erlang's timer references, only `cancel` or the target's exit
//! stops a timer.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn_scheduler::{ActorRef, Ctx, Handle, Message, Reply};
use common::*;

/// Not `Clone`: a `Reply` is one-shot.
enum Msg {
    Tick(u32),
    // Never sent: it is here so that `Msg` cannot be `Clone`.
    #[allow(dead_code)]
    Seen(Reply<Vec<u32>>),
}

/// Tick numbers the tests send themselves, far above any factory count.
const MARKER: u32 = 1_000_000;

/// Signals a channel when dropped: tells the test that a timer let its factory go.
struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A process that forwards the number of every `Tick` it receives to the returned channel.
fn spawn_ticker(h: &Handle) -> (ActorRef<Msg>, mpsc::Receiver<u32>) {
    let (tx, rx) = mpsc::channel();
    let ticker = h.spawn(move |mut ctx: Ctx<Msg>| async move {
        while let Some(Message::User(msg)) = ctx.recv().await {
            match msg {
                Msg::Tick(n) => tx.send(n).unwrap(),
                Msg::Seen(reply) => drop(reply),
            }
        }
    });
    (ticker, rx)
}

#[test]
fn send_interval_with_builds_every_tick_with_its_factory() {
    let rt = runtime(2);
    let (ticker, rx) = spawn_ticker(&rt);
    let made = Arc::new(AtomicU32::new(0));
    let counter = made.clone();
    let every = Duration::from_millis(1);
    let timer = rt.send_interval_with(every, &ticker, move || {
        Msg::Tick(counter.fetch_add(1, Ordering::Relaxed))
    });
    // Each tick is a fresh message from the factory, in order.
    for expected in 0..5 {
        assert_eq!(recv(&rx), expected);
    }
    assert!(timer.cancel());
    // Ticks delivered before cancel returned may still be queued: they come before the
    // first marker, and none after it.
    let built = made.load(Ordering::Relaxed);
    ticker.try_send(Msg::Tick(MARKER)).unwrap();
    rt.send_after(every * 10, &ticker, Msg::Tick(MARKER + 1));
    while recv(&rx) != MARKER {}
    assert_eq!(
        recv(&rx),
        MARKER + 1,
        "a tick arrived after cancel returned"
    );
    assert_eq!(
        made.load(Ordering::Relaxed),
        built,
        "a tick was built after cancel"
    );
}

#[test]
fn dropping_a_timer_ref_does_not_cancel_the_timer() {
    let rt = runtime(2);
    let (ticker, rx) = spawn_ticker(&rt);

    // send_after with its ref dropped at once still delivers.
    drop(rt.send_after(Duration::from_millis(1), &ticker, Msg::Tick(100)));
    assert_eq!(recv(&rx), 100);

    // An interval with its ref dropped keeps ticking...
    let (dropped_tx, factory_dropped) = mpsc::channel();
    let guard = DropSignal(dropped_tx);
    let mut n = 0;
    drop(
        rt.send_interval_with(Duration::from_millis(1), &ticker, move || {
            let _ = &guard;
            n += 1;
            Msg::Tick(n)
        }),
    );
    for expected in 1..=5 {
        assert_eq!(recv(&rx), expected);
    }
    assert!(
        factory_dropped.try_recv().is_err(),
        "the interval stopped when its ref was dropped"
    );

    // ...until its target exits: then the timer lets its factory go.
    let exited = rt.wait_exit(ticker.pid());
    rt.kill(ticker.pid());
    within(&rt, exited);
    recv(&factory_dropped);
}
