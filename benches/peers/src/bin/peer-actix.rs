//! cairn-bench's workloads on actix, used the way its docs show: `impl Actor` with
//! `Context<Self>`, `#[derive(Message)]` + `impl Handler<M>`, `Actor::start()`, `do_send` for
//! one-way messages between actors, `send(..).await` for requests (and as the only send that
//! respects the mailbox capacity of 16), `actix::Supervisor` + `Supervised` for restarts.
//!
//! Actix runs every actor of an arbiter on that arbiter's one thread; the idiomatic program
//! (and this one) runs everything in one `System`, i.e. on ONE thread. `--workers` is ignored.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cairn_peers::*;
use tokio::sync::{mpsc, oneshot};

fn main() -> ExitCode {
    cairn_peers::main(Peer {
        system: "actix",
        workloads: &[
            "ping-pong",
            "fan-in",
            "skynet",
            "spawn-idle",
            "ring",
            "call",
            "restart",
        ],
        run,
    })
}

fn run(workload: &str, cfg: &Config) -> Result<Vec<Row>, String> {
    let cfg = cfg.clone();
    let workload = workload.to_owned();
    let sys = System::new();
    let rows = sys.block_on(async move {
        match workload.as_str() {
            "ping-pong" => ping_pong(&cfg).await,
            "fan-in" => fan_in(&cfg).await,
            "skynet" => skynet(&cfg).await,
            "spawn-idle" => spawn_idle(&cfg).await,
            "ring" => ring(&cfg).await,
            "call" => call(&cfg).await,
            "restart" => restart(&cfg).await,
            other => Err(format!("unknown workload {other:?}")),
        }
    });
    System::current().stop();
    rows
}

/// Waits (on the system's own thread, without blocking it) for a workload's answer.
async fn wait<T>(rx: oneshot::Receiver<T>, what: &str) -> Result<T, String> {
    match actix::clock::timeout(RESULT_DEADLINE, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(format!(
            "{what}: the reporting actor ended without an answer"
        )),
        Err(_) => Err(format!("{what}: no answer within {RESULT_DEADLINE:?}")),
    }
}

// --- ping-pong -----------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Ping(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct Pong(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct Serve(Addr<Pinger>);

struct Ponger {
    pinger: Option<Addr<Pinger>>,
}

impl Actor for Ponger {
    type Context = Context<Self>;
}

impl Handler<Serve> for Ponger {
    type Result = ();
    fn handle(&mut self, Serve(p): Serve, _: &mut Context<Self>) {
        self.pinger = Some(p);
    }
}

impl Handler<Ping> for Ponger {
    type Result = ();
    fn handle(&mut self, Ping(i): Ping, _: &mut Context<Self>) {
        if let Some(p) = &self.pinger {
            p.do_send(Pong(i));
        }
    }
}

struct Pinger {
    ponger: Addr<Ponger>,
    n: u64,
    done: u64,
    start: Instant,
    tx: Option<oneshot::Sender<Result<Duration, String>>>,
}

impl Actor for Pinger {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.ponger.do_send(Serve(ctx.address()));
        self.start = Instant::now();
        self.ponger.do_send(Ping(0));
    }
}

impl Handler<Pong> for Pinger {
    type Result = ();
    fn handle(&mut self, Pong(i): Pong, ctx: &mut Context<Self>) {
        if i != self.done {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Err(format!("pong {i} arrived as round trip {}", self.done)));
            }
            ctx.stop();
            return;
        }
        self.done += 1;
        if self.done == self.n {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Ok(self.start.elapsed()));
            }
            ctx.stop();
            return;
        }
        self.ponger.do_send(Ping(self.done));
    }
}

async fn ping_pong(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(PING_PONG_ROUND_TRIPS, 1);
    let (tx, rx) = oneshot::channel();
    let ponger = Ponger { pinger: None }.start();
    let _pinger = Pinger {
        ponger,
        n,
        done: 0,
        start: Instant::now(),
        tx: Some(tx),
    }
    .start();
    let elapsed = wait(rx, "ping-pong").await??;
    eprintln!(
        "   ping-pong: {n} round trips in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher(
        "ping-pong",
        "round_trips/s",
        rate(n, elapsed),
    )])
}

// --- fan-in --------------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Item(u64);

