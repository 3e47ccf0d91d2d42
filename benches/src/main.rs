//! `cairn-bench`: Cairn's benchmark harness.
//!
//! ```text
//! cargo run --release -p cairn-bench -- all
//! cargo run --release -p cairn-bench -- ping-pong ring --workers 2 --runs 5
//! cargo run --release -p cairn-bench -- all --scale 0.01 --runs 1      # quick look
//! ```
//!
//! Protocol: the parent process never runs a workload itself. For every (workload, run) it
//! re-executes its own binary with `--child <workload>`, so each run starts with a fresh
//! heap, fresh threads and a clean RSS baseline. The child does the work, checks the answer
//! (counts, sums, ordering), and prints one tab-separated [`ROW_TAG`] line per result on
//! stdout; anything human goes to stderr. A wrong answer, a hang past the workload's
//! deadline, or a panic makes the child exit non-zero. The parent collects the rows of all
//! runs, prints one JSON object per row (median, min, max) on stdout, and exits non-zero if
//! any child failed.

mod workloads;

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use workloads::Config;

/// Every workload, in the order `all` runs them.
const WORKLOADS: [&str; 15] = [
    "ping-pong",
    "fan-in",
    "skynet",
    "spawn-idle",
    "ring",
    "call",
    "restart",
    "supervised-spawn",
    "durable-writes-node",
    "durable-writes-one",
    "activate",
    "storage-read",
    "remote-throughput",
    "remote-call",
    "remote-fan",
];

/// Marks a result line on a child's stdout: `tag \t bench \t unit \t better \t value`.
const ROW_TAG: &str = "cairn-bench-row";

const USAGE: &str = "\
usage: cairn-bench [all | WORKLOAD..] [--workers N] [--runs R] [--scale F] [--quick]

workloads: ping-pong fan-in skynet spawn-idle ring call restart supervised-spawn
           durable-writes-node durable-writes-one activate storage-read
           remote-throughput remote-call remote-fan
  --workers N   scheduler worker threads (default 2)
  --runs R      fresh child processes per workload; the median is reported (default 3)
  --scale F     multiply every workload size by F (default 1.0)
  --quick       same as --scale 0.01

Results: one JSON object per line on stdout; progress and details on stderr.";

#[derive(Debug)]
struct Options {
    workloads: Vec<&'static str>,
    workers: usize,
    runs: usize,
    scale: f64,
    /// Set in a child: run this one workload once and print its rows.
    child: Option<&'static str>,
    /// Set in the second node of a remote workload: the directory of the cluster CA.
    remote_peer: Option<String>,
}

