//! The replicated-shard workloads: `durable-writes-replicated`, `failover` and `rebalance`.
//! Every node is its own OS process on 127.0.0.1, with replicated shards at their defaults
//! (`ShardConfig::default()`: 128 shards, replication factor 3, 100 ms Raft tick) and the
//! mesh's default failure timeout, so the numbers are those of an unconfigured cluster.
//!
//! The workload's child is the *orchestrator*, no node itself: it writes a cluster CA into a
//! temporary directory and starts the nodes as children of its own (`cairn-bench
//! --shard-peer DIR|NAME|SEED`; the first creates the cluster, the others join through it).
//! It drives them with one-line commands on their stdin and reads one-line answers on their
//! stdout (lines tagged [`PEER_TAG`]), so the callers run inside the nodes, as an
//! application's would: a call to an object goes to whichever node leads its shard (a mesh
//! hop when that is another node), and is answered only after its write set is committed by
//! a majority and applied (the output gate). Times that cross processes are Unix-epoch
//! nanoseconds (one machine, one clock).
//!
//! Each workload also reports the machine's load over its timed phase (from `/proc/stat`):
//! `busy_cores` for the whole machine and `own_cores` for the orchestrator and its nodes
//! (from `/proc/<pid>/stat`), so the other processes' share is the difference. The
//! development machine is shared: read the rates beside those two rows.
//!
//! # Invariants
//! * Every node process dies with the orchestrator: a node exits when its stdin closes, and
//!   [`Cluster`]'s drop kills (SIGKILL) and reaps every node still running.
//! * A node answers every command with exactly one tagged line (`ERR <why>` on failure).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::net::{ClusterCa, NodeEvent};
use cairn::prelude::*;
use cairn::shard::placement::{object_shard, target_replicas, Member};
use cairn::shard::ShardId;
use cairn::ShardConfig;
use parking_lot::Mutex;

use super::durable::{padded, quantile_us, value_of};
use super::{rate, wait, Config, Row};

/// Marks a node's answer lines on its stdout: `tag \t answer`.
const PEER_TAG: &str = "cairn-bench-shard";
/// The object class of these workloads.
const CLASS: &str = "bench-replicated";
/// Objects written by `durable-writes-replicated` and kept busy by `failover`.
const OBJECTS: u64 = 1_000;
/// Caller processes per object in `durable-writes-replicated` (as in `durable-writes-node`).
const CALLERS_PER_OBJECT: usize = 4;
/// Acknowledged writes of `durable-writes-replicated` at scale 1.
const WRITES: u64 = 300_000;
/// Sequential writes of `durable-writes-replicated`'s second phase (one caller, one object,
/// nothing else in flight: the latency of a replicated write itself, not of its queue).
const WRITES_ALONE: u64 = 1_000;
/// Objects (of [`FILL_BYTES`] each) in the mesh before `rebalance`'s fourth node joins.
const REBALANCE_OBJECTS: u64 = 100_000;
/// The state of one `rebalance` object.
const FILL_BYTES: usize = 1024;
/// Calls in flight per node while `rebalance` fills the mesh.
const FILL_IN_FLIGHT: u64 = 256;
/// Attempts after the first of one write in `durable-writes-replicated` (see `write`).
const WRITE_RETRIES: u32 = 10;
/// Timeout of each call (a timeout fails the write workload; `failover`'s callers retry).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of each call of `failover`'s busy callers, which retry on any failure.
const BUSY_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause of a busy caller after a failed call (no busy loop on `ShardUnavailable`).
const BUSY_RETRY: Duration = Duration::from_millis(10);
/// How long the busy callers run before the kill.
const BUSY_BEFORE_KILL: Duration = Duration::from_secs(2);
/// How often the orchestrator polls while it waits (replication, recovery, balance).
const POLL: Duration = Duration::from_millis(50);
/// Bound on every wait of the orchestrator (setup, a node's writes, recovery, balance):
/// below the harness's 10 minutes per run.
const WAIT: Duration = Duration::from_secs(540);
/// Bound on the wait for leadership to spread over the nodes before a timed phase.
const SPREAD_WAIT: Duration = Duration::from_secs(60);
/// Acknowledgements each busy object remembers (to find the first after the kill).
const ACK_RING: usize = 256;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn key(o: u64) -> String {
    format!("o{o}")
}

// ---------------------------------------------------------------------------------------
// The object.

/// Messages of [`Replicated`] (they cross the mesh, so they serialize).
#[derive(Serialize, Deserialize)]
enum Msg {
    /// Writes the next value (100 bytes) and answers with its sequence number.
    Put(Reply<u64>),
    /// Answers with the sequence number of the last write (writes nothing).
    Count(Reply<u64>),
    /// Stores this state (`rebalance`'s 1 KB) and answers its length.
    Fill(String, Reply<u64>),
}

/// An object whose writes are replicated: `v` is its write count as a 100-byte value.
struct Replicated {
    n: u64,
}

