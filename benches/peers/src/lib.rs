//! The harness shared by the peer binaries (`peer-tokio`, `peer-actix`, `peer-ractor`,
//! `peer-kameo`). It copies `cairn-bench`'s protocol on purpose, so the peers are measured
//! exactly like Cairn:
//!
//! ```text
//! peer-tokio all --runs 3            # parent: each run in a fresh child, JSON lines out
//! peer-tokio ping-pong --scale 0.1   # some workloads, smaller
//! peer-tokio --child ring            # one run in this process (what the parent execs)
//! ```
//!
//! A child runs one workload once, checks the answer and prints tab-separated rows tagged
//! [`ROW_TAG`]; the parent prints one JSON object per row (median, min, max over the runs),
//! the same format as `cairn-bench` with `"system"` set to the peer's name.

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Every workload a peer may implement, in the order `all` runs them (cairn-bench's six,
/// then `restart`, which only the peers with supervision implement).
pub const ALL_WORKLOADS: [&str; 7] = [
    "ping-pong",
    "fan-in",
    "skynet",
    "spawn-idle",
    "ring",
    "call",
    "restart",
];

/// Marks a result line on a child's stdout: `tag \t bench \t unit \t better \t value`.
pub const ROW_TAG: &str = "cairn-bench-row";

/// How long a workload may take before the child declares itself hung.
pub const RESULT_DEADLINE: Duration = Duration::from_secs(600);

/// Sizes at `--scale 1`, the same as cairn-bench's.
pub const PING_PONG_ROUND_TRIPS: u64 = 1_000_000;
pub const FAN_IN_PER_SENDER: u64 = 5_000_000;
pub const FAN_IN_SENDERS: u64 = 2;
pub const FAN_IN_SHIFT: u32 = 40;
pub const SKYNET_LEAVES: u64 = 1_000_000;
pub const SKYNET_FANOUT: u64 = 10;
pub const SPAWN_IDLE: u64 = 1_000_000;
pub const RING_SIZE: u64 = 10_000;
pub const RING_LAPS: u64 = 100;
pub const CALLS: u64 = 1_000_000;
/// Restarts of one supervised child in the `restart` workload.
pub const RESTARTS: u64 = 100_000;
/// Timeout of each request in the `call` workload (a timeout is a failure).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which direction of a row's value is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn as_str(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// One result of one run.
#[derive(Clone, Debug)]
pub struct Row {
    pub bench: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Row {
    pub fn higher(bench: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            bench,
            unit,
            better: Better::Higher,
            value,
        }
    }
    pub fn lower(bench: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            bench,
            unit,
            better: Better::Lower,
            value,
        }
    }
}

/// What every workload is run with.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub scale: f64,
}

impl Config {
    /// `base` times the scale, at least `min`.
    pub fn scaled(&self, base: u64, min: u64) -> u64 {
        ((base as f64 * self.scale).round() as u64).max(min)
    }

    /// Skynet's leaf count: the scaled size rounded to the nearest power of the fan-out, and
    /// the number of levels below the root.
    pub fn skynet_leaves(&self) -> (u64, u32) {
        let wanted = self.scaled(SKYNET_LEAVES, SKYNET_FANOUT) as f64;
        let levels = (wanted.log10() / (SKYNET_FANOUT as f64).log10())
            .round()
            .max(1.0) as u32;
        (SKYNET_FANOUT.pow(levels), levels)
    }
}

pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn expect_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: T,
    want: T,
) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("wrong answer: {what} = {got:?}, expected {want:?}"))
    }
}

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| format!("cannot parse {line:?}"))?;
    Ok(kb * 1024)
}

/// A `Vec` with room for `n` handles whose memory is already resident, so that keeping the
/// handles of idle actors alive (actix, kameo and tokio stop an actor or task when its last
/// handle is dropped; Cairn does not) is not counted against the actors in `spawn-idle`:
/// the RSS baseline is taken after this.
pub fn pretouched_vec<T>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let spare = v.spare_capacity_mut();
    let bytes = std::mem::size_of_val(spare);
    // SAFETY: writing zero bytes into the Vec's spare capacity, which it owns; the length
    // stays 0, so no `T` is ever read from these bytes.
    unsafe { std::ptr::write_bytes(spare.as_mut_ptr() as *mut u8, 0, bytes) };
    v
}

