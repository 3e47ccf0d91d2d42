//! A sans-IO hashed timing wheel.
//!
//! This is scheme 6 of Varghese & Lauck, "Hashed and Hierarchical Timing Wheels: Data
//! Structures for the Efficient Implementation of a Timer Facility" (SOSP 1987), the
//! family of structures tokio's `runtime/time/mod.rs` documents (tokio uses the
//! hierarchical scheme 7; we use the simpler hashed one).
//!
//! # Model
//!
//! * Time is a `u64` count of *ticks* since an origin chosen by the caller; one tick is
//!   [`TICK`] (1 ms). The wheel never reads a clock: the caller says what time it is by
//!   calling [`Wheel::advance`].
//! * There are [`SLOTS`] slots. An entry with deadline `d` lives in slot `d % SLOTS` and keeps
//!   its absolute deadline. An entry more than one revolution away simply stays in its slot
//!   while the wheel passes over it ("rounds" in the paper), so any `u64` deadline is correct.
//! * Entries whose deadline has already passed when they are inserted (`d <= elapsed`) go to
//!   an extra *expired* list that every `advance` scans first.
//! * Entries live in a [`slab::Slab`]; each slot holds slab indices, and each entry records
//!   its position in its slot, so insert and cancel are O(1).
//!
//! # Invariants
//!
//! 1. `advance(now)` hands out exactly the entries whose deadline is `<= now`: never one
//!    that is later, and every one that is due, whatever the gap since the previous call.
//!    Within one call they are handed out in `(deadline, insertion order)` order.
//! 2. A [`TimerKey`] is a slab index plus a generation that is never reused, so a stale key
//!    (its entry fired or was cancelled, and the slab index was reused) cancels nothing.
//! 3. `elapsed` only moves forward; entries not in the expired list have a deadline
//!    `> elapsed`.
//!
//! # Cost
//!
//! `insert` and `cancel` are O(1). `advance` visits `min(now - elapsed, SLOTS)` slots and
//! looks at every entry in them (including entries that are rounds away: the price of
//! scheme 6). [`Wheel::next_deadline`] is exact; it remembers its answer, kept exact by
//! `insert` (a min) and forgotten only when the earliest entry leaves, so the pass over the
//! slots it may cost (every timer more than a revolution away: the driver's common case
//! with connection and call timeouts of seconds) is paid once per earliest timer fired or
//! cancelled, not on every driver wake-up.

use slab::Slab;

/// Length of one tick: 1 ms, the resolution promised for Cairn timers (which fire about
/// 1 ms late at best, never early).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Number of slots, a power of two. 512 slots of 1 ms give a 512 ms revolution: most
/// actor timers (call timeouts, retransmits, short `send_after`s) land within one or two
/// revolutions, so few entries are skipped over as "rounds", while the slot array stays
/// small (512 empty `Vec`s, 12 KiB) and an idle [`Wheel::next_deadline`] pass stays cheap.
pub const SLOTS: usize = 512;

/// Index of the list holding entries inserted with a deadline already passed.
const EXPIRED: usize = SLOTS;

/// Identifies one timer in a [`Wheel`]: slab index plus a generation that is never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: usize,
    generation: u64,
}

/// One stored timer.
struct Entry<T> {
    deadline: u64,
    /// Unique per insert; also orders entries with equal deadlines (FIFO).
    generation: u64,
    /// Which list holds this entry: a slot index, or [`EXPIRED`].
    list: usize,
    /// Position of this entry's slab index inside `lists[list]`.
    position: usize,
    value: T,
}

