//! Processes and mailboxes: one message at a time, backpressure, dead and stale pids,
//! the system lane, panic isolation, the per-turn budget, the registry, calls and
//! blocking work.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use cairn_scheduler::{
    CallError, Ctx, ExitReason, Message, Pid, RegisterError, Reply, Runtime, SendError, Signal,
    SpawnError, SpawnOptions,
};
use common::*;

// ---------------------------------------------------------------------------------------
// One message at a time: a process's state is never touched concurrently.

enum Work {
    Hit,
    Count(Reply<u64>),
}

/// Wraps a process body and counts polls that begin while another poll of it is still
/// running (on another worker): the only way two handlers of one process could overlap,
/// since a body is one sequential future. (A flag set and cleared inside the body could
/// never see an overlap: the body cannot run beside itself without two concurrent polls.)
struct OverlapDetector<F> {
    inner: std::pin::Pin<Box<F>>,
    polling: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for OverlapDetector<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> std::task::Poll<F::Output> {
        if self.polling.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.polls.fetch_add(1, Ordering::SeqCst);
        // Widen the window in which a second, concurrent poll would be seen.
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        let out = self.inner.as_mut().poll(cx);
        self.polling.store(false, Ordering::SeqCst);
        out
    }
}

#[test]
fn a_process_handles_one_message_at_a_time_under_many_concurrent_senders() {
    const THREADS: usize = 4;
    const SENDER_PROCS: usize = 4;
    const PER_SENDER: usize = 2_000;
    let rt = runtime_with_mailboxes(4, 16);
    let overlaps = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (overlaps.clone(), polls.clone());
    let target = rt.spawn(move |mut ctx: Ctx<Work>| OverlapDetector {
        polling: Arc::new(AtomicBool::new(false)),
        overlaps: seen,
        polls: counted,
        inner: Box::pin(async move {
            let mut handled = 0u64;
            while let Some(msg) = ctx.recv().await {
                match msg {
                    Message::User(Work::Hit) => {
                        handled += 1;
                        // Give the worker up mid-handler: senders wake the process meanwhile,
                        // so a runtime that ran it again before this poll ended would overlap.
                        yield_now().await;
                    }
                    Message::User(Work::Count(r)) => {
                        let _ = r.send(handled);
                    }
                    Message::Signal(_) => {}
                }
            }
        }),
    });

    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                cairn_scheduler::block_on(async {
                    for _ in 0..PER_SENDER {
                        assert!(target.send(Work::Hit).await.is_ok());
                    }
                })
            })
        })
        .collect();
    let (done_tx, done) = mpsc::channel();
    for _ in 0..SENDER_PROCS {
        let (to, done_tx) = (target.pid(), done_tx.clone());
        rt.spawn(move |ctx: Ctx<()>| async move {
            let mut ok = true;
            for _ in 0..PER_SENDER {
                ok &= ctx.handle().send(to, Work::Hit).await.is_ok();
            }
            done_tx.send(ok).unwrap();
        });
    }
    for t in threads {
        t.join().unwrap();
    }
    for _ in 0..SENDER_PROCS {
        assert!(recv(&done), "a send from a process failed");
    }
    let handled = within(&rt, target.call(Work::Count, HANG)).unwrap();
    assert_eq!(handled, ((THREADS + SENDER_PROCS) * PER_SENDER) as u64);
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "the body was polled while another poll of it was running"
    );
    // Each Hit yields once, so the detector saw well over one poll per message.
    assert!(polls.load(Ordering::SeqCst) > (THREADS + SENDER_PROCS) * PER_SENDER);
}

// ---------------------------------------------------------------------------------------
// Bounded mailboxes, backpressure, nothing dropped silently.

