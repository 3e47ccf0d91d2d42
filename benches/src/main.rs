//! `cairn-bench`: Cairn's benchmark harness.
//!
//! ```text
//! cargo run --release -p cairn-bench -- all
//! cargo run --release -p cairn-bench -- ping-pong ring --workers 2 --runs 5
//! cargo run --release -p cairn-bench -- all --scale 0.01 --runs 1      # quick look
//! ```
//!
//! Protocol (in `cairn-bench-harness`, shared with the peer runtimes in `benches/peers`): the
//! parent never runs a workload itself; each (workload, run) is a fresh child process that
//! checks its answer (counts, sums, ordering) and prints its rows; the parent prints one
//! JSON object per row (median, min, max) and exits non-zero if any child failed.

mod workloads;

use std::process::ExitCode;

use cairn_bench_harness::Harness;
use workloads::Config;

/// Every workload, in the order `all` runs them; `--remote-peer CA_DIR` starts the second
/// node of a remote workload instead (the parent of that workload spawns it), and
/// `--ws-client SOCKETS,MESSAGES,URL` one of ws-broadcast's client processes,
/// `--http-serve node|forward --addr ADDR` a node serving an object for `http_get.py`, and
/// `--shard-peer DIR|NAME|SEED` one node of a replicated-shard workload.
const HARNESS: Harness = Harness {
    program: "cairn-bench",
    system: "cairn",
    workloads: &[
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
        "leave-detect",
        "ws-broadcast",
        "durable-writes-replicated",
        "failover",
        "rebalance",
    ],
    value_flags: &[
        "--remote-peer",
        "--ws-client",
        "--http-serve",
        "--addr",
        "--shard-peer",
    ],
};

fn main() -> ExitCode {
    let opts = match HARNESS.parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => return HARNESS.usage_error(&e),
    };
    let cfg = Config {
        workers: opts.workers,
        scale: opts.scale,
    };
    if let Some(ca_dir) = opts.value("--remote-peer") {
        return match workloads::remote::peer_node(ca_dir, &cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn-bench: remote peer node: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(spec) = opts.value("--ws-client") {
        return match workloads::ws::client(spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn-bench: ws-broadcast client: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(spec) = opts.value("--shard-peer") {
        return match workloads::replicated::shard_peer(spec, &cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn-bench: shard peer node: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(mode) = opts.value("--http-serve") {
        let addr = opts.value("--addr").unwrap_or("127.0.0.1:8080");
        if let Err(e) = workloads::http_serve::serve(mode, addr, &cfg) {
            eprintln!("cairn-bench: --http-serve: FAILED: {e}");
        }
        return ExitCode::FAILURE;
    }
    match opts.child {
        Some(w) => {
            let result = runner(w)
                .ok_or_else(|| format!("unknown workload {w:?}"))
                .and_then(|run| run(&cfg));
            HARNESS.finish_child(w, result)
        }
        None => HARNESS.run_parent(&opts),
    }
}

type Workload = fn(&Config) -> Result<Vec<workloads::Row>, String>;

/// The function that runs `workload` once, in a child.
fn runner(workload: &str) -> Option<Workload> {
    Some(match workload {
        "ping-pong" => workloads::ping_pong,
        "fan-in" => workloads::fan_in,
        "skynet" => workloads::skynet,
        "spawn-idle" => workloads::spawn_idle,
        "ring" => workloads::ring,
        "call" => workloads::call,
        "restart" => workloads::restart,
        "supervised-spawn" => workloads::durable::supervised_spawn,
        "durable-writes-node" => workloads::durable::durable_writes_node,
        "durable-writes-one" => workloads::durable::durable_writes_one,
        "activate" => workloads::durable::activate,
        "storage-read" => workloads::durable::storage_read,
        "remote-throughput" => workloads::remote::remote_throughput,
        "remote-call" => workloads::remote::remote_call,
        "remote-fan" => workloads::remote::remote_fan,
        "leave-detect" => workloads::leave::leave_detect,
        "ws-broadcast" => workloads::ws::ws_broadcast,
        "durable-writes-replicated" => workloads::replicated::durable_writes_replicated,
        "failover" => workloads::replicated::failover,
        "rebalance" => workloads::replicated::rebalance,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_workload_has_a_runner() {
        for w in HARNESS.workloads {
            assert!(runner(w).is_some(), "{w} is listed but has no runner");
        }
        assert!(runner("nonesuch").is_none());
    }
}
