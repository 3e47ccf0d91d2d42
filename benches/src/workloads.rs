//! The local workloads. Each runs once, in the current (child) process, checks its own
//! answer and returns its result rows, or an error saying what was wrong.
//!
//! Results leave the runtime through a `std::sync::mpsc` channel, which the main thread
//! waits on with a deadline ([`RESULT_DEADLINE`]) so a hung scheduler fails the run instead
//! of hanging the harness. Timestamps are taken inside the processes where that is possible
//! (so the main thread's park/unpark latency is not measured).

pub mod durable;
pub mod http_serve;
pub mod leave;
pub mod remote;
pub mod replicated;
pub mod ws;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_scheduler::{ActorRef, Ctx, Message, Reply, Runtime};
use cairn_supervisor::{
    Actor, ActorCtx, ActorError, ChildSpec, Strategy, Supervisor, SupervisorSpec,
};

/// How long the main thread waits for a workload's answer before declaring it hung.
pub(crate) const RESULT_DEADLINE: Duration = Duration::from_secs(600);

/// Timeout of each request in the `call` workload: generous, a timeout is a failure here.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub use cairn_bench_harness::{expect_eq, rate, rss_bytes, Better, Row};

/// What every workload is run with.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub scale: f64,
}

impl Config {
    /// `base` times the scale, at least `min`.
    fn scaled(&self, base: u64, min: u64) -> u64 {
        ((base as f64 * self.scale).round() as u64).max(min)
    }

    fn runtime(&self) -> Result<Runtime, String> {
        Runtime::builder()
            .workers(self.workers)
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
    }
}

fn wait<T>(rx: &mpsc::Receiver<T>, what: &str) -> Result<T, String> {
    rx.recv_timeout(RESULT_DEADLINE).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => {
            format!("{what}: no answer within {RESULT_DEADLINE:?} (hung?)")
        }
        mpsc::RecvTimeoutError::Disconnected => {
            format!("{what}: the reporting process ended without an answer")
        }
    })
}

/// Shuts the runtime down and checks that no process is left behind.
fn shutdown(rt: Runtime) -> Result<Duration, String> {
    let start = Instant::now();
    rt.shutdown();
    let took = start.elapsed();
    expect_eq("processes left after shutdown", rt.process_count(), 0)?;
    Ok(took)
}

// ---------------------------------------------------------------------------------------
// ping-pong: two processes bounce a counter; one round trip = Ping there + Pong back.

enum Ball {
    /// Tells the ponger whom to answer.
    Serve(ActorRef<Ball>),
    Ping(u64),
    Pong(u64),
}

pub fn ping_pong(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(1_000_000, 1);
    let rt = cfg.runtime()?;
    let ponger = rt.spawn(|mut ctx: Ctx<Ball>| async move {
        let mut peer: Option<ActorRef<Ball>> = None;
        while let Some(msg) = ctx.recv().await {
            match msg {
                Message::User(Ball::Serve(p)) => peer = Some(p),
                Message::User(Ball::Ping(i)) => {
                    let Some(p) = &peer else { break };
                    if p.send(Ball::Pong(i)).await.is_err() {
                        break;
                    }
                }
                _ => {}
            }
        }
    });
    let (tx, rx) = mpsc::channel::<Result<Duration, String>>();
    rt.spawn(move |mut ctx: Ctx<Ball>| async move {
        if ponger.send(Ball::Serve(ctx.me())).await.is_err() {
            return;
        }
        let start = Instant::now();
        let mut done = 0u64;
        if ponger.send(Ball::Ping(0)).await.is_err() {
            return;
        }
        while let Some(msg) = ctx.recv().await {
            let Message::User(Ball::Pong(i)) = msg else {
                continue;
            };
            if i != done {
                let _ = tx.send(Err(format!("pong {i} arrived as round trip {done}")));
                return;
            }
            done += 1;
            if done == n {
                let _ = tx.send(Ok(start.elapsed()));
                return;
            }
            if ponger.send(Ball::Ping(done)).await.is_err() {
                return;
            }
        }
    });
    let elapsed = wait(&rx, "ping-pong")??;
    eprintln!(
        "   ping-pong: {n} round trips in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "ping-pong",
        unit: "round_trips/s",
        better: Better::Higher,
        value: rate(n, elapsed),
    }])
}

