//! The run protocol of `cairn-bench` and of the peer binaries (`benches/peers`), so that
//! Cairn and the runtimes it is compared with are measured the same way.
//!
//! The parent process never runs a workload itself. For every (workload, run) it re-executes
//! its own binary with `--child <workload> --workers N --scale F`, so each run starts with a
//! fresh heap, fresh threads and a clean RSS baseline. The child does the work, checks the
//! answer and prints one tab-separated [`ROW_TAG`] line per result on stdout (anything human
//! goes to stderr); a wrong answer, a hang or a panic makes it exit non-zero. The parent
//! collects the rows of all runs, prints one JSON object per row (median, min, max) and
//! exits non-zero if any child failed or the runs disagree on which rows they report.
//!
//! Invariant: the row line format (`tag \t bench \t unit \t better \t value`) and the JSON
//! object's fields are written and read only here.

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Marks a result line on a child's stdout: `tag \t bench \t unit \t better \t value`.
pub const ROW_TAG: &str = "cairn-bench-row";

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

/// One result of one run, as a workload returns it.
#[derive(Clone, Debug)]
pub struct Row {
    pub bench: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Row {
    /// A row where more is better (a rate).
    pub fn higher(bench: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            bench,
            unit,
            better: Better::Higher,
            value,
        }
    }

    /// A row where less is better (a latency, a size).
    pub fn lower(bench: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            bench,
            unit,
            better: Better::Lower,
            value,
        }
    }
}

