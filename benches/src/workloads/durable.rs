//! The durable workloads: objects that write through the group-commit writer and answer
//! behind their output gate, activation from storage, storage reads, and supervision at
//! scale. Each builds a `cairn::Node` on its own temporary data directory (removed when the
//! workload returns) and checks its answer — for the write workloads, by reopening the store
//! after the node is gone and reading back what was acknowledged.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn::storage::{Config as StoreConfig, Store};

use super::{expect_eq, rate, rss_bytes, wait, Better, Config, Row, CALL_TIMEOUT};

/// Bytes of the value each durable write stores (MessagePack adds a 2-byte string header).
const VALUE_LEN: usize = 100;
/// Bytes of state an `activate` object loads.
const STATE_LEN: usize = 1024;

fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary data dir: {e}"))
}

fn start_node(cfg: &Config, dir: &std::path::Path) -> Result<Node, String> {
    Node::builder()
        .workers(cfg.workers)
        .data_dir(dir)
        .start()
        .map_err(|e| format!("cannot start the node: {e}"))
}

/// Stops the node and checks that no process is left behind.
fn stop_node(node: Node) -> Result<(), String> {
    node.shutdown();
    expect_eq(
        "processes left after shutdown",
        node.handle().process_count(),
        0,
    )
}

/// The value of the `n`-th write: `n` in decimal, zero-padded to [`VALUE_LEN`] bytes.
/// (Not `format!("{n:0100}")`, which pads one `write_char` at a time: that showed up in
/// profiles of the write workloads as the harness's own cost.)
pub(crate) fn value_of(n: u64) -> String {
    padded(n, VALUE_LEN)
}

pub(crate) fn padded(n: u64, len: usize) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(len.max(digits.len()));
    s.extend(std::iter::repeat_n('0', len.saturating_sub(digits.len())));
    s.push_str(&digits);
    s
}

/// The `q`-quantile of sorted nanoseconds, in microseconds.
pub(crate) fn quantile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    sorted_ns[i] as f64 / 1e3
}

// ---------------------------------------------------------------------------------------
// durable-writes-node / durable-writes-one: objects that `put` one 100-byte value per message
// and answer with the write's sequence number. The answer leaves the output gate only once the
// write is durable, so every acknowledged `call` is a durable write.

enum WriterMsg {
    /// Writes the next value and answers with its sequence number.
    Put(Reply<u64>),
    /// Answers with the sequence number of the last write (writes nothing).
    Count(Reply<u64>),
}

struct Writer {
    /// Writes so far (also the sequence number in the stored value).
    n: u64,
}

impl Object for Writer {
    const CLASS: &'static str = "bench-writer";
    type Msg = WriterMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        let stored: Option<String> = ctx.storage().get("v")?;
        let n = match stored {
            Some(v) => v.parse()?,
            None => 0,
        };
        Ok(Writer { n })
    }

    async fn handle(
        &mut self,
        msg: WriterMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            WriterMsg::Put(reply) => {
                self.n += 1;
                ctx.storage().put("v", value_of(self.n).as_str())?;
                let _ = reply.send(self.n);
            }
            WriterMsg::Count(reply) => {
                let _ = reply.send(self.n);
            }
        }
        Ok(())
    }
}

/// What one caller process reports.
struct CallerReport {
    object: usize,
    /// The largest sequence number it was acknowledged.
    last: u64,
    /// Latency of each call, send to acknowledgement, in nanoseconds.
    latencies_ns: Vec<u64>,
    end: Instant,
}

