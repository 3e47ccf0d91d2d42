//! The per-turn message budget: a process gives its worker up after handling
//! [`MESSAGE_BUDGET`] messages in one run, so a process that always has mail (for example one
//! that floods itself) cannot starve the others on its worker.
//!
//! The runner resets the budget before each poll; every message `recv` returns consumes one
//! unit; at zero, `recv` wakes its own process and returns `Pending` once, which sends the
//! process to the back of its worker's queue.

use std::cell::Cell;

/// Messages a process may handle per turn. tokio's coop budget is 128 operations; a message
/// handler usually does several operations per message, so 64 messages is comparable, and a
/// batch that size still amortises the cost of a turn (a few tens of ns) well.
pub const MESSAGE_BUDGET: u32 = 64;

thread_local! {
    static BUDGET: Cell<u32> = const { Cell::new(MESSAGE_BUDGET) };
}

// `#[inline]` on these three: they run on every poll and message, and are small enough that
// an out-of-line call (which the crate's codegen-unit split otherwise may choose) costs more
// than their body; seen as ping-pong +22 instructions per hop (callgrind) when a change
// elsewhere in the crate moved `reset` out of line.
#[inline]
pub(crate) fn reset() {
    BUDGET.with(|b| b.set(MESSAGE_BUDGET));
}

/// Takes one unit; false when the budget is spent (the caller must yield).
#[inline]
pub(crate) fn try_consume() -> bool {
    BUDGET.with(|b| {
        let left = b.get();
        if left == 0 {
            false
        } else {
            b.set(left - 1);
            true
        }
    })
}

/// Gives back a unit taken by a poll that found nothing.
#[inline]
pub(crate) fn refund() {
    BUDGET.with(|b| b.set((b.get() + 1).min(MESSAGE_BUDGET)));
}
