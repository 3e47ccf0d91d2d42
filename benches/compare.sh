#!/usr/bin/env bash
# Cairn vs tokio, actix, ractor, kameo and Erlang/OTP on cairn-bench's workloads.
#
#   benches/compare.sh                 # everything: install, build, 3 rounds, table + files
#   benches/compare.sh --rounds 5      # more rounds
#   benches/compare.sh --systems cairn,erlang --workloads ping-pong,ring --no-readme
#
# Installs Erlang (Debian's erlang-nox) if `erl` is missing, builds cairn-bench (root
# workspace) and the peers (benches/peers, a workspace of its own) in release, compiles the
# Erlang sources, then benches/compare.py runs every workload for every system in interleaved
# order (a warm-up round at a tiny scale first, discarded) and writes benches/results/
# latest.json, latest.md, ratios.svg and compare.log, and the table in benches/README.md.
# Extra arguments go to compare.py. Needs: cargo, python3, and root or sudo for apt-get.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
START=$(date +%s)

say() { printf '== %s\n' "$*" >&2; }

have_erl() { command -v erl >/dev/null 2>&1 && command -v erlc >/dev/null 2>&1; }
if ! have_erl; then
    say "installing erlang-nox"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    # No Erlang is no reason to stop: the other systems still run, Erlang is skipped.
    { $SUDO apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq erlang-nox >/dev/null; } ||
        say "could not install erlang-nox; Erlang (local and remote workloads) is skipped"
fi
ERL_ARGS=()
if ! have_erl; then ERL_ARGS=(--no-erlang); fi

say "building cairn-bench (release)"
(cd "$ROOT" && cargo build --release -p cairn-bench)
CAIRN_TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

say "building the peers (release, benches/peers)"
(cd "$HERE/peers" && cargo build --release)
PEERS_TARGET="$(cd "$HERE/peers" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

ERL_OUT="$PEERS_TARGET/erlang"
mkdir -p "$ERL_OUT"
# The remote workloads start two Erlang nodes: keep epmd on loopback, and stop it afterwards
# if this script started it.
export ERL_EPMD_ADDRESS=127.0.0.1
EPMD_WAS_RUNNING=1
if have_erl; then
    say "compiling the Erlang sources"
    erlc -o "$ERL_OUT" "$HERE"/peers/erlang/*.erl
    EPMD_WAS_RUNNING=0
    if epmd -names >/dev/null 2>&1; then EPMD_WAS_RUNNING=1; fi
fi

BUILT=$(date +%s)
say "built in $((BUILT - START)) s; running"
status=0
python3 "$HERE/compare.py" \
    --cairn "$CAIRN_TARGET/release/cairn-bench" \
    --peers "$PEERS_TARGET/release" \
    --erl "$ERL_OUT" ${ERL_ARGS[@]+"${ERL_ARGS[@]}"} "$@" || status=$?

if [ "$EPMD_WAS_RUNNING" -eq 0 ]; then epmd -kill >/dev/null 2>&1 || true; fi
END=$(date +%s)
say "compare.sh: $((END - START)) s in all (build $((BUILT - START)) s, runs $((END - BUILT)) s)"
exit "$status"