impl Object for Replicated {
    const CLASS: &'static str = CLASS;
    type Msg = Msg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        let stored: Option<String> = ctx.storage().get("v")?;
        let n = match stored {
            Some(v) => v.parse()?,
            None => 0,
        };
        Ok(Replicated { n })
    }

    async fn handle(&mut self, msg: Msg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            Msg::Put(reply) => {
                self.n += 1;
                ctx.storage().put("v", value_of(self.n).as_str())?;
                let _ = reply.send(self.n);
            }
            Msg::Count(reply) => {
                let _ = reply.send(self.n);
            }
            Msg::Fill(state, reply) => {
                ctx.storage().put("s", state.as_str())?;
                let _ = reply.send(state.len() as u64);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// A node process: `cairn-bench --shard-peer DIR|NAME|SEED`.

/// What one busy object's callers saw (`failover`).
#[derive(Default)]
struct Busy {
    /// The last acknowledgements, `(call sent, answer received)` in Unix ns.
    ring: VecDeque<(u64, u64)>,
    /// The largest sequence number acknowledged.
    last: u64,
    /// Acknowledgements not above the previous one (an acknowledged write lost).
    violations: u64,
}

/// The node process's state shared by its command loop and its callers.
struct PeerState {
    node: Node,
    busy: Mutex<HashMap<u64, Busy>>,
    stop_busy: AtomicBool,
    /// `(node id, Unix ns)` of every `Down` event this node saw.
    downs: Mutex<Vec<(u64, u64)>>,
}

/// The body of `cairn-bench --shard-peer SPEC`: one node until its stdin closes.
pub fn shard_peer(spec: &str, cfg: &Config) -> Result<(), String> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, name, seed] = parts[..] else {
        return Err(format!("bad peer spec {spec:?} (want DIR|NAME|SEED)"));
    };
    let dir = Path::new(dir);
    // Nodes log (to the orchestrator's stderr) only when asked: `RUST_LOG=cairn_shard=info`.
    if std::env::var_os("RUST_LOG").is_some() {
        cairn::init_logging(cairn::LogFormat::Text);
    }
    let mut b = Node::builder()
        .name(name)
        .workers(cfg.workers)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .shards(ShardConfig::default())
        .listen("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
    if !seed.is_empty() {
        b = b.join([seed.parse().map_err(|e| format!("seed {seed:?}: {e}"))?]);
    }
    let node = b.start().map_err(|e| format!("cannot start {name}: {e}"))?;
    node.host::<Replicated>();
    let mesh = node.mesh().ok_or("no mesh")?.clone();
    let state = Arc::new(PeerState {
        node,
        busy: Mutex::new(HashMap::new()),
        stop_busy: AtomicBool::new(false),
        downs: Mutex::new(Vec::new()),
    });
    let mut events = mesh.node_events();
    let s = state.clone();
    state.node.spawn(move |_ctx: Ctx<()>| async move {
        // Until the node's own state is the last reference (the process is ending).
        while Arc::strong_count(&s) > 1 {
            if let NodeEvent::Down { node, .. } = events.next().await {
                s.downs.lock().push((node.0, now_ns()));
            }
        }
    });
    let say = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{PEER_TAG}\t{line}");
        let _ = out.flush();
    };
    say(&format!("UP {} {}", state.node.id().0, mesh.local_addr()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"STOP") {
            state.node.shutdown();
            return Ok(());
        }
        let answer = command(&state, &words).unwrap_or_else(|e| format!("ERR {e}"));
        say(&answer);
    }
    // The orchestrator is gone: no graceful stop (it may be a kill test's survivor).
    std::process::exit(0)
}

fn num(words: &[&str], i: usize) -> Result<u64, String> {
    words
        .get(i)
        .ok_or_else(|| format!("{words:?}: argument {i} missing"))?
        .parse()
        .map_err(|e| format!("{words:?}: argument {i}: {e}"))
}

/// The objects `o < n` with `o % stride == first`.
fn strided(words: &[&str]) -> Result<Vec<u64>, String> {
    let (first, stride, n) = (num(words, 1)?, num(words, 2)?, num(words, 3)?);
    Ok((first..n).step_by(stride.max(1) as usize).collect())
}

