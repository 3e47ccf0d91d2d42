//! cairn-bench's workloads on ractor, used the way its README shows: `impl Actor` with
//! `pre_start` and `handle`, `Actor::spawn(..).await`, `cast` for one-way messages (ractor's
//! mailboxes are unbounded, so there is no backpressure), `call` with an `RpcReplyPort` for
//! requests, and `spawn_linked` + `handle_supervisor_evt` for supervision (ractor's
//! supervisors are notified and restart the child themselves). Ractor runs on tokio: a
//! multi-thread runtime with 2 workers.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use cairn_peers::*;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

fn main() -> ExitCode {
    cairn_peers::main(Peer {
        system: "ractor",
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

fn spawn_err(e: impl std::fmt::Display) -> String {
    format!("spawn failed: {e}")
}

// --- ping-pong -----------------------------------------------------------------------------

struct Ponger;
enum PongerMsg {
    Serve(ActorRef<PingerMsg>),
    Ping(u64),
}

impl Actor for Ponger {
    type Msg = PongerMsg;
    type State = Option<ActorRef<PingerMsg>>;
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ActorRef<PongerMsg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(None)
    }
    async fn handle(
        &self,
        _: ActorRef<PongerMsg>,
        msg: PongerMsg,
        pinger: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PongerMsg::Serve(p) => *pinger = Some(p),
            PongerMsg::Ping(i) => {
                if let Some(p) = pinger {
                    p.cast(PingerMsg::Pong(i))?;
                }
            }
        }
        Ok(())
    }
}

struct Pinger;
enum PingerMsg {
    Start,
    Pong(u64),
}
struct PingerState {
    ponger: ActorRef<PongerMsg>,
    n: u64,
    done: u64,
    start: Instant,
    tx: std_mpsc::Sender<Result<Duration, String>>,
}

impl Actor for Pinger {
    type Msg = PingerMsg;
    type State = PingerState;
    type Arguments = PingerState;
    async fn pre_start(
        &self,
        _: ActorRef<PingerMsg>,
        s: PingerState,
    ) -> Result<PingerState, ActorProcessingErr> {
        Ok(s)
    }
    async fn handle(
        &self,
        myself: ActorRef<PingerMsg>,
        msg: PingerMsg,
        s: &mut PingerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PingerMsg::Start => {
                s.start = Instant::now();
                s.ponger.cast(PongerMsg::Ping(0))?;
            }
            PingerMsg::Pong(i) => {
                if i != s.done {
                    let _ =
                        s.tx.send(Err(format!("pong {i} arrived as round trip {}", s.done)));
                    myself.stop(None);
                    return Ok(());
                }
                s.done += 1;
                if s.done == s.n {
                    let _ = s.tx.send(Ok(s.start.elapsed()));
                    myself.stop(None);
                    return Ok(());
                }
                s.ponger.cast(PongerMsg::Ping(s.done))?;
            }
        }
        Ok(())
    }
}