/// Waits until `counter` reaches `n` (polled by the main thread every 200 µs).
pub fn wait_for_count(counter: &std::sync::atomic::AtomicU64, n: u64) -> Result<(), String> {
    let deadline = std::time::Instant::now() + RESULT_DEADLINE;
    while counter.load(std::sync::atomic::Ordering::Acquire) < n {
        if std::time::Instant::now() > deadline {
            return Err("idle actors did not all start".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// The rows of `spawn-idle`, with a line on stderr like cairn-bench's.
pub fn spawn_idle_rows(n: u64, before: u64, after: u64, started: Duration) -> Vec<Row> {
    let per_process = after.saturating_sub(before) as f64 / n as f64;
    eprintln!(
        "   spawn-idle: {n} actors, all started at {:.1} ms; RSS {:.1} -> {:.1} MiB = {per_process:.0} B/actor",
        started.as_secs_f64() * 1e3,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    vec![
        Row::higher("spawn-idle", "spawns/s", rate(n, started)),
        Row::lower("spawn-idle", "bytes/process", per_process),
    ]
}

/// A peer binary: its name (the JSON `system`), the workloads it implements, and the
/// function that runs one workload once in the current process.
pub struct Peer {
    pub system: &'static str,
    pub workloads: &'static [&'static str],
    pub run: fn(&str, &Config) -> Result<Vec<Row>, String>,
}

#[derive(Debug)]
struct Options {
    workloads: Vec<&'static str>,
    workers: usize,
    runs: usize,
    scale: f64,
    child: Option<&'static str>,
}

fn parse_args(peer: &Peer, mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let name = |s: &str| -> Result<&'static str, String> {
        peer.workloads
            .iter()
            .copied()
            .find(|w| *w == s)
            .ok_or_else(|| format!("{s:?}: no such workload for {}", peer.system))
    };
    let mut opts = Options {
        workloads: Vec::new(),
        workers: 2,
        runs: 3,
        scale: 1.0,
        child: None,
    };
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut next = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--workers" => opts.workers = value(&flag, next())?,
            "--runs" => opts.runs = value(&flag, next())?,
            "--scale" => opts.scale = value(&flag, next())?,
            "--quick" => opts.scale = 0.01,
            "--child" => opts.child = Some(name(&value::<String>(&flag, next())?)?),
            "-h" | "--help" => return Err(String::new()),
            "all" => opts.workloads.extend(peer.workloads),
            f if f.starts_with('-') => return Err(format!("unknown flag {f:?}")),
            w => opts.workloads.push(name(w)?),
        }
    }
    if opts.workers == 0 || opts.runs == 0 {
        return Err("--workers and --runs must be at least 1".into());
    }
    if !(opts.scale.is_finite() && opts.scale > 0.0) {
        return Err("--scale must be a positive number".into());
    }
    if opts.workloads.is_empty() && opts.child.is_none() {
        return Err("name the workloads to run, or `all`".into());
    }
    opts.workloads.dedup();
    Ok(opts)
}

/// The `main` of a peer binary.
pub fn main(peer: Peer) -> ExitCode {
    let opts = match parse_args(&peer, std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("peer-{}: {e}\n", peer.system);
            }
            eprintln!(
                "usage: peer-{} [all | WORKLOAD..] [--workers N] [--runs R] [--scale F] [--quick]\n\
                 workloads: {}",
                peer.system,
                peer.workloads.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    let cfg = Config {
        workers: opts.workers,
        scale: opts.scale,
    };
    match opts.child {
        Some(w) => run_child(&peer, w, &cfg),
        None => run_parent(&peer, &opts),
    }
}

fn run_child(peer: &Peer, workload: &str, cfg: &Config) -> ExitCode {
    match (peer.run)(workload, cfg) {
        Ok(rows) => {
            let mut out = std::io::stdout().lock();
            for r in rows {
                let _ = writeln!(
                    out,
                    "{ROW_TAG}\t{}\t{}\t{}\t{:e}",
                    r.bench,
                    r.unit,
                    r.better.as_str(),
                    r.value
                );
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peer-{}: {workload}: FAILED: {e}", peer.system);
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone)]
struct ChildRow {
    bench: String,
    unit: String,
    better: String,
    value: f64,
}

fn parse_child_rows(stdout: &str) -> Result<Vec<ChildRow>, String> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with(ROW_TAG)) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [_, bench, unit, better, value] = fields[..] else {
            return Err(format!("malformed result line {line:?}"));
        };
        let value = value
            .parse()
            .map_err(|_| format!("malformed value in {line:?}"))?;
        rows.push(ChildRow {
            bench: bench.into(),
            unit: unit.into(),
            better: better.into(),
            value,
        });
    }
    if rows.is_empty() {
        return Err("the child printed no result".into());
    }
    Ok(rows)
}

fn run_once(workload: &str, opts: &Options) -> Result<Vec<ChildRow>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .arg("--child")
        .arg(workload)
        .arg("--workers")
        .arg(opts.workers.to_string())
        .arg("--scale")
        .arg(opts.scale.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start child: {e}"))?;
    if !out.status.success() {
        return Err(format!("child exited with {}", out.status));
    }
    parse_child_rows(&String::from_utf8_lossy(&out.stdout))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn json_num(x: f64) -> String {
    if !x.is_finite() {
        "null".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn run_parent(peer: &Peer, opts: &Options) -> ExitCode {
    let mut failed = Vec::new();
    for &workload in &opts.workloads {
        let mut runs: Vec<Vec<ChildRow>> = Vec::new();
        for run in 1..=opts.runs {
            eprintln!(
                "== {} {workload} (run {run}/{}, {} workers, scale {})",
                peer.system, opts.runs, opts.workers, opts.scale
            );
            match run_once(workload, opts) {
                Ok(rows) => runs.push(rows),
                Err(e) => {
                    eprintln!("!! {} {workload} run {run}: {e}", peer.system);
                    failed.push(workload);
                    break;
                }
            }
        }
        if failed.last() == Some(&workload) {
            continue;
        }
        let mut out = std::io::stdout().lock();
        for (i, first) in runs[0].iter().enumerate() {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i))
                .map(|r| r.value)
                .collect();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                out,
                "{{\"bench\": \"{}\", \"system\": \"{}\", \"value\": {}, \"unit\": \"{}\", \
                 \"better\": \"{}\", \"median_of\": {}, \"min\": {}, \"max\": {}, \
                 \"workers\": {}, \"scale\": {}}}",
                first.bench,
                peer.system,
                json_num(median(&values)),
                first.unit,
                first.better,
                values.len(),
                json_num(min),
                json_num(max),
                opts.workers,
                opts.scale,
            );
        }
        let _ = out.flush();
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("peer-{}: FAILED: {}", peer.system, failed.join(", "));
        ExitCode::FAILURE
    }
}