/// Sequential `call`s of many processes to `objects` writer objects, `callers` processes per
/// object, `per_caller` calls each; returns (writes/s, sorted latencies), after checking
/// every acknowledgement and, once the node is gone, the stored values.
fn durable_writes(
    cfg: &Config,
    bench: &'static str,
    objects: usize,
    callers: usize,
    per_caller: u64,
    raw_lmdb: bool,
) -> Result<Vec<Row>, String> {
    let dir = temp_dir()?;
    let node = start_node(cfg, dir.path())?;
    node.host_local::<Writer>();
    let refs: Vec<ObjectRef<Writer>> = (0..objects)
        .map(|o| node.object::<Writer>(&format!("w{o}")))
        .collect();
    // Activate every object first, so the timed phase measures steady-state writes.
    let warm = Instant::now();
    node.block_on(async {
        for r in &refs {
            let n = r.call(WriterMsg::Count, CALL_TIMEOUT).await;
            expect_eq(&format!("{} before writing", r.name()), n.ok(), Some(0))?;
        }
        Ok::<(), String>(())
    })?;
    let warm = warm.elapsed();
    let before = node.store().stats();

    let (tx, rx) = mpsc::channel::<Result<CallerReport, String>>();
    let start = Instant::now();
    for (object, r) in refs.iter().enumerate() {
        for _ in 0..callers {
            let (r, tx) = (r.clone(), tx.clone());
            node.spawn(move |_ctx: Ctx<()>| async move {
                let mut report = CallerReport {
                    object,
                    last: 0,
                    latencies_ns: Vec::with_capacity(per_caller as usize),
                    end: Instant::now(),
                };
                for i in 0..per_caller {
                    let t = Instant::now();
                    match r.call(WriterMsg::Put, CALL_TIMEOUT).await {
                        Ok(n) if n > report.last => report.last = n,
                        Ok(n) => {
                            let _ = tx.send(Err(format!(
                                "{}: write {i} acknowledged as {n} after {}",
                                r.name(),
                                report.last
                            )));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{}: write {i} failed: {e}", r.name())));
                            return;
                        }
                    }
                    report.latencies_ns.push(t.elapsed().as_nanos() as u64);
                }
                report.end = Instant::now();
                let _ = tx.send(Ok(report));
            });
        }
    }
    drop(tx);
    let mut last = vec![0u64; objects];
    let mut latencies = Vec::with_capacity(objects * callers * per_caller as usize);
    let mut end = start;
    for _ in 0..objects * callers {
        let report = wait(&rx, bench)??;
        last[report.object] = last[report.object].max(report.last);
        latencies.extend_from_slice(&report.latencies_ns);
        end = end.max(report.end);
    }
    let elapsed = end - start;
    let writes = latencies.len() as u64;
    let expected = callers as u64 * per_caller;
    expect_eq("acknowledged writes", writes, objects as u64 * expected)?;
    for (o, &l) in last.iter().enumerate() {
        expect_eq(&format!("last acknowledgement of w{o}"), l, expected)?;
    }
    let stats = node.store().stats();
    let (commits, sets) = (
        stats.commits - before.commits,
        stats.write_sets - before.write_sets,
    );

    // The raw rate beside it: one 100-byte put per durable commit, one at a time.
    let raw = if raw_lmdb {
        let ks = node
            .keyspace("bench-raw/one")
            .map_err(|e| format!("raw keyspace: {e}"))?;
        let budget = Duration::from_secs_f64(cfg.scale.clamp(0.01, 1.0));
        let raw_start = Instant::now();
        let mut n = 0u64;
        while raw_start.elapsed() < budget {
            n += 1;
            ks.put("v", value_of(n).as_str())
                .and_then(|()| ks.commit().wait())
                .map_err(|e| format!("raw write {n}: {e}"))?;
        }
        Some((n, raw_start.elapsed()))
    } else {
        None
    };
    drop(refs);
    stop_node(node)?;

    // Reopen the store: every acknowledged write must be there.
    {
        let store = Store::open(dir.path(), StoreConfig::default())
            .map_err(|e| format!("reopening the store: {e}"))?;
        for o in 0..objects {
            let name = format!("{}/w{o}", Writer::CLASS);
            let ks = store.keyspace(&name).map_err(|e| format!("{name}: {e}"))?;
            let v: Option<String> = ks.get("v").map_err(|e| format!("{name}: {e}"))?;
            expect_eq(
                &format!("stored value of {name}"),
                v,
                Some(value_of(expected)),
            )?;
        }
        if let Some((n, _)) = raw {
            let ks = store
                .keyspace("bench-raw/one")
                .map_err(|e| format!("bench-raw/one: {e}"))?;
            let v: Option<String> = ks.get("v").map_err(|e| format!("bench-raw/one: {e}"))?;
            expect_eq("stored raw value", v, Some(value_of(n)))?;
        }
    }

    latencies.sort_unstable();
    let (p50, p99) = (quantile_us(&latencies, 0.50), quantile_us(&latencies, 0.99));
    eprintln!(
        "   {bench}: {objects} objects x {callers} callers x {per_caller} calls = {writes} \
         acknowledged writes in {:.1} ms (activation first: {:.1} ms); {commits} LMDB commits \
         for {sets} write sets ({:.0} sets/commit, largest {}); ack latency p50 {p50:.0} us, \
         p99 {p99:.0} us",
        elapsed.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        sets as f64 / commits.max(1) as f64,
        stats.largest_batch,
    );
    let mut rows = vec![Row {
        bench,
        unit: "writes/s",
        better: Better::Higher,
        value: rate(writes, elapsed),
    }];
    if let Some((n, took)) = raw {
        eprintln!(
            "   durable-writes-raw-lmdb: {n} put + commit().wait() in {:.1} ms",
            took.as_secs_f64() * 1e3
        );
        rows.push(Row {
            bench: "durable-writes-raw-lmdb",
            unit: "writes/s",
            better: Better::Higher,
            value: rate(n, took),
        });
    }
    for (unit, value) in [("us_p50", p50), ("us_p99", p99)] {
        rows.push(Row {
            bench,
            unit,
            better: Better::Lower,
            value,
        });
    }
    Ok(rows)
}

