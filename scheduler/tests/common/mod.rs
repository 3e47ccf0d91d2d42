//! Helpers shared by the scheduler's behaviour tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_scheduler::{
    ActorRef, Ctx, ExitReason, Handle, Message, Pid, Reply, Runtime, Signal, SpawnOptions,
};

/// Hang guard: every wait in these tests is bounded by this, and a healthy run never gets
/// near it.
pub const HANG: Duration = Duration::from_secs(20);

pub fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

/// A runtime with `workers` workers and mailboxes bounded at `mailbox_capacity`.
pub fn runtime_with_mailboxes(workers: usize, mailbox_capacity: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .mailbox_capacity(mailbox_capacity)
        .build()
        .unwrap()
}

/// Runs `fut` on the calling thread, failing the test if it takes longer than [`HANG`].
pub fn within<F: Future>(h: &Handle, fut: F) -> F::Output {
    h.block_on(h.timeout(HANG, fut))
        .expect("hang guard: the awaited event never happened")
}

/// Waits for `pid` to exit and returns its reason. Only for a process that cannot exit
/// before this call (or is gone already: `NoProc`); otherwise use [`exit_after`].
pub fn wait_exit(h: &Handle, pid: Pid) -> ExitReason {
    within(h, h.wait_exit(pid))
}

/// Watches `pid`, runs `trigger`, then waits for `pid` to exit and returns its reason.
pub fn exit_after(h: &Handle, pid: Pid, trigger: impl FnOnce()) -> ExitReason {
    exits_after(h, &[pid], trigger).pop().unwrap()
}

/// Watches every pid, runs `trigger`, then waits for all of them to exit and returns the
/// reasons in order.
pub fn exits_after(h: &Handle, pids: &[Pid], trigger: impl FnOnce()) -> Vec<ExitReason> {
    let watches: Vec<_> = pids.iter().map(|&p| h.wait_exit(p)).collect();
    trigger();
    watches.into_iter().map(|w| within(h, w)).collect()
}

/// Receives from a std channel with the hang guard.
pub fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(HANG)
        .expect("hang guard: nothing arrived on the channel")
}

/// Yields the current task once (it is rescheduled at once).
pub fn yield_now() -> impl Future<Output = ()> {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    YieldNow(false)
}

/// A small deterministic pseudo-random generator (no extra dev-dependency).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// What a [`spawn_probe`] process understands.
pub enum Probe {
    /// Answered at once: proves the process is alive and handling messages.
    Ping(Reply<()>),
    /// Ends the process with this reason.
    Stop(ExitReason),
    /// Links to the pid, then answers.
    Link(Pid, Reply<()>),
    /// Unlinks from the pid, then answers.
    Unlink(Pid, Reply<()>),
    /// Monitors the pid and answers with the monitor.
    Monitor(Pid, Reply<cairn_scheduler::MonitorRef>),
    /// Demonitors and answers with `demonitor`'s result.
    Demonitor(Pid, cairn_scheduler::MonitorRef, Reply<bool>),
    /// Answers with every signal received so far (signals are received before user
    /// messages, so this includes every signal queued before this request).
    Signals(Reply<Vec<Signal>>),
}

/// A process that serves [`Probe`] requests and records the signals it receives (and
/// forwards them to `forward`, if given). It stops on the runtime's `Shutdown`.
pub fn spawn_probe(
    h: &Handle,
    opts: SpawnOptions,
    forward: Option<mpsc::Sender<Signal>>,
) -> ActorRef<Probe> {
    h.spawn_opts(opts, move |mut ctx: Ctx<Probe>| async move {
        let mut signals = Vec::new();
        while let Some(msg) = ctx.recv().await {
            match msg {
                // A trapping probe still stops when the runtime shuts down.
                Message::Signal(Signal::Exit {
                    from,
                    reason: ExitReason::Shutdown,
                }) if from == ctx.handle().system_pid() => return ExitReason::Shutdown,
                Message::Signal(s) => {
                    if let Some(tx) = &forward {
                        let _ = tx.send(s.clone());
                    }
                    signals.push(s);
                }
                Message::User(Probe::Ping(r)) => {
                    let _ = r.send(());
                }
                Message::User(Probe::Stop(reason)) => return reason,
                Message::User(Probe::Link(pid, r)) => {
                    ctx.link(pid);
                    let _ = r.send(());
                }
                Message::User(Probe::Unlink(pid, r)) => {
                    ctx.unlink(pid);
                    let _ = r.send(());
                }
                Message::User(Probe::Monitor(pid, r)) => {
                    let _ = r.send(ctx.monitor(pid));
                }
                Message::User(Probe::Demonitor(pid, m, r)) => {
                    let _ = r.send(ctx.demonitor(pid, m));
                }
                Message::User(Probe::Signals(r)) => {
                    let _ = r.send(signals.clone());
                }
            }
        }
        ExitReason::Normal
    })
    .unwrap()
}

