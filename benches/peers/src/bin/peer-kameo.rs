//! cairn-bench's workloads on kameo, used the way its README and docs show: `#[derive(Actor)]`
//! or `impl Actor`, `impl Message<M>`, `Actor::spawn` (default bounded mailbox of 64),
//! `tell(..).await` (waits for mailbox room) and `ask(..)` for replies, `Spawn::supervise`
//! for supervision. Kameo runs on tokio: a multi-thread runtime with 2 workers.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use cairn_peers::*;
use kameo::actor::{ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::message::{Context, Message};
use kameo::supervision::RestartPolicy;
use kameo::Actor;

fn main() -> ExitCode {
    cairn_peers::main(Peer {
        system: "kameo",
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let rows = match workload {
        "ping-pong" => ping_pong(&rt, cfg),
        "fan-in" => fan_in(&rt, cfg),
        "skynet" => skynet(&rt, cfg),
        "spawn-idle" => spawn_idle(&rt, cfg),
        "ring" => ring(&rt, cfg),
        "call" => call(&rt, cfg),
        "restart" => restart(&rt, cfg),
        other => Err(format!("unknown workload {other:?}")),
    };
    rt.shutdown_timeout(Duration::from_secs(10));
    rows
}

fn wait<T>(rx: &std_mpsc::Receiver<T>, what: &str) -> Result<T, String> {
    rx.recv_timeout(RESULT_DEADLINE)
        .map_err(|e| format!("{what}: no answer ({e})"))
}

// --- ping-pong -----------------------------------------------------------------------------

#[derive(Actor)]
struct Ponger {
    pinger: Option<ActorRef<Pinger>>,
}

#[derive(Actor)]
struct Pinger {
    ponger: ActorRef<Ponger>,
    n: u64,
    done: u64,
    start: Instant,
    tx: std_mpsc::Sender<Result<Duration, String>>,
}

struct Serve(ActorRef<Pinger>);
struct Ping(u64);
struct Pong(u64);
struct Start;

impl Message<Serve> for Ponger {
    type Reply = ();
    async fn handle(&mut self, msg: Serve, _: &mut Context<Self, ()>) {
        self.pinger = Some(msg.0);
    }
}

impl Message<Ping> for Ponger {
    type Reply = ();
    async fn handle(&mut self, Ping(i): Ping, _: &mut Context<Self, ()>) {
        if let Some(p) = &self.pinger {
            let _ = p.tell(Pong(i)).await;
        }
    }
}

impl Message<Start> for Pinger {
    type Reply = ();
    async fn handle(&mut self, _: Start, _: &mut Context<Self, ()>) {
        self.start = Instant::now();
        let _ = self.ponger.tell(Ping(0)).await;
    }
}

impl Message<Pong> for Pinger {
    type Reply = ();
    async fn handle(&mut self, Pong(i): Pong, ctx: &mut Context<Self, ()>) {
        if i != self.done {
            let _ = self
                .tx
                .send(Err(format!("pong {i} arrived as round trip {}", self.done)));
            ctx.stop();
            return;
        }
        self.done += 1;
        if self.done == self.n {
            let _ = self.tx.send(Ok(self.start.elapsed()));
            ctx.stop();
            return;
        }
        let _ = self.ponger.tell(Ping(self.done)).await;
    }
}

fn ping_pong(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(PING_PONG_ROUND_TRIPS, 1);
    let (tx, rx) = std_mpsc::channel();
    rt.block_on(async {
        let ponger = Ponger::spawn(Ponger { pinger: None });
        let pinger = Pinger::spawn(Pinger {
            ponger: ponger.clone(),
            n,
            done: 0,
            start: Instant::now(),
            tx,
        });
        ponger
            .tell(Serve(pinger.clone()))
            .await
            .map_err(|e| e.to_string())?;
        pinger.tell(Start).await.map_err(|e| e.to_string())
    })?;
    let elapsed = wait(&rx, "ping-pong")??;
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

#[derive(Actor)]
struct Sink {
    next: [u64; FAN_IN_SENDERS as usize],
    received: u64,
    total: u64,
    tx: std_mpsc::Sender<Result<Instant, String>>,
}

struct Item(u64);

impl Message<Item> for Sink {
    type Reply = ();
    async fn handle(&mut self, Item(v): Item, ctx: &mut Context<Self, ()>) {
        let (sender, seq) = ((v >> FAN_IN_SHIFT) as usize, v & ((1 << FAN_IN_SHIFT) - 1));
        match self.next.get_mut(sender) {
            Some(expected) if *expected == seq => *expected += 1,
            _ => {
                let _ = self.tx.send(Err(format!(
                    "message {seq} from sender {sender} out of order"
                )));
                ctx.stop();
                return;
            }
        }
        self.received += 1;
        if self.received == self.total {
            let _ = self.tx.send(Ok(Instant::now()));
            ctx.stop();
        }
    }
}

/// A sender actor: on `Go`, streams its messages into the sink with `tell(..).await`.
#[derive(Actor)]
struct Feeder {
    id: u64,
    count: u64,
    sink: ActorRef<Sink>,
}

struct Go;

impl Message<Go> for Feeder {
    type Reply = ();
    async fn handle(&mut self, _: Go, ctx: &mut Context<Self, ()>) {
        for i in 0..self.count {
            if self
                .sink
                .tell(Item(self.id << FAN_IN_SHIFT | i))
                .await
                .is_err()
            {
                break;
            }
        }
        ctx.stop();
    }
}

fn fan_in(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let per_sender = cfg.scaled(FAN_IN_PER_SENDER, 1);
    let total = per_sender * FAN_IN_SENDERS;
    let (tx, rx) = std_mpsc::channel();
    let start = rt.block_on(async {
        let sink = Sink::spawn(Sink {
            next: [0; FAN_IN_SENDERS as usize],
            received: 0,
            total,
            tx,
        });
        let feeders: Vec<_> = (0..FAN_IN_SENDERS)
            .map(|id| {
                Feeder::spawn(Feeder {
                    id,
                    count: per_sender,
                    sink: sink.clone(),
                })
            })
            .collect();
        for f in &feeders {
            f.wait_for_startup().await;
        }
        let start = Instant::now();
        for f in &feeders {
            let _ = f.tell(Go).await;
        }
        start
    });
    let elapsed = wait(&rx, "fan-in")?? - start;
    eprintln!(
        "   fan-in: {FAN_IN_SENDERS} x {per_sender} messages in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("fan-in", "msgs/s", rate(total, elapsed))])
}

// --- skynet --------------------------------------------------------------------------------

/// Where a skynet node sends its sum: another node, or the root's reporter.
enum Parent {
    Node(ActorRef<Node>),
    Root(std_mpsc::Sender<(u64, Instant)>),
}

struct Node {
    parent: Parent,
    sum: u64,
    got: u64,
}

struct NodeArgs {
    parent: Parent,
    num: u64,
    size: u64,
}

struct Sum(u64);

impl Node {
    async fn report(parent: &Parent, sum: u64) {
        match parent {
            Parent::Node(p) => {
                let _ = p.tell(Sum(sum)).await;
            }
            Parent::Root(tx) => {
                let _ = tx.send((sum, Instant::now()));
            }
        }
    }
}

impl Actor for Node {
    type Args = NodeArgs;
    type Error = Infallible;

    async fn on_start(args: NodeArgs, me: ActorRef<Self>) -> Result<Self, Infallible> {
        if args.size == 1 {
            // A leaf: report; it stops when `me`, its last ActorRef, is dropped.
            Node::report(&args.parent, args.num).await;
        } else {
            let child_size = args.size / SKYNET_FANOUT;
            for i in 0..SKYNET_FANOUT {
                Node::spawn(NodeArgs {
                    parent: Parent::Node(me.clone()),
                    num: args.num + i * child_size,
                    size: child_size,
                });
            }
        }
        Ok(Node {
            parent: args.parent,
            sum: 0,
            got: 0,
        })
    }
}

impl Message<Sum> for Node {
    type Reply = ();
    async fn handle(&mut self, Sum(v): Sum, ctx: &mut Context<Self, ()>) {
        self.sum += v;
        self.got += 1;
        if self.got == SKYNET_FANOUT {
            Node::report(&self.parent, self.sum).await;
            ctx.stop();
        }
    }
}

fn skynet(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let (leaves, levels) = cfg.skynet_leaves();
    let expected = leaves * (leaves - 1) / 2;
    let (tx, rx) = std_mpsc::channel();
    let start = Instant::now();
    rt.block_on(async {
        Node::spawn(NodeArgs {
            parent: Parent::Root(tx),
            num: 0,
            size: leaves,
        });
    });
    let (sum, end) = wait(&rx, "skynet")?;
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
    type Args = ();
    type Error = Infallible;
    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Infallible> {
        IDLE_STARTED.fetch_add(1, Ordering::Relaxed);
        Ok(Idle)
    }
}

fn spawn_idle(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(SPAWN_IDLE, 1);
    // A kameo actor stops when its last ActorRef is dropped: keep them (pre-touched memory).
    let mut refs: Vec<ActorRef<Idle>> = pretouched_vec(n as usize);
    let before = rss_bytes()?;
    let start = Instant::now();
    {
        let _guard = rt.enter();
        for _ in 0..n {
            refs.push(Idle::spawn(()));
        }
    }
    wait_for_count(&IDLE_STARTED, n)?;
    let started = start.elapsed();
    let after = rss_bytes()?;
    drop(refs);
    Ok(spawn_idle_rows(n, before, after, started))
}

// --- ring ----------------------------------------------------------------------------------

#[derive(Actor)]
struct Member {
    index: u64,
    next: Option<ActorRef<Member>>,
    tx: std_mpsc::Sender<(u64, Instant)>,
}

struct Next(ActorRef<Member>);
struct Token(u64);

impl Message<Next> for Member {
    type Reply = ();
    async fn handle(&mut self, Next(n): Next, _: &mut Context<Self, ()>) {
        self.next = Some(n);
    }
}

impl Message<Token> for Member {
    type Reply = ();
    async fn handle(&mut self, Token(k): Token, _: &mut Context<Self, ()>) {
        if k == 0 {
            let _ = self.tx.send((self.index, Instant::now()));
        } else if let Some(n) = &self.next {
            let _ = n.tell(Token(k - 1)).await;
        }
    }
}

fn ring(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let size = cfg.scaled(RING_SIZE, 2);
    let hops = size * RING_LAPS;
    let (tx, rx) = std_mpsc::channel();
    let (members, start) = rt.block_on(async {
        let members: Vec<ActorRef<Member>> = (0..size)
            .map(|index| {
                Member::spawn(Member {
                    index,
                    next: None,
                    tx: tx.clone(),
                })
            })
            .collect();
        for (i, m) in members.iter().enumerate() {
            let _ = m.tell(Next(members[(i + 1) % members.len()].clone())).await;
        }
        let start = Instant::now();
        let _ = members[0].tell(Token(hops)).await;
        (members, start)
    });
    drop(tx);
    let (last, end) = wait(&rx, "ring")?;
    expect_eq("member holding the token at the end", last, hops % size)?;
    let elapsed = end - start;
    eprintln!(
        "   ring: {size} actors x {RING_LAPS} laps = {hops} hops in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    // The ring is a cycle of ActorRefs: stop the members explicitly.
    for m in &members {
        m.kill();
    }
    Ok(vec![Row::higher("ring", "hops/s", rate(hops, elapsed))])
}

// --- call ----------------------------------------------------------------------------------

#[derive(Actor)]
struct Counter {
    total: u64,
}

struct Add(u64);

impl Message<Add> for Counter {
    type Reply = u64;
    async fn handle(&mut self, Add(k): Add, _: &mut Context<Self, u64>) -> u64 {
        self.total += k;
        self.total
    }
}

fn call(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(CALLS, 1);
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.block_on(async {
        let counter = Counter::spawn(Counter { total: 0 });
        tokio::spawn(async move {
            let start = Instant::now();
            for i in 1..=n {
                match counter.ask(Add(1)).reply_timeout(CALL_TIMEOUT).await {
                    Ok(total) if total == i => {}
                    other => {
                        let _ = tx.send(Err(format!("call {i} answered {other:?}")));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(start.elapsed()));
        });
    });
    let elapsed = wait(&rx, "call")??;
    eprintln!(
        "   call: {n} sequential calls in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("call", "calls/s", rate(n, elapsed))])
}

// --- restart -------------------------------------------------------------------------------

/// A supervised worker: tells the driver each time it (re)starts, and fails on `Crash`.
struct Worker;

#[derive(Clone)]
struct WorkerArgs {
    started: tokio::sync::mpsc::UnboundedSender<ActorRef<Worker>>,
}

impl Actor for Worker {
    type Args = WorkerArgs;
    type Error = Infallible;
    async fn on_start(args: WorkerArgs, me: ActorRef<Self>) -> Result<Self, Infallible> {
        let _ = args.started.send(me);
        Ok(Worker)
    }
}

struct Crash;

#[derive(Debug)]
struct Crashed;

impl Message<Crash> for Worker {
    type Reply = Result<(), Crashed>;
    async fn handle(&mut self, _: Crash, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        Err(Crashed)
    }
}

/// The supervisor: one permanent worker, one-for-one (kameo's default strategy).
struct Sup {
    _worker: ActorRef<Worker>,
}

impl Actor for Sup {
    type Args = WorkerArgs;
    type Error = Infallible;
    async fn on_start(args: WorkerArgs, me: ActorRef<Self>) -> Result<Self, Infallible> {
        let worker = Worker::supervise(&me, args)
            .restart_policy(RestartPolicy::Permanent)
            // Like the other systems' restart intensity: never the limit in this workload.
            .restart_limit(u32::MAX, Duration::from_secs(1))
            .spawn()
            .await;
        Ok(Sup { _worker: worker })
    }
}

fn restart(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(RESTARTS, 1);
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.block_on(async {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let sup = Sup::spawn(WorkerArgs {
            started: started_tx,
        });
        tokio::spawn(async move {
            let _sup = sup;
            let Some(mut worker) = started.recv().await else {
                let _ = tx.send(Err("the worker never started".into()));
                return;
            };
            let start = Instant::now();
            for i in 0..n {
                let _ = worker.tell(Crash).await;
                match tokio::time::timeout(CALL_TIMEOUT, started.recv()).await {
                    Ok(Some(w)) => worker = w,
                    _ => {
                        let _ = tx.send(Err(format!("restart {i}: the worker did not come back")));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(start.elapsed()));
        });
    });
    let elapsed = wait(&rx, "restart")??;
    eprintln!(
        "   restart: {n} crash + restart cycles in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("restart", "restarts/s", rate(n, elapsed))])
}