struct Sink {
    next: [u64; FAN_IN_SENDERS as usize],
    received: u64,
    total: u64,
    tx: Option<oneshot::Sender<Result<Instant, String>>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Item> for Sink {
    type Result = ();
    fn handle(&mut self, Item(v): Item, ctx: &mut Context<Self>) {
        let (sender, seq) = ((v >> FAN_IN_SHIFT) as usize, v & ((1 << FAN_IN_SHIFT) - 1));
        match self.next.get_mut(sender) {
            Some(expected) if *expected == seq => *expected += 1,
            _ => {
                if let Some(tx) = self.tx.take() {
                    let _ = tx.send(Err(format!(
                        "message {seq} from sender {sender} out of order"
                    )));
                }
                ctx.stop();
                return;
            }
        }
        self.received += 1;
        if self.received == self.total {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Ok(Instant::now()));
            }
            ctx.stop();
        }
    }
}

async fn fan_in(cfg: &Config) -> Result<Vec<Row>, String> {
    let per_sender = cfg.scaled(FAN_IN_PER_SENDER, 1);
    let total = per_sender * FAN_IN_SENDERS;
    let (tx, rx) = oneshot::channel();
    let sink = Sink {
        next: [0; FAN_IN_SENDERS as usize],
        received: 0,
        total,
        tx: Some(tx),
    }
    .start();
    let start = Instant::now();
    for s in 0..FAN_IN_SENDERS {
        let sink = sink.clone();
        // `send(..).await` is actix's send that respects the bounded mailbox; it resolves
        // when the handler has run (`do_send` would ignore the capacity).
        actix::spawn(async move {
            for i in 0..per_sender {
                if sink.send(Item(s << FAN_IN_SHIFT | i)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sink);
    let elapsed = wait(rx, "fan-in").await?? - start;
    eprintln!(
        "   fan-in: {FAN_IN_SENDERS} x {per_sender} messages in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("fan-in", "msgs/s", rate(total, elapsed))])
}

// --- skynet --------------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Sum(u64);

enum Parent {
    Node(Addr<Node>),
    Root(Option<oneshot::Sender<(u64, Instant)>>),
}

impl Parent {
    fn report(&mut self, sum: u64) {
        match self {
            Parent::Node(p) => p.do_send(Sum(sum)),
            Parent::Root(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send((sum, Instant::now()));
                }
            }
        }
    }
}

struct Node {
    parent: Parent,
    num: u64,
    size: u64,
    sum: u64,
    got: u64,
}

impl Node {
    fn new(parent: Parent, num: u64, size: u64) -> Node {
        Node {
            parent,
            num,
            size,
            sum: 0,
            got: 0,
        }
    }
}

impl Actor for Node {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.size == 1 {
            self.parent.report(self.num);
            ctx.stop();
            return;
        }
        let child_size = self.size / SKYNET_FANOUT;
        for i in 0..SKYNET_FANOUT {
            Node::new(
                Parent::Node(ctx.address()),
                self.num + i * child_size,
                child_size,
            )
            .start();
        }
    }
}

impl Handler<Sum> for Node {
    type Result = ();
    fn handle(&mut self, Sum(v): Sum, ctx: &mut Context<Self>) {
        self.sum += v;
        self.got += 1;
        if self.got == SKYNET_FANOUT {
            self.parent.report(self.sum);
            ctx.stop();
        }
    }
}

async fn skynet(cfg: &Config) -> Result<Vec<Row>, String> {
    let (leaves, levels) = cfg.skynet_leaves();
    let expected = leaves * (leaves - 1) / 2;
    let (tx, rx) = oneshot::channel();
    let start = Instant::now();
    Node::new(Parent::Root(Some(tx)), 0, leaves).start();
    let (sum, end) = wait(rx, "skynet").await?;
    expect_eq("skynet sum", sum, expected)?;
    let elapsed = end - start;
    let processes: u64 = (0..=levels).map(|l| SKYNET_FANOUT.pow(l)).sum();
    eprintln!(
        "   skynet: {leaves} leaves ({processes} actors), sum {sum}, {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::lower(
        "skynet",
        "ms",
        elapsed.as_secs_f64() * 1e3,
    )])
}

// --- spawn-idle ----------------------------------------------------------------------------

static IDLE_STARTED: AtomicU64 = AtomicU64::new(0);

struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        IDLE_STARTED.fetch_add(1, Ordering::Relaxed);
    }
}