// ---------------------------------------------------------------------------------------
// fan-in: several senders stream u64s into one process with `send().await` (backpressure).

/// Senders in the fan-in workload.
const FAN_IN_SENDERS: u64 = 2;
/// A fan-in message is `sender << FAN_IN_SHIFT | sequence number`.
const FAN_IN_SHIFT: u32 = 40;

pub fn fan_in(cfg: &Config) -> Result<Vec<Row>, String> {
    let per_sender = cfg.scaled(5_000_000, 1);
    let total = per_sender * FAN_IN_SENDERS;
    let rt = cfg.runtime()?;
    let (tx, rx) = mpsc::channel::<Result<Instant, String>>();
    let sink = rt.spawn(move |mut ctx: Ctx<u64>| async move {
        // Next expected sequence number per sender: checks count, content and per-sender
        // FIFO order in one go.
        let mut next = [0u64; FAN_IN_SENDERS as usize];
        let mut received = 0u64;
        while let Some(msg) = ctx.recv().await {
            let Message::User(v) = msg else { continue };
            let (sender, seq) = ((v >> FAN_IN_SHIFT) as usize, v & ((1 << FAN_IN_SHIFT) - 1));
            match next.get_mut(sender) {
                Some(expected) if *expected == seq => *expected += 1,
                _ => {
                    let _ = tx.send(Err(format!(
                        "message {seq} from sender {sender} arrived out of order"
                    )));
                    return;
                }
            }
            received += 1;
            if received == total {
                let _ = tx.send(Ok(Instant::now()));
                return;
            }
        }
    });
    let start = Instant::now();
    for s in 0..FAN_IN_SENDERS {
        let sink = sink.clone();
        rt.spawn(move |_ctx: Ctx<()>| async move {
            for i in 0..per_sender {
                if sink.send(s << FAN_IN_SHIFT | i).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sink);
    let end = wait(&rx, "fan-in")??;
    let elapsed = end - start;
    eprintln!(
        "   fan-in: {FAN_IN_SENDERS} x {per_sender} messages in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "fan-in",
        unit: "msgs/s",
        better: Better::Higher,
        value: rate(total, elapsed),
    }])
}

// ---------------------------------------------------------------------------------------
// skynet: a tree of processes, 10 children per level; the leaves send their number up and
// each level sums. https://github.com/atemerev/skynet

/// Children per skynet node.
const SKYNET_FANOUT: u64 = 10;

/// The process body of a skynet node covering `num .. num + size`.
//
// Not an `async fn`: the body spawns itself, and only with the `Send` bound spelled out in the
// signature does the compiler accept that (an `async fn` fails with "cannot satisfy
// `impl Future: Send`"). Boxing the future would also work but costs one more allocation per
// process, which would be the harness's cost, not the scheduler's.
#[allow(clippy::manual_async_fn)]
fn skynet_node(
    mut ctx: Ctx<u64>,
    parent: ActorRef<u64>,
    num: u64,
    size: u64,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        if size == 1 {
            let _ = parent.send(num).await;
            return;
        }
        let child_size = size / SKYNET_FANOUT;
        for i in 0..SKYNET_FANOUT {
            let me = ctx.me();
            let child_num = num + i * child_size;
            ctx.handle()
                .spawn(move |c| skynet_node(c, me, child_num, child_size));
        }
        let mut sum = 0;
        let mut got = 0;
        while got < SKYNET_FANOUT {
            match ctx.recv().await {
                Some(Message::User(v)) => {
                    sum += v;
                    got += 1;
                }
                Some(Message::Signal(_)) => {}
                None => return,
            }
        }
        let _ = parent.send(sum).await;
    }
}

