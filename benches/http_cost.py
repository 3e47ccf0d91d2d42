#!/usr/bin/env python3
"""Instructions per HTTP request of a Cairn HTTP server, counted by valgrind (callgrind).

The server (by default `cairn-bench --http-serve node`: an in-memory object's `fetch` on one
node) runs under callgrind; `wrk` (64 keep-alive connections, as http_get.py) warms it up,
then the counters are zeroed, `wrk` runs again for `--duration` seconds and the counters
are dumped. Instructions in that window divided by the requests `wrk` completed in it is
the cost of one request in the server's user space (the kernel's share, socket reads and
writes and epoll, is not counted), independent of the machine's load; calls to malloc and
its kin in the window, counted as `benches/cost.py` does, give the allocations per request.
At most 64 requests are in flight at either edge of the window: about 1% of the ~5,000
requests a 10 s window counts under valgrind (use a longer --duration for less).

  benches/http_cost.py                                   # this tree's release cairn-bench
  benches/http_cost.py --bin OLD --bin NEW               # side by side
  benches/http_cost.py --server 'target/release/examples/http_server --handler inline'
  benches/http_cost.py --top 40                          # also the costliest functions

valgrind runs one thread at a time, so with --workers 2 the numbers include handing work
between workers but not the cache traffic between cores. Standard library only.
"""

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

from cost import count_calls

ALLOCATORS = ("malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "memalign")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url, seconds):
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "--timeout", "10s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        sys.exit(f"wrk printed no request count:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"the server answered errors:\n{out}")
    return int(m.group(1))


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    sys.exit(f"no totals in {path}")


def measure(server, workers, duration, top):
    port = free_port()
    out_dir = tempfile.mkdtemp(prefix="http-cost-")
    out = os.path.join(out_dir, "callgrind.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           "--dump-instr=no", "--separate-threads=no"] + server + [
               "--addr", f"127.0.0.1:{port}", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        path = "/hello/bench/"
        deadline = time.time() + 300
        while True:
            line = proc.stdout.readline()
            if not line or time.time() > deadline:
                sys.exit(f"{server[0]} never printed `listening`")
            if line.startswith("listening"):
                parts = line.split()
                if len(parts) > 2:
                    path = parts[2]
                break
        url = f"http://127.0.0.1:{port}{path}"
        wrk(url, 3)  # warm-up: connections, activation, allocator pools
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        requests = wrk(url, duration)
        subprocess.run(["callgrind_control", "-d", "measured", str(proc.pid)], check=True,
                       capture_output=True)
        time.sleep(1)
        dumps = [os.path.join(out_dir, f) for f in os.listdir(out_dir) if "measured" in f
                 or f.startswith("callgrind.out.")]
        dumps = [d for d in dumps if os.path.getsize(d) > 0]
        if not dumps:
            sys.exit(f"no callgrind dump in {out_dir}")
        dump = max(dumps, key=os.path.getmtime)
        ir = total_ir(dump)
        allocs = count_calls(dump, ALLOCATORS)
        if top:
            ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                                 capture_output=True, text=True).stdout
            lines = [l for l in ann.splitlines() if re.match(r"\s*[\d,]+ \(", l)]
            print(f"-- top {top} functions (inclusive), instructions per request:", file=sys.stderr)
            for l in lines[1:top + 1]:
                m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", l)
                if m:
                    n = int(m.group(1).replace(",", ""))
                    print(f"{n / requests:9.0f}  {m.group(2):>5}%  {m.group(3)[:150]}",
                          file=sys.stderr)
        return ir, allocs, requests, dump
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append",
                    help="cairn-bench binaries to compare (default: this tree's release one)")
    ap.add_argument("--server", help="another server command line (gets --addr and --workers)")
    ap.add_argument("--mode", default="node", help="cairn-bench --http-serve MODE")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--top", type=int, default=0, help="print the N costliest functions")
    args = ap.parse_args()
    if args.server:
        servers = [shlex.split(args.server)]
    else:
        bins = args.bin or [os.path.join(ROOT, "target", "release", "cairn-bench")]
        servers = [[b, "--http-serve", args.mode] for b in bins]
    for server in servers:
        ir, allocs, requests, dump = measure(server, args.workers, args.duration, args.top)
        print(f"{' '.join(server)}: {ir / requests:,.0f} instructions/request, "
              f"{allocs / requests:.2f} allocations/request "
              f"({ir:,} over {requests:,} requests; {dump})", flush=True)


if __name__ == "__main__":
    main()