async fn spawn_idle(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(SPAWN_IDLE, 1);
    // An actix actor stops when its last Addr is dropped: keep them (pre-touched memory).
    let mut addrs: Vec<Addr<Idle>> = pretouched_vec(n as usize);
    let before = rss_bytes()?;
    let start = Instant::now();
    for _ in 0..n {
        addrs.push(Idle.start());
    }
    // The actors run on this thread: yield to them until all have started.
    let deadline = Instant::now() + RESULT_DEADLINE;
    while IDLE_STARTED.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err("idle actors did not all start".into());
        }
        actix::clock::sleep(Duration::from_micros(200)).await;
    }
    let started = start.elapsed();
    let after = rss_bytes()?;
    drop(addrs);
    Ok(spawn_idle_rows(n, before, after, started))
}

// --- ring ----------------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Next(Addr<Member>);

#[derive(Message)]
#[rtype(result = "()")]
struct Token(u64);

struct Member {
    index: u64,
    next: Option<Addr<Member>>,
    tx: mpsc::UnboundedSender<(u64, Instant)>,
}

impl Actor for Member {
    type Context = Context<Self>;
}

impl Handler<Next> for Member {
    type Result = ();
    fn handle(&mut self, Next(n): Next, _: &mut Context<Self>) {
        self.next = Some(n);
    }
}

impl Handler<Token> for Member {
    type Result = ();
    fn handle(&mut self, Token(k): Token, _: &mut Context<Self>) {
        if k == 0 {
            let _ = self.tx.send((self.index, Instant::now()));
        } else if let Some(n) = &self.next {
            n.do_send(Token(k - 1));
        }
    }
}

async fn ring(cfg: &Config) -> Result<Vec<Row>, String> {
    let size = cfg.scaled(RING_SIZE, 2);
    let hops = size * RING_LAPS;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let members: Vec<Addr<Member>> = (0..size)
        .map(|index| {
            Member {
                index,
                next: None,
                tx: tx.clone(),
            }
            .start()
        })
        .collect();
    drop(tx);
    for (i, m) in members.iter().enumerate() {
        m.do_send(Next(members[(i + 1) % members.len()].clone()));
    }
    let start = Instant::now();
    members[0].do_send(Token(hops));
    let (last, end) = match actix::clock::timeout(RESULT_DEADLINE, rx.recv()).await {
        Ok(Some(v)) => v,
        _ => return Err("ring: no answer".into()),
    };
    expect_eq("member holding the token at the end", last, hops % size)?;
    let elapsed = end - start;
    eprintln!(
        "   ring: {size} actors x {RING_LAPS} laps = {hops} hops in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("ring", "hops/s", rate(hops, elapsed))])
}

// --- call ----------------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "u64")]
struct Add(u64);

struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = u64;
    fn handle(&mut self, Add(k): Add, _: &mut Context<Self>) -> u64 {
        self.total += k;
        self.total
    }
}

async fn call(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(CALLS, 1);
    let counter = Counter { total: 0 }.start();
    let (tx, rx) = oneshot::channel::<Result<Duration, String>>();
    actix::spawn(async move {
        let start = Instant::now();
        for i in 1..=n {
            match counter.send(Add(1)).timeout(CALL_TIMEOUT).await {
                Ok(total) if total == i => {}
                other => {
                    let _ = tx.send(Err(format!("call {i} answered {other:?}")));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(start.elapsed()));
    });
    let elapsed = wait(rx, "call").await??;
    eprintln!(
        "   call: {n} sequential calls in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("call", "calls/s", rate(n, elapsed))])
}

// --- restart -------------------------------------------------------------------------------

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

/// A supervised worker: tells the driver each time it (re)starts, and stops on `Crash`;
/// `actix::Supervisor` then restarts it (same address, `restarting` then `started`).
struct Worker {
    started: mpsc::UnboundedSender<()>,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        let _ = self.started.send(());
    }
}

impl Supervised for Worker {
    fn restarting(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Crash> for Worker {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn restart(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(RESTARTS, 1);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let worker = Supervisor::start(move |_| Worker {
        started: started_tx,
    });
    let (tx, rx) = oneshot::channel::<Result<Duration, String>>();
    actix::spawn(async move {
        if started.recv().await.is_none() {
            let _ = tx.send(Err("the worker never started".into()));
            return;
        }
        let start = Instant::now();
        for i in 0..n {
            worker.do_send(Crash);
            match actix::clock::timeout(CALL_TIMEOUT, started.recv()).await {
                Ok(Some(())) => {}
                _ => {
                    let _ = tx.send(Err(format!("restart {i}: the worker did not come back")));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(start.elapsed()));
    });
    let elapsed = wait(rx, "restart").await??;
    eprintln!(
        "   restart: {n} crash + restart cycles in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("restart", "restarts/s", rate(n, elapsed))])
}