pub fn skynet(cfg: &Config) -> Result<Vec<Row>, String> {
    // The tree needs a power of the fan-out: round the scaled size to the nearest one.
    let wanted = cfg.scaled(1_000_000, SKYNET_FANOUT) as f64;
    let levels = (wanted.log10() / (SKYNET_FANOUT as f64).log10())
        .round()
        .max(1.0) as u32;
    let leaves = SKYNET_FANOUT.pow(levels);
    let expected = leaves * (leaves - 1) / 2;
    let rt = cfg.runtime()?;
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let start = Instant::now();
    let sink = rt.spawn(move |mut ctx: Ctx<u64>| async move {
        while let Some(msg) = ctx.recv().await {
            if let Message::User(sum) = msg {
                let _ = tx.send((sum, Instant::now()));
                return;
            }
        }
    });
    let root_parent = sink.clone();
    rt.spawn(move |c| skynet_node(c, root_parent, 0, leaves));
    drop(sink);
    let (sum, end) = wait(&rx, "skynet")?;
    expect_eq("skynet sum", sum, expected)?;
    let elapsed = end - start;
    let processes: u64 = (0..=levels).map(|l| SKYNET_FANOUT.pow(l)).sum();
    eprintln!(
        "   skynet: {leaves} leaves ({processes} processes), sum {sum}, {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "skynet",
        unit: "ms",
        better: Better::Lower,
        value: elapsed.as_secs_f64() * 1e3,
    }])
}

// ---------------------------------------------------------------------------------------
// spawn-idle: spawn many processes that block in `recv`; spawn rate and resident bytes.

/// Idle processes that have run their first poll (a static: no per-process state for it).
static IDLE_STARTED: AtomicU64 = AtomicU64::new(0);

pub fn spawn_idle(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(1_000_000, 1);
    let rt = cfg.runtime()?;
    IDLE_STARTED.store(0, Ordering::Relaxed);
    let before = rss_bytes()?;
    let start = Instant::now();
    for _ in 0..n {
        // The ActorRef is dropped at once: keeping a million of them would count 8 MB of
        // Vec against the processes.
        rt.spawn(|mut ctx: Ctx<()>| async move {
            IDLE_STARTED.fetch_add(1, Ordering::Relaxed);
            while ctx.recv().await.is_some() {}
        });
    }
    let spawned = start.elapsed();
    // Every process has run up to its first `recv` (and parked there).
    let deadline = Instant::now() + RESULT_DEADLINE;
    while IDLE_STARTED.load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            return Err("idle processes did not all start".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let started = start.elapsed();
    expect_eq(
        "idle processes started",
        IDLE_STARTED.load(Ordering::Acquire),
        n,
    )?;
    expect_eq("live processes", rt.process_count() as u64, n)?;
    let after = rss_bytes()?;
    let per_process = after.saturating_sub(before) as f64 / n as f64;
    let stop = shutdown(rt)?;
    eprintln!(
        "   spawn-idle: {n} processes; spawn calls {:.1} ms, all parked in recv at {:.1} ms; \
         RSS {:.1} -> {:.1} MiB = {per_process:.0} B/process; shutdown {:.1} ms",
        spawned.as_secs_f64() * 1e3,
        started.as_secs_f64() * 1e3,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        stop.as_secs_f64() * 1e3,
    );
    Ok(vec![
        Row {
            bench: "spawn-idle",
            unit: "spawns/s",
            better: Better::Higher,
            value: rate(n, started),
        },
        Row {
            bench: "spawn-idle",
            unit: "bytes/process",
            better: Better::Lower,
            value: per_process,
        },
    ])
}

// ---------------------------------------------------------------------------------------
// ring: processes in a ring pass one token around; each hop decrements it.

/// Laps of the token around the ring.
const RING_LAPS: u64 = 100;

enum Hop {
    /// Tells a ring member its successor.
    Next(ActorRef<Hop>),
    /// The token with the hops still to go.
    Token(u64),
}

pub fn ring(cfg: &Config) -> Result<Vec<Row>, String> {
    let size = cfg.scaled(10_000, 2);
    let hops = size * RING_LAPS;
    let rt = cfg.runtime()?;
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let members: Vec<ActorRef<Hop>> = (0..size)
        .map(|index| {
            let tx = tx.clone();
            rt.spawn(move |mut ctx: Ctx<Hop>| async move {
                let mut next: Option<ActorRef<Hop>> = None;
                while let Some(msg) = ctx.recv().await {
                    match msg {
                        Message::User(Hop::Next(n)) => next = Some(n),
                        Message::User(Hop::Token(0)) => {
                            let _ = tx.send((index, Instant::now()));
                        }
                        Message::User(Hop::Token(k)) => {
                            let Some(n) = &next else { return };
                            if n.send(Hop::Token(k - 1)).await.is_err() {
                                return;
                            }
                        }
                        Message::Signal(_) => {}
                    }
                }
            })
        })
        .collect();
    drop(tx);
    for (i, m) in members.iter().enumerate() {
        let next = members[(i + 1) % members.len()].clone();
        m.try_send(Hop::Next(next))
            .map_err(|e| format!("cannot link the ring: {e}"))?;
    }
    let start = Instant::now();
    members[0]
        .try_send(Hop::Token(hops))
        .map_err(|e| format!("cannot start the token: {e}"))?;
    let (last, end) = wait(&rx, "ring")?;
    expect_eq("member holding the token at the end", last, hops % size)?;
    let elapsed = end - start;
    eprintln!(
        "   ring: {size} processes x {RING_LAPS} laps = {hops} hops in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    drop(members);
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "ring",
        unit: "hops/s",
        better: Better::Higher,
        value: rate(hops, elapsed),
    }])
}