/// A plain probe (no name, no link, not trapping).
pub fn probe(h: &Handle) -> ActorRef<Probe> {
    spawn_probe(h, SpawnOptions::default(), None)
}

/// A probe that traps exits.
pub fn trapping_probe(h: &Handle) -> ActorRef<Probe> {
    spawn_probe(
        h,
        SpawnOptions {
            trap_exit: true,
            ..SpawnOptions::default()
        },
        None,
    )
}

/// A probe that traps exits and forwards every signal it receives to the returned channel.
pub fn forwarding_trapper(h: &Handle) -> (ActorRef<Probe>, mpsc::Receiver<Signal>) {
    let (tx, rx) = mpsc::channel();
    let p = spawn_probe(
        h,
        SpawnOptions {
            trap_exit: true,
            ..SpawnOptions::default()
        },
        Some(tx),
    );
    (p, rx)
}

/// Spawn options that link the new process to `pid`.
pub fn linked_to(pid: Pid) -> SpawnOptions {
    SpawnOptions {
        link: Some(pid),
        ..SpawnOptions::default()
    }
}

/// An error exit reason.
pub fn err(s: &str) -> ExitReason {
    ExitReason::Error(s.to_owned())
}

/// The exit signal `from` sends its links (or `exit` sends) with `reason`.
pub fn exit_signal(from: Pid, reason: ExitReason) -> Signal {
    Signal::Exit { from, reason }
}

/// Kills `pid` and waits for it to exit, asserting that it exits as `Killed`.
#[track_caller]
pub fn kill_and_wait(h: &Handle, pid: Pid) {
    assert_eq!(exit_after(h, pid, || h.kill(pid)), ExitReason::Killed);
}

/// Sends `pid` an exit signal with `reason` and waits for it to exit, asserting that it
/// exits with that reason.
#[track_caller]
pub fn exit_and_wait(h: &Handle, pid: Pid, reason: ExitReason) {
    assert_eq!(exit_after(h, pid, || h.exit(pid, reason.clone())), reason);
}

/// Asks a probe to stop with `reason` and waits for it to exit, asserting that it exits with
/// that reason.
#[track_caller]
pub fn stop_and_wait(h: &Handle, p: &ActorRef<Probe>, reason: ExitReason) {
    assert_eq!(exit_after(h, p.pid(), || stop(p, reason.clone())), reason);
}

/// The pid of a probe that has been killed (and whose exit has been observed).
#[track_caller]
pub fn exited_pid(h: &Handle) -> Pid {
    let gone = probe(h).pid();
    kill_and_wait(h, gone);
    gone
}

/// Asks a probe to stop with `reason` (without waiting for it).
pub fn stop(p: &ActorRef<Probe>, reason: ExitReason) {
    p.try_send(Probe::Stop(reason)).unwrap();
}

/// A process that panics with "linked crash" on its first message.
pub fn spawn_panicker(h: &Handle, opts: SpawnOptions) -> ActorRef<()> {
    h.spawn_opts(opts, |mut ctx: Ctx<()>| async move {
        if ctx.recv().await.is_some() {
            panic!("linked crash");
        }
    })
    .unwrap()
}

/// Makes a [`spawn_panicker`] process panic, and checks that it exits with the panic as its
/// reason and that `peer` exits with the same reason.
#[track_caller]
pub fn panic_takes_along(h: &Handle, panicker: &ActorRef<()>, peer: Pid) {
    let reasons = exits_after(h, &[panicker.pid(), peer], || {
        panicker.try_send(()).unwrap()
    });
    assert!(matches!(&reasons[0], ExitReason::Panic(m) if m.contains("linked crash")));
    assert_eq!(reasons[1], reasons[0]);
}

/// Whether the probe answers a ping.
pub fn answers(h: &Handle, p: &ActorRef<Probe>) -> bool {
    h.block_on(p.call(Probe::Ping, HANG)).is_ok()
}

/// Runs a request against a probe and returns the answer.
pub fn ask<R>(h: &Handle, p: &ActorRef<Probe>, make: impl FnOnce(Reply<R>) -> Probe) -> R {
    h.block_on(p.call(make, HANG))
        .expect("the probe did not answer")
}

/// The signals a probe has received so far.
pub fn signals_of(h: &Handle, p: &ActorRef<Probe>) -> Vec<Signal> {
    ask(h, p, Probe::Signals)
}

/// Threads of this OS process whose name starts with `prefix` (from /proc/self/task).
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// Every thread of this OS process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Polls `cond` until it holds (for conditions with nothing to wait on, such as thread names
/// set by the threads themselves), failing after [`HANG`].
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + HANG;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
