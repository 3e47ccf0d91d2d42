#!/usr/bin/env bash
# Checks that the workspace pulls in tokio only for `tokio::sync` (through quinn in
# cairn-net, hyper in cairn-gateway): none of the runtime features `rt`,
# `rt-multi-thread`, `net`, `time`, `macros` may be enabled, workspace-wide and for each
# crate that reaches tokio.
# Exits non-zero if one is, or if cargo tree fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo tree -i tokio` for the packages in "$@" (or the workspace); prints the tree.
tokio_tree() {
    cargo tree -e features -i tokio "$@" 2>&1
}

check() {
    local what=$1
    shift
    local tree
    tree=$(tokio_tree "$@") || {
        # No tokio at all is fine too.
        if grep -q "did not match any packages" <<<"$tree"; then
            echo "ok: $what does not depend on tokio"
            return 0
        fi
        echo "$tree" >&2
        echo "error: cargo tree failed for $what" >&2
        exit 2
    }
    local bad
    bad=$(grep -oE 'tokio feature "(rt|rt-multi-thread|net|time|macros)"' <<<"$tree" | sort -u || true)
    if [[ -n "$bad" ]]; then
        echo "$tree"
        echo "error: $what enables tokio runtime features:" >&2
        echo "$bad" >&2
        exit 1
    fi
    echo "ok: tokio features in $what's tree:" $(grep -oE 'tokio feature "[^"]+"' <<<"$tree" | sort -u)
}

check "the workspace" --workspace
check "cairn-net (quinn)" -p cairn-net
check "cairn-gateway (hyper)" -p cairn-gateway
