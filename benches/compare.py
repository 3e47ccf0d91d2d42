#!/usr/bin/env python3
"""Runs cairn-bench's workloads for Cairn and its peers, interleaved, and writes the comparison.

Called by benches/compare.sh after it has built everything; run that, not this. Standard
library only. Every run is a fresh OS process (a fresh VM for Erlang). The order is
interleaved: for each round, for each workload, every system once (A B C A B C ...), so a
noisy neighbour or a thermal drift hits every system alike. A quick warm-up round at a tiny
scale comes first and is discarded.

Quiet runs: before each run the script waits (at most --max-wait seconds) until the other
load on the machine is below --max-load busy cores, measured from /proc/stat over one-second
windows. It records the other load before each run and during it (busy CPU time of the
whole machine during the run minus the CPU time of the run's own processes, over the wall
time). The run's own CPU is the larger of getrusage(RUSAGE_CHILDREN) and the sum over every
process seen in the run's process tree while it ran (sampled from /proc every 0.1 s): a
process its parent never waits for never reaches RUSAGE_CHILDREN. The second Erlang node of
the remote workloads is one, and it is not even in the tree: OTP's `peer` starts it detached
(its own session, parent pid 1), so it is found by its node name instead. A run during which the other load exceeded
--max-load is marked "loaded", kept in latest.json, left out of the medians, and re-run (at
most --retries times); if every attempt was loaded, the last one counts and its cell is
marked in the table. Outputs (in benches/results/):

  latest.json  every run's value, median/min/max per system, Cairn's ratio to the best peer
  latest.md    the table, the deviations, date and machine
  ratios.svg   Cairn's ratio to the best peer per workload (log scale; > 1 = Cairn ahead)
  compare.log  every run's stderr (details: times, RSS, sizes)

and it replaces the table between the `compare:begin`/`compare:end` markers in
benches/README.md.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

SYSTEMS = ["cairn", "tokio", "actix", "ractor", "kameo", "erlang"]
LOCAL = ["ping-pong", "fan-in", "skynet", "spawn-idle", "ring", "call", "restart"]
REMOTE = ["remote-throughput", "remote-call", "remote-fan"]

# Which system implements which workload (tokio has no supervision; of the peers only
# Erlang has a remote transport here -- no Rust peer's is measured).
SUPPORTED = {
    "cairn": set(LOCAL) | set(REMOTE),
    "tokio": set(LOCAL) - {"restart"},
    "actix": set(LOCAL),
    "ractor": set(LOCAL),
    "kameo": set(LOCAL),
    "erlang": set(LOCAL) | set(REMOTE),
}

# Workloads run smaller than cairn-bench's sizes, to keep the whole comparison under 15
# minutes on a 2-core machine (and ractor/kameo's ~7 KB per actor under a few GB). Rates
# (msgs/s, spawns/s, bytes/process, restarts/s) are per item and need no correction;
# skynet's time is extrapolated linearly to the full tree and marked.
SCALE = {
    ("ractor", "fan-in"): 0.2,
    ("kameo", "fan-in"): 0.2,
    ("ractor", "skynet"): 0.1,
    ("kameo", "skynet"): 0.1,
    ("ractor", "spawn-idle"): 0.1,
    ("kameo", "spawn-idle"): 0.1,
    ("erlang", "restart"): 0.2,
}

# Issue 14's targets: Cairn's ratio to the best peer (above 1 = ahead, inverted for ↓ units)
# that each row must reach, and an absolute bound where there is one.
TARGETS = {
    ("ping-pong", "round_trips/s"): (1.5, None),
    ("ring", "hops/s"): (1.5, None),
    ("fan-in", "msgs/s"): (1.5, None),
    ("call", "calls/s"): (1.5, None),
    ("skynet", "ms"): (1 / 0.6, None),  # at most 0.6x the best peer's time
    ("spawn-idle", "spawns/s"): (1.0, None),
    ("spawn-idle", "bytes/process"): (1.0, 512),
    ("restart", "restarts/s"): (1.0, None),
    ("remote-call", "us_p50"): (1 / 0.75, None),  # at most 0.75x Erlang's p50
    ("remote-throughput", "msgs/s"): (5.0, None),
}

WARMUP_SCALE = 0.02
RUN_TIMEOUT = 600
# Every Erlang node a run starts is named cairn_bench_* (see benches/peers/erlang).
ERLANG_NODE_NAME = b"cairn_bench_"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def command(system, workload, scale, paths):
    s = f"{scale:g}"
    if system == "cairn":
        return [paths["cairn"], workload, "--runs", "1", "--scale", s]
    if system == "erlang":
        if workload in REMOTE:
            return ["erl", "-noshell", "-sname", "cairn_bench_a@localhost", "+S", "2:2",
                    "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                    "-pa", paths["erl"], "-run", "bench_remote", "main", workload, s]
        return ["erl", "-noshell", "+S", "2:2", "+P", "4000000", "-pa", paths["erl"],
                "-run", "bench", "main", workload, s]
    return [os.path.join(paths["peers"], f"peer-{system}"), workload, "--runs", "1",
            "--scale", s]


def run_once(system, workload, scale, paths, logf, meter=None, load=None):
    """Runs one workload once. `load`, if given, receives the other load before and during
    the run (busy cores) and the seconds spent waiting for quiet."""
    cmd = command(system, workload, scale, paths)
    env = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1")
    if meter is not None and load is not None:
        before, waited = meter.wait_quiet()
        load.update(before=before, waited_s=round(waited, 1))
        mark = meter.start()
    logf.write(f"\n$ {' '.join(cmd)}\n")
    logf.flush()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    tree = TreeCpu(p.pid, ERLANG_NODE_NAME if system == "erlang" else None)
    try:
        stdout, stderr = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        tree.stop()
        logf.write("TIMEOUT\n")
        return None, f"timeout after {RUN_TIMEOUT} s"
    tree.stop()
    p = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
    wall = time.monotonic() - t0
    if meter is not None and load is not None:
        load["during"] = meter.during(mark, tree.seconds())
    logf.write(p.stderr)
    logf.write(f"[exit {p.returncode}, {wall:.1f} s" + (
        f"; other load {fmt_load(load.get('before'))} before, "
        f"{fmt_load(load.get('during'))} during" if load else "") + "]\n")
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}"
    rows = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    if not rows:
        return None, "no result row"
    return rows, None


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 1048576, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        otp = subprocess.run(["erl", "-noshell", "-eval",
                              'io:format("~s", [erlang:system_info(otp_release)]), halt().'],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        otp = "?"
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True,
                               timeout=60).stdout.strip()
    except OSError:
        rustc = "?"
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_gib": mem,
            "kernel": platform.release(), "hostname": platform.node(),
            "otp": otp, "rustc": rustc}


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


# --- load: busy cores from /proc/stat ------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times():
    """(busy seconds, total seconds) summed over every CPU, from /proc/stat's `cpu` line, or
    None where /proc/stat does not exist (then no load is measured and nobody waits)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    ticks = [int(x) for x in fields[1:9]]
    idle = ticks[3] + ticks[4]
    total = sum(ticks)
    return (total - idle) / CLK_TCK, total / CLK_TCK


