//! The harness shared by the peer binaries (`peer-tokio`, `peer-actix`, `peer-ractor`,
//! `peer-kameo`). The run protocol is `cairn-bench`'s own (the `cairn-bench-harness` path
//! crate), so the peers are measured exactly like Cairn:
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

use std::process::ExitCode;
use std::time::Duration;

pub use cairn_bench_harness::{expect_eq, rate, rss_bytes, Better, Row, ROW_TAG};
use cairn_bench_harness::Harness;

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

/// The `main` of a peer binary.
pub fn main(peer: Peer) -> ExitCode {
    let harness = Harness {
        // Once per process, for the process's lifetime.
        program: format!("peer-{}", peer.system).leak(),
        system: peer.system,
        workloads: peer.workloads,
        value_flags: &[],
    };
    let opts = match harness.parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => return harness.usage_error(&e),
    };
    let cfg = Config {
        workers: opts.workers,
        scale: opts.scale,
    };
    match opts.child {
        Some(w) => harness.finish_child(w, (peer.run)(w, &cfg)),
        None => harness.run_parent(&opts),
    }
}