/// A process that waits for `gate` before it receives anything, then reports every user
/// message (and signal) it receives on `tx`.
fn gated_recorder(
    rt: &Runtime,
    opts: SpawnOptions,
    tx: mpsc::Sender<Message<u32>>,
) -> (cairn_scheduler::ActorRef<u32>, Reply<()>) {
    let (gate, opened) = Reply::<()>::pair();
    let actor = rt
        .spawn_opts(opts, move |mut ctx: Ctx<u32>| async move {
            let _ = opened.await;
            while let Some(msg) = ctx.recv().await {
                if tx.send(msg).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    (actor, gate)
}

fn capacity(n: usize) -> SpawnOptions {
    SpawnOptions {
        mailbox_capacity: Some(n),
        ..SpawnOptions::default()
    }
}

fn user(msg: Message<u32>) -> u32 {
    match msg {
        Message::User(n) => n,
        Message::Signal(s) => panic!("expected a user message, got {s:?}"),
    }
}

#[test]
fn try_send_on_a_full_mailbox_returns_the_message_and_send_waits_for_room() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    let (actor, gate) = gated_recorder(&rt, capacity(4), tx);
    for n in 0..4 {
        actor.try_send(n).unwrap();
    }
    match actor.try_send(4) {
        Err(SendError::Full(4)) => {}
        other => panic!("expected Full(4), got {other:?}"),
    }
    match rt.try_send(actor.pid(), 5u32) {
        Err(SendError::Full(5)) => {}
        other => panic!("expected Full(5) through the pid, got {other:?}"),
    }

    // `send` on the full mailbox waits (deterministically checked with one manual poll)...
    let mut waiting = Box::pin(actor.send(6));
    assert!(waiting
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    // ...and resumes once the receiver makes room.
    gate.send(()).unwrap();
    within(&rt, waiting).unwrap();
    let got: Vec<u32> = (0..5).map(|_| user(recv(&rx))).collect();
    assert_eq!(got, [0, 1, 2, 3, 6]);
}

#[test]
fn a_sender_waiting_for_room_gets_its_message_back_when_the_receiver_dies() {
    let rt = runtime(2);
    let (tx, _rx) = mpsc::channel();
    let (actor, _gate) = gated_recorder(&rt, capacity(1), tx);
    actor.try_send(1).unwrap();
    let mut waiting = Box::pin(actor.send(2));
    assert!(waiting
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    kill_and_wait(&rt, actor.pid());
    match within(&rt, waiting) {
        Err(SendError::NoProc(2)) => {}
        other => panic!("expected NoProc(2), got {other:?}"),
    }
}

#[test]
fn sending_to_an_exited_process_returns_no_proc_with_the_message() {
    let rt = runtime(2);
    let actor = rt.spawn(|mut ctx: Ctx<String>| async move {
        let _ = ctx.recv().await;
    });
    let pid = actor.pid();
    assert_eq!(
        exit_after(&rt, pid, || actor.try_send("bye".to_owned()).unwrap()),
        ExitReason::Normal
    );
    assert!(!actor.is_alive());
    assert!(!rt.is_alive(pid));

    match actor.try_send("a".to_owned()) {
        Err(SendError::NoProc(m)) => assert_eq!(m, "a"),
        other => panic!("expected NoProc, got {other:?}"),
    }
    match within(&rt, actor.send("b".to_owned())) {
        Err(SendError::NoProc(m)) => assert_eq!(m, "b"),
        other => panic!("expected NoProc, got {other:?}"),
    }
    match rt.try_send(pid, "c".to_owned()) {
        Err(SendError::NoProc(m)) => assert_eq!(m, "c"),
        other => panic!("expected NoProc, got {other:?}"),
    }
    match within(&rt, rt.send(pid, "d".to_owned())) {
        Err(e @ SendError::NoProc(_)) => assert_eq!(e.into_inner(), "d"),
        other => panic!("expected NoProc, got {other:?}"),
    }
}

enum Counted {
    Hit(u32),
    Hits(Reply<u32>),
}

fn spawn_counter(rt: &Runtime) -> cairn_scheduler::ActorRef<Counted> {
    rt.spawn(|mut ctx: Ctx<Counted>| async move {
        let mut hits = 0;
        while let Some(msg) = ctx.recv().await {
            match msg {
                Message::User(Counted::Hit(_)) => hits += 1,
                Message::User(Counted::Hits(r)) => {
                    let _ = r.send(hits);
                }
                Message::Signal(_) => {}
            }
        }
    })
}

#[test]
fn a_stale_pid_never_reaches_the_process_that_reuses_its_slot() {
    let rt = runtime(2);
    let old = spawn_counter(&rt);
    let old_pid = old.pid();
    assert_eq!(
        exit_after(&rt, old_pid, || rt
            .exit(old_pid, ExitReason::Error("gone".into()))),
        ExitReason::Error("gone".into())
    );

    // Spawn (and keep alive) processes until one lands in the old slot.
    let slot = |p: Pid| p.id() as u32;
    let mut others = Vec::new();
    let reused = loop {
        let p = spawn_counter(&rt);
        if slot(p.pid()) == slot(old_pid) {
            break p;
        }
        others.push(p);
        assert!(others.len() < 10_000, "the slot was never reused");
    };
    assert_ne!(
        reused.pid(),
        old_pid,
        "a reused slot must get a new generation"
    );
    assert_eq!(reused.pid().node(), old_pid.node());

    match rt.try_send(old_pid, Counted::Hit(1)) {
        Err(SendError::NoProc(Counted::Hit(1))) => {}
        other => panic!("expected NoProc, got {other:?}"),
    }
    match within(&rt, rt.send(old_pid, Counted::Hit(2))) {
        Err(SendError::NoProc(Counted::Hit(2))) => {}
        other => panic!("expected NoProc, got {other:?}"),
    }
    match old.try_send(Counted::Hit(3)) {
        Err(SendError::NoProc(Counted::Hit(3))) => {}
        other => panic!("expected NoProc through the old ActorRef, got {other:?}"),
    }
    assert!(rt.actor_ref::<Counted>(old_pid).is_none());
    assert_eq!(
        within(&rt, rt.call(old_pid, Counted::Hits, HANG)),
        Err(CallError::NoProc)
    );
    // Signals to the stale pid reach nothing either.
    rt.kill(old_pid);
    rt.exit(old_pid, ExitReason::Error("stale".into()));
    assert_eq!(wait_exit(&rt, old_pid), ExitReason::NoProc);

    assert!(!rt.is_alive(old_pid));
    assert!(rt.is_alive(reused.pid()));
    assert_eq!(within(&rt, reused.call(Counted::Hits, HANG)), Ok(0));
}

/// A pid of an earlier life of this node (same node id and slot, older creation) names no
/// process of this life: sends, calls, signals and `is_alive` all see `NoProc`.
#[test]
fn a_pid_from_an_earlier_creation_of_the_node_names_no_process() {
    let rt = Runtime::builder()
        .workers(2)
        .node(cairn_scheduler::NodeId::of_name("n1"))
        .creation(5)
        .build()
        .unwrap();
    let live = spawn_counter(&rt);
    assert_eq!(live.pid().creation(), 5);
    assert_eq!(rt.creation(), 5);
    let earlier = Pid::from_parts(live.pid().node(), 4, live.pid().id());
    assert_ne!(earlier, live.pid());
    match rt.try_send(earlier, Counted::Hit(1)) {
        Err(SendError::NoProc(Counted::Hit(1))) => {}
        other => panic!("expected NoProc, got {other:?}"),
    }
    assert!(rt.actor_ref::<Counted>(earlier).is_none());
    assert_eq!(
        within(&rt, rt.call(earlier, Counted::Hits, HANG)),
        Err(CallError::NoProc)
    );
    assert!(!rt.is_alive(earlier));
    rt.kill(earlier);
    assert_eq!(wait_exit(&rt, earlier), ExitReason::NoProc);
    // The live process saw none of it.
    assert!(rt.is_alive(live.pid()));
    assert_eq!(within(&rt, live.call(Counted::Hits, HANG)), Ok(0));
    rt.shutdown();
}

#[test]
fn sending_a_message_of_another_type_returns_wrong_type_with_the_message() {
    let rt = runtime(2);
    let numbers = spawn_counter(&rt);
    match rt.try_send(numbers.pid(), "text".to_owned()) {
        Err(SendError::WrongType(m)) => assert_eq!(m, "text"),
        other => panic!("expected WrongType, got {other:?}"),
    }
    match within(&rt, rt.send(numbers.pid(), 7u64)) {
        Err(SendError::WrongType(7)) => {}
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert_eq!(
        within(&rt, rt.call(numbers.pid(), |r: Reply<()>| r, HANG)),
        Err(CallError::WrongType)
    );
    assert!(rt.actor_ref::<String>(numbers.pid()).is_none());
    assert!(rt.actor_ref::<Counted>(numbers.pid()).is_some());
    assert_eq!(within(&rt, numbers.call(Counted::Hits, HANG)), Ok(0));
}

// ---------------------------------------------------------------------------------------
// The system lane is never blocked by a full user lane.

#[test]
fn signals_reach_a_process_whose_user_lane_is_full_and_come_first() {
    let rt = runtime(2);
    let watched = probe(&rt);
    let (mon_tx, mon_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let (gate, opened) = Reply::<()>::pair();
    let watched_pid = watched.pid();
    let p = rt
        .spawn_opts(
            SpawnOptions {
                mailbox_capacity: Some(2),
                trap_exit: true,
                ..SpawnOptions::default()
            },
            move |mut ctx: Ctx<u32>| async move {
                mon_tx.send(ctx.monitor(watched_pid)).unwrap();
                let _ = opened.await;
                while let Some(msg) = ctx.recv().await {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
            },
        )
        .unwrap();
    let monitor = recv(&mon_rx);
    p.try_send(1).unwrap();
    p.try_send(2).unwrap();
    assert!(matches!(p.try_send(3), Err(SendError::Full(3))));

    rt.exit(p.pid(), ExitReason::Error("stop".into()));
    kill_and_wait(&rt, watched.pid());
    assert!(p.is_alive());
    gate.send(()).unwrap();

    match recv(&rx) {
        Message::Signal(Signal::Exit { from, reason }) => {
            assert_eq!(from, rt.system_pid());
            assert_eq!(reason, ExitReason::Error("stop".into()));
        }
        other => panic!("expected the Exit signal first, got {other:?}"),
    }
    match recv(&rx) {
        Message::Signal(s) => assert_eq!(
            s,
            Signal::Down {
                monitor,
                pid: watched.pid(),
                reason: ExitReason::Killed
            }
        ),
        Message::User(n) => panic!("expected the Down signal second, got message {n}"),
    }
    assert_eq!(user(recv(&rx)), 1);
    assert_eq!(user(recv(&rx)), 2);
}

#[test]
fn an_exit_signal_ends_a_process_with_a_full_mailbox_that_never_receives() {
    let rt = runtime(2);
    let (tx, _rx) = mpsc::channel();
    let (stuck, _gate) = gated_recorder(&rt, capacity(1), tx.clone());
    stuck.try_send(1).unwrap();
    assert!(matches!(stuck.try_send(2), Err(SendError::Full(2))));
    assert_eq!(
        exit_after(&rt, stuck.pid(), || rt
            .exit(stuck.pid(), ExitReason::Error("stop".into()))),
        ExitReason::Error("stop".into())
    );

    let (killed, _gate2) = gated_recorder(
        &rt,
        SpawnOptions {
            mailbox_capacity: Some(1),
            trap_exit: true,
            ..SpawnOptions::default()
        },
        tx,
    );
    killed.try_send(1).unwrap();
    kill_and_wait(&rt, killed.pid());
}

// ---------------------------------------------------------------------------------------
// A panic ends only its own process; the worker thread carries on.

#[test]
fn a_panicking_process_exits_with_its_message_while_10000_others_finish() {
    const HEALTHY: usize = 10_000;
    const WORKERS: usize = 2;
    let rt = Runtime::builder()
        .workers(WORKERS)
        .name("pnc")
        .build()
        .unwrap();
    // Threads name themselves as they start.
    eventually("workers named", || threads_named("pnc-worker") == WORKERS);
    let sum = Arc::new(AtomicU64::new(0));
    let mut pids = Vec::with_capacity(HEALTHY);
    let mut actors = Vec::with_capacity(HEALTHY);
    let mut panicker = None;
    for i in 0..HEALTHY as u64 {
        let sum = sum.clone();
        let a = rt.spawn(move |mut ctx: Ctx<u64>| async move {
            if let Some(Message::User(n)) = ctx.recv().await {
                sum.fetch_add(n, Ordering::Relaxed);
            }
        });
        pids.push(a.pid());
        actors.push(a);
        if i == HEALTHY as u64 / 2 {
            let p = rt.spawn(|mut ctx: Ctx<u64>| async move {
                if let Some(Message::User(n)) = ctx.recv().await {
                    panic!("boom in process {n}");
                }
            });
            panicker = Some(p);
        }
    }
    let panicker = panicker.unwrap();
    let panic_watch = rt.wait_exit(panicker.pid());
    let reasons = exits_after(&rt, &pids, || {
        panicker.try_send(4242).unwrap();
        for (i, a) in actors.iter().enumerate() {
            a.try_send(i as u64 + 1).unwrap();
        }
    });
    match within(&rt, panic_watch) {
        ExitReason::Panic(msg) => assert!(msg.contains("boom in process 4242"), "{msg}"),
        other => panic!("expected Panic, got {other:?}"),
    }
    for reason in reasons {
        assert_eq!(reason, ExitReason::Normal);
    }
    let n = HEALTHY as u64;
    assert_eq!(sum.load(Ordering::Relaxed), n * (n + 1) / 2);

    // The workers are intact and still run new work.
    assert_eq!(threads_named("pnc-worker"), WORKERS);
    let fresh = spawn_counter(&rt);
    fresh.try_send(Counted::Hit(0)).unwrap();
    assert_eq!(within(&rt, fresh.call(Counted::Hits, HANG)), Ok(1));
    assert_eq!(rt.process_count(), 1);
}

// ---------------------------------------------------------------------------------------
// The per-turn budget: a busy process cannot starve the others.

#[test]
fn a_self_flooding_process_cannot_starve_timers_messages_or_spawns_on_one_worker() {
    // If the flooder does starve the worker, shutdown could never stop it: leak the runtime
    // when the test fails, so the failure is reported instead of hanging in `Drop`.
    let rt = std::mem::ManuallyDrop::new(runtime(1));
    let (started_tx, started) = mpsc::channel();
    let handled = Arc::new(AtomicU64::new(0));
    let count = handled.clone();
    let flooder = rt.spawn(move |mut ctx: Ctx<u64>| async move {
        let me = ctx.me();
        for i in 0..8 {
            me.try_send(i).unwrap();
        }
        started_tx.send(()).unwrap();
        while let Some(msg) = ctx.recv().await {
            if let Message::User(n) = msg {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = me.try_send(n + 1);
            }
        }
    });
    recv(&started);

    let (tx, rx) = mpsc::channel();
    let other = rt.spawn(move |mut ctx: Ctx<&'static str>| async move {
        while let Some(Message::User(what)) = ctx.recv().await {
            tx.send((what, Instant::now())).unwrap();
        }
    });
    let armed = Instant::now();
    let _timer = rt.send_after(Duration::from_millis(5), &other, "timer");
    other.try_send("message").unwrap();
    let mut got = [recv(&rx), recv(&rx)];
    got.sort();
    assert_eq!(got[0].0, "message");
    assert_eq!(got[1].0, "timer");
    let late = got[1].1.duration_since(armed);
    assert!(late >= Duration::from_millis(5), "timer early: {late:?}");
    assert!(
        late < Duration::from_secs(3),
        "timer starved by the flooder: {late:?}"
    );

    // A process spawned now also gets to run.
    let (spawned_tx, spawned) = mpsc::channel();
    rt.spawn(move |_ctx: Ctx<()>| async move { spawned_tx.send(()).unwrap() });
    recv(&spawned);

    assert!(handled.load(Ordering::Relaxed) > 0);
    assert!(flooder.is_alive());
    kill_and_wait(&rt, flooder.pid());
    drop(std::mem::ManuallyDrop::into_inner(rt));
}

// ---------------------------------------------------------------------------------------
// The registry.

#[test]
fn a_name_is_free_once_its_process_exits() {
    let rt = runtime(2);
    let named = rt
        .spawn_named("reg-freed", |mut ctx: Ctx<()>| async move {
            let _ = ctx.recv().await;
        })
        .unwrap();
    assert_eq!(rt.whereis("reg-freed"), Some(named.pid()));

    // A watcher that, when Down arrives, checks the name is free and takes it.
    let (ready_tx, ready) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let target = named.pid();
    let watcher = rt.spawn(move |mut ctx: Ctx<()>| async move {
        let monitor = ctx.monitor(target);
        ready_tx.send(()).unwrap();
        while let Some(msg) = ctx.recv().await {
            if let Message::Signal(Signal::Down {
                monitor: m, pid, ..
            }) = msg
            {
                assert_eq!((m, pid), (monitor, target));
                let h = ctx.handle();
                tx.send((
                    h.whereis("reg-freed"),
                    h.is_alive(target),
                    h.register("reg-freed", ctx.pid()),
                ))
                .unwrap();
            }
        }
    });
    recv(&ready);
    named.try_send(()).unwrap();
    assert_eq!(recv(&rx), (None, false, Ok(())));
    assert_eq!(rt.whereis("reg-freed"), Some(watcher.pid()));

    // The same again through wait_exit and spawn_named.
    assert_eq!(
        exit_after(&rt, watcher.pid(), || rt
            .exit(watcher.pid(), ExitReason::Shutdown)),
        ExitReason::Shutdown
    );
    assert_eq!(rt.whereis("reg-freed"), None);
    let again = rt
        .spawn_named("reg-freed", |mut ctx: Ctx<()>| async move {
            let _ = ctx.recv().await;
        })
        .unwrap();
    assert_eq!(rt.whereis("reg-freed"), Some(again.pid()));
}

#[test]
fn spawn_named_with_a_taken_name_fails_and_never_runs_the_body() {
    let rt = runtime(2);
    let holder = probe(&rt);
    rt.register("reg-taken", holder.pid()).unwrap();
    let before = rt.process_count();
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    let err = rt
        .spawn_named("reg-taken", move |_ctx: Ctx<()>| {
            ran2.store(true, Ordering::SeqCst);
            async {}
        })
        .unwrap_err();
    assert_eq!(
        err,
        SpawnError::NameTaken {
            name: "reg-taken".into(),
            holder: holder.pid()
        }
    );
    assert_eq!(
        Arc::strong_count(&ran),
        1,
        "the rejected body was not dropped"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(rt.process_count(), before);
    assert_eq!(rt.whereis("reg-taken"), Some(holder.pid()));
    assert!(answers(&rt, &holder));
}

#[test]
fn register_and_unregister_follow_erlangs_rules() {
    let rt = runtime(2);
    let a = probe(&rt);
    let b = probe(&rt);
    rt.register("reg-a", a.pid()).unwrap();
    assert_eq!(
        rt.register("reg-a", b.pid()),
        Err(RegisterError::NameTaken {
            name: "reg-a".into(),
            holder: a.pid()
        })
    );
    assert_eq!(
        rt.register("reg-a2", a.pid()),
        Err(RegisterError::AlreadyNamed("reg-a".into()))
    );
    assert_eq!(
        exit_after(&rt, a.pid(), || assert!(rt
            .try_send_named("reg-a", Probe::Stop(ExitReason::Normal))
            .is_ok())),
        ExitReason::Normal
    );
    assert_eq!(rt.whereis("reg-a"), None);
    assert_eq!(rt.register("reg-dead", a.pid()), Err(RegisterError::NoProc));
    assert!(matches!(
        rt.try_send_named("reg-a", Probe::Stop(ExitReason::Normal)),
        Err(SendError::NoProc(_))
    ));

    rt.register("reg-b", b.pid()).unwrap();
    assert_eq!(rt.unregister("reg-b"), Some(b.pid()));
    assert_eq!(rt.unregister("reg-b"), None);
    assert_eq!(rt.whereis("reg-b"), None);
    // Unregistered, the process may take another name.
    rt.register("reg-b2", b.pid()).unwrap();
    assert_eq!(rt.whereis("reg-b2"), Some(b.pid()));
}

// ---------------------------------------------------------------------------------------
// Calls.

enum Req {
    Double(u32, Reply<u32>),
    Hold(Reply<u32>),
    Drop(Reply<u32>),
    Panic(Reply<u32>),
}

fn spawn_server(rt: &Runtime) -> cairn_scheduler::ActorRef<Req> {
    rt.spawn(|mut ctx: Ctx<Req>| async move {
        let mut held = Vec::new();
        while let Some(msg) = ctx.recv().await {
            match msg {
                Message::User(Req::Double(n, r)) => {
                    let _ = r.send(n * 2);
                }
                Message::User(Req::Hold(r)) => held.push(r),
                Message::User(Req::Drop(r)) => drop(r),
                Message::User(Req::Panic(_r)) => panic!("server crashed"),
                Message::Signal(_) => {}
            }
        }
    })
}

#[test]
fn call_returns_the_reply() {
    let rt = runtime(2);
    let server = spawn_server(&rt);
    assert_eq!(
        within(&rt, server.call(|r| Req::Double(21, r), HANG)),
        Ok(42)
    );
    assert_eq!(
        within(&rt, rt.call(server.pid(), |r| Req::Double(5, r), HANG)),
        Ok(10)
    );
    // From inside another process.
    let s = server.clone();
    let (tx, rx) = mpsc::channel();
    rt.spawn(move |_ctx: Ctx<()>| async move {
        tx.send(s.call(|r| Req::Double(50, r), HANG).await).unwrap();
    });
    assert_eq!(recv(&rx), Ok(100));
}

/// A call whose answer comes only after the caller has given its worker up (its yield did
/// not suffice) is woken by the answer, not by its timeout: the caller's later poll must
/// leave its own waker with the reply slot (the poll before the yield leaves a no-op one).
#[test]
fn a_call_answered_after_the_caller_waits_is_woken_by_the_answer() {
    let rt = runtime(1);
    // Holds the request; answers it when told to, by a message that arrives after the
    // caller's yield (on one worker the caller runs again right after this turn).
    let server = rt.spawn(|mut ctx: Ctx<Option<Reply<u32>>>| async move {
        let me = ctx.me();
        let mut held = None;
        while let Some(Message::User(msg)) = ctx.recv().await {
            match msg {
                Some(reply) => {
                    held = Some(reply);
                    ctx.handle()
                        .send_after(Duration::from_millis(20), &me, None);
                }
                None => {
                    if let Some(reply) = held.take() {
                        let _ = reply.send(7);
                    }
                }
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    rt.spawn(move |_ctx: Ctx<()>| async move {
        let start = Instant::now();
        let answer = server.call(Some, HANG).await;
        tx.send((answer, start.elapsed())).unwrap();
    });
    let (answer, took) = recv(&rx);
    assert_eq!(answer, Ok(7));
    assert!(
        took < HANG / 2,
        "woken by the timeout, not the answer: {took:?}"
    );
}

#[test]
fn call_times_out_when_the_callee_keeps_the_reply() {
    let rt = runtime(2);
    let server = spawn_server(&rt);
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert_eq!(
        within(&rt, server.call(Req::Hold, timeout)),
        Err(CallError::Timeout)
    );
    assert!(start.elapsed() >= timeout, "timed out early");
    assert!(server.is_alive());
}

/// A caller that timed out and calls again must get its new call's answer, never the late
/// answer to the call it gave up on: the late `Reply::send` is refused. (A guard for any
/// reuse of reply slots between calls: a slot still reachable from a kept `Reply` must not
/// serve the next call.)
#[test]
fn a_late_answer_to_a_timed_out_call_is_never_taken_for_the_next_call() {
    enum Late {
        /// Kept unanswered until the next `Ask`.
        Keep(Reply<u32>),
        /// Answered with 2, right after the kept reply is answered with 1.
        Ask(Reply<u32>),
    }
    // One worker: the caller's calls all run on one thread.
    let rt = runtime(1);
    let server = rt.spawn(|mut ctx: Ctx<Late>| async move {
        let mut kept = None;
        while let Some(Message::User(msg)) = ctx.recv().await {
            match msg {
                Late::Keep(reply) => kept = Some(reply),
                Late::Ask(reply) => {
                    if let Some(late) = kept.take() {
                        // The caller gave up on this one: it is refused.
                        assert_eq!(late.send(1), Err(1), "a late answer was taken");
                    }
                    let _ = reply.send(2);
                }
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    let s = server.clone();
    rt.spawn(move |_ctx: Ctx<()>| async move {
        let mut answers = Vec::new();
        for _ in 0..3 {
            // One answered call first, so that a spare slot is in play.
            answers.push(s.call(Late::Ask, HANG).await);
            answers.push(s.call(Late::Keep, Duration::from_millis(10)).await);
            answers.push(s.call(Late::Ask, HANG).await);
        }
        tx.send(answers).unwrap();
    });
    let expected: Vec<Result<u32, CallError>> = (0..3)
        .flat_map(|_| [Ok(2), Err(CallError::Timeout), Ok(2)])
        .collect();
    assert_eq!(recv(&rx), expected);
    assert!(server.is_alive(), "the server saw a late answer taken");
}

#[test]
fn call_gives_no_reply_when_the_callee_drops_the_reply_or_dies_handling_it() {
    let rt = runtime(2);
    let server = spawn_server(&rt);
    assert_eq!(
        within(&rt, server.call(Req::Drop, HANG)),
        Err(CallError::NoReply)
    );
    let exit = rt.wait_exit(server.pid());
    assert_eq!(
        within(&rt, server.call(Req::Panic, HANG)),
        Err(CallError::NoReply)
    );
    assert!(matches!(
        within(&rt, exit),
        ExitReason::Panic(m) if m.contains("server crashed")
    ));
}

#[test]
fn call_to_an_exited_process_gives_no_proc() {
    let rt = runtime(2);
    let server = spawn_server(&rt);
    kill_and_wait(&rt, server.pid());
    assert_eq!(
        within(&rt, server.call(|r| Req::Double(1, r), HANG)),
        Err(CallError::NoProc)
    );
    assert_eq!(
        within(&rt, rt.call(server.pid(), |r| Req::Double(1, r), HANG)),
        Err(CallError::NoProc)
    );
}

// ---------------------------------------------------------------------------------------
// Blocking work.

#[test]
fn spawn_blocking_returns_the_value_and_a_panic_as_err() {
    let rt = runtime(2);
    assert_eq!(within(&rt, rt.spawn_blocking(|| 6 * 7)), Ok(42));
    match within(
        &rt,
        rt.spawn_blocking(|| -> u32 { panic!("blocking boom") }),
    ) {
        Err(msg) => assert!(msg.contains("blocking boom"), "{msg}"),
        Ok(v) => panic!("expected the panic as Err, got Ok({v})"),
    }
    // From inside a process, which keeps running meanwhile.
    let (tx, rx) = mpsc::channel();
    rt.spawn(move |ctx: Ctx<()>| async move {
        let h = ctx.handle();
        let v = h
            .spawn_blocking(|| {
                // Stands for blocking work (the job itself), not a wait for an event.
                std::thread::sleep(Duration::from_millis(5));
                "done".to_owned()
            })
            .await;
        let e = h.spawn_blocking(|| -> () { panic!("inner boom") }).await;
        tx.send((v, e)).unwrap();
    });
    match recv(&rx) {
        (Ok(v), Err(e)) if v == "done" && e.contains("inner boom") => {}
        other => panic!("unexpected results from a process: {other:?}"),
    }
}
