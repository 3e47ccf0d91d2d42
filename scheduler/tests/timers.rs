//! Timers: `send_after`, `send_interval`, `sleep`, `recv_timeout`, `timeout` — cancellable
//! and never early, with ~1 ms
//! resolution.

mod common;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_scheduler::{Ctx, Elapsed, Message, Reply, SendError, SpawnOptions};
use common::*;

/// A process that collects `N` `(armed_at, delay)` messages and reports the early ones.
fn early_checker(
    rt: &cairn_scheduler::Runtime,
    n: usize,
    tx: mpsc::Sender<Vec<(Duration, Duration)>>,
) -> cairn_scheduler::ActorRef<(Instant, Duration)> {
    rt.spawn(move |mut ctx: Ctx<(Instant, Duration)>| async move {
        let mut early = Vec::new();
        let mut got = 0;
        while got < n {
            if let Some(Message::User((armed, delay))) = ctx.recv().await {
                got += 1;
                let waited = armed.elapsed();
                if waited < delay {
                    early.push((delay, waited));
                }
            }
        }
        tx.send(early).unwrap();
    })
}

#[test]
fn send_after_is_never_early() {
    const N: usize = 300;
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let checker = early_checker(&rt, N, tx.clone());
    let mut rng = Lcg(0x5eed);
    for _ in 0..N {
        // 0–30 ms, with microsecond granularity to hit the wheel's rounding.
        let delay = Duration::from_micros(rng.below(30_000));
        let armed = Instant::now();
        rt.send_after(delay, &checker, (armed, delay));
    }

    // And from inside a process, to itself.
    let (self_tx, self_rx) = mpsc::channel();
    rt.spawn(move |mut ctx: Ctx<(Instant, Duration)>| async move {
        let me = ctx.me();
        let mut rng = Lcg(42);
        for _ in 0..50 {
            let delay = Duration::from_micros(rng.below(10_000));
            ctx.handle().send_after(delay, &me, (Instant::now(), delay));
        }
        let mut early = Vec::new();
        for _ in 0..50 {
            if let Some(Message::User((armed, delay))) = ctx.recv().await {
                if armed.elapsed() < delay {
                    early.push((delay, armed.elapsed()));
                }
            }
        }
        self_tx.send(early).unwrap();
    });
    assert_eq!(recv(&rx), [], "(delay, waited) of early timers");
    assert_eq!(recv(&self_rx), [], "(delay, waited) of early timers");
}

/// A process that records every id it gets until the marker `u32::MAX`, then reports them.
fn id_collector(
    rt: &cairn_scheduler::Runtime,
    tx: mpsc::Sender<BTreeSet<u32>>,
) -> cairn_scheduler::ActorRef<u32> {
    rt.spawn_opts(
        SpawnOptions {
            mailbox_capacity: Some(4096),
            ..SpawnOptions::default()
        },
        move |mut ctx: Ctx<u32>| async move {
            let mut ids = BTreeSet::new();
            while let Some(msg) = ctx.recv().await {
                match msg {
                    Message::User(u32::MAX) => {
                        tx.send(std::mem::take(&mut ids)).unwrap();
                    }
                    Message::User(id) => {
                        assert!(ids.insert(id), "timer {id} delivered twice");
                    }
                    Message::Signal(_) => {}
                }
            }
        },
    )
    .unwrap()
}

/// Occupies the driver thread with a timer action until the returned sender is dropped or
/// sent to: no other timer can fire meanwhile, however long this thread is descheduled.
fn hold_the_driver(rt: &cairn_scheduler::Runtime) -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (entered_tx, entered) = mpsc::channel();
    rt.driver().timer_after(
        Duration::ZERO,
        Box::new(move || {
            entered_tx.send(()).unwrap();
            let _ = released.recv();
        }),
    );
    entered
        .recv_timeout(HANG)
        .expect("the driver ran the holding action");
    release
}

#[test]
fn a_cancelled_send_after_never_delivers() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let collector = id_collector(&rt, tx);
    // While the driver is held no timer fires, so each cancel below finds its timer
    // pending even if this thread stalls past the 5-14 ms deadlines.
    let driver = hold_the_driver(&rt);
    let timers: Vec<_> = (0..100u32)
        .map(|i| {
            let delay = Duration::from_millis(5 + u64::from(i % 10));
            rt.send_after(delay, &collector, i)
        })
        .collect();
    for (i, t) in timers.iter().enumerate() {
        if i % 2 == 0 {
            assert!(t.cancel(), "timer {i} was still pending");
            assert!(!t.cancel(), "a second cancel reports nothing to cancel");
        }
    }
    drop(driver);
    // The marker is due after every other timer, and the driver delivers in deadline
    // order, so everything that was going to arrive has arrived before it.
    rt.send_after(Duration::from_millis(40), &collector, u32::MAX);
    let expected: BTreeSet<u32> = (0..100).filter(|i| i % 2 == 1).collect();
    assert_eq!(recv(&rx), expected);
    // Cancelling a timer that already fired reports nothing cancelled.
    assert!(!timers[1].cancel());
}