def own_cpu():
    """CPU seconds used so far by this script's finished children (the runs)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class LoadMeter:
    """Busy cores of the machine, excluding this script's own runs."""

    def __init__(self, max_load, max_wait):
        self.max_load = max_load
        self.max_wait = max_wait
        self.available = cpu_times() is not None

    def sample(self, seconds=1.0):
        """Busy cores over the next `seconds` (nobody of ours runs meanwhile)."""
        a = cpu_times()
        t0 = time.monotonic()
        time.sleep(seconds)
        b = cpu_times()
        wall = time.monotonic() - t0
        if a is None or b is None:
            return None
        return max(0.0, (b[0] - a[0]) / wall)

    def wait_quiet(self):
        """Waits until the other load is below max_load (at most max_wait seconds); returns
        (busy cores when it stopped waiting, seconds waited)."""
        if not self.available:
            return None, 0.0
        start = time.monotonic()
        while True:
            busy = self.sample()
            waited = time.monotonic() - start
            if busy is None or busy < self.max_load or waited >= self.max_wait:
                return busy, waited

    def start(self):
        return cpu_times(), own_cpu(), time.monotonic()

    def during(self, mark, tree_seconds=0.0):
        """Busy cores of everyone else between `mark` (from start) and now; `tree_seconds`
        is the run's process tree's CPU as sampled by `TreeCpu`."""
        times, own, t0 = mark
        now = cpu_times()
        wall = time.monotonic() - t0
        if times is None or now is None or wall <= 0:
            return None
        ours = max(own_cpu() - own, tree_seconds)
        others = (now[0] - times[0]) - ours
        return max(0.0, others / wall)


