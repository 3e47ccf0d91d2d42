#!/usr/bin/env python3
"""Instructions per item of cairn-bench's local workloads, counted by valgrind (callgrind).

A count of executed instructions does not change with the machine's load, so it can prove a
change on a shared machine where wall-clock numbers cannot. Each workload's child runs twice
under callgrind, at scales S and 2S (skynet: S and 10S, its tree grows by powers of 10); the
difference of the two totals divided by the difference of the item counts is the cost of one
item, with start-up and shutdown cancelled out. Calls to malloc/calloc/realloc are counted
the same way (allocations per item; for spawn-idle and restart they include what stopping
each process costs at shutdown). With `--cache-sim`, callgrind also simulates the caches and the script prints its cycle
estimate (Ir + 10 x L1 misses + 100 x last-level misses, KCachegrind's formula): a model,
not a measurement, but also load-independent.

  benches/cost.py                                   # every local workload, this tree's binary
  benches/cost.py ping-pong ring --bin OLD --bin NEW    # side by side
  benches/cost.py ping-pong --cache-sim --workers 2

valgrind runs one thread at a time, so with --workers 2 the numbers include the cost of
handing work between workers but not the cache traffic between cores. Standard library only.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# workload -> (item name, items at scale s, default scale S, second scale = S x factor). The
# counts follow cairn-bench's workload sizes (benches/src/workloads.rs); a hop is one message
# delivered. skynet's tree grows by powers of 10, hence its factor.
ITEMS = {
    "ping-pong": ("hop", lambda s: 2 * round(1_000_000 * s), 0.01, 2),
    "ring": ("hop", lambda s: max(2, round(10_000 * s)) * 100, 0.01, 2),
    "call": ("call", lambda s: round(1_000_000 * s), 0.01, 2),
    "fan-in": ("msg", lambda s: 2 * round(5_000_000 * s), 0.002, 2),
    "skynet": ("process", lambda s: sum(10 ** l for l in range(skynet_levels(s) + 1)), 0.001,
               10),
    "spawn-idle": ("spawn", lambda s: round(1_000_000 * s), 0.01, 2),
    "restart": ("restart", lambda s: round(100_000 * s), 0.02, 2),
    # Durable writes through objects: an LMDB commit's fsync is a system call (not counted),
    # and how many write sets share a commit depends on thread timing, so this row is
    # noisier than the others.
    "durable-writes-node": ("write", lambda s: durable_writes(s), 0.01, 2),
}


def durable_writes(scale):
    """Writes of durable-writes-node (benches/src/workloads/durable.rs): objects x 4 callers
    x calls per caller."""
    objects = max(10, round(1_000 * scale))
    total = max(1, round(1_000_000 * scale))
    per_caller = max(1, -(-total // (objects * 4)))
    return objects * 4 * per_caller


def skynet_levels(scale):
    import math
    wanted = max(10, round(1_000_000 * scale))
    return max(1, round(math.log10(wanted)))


def run(binary, workload, scale, workers, cache_sim, outdir):
    out = os.path.join(outdir, f"{workload}.{scale:g}.{os.getpid()}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if cache_sim:
        cmd += ["--cache-sim=yes"]
    cmd += [binary, "--child", workload, "--workers", str(workers), "--scale", f"{scale:g}"]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"cost: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    events, totals = None, None
    with open(out) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:") or line.startswith("totals:"):
                totals = [int(x) for x in line.split()[1:]]
    allocs = count_calls(out, ("malloc", "calloc", "realloc", "aligned_alloc",
                                "posix_memalign", "memalign"))
    os.remove(out)
    if not events or not totals:
        sys.exit(f"cost: no totals in callgrind output of {workload}")
    counts = dict(zip(events, totals))
    counts["allocs"] = allocs
    return counts


def count_calls(path, names):
    """Calls to the functions named `names` in a callgrind output file (its `cfn=` call
    records; names are compressed as `(id) name` the first time, `(id)` afterwards)."""
    ids = {}
    total = 0
    target = None
    with open(path) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?", rest)
                if m:
                    if m.group(2) is not None:
                        ids[m.group(1)] = m.group(2)
                    name = ids.get(m.group(1), "")
                else:
                    name = rest
                if key == "cfn":
                    target = name
            elif line.startswith("calls=") and target is not None:
                if target in names:
                    total += int(line[6:].split()[0])
                target = None
    return total


def cycles(c):
    """KCachegrind's cycle estimate from callgrind's cache simulation."""
    l1 = c.get("I1mr", 0) + c.get("D1mr", 0) + c.get("D1mw", 0)
    ll = c.get("ILmr", 0) + c.get("DLmr", 0) + c.get("DLmw", 0)
    return c["Ir"] + 10 * l1 + 100 * ll


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workloads", nargs="*", default=list(ITEMS))
    ap.add_argument("--bin", action="append",
                    help="cairn-bench binaries to compare (default: target/release/cairn-bench)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scale", type=float, help="the smaller of the two scales")
    ap.add_argument("--cache-sim", action="store_true", help="also estimate cycles")
    args = ap.parse_args()
    bins = args.bin or [os.path.join(ROOT, "target", "release", "cairn-bench")]
    for w in args.workloads:
        if w not in ITEMS:
            sys.exit(f"cost: unknown workload {w!r} (one of {', '.join(ITEMS)})")
    print(f"# instructions and heap allocations per item (callgrind), --workers {args.workers}; "
          f"difference of two runs at scales S and 2S (skynet: 10S)")
    header = ["workload", "S", "binary", "Ir/item", "allocations/item"] + (
        ["cycles/item (est.)"] if args.cache_sim else [])
    print("\t".join(header))
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workloads:
            item, count, default_scale, factor = ITEMS[w]
            s = args.scale or default_scale
            n1, n2 = count(s), count(factor * s)
            for b in bins:
                c1 = run(b, w, s, args.workers, args.cache_sim, tmp)
                c2 = run(b, w, factor * s, args.workers, args.cache_sim, tmp)
                per = (c2["Ir"] - c1["Ir"]) / (n2 - n1)
                allocs = (c2["allocs"] - c1["allocs"]) / (n2 - n1)
                row = [w, f"{s:g}", os.path.basename(b), f"{per:,.0f} per {item}",
                       f"{allocs:.2f}"]
                if args.cache_sim:
                    row.append(f"{(cycles(c2) - cycles(c1)) / (n2 - n1):,.0f}")
                print("\t".join(row), flush=True)


if __name__ == "__main__":
    main()
