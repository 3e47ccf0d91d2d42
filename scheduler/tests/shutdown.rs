//! Clean shutdown: every process stopped, every thread joined, every process's state
//! dropped. Alone in its own test binary, so no parallel test disturbs the thread count.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn_scheduler::{Ctx, ExitReason, ExitWatch, Message, Pid, Runtime, Signal, SpawnOptions};
use common::*;

/// Counts live instances; each process body owns one.
struct Guard(Arc<AtomicUsize>);

impl Guard {
    fn new(live: &Arc<AtomicUsize>) -> Guard {
        live.fetch_add(1, Ordering::SeqCst);
        Guard(live.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_stops_every_process_joins_every_thread_and_drops_all_state() {
    let threads_before = thread_count();
    let state = Arc::new(());
    let live = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::builder()
        .workers(3)
        .name("sd")
        .mailbox_capacity(8)
        .shutdown_grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let (started_tx, started) = mpsc::channel::<()>();
    let mut expect: Vec<(&str, Pid, ExitReason, ExitWatch)> = Vec::new();
    let mut started_count = 0;
    let mut keep = Vec::new();

    // Blocked forever on recv, not trapping.
    for _ in 0..20 {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let p = rt.spawn(move |mut ctx: Ctx<Arc<()>>| async move {
            let _owned = (s, g);
            tx.send(()).unwrap();
            while ctx.recv().await.is_some() {}
        });
        // Queued messages that own state too.
        p.try_send(state.clone()).unwrap();
        started_count += 1;
        expect.push(("idle", p.pid(), ExitReason::Shutdown, rt.wait_exit(p.pid())));
        keep.push(p);
    }

    // Trapping, and stopping when asked.
    let saw_shutdown = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let saw = saw_shutdown.clone();
        let p = rt
            .spawn_opts(
                SpawnOptions {
                    trap_exit: true,
                    ..SpawnOptions::default()
                },
                move |mut ctx: Ctx<()>| async move {
                    let _owned = (s, g);
                    tx.send(()).unwrap();
                    let system = ctx.handle().system_pid();
                    while let Some(msg) = ctx.recv().await {
                        if let Message::Signal(Signal::Exit { from, reason }) = msg {
                            if from == system && reason == ExitReason::Shutdown {
                                saw.fetch_add(1, Ordering::SeqCst);
                                return reason;
                            }
                        }
                    }
                    ExitReason::Normal
                },
            )
            .unwrap();
        started_count += 1;
        expect.push((
            "trapping",
            p.pid(),
            ExitReason::Shutdown,
            rt.wait_exit(p.pid()),
        ));
    }

    // Trapping and ignoring Shutdown: killed after the grace period.
    for i in 0..3 {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let p = rt
            .spawn_opts(
                SpawnOptions {
                    trap_exit: true,
                    name: Some(format!("stubborn-{i}")),
                    ..SpawnOptions::default()
                },
                move |mut ctx: Ctx<()>| async move {
                    let _owned = (s, g);
                    tx.send(()).unwrap();
                    while ctx.recv().await.is_some() {}
                },
            )
            .unwrap();
        started_count += 1;
        expect.push((
            "stubborn",
            p.pid(),
            ExitReason::Killed,
            rt.wait_exit(p.pid()),
        ));
    }

    // Blocked on something other than its mailbox, with a full mailbox.
    for _ in 0..3 {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let p = rt.spawn(move |_ctx: Ctx<Arc<()>>| async move {
            let _owned = (s, g);
            tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        while p.try_send(state.clone()).is_ok() {}
        started_count += 1;
        expect.push((
            "pending",
            p.pid(),
            ExitReason::Shutdown,
            rt.wait_exit(p.pid()),
        ));
        keep.push(p);
    }

    // A tree: a parent with linked children.
    {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let (kids_tx, kids) = mpsc::channel();
        let (s2, live2, tx2) = (state.clone(), live.clone(), started_tx.clone());
        let parent = rt.spawn(move |mut ctx: Ctx<()>| async move {
            let _owned = (s, g);
            for _ in 0..5 {
                let (s, g, tx) = (s2.clone(), Guard::new(&live2), tx2.clone());
                let kid = ctx.spawn_link(move |mut ctx: Ctx<()>| async move {
                    let _owned = (s, g);
                    tx.send(()).unwrap();
                    while ctx.recv().await.is_some() {}
                });
                kids_tx.send(kid.pid()).unwrap();
            }
            tx.send(()).unwrap();
            while ctx.recv().await.is_some() {}
        });
        started_count += 6;
        for _ in 0..5 {
            let kid = recv(&kids);
            expect.push(("child", kid, ExitReason::Shutdown, rt.wait_exit(kid)));
        }
        expect.push((
            "parent",
            parent.pid(),
            ExitReason::Shutdown,
            rt.wait_exit(parent.pid()),
        ));
    }

    // Busy: floods itself forever.
    {
        let (s, g, tx) = (state.clone(), Guard::new(&live), started_tx.clone());
        let p = rt.spawn(move |mut ctx: Ctx<u64>| async move {
            let _owned = (s, g);
            let me = ctx.me();
            me.try_send(0).unwrap();
            tx.send(()).unwrap();
            while let Some(Message::User(n)) = ctx.recv().await {
                let _ = me.try_send(n + 1);
            }
        });
        started_count += 1;
        expect.push((
            "flooder",
            p.pid(),
            ExitReason::Shutdown,
            rt.wait_exit(p.pid()),
        ));
    }

    // A timer that would fire long after shutdown, carrying state.
    let timer_target = keep[0].clone();
    let _timer = rt.send_after(Duration::from_secs(3600), &timer_target, state.clone());
    // A blocking thread (kept alive for a while after its work) must be joined too.
    assert_eq!(within(&rt, rt.spawn_blocking(|| 1)), Ok(1));

    for _ in 0..started_count {
        recv(&started);
    }
    drop(started_tx);
    assert!(thread_count() > threads_before);
    assert_eq!(rt.process_count(), expect.len());

    rt.shutdown();

    for (kind, pid, reason, watch) in expect {
        let got = cairn_scheduler::block_on(watch);
        assert_eq!(got, reason, "{kind} process {pid}");
        assert!(!rt.is_alive(pid), "{kind} process {pid} still alive");
    }
    assert_eq!(saw_shutdown.load(Ordering::SeqCst), 5);
    assert_eq!(rt.process_count(), 0);
    for i in 0..3 {
        assert_eq!(rt.whereis(&format!("stubborn-{i}")), None);
    }
    assert_eq!(
        thread_count(),
        threads_before,
        "threads left after shutdown"
    );
    assert_eq!(threads_named("sd-"), 0);
    assert_eq!(live.load(Ordering::SeqCst), 0, "process bodies not dropped");
    // Bodies, queued messages and the pending timer's message are all gone, even though
    // the test still holds handles to some of the processes.
    assert_eq!(
        Arc::strong_count(&state),
        1,
        "process state still referenced"
    );
    assert!(keep.iter().all(|p| !p.is_alive()));

    rt.shutdown(); // Idempotent.
    drop(rt);
    assert_eq!(thread_count(), threads_before);
}