fn ping_pong(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(PING_PONG_ROUND_TRIPS, 1);
    let (tx, rx) = std_mpsc::channel();
    rt.block_on(async {
        let (ponger, _) = Actor::spawn(None, Ponger, ()).await.map_err(spawn_err)?;
        let state = PingerState {
            ponger: ponger.clone(),
            n,
            done: 0,
            start: Instant::now(),
            tx,
        };
        let (pinger, _) = Actor::spawn(None, Pinger, state).await.map_err(spawn_err)?;
        ponger
            .cast(PongerMsg::Serve(pinger.clone()))
            .map_err(|e| e.to_string())?;
        pinger.cast(PingerMsg::Start).map_err(|e| e.to_string())
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

struct Sink;
struct SinkState {
    next: [u64; FAN_IN_SENDERS as usize],
    received: u64,
    total: u64,
    tx: std_mpsc::Sender<Result<Instant, String>>,
}

impl Actor for Sink {
    type Msg = u64;
    type State = SinkState;
    type Arguments = SinkState;
    async fn pre_start(
        &self,
        _: ActorRef<u64>,
        s: SinkState,
    ) -> Result<SinkState, ActorProcessingErr> {
        Ok(s)
    }
    async fn handle(
        &self,
        myself: ActorRef<u64>,
        v: u64,
        s: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        let (sender, seq) = ((v >> FAN_IN_SHIFT) as usize, v & ((1 << FAN_IN_SHIFT) - 1));
        match s.next.get_mut(sender) {
            Some(expected) if *expected == seq => *expected += 1,
            _ => {
                let _ = s.tx.send(Err(format!(
                    "message {seq} from sender {sender} out of order"
                )));
                myself.stop(None);
                return Ok(());
            }
        }
        s.received += 1;
        if s.received == s.total {
            let _ = s.tx.send(Ok(Instant::now()));
            myself.stop(None);
        }
        Ok(())
    }
}

/// A sender actor: on its one message, casts its whole stream into the sink.
struct Feeder;

impl Actor for Feeder {
    type Msg = ();
    type State = (u64, u64, ActorRef<u64>);
    type Arguments = (u64, u64, ActorRef<u64>);
    async fn pre_start(
        &self,
        _: ActorRef<()>,
        a: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(a)
    }
    async fn handle(
        &self,
        myself: ActorRef<()>,
        _: (),
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, count, sink) = s;
        for i in 0..*count {
            sink.cast(*id << FAN_IN_SHIFT | i)?;
        }
        myself.stop(None);
        Ok(())
    }
}

fn fan_in(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let per_sender = cfg.scaled(FAN_IN_PER_SENDER, 1);
    let total = per_sender * FAN_IN_SENDERS;
    let (tx, rx) = std_mpsc::channel();
    let start = rt.block_on(async {
        let state = SinkState {
            next: [0; FAN_IN_SENDERS as usize],
            received: 0,
            total,
            tx,
        };
        let (sink, _) = Actor::spawn(None, Sink, state).await.map_err(spawn_err)?;
        let mut feeders = Vec::new();
        for id in 0..FAN_IN_SENDERS {
            let (f, _) = Actor::spawn(None, Feeder, (id, per_sender, sink.clone()))
                .await
                .map_err(spawn_err)?;
            feeders.push(f);
        }
        let start = Instant::now();
        for f in &feeders {
            f.cast(()).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(start)
    })?;
    let elapsed = wait(&rx, "fan-in")?? - start;
    eprintln!(
        "   fan-in: {FAN_IN_SENDERS} x {per_sender} messages in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("fan-in", "msgs/s", rate(total, elapsed))])
}

// --- skynet --------------------------------------------------------------------------------

enum Parent {
    Node(ActorRef<u64>),
    Root(std_mpsc::Sender<(u64, Instant)>),
}

impl Parent {
    fn report(&self, sum: u64) {
        match self {
            Parent::Node(p) => {
                let _ = p.cast(sum);
            }
            Parent::Root(tx) => {
                let _ = tx.send((sum, Instant::now()));
            }
        }
    }
}

struct Node;
struct NodeState {
    parent: Parent,
    sum: u64,
    got: u64,
}

impl Actor for Node {
    type Msg = u64;
    type State = NodeState;
    type Arguments = (Parent, u64, u64);
    async fn pre_start(
        &self,
        myself: ActorRef<u64>,
        (parent, num, size): (Parent, u64, u64),
    ) -> Result<NodeState, ActorProcessingErr> {
        if size == 1 {
            parent.report(num);
            myself.stop(None);
        } else {
            let child_size = size / SKYNET_FANOUT;
            for i in 0..SKYNET_FANOUT {
                let args = (
                    Parent::Node(myself.clone()),
                    num + i * child_size,
                    child_size,
                );
                Actor::spawn(None, Node, args).await?;
            }
        }
        Ok(NodeState {
            parent,
            sum: 0,
            got: 0,
        })
    }
    async fn handle(
        &self,
        myself: ActorRef<u64>,
        v: u64,
        s: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        s.sum += v;
        s.got += 1;
        if s.got == SKYNET_FANOUT {
            s.parent.report(s.sum);
            myself.stop(None);
        }
        Ok(())
    }
}

fn skynet(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let (leaves, levels) = cfg.skynet_leaves();
    let expected = leaves * (leaves - 1) / 2;
    let (tx, rx) = std_mpsc::channel();
    let start = Instant::now();
    rt.spawn(async move {
        let _ = Actor::spawn(None, Node, (Parent::Root(tx), 0, leaves)).await;
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
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        IDLE_STARTED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn spawn_idle(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(SPAWN_IDLE, 1);
    // A ractor actor lives until it is stopped: its ActorRef and JoinHandle are dropped at once.
    let before = rss_bytes()?;
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            Actor::spawn(None, Idle, ()).await.map_err(spawn_err)?;
        }
        Ok::<_, String>(())
    })?;
    wait_for_count(&IDLE_STARTED, n)?;
    let started = start.elapsed();
    let after = rss_bytes()?;
    Ok(spawn_idle_rows(n, before, after, started))
}

// --- ring ----------------------------------------------------------------------------------

struct Member;
enum Hop {
    Next(ActorRef<Hop>),
    Token(u64),
}
struct MemberState {
    index: u64,
    next: Option<ActorRef<Hop>>,
    tx: std_mpsc::Sender<(u64, Instant)>,
}

impl Actor for Member {
    type Msg = Hop;
    type State = MemberState;
    type Arguments = MemberState;
    async fn pre_start(
        &self,
        _: ActorRef<Hop>,
        s: MemberState,
    ) -> Result<MemberState, ActorProcessingErr> {
        Ok(s)
    }
    async fn handle(
        &self,
        _: ActorRef<Hop>,
        msg: Hop,
        s: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Hop::Next(n) => s.next = Some(n),
            Hop::Token(0) => {
                let _ = s.tx.send((s.index, Instant::now()));
            }
            Hop::Token(k) => {
                if let Some(n) = &s.next {
                    n.cast(Hop::Token(k - 1))?;
                }
            }
        }
        Ok(())
    }
}

fn ring(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let size = cfg.scaled(RING_SIZE, 2);
    let hops = size * RING_LAPS;
    let (tx, rx) = std_mpsc::channel();
    let (members, start) = rt.block_on(async {
        let mut members = Vec::new();
        for index in 0..size {
            let state = MemberState {
                index,
                next: None,
                tx: tx.clone(),
            };
            members.push(
                Actor::spawn(None, Member, state)
                    .await
                    .map_err(spawn_err)?
                    .0,
            );
        }
        for (i, m) in members.iter().enumerate() {
            m.cast(Hop::Next(members[(i + 1) % members.len()].clone()))
                .map_err(|e| e.to_string())?;
        }
        let start = Instant::now();
        members[0]
            .cast(Hop::Token(hops))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((members, start))
    })?;
    drop(tx);
    let (last, end) = wait(&rx, "ring")?;
    expect_eq("member holding the token at the end", last, hops % size)?;
    let elapsed = end - start;
    eprintln!(
        "   ring: {size} actors x {RING_LAPS} laps = {hops} hops in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    for m in &members {
        m.stop(None);
    }
    Ok(vec![Row::higher("ring", "hops/s", rate(hops, elapsed))])
}

// --- call ----------------------------------------------------------------------------------

struct Counter;
enum CounterMsg {
    Add(u64, RpcReplyPort<u64>),
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        total: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        let CounterMsg::Add(k, reply) = msg;
        *total += k;
        let _ = reply.send(*total);
        Ok(())
    }
}

fn call(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(CALLS, 1);
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.block_on(async {
        let (counter, _) = Actor::spawn(None, Counter, ()).await.map_err(spawn_err)?;
        tokio::spawn(async move {
            let start = Instant::now();
            for i in 1..=n {
                match counter
                    .call(|r| CounterMsg::Add(1, r), Some(CALL_TIMEOUT))
                    .await
                {
                    Ok(CallResult::Success(total)) if total == i => {}
                    Ok(CallResult::Success(total)) => {
                        let _ = tx.send(Err(format!("call {i} answered {total}")));
                        return;
                    }
                    _ => {
                        let _ = tx.send(Err(format!("call {i} failed")));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(start.elapsed()));
        });
        Ok::<_, String>(())
    })?;
    let elapsed = wait(&rx, "call")??;
    eprintln!(
        "   call: {n} sequential calls in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("call", "calls/s", rate(n, elapsed))])
}

// --- restart -------------------------------------------------------------------------------

type Started = tokio::sync::mpsc::UnboundedSender<ActorRef<Crash>>;

/// A supervised worker: tells the driver each time it (re)starts, and fails on `Crash`.
struct Worker;
struct Crash;

impl Actor for Worker {
    type Msg = Crash;
    type State = ();
    type Arguments = Started;
    async fn pre_start(
        &self,
        myself: ActorRef<Crash>,
        started: Started,
    ) -> Result<(), ActorProcessingErr> {
        let _ = started.send(myself);
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Crash>,
        _: Crash,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("crash".into())
    }
}

/// The supervisor: links one worker and starts a new one whenever it fails (ractor's
/// supervision is a notification; restarting is the supervisor's code).
struct Sup;

impl Actor for Sup {
    type Msg = ();
    type State = Started;
    type Arguments = Started;
    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        started: Started,
    ) -> Result<Started, ActorProcessingErr> {
        Actor::spawn_linked(None, Worker, started.clone(), myself.get_cell()).await?;
        Ok(started)
    }
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        started: &mut Started,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) = event {
            Actor::spawn_linked(None, Worker, started.clone(), myself.get_cell()).await?;
        }
        Ok(())
    }
}

fn restart(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(RESTARTS, 1);
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.block_on(async {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (sup, _) = Actor::spawn(None, Sup, started_tx)
            .await
            .map_err(spawn_err)?;
        tokio::spawn(async move {
            let _sup = sup;
            let Some(mut worker) = started.recv().await else {
                let _ = tx.send(Err("the worker never started".into()));
                return;
            };
            let start = Instant::now();
            for i in 0..n {
                let _ = worker.cast(Crash);
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
        Ok::<_, String>(())
    })?;
    let elapsed = wait(&rx, "restart")??;
    eprintln!(
        "   restart: {n} crash + restart cycles in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("restart", "restarts/s", rate(n, elapsed))])
}