/// Runs one command (see the orchestrator's calls for the grammar).
fn command(state: &Arc<PeerState>, words: &[&str]) -> Result<String, String> {
    let node = &state.node;
    match words.first().copied().unwrap_or("") {
        "REPLICATED" => Ok(format!(
            "REPLICATED {}",
            node.block_on(node.shards_fully_replicated())
        )),
        // Hosted shards as `shard:role` (L leader, F follower, C candidate, l learner; x a
        // replica that applied its own removal and is kept a while before it is destroyed).
        "SHARDS" => {
            let stats = node.shard_stats().ok_or("no shard driver")?;
            let me = node.id();
            let list: Vec<String> = stats
                .shards
                .iter()
                .map(|v| {
                    let role = if !v.voters.contains(&me) && !v.learners.contains(&me) {
                        'x'
                    } else {
                        v.role.letter()
                    };
                    format!("{}:{role}", v.shard.0)
                })
                .collect();
            Ok(format!("SHARDS {}", dash_if_empty(list.join(","))))
        }
        // `ACTIVE n`: which objects `o < n` have their activation here.
        "ACTIVE" => {
            let n = num(words, 1)?;
            let list: Vec<String> = (0..n)
                .filter(|&o| node.object::<Replicated>(&key(o)).pid().is_some())
                .map(|o| o.to_string())
                .collect();
            Ok(format!("ACTIVE {}", dash_if_empty(list.join(","))))
        }
        // `WARM first stride n`: one `Count` call to each of those objects (activates them).
        "WARM" => {
            let objects = strided(words)?;
            node.block_on(async {
                for &o in &objects {
                    let r = node.object::<Replicated>(&key(o));
                    r.call(Msg::Count, CALL_TIMEOUT)
                        .await
                        .map_err(|e| format!("warming {}: {e}", r.name()))?;
                }
                Ok::<(), String>(())
            })?;
            Ok(format!("WARMED {}", objects.len()))
        }
        "WRITE" => write(state, words),
        // `BUSY o,o,..`: one caller per object, writing until the process ends.
        "BUSY" => {
            let list = words.get(1).ok_or("BUSY needs objects")?;
            for o in list.split(',').filter(|s| *s != "-") {
                let o: u64 = o.parse().map_err(|e| format!("object {o:?}: {e}"))?;
                state.busy.lock().insert(o, Busy::default());
                let s = state.clone();
                node.spawn(move |_ctx: Ctx<()>| busy_caller(s, o));
            }
            Ok("BUSY".into())
        }
        // `REPORT killed_id since_ns`: busy objects answered by a call sent after `since`.
        "REPORT" => {
            let (killed, since) = (num(words, 1)?, num(words, 2)?);
            let busy = state.busy.lock();
            let (mut recovered, mut latest, mut violations) = (0u64, 0u64, 0u64);
            for b in busy.values() {
                violations += b.violations;
                if let Some(&(_, end)) = b.ring.iter().find(|(start, _)| *start >= since) {
                    recovered += 1;
                    latest = latest.max(end);
                }
            }
            let down = state
                .downs
                .lock()
                .iter()
                .filter(|(n, t)| *n == killed && *t >= since)
                .map(|(_, t)| *t)
                .min()
                .unwrap_or(0);
            Ok(format!(
                "REPORT {recovered} {} {latest} {down} {violations}",
                busy.len()
            ))
        }
        // Counters for where the time goes: `STATS proposals failed latency_count
        // latency_sum_us led store_commits store_sets`.
        "STATS" => {
            let sh = node.shard_stats().ok_or("no shard driver")?;
            let st = node.store().stats();
            Ok(format!(
                "STATS {} {} {} {} {} {} {}",
                sh.commits,
                sh.failed_proposals,
                sh.commit_latency.count(),
                sh.commit_latency.sum_us,
                sh.led,
                st.commits,
                st.write_sets
            ))
        }
        "HALT" => {
            state.stop_busy.store(true, Ordering::Release);
            Ok("HALTED".into())
        }
        // `FILL first stride n`: stores FILL_BYTES of state in each of those objects.
        "FILL" => {
            let objects = strided(words)?;
            let start = Instant::now();
            let (tx, rx) = mpsc::channel::<Result<(), String>>();
            let lanes = FILL_IN_FLIGHT.min(objects.len() as u64);
            for lane in 0..lanes {
                let tx = tx.clone();
                let node_objects: Vec<ObjectRef<Replicated>> = objects
                    .iter()
                    .skip(lane as usize)
                    .step_by(lanes as usize)
                    .map(|&o| node.object::<Replicated>(&key(o)))
                    .collect();
                node.spawn(move |_ctx: Ctx<()>| async move {
                    for (i, r) in node_objects.iter().enumerate() {
                        // A fill whose commit failed (`NoReply`, see `write`) is written again.
                        let mut tries = 0;
                        loop {
                            let state = padded(i as u64, FILL_BYTES);
                            match r.call(|reply| Msg::Fill(state, reply), CALL_TIMEOUT).await {
                                Ok(len) if len == FILL_BYTES as u64 => break,
                                Ok(len) => {
                                    let _ =
                                        tx.send(Err(format!("{} stored {len} bytes", r.name())));
                                    return;
                                }
                                Err(_) if tries < WRITE_RETRIES => tries += 1,
                                Err(e) => {
                                    let _ = tx.send(Err(format!("filling {}: {e}", r.name())));
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(Ok(()));
                });
            }
            drop(tx);
            for _ in 0..lanes {
                wait(&rx, "fill")??;
            }
            Ok(format!(
                "FILLED {} {}",
                objects.len(),
                start.elapsed().as_nanos()
            ))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// `WRITE first stride n callers per_caller`: `callers` processes per object, each making
/// `per_caller` sequential `Put` calls; answers `WROTE writes start_ns end_ns lat,lat,..`
/// (latencies in ns, send to acknowledgement) after checking every acknowledgement.
fn write(state: &Arc<PeerState>, words: &[&str]) -> Result<String, String> {
    let objects = strided(words)?;
    let (callers, per_caller) = (num(words, 4)?, num(words, 5)?);
    let node = &state.node;
    struct Report {
        object: u64,
        last: u64,
        latencies: Vec<u64>,
        end: u64,
        retried: u64,
        last_error: String,
    }
    let (tx, rx) = mpsc::channel::<Result<Report, String>>();
    let start = now_ns();
    for &object in &objects {
        for _ in 0..callers {
            let (r, tx) = (node.object::<Replicated>(&key(object)), tx.clone());
            node.spawn(move |_ctx: Ctx<()>| async move {
                let mut report = Report {
                    object,
                    last: 0,
                    latencies: Vec::with_capacity(per_caller as usize),
                    end: 0,
                    retried: 0,
                    last_error: String::new(),
                };
                for i in 0..per_caller {
                    let t = Instant::now();
                    // A write whose commit failed (its leader lost its lease or leadership
                    // while it was in flight) answers `NoReply`: its fate is unknown, and
                    // the caller writes again, as an application would.
                    let mut tries = 0;
                    let n = loop {
                        match r.call(Msg::Put, CALL_TIMEOUT).await {
                            Ok(n) => break n,
                            Err(e) if tries < WRITE_RETRIES => {
                                tries += 1;
                                report.retried += 1;
                                report.last_error = e.to_string();
                            }
                            Err(e) => {
                                let _ = tx.send(Err(format!(
                                    "{}: write {i} failed {tries} times, last: {e}",
                                    r.name()
                                )));
                                return;
                            }
                        }
                    };
                    if n <= report.last {
                        let _ = tx.send(Err(format!(
                            "{}: write {i} acknowledged as {n} after {}",
                            r.name(),
                            report.last
                        )));
                        return;
                    }
                    report.last = n;
                    report.latencies.push(t.elapsed().as_nanos() as u64);
                }
                report.end = now_ns();
                let _ = tx.send(Ok(report));
            });
        }
    }
    drop(tx);
    let mut last: HashMap<u64, u64> = HashMap::new();
    let (mut latencies, mut end, mut retried) = (Vec::new(), start, 0u64);
    let mut last_error = String::new();
    for _ in 0..objects.len() as u64 * callers {
        let r = wait(&rx, "replicated writes")??;
        if r.retried > 0 {
            retried += r.retried;
            last_error = r.last_error;
        }
        let l = last.entry(r.object).or_default();
        *l = (*l).max(r.last);
        latencies.extend_from_slice(&r.latencies);
        end = end.max(r.end);
    }
    let expected = callers * per_caller;
    if retried > 0 {
        eprintln!("   {retried} writes retried on this node, the last after: {last_error}");
    }
    // Every acknowledged write is counted; a retried one may have committed too.
    for (o, l) in &last {
        if *l < expected {
            return Err(format!(
                "{}: last acknowledgement {l}, want at least {expected}",
                key(*o)
            ));
        }
    }
    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
    Ok(format!(
        "WROTE {} {start} {end} {retried} {}",
        latencies.len(),
        dash_if_empty(list.join(","))
    ))
}

/// One busy object's caller (`failover`): `Put` after `Put` until halted, retrying failures.
async fn busy_caller(state: Arc<PeerState>, o: u64) {
    let r = state.node.object::<Replicated>(&key(o));
    while !state.stop_busy.load(Ordering::Acquire) {
        let start = now_ns();
        match r.call(Msg::Put, BUSY_CALL_TIMEOUT).await {
            Ok(n) => {
                let end = now_ns();
                let mut busy = state.busy.lock();
                let b = busy.entry(o).or_default();
                if n <= b.last {
                    b.violations += 1;
                }
                b.last = b.last.max(n);
                if b.ring.len() == ACK_RING {
                    b.ring.pop_front();
                }
                b.ring.push_back((start, end));
            }
            Err(_) => state.node.handle().sleep(BUSY_RETRY).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The orchestrator.

/// One node process.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    id: NodeId,
    addr: SocketAddr,
}

/// The node processes of one run, under one temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    workers: usize,
    peers: Vec<Option<Peer>>,
}

impl Cluster {
    /// Writes a cluster CA and starts `n` nodes (the first creates the cluster).
    fn start(cfg: &Config, n: usize) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-shards-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary dir: {e}"))?;
        ClusterCa::generate()
            .and_then(|ca| ca.save(&dir.path().join("cluster")))
            .map_err(|e| format!("cannot make the cluster CA: {e}"))?;
        let mut cluster = Cluster {
            dir,
            workers: cfg.workers,
            peers: Vec::new(),
        };
        for _ in 0..n {
            cluster.add()?;
        }
        Ok(cluster)
    }

    /// Starts one more node, joining through node 0; returns its index once it is up.
    fn add(&mut self) -> Result<usize, String> {
        let i = self.peers.len();
        let seed = match self.peers.first() {
            Some(Some(p)) => p.addr.to_string(),
            _ => String::new(),
        };
        let spec = format!("{}|n{i}|{seed}", self.dir.path().display());
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                "--shard-peer",
                &spec,
                "--workers",
                &self.workers.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start node n{i}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(answer) = line
                    .strip_prefix(PEER_TAG)
                    .and_then(|l| l.strip_prefix('\t'))
                {
                    if tx.send(answer.to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        let up = lines
            .recv_timeout(WAIT)
            .map_err(|_| format!("node n{i} did not come up"))?;
        let words: Vec<&str> = up.split(' ').collect();
        let ["UP", id, addr] = words[..] else {
            return Err(format!("node n{i} said {up:?}"));
        };
        self.peers.push(Some(Peer {
            child,
            stdin,
            lines,
            id: NodeId(id.parse().map_err(|e| format!("{e}"))?),
            addr: addr.parse().map_err(|e| format!("{e}"))?,
        }));
        Ok(i)
    }

    fn peer(&mut self, i: usize) -> Result<&mut Peer, String> {
        self.peers
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| format!("node n{i} is not running"))
    }

    /// Sends a command to node `i` without waiting for its answer.
    fn send(&mut self, i: usize, command: &str) -> Result<(), String> {
        let p = self.peer(i)?;
        writeln!(p.stdin, "{command}")
            .and_then(|()| p.stdin.flush())
            .map_err(|e| format!("node n{i}: {e}"))
    }

    /// Node `i`'s answer to the command sent last.
    fn answer(&mut self, i: usize) -> Result<String, String> {
        let answer = self
            .peer(i)?
            .lines
            .recv_timeout(WAIT)
            .map_err(|_| format!("node n{i} did not answer"))?;
        match answer.strip_prefix("ERR ") {
            Some(e) => Err(format!("node n{i}: {e}")),
            None => Ok(answer),
        }
    }

    fn ask(&mut self, i: usize, command: &str) -> Result<String, String> {
        self.send(i, command)?;
        self.answer(i)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].is_some())
            .collect()
    }

    /// Waits until every running node sees all `shards` with the full replication factor.
    fn wait_replicated(&mut self, shards: u32) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let mut full = true;
            for i in self.running() {
                let a = self.ask(i, "REPLICATED")?;
                full &= a == format!("REPLICATED {shards}");
            }
            if full {
                return Ok(start.elapsed());
            }
            if start.elapsed() > WAIT {
                return Err(format!("shards not replicated within {WAIT:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (polling, at most [`SPREAD_WAIT`]) until every running node leads its share of
    /// the `shards` (at least ⌊shards/nodes⌋ − 1; leaders move to each shard's preferred
    /// leader after replication). Returns how long that took and the spread, or the spread
    /// reached when the wait ran out (the run goes on: a build without leader balancing
    /// never spreads).
    fn wait_leaders_spread(&mut self, shards: u32) -> Result<(Option<Duration>, String), String> {
        let start = Instant::now();
        loop {
            let nodes = self.running();
            let share = (shards as usize / nodes.len().max(1)).saturating_sub(1);
            let mut led = Vec::new();
            for &i in &nodes {
                led.push(self.shards(i)?.iter().filter(|(_, r)| *r == 'L').count());
            }
            let spread = led
                .iter()
                .zip(&nodes)
                .map(|(l, i)| format!("n{i} leads {l}"))
                .collect::<Vec<_>>()
                .join(", ");
            if led.iter().sum::<usize>() == shards as usize && led.iter().all(|&l| l >= share) {
                return Ok((Some(start.elapsed()), spread));
            }
            if start.elapsed() > SPREAD_WAIT {
                return Ok((None, spread));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Each node's `STATS` numbers (see the command).
    fn stats(&mut self, nodes: &[usize]) -> Result<Vec<Vec<u64>>, String> {
        nodes
            .iter()
            .map(|&i| {
                let a = self.ask(i, "STATS")?;
                a.split(' ')
                    .skip(1)
                    .map(|v| v.parse().map_err(|e| format!("{a:?}: {e}")))
                    .collect()
            })
            .collect()
    }

    /// Node `i`'s hosted shards: (shard, role letter).
    fn shards(&mut self, i: usize) -> Result<Vec<(u32, char)>, String> {
        let a = self.ask(i, "SHARDS")?;
        let list = a
            .strip_prefix("SHARDS ")
            .ok_or_else(|| format!("said {a:?}"))?;
        list.split(',')
            .filter(|s| *s != "-")
            .map(|s| {
                let (shard, role) = s.split_once(':').ok_or("bad shard entry")?;
                let shard = shard.parse().map_err(|e| format!("{e}"))?;
                Ok((shard, role.chars().next().unwrap_or('?')))
            })
            .collect()
    }

    /// Shards led by each running node (for the logs).
    fn leaders(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        for i in self.running() {
            let led = self.shards(i)?.iter().filter(|(_, r)| *r == 'L').count();
            out.push(format!("n{i} leads {led}"));
        }
        Ok(out.join(", "))
    }

    /// Kills node `i` with SIGKILL and reaps it.
    fn kill(&mut self, i: usize) -> Result<(), String> {
        let mut p = self.peers[i].take().ok_or("not running")?;
        p.child.kill().map_err(|e| format!("kill n{i}: {e}"))?;
        let _ = p.child.wait();
        Ok(())
    }

    /// Pids of the running node processes.
    fn pids(&self) -> Vec<u32> {
        self.peers.iter().flatten().map(|p| p.child.id()).collect()
    }

    /// `(node index, pid)` of every running node.
    fn node_pids(&self) -> Vec<(usize, u32)> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_ref()?.child.id())))
            .collect()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.peers.iter_mut().flatten() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load.

/// (busy, total) jiffies of the machine, from `/proc/stat`'s `cpu` line.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// utime + stime of a process, in jiffies.
fn process_jiffies(pid: u32) -> u64 {
    let (user, sys) = process_user_sys(pid);
    user + sys
}

/// (utime, stime) of a process (all its threads), in jiffies.
fn process_user_sys(pid: u32) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the ')'.
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (at(11), at(12))
}

/// Microseconds per jiffy (`CLK_TCK`, 100 on Linux).
const US_PER_JIFFY: f64 = 10_000.0;

/// The load over a timed phase: the machine's busy cores and those of this run's processes.
struct Load {
    machine: Option<(u64, u64)>,
    /// CPU time so far of this process and of each node process, by pid.
    own: HashMap<u32, u64>,
    /// (user, system) jiffies so far of each node process, by node index.
    nodes: Vec<(usize, u32, (u64, u64))>,
    cpus: f64,
    /// `perf record` attached to each node over the timed phase (`CAIRN_BENCH_PERF=DIR`).
    perf: Vec<Child>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let nodes = cluster
            .node_pids()
            .into_iter()
            .map(|(i, pid)| (i, pid, process_user_sys(pid)))
            .collect();
        Load {
            machine: machine_jiffies(),
            own: Self::own(cluster),
            nodes,
            cpus,
            perf: Self::start_perf(cluster),
        }
    }

    /// With `CAIRN_BENCH_PERF=DIR`: one `perf record` per node process into `DIR/n<i>.data`
    /// (options from `CAIRN_BENCH_PERF_ARGS`, default `-F 499 -g`; frame pointers are not
    /// kept, so `--call-graph dwarf` gives whole stacks), stopped (SIGINT) when the timed
    /// phase ends. For profiles, not for rates: sampling costs the nodes CPU.
    fn start_perf(cluster: &Cluster) -> Vec<Child> {
        let Some(dir) = std::env::var_os("CAIRN_BENCH_PERF") else {
            return Vec::new();
        };
        let dir = PathBuf::from(dir);
        cluster
            .node_pids()
            .into_iter()
            .filter_map(|(i, pid)| {
                let out = dir.join(format!("n{i}.data"));
                let args =
                    std::env::var("CAIRN_BENCH_PERF_ARGS").unwrap_or_else(|_| "-F 499 -g".into());
                Command::new("perf")
                    .arg("record")
                    .args(args.split_whitespace())
                    .args(["-q", "-o"])
                    .arg(&out)
                    .args(["-p", &pid.to_string()])
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| eprintln!("   perf record of n{i}: {e}"))
                    .ok()
            })
            .collect()
    }

    fn stop_perf(&mut self) {
        for mut p in self.perf.drain(..) {
            let _ = Command::new("kill")
                .args(["-INT", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
    }

    /// Rows `cpu_us_per_write` (all nodes together) of `bench`: the node processes' CPU
    /// time (user + system) since the start, per acknowledged write; each node's share is
    /// printed, user and system apart. The timed phase has no start-up work, so this is the
    /// CPU cost of a replicated write (plus the background ticks, small beside it).
    fn cpu_per_write(&mut self, bench: &'static str, writes: u64) -> Vec<Row> {
        self.stop_perf();
        let per = |j: u64| j as f64 * US_PER_JIFFY / writes.max(1) as f64;
        let mut total = 0u64;
        let mut parts = Vec::new();
        for &(i, pid, (u0, s0)) in &self.nodes {
            let (u1, s1) = process_user_sys(pid);
            let (u, s) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
            total += u + s;
            parts.push(format!(
                "n{i} {:.1} (user {:.1}, sys {:.1})",
                per(u + s),
                per(u),
                per(s)
            ));
        }
        eprintln!(
            "   {bench}: node CPU per acknowledged write: {:.1} us over {writes} writes; {}",
            per(total),
            parts.join("; ")
        );
        vec![Row::lower(bench, "cpu_us_per_write", per(total).max(0.001))]
    }

    fn own(cluster: &Cluster) -> HashMap<u32, u64> {
        std::iter::once(std::process::id())
            .chain(cluster.pids())
            .map(|pid| (pid, process_jiffies(pid)))
            .collect()
    }

    /// Rows `busy_cores` and `own_cores` of `bench` since the start (both at least 0.001,
    /// so a row is never 0); also printed with the load average.
    fn rows(&self, bench: &'static str, cluster: &Cluster) -> Vec<Row> {
        let (Some((b0, t0)), Some((b1, t1))) = (self.machine, machine_jiffies()) else {
            return Vec::new();
        };
        let total = (t1 - t0).max(1) as f64;
        let busy = (b1 - b0) as f64 / total * self.cpus;
        // Processes running at the end (a node started since counts whole, a killed node's
        // time is lost: it only makes `own` smaller).
        let own: u64 = Self::own(cluster)
            .into_iter()
            .map(|(pid, now)| now.saturating_sub(self.own.get(&pid).copied().unwrap_or(0)))
            .sum();
        let own = own as f64 / total * self.cpus;
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!(
            "   {bench}: load during the timed phase: {busy:.2} busy cores of {}, {own:.2} of \
             them this run's processes, so {:.2} others; /proc/loadavg {}",
            self.cpus,
            busy - own,
            loadavg.trim()
        );
        vec![
            Row::lower(bench, "busy_cores", busy.max(0.001)),
            Row::lower(bench, "own_cores", own.max(0.001)),
        ]
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_perf();
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

pub fn durable_writes_replicated(cfg: &Config) -> Result<Vec<Row>, String> {
    const BENCH: &str = "durable-writes-replicated";
    let objects = cfg.scaled(OBJECTS, 10);
    let per_caller = cfg
        .scaled(WRITES, 1)
        .div_ceil(objects * CALLERS_PER_OBJECT as u64)
        .max(1);
    let mut cluster = Cluster::start(cfg, 3)?;
    let took = cluster.wait_replicated(ShardConfig::default().shards)?;
    eprintln!(
        "   {BENCH}: 3 nodes, every shard on 3 voters after {:.1} s; {}",
        took.as_secs_f64(),
        cluster.leaders()?
    );
    let (spread_in, spread) = cluster.wait_leaders_spread(ShardConfig::default().shards)?;
    eprintln!(
        "   {BENCH}: leadership {} ({spread})",
        spread_in.map_or("not spread within the wait".into(), |d| format!(
            "spread after {:.1} s more",
            d.as_secs_f64()
        ))
    );
    let nodes = cluster.running();
    // Node i drives objects o with o % 3 == i (activation first, untimed).
    for &i in &nodes {
        cluster.send(i, &format!("WARM {i} 3 {objects}"))?;
    }
    for &i in &nodes {
        cluster.answer(i)?;
    }
    let mut active = Vec::new();
    for &i in &nodes {
        let a = cluster.ask(i, &format!("ACTIVE {objects}"))?;
        active.push(a.split(',').count() - usize::from(a.ends_with('-')));
    }
    eprintln!("   {BENCH}: activations per node {active:?}");
    let before = cluster.stats(&nodes)?;
    let mut load = Load::start(&cluster);
    for &i in &nodes {
        cluster.send(
            i,
            &format!("WRITE {i} 3 {objects} {CALLERS_PER_OBJECT} {per_caller}"),
        )?;
    }
    let (mut writes, mut start, mut end, mut latencies) = (0u64, u64::MAX, 0u64, Vec::new());
    let mut retried = 0u64;
    for &i in &nodes {
        let wrote = Wrote::parse(i, &cluster.answer(i)?)?;
        writes += wrote.writes;
        retried += wrote.retried;
        start = start.min(wrote.start);
        end = end.max(wrote.end);
        latencies.extend(wrote.latencies);
    }
    let mut rows = load.rows(BENCH, &cluster);
    rows.extend(load.cpu_per_write(BENCH, writes));
    let after = cluster.stats(&nodes)?;
    for (k, &i) in nodes.iter().enumerate() {
        // Saturating: column 4 (shards led) is a gauge, and leaders may move in the phase.
        let d: Vec<u64> = (0..7)
            .map(|j| after[k][j].saturating_sub(before[k][j]))
            .collect();
        if d[0] + d[1] + d[5] > 0 {
            eprintln!(
                "   {BENCH}: n{i} (leads {} shards): {} write sets committed as leader, mean \
                 proposal to applied commit {:.2} ms, {} not committed; its store: {} LMDB \
                 commits for {} write sets",
                after[k][4],
                d[0],
                d[3] as f64 / d[2].max(1) as f64 / 1e3,
                d[1],
                d[5],
                d[6]
            );
        }
    }
    let expected = objects * CALLERS_PER_OBJECT as u64 * per_caller;
    if writes != expected {
        return Err(format!("{writes} acknowledged writes, want {expected}"));
    }
    let elapsed = Duration::from_nanos(end.saturating_sub(start));
    latencies.sort_unstable();
    let (p50, p99) = (quantile_us(&latencies, 0.5), quantile_us(&latencies, 0.99));
    eprintln!(
        "   {BENCH}: {objects} objects x {CALLERS_PER_OBJECT} callers x {per_caller} calls = \
         {writes} acknowledged writes in {:.1} ms over 3 nodes ({retried} calls failed and were \
         written again); p50 {p50:.0} us, p99 {p99:.0} us (from the first attempt)",
        elapsed.as_secs_f64() * 1e3
    );
    rows.insert(0, Row::higher(BENCH, "writes/s", rate(writes, elapsed)));
    rows.insert(1, Row::lower(BENCH, "us_p50", p50));
    rows.insert(2, Row::lower(BENCH, "us_p99", p99));
    // The phase above keeps objects x callers writes in flight, so its p50 is mostly queueing
    // (Little's law: in flight / rate). A write alone shows what replication itself costs.
    let alone = cfg.scaled(WRITES_ALONE, 100);
    let i = nodes[0];
    let mut wrote = Wrote::parse(
        i,
        &cluster.ask(i, &format!("WRITE {i} 1 {} 1 {alone}", i + 1))?,
    )?;
    if wrote.writes != alone {
        return Err(format!(
            "{} acknowledged writes alone, want {alone}",
            wrote.writes
        ));
    }
    wrote.latencies.sort_unstable();
    let (p50, p99) = (
        quantile_us(&wrote.latencies, 0.5),
        quantile_us(&wrote.latencies, 0.99),
    );
    eprintln!(
        "   {BENCH}: {alone} sequential writes to one object from n{i}, nothing else in \
         flight: p50 {p50:.0} us, p99 {p99:.0} us ({} retried)",
        wrote.retried
    );
    rows.insert(3, Row::lower(BENCH, "us_p50_alone", p50));
    rows.insert(4, Row::lower(BENCH, "us_p99_alone", p99));
    Ok(rows)
}

/// A node's answer to `WRITE` (see [`write()`]).
struct Wrote {
    writes: u64,
    start: u64,
    end: u64,
    retried: u64,
    latencies: Vec<u64>,
}

impl Wrote {
    fn parse(node: usize, answer: &str) -> Result<Wrote, String> {
        let w: Vec<&str> = answer.split(' ').collect();
        let ["WROTE", n, s, e, r, lats] = w[..] else {
            return Err(format!("node n{node} said {answer:?}"));
        };
        let p = |v: &str| v.parse::<u64>().map_err(|e| format!("{v:?}: {e}"));
        Ok(Wrote {
            writes: p(n)?,
            start: p(s)?,
            end: p(e)?,
            retried: p(r)?,
            latencies: lats
                .split(',')
                .filter(|l| *l != "-")
                .map(p)
                .collect::<Result<_, _>>()?,
        })
    }
}

pub fn failover(cfg: &Config) -> Result<Vec<Row>, String> {
    const BENCH: &str = "failover";
    let objects = cfg.scaled(OBJECTS, 10);
    let mut cluster = Cluster::start(cfg, 3)?;
    cluster.wait_replicated(ShardConfig::default().shards)?;
    let (spread_in, spread) = cluster.wait_leaders_spread(ShardConfig::default().shards)?;
    eprintln!(
        "   {BENCH}: leadership {} ({spread})",
        spread_in.map_or("not spread within the wait".into(), |d| format!(
            "spread after {:.1} s",
            d.as_secs_f64()
        ))
    );
    for i in cluster.running() {
        cluster.send(i, &format!("WARM {i} 3 {objects}"))?;
    }
    for i in cluster.running() {
        cluster.answer(i)?;
    }
    // The victim: the node where most of the objects run (it leads their shards).
    let mut active: Vec<Vec<u64>> = Vec::new();
    for i in cluster.running() {
        let a = cluster.ask(i, &format!("ACTIVE {objects}"))?;
        let list = a.strip_prefix("ACTIVE ").unwrap_or("-");
        active.push(list.split(',').filter_map(|o| o.parse().ok()).collect());
    }
    let victim = (0..active.len())
        .max_by_key(|&i| active[i].len())
        .ok_or("no node")?;
    let survivors: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != victim)
        .collect();
    eprintln!(
        "   {BENCH}: activations per node {:?}; {}; killing n{victim}",
        active.iter().map(Vec::len).collect::<Vec<_>>(),
        cluster.leaders()?
    );
    // Every object busy, its caller on a survivor (half each).
    for (k, &s) in survivors.iter().enumerate() {
        let mine: Vec<String> = (0..objects)
            .filter(|o| *o as usize % survivors.len() == k)
            .map(|o| o.to_string())
            .collect();
        cluster.ask(s, &format!("BUSY {}", mine.join(",")))?;
    }
    std::thread::sleep(BUSY_BEFORE_KILL);
    let victim_id = cluster.peer(victim)?.id.0;
    let load = Load::start(&cluster);
    let killed = now_ns();
    cluster.kill(victim)?;
    let (detect, recover) = loop {
        let (mut recovered, mut total, mut latest, mut down, mut violations) =
            (0, 0, 0u64, u64::MAX, 0u64);
        for &s in &survivors {
            let a = cluster.ask(s, &format!("REPORT {victim_id} {killed}"))?;
            let w: Vec<u64> = a
                .split(' ')
                .skip(1)
                .map(|v| v.parse().map_err(|e| format!("{a:?}: {e}")))
                .collect::<Result<_, String>>()?;
            let [r, t, l, d, v] = w[..] else {
                return Err(format!("node said {a:?}"));
            };
            recovered += r;
            total += t;
            latest = latest.max(l);
            if d != 0 {
                down = down.min(d);
            }
            violations += v;
        }
        if violations != 0 {
            return Err(format!("{violations} acknowledgements went backwards"));
        }
        if recovered == total && down != u64::MAX {
            break (down - killed, latest - killed);
        }
        if now_ns() - killed > WAIT.as_nanos() as u64 {
            return Err(format!(
                "{recovered} of {total} objects answered again within {WAIT:?} (down seen: {})",
                down != u64::MAX
            ));
        }
        std::thread::sleep(POLL);
    };
    let mut rows = load.rows(BENCH, &cluster);
    for &s in &survivors {
        cluster.ask(s, "HALT")?;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    eprintln!(
        "   {BENCH}: n{victim} killed; first survivor saw it down after {:.0} ms; all {objects} \
         objects answered a call sent after the kill {:.0} ms after it ({:.0} ms after the \
         detection)",
        ms(detect),
        ms(recover),
        ms(recover) - ms(detect)
    );
    rows.insert(0, Row::lower("failover-detect", "ms", ms(detect)));
    rows.insert(1, Row::lower("failover-recover", "ms", ms(recover)));
    Ok(rows)
}

pub fn rebalance(cfg: &Config) -> Result<Vec<Row>, String> {
    const BENCH: &str = "rebalance";
    let objects = cfg.scaled(REBALANCE_OBJECTS, 30);
    let shard_cfg = ShardConfig::default();
    let mut cluster = Cluster::start(cfg, 3)?;
    cluster.wait_replicated(shard_cfg.shards)?;
    let nodes = cluster.running();
    for &i in &nodes {
        cluster.send(i, &format!("FILL {i} 3 {objects}"))?;
    }
    let mut fill_ns = 0u64;
    for &i in &nodes {
        let a = cluster.answer(i)?;
        fill_ns = fill_ns.max(
            a.split(' ')
                .nth(2)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
    }
    eprintln!(
        "   {BENCH}: {objects} objects of {FILL_BYTES} B written through 3 nodes in {:.1} s",
        fill_ns as f64 / 1e9
    );
    let load = Load::start(&cluster);
    let joined = Instant::now();
    let new = cluster.add()?;
    // The target: each shard on the 3 best-scoring of the 4 live members.
    let members: Vec<Member> = cluster
        .peers
        .iter()
        .flatten()
        .map(|p| Member::up(p.id, None))
        .collect();
    let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
    let target: Vec<BTreeSet<u32>> = ids
        .iter()
        .map(|&id| {
            (0..shard_cfg.shards)
                .filter(|&s| {
                    target_replicas(
                        ShardId(s),
                        &members,
                        shard_cfg.replication,
                        None,
                        Duration::ZERO,
                        shard_cfg.down_grace,
                    )
                    .contains(&id)
                })
                .collect()
        })
        .collect();
    // Balanced: every node is a voter (as its replica sees the configuration) of exactly its
    // target shards. Settled: besides, no removed replica is left (a replica that applied
    // its own removal is kept 20 election timeouts before it is destroyed, DESIGN.md).
    let mut balanced = None;
    let settled = loop {
        let mut off = Vec::new();
        let mut removed = 0;
        for i in cluster.running() {
            let hosted = cluster.shards(i)?;
            removed += hosted.iter().filter(|(_, r)| *r == 'x').count();
            let voting: BTreeSet<u32> = hosted
                .into_iter()
                .filter(|(_, r)| *r != 'l' && *r != 'x')
                .map(|(s, _)| s)
                .collect();
            if voting != target[i] {
                let extra: Vec<_> = voting.difference(&target[i]).collect();
                let missing: Vec<_> = target[i].difference(&voting).collect();
                off.push(format!("n{i}: extra {extra:?}, missing {missing:?}"));
            }
        }
        if off.is_empty() && balanced.is_none() {
            balanced = Some(joined.elapsed());
        }
        if off.is_empty() && removed == 0 {
            break joined.elapsed();
        }
        if joined.elapsed() > WAIT {
            return Err(format!(
                "not balanced within {WAIT:?}: {}; {removed} removed replicas left",
                off.join("; ")
            ));
        }
        std::thread::sleep(POLL);
    };
    let balanced = balanced.unwrap_or(settled);
    let mut rows = load.rows(BENCH, &cluster);
    // What moved: the state of every object whose shard gained the new node.
    let moved = (0..objects)
        .filter(|&o| {
            let shard = object_shard(CLASS, &key(o), None, &shard_cfg);
            target[new].contains(&shard.0)
        })
        .count() as u64;
    let mb = (moved * FILL_BYTES as u64) as f64 / 1e6;
    let disk = du(&cluster.data_dir(new));
    eprintln!(
        "   {BENCH}: n{new} joined; balanced after {:.2} s, removed replicas gone after {:.2} s \
         ({} of {} shards on n{new}); {moved} objects' state moved to it ({mb:.1} MB of values, \
         {:.1} MB on its disk)",
        balanced.as_secs_f64(),
        settled.as_secs_f64(),
        target[new].len(),
        shard_cfg.shards,
        disk as f64 / 1e6
    );
    rows.insert(0, Row::lower(BENCH, "ms", balanced.as_secs_f64() * 1e3));
    rows.insert(
        1,
        Row::higher(BENCH, "MB/s", (mb / balanced.as_secs_f64()).max(0.001)),
    );
    rows.insert(
        2,
        Row::lower("rebalance-settled", "ms", settled.as_secs_f64() * 1e3),
    );
    Ok(rows)
}

/// Bytes allocated on disk under `dir` (LMDB files are sparse).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