// ---------------------------------------------------------------------------------------
// call: one process makes sequential request/response calls to another.

enum Counter {
    /// Adds to the total and answers with the new total.
    Add(u64, Reply<u64>),
}

pub fn call(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(1_000_000, 1);
    let rt = cfg.runtime()?;
    let server = rt.spawn(|mut ctx: Ctx<Counter>| async move {
        let mut total = 0u64;
        while let Some(msg) = ctx.recv().await {
            if let Message::User(Counter::Add(k, reply)) = msg {
                total += k;
                let _ = reply.send(total);
            }
        }
    });
    let (tx, rx) = mpsc::channel::<Result<Duration, String>>();
    rt.spawn(move |_ctx: Ctx<()>| async move {
        let start = Instant::now();
        for i in 1..=n {
            match server.call(|r| Counter::Add(1, r), CALL_TIMEOUT).await {
                Ok(total) if total == i => {}
                Ok(total) => {
                    let _ = tx.send(Err(format!("call {i} answered {total}")));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("call {i} failed: {e}")));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(start.elapsed()));
    });
    let elapsed = wait(&rx, "call")??;
    eprintln!(
        "   call: {n} sequential calls in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "call",
        unit: "calls/s",
        better: Better::Higher,
        value: rate(n, elapsed),
    }])
}

// ---------------------------------------------------------------------------------------
// restart: one supervised worker crashes on request and its supervisor restarts it.

/// Asks the restart workload's worker to fail.
struct Crash;

/// A permanent child of a one-for-one supervisor: tells the driver its address each time it
/// (re)starts, and fails (an `Err` from `handle`, an abnormal exit) on `Crash`.
struct Worker {
    driver: ActorRef<ActorRef<Crash>>,
}

impl Actor for Worker {
    type Msg = Crash;

    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        let _ = self.driver.send(ctx.addr()).await;
        Ok(())
    }

    async fn handle(&mut self, _: Crash, _: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        Err("crash".into())
    }
}

pub fn restart(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(100_000, 1);
    let rt = cfg.runtime()?;
    let (tx, rx) = mpsc::channel::<Result<Duration, String>>();
    let driver = rt.spawn(move |mut ctx: Ctx<ActorRef<Crash>>| async move {
        let mut next = async || loop {
            match ctx.recv().await {
                Some(Message::User(w)) => return Some(w),
                Some(Message::Signal(_)) => {}
                None => return None,
            }
        };
        let Some(mut worker) = next().await else {
            return;
        };
        let start = Instant::now();
        for i in 0..n {
            let _ = worker.send(Crash).await;
            match next().await {
                Some(w) => worker = w,
                None => {
                    let _ = tx.send(Err(format!("restart {i}: the worker did not come back")));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(start.elapsed()));
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        // Like the peers' restart limits: never reached in this workload.
        .intensity(u32::MAX, Duration::from_secs(1))
        .child(ChildSpec::worker("worker", move || Worker {
            driver: driver.clone(),
        }));
    let sup = rt
        .block_on(Supervisor::start(&rt.handle(), spec))
        .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    let elapsed = wait(&rx, "restart")??;
    eprintln!(
        "   restart: {n} crash + restart cycles in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    drop(sup);
    shutdown(rt)?;
    Ok(vec![Row {
        bench: "restart",
        unit: "restarts/s",
        better: Better::Higher,
        value: rate(n, elapsed),
    }])
}