def proc_stat(pid):
    """(parent pid, start time in ticks, CPU seconds of the process itself) from
    /proc/PID/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / CLK_TCK


class TreeCpu:
    """Samples the CPU of every process in a run's tree (the root and its descendants, also
    after one is re-parented) every 0.1 s until `stop`; `seconds` sums the last sample of
    each. A process started after the root whose command line holds `marker` (bytes) counts
    too, wherever it is. A process's last 0.1 s may be missed: the sum is a lower bound."""

    def __init__(self, root, marker=None):
        self.root = root
        self.marker = marker
        self.root_start = None
        self.last = {}  # (pid, start time) -> CPU seconds at its last sample
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            self._sample()
            if self.done.wait(0.1):
                return

    def _sample(self):
        try:
            pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
        except OSError:
            return
        stats = {}
        for pid in pids:
            st = proc_stat(pid)
            if st is not None:
                stats[pid] = st
        # A pid seen before counts only while its start time matches (pids are reused).
        if self.root_start is None and self.root in stats:
            self.root_start = stats[self.root][1]
        ours = {pid for pid, (_, start, _) in stats.items()
                if pid == self.root or (pid, start) in self.last
                or self._marked(pid, start)}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _, _) in stats.items():
                if pid not in ours and ppid in ours:
                    ours.add(pid)
                    grew = True
        for pid in ours:
            _, start, cpu = stats[pid]
            self.last[(pid, start)] = cpu

    def _marked(self, pid, start):
        if self.marker is None or self.root_start is None or start < self.root_start:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.marker in f.read()
        except OSError:
            return False

    def stop(self):
        self.done.set()
        self.thread.join()

    def seconds(self):
        return sum(self.last.values())


# --- formatting ----------------------------------------------------------------------------

def fmt_load(v):
    return "?" if v is None else f"{v:.2f}"


def human(v, unit):
    if v is None:
        return "–"
    if unit in ("ms",):
        return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"
    if unit.startswith("us"):
        return f"{v:.1f} µs"
    if "bytes" in unit:
        return f"{v:,.0f} B"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suf}"
    return f"{v:.0f}"


