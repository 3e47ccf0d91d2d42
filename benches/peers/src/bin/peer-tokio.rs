//! cairn-bench's workloads on plain tokio: a multi-thread runtime (2 workers), one task per
//! "process", `tokio::sync::mpsc` bounded channels of capacity 1,024 (Cairn's default mailbox
//! capacity) as mailboxes with `send().await`, and `oneshot` for replies; `skynet` sums its
//! children's results through their `JoinHandle`s, tokio's own way to return one value to
//! the spawner. The raw-channel baseline: no actor framework at all. No supervision, so no
//! `restart`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;

use cairn_peers::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Mailbox capacity: the same as Cairn's default.
const CAP: usize = 1024;

fn main() -> ExitCode {
    cairn_peers::main(Peer {
        system: "tokio",
        workloads: &[
            "ping-pong",
            "fan-in",
            "skynet",
            "spawn-idle",
            "ring",
            "call",
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
        other => Err(format!("unknown workload {other:?}")),
    };
    rt.shutdown_timeout(Duration::from_secs(10));
    rows
}

fn wait<T>(rx: &std_mpsc::Receiver<T>, what: &str) -> Result<T, String> {
    rx.recv_timeout(RESULT_DEADLINE)
        .map_err(|e| format!("{what}: no answer ({e})"))
}

fn ping_pong(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(PING_PONG_ROUND_TRIPS, 1);
    let (ping_tx, mut ping_rx) = mpsc::channel::<u64>(CAP);
    let (pong_tx, mut pong_rx) = mpsc::channel::<u64>(CAP);
    rt.spawn(async move {
        while let Some(i) = ping_rx.recv().await {
            if pong_tx.send(i).await.is_err() {
                break;
            }
        }
    });
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.spawn(async move {
        let start = Instant::now();
        let mut done = 0u64;
        if ping_tx.send(0).await.is_err() {
            return;
        }
        while let Some(i) = pong_rx.recv().await {
            if i != done {
                let _ = tx.send(Err(format!("pong {i} arrived as round trip {done}")));
                return;
            }
            done += 1;
            if done == n {
                let _ = tx.send(Ok(start.elapsed()));
                return;
            }
            if ping_tx.send(done).await.is_err() {
                return;
            }
        }
    });
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

fn fan_in(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let per_sender = cfg.scaled(FAN_IN_PER_SENDER, 1);
    let total = per_sender * FAN_IN_SENDERS;
    let (sink, mut inbox) = mpsc::channel::<u64>(CAP);
    let (tx, rx) = std_mpsc::channel::<Result<Instant, String>>();
    rt.spawn(async move {
        let mut next = [0u64; FAN_IN_SENDERS as usize];
        let mut received = 0u64;
        while let Some(v) = inbox.recv().await {
            let (sender, seq) = ((v >> FAN_IN_SHIFT) as usize, v & ((1 << FAN_IN_SHIFT) - 1));
            match next.get_mut(sender) {
                Some(expected) if *expected == seq => *expected += 1,
                _ => {
                    let _ = tx.send(Err(format!(
                        "message {seq} from sender {sender} out of order"
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
        rt.spawn(async move {
            for i in 0..per_sender {
                if sink.send(s << FAN_IN_SHIFT | i).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sink);
    let elapsed = wait(&rx, "fan-in")?? - start;
    eprintln!(
        "   fan-in: {FAN_IN_SENDERS} x {per_sender} messages in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("fan-in", "msgs/s", rate(total, elapsed))])
}

/// One skynet node: spawns its ten children and sums what their `JoinHandle`s return.
///
/// A task's output through its `JoinHandle` is how tokio hands one result back to the
/// spawner (tokio's docs, and the independent tokio skynets such as tzcnt's
/// runtime-benchmarks): no channel per node, so one allocation per task instead of three
/// (task, channel, the channel's first block), ~120 MB peak RSS instead of ~220 MB.
/// Boxed because the future is recursive; the box replaces the allocation a channel costs.
fn skynet_node(num: u64, size: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let child_size = size / SKYNET_FANOUT;
        let children: [JoinHandle<u64>; SKYNET_FANOUT as usize] = std::array::from_fn(|i| {
            tokio::spawn(skynet_node(num + i as u64 * child_size, child_size))
        });
        let mut sum = 0;
        for child in children {
            // A child panics only on a bug; its sum is then missing and the check fails.
            sum += child.await.unwrap_or(0);
        }
        sum
    })
}

fn skynet(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let (leaves, levels) = cfg.skynet_leaves();
    let expected = leaves * (leaves - 1) / 2;
    let (tx, rx) = std_mpsc::channel::<(u64, Instant)>();
    let start = Instant::now();
    rt.spawn(async move {
        if let Ok(sum) = tokio::spawn(skynet_node(0, leaves)).await {
            let _ = tx.send((sum, Instant::now()));
        }
    });
    let (sum, end) = wait(&rx, "skynet")?;
    expect_eq("skynet sum", sum, expected)?;
    let elapsed = end - start;
    let processes: u64 = (0..=levels).map(|l| SKYNET_FANOUT.pow(l)).sum();
    eprintln!(
        "   skynet: {leaves} leaves ({processes} tasks), sum {sum}, {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::lower(
        "skynet",
        "ms",
        elapsed.as_secs_f64() * 1e3,
    )])
}

static IDLE_STARTED: AtomicU64 = AtomicU64::new(0);

fn spawn_idle(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(SPAWN_IDLE, 1);
    // A task ends when its channel's last sender is dropped: keep them (memory pre-touched,
    // so not counted).
    let mut senders: Vec<mpsc::Sender<()>> = pretouched_vec(n as usize);
    let before = rss_bytes()?;
    let start = Instant::now();
    for _ in 0..n {
        let (tx, mut rx) = mpsc::channel::<()>(CAP);
        rt.spawn(async move {
            IDLE_STARTED.fetch_add(1, Ordering::Relaxed);
            while rx.recv().await.is_some() {}
        });
        senders.push(tx);
    }
    wait_for_count(&IDLE_STARTED, n)?;
    let started = start.elapsed();
    let after = rss_bytes()?;
    drop(senders);
    Ok(spawn_idle_rows(n, before, after, started))
}

fn ring(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let size = cfg.scaled(RING_SIZE, 2);
    let hops = size * RING_LAPS;
    let (tx, rx) = std_mpsc::channel::<(u64, Instant)>();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..size).map(|_| mpsc::channel::<u64>(CAP)).unzip();
    for (index, mut inbox) in receivers.into_iter().enumerate() {
        let next = senders[(index + 1) % senders.len()].clone();
        let tx = tx.clone();
        rt.spawn(async move {
            while let Some(k) = inbox.recv().await {
                if k == 0 {
                    let _ = tx.send((index as u64, Instant::now()));
                } else if next.send(k - 1).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    senders[0]
        .try_send(hops)
        .map_err(|e| format!("cannot start the token: {e}"))?;
    let (last, end) = wait(&rx, "ring")?;
    expect_eq("member holding the token at the end", last, hops % size)?;
    let elapsed = end - start;
    eprintln!(
        "   ring: {size} tasks x {RING_LAPS} laps = {hops} hops in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row::higher("ring", "hops/s", rate(hops, elapsed))])
}

fn call(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(CALLS, 1);
    let (server, mut inbox) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(CAP);
    rt.spawn(async move {
        let mut total = 0u64;
        while let Some((k, reply)) = inbox.recv().await {
            total += k;
            let _ = reply.send(total);
        }
    });
    let (tx, rx) = std_mpsc::channel::<Result<Duration, String>>();
    rt.spawn(async move {
        let start = Instant::now();
        for i in 1..=n {
            let (reply, answer) = oneshot::channel();
            if server.send((1, reply)).await.is_err() {
                let _ = tx.send(Err("server gone".into()));
                return;
            }
            match tokio::time::timeout(CALL_TIMEOUT, answer).await {
                Ok(Ok(total)) if total == i => {}
                other => {
                    let _ = tx.send(Err(format!("call {i} answered {other:?}")));
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
    Ok(vec![Row::higher("call", "calls/s", rate(n, elapsed))])
}