fn workload_name(s: &str) -> Result<&'static str, String> {
    WORKLOADS
        .iter()
        .copied()
        .find(|w| *w == s)
        .ok_or_else(|| format!("unknown workload {s:?}"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        workloads: Vec::new(),
        workers: 2,
        runs: 3,
        scale: 1.0,
        child: None,
        remote_peer: None,
    };
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    while let Some(arg) = args.next() {
        // Accept `--flag=value` as well as `--flag value`.
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
            "--child" => opts.child = Some(workload_name(&value::<String>(&flag, next())?)?),
            "--remote-peer" => opts.remote_peer = Some(value(&flag, next())?),
            "-h" | "--help" => return Err(String::new()),
            "all" => opts.workloads.extend(WORKLOADS),
            f if f.starts_with('-') => return Err(format!("unknown flag {f:?}")),
            w => opts.workloads.push(workload_name(w)?),
        }
    }
    if opts.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    if opts.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if !(opts.scale.is_finite() && opts.scale > 0.0) {
        return Err("--scale must be a positive number".into());
    }
    if opts.workloads.is_empty() && opts.child.is_none() && opts.remote_peer.is_none() {
        return Err("name the workloads to run, or `all`".into());
    }
    let mut seen = Vec::new();
    opts.workloads.retain(|w| {
        let first = !seen.contains(w);
        seen.push(*w);
        first
    });
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cairn-bench: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cfg = Config {
        workers: opts.workers,
        scale: opts.scale,
    };
    if let Some(ca_dir) = &opts.remote_peer {
        return match workloads::remote::peer_node(ca_dir, &cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn-bench: remote peer node: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match opts.child {
        Some(w) => run_child(w, &cfg),
        None => run_parent(&opts),
    }
}

/// In a child: run one workload once, print its rows.
fn run_child(workload: &str, cfg: &Config) -> ExitCode {
    let result = match workload {
        "ping-pong" => workloads::ping_pong(cfg),
        "fan-in" => workloads::fan_in(cfg),
        "skynet" => workloads::skynet(cfg),
        "spawn-idle" => workloads::spawn_idle(cfg),
        "ring" => workloads::ring(cfg),
        "call" => workloads::call(cfg),
        "restart" => workloads::restart(cfg),
        "supervised-spawn" => workloads::durable::supervised_spawn(cfg),
        "durable-writes-node" => workloads::durable::durable_writes_node(cfg),
        "durable-writes-one" => workloads::durable::durable_writes_one(cfg),
        "activate" => workloads::durable::activate(cfg),
        "storage-read" => workloads::durable::storage_read(cfg),
        "remote-throughput" => workloads::remote::remote_throughput(cfg),
        "remote-call" => workloads::remote::remote_call(cfg),
        "remote-fan" => workloads::remote::remote_fan(cfg),
        other => Err(format!("unknown workload {other:?}")),
    };
    match result {
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
            eprintln!("cairn-bench: {workload}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One result row as parsed back from a child.
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

/// Runs `workload` once in a fresh child process.
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

/// Median of a non-empty slice (mean of the middle two for an even count).
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

/// A JSON number: integers for large values, three decimals for small ones, `null` for a
/// value that is not finite (JSON has no NaN or infinity).
fn json_num(x: f64) -> String {
    if !x.is_finite() {
        "null".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// Escapes the few characters JSON strings cannot hold as-is (our names never have them,
/// but a row's fields come from another process).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_row(first: &ChildRow, values: &[f64], opts: &Options) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{{\"bench\": {}, \"system\": \"cairn\", \"value\": {}, \"unit\": {}, \"better\": {}, \
         \"median_of\": {}, \"min\": {}, \"max\": {}, \"workers\": {}, \"scale\": {}}}",
        json_str(&first.bench),
        json_num(median(values)),
        json_str(&first.unit),
        json_str(&first.better),
        values.len(),
        json_num(min),
        json_num(max),
        opts.workers,
        opts.scale,
    )
}

/// In the parent: every workload `runs` times, each in a fresh child; JSON rows out.
fn run_parent(opts: &Options) -> ExitCode {
    let mut failed = Vec::new();
    for &workload in &opts.workloads {
        let mut runs: Vec<Vec<ChildRow>> = Vec::new();
        for run in 1..=opts.runs {
            eprintln!(
                "== {workload} (run {run}/{}, {} workers, scale {})",
                opts.runs, opts.workers, opts.scale
            );
            match run_once(workload, opts) {
                Ok(rows) => {
                    for r in &rows {
                        eprintln!("   -> {} {:.4e} {}", r.bench, r.value, r.unit);
                    }
                    runs.push(rows);
                }
                Err(e) => {
                    eprintln!("!! {workload} run {run}: {e}");
                    failed.push(workload);
                    break;
                }
            }
        }
        if failed.last() == Some(&workload) {
            continue;
        }
        let shape = |rows: &Vec<ChildRow>| -> Vec<(String, String)> {
            rows.iter()
                .map(|r| (r.bench.clone(), r.unit.clone()))
                .collect()
        };
        if runs.iter().any(|r| shape(r) != shape(&runs[0])) {
            eprintln!("!! {workload}: runs reported different rows");
            failed.push(workload);
            continue;
        }
        let mut out = std::io::stdout().lock();
        for (i, first) in runs[0].iter().enumerate() {
            let values: Vec<f64> = runs.iter().map(|r| r[i].value).collect();
            let _ = writeln!(out, "{}", json_row(first, &values, opts));
        }
        let _ = out.flush();
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("cairn-bench: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split_whitespace().map(str::to_owned)
    }

    #[test]
    fn parses_flags_and_workloads() {
        let o = parse_args(args("ring --workers=4 call --runs 5 --scale 0.5 ring")).unwrap();
        assert_eq!(o.workloads, ["ring", "call"]);
        assert_eq!((o.workers, o.runs, o.scale), (4, 5, 0.5));
        let o = parse_args(args("all --quick")).unwrap();
        assert_eq!(o.workloads.len(), WORKLOADS.len());
        assert_eq!(o.scale, 0.01);
        assert!(parse_args(args("pingpong")).is_err());
        assert!(parse_args(args("")).is_err());
        assert!(parse_args(args("all --runs 0")).is_err());
    }

    #[test]
    fn median_min_max() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(json_num(6.1e6), "6100000");
        assert_eq!(json_num(1.5), "1.500");
        assert_eq!(json_num(f64::NAN), "null");
    }

    #[test]
    fn child_rows_round_trip() {
        let rows = parse_child_rows("noise\ncairn-bench-row\tring\thops/s\thigher\t5e6\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 5e6);
        assert!(parse_child_rows("nothing\n").is_err());
    }
}
