#!/usr/bin/env bash
# Times every test binary of the workspace on its own (issue #17: the suite's wall time).
#
# `cargo test --workspace` runs its test binaries one after another, so the suite's wall
# time is the sum of theirs (plus the doc tests). This builds them once, then runs each
# from its package's directory, as cargo would, and prints one tab-separated row per binary
# (binary, wall s, CPU s of it and its waited-for children, exit code, 1-minute load when it
# ended), slowest first, and the totals. On a shared machine, note the load: the ranking
# and the CPU seconds mean more than the wall seconds.
#
#   tests/suite_time.sh            # every binary
#   tests/suite_time.sh shards_    # only binaries whose package:target:kind contains it
#
# macro_errors (trybuild) checks cairn and its dependencies in target/tests/trybuild: cold
# (a clean target, as in CI) that is minutes; warm, seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-}"
out="$(mktemp -d)"
cargo test --workspace --no-run --message-format=json 2>/dev/null >"$out/build.json"
python3 - "$out/build.json" >"$out/bins.tsv" <<'EOF'
import json, os, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        pkg = m["package_id"].split("#")[0].split("/")[-1]
        name = f'{pkg}:{m["target"]["name"]}:{m["target"]["kind"][0]}'
        print(name, os.path.dirname(m["manifest_path"]), m["executable"], sep="\t")
EOF
# A proc-macro crate's test binary links the compiler's libstd dynamically.
sysroot_lib="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib"
while IFS=$'\t' read -r name dir exe; do
    [[ "$name" == *"$filter"* ]] || continue
    log="$out/${name//[:\/]/_}.log"
    rc=0
    (cd "$dir" && CARGO_MANIFEST_DIR="$dir" LD_LIBRARY_PATH="$sysroot_lib" \
        /usr/bin/time -f "%e %U %S" -o "$out/time" "$exe" >"$log" 2>&1) || rc=$?
    # On a failure /usr/bin/time writes "Command exited with non-zero status N" first.
    read -r wall user sys < <(tail -n 1 "$out/time")
    cpu="$(python3 -c "print(f'{$user + $sys:.1f}')")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$cpu" "$rc" "$(cut -d' ' -f1 /proc/loadavg)" >>"$out/rows.tsv"
done <"$out/bins.tsv"
printf 'binary\twall_s\tcpu_s\texit\tload\n'
sort -t$'\t' -k2 -rn "$out/rows.tsv"
awk -F'\t' '{w += $2; c += $3} END {printf "total\t%.1f\t%.1f\n", w, c}' "$out/rows.tsv"
echo "logs: $out" >&2