/// A hashed timing wheel holding values of type `T` until their deadline tick.
pub struct Wheel<T> {
    entries: Slab<Entry<T>>,
    /// `SLOTS` slots followed by the expired list; each holds slab indices.
    lists: Vec<Vec<usize>>,
    /// The last tick passed to `advance` (0 initially).
    elapsed: u64,
    /// Next generation to hand out.
    next_generation: u64,
    /// Scratch buffer for `advance`, kept to avoid an allocation per call.
    due: Vec<(u64, u64, usize)>,
    /// The earliest pending deadline, if known (`None`: to be found again). Whenever it is
    /// `Some`, it is exactly the least deadline of the pending entries.
    earliest: std::cell::Cell<Option<u64>>,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("len", &self.len())
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Wheel {
            entries: Slab::new(),
            lists: (0..=SLOTS).map(|_| Vec::new()).collect(),
            elapsed: 0,
            next_generation: 0,
            due: Vec::new(),
            earliest: std::cell::Cell::new(None),
        }
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last tick passed to [`Wheel::advance`].
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Stores `value` until tick `deadline_tick`. A deadline at or before
    /// [`Wheel::elapsed`] fires on the next `advance`.
    pub fn insert(&mut self, deadline_tick: u64, value: T) -> TimerKey {
        let list = if deadline_tick <= self.elapsed {
            EXPIRED
        } else {
            slot_of(deadline_tick)
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let position = self.lists[list].len();
        let index = self.entries.insert(Entry {
            deadline: deadline_tick,
            generation,
            list,
            position,
            value,
        });
        self.lists[list].push(index);
        if let Some(earliest) = self.earliest.get() {
            self.earliest.set(Some(earliest.min(deadline_tick)));
        }
        TimerKey { index, generation }
    }

    /// Removes the entry `key` names and returns its value, or `None` if it already fired,
    /// was cancelled, or `key` is stale.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        match self.entries.get(key.index) {
            Some(entry) if entry.generation == key.generation => Some(self.remove(key.index)),
            _ => None,
        }
    }

    /// Moves the wheel to `now_tick` and calls `fire` with every entry whose deadline is
    /// `<= now_tick`, in `(deadline, insertion)` order. `now_tick` earlier than
    /// [`Wheel::elapsed`] moves nothing backwards; it only fires what is due by then.
    pub fn advance(&mut self, now_tick: u64, fire: &mut impl FnMut(T)) {
        let mut due = std::mem::take(&mut self.due);
        self.collect_due(EXPIRED, now_tick, &mut due);
        if now_tick > self.elapsed {
            let gap = now_tick - self.elapsed;
            if gap >= SLOTS as u64 {
                for slot in 0..SLOTS {
                    self.collect_due(slot, now_tick, &mut due);
                }
            } else {
                for tick in self.elapsed + 1..=now_tick {
                    self.collect_due(slot_of(tick), now_tick, &mut due);
                }
            }
            self.elapsed = now_tick;
        }
        due.sort_unstable();
        for &(_, _, index) in &due {
            let value = self.remove(index);
            fire(value);
        }
        due.clear();
        self.due = due;
    }

    /// The earliest pending deadline, exactly. An entry already due (deadline `<=`
    /// [`Wheel::elapsed`]) reports its own deadline, which is in the past.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        if let Some(earliest) = self.earliest.get() {
            return Some(earliest);
        }
        let earliest = self.find_earliest();
        self.earliest.set(earliest);
        earliest
    }

    /// The earliest pending deadline, found by looking (see [`Wheel::next_deadline`]).
    fn find_earliest(&self) -> Option<u64> {
        let mut earliest = self.lists[EXPIRED]
            .iter()
            .map(|&index| self.entries[index].deadline)
            .min();
        if earliest.is_some() {
            return earliest;
        }
        // Walk one revolution forward. Every entry outside the expired list has a deadline
        // `> elapsed`, so the first tick `t` whose slot holds an entry with deadline `t` is
        // the earliest deadline; entries that are rounds away are remembered as we pass.
        let last = self.elapsed.saturating_add(SLOTS as u64);
        for tick in self.elapsed + 1..=last {
            for &index in &self.lists[slot_of(tick)] {
                let deadline = self.entries[index].deadline;
                if deadline == tick {
                    return Some(tick);
                }
                earliest = Some(earliest.map_or(deadline, |e: u64| e.min(deadline)));
            }
        }
        earliest
    }

    /// Pushes `(deadline, generation, index)` of every due entry of `list` onto `due`.
    fn collect_due(&self, list: usize, now_tick: u64, due: &mut Vec<(u64, u64, usize)>) {
        for &index in &self.lists[list] {
            let entry = &self.entries[index];
            if entry.deadline <= now_tick {
                due.push((entry.deadline, entry.generation, index));
            }
        }
    }

    /// Unlinks the entry at slab `index` from its list and the slab.
    fn remove(&mut self, index: usize) -> T {
        let entry = self.entries.remove(index);
        if self.earliest.get() >= Some(entry.deadline) {
            self.earliest.set(None);
        }
        let list = &mut self.lists[entry.list];
        let removed = list.swap_remove(entry.position);
        assert_eq!(
            removed, index,
            "timing wheel list out of sync with its entry"
        );
        if let Some(&moved) = list.get(entry.position) {
            self.entries[moved].position = entry.position;
        }
        entry.value
    }
}