/// Objects written by `durable-writes-node`.
const NODE_OBJECTS: u64 = 1_000;
/// Caller processes per object in `durable-writes-node`: each has one call in flight.
const NODE_CALLERS_PER_OBJECT: usize = 4;
/// Caller processes of the one object in `durable-writes-one`: pipelined messages.
const ONE_CALLERS: usize = 1_000;

pub fn durable_writes_node(cfg: &Config) -> Result<Vec<Row>, String> {
    // Scaled too, so that quick runs stay small; 1,000 at scale 1.
    let objects = cfg.scaled(NODE_OBJECTS, 10) as usize;
    let total = cfg.scaled(1_000_000, 1);
    let per_caller = total
        .div_ceil(objects as u64 * NODE_CALLERS_PER_OBJECT as u64)
        .max(1);
    durable_writes(
        cfg,
        "durable-writes-node",
        objects,
        NODE_CALLERS_PER_OBJECT,
        per_caller,
        true,
    )
}

pub fn durable_writes_one(cfg: &Config) -> Result<Vec<Row>, String> {
    let total = cfg.scaled(1_000_000, 1);
    let per_caller = total.div_ceil(ONE_CALLERS as u64).max(1);
    durable_writes(cfg, "durable-writes-one", 1, ONE_CALLERS, per_caller, false)
}

// ---------------------------------------------------------------------------------------
// activate: objects whose state (1 KB) is in storage but not in memory. Every round starts a
// fresh node on the same data dir, so every first message activates its object from storage.

enum LoaderMsg {
    /// Answers with the state it loaded.
    Len(Reply<usize>),
}

struct Loader {
    state: String,
}

impl Object for Loader {
    const CLASS: &'static str = "bench-loader";
    type Msg = LoaderMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        let state: Option<String> = ctx.storage().get("state")?;
        Ok(Loader {
            state: state.ok_or("no state stored")?,
        })
    }

    async fn handle(
        &mut self,
        msg: LoaderMsg,
        _ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        let LoaderMsg::Len(reply) = msg;
        let _ = reply.send(self.state.len());
        Ok(())
    }
}

/// Fresh nodes in the `activate` workload; each activates every key once.
const ACTIVATE_ROUNDS: usize = 4;
/// Driver processes of the `activate` workload, each with [`ACTIVATE_WINDOW`] messages out.
const ACTIVATE_DRIVERS: usize = 8;
const ACTIVATE_WINDOW: usize = 64;

fn state_of(i: usize) -> String {
    padded(i as u64, STATE_LEN)
}