/// `count` events in `elapsed`, per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// A workload's answer check: `Err` with both values when they differ.
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

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`), read the
/// same way for Cairn and the peers so `bytes/process` compares like for like.
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

/// A benchmark program: its name in messages, the `system` of its JSON rows, the workloads
/// it knows (in the order `all` runs them) and any extra `--flag value` options it takes.
#[derive(Clone, Copy, Debug)]
pub struct Harness {
    pub program: &'static str,
    pub system: &'static str,
    pub workloads: &'static [&'static str],
    pub value_flags: &'static [&'static str],
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Workloads to run (parent), without repeats, in the order given.
    pub workloads: Vec<&'static str>,
    pub workers: usize,
    pub runs: usize,
    pub scale: f64,
    /// Set in a child: run this one workload once and print its rows.
    pub child: Option<&'static str>,
    /// The program's own `value_flags` that were given, with their values.
    pub values: Vec<(&'static str, String)>,
}

impl Options {
    /// The value of one of the program's own flags.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| v.as_str())
    }
}

impl Harness {
    /// The usage text.
    pub fn usage(&self) -> String {
        let extra: String = self
            .value_flags
            .iter()
            .map(|f| format!(" [{f} VALUE]"))
            .collect();
        format!(
            "usage: {} [all | WORKLOAD..] [--workers N] [--runs R] [--scale F] [--quick]{extra}\n\n\
             workloads: {}\n  \
             --workers N   worker threads (default 2)\n  \
             --runs R      fresh child processes per workload; the median is reported (default 3)\n  \
             --scale F     multiply every workload size by F (default 1.0)\n  \
             --quick       same as --scale 0.01\n\n\
             Results: one JSON object per line on stdout; progress and details on stderr.",
            self.program,
            self.workloads.join(" ")
        )
    }

    /// Prints `error` (if any) and the usage; the exit code of a bad command line.
    pub fn usage_error(&self, error: &str) -> ExitCode {
        if !error.is_empty() {
            eprintln!("{}: {error}\n", self.program);
        }
        eprintln!("{}", self.usage());
        ExitCode::from(2)
    }

    fn workload(&self, s: &str) -> Result<&'static str, String> {
        self.workloads
            .iter()
            .copied()
            .find(|w| *w == s)
            .ok_or_else(|| format!("{s:?}: no such workload for {}", self.system))
    }

    /// Parses the arguments after the program name. `Err("")` means help was asked for.
    pub fn parse_args(&self, mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            workloads: Vec::new(),
            workers: 2,
            runs: 3,
            scale: 1.0,
            child: None,
            values: Vec::new(),
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
                "--child" => opts.child = Some(self.workload(&value::<String>(&flag, next())?)?),
                "-h" | "--help" => return Err(String::new()),
                "all" => opts.workloads.extend(self.workloads),
                f => match self.value_flags.iter().find(|v| **v == f) {
                    Some(own) => opts.values.push((own, value(&flag, next())?)),
                    None if f.starts_with('-') => return Err(format!("unknown flag {f:?}")),
                    None => opts.workloads.push(self.workload(f)?),
                },
            }
        }
        if opts.workers == 0 || opts.runs == 0 {
            return Err("--workers and --runs must be at least 1".into());
        }
        if !(opts.scale.is_finite() && opts.scale > 0.0) {
            return Err("--scale must be a positive number".into());
        }
        if opts.workloads.is_empty() && opts.child.is_none() && opts.values.is_empty() {
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

    /// In a child: prints the rows of the one run (or the failure) and gives the exit code.
    pub fn finish_child(&self, workload: &str, result: Result<Vec<Row>, String>) -> ExitCode {
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
                eprintln!("{}: {workload}: FAILED: {e}", self.program);
                ExitCode::FAILURE
            }
        }
    }

    /// In the parent: every workload `runs` times, each in a fresh child; JSON rows out.
    pub fn run_parent(&self, opts: &Options) -> ExitCode {
        let mut failed = Vec::new();
        for &workload in &opts.workloads {
            match self.runs_of(workload, opts) {
                Ok(runs) => {
                    let mut out = std::io::stdout().lock();
                    for (i, first) in runs[0].iter().enumerate() {
                        let values: Vec<f64> = runs.iter().map(|r| r[i].value).collect();
                        let _ = writeln!(out, "{}", json_row(self.system, first, &values, opts));
                    }
                    let _ = out.flush();
                }
                Err(e) => {
                    eprintln!("!! {} {workload}: {e}", self.system);
                    failed.push(workload);
                }
            }
        }
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            eprintln!("{}: FAILED: {}", self.program, failed.join(", "));
            ExitCode::FAILURE
        }
    }

    /// The rows of every run of `workload`, each in a fresh child; all runs report the same
    /// rows in the same order.
    fn runs_of(&self, workload: &str, opts: &Options) -> Result<Vec<Vec<ChildRow>>, String> {
        let mut runs: Vec<Vec<ChildRow>> = Vec::new();
        for run in 1..=opts.runs {
            eprintln!(
                "== {} {workload} (run {run}/{}, {} workers, scale {})",
                self.system, opts.runs, opts.workers, opts.scale
            );
            let rows = run_once(workload, opts).map_err(|e| format!("run {run}: {e}"))?;
            for r in &rows {
                eprintln!("   -> {} {:.4e} {}", r.bench, r.value, r.unit);
            }
            runs.push(rows);
        }
        let shape = |rows: &Vec<ChildRow>| -> Vec<(String, String)> {
            rows.iter()
                .map(|r| (r.bench.clone(), r.unit.clone()))
                .collect()
        };
        if runs.iter().any(|r| shape(r) != shape(&runs[0])) {
            return Err("runs reported different rows".into());
        }
        Ok(runs)
    }
}

/// One result row as parsed back from a child.
#[derive(Debug, Clone, PartialEq)]
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

/// Runs `workload` once in a fresh child process (this same executable).
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

fn json_row(system: &str, first: &ChildRow, values: &[f64], opts: &Options) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{{\"bench\": {}, \"system\": {}, \"value\": {}, \"unit\": {}, \"better\": {}, \
         \"median_of\": {}, \"min\": {}, \"max\": {}, \"workers\": {}, \"scale\": {}}}",
        json_str(&first.bench),
        json_str(system),
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

#[cfg(test)]
mod tests {
    use super::*;

    const H: Harness = Harness {
        program: "bench",
        system: "test",
        workloads: &["ring", "call", "skynet"],
        value_flags: &["--peer"],
    };

    fn args(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split_whitespace().map(str::to_owned)
    }

    #[test]
    fn parses_flags_and_workloads() {
        let o = H
            .parse_args(args("ring --workers=4 call --runs 5 --scale 0.5 ring"))
            .unwrap();
        assert_eq!(o.workloads, ["ring", "call"]);
        assert_eq!((o.workers, o.runs, o.scale), (4, 5, 0.5));
        let o = H.parse_args(args("all --quick")).unwrap();
        assert_eq!(o.workloads, H.workloads);
        assert_eq!(o.scale, 0.01);
        let o = H.parse_args(args("--peer /tmp/ca")).unwrap();
        assert_eq!(o.value("--peer"), Some("/tmp/ca"));
        assert_eq!(
            H.parse_args(args("--child ring")).unwrap().child,
            Some("ring")
        );
        assert!(H.parse_args(args("pingpong")).is_err());
        assert!(H.parse_args(args("--bogus 1")).is_err());
        assert!(H.parse_args(args("")).is_err());
        assert!(H.parse_args(args("all --runs 0")).is_err());
        assert_eq!(H.parse_args(args("--help")), Err(String::new()));
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
        assert!(parse_child_rows("cairn-bench-row\tring\thops/s\n").is_err());
    }

    #[test]
    fn json_row_escapes_fields_from_the_child() {
        let row = ChildRow {
            bench: "a\"b".into(),
            unit: "ms".into(),
            better: "lower".into(),
            value: 1.0,
        };
        let opts = H.parse_args(args("ring")).unwrap();
        let line = json_row("cairn", &row, &[1.0, 3.0], &opts);
        assert!(line.starts_with(r#"{"bench": "a\"b", "system": "cairn", "value": 2.000"#));
        assert!(line.contains(r#""min": 1.000, "max": 3.000"#), "{line}");
    }
}