fn slot_of(tick: u64) -> usize {
    (tick % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marsaglia's xorshift64: enough randomness for property-style tests, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn fired_by(wheel: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut fired = Vec::new();
        wheel.advance(now, &mut |v| fired.push(v));
        fired
    }

    #[test]
    fn fires_at_exactly_its_tick_and_not_before() {
        let mut wheel = Wheel::new();
        wheel.insert(10, 7);
        for now in 0..10 {
            assert!(fired_by(&mut wheel, now).is_empty(), "fired early at {now}");
        }
        assert_eq!(fired_by(&mut wheel, 10), vec![7]);
        assert!(wheel.is_empty());
        assert!(fired_by(&mut wheel, 11).is_empty());
    }

    #[test]
    fn far_future_deadline_fires_at_its_tick_after_several_revolutions() {
        let mut wheel = Wheel::new();
        let deadline = 3 * SLOTS as u64 + 5;
        wheel.insert(deadline, 1);
        // A neighbour in the same slot one revolution earlier must not drag it along.
        wheel.insert(deadline - SLOTS as u64, 2);
        for now in 0..deadline {
            let fired = fired_by(&mut wheel, now);
            if now == deadline - SLOTS as u64 {
                assert_eq!(fired, vec![2]);
            } else {
                assert!(fired.is_empty(), "fired {fired:?} at {now}");
            }
        }
        assert_eq!(fired_by(&mut wheel, deadline), vec![1]);
    }

    #[test]
    fn large_jump_fires_everything_due_and_nothing_later() {
        let mut wheel = Wheel::new();
        wheel.insert(5, 1);
        wheel.insert(5 * SLOTS as u64, 2);
        wheel.insert(5 * SLOTS as u64 + 1, 3);
        assert_eq!(fired_by(&mut wheel, 5 * SLOTS as u64), vec![1, 2]);
        assert_eq!(wheel.len(), 1);
    }

    #[test]
    fn cancel_removes_the_entry() {
        let mut wheel = Wheel::new();
        let a = wheel.insert(4, 1);
        wheel.insert(4, 2);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(fired_by(&mut wheel, 4), vec![2]);
    }

    #[test]
    fn stale_key_after_slot_reuse_cancels_nothing() {
        let mut wheel = Wheel::new();
        let old = wheel.insert(3, 1);
        assert_eq!(fired_by(&mut wheel, 3), vec![1]);
        let new = wheel.insert(3 + SLOTS as u64, 2);
        assert_eq!(
            old.index, new.index,
            "test needs the slab index to be reused"
        );
        assert_eq!(wheel.cancel(old), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.cancel(new), Some(2));
    }

    #[test]
    fn deadline_already_passed_fires_on_next_advance() {
        let mut wheel = Wheel::new();
        assert!(fired_by(&mut wheel, 100).is_empty());
        wheel.insert(40, 1);
        wheel.insert(100, 2);
        assert_eq!(wheel.next_deadline(), Some(40));
        assert_eq!(fired_by(&mut wheel, 100), vec![1, 2]);
    }

    #[test]
    fn random_timers_fire_in_deadline_order_across_advances() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut wheel = Wheel::new();
        // Model: every live (deadline, id).
        let mut live = std::collections::BTreeMap::new();
        let mut keys = Vec::new();
        let mut now = 0u64;
        let mut last_fired = (0u64, 0u32);
        for id in 0..5_000u32 {
            let deadline = now + rng.below(4 * SLOTS as u64);
            keys.push((wheel.insert(deadline, id), deadline, id));
            live.insert((deadline, id), ());
            if rng.below(5) == 0 {
                let (key, deadline, id) = keys.swap_remove(rng.below(keys.len() as u64) as usize);
                assert_eq!(wheel.cancel(key), live.remove(&(deadline, id)).map(|()| id));
                assert_eq!(
                    wheel.next_deadline(),
                    live.keys().next().map(|&(d, _)| d),
                    "after a cancel"
                );
            }
            if rng.below(3) == 0 {
                assert_eq!(wheel.next_deadline(), live.keys().next().map(|&(d, _)| d));
                // Mostly small steps, sometimes a jump over several revolutions.
                let step = if rng.below(20) == 0 {
                    rng.below(3 * SLOTS as u64)
                } else {
                    rng.below(8)
                };
                let previous = now;
                now += step;
                let mut fired = Vec::new();
                wheel.advance(now, &mut |id| fired.push(id));
                let expected: Vec<(u64, u32)> = live
                    .keys()
                    .take_while(|&&(d, _)| d <= now)
                    .copied()
                    .collect();
                for k in &expected {
                    live.remove(k);
                }
                let expected_ids: Vec<u32> = expected.iter().map(|&(_, id)| id).collect();
                assert_eq!(fired, expected_ids, "advance {previous} -> {now}");
                assert_eq!(
                    wheel.next_deadline(),
                    live.keys().next().map(|&(d, _)| d),
                    "after advancing to {now}"
                );
                for &(deadline, id) in &expected {
                    assert!((deadline, id) >= last_fired, "fired out of order");
                    last_fired = (deadline, id);
                }
            }
        }
        assert_eq!(wheel.len(), live.len());
        let mut rest = Vec::new();
        wheel.advance(u64::MAX, &mut |id| rest.push(id));
        assert_eq!(rest, live.keys().map(|&(_, id)| id).collect::<Vec<_>>());
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }
}
