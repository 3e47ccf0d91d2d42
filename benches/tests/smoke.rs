//! Runs the harness end to end at a tiny scale: every workload in its own child process,
//! every answer checked (the durable ones reopen their store and read back what was
//! acknowledged; the remote ones start a second node process, the replicated-shard ones three
//! or four), forty-seven JSON rows (leave-detect prints two, ws-broadcast five, rebalance also
//! `rebalance-settled`) out. Proves the
//! harness works, not the speed.

use std::process::Command;

#[test]
fn all_workloads_at_tiny_scale_print_forty_nine_json_rows() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["all", "--scale", "0.001", "--runs", "1"])
        .output()
        .expect("run cairn-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        rows.len(),
        49,
        "expected 49 rows, got:
{stdout}"
    );
    let mut seen = Vec::new();
    for row in &rows {
        assert!(
            row.starts_with('{') && row.ends_with('}'),
            "not an object: {row}"
        );
        for key in [
            "\"bench\": \"",
            "\"system\": \"cairn\"",
            "\"unit\": \"",
            "\"median_of\": 1,",
            "\"workers\": 2,",
        ] {
            assert!(row.contains(key), "{key} missing in {row}");
        }
        assert!(
            row.contains("\"better\": \"higher\"") || row.contains("\"better\": \"lower\""),
            "bad better in {row}"
        );
        // The value is a finite, positive number; a load reading (CPUs busy during a run)
        // may be 0 at this scale, where a run is shorter than the kernel's tick.
        let load = row.contains("\"unit\": \"cpus\"");
        let value = row
            .split("\"value\": ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no numeric value in {row}"));
        assert!(
            value.is_finite() && (value > 0.0 || (load && value == 0.0)),
            "bad value in {row}"
        );
        let bench = row.split("\"bench\": \"").nth(1).unwrap();
        seen.push(bench.split('"').next().unwrap().to_owned());
    }
    for (bench, rows) in [
        ("ping-pong", 1),
        ("fan-in", 1),
        ("skynet", 1),
        ("spawn-idle", 2),
        ("ring", 1),
        ("call", 1),
        ("restart", 1),
        ("supervised-spawn", 2),
        // writes/s, us_p50, us_p99
        ("durable-writes-node", 3),
        ("durable-writes-raw-lmdb", 1),
        ("durable-writes-one", 3),
        ("activate", 1),
        ("storage-read-hot", 1),
        ("storage-read-random", 1),
        ("remote-throughput", 1),
        // calls/s, us_p50, us_p99
        ("remote-call", 3),
        ("remote-fan", 1),
        ("ws-broadcast", 1),
        ("ws-idle-socket-mem", 1),
        ("ws-client-socket-mem", 1),
        ("ws-broadcast-busy", 1),
        ("ws-broadcast-others-busy", 1),
        // writes/s, us_p50, us_p99, us_p50_alone, us_p99_alone, busy_cores, own_cores,
        // cpu_us_per_write
        ("durable-writes-replicated", 8),
        ("failover-detect", 1),
        ("failover-recover", 1),
        // busy_cores, own_cores
        ("failover", 2),
        // ms, MB/s, busy_cores, own_cores
        ("rebalance", 4),
    ] {
        assert_eq!(seen.iter().filter(|b| *b == bench).count(), rows, "{bench}");
    }
}