#[test]
fn cancel_racing_a_firing_timer_is_exact_about_delivery() {
    const N: u32 = 2_000;
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let collector = id_collector(&rt, tx);
    let mut rng = Lcg(99);
    let timers: Vec<_> = (0..N)
        .map(|i| rt.send_after(Duration::from_micros(rng.below(3_000)), &collector, i))
        .collect();
    // Cancel while they fire.
    let mut cancelled = BTreeSet::new();
    for (i, t) in timers.iter().enumerate() {
        if t.cancel() {
            cancelled.insert(i as u32);
        }
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
    rt.send_after(Duration::from_millis(30), &collector, u32::MAX);
    let delivered = recv(&rx);
    let both: Vec<_> = delivered.intersection(&cancelled).collect();
    assert!(
        both.is_empty(),
        "cancel returned true yet delivered: {both:?}"
    );
    let neither: Vec<u32> = (0..N)
        .filter(|i| !delivered.contains(i) && !cancelled.contains(i))
        .collect();
    assert!(
        neither.is_empty(),
        "cancel returned false yet the message was never delivered: {neither:?}"
    );
}

#[derive(Clone, Debug, PartialEq)]
enum Tick {
    Tick,
    Marker(u32),
}

#[test]
fn send_interval_ticks_on_schedule_and_nothing_arrives_after_cancel() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let receiver = rt.spawn(move |mut ctx: Ctx<Tick>| async move {
        while let Some(Message::User(t)) = ctx.recv().await {
            tx.send((t, Instant::now())).unwrap();
        }
    });
    let every = Duration::from_millis(4);
    let start = Instant::now();
    let timer = rt.send_interval(every, &receiver, Tick::Tick);
    for k in 1..=5u32 {
        let (t, at) = recv(&rx);
        assert_eq!(t, Tick::Tick);
        assert!(
            at.duration_since(start) >= every * k,
            "tick {k} early: {:?}",
            at.duration_since(start)
        );
    }
    assert!(timer.cancel());
    assert!(!timer.cancel());
    // Ticks delivered before cancel returned may still be queued: they come before this.
    receiver.try_send(Tick::Marker(1)).unwrap();
    rt.send_after(every * 10, &receiver, Tick::Marker(2));
    while recv(&rx).0 != Tick::Marker(1) {}
    assert_eq!(
        recv(&rx).0,
        Tick::Marker(2),
        "a tick arrived after cancel returned"
    );
}

#[test]
fn a_timer_message_that_finds_the_mailbox_full_is_delivered_later() {
    let rt = runtime(2);
    let (gate, opened) = Reply::<()>::pair();
    let (tx, rx) = mpsc::channel();
    let receiver = rt
        .spawn_opts(
            SpawnOptions {
                mailbox_capacity: Some(1),
                ..SpawnOptions::default()
            },
            move |mut ctx: Ctx<u32>| async move {
                let _ = opened.await;
                while let Some(Message::User(n)) = ctx.recv().await {
                    tx.send(n).unwrap();
                }
            },
        )
        .unwrap();
    receiver.try_send(1).unwrap();
    assert!(matches!(receiver.try_send(9), Err(SendError::Full(9))));
    rt.send_after(Duration::from_millis(1), &receiver, 2);
    // The driver runs actions in deadline order: once a probe due 2 ms later has run, the
    // timer has tried to deliver against the full mailbox (and must have kept the message).
    let (probe_tx, probe) = mpsc::channel();
    rt.driver().timer_after(
        Duration::from_millis(3),
        Box::new(move || probe_tx.send(()).unwrap()),
    );
    probe.recv_timeout(HANG).expect("the probe timer ran");
    gate.send(()).unwrap();
    assert_eq!(recv(&rx), 1);
    assert_eq!(recv(&rx), 2);
}

#[test]
fn sleep_is_never_early() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    for seed in 0..4 {
        let tx = tx.clone();
        rt.spawn(move |ctx: Ctx<()>| async move {
            let mut rng = Lcg(seed);
            let mut early = Vec::new();
            for _ in 0..25 {
                let d = Duration::from_micros(rng.below(8_000));
                let t0 = Instant::now();
                ctx.handle().sleep(d).await;
                if t0.elapsed() < d {
                    early.push((d, t0.elapsed()));
                }
            }
            tx.send(early).unwrap();
        });
    }
    // From a non-process thread too.
    let mut rng = Lcg(1234);
    for _ in 0..20 {
        let d = Duration::from_micros(rng.below(5_000));
        let t0 = Instant::now();
        rt.block_on(rt.sleep(d));
        assert!(t0.elapsed() >= d, "slept {:?} of {d:?}", t0.elapsed());
    }
    for _ in 0..4 {
        assert_eq!(recv(&rx), [], "(asked, slept) of early sleeps");
    }
}

#[test]
fn recv_timeout_and_timeout_are_never_early() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let p = rt.spawn(move |mut ctx: Ctx<u32>| async move {
        let mut rng = Lcg(5);
        let mut early = Vec::new();
        for _ in 0..20 {
            let d = Duration::from_micros(rng.below(6_000));
            let t0 = Instant::now();
            if ctx.recv_timeout(d).await.is_some() {
                early.push((d, Duration::ZERO));
            } else if t0.elapsed() < d {
                early.push((d, t0.elapsed()));
            }
        }
        tx.send(early).unwrap();
        // A queued message is returned at once.
        let got = ctx.recv_timeout(HANG).await;
        tx.send(match got {
            Some(Message::User(7)) => vec![],
            _ => vec![(Duration::MAX, Duration::MAX)],
        })
        .unwrap();
    });
    assert_eq!(recv(&rx), [], "(asked, waited) of early recv_timeouts");
    p.try_send(7).unwrap();
    assert_eq!(recv(&rx), [], "recv_timeout missed a queued message");

    let d = Duration::from_millis(15);
    let t0 = Instant::now();
    assert_eq!(
        rt.block_on(rt.timeout(d, std::future::pending::<()>())),
        Err(Elapsed)
    );
    assert!(t0.elapsed() >= d);
    assert_eq!(rt.block_on(rt.timeout(d, async { 3 })), Ok(3));
}
