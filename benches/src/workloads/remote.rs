//! The remote workloads: two mesh nodes on loopback, each in its own OS process.
//!
//! The workload child is node n1. It generates a cluster CA, saves it in a temporary
//! directory and starts node n2 as a child of its own (`cairn-bench --remote-peer DIR`),
//! which loads the CA, starts its runtime and [`Mesh`] on `127.0.0.1:0`, spawns a
//! *directory* process registered as [`DIRECTORY`], prints its listen address on stdout
//! and then runs until its stdin closes (n1 closes it when done, or by dying).
//!
//! Why two processes rather than two runtimes in one: that is how nodes run, and how the
//! Erlang peer runs (two VMs). Each node has its own allocator, its own worker threads
//! (`--workers` each, like Erlang's `+S 2:2` on both nodes) and talks to the other only
//! through the UDP socket; in one process the two runtimes would share a heap and could
//! be measured through shared caches that real nodes never share.
//!
//! Everything after start goes through the location-transparent API, as an application's
//! code would: n1 asks n2's directory (a call by name on n2, [`Handle::named_ref`]) to
//! spawn sinks and gets their pids back; senders on n1 send to those pids through
//! [`ActorRef::send`](cairn_scheduler::ActorRef::send) and `call` with a [`Reply`]; each
//! sink checks that its sender's numbers arrive complete and in order and then reports to
//! a collector process on n1 (a send back to a pid). The clock runs from before the first send until the
//! collector has every report (so it includes one one-way trip back, ~40 µs).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_net::mesh::Seed;
use cairn_net::{ClusterCa, Mesh, MeshConfig, TlsConfig};
use cairn_scheduler::{Ctx, Handle, Message, NodeId, Pid, Reply, Runtime};
use serde::{Deserialize, Serialize};

use super::{expect_eq, rate, wait, Better, Config, Row};

/// Names of the two nodes (their ids are `NodeId::of_name` of these).
const N1: &str = "node-1";
const N2: &str = "node-2";
/// The mesh tag of [`Remote`]; an application-like name, as every frame carries it.
const TAG: &str = "bench.Remote";
/// The name of n2's directory process.
const DIRECTORY: &str = "bench-directory";
/// Marks n2's "ready" line on its stdout: `tag \t listen-address`.
const PEER_READY: &str = "cairn-bench-peer";
/// Timeout of setup calls and of each call in `remote-call`: a timeout is a failure here.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long n1 waits for n2 to print its address.
const PEER_START: Duration = Duration::from_secs(60);
/// How long n1 waits for n2 to exit once its stdin is closed, before killing it.
const PEER_EXIT: Duration = Duration::from_secs(20);
/// Untimed calls before `remote-call` starts its clock (connection and caches warm).
const WARMUP_CALLS: u64 = 1_000;
/// Senders (on n1) and receivers (on n2) in `remote-fan`.
const FAN: u64 = 1_000;

/// Every message of the remote workloads (one registered type).
#[derive(Debug, Serialize, Deserialize)]
enum Remote {
    /// To n2's directory: spawn `sinks` sinks, each expecting `per_sink` numbers from one
    /// sender and then reporting to `report`; answer their pids.
    Setup {
        sinks: u32,
        per_sink: u64,
        report: Pid,
        reply: Reply<Vec<Pid>>,
    },
    /// To a sink: its sender's next number (0, 1, 2, ...).
    Seq(u64),
    /// To a sink: add to its running total and answer the new total.
    Add(u64, Reply<u64>),
    /// From a sink to n1's collector, once it has `per_sink` numbers.
    Done {
        sink: u32,
        count: u64,
        in_order: bool,
    },
}

fn mesh_config(ca: &ClusterCa, name: &str) -> Result<MeshConfig, String> {
    let cert = ca
        .issue(name)
        .map_err(|e| format!("cannot issue a certificate for {name}: {e}"))?;
    let tls = TlsConfig::new(ca.cert_der().clone(), cert);
    let listen: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    Ok(MeshConfig::new(listen, tls))
}

