#!/usr/bin/env bash
# Checks that the workspace (cairn-net through quinn) pulls in tokio only for `tokio::sync` (through quinn): none of the
# runtime features `rt`, `rt-multi-thread`, `net`, `time`, `macros` may be enabled.
# Exits non-zero if one is, or if cargo tree fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -e features -i tokio --workspace 2>&1) || {
    # No tokio at all is fine too.
    if grep -q "did not match any packages" <<<"$tree"; then
        echo "ok: cairn-net does not depend on tokio"
        exit 0
    fi
    echo "$tree" >&2
    echo "error: cargo tree failed" >&2
    exit 2
}
bad=$(grep -oE 'tokio feature "(rt|rt-multi-thread|net|time|macros)"' <<<"$tree" | sort -u || true)
if [[ -n "$bad" ]]; then
    echo "$tree"
    echo "error: cairn-net enables tokio runtime features:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "ok: tokio features in cairn-net's tree:"
grep -oE 'tokio feature "[^"]+"' <<<"$tree" | sort -u