def short(v, unit):
    s = human(v, unit)
    for suf in (" ms", " µs", " B"):
        s = s.replace(suf, "")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cairn", required=True, help="the cairn-bench binary")
    ap.add_argument("--peers", required=True, help="directory of the peer-* binaries")
    ap.add_argument("--erl", required=True, help="directory of the compiled .beam files")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default=",".join(LOCAL + REMOTE))
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="every size x0.05: checks that everything runs; measures nothing")
    ap.add_argument("--no-readme", action="store_true", help="leave benches/README.md alone")
    ap.add_argument("--no-erlang", action="store_true",
                    help="skip Erlang (compare.sh passes it when erl is not available)")
    ap.add_argument("--max-load", type=float, default=0.3,
                    help="busy cores of other processes tolerated before and during a run")
    ap.add_argument("--max-wait", type=float, default=300,
                    help="seconds to wait for the other load to drop before a run")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs of a run taken under load")
    ap.add_argument("--no-load-check", action="store_true",
                    help="neither wait for quiet nor re-run loaded runs (still records load)")
    args = ap.parse_args()
    paths = {"cairn": args.cairn, "peers": args.peers, "erl": args.erl}
    systems = [s for s in args.systems.split(",") if s]
    if args.no_erlang and "erlang" in systems:
        log("compare: erl is not available; Erlang is skipped")
        systems.remove("erlang")
    workloads = [w for w in args.workloads.split(",") if w]
    os.makedirs(RESULTS, exist_ok=True)
    started = time.monotonic()
    load_before = loadavg()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    log(f"compare: {', '.join(systems)} x {', '.join(workloads)}; {args.rounds} rounds "
        f"(+ warm-up); load average {load_before[0]:.2f}")

    meter = LoadMeter(args.max_load, 0 if args.no_load_check else args.max_wait)
    if not meter.available:
        log("compare: /proc/stat is not readable; load is neither measured nor waited for")
    # (system, bench, unit) -> list of values; meta per key
    values = {}
    meta = {}
    failures = []
    # Every attempt of every measured run: system, bench, round, attempt, load, values.
    runs = []
    # (system, bench, unit) -> True where the counted value of some round was taken under load
    loaded_cells = {}
    with open(os.path.join(RESULTS, "compare.log"), "w") as logf:
        logf.write(f"compare {date} on {mach}\n")
        plan = [(w, s) for w in workloads for s in systems if w in SUPPORTED.get(s, ())]
        if not args.no_warmup:
            log(f"== warm-up (scale {WARMUP_SCALE}, discarded)")
            logf.write("\n==== warm-up (discarded)\n")
            for w, s in plan:
                _, err = run_once(s, w, WARMUP_SCALE, paths, logf)
                if err:
                    log(f"   warm-up {s} {w}: FAILED ({err})")
        for r in range(1, args.rounds + 1):
            log(f"== round {r}/{args.rounds} ({time.monotonic() - started:.0f} s so far, "
                f"load {loadavg()[0]:.2f})")
            logf.write(f"\n==== round {r}\n")
            for w, s in plan:
                scale = SCALE.get((s, w), 1.0) * (0.05 if args.quick else 1.0)
                for attempt in range(args.retries + 1):
                    load = {}
                    rows, err = run_once(s, w, scale, paths, logf, meter, load)
                    loaded = (meter.available and not args.no_load_check
                              and ((load.get("during") or 0) > args.max_load
                                   or (load.get("before") or 0) > args.max_load))
                    last = attempt == args.retries
                    runs.append({"system": s, "bench": w, "round": r, "attempt": attempt,
                                 "load_before": load.get("before"),
                                 "load_during": load.get("during"),
                                 "waited_s": load.get("waited_s"), "loaded": loaded,
                                 "counted": err is None and (not loaded or last),
                                 "error": err,
                                 "values": {row["unit"]: row["value"] for row in rows or []}})
                    loads = (f"[other load {fmt_load(load.get('before'))} before, "
                             f"{fmt_load(load.get('during'))} during"
                             + (f", waited {load['waited_s']:.0f} s" if load.get("waited_s")
                                else "") + "]")
                    if err:
                        log(f"   {s:7} {w:18} FAILED: {err} {loads}")
                        failures.append({"system": s, "bench": w, "round": r, "error": err})
                        break
                    log(f"   {s:7} {w:18} " + ", ".join(
                        f"{short(row['value'], row['unit'])} {row['unit']}" for row in rows)
                        + f" {loads}" + (" LOADED" + ("" if last else ", again") if loaded
                                         else ""))
                    if loaded and not last:
                        continue
                    for row in rows:
                        key = (s, row["bench"], row["unit"])
                        values.setdefault(key, []).append(row["value"])
                        meta[key] = {"better": row["better"], "scale": scale}
                        if loaded:
                            loaded_cells[key] = True
                    break
    elapsed = time.monotonic() - started
    load_after = loadavg()

    # --- aggregate ---------------------------------------------------------------------------
    benches = []  # (bench, unit) in display order
    for w in workloads:
        for (s, b, u) in sorted(values, key=lambda k: (k[1], k[2])):
            if b == w and (b, u) not in benches:
                benches.append((b, u))
    results = []
    cell = {}
    for (s, b, u), vs in values.items():
        m = meta[(s, b, u)]
        med = statistics.median(vs)
        # Skynet measured on a smaller tree: extrapolate the time to the full tree.
        factor = 1.0
        if b == "skynet" and m["scale"] != 1.0:
            factor = 1e6 / skynet_leaves(m["scale"])
        entry = {"bench": b, "unit": u, "system": s, "better": m["better"],
                 "median": med * factor, "min": min(vs) * factor, "max": max(vs) * factor,
                 "runs": vs, "scale": m["scale"],
                 "note": (f"measured at scale {m['scale']:g} ({med:,.0f} ms), "
                          f"x{factor:g} to the full tree" if factor != 1.0 else
                          (f"run at scale {m['scale']:g}" if m["scale"] != 1.0 else ""))}
        results.append(entry)
        cell[(s, b, u)] = entry
    ratios = []
    for (b, u) in benches:
        c = cell.get(("cairn", b, u))
        peers = [cell[(s, b, u)] for s in systems if s != "cairn" and (s, b, u) in cell]
        if not peers:
            continue
        better = peers[0]["better"]
        best = (max if better == "higher" else min)(peers, key=lambda e: e["median"])
        if c is None:
            ratios.append({"bench": b, "unit": u, "best_peer": best["system"], "ratio": None})
            continue
        ratio = (c["median"] / best["median"] if better == "higher"
                 else best["median"] / c["median"])
        target, bound = TARGETS.get((b, u), (None, None))
        met = None
        if target is not None:
            met = ratio >= target and (bound is None or c["median"] <= bound)
        ratios.append({"bench": b, "unit": u, "best_peer": best["system"], "ratio": ratio,
                       "target": target, "bound": bound, "met": met})

    out = {"date": date, "machine": mach, "rounds": args.rounds,
           "warmup": not args.no_warmup, "load_average_before": load_before,
           "load_average_after": load_after, "elapsed_s": round(elapsed, 1),
           "workers": 2, "results": sorted(results, key=lambda e: (e["bench"], e["unit"],
                                                                   SYSTEMS.index(e["system"]))),
           "ratios": ratios, "failures": failures,
           "load": {"max_load": args.max_load, "max_wait_s": args.max_wait,
                    "retries": args.retries, "checked": not args.no_load_check,
                    "meaning": "busy cores of other processes, from /proc/stat minus the "
                               "runs' own CPU time"},
           "runs": runs,
           "ratio_meaning": "Cairn's median over the best peer's median, inverted for "
                            "lower-is-better units: above 1 means Cairn is ahead"}
    with open(os.path.join(RESULTS, "latest.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")

    # --- table -------------------------------------------------------------------------------
    used = [s for s in systems if any(k[0] == s for k in values)]
    marks = {}
    header = ["workload", "unit"] + used + ["Cairn / best peer", "target"]
    lines = []
    for (b, u) in benches:
        row = [b, u + (" ↑" if cell_better(cell, b, u) == "higher" else " ↓")]
        for s in used:
            e = cell.get((s, b, u))
            if e is None:
                row.append("")
                continue
            txt = f"{short(e['median'], u)} ({short(e['min'], u)}–{short(e['max'], u)})"
            if e["note"]:
                mark = "†" if b == "skynet" else "*"
                marks[mark] = True
                txt = ("~" if b == "skynet" else "") + txt + mark
            if loaded_cells.get((s, b, u)):
                marks["‡"] = True
                txt += "‡"
            row.append(txt)
        rt = next((r for r in ratios if r["bench"] == b and r["unit"] == u), None)
        if rt is None:
            row += ["", ""]
        elif rt["ratio"] is None:
            row += ["Cairn: not built yet" if b in REMOTE else "n/a", ""]
        else:
            row.append(f"{rt['ratio']:.2f}× vs {rt['best_peer']}")
            row.append(target_text(rt, cell.get(("cairn", b, u))))
        lines.append(row)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in lines]
    notes = [
        f"Median (min–max) of {args.rounds} interleaved rounds, each run a fresh process, "
        f"after a discarded warm-up round; 2 worker threads (actix: 1, see Deviations). "
        f"↑ higher is better, ↓ lower is better. The ratio is Cairn's median over the best "
        f"peer's (inverted for ↓): above 1 Cairn is ahead. The target column is issue 14's "
        f"goal for that ratio and how much of it the median reaches.",
        load_note(runs, args),
    ]
    scaled = sorted({(e["system"], e["bench"], e["scale"]) for e in results if e["scale"] != 1})
    if scaled:
        notes.append("\\* run smaller than cairn-bench's size (rates are per item): " + ", ".join(
            f"{s} {b} at {sc:g}" for s, b, sc in scaled if b != "skynet") + ".")
        sk = [f"{s} on {skynet_leaves(sc):,} leaves" for s, b, sc in scaled if b == "skynet"]
        if sk:
            notes.append("† skynet run on a smaller tree and its time multiplied up to "
                         "1,000,000 leaves (" + ", ".join(sk) + "): an estimate, likely "
                         "flattering, as bigger trees cost more per process.")
    if marks.get("‡"):
        notes.append(f"‡ some counted run was taken under load (other processes above "
                     f"{args.max_load:g} busy cores) after {args.retries} re-runs; see "
                     f"`runs` in latest.json.")
    if failures:
        notes.append("Failed runs: " + "; ".join(
            f"{f['system']} {f['bench']} round {f['round']} ({f['error']})" for f in failures))
    mach_line = (f"{date}; {mach['cpu']}, {mach['cpus']} vCPUs, {mach['mem_gib']} GiB, "
                 f"Linux {mach['kernel']}; {mach['rustc']}; Erlang/OTP {mach['otp']}; load "
                 f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after; runs took "
                 f"{elapsed / 60:.1f} min")
    table_md = "\n".join(md) + "\n\n" + "\n\n".join(notes) + "\n\n" + f"Measured {mach_line}.\n"
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write("# Cairn vs peers: latest comparison\n\n")
        f.write("Written by `benches/compare.sh`; see `benches/README.md` (Comparison) for "
                "how each peer is used and every deviation.\n\n")
        f.write(table_md)
        f.write("\n![Cairn's ratio to the best peer](ratios.svg)\n")
    with open(os.path.join(RESULTS, "ratios.svg"), "w") as f:
        f.write(svg(ratios, date))
    if not args.no_readme:
        update_readme(table_md)

    # --- console -----------------------------------------------------------------------------
    widths = [max(len(str(r[i])) for r in [header] + lines) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()
    for n in notes:
        print(n.replace("\\*", "*"))
    print(f"\nMeasured {mach_line}.")
    print(f"Wrote {os.path.relpath(RESULTS, ROOT)}/latest.json, latest.md, ratios.svg, "
          f"compare.log")
    return 1 if failures else 0


def target_text(rt, cairn):
    """How far a row is from its target: the ratio as a share of the target ratio."""
    if rt.get("target") is None:
        return ""
    goal = f"≥ {rt['target']:.2f}×"
    if rt["bound"] is not None:
        goal += f", ≤ {rt['bound']:,} B"
    share = rt["ratio"] / rt["target"]
    if rt["met"]:
        return f"{goal}: met"
    if rt["bound"] is not None and cairn and cairn["median"] > rt["bound"]:
        return f"{goal}: over the bound"
    return f"{goal}: {share:.0%} of it"


def load_note(runs, args):
    """One sentence on the load the runs were taken under."""
    counted = [r for r in runs if r["counted"]]
    during = [r["load_during"] for r in counted if r["load_during"] is not None]
    if not during:
        return "Other load was not measured (no /proc/stat)."
    rerun = sum(1 for r in runs if r["loaded"] and not r["counted"])
    return (f"Other load (busy cores besides the run, from /proc/stat) during the counted "
            f"runs: median {statistics.median(during):.2f}, max {max(during):.2f}; each run "
            f"waited for it to drop below {args.max_load:g} first"
            + ("" if not args.no_load_check else " (check off)")
            + (f"; {rerun} loaded run(s) re-run" if rerun else "") + ".")


def skynet_leaves(scale):
    """cairn-bench's rule: the scaled leaf count rounded to the nearest power of 10."""
    import math
    wanted = max(10, round(1e6 * scale))
    return 10 ** max(1, round(math.log10(wanted)))


def cell_better(cell, b, u):
    for (s, bb, uu), e in cell.items():
        if bb == b and uu == u:
            return e["better"]
    return "higher"


def update_readme(table_md):
    path = os.path.join(HERE, "README.md")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + table_md + end + tail)