fn start_node(cfg: &Config, name: &str, ca: &ClusterCa) -> Result<(Runtime, Mesh), String> {
    let rt = Runtime::builder()
        .workers(cfg.workers)
        .node(NodeId::of_name(name))
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mesh = Mesh::start(&rt.handle(), mesh_config(ca, name)?)
        .map_err(|e| format!("cannot start the mesh: {e}"))?;
    mesh.declare::<Remote>(TAG)
        .map_err(|e| format!("cannot declare the message type: {e}"))?;
    Ok((rt, mesh))
}

/// Runs `fut` in a fresh process on `handle` and waits for its answer.
fn run_in<T, F>(handle: &Handle, what: &str, fut: F) -> Result<T, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    handle.spawn(move |_ctx: Ctx<()>| async move {
        let _ = tx.send(fut.await);
    });
    wait(&rx, what)?
}

// ---------------------------------------------------------------------------------------
// n2: the peer node process.

/// The body of `cairn-bench --remote-peer DIR`: node n2 until stdin closes.
pub fn peer_node(ca_dir: &str, cfg: &Config) -> Result<(), String> {
    let ca = ClusterCa::load(Path::new(ca_dir)).map_err(|e| format!("cannot load the CA: {e}"))?;
    let (rt, mesh) = start_node(cfg, N2, &ca)?;
    rt.spawn_named(DIRECTORY, move |mut ctx: Ctx<Remote>| async move {
        while let Some(msg) = ctx.recv().await {
            let Message::User(Remote::Setup {
                sinks,
                per_sink,
                report,
                reply,
            }) = msg
            else {
                continue;
            };
            let pids: Vec<Pid> = (0..sinks)
                .map(|sink| {
                    ctx.handle()
                        .spawn(move |ctx: Ctx<Remote>| run_sink(ctx, sink, per_sink, report))
                        .pid()
                })
                .collect();
            if reply.send(pids).is_err() {
                eprintln!("cairn-bench peer: cannot answer a setup call (the caller is gone)");
            }
        }
    })
    .map_err(|e| format!("cannot spawn the directory: {e}"))?;
    println!("{PEER_READY}\t{}", mesh.local_addr());
    // Runs until n1 closes our stdin (or dies, which closes it too).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let stats = mesh.stats();
    eprintln!(
        "   n2: delivered {}, dead letters {}, bad messages {}, protocol errors {}",
        stats.delivered, stats.dead_letters, stats.bad_messages, stats.protocol_errors
    );
    mesh.close();
    rt.shutdown();
    expect_eq("n2 processes left after shutdown", rt.process_count(), 0)?;
    expect_eq("n2 bad messages", stats.bad_messages, 0)?;
    expect_eq("n2 dead letters", stats.dead_letters, 0)
}