pub fn activate(cfg: &Config) -> Result<Vec<Row>, String> {
    // Opening a keyspace sweeps the store's registry of live keyspaces (`Store::keyspace`), so
    // N activations on one node cost O(N²): keep N modest and activate it on several nodes.
    let n = cfg.scaled(10_000, 1) as usize;
    let dir = temp_dir()?;
    let setup = Instant::now();
    {
        let node = start_node(cfg, dir.path())?;
        let mut tickets = Vec::with_capacity(n);
        for i in 0..n {
            let ks = node
                .keyspace(&format!("{}/k{i}", Loader::CLASS))
                .map_err(|e| format!("keyspace k{i}: {e}"))?;
            ks.put("state", state_of(i).as_str())
                .map_err(|e| format!("writing k{i}: {e}"))?;
            tickets.push(ks.commit());
        }
        for (i, t) in tickets.iter().enumerate() {
            t.wait().map_err(|e| format!("committing k{i}: {e}"))?;
        }
        stop_node(node)?;
    }
    let setup = setup.elapsed();

    let mut elapsed = Duration::ZERO;
    for round in 0..ACTIVATE_ROUNDS {
        let node = start_node(cfg, dir.path())?;
        node.host_local::<Loader>();
        let (tx, rx) = mpsc::channel::<Result<Instant, String>>();
        let start = Instant::now();
        for d in 0..ACTIVATE_DRIVERS {
            let keys: Vec<ObjectRef<Loader>> = (d..n)
                .step_by(ACTIVATE_DRIVERS)
                .map(|i| node.object::<Loader>(&format!("k{i}")))
                .collect();
            let tx = tx.clone();
            node.spawn(move |_ctx: Ctx<()>| async move {
                let mut window = std::collections::VecDeque::with_capacity(ACTIVATE_WINDOW);
                let check = |key: &ObjectRef<Loader>, got: Result<usize, CallError>| match got {
                    Ok(STATE_LEN) => Ok(()),
                    Ok(len) => Err(format!("{} loaded {len} bytes", key.name())),
                    Err(e) => Err(format!("{}: {e}", key.name())),
                };
                for key in &keys {
                    let (reply, answer) = Reply::pair();
                    if let Err(e) = key.send(LoaderMsg::Len(reply)).await {
                        let _ = tx.send(Err(format!("{}: {e}", key.name())));
                        return;
                    }
                    window.push_back((key, answer));
                    if window.len() == ACTIVATE_WINDOW {
                        let (key, answer) = window.pop_front().expect("a full window");
                        if let Err(e) = check(key, answer.await) {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                for (key, answer) in window {
                    if let Err(e) = check(key, answer.await) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                let _ = tx.send(Ok(Instant::now()));
            });
        }
        drop(tx);
        let mut end = start;
        for _ in 0..ACTIVATE_DRIVERS {
            end = end.max(wait(&rx, "activate")??);
        }
        elapsed += end - start;
        expect_eq(
            &format!("live processes after round {round}"),
            node.handle().process_count() >= n,
            true,
        )?;
        stop_node(node)?;
    }
    let activations = (n * ACTIVATE_ROUNDS) as u64;
    eprintln!(
        "   activate: {n} objects with {STATE_LEN} B of state (set-up {:.1} ms), \
         {ACTIVATE_ROUNDS} fresh nodes: {activations} activations in {:.1} ms",
        setup.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(vec![Row {
        bench: "activate",
        unit: "activations/s",
        better: Better::Higher,
        value: rate(activations, elapsed),
    }])
}

// ---------------------------------------------------------------------------------------
// storage-read: `get` of one hot key, and of random keys over a keyspace far larger than the
// CPU caches (the OS page cache still holds it: "uncached" means not in any cache of ours).

/// Keys written for `storage-read` (~130 MB of LMDB pages at scale 1).
const READ_KEYS: u64 = 1_000_000;
/// Keys per write set while filling it.
const READ_FILL_BATCH: u64 = 10_000;

fn read_key(i: u64) -> String {
    format!("key{i:08}")
}

pub fn storage_read(cfg: &Config) -> Result<Vec<Row>, String> {
    let keys = cfg.scaled(READ_KEYS, 1);
    let gets = cfg.scaled(2_000_000, 1);
    let dir = temp_dir()?;
    let node = start_node(cfg, dir.path())?;
    let ks = node
        .keyspace("bench-read")
        .map_err(|e| format!("keyspace: {e}"))?;
    let fill = Instant::now();
    for chunk in (0..keys)
        .collect::<Vec<_>>()
        .chunks(READ_FILL_BATCH as usize)
    {
        let values: Vec<(String, String)> =
            chunk.iter().map(|&i| (read_key(i), value_of(i))).collect();
        ks.put_many(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .and_then(|()| ks.commit().wait())
            .map_err(|e| format!("filling: {e}"))?;
    }
    let fill = fill.elapsed();

    let hot_key = read_key(keys / 2);
    let hot_value = value_of(keys / 2);
    let start = Instant::now();
    for _ in 0..gets {
        let v: Option<String> = ks.get(&hot_key).map_err(|e| format!("hot get: {e}"))?;
        if v.as_deref() != Some(hot_value.as_str()) {
            return Err(format!("hot get of {hot_key} read {v:?}"));
        }
    }
    let hot = start.elapsed();

    // xorshift64*: cheap, deterministic, and spreads reads over the whole keyspace.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    for _ in 0..gets {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let i = x.wrapping_mul(0x2545_F491_4F6C_DD1D) % keys;
        let v: Option<String> = ks.get(read_key(i)).map_err(|e| format!("get: {e}"))?;
        if v.as_deref() != Some(value_of(i).as_str()) {
            return Err(format!("get of {} read {v:?}", read_key(i)));
        }
    }
    let random = start.elapsed();
    drop(ks);
    stop_node(node)?;
    eprintln!(
        "   storage-read: {keys} keys (filled in {:.1} ms); {gets} gets of one key in {:.1} ms, \
         {gets} gets of random keys in {:.1} ms (key formatting and value checks included)",
        fill.as_secs_f64() * 1e3,
        hot.as_secs_f64() * 1e3,
        random.as_secs_f64() * 1e3,
    );
    Ok(vec![
        Row {
            bench: "storage-read-hot",
            unit: "ops/s",
            better: Better::Higher,
            value: rate(gets, hot),
        },
        Row {
            bench: "storage-read-random",
            unit: "ops/s",
            better: Better::Higher,
            value: rate(gets, random),
        },
    ])
}

// ---------------------------------------------------------------------------------------
// supervised-spawn: children started one by one under a dynamic supervisor.

/// A child that only waits for messages.
struct Idle;

impl Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, _: (), _: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }
}

/// Processes calling `start_child` concurrently.
const SPAWN_DRIVERS: u64 = 4;

pub fn supervised_spawn(cfg: &Config) -> Result<Vec<Row>, String> {
    let n = cfg.scaled(100_000, 1);
    let rt = cfg.runtime()?;
    // `max_children` set: a dynamic supervisor then does not compare the new child's id with
    // every existing one (which makes `start_child` O(children)).
    let spec = DynamicSupervisor::spec().max_children(n as usize);
    let sup = rt
        .block_on(DynamicSupervisor::start(&rt.handle(), spec))
        .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    let before = rss_bytes()?;
    let (tx, rx) = mpsc::channel::<Result<Instant, String>>();
    let start = Instant::now();
    for d in 0..SPAWN_DRIVERS {
        let (sup, tx) = (sup.clone(), tx.clone());
        rt.spawn(move |_ctx: Ctx<()>| async move {
            for i in (d..n).step_by(SPAWN_DRIVERS as usize) {
                let spec = ChildSpec::worker(format!("idle{i}"), || Idle);
                if let Err(e) = sup.start_child(spec).await {
                    let _ = tx.send(Err(format!("start_child {i}: {e}")));
                    return;
                }
            }
            let _ = tx.send(Ok(Instant::now()));
        });
    }
    drop(tx);
    let mut end = start;
    for _ in 0..SPAWN_DRIVERS {
        end = end.max(wait(&rx, "supervised-spawn")??);
    }
    let elapsed = end - start;
    let after = rss_bytes()?;
    let counts = rt
        .block_on(sup.count_children())
        .map_err(|e| format!("count_children: {e}"))?;
    expect_eq("active children", counts.active as u64, n)?;
    let per_child = after.saturating_sub(before) as f64 / n as f64;
    drop(sup);
    let stop = Instant::now();
    rt.shutdown();
    expect_eq("processes left after shutdown", rt.process_count(), 0)?;
    eprintln!(
        "   supervised-spawn: {n} children in {:.1} ms; RSS {:.1} -> {:.1} MiB = \
         {per_child:.0} B/child; shutdown {:.1} ms",
        elapsed.as_secs_f64() * 1e3,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        stop.elapsed().as_secs_f64() * 1e3,
    );
    Ok(vec![
        Row {
            bench: "supervised-spawn",
            unit: "children/s",
            better: Better::Higher,
            value: rate(n, elapsed),
        },
        Row {
            bench: "supervised-spawn",
            unit: "bytes/child",
            better: Better::Lower,
            value: per_child,
        },
    ])
}