def svg(ratios, date):
    import math
    rows = [r for r in ratios if r["ratio"] is not None]
    missing = [r for r in ratios if r["ratio"] is None and r["unit"] != "vm_bytes/process"]
    bar_h, gap, left, right, top = 24, 8, 230, 150, 50
    width = 900
    height = top + (len(rows) + len(missing)) * (bar_h + gap) + 60
    lo, hi = 1 / 16, 16  # log2 axis from 1/16x to 16x
    plot_w = width - left - right

    def x(v):
        v = min(max(v, lo), hi)
        return left + (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo)) * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">Cairn vs the best peer '
           f'(median ratio, log scale; right of 1× = Cairn ahead)</text>',
           f'<text x="{left}" y="40" fill="#555">{date}</text>']
    for t in (1 / 16, 1 / 4, 1, 4, 16):
        xt = x(t)
        label = f"{t:g}×" if t >= 1 else f"1/{1 / t:g}×"
        out.append(f'<line x1="{xt:.1f}" y1="{top - 4}" x2="{xt:.1f}" '
                   f'y2="{height - 50}" stroke="{"#000" if t == 1 else "#ddd"}"/>')
        out.append(f'<text x="{xt:.1f}" y="{height - 34}" text-anchor="middle">{label}</text>')
    y = top
    for r in rows:
        x0, x1 = x(1), x(r["ratio"])
        colour = "#2e8b57" if r["ratio"] >= 1 else "#c0392b"
        out.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{r["bench"]} '
                   f'({r["unit"]})</text>')
        out.append(f'<rect x="{min(x0, x1):.1f}" y="{y}" width="{abs(x1 - x0):.1f}" '
                   f'height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{width - right + 8}" y="{y + 17}">{r["ratio"]:.2f}× vs '
                   f'{r["best_peer"]}</text>')
        y += bar_h + gap
    for r in missing:
        out.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{r["bench"]} '
                   f'({r["unit"]})</text>')
        out.append(f'<text x="{x(1) + 6:.1f}" y="{y + 17}" fill="#777">no Cairn number yet '
                   f'(only {r["best_peer"]})</text>')
        y += bar_h + gap
    out.append("</svg>\n")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