/// A sink on n2: checks its sender's numbers, answers `Add` calls.
async fn run_sink(mut ctx: Ctx<Remote>, sink: u32, per_sink: u64, report: Pid) {
    let (mut next, mut in_order, mut total) = (0u64, true, 0u64);
    while let Some(msg) = ctx.recv().await {
        match msg {
            Message::User(Remote::Seq(seq)) => {
                in_order &= seq == next;
                next += 1;
                if next == per_sink {
                    let done = Remote::Done {
                        sink,
                        count: next,
                        in_order,
                    };
                    if let Err(e) = ctx.handle().send(report, done).await {
                        eprintln!("cairn-bench peer: sink {sink} cannot report: {e}");
                    }
                }
            }
            Message::User(Remote::Add(x, reply)) => {
                total += x;
                if reply.send(total).is_err() {
                    eprintln!("cairn-bench peer: sink {sink} cannot answer (the caller is gone)");
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// n1: the workload side.

/// Node n1 with n2 running as a child process, connected.
struct Pair {
    rt: Runtime,
    mesh: Mesh,
    peer: Child,
    /// n2 runs until this is closed.
    peer_stdin: Option<ChildStdin>,
    /// Holds the CA files until n2 has loaded them.
    _ca_dir: tempfile::TempDir,
}

impl Pair {
    fn start(cfg: &Config) -> Result<Pair, String> {
        let ca = ClusterCa::generate().map_err(|e| format!("cannot generate a CA: {e}"))?;
        let ca_dir = tempfile::Builder::new()
            .prefix("cairn-bench-ca-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary dir: {e}"))?;
        ca.save(ca_dir.path())
            .map_err(|e| format!("cannot save the CA: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut peer = Command::new(exe)
            .arg("--remote-peer")
            .arg(ca_dir.path())
            .arg("--workers")
            .arg(cfg.workers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start node n2: {e}"))?;
        let peer_stdin = peer.stdin.take();
        // Read n2's ready line on a thread of its own, so a node that hangs before it is
        // ready fails the run after PEER_START instead of blocking it.
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = peer.stdout.take();
        std::thread::spawn(move || {
            let ready = stdout.map(BufReader::new).and_then(|out| {
                out.lines()
                    .map_while(Result::ok)
                    .find_map(|l| l.strip_prefix(PEER_READY).map(|a| a.trim().to_owned()))
            });
            let _ = ready_tx.send(ready);
        });
        let ready = ready_rx.recv_timeout(PEER_START).ok().flatten();
        let addr: SocketAddr = match ready.map(|a| a.parse()) {
            Some(Ok(addr)) => addr,
            other => {
                let _ = peer.kill();
                let _ = peer.wait();
                return Err(format!("node n2 did not start (ready line: {other:?})"));
            }
        };
        let (rt, mesh) = start_node(cfg, N1, &ca)?;
        let mut pair = Pair {
            rt,
            mesh,
            peer,
            peer_stdin,
            _ca_dir: ca_dir,
        };
        let mesh = pair.mesh.clone();
        let joined = run_in(&pair.rt.handle(), "joining n2", async move {
            mesh.join(Seed::new(addr, N2))
                .await
                .map_err(|e| format!("cannot join n2: {e}"))
        });
        if let Err(e) = joined {
            let _ = pair.stop_peer();
            return Err(e);
        }
        Ok(pair)
    }

    /// Asks n2 for `sinks` sinks of `per_sink` numbers each, reporting to `report`.
    fn sinks(&self, sinks: u32, per_sink: u64, report: Pid) -> Result<Vec<Pid>, String> {
        let directory = self.rt.named_ref::<Remote>(DIRECTORY, NodeId::of_name(N2));
        let pids = run_in(&self.rt.handle(), "setup call", async move {
            directory
                .call(
                    |reply| Remote::Setup {
                        sinks,
                        per_sink,
                        report,
                        reply,
                    },
                    CALL_TIMEOUT,
                )
                .await
                .map_err(|e| format!("setup call to n2: {e}"))
        })?;
        expect_eq("sinks spawned on n2", pids.len(), sinks as usize)?;
        Ok(pids)
    }

    /// A collector on n1: waits for `sinks` reports and sends the time the last came in,
    /// and whether every sink got all its numbers in order.
    fn collector(
        &self,
        sinks: u32,
        per_sink: u64,
    ) -> (Pid, mpsc::Receiver<Result<Instant, String>>) {
        let (tx, rx) = mpsc::channel();
        let pid = self
            .rt
            .spawn(move |mut ctx: Ctx<Remote>| async move {
                let mut seen = vec![false; sinks as usize];
                let mut left = sinks;
                let mut error = None;
                while left > 0 {
                    let Some(msg) = ctx.recv().await else { return };
                    let Message::User(Remote::Done {
                        sink,
                        count,
                        in_order,
                    }) = msg
                    else {
                        continue;
                    };
                    match seen.get_mut(sink as usize) {
                        Some(s) if !*s => *s = true,
                        _ => error = Some(format!("unexpected report from sink {sink}")),
                    }
                    if count != per_sink || !in_order {
                        error = Some(format!(
                            "sink {sink}: {count} numbers (expected {per_sink}), in order: {in_order}"
                        ));
                    }
                    left -= 1;
                }
                let end = Instant::now();
                let _ = tx.send(match error {
                    None => Ok(end),
                    Some(e) => Err(format!("wrong answer: {e}")),
                });
            })
            .pid();
        (pid, rx)
    }

    /// Closes the mesh and the runtime of n1, then lets n2 exit; checks both.
    fn finish(mut self) -> Result<(), String> {
        self.mesh.close();
        self.rt.shutdown();
        let left = self.rt.process_count();
        let peer = self.stop_peer();
        expect_eq("n1 processes left after shutdown", left, 0)?;
        peer
    }

    /// Closes n2's stdin and waits for it to exit (killing it after [`PEER_EXIT`]).
    fn stop_peer(&mut self) -> Result<(), String> {
        drop(self.peer_stdin.take());
        let deadline = Instant::now() + PEER_EXIT;
        loop {
            match self.peer.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("node n2 exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = self.peer.kill();
                    let _ = self.peer.wait();
                    return Err(format!("node n2 did not exit within {PEER_EXIT:?}; killed"));
                }
                Err(e) => return Err(format!("waiting for node n2: {e}")),
            }
        }
    }
}

/// `senders` processes on n1, sender *i* sending `per_sender` numbers to `sinks[i]`; the
/// clock runs from before the first spawn until the collector has every report.
fn one_way(pair: &Pair, senders: u32, per_sender: u64) -> Result<Duration, String> {
    let (collector, done) = pair.collector(senders, per_sender);
    let sinks = pair.sinks(senders, per_sender, collector)?;
    let (errors_tx, errors) = mpsc::channel::<String>();
    let start = Instant::now();
    for sink in sinks {
        let to = pair
            .rt
            .actor_ref::<Remote>(sink)
            .ok_or_else(|| format!("no handle for sink {sink}"))?;
        let errors_tx = errors_tx.clone();
        pair.rt.spawn(move |_ctx: Ctx<()>| async move {
            for seq in 0..per_sender {
                if let Err(e) = to.send(Remote::Seq(seq)).await {
                    let _ = errors_tx.send(format!("send {seq} to {sink}: {e}"));
                    return;
                }
            }
        });
    }
    drop(errors_tx);
    let end = wait(&done, "remote reports")??;
    if let Ok(e) = errors.try_recv() {
        return Err(e);
    }
    Ok(end - start)
}

/// `remote-throughput`: one sender on n1, one receiver on n2, small messages one way.
pub fn remote_throughput(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(1_000_000, 1);
    let pair = Pair::start(cfg)?;
    let elapsed = one_way(&pair, 1, n);
    pair.finish()?;
    let elapsed = elapsed?;
    eprintln!(
        "   remote-throughput: {n} messages n1 -> n2 in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row {
        bench: "remote-throughput",
        unit: "msgs/s",
        better: Better::Higher,
        value: rate(n, elapsed),
    }])
}

/// `remote-fan`: [`FAN`] senders on n1, each to its own receiver on n2.
pub fn remote_fan(cfg: &Config) -> Result<Vec<Row>, String> {
    let per = cfg.scaled(1_000, 1);
    let pair = Pair::start(cfg)?;
    let elapsed = one_way(&pair, FAN as u32, per);
    pair.finish()?;
    let elapsed = elapsed?;
    eprintln!(
        "   remote-fan: {FAN} senders x {per} messages n1 -> n2 in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row {
        bench: "remote-fan",
        unit: "msgs/s",
        better: Better::Higher,
        value: rate(FAN * per, elapsed),
    }])
}

/// `remote-call`: one process on n1 makes sequential calls to one process on n2; call *i*
/// must answer the running total. Latency is per call, send to answer.
///
/// Also reported (stderr): context switches per timed call, of both nodes' threads
/// together (`voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of every thread in
/// `/proc/<pid>/task`); with `CAIRN_BENCH_SWITCHES=threads`, per thread name too.
pub fn remote_call(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(20_000, 1);
    let pair = Pair::start(cfg)?;
    let mut switches = None;
    let result: Result<(Vec<u64>, Duration), String> = (|| {
        // The server is a sink that never reports (it gets no `Seq`); the collector only
        // gives it a pid to report to, and stops with the runtime.
        let (collector, _reports) = pair.collector(1, u64::MAX);
        let server = pair.sinks(1, u64::MAX, collector)?[0];
        let server = pair
            .rt
            .actor_ref::<Remote>(server)
            .ok_or("no handle for the server")?;
        let calls = |from: u64, to: u64, server: cairn_scheduler::ActorRef<Remote>| async move {
            let mut total = (0..from).sum::<u64>();
            let mut lat_ns = Vec::with_capacity((to - from) as usize);
            let mut timed = Duration::ZERO;
            for i in from..to {
                let t = Instant::now();
                let got: u64 = server
                    .call(|reply| Remote::Add(i, reply), CALL_TIMEOUT)
                    .await
                    .map_err(|e| format!("call {i}: {e}"))?;
                let took = t.elapsed();
                total += i;
                expect_eq("call answer", got, total)?;
                lat_ns.push(took.as_nanos() as u64);
                timed += took;
            }
            Ok((lat_ns, timed))
        };
        let handle = pair.rt.handle();
        run_in(
            &handle,
            "warm-up calls",
            calls(0, WARMUP_CALLS, server.clone()),
        )?;
        let pids = [std::process::id(), pair.peer.id()];
        let before = pids.map(thread_switches);
        let timed = run_in(
            &handle,
            "remote calls",
            calls(WARMUP_CALLS, WARMUP_CALLS + n, server),
        )?;
        switches = Some((before, pids.map(thread_switches)));
        Ok(timed)
    })();
    pair.finish()?;
    let (mut lat_ns, timed) = result?;
    lat_ns.sort_unstable();
    let q =
        |p: f64| lat_ns[((lat_ns.len() as f64 * p) as usize).min(lat_ns.len() - 1)] as f64 / 1e3;
    let (p50, p99) = (q(0.5), q(0.99));
    eprintln!(
        "   remote-call: {n} calls n1 -> n2 in {:.1} ms; p50 {p50:.1} us, p99 {p99:.1} us",
        timed.as_secs_f64() * 1e3
    );
    if let Some((before, after)) = switches {
        report_switches(n, &before, &after);
    }
    Ok(vec![
        Row {
            bench: "remote-call",
            unit: "calls/s",
            better: Better::Higher,
            value: rate(n, timed),
        },
        Row {
            bench: "remote-call",
            unit: "us_p50",
            better: Better::Lower,
            value: p50,
        },
        Row {
            bench: "remote-call",
            unit: "us_p99",
            better: Better::Lower,
            value: p99,
        },
    ])
}

/// Context switches (voluntary, involuntary) of each thread of process `pid`, by thread
/// name (threads of one name summed); empty where `/proc` cannot be read.
fn thread_switches(pid: u32) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let entry = out.entry(name.trim().to_owned()).or_insert((0, 0));
        entry.0 += field("voluntary_ctxt_switches:");
        entry.1 += field("nonvoluntary_ctxt_switches:");
    }
    out
}

