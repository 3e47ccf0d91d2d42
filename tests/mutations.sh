#!/usr/bin/env bash
# Mutation proof (see docs/mutations.md): breaks the build on purpose, one mutation at a time,
# runs the tests that must catch it, prints each test's verdict and the assertion that failed,
# and restores the file. Nothing is committed; an interrupted run restores the file too.
#
# Usage: tests/mutations.sh [nosync|gate|gate-handler|activation|alarm]...   (no argument: all)
# Exit status: 0 if every mutation was caught by at least one of its tests, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
mutated=""
restore() {
  if [ -n "$mutated" ]; then cp "$tmp/original" "$mutated"; mutated=""; fi
}
trap 'restore; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

uncaught=0

# mutant NAME FILE SED-EXPRESSION 'cargo test arguments'...
mutant() {
  local name=$1 file=$2 expr=$3 caught=0
  shift 3
  cp "$file" "$tmp/original"
  mutated=$file
  sed -i "$expr" "$file"
  if cmp -s "$file" "$tmp/original"; then
    echo "== $name: the mutation no longer applies to $file (update this script)"
    restore
    uncaught=1
    return
  fi
  echo "== $name: $file"
  for args in "$@"; do
    # shellcheck disable=SC2086 # the arguments are word lists on purpose
    if nice -n 10 cargo test -q $args >"$tmp/log" 2>&1; then
      echo "   passed (did not catch it): cargo test $args"
    elif grep -q 'error: could not compile' "$tmp/log"; then
      echo "   does not compile: cargo test $args"
      grep -E '^error' "$tmp/log" | head -3 | sed 's/^/     /'
    else
      caught=1
      echo "   FAILED (caught it): cargo test $args"
      grep -E -A2 "panicked at" "$tmp/log" | grep -vE "^--$|stack backtrace" | head -6 | sed 's/^/     /'
    fi
  done
  restore
  if [ $caught = 0 ]; then
    echo "   NOT CAUGHT"
    uncaught=1
  fi
}

wanted() { [ $# -eq 0 ] || [[ " $* " == *" $which "* ]]; }

for which in nosync gate gate-handler activation alarm; do
  wanted "$@" || continue
  case $which in
  nosync)
    # Commits return before their pages are flushed.
    mutant nosync storage/src/lmdb.rs \
      's/\.set_flags(lmdb::EnvironmentFlags::NO_TLS)$/.set_flags(lmdb::EnvironmentFlags::NO_TLS | lmdb::EnvironmentFlags::NO_SYNC)/' \
      "-p cairn-storage --lib lmdb::tests" \
      "-p cairn-storage --test durability" \
      "-p cairn-storage --test crash acknowledged_writes_survive_power_loss" \
      "-p cairn-storage --test crash acknowledged_writes_survive_kill_9"
    ;;
  gate)
    # A handler's held output is queued as if it had written nothing: it leaves as soon as
    # the output before it has, without waiting for its own write set to be durable.
    mutant gate src/object/output_queue.rs \
      '/self.entries.push_back(Entry {/,/});/s/^            commit,$/            commit: None,/' \
      "-p cairn --lib object::output_queue" \
      "-p cairn --test objects output_gate_holds_replies_until_the_write_is_durable" \
      "-p cairn --test objects a_failed_commit_drops_the_held_reply" \
      "-p cairn --test object_races a_shutdown_racing_a_commit"
    ;;
  gate-handler)
    # The same break one layer up: the activation sends a handler's held output as soon as
    # the handler returns and queues an empty one behind its write set.
    mutant gate-handler src/object/activation.rs \
      's/if pipeline.commit_behind(&octx.storage, gate.take()) {/if pipeline.commit_behind(\&octx.storage, { gate.take().release().await; Gate::new().take() }) {/' \
      "-p cairn --test objects output_gate_holds_replies_until_the_write_is_durable" \
      "-p cairn --test objects a_failed_commit_drops_the_held_reply" \
      "-p cairn --test object_races a_shutdown_racing_a_commit"
    ;;
  activation)
    # The node's registry admits a second process under a name that is taken, so a second
    # activation of an object can start beside the first.
    mutant activation scheduler/src/runtime.rs \
      's/^            if let Some(holder) = holder {$/            if let Some(holder) = holder.filter(|_| false) {/' \
      "-p cairn-scheduler --test processes spawn_named_with_a_taken_name" \
      "-p cairn --test objects concurrent_first_messages_make_exactly_one_activation"
    ;;
  alarm)
    # The alarm is not deleted in the alarm handler's write set.
    mutant alarm src/object/activation.rs \
      '/^        let _ = octx.storage.delete_alarm();$/d' \
      "-p cairn --test objects an_alarm_fires_after_its_time_even_after_eviction" \
      "-p cairn --test alarm_clock an_alarm_fires_when_the_clock_reaches_it" \
      "-p cairn --test alarm_clock an_alarm_set_before_a_restart"
    ;;
  esac
done
exit $uncaught