type Switches = std::collections::BTreeMap<String, (u64, u64)>;

/// Prints the context switches per call of both nodes over the timed calls.
fn report_switches(calls: u64, before: &[Switches; 2], after: &[Switches; 2]) {
    let per = |x: u64| x as f64 / calls.max(1) as f64;
    let mut total = (0, 0);
    let mut lines = Vec::new();
    for (node, (b, a)) in ["n1", "n2"].iter().zip(before.iter().zip(after)) {
        for (name, &(vol, invol)) in a {
            let (vol0, invol0) = b.get(name).copied().unwrap_or((0, 0));
            let (dv, di) = (vol.saturating_sub(vol0), invol.saturating_sub(invol0));
            total.0 += dv;
            total.1 += di;
            if dv + di > 0 {
                lines.push(format!(
                    "      {node} {name}: {:.2} + {:.2}",
                    per(dv),
                    per(di)
                ));
            }
        }
    }
    eprintln!(
        "   remote-call: context switches per call, both nodes: {:.2} ({:.2} voluntary + {:.2} involuntary)",
        per(total.0 + total.1),
        per(total.0),
        per(total.1)
    );
    if std::env::var("CAIRN_BENCH_SWITCHES").as_deref() == Ok("threads") {
        for line in lines {
            eprintln!("{line}");
        }
    }
}
