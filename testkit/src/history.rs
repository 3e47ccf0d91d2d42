//! A history checker for counters under faults: callers record every operation they
//! invoke (an increment or a read of one key) and how it ended (answered with a value,
//! failed, timed out, or never ended), with monotonic timestamps; [`History::check`] then
//! compares the history with each counter's final value.
//!
//! # What it checks (per key)
//! - **No acknowledged increment is lost**: the final value is at least every value any
//!   operation was answered with, and at least the sum of the acknowledged increments.
//! - **No value exceeds the attempts**: every answered value is at most the sum of the
//!   increments invoked before that answer arrived, and the final value at most the sum of
//!   all increments invoked (a failed or timed-out increment may have happened, never twice;
//!   a refused one — failed with an error saying it was never delivered — did not happen).
//! - **No stale answer**: an operation that began after another one was answered with `v`
//!   answers at least `v` (a read) or at least `v + n` (an increment of `n`) — the
//!   real-time order a single activation per key gives.
//! - **No increment counted twice**: two acknowledged increments never cover the same
//!   totals (an increment of `n` answered `r` covers `r-n+1..=r`); two copies of a counter
//!   acknowledging writes side by side show up here.
//!
//! # Invariants
//! Timestamps come from [`Instant`] (monotonic), taken by the recorder itself unless a test
//! gives them ([`History::record`]), so events of one process compare. A failed or
//! timed-out operation is *indeterminate*: it counts as attempted, never as acknowledged.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Instant;

/// An operation on one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Adds `n` (> 0) and answers with the new total.
    Add(u64),
    /// Answers with the total.
    Read,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this value.
    Ok(u64),
    /// Failed with an error (it may or may not have happened).
    Fail,
    /// No answer within its timeout (it may or may not have happened).
    Timeout,
    /// Failed with an error that says the operation was never delivered (such as
    /// `cairn::Retry::Safe`): it did not happen, so it counts as no attempt at all.
    Refused,
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct Record<K> {
    pub key: K,
    pub op: Op,
    pub invoked: Instant,
    /// When and how it ended; `None` if it never did (still pending at the check).
    pub done: Option<(Instant, Outcome)>,
}

impl<K> Record<K> {
    fn answer(&self) -> Option<(Instant, u64)> {
        match self.done {
            Some((at, Outcome::Ok(v))) => Some((at, v)),
            _ => None,
        }
    }

    /// What the operation may have added: nothing for a read or a refused increment.
    fn added(&self) -> u64 {
        match (self.op, self.done) {
            (_, Some((_, Outcome::Refused))) | (Op::Read, _) => 0,
            (Op::Add(n), _) => n,
        }
    }
}

/// The handle of an invoked operation, to record its end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(usize);

/// A violation of one of the checks in the module doc.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{key}: final value {last} is below {acked}, which was acknowledged (a lost write)")]
    Lost { key: String, last: u64, acked: u64 },
    #[error(
        "{key}: final value {last} is below {sum}, the sum of the acknowledged increments (a lost write)"
    )]
    LostSum { key: String, last: u64, sum: u64 },
    #[error("{key}: {what} {value} exceeds {attempted}, the increments attempted by then")]
    AboveAttempts {
        key: String,
        what: &'static str,
        value: u64,
        attempted: u64,
    },
    #[error("{key}: {op:?} answered {value}, but {floor} was required: it began after an answer of {earlier} (a stale answer)")]
    Stale {
        key: String,
        op: Op,
        value: u64,
        earlier: u64,
        floor: u64,
    },
    #[error("{key}: two acknowledged increments both cover the total {total} (counted twice, or two live copies)")]
    CountedTwice { key: String, total: u64 },
    #[error("{key}: no final value was given, but the history has operations on it")]
    NoFinal { key: String },
}

/// Every violation found (at least one).
#[derive(Debug, thiserror::Error)]
#[error("{} history violation(s); the first: {}", .0.len(), .0[0])]
pub struct Violations(pub Vec<Violation>);

/// What a passing check saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub keys: usize,
    pub ops: usize,
    /// Answered operations.
    pub ok: usize,
    pub failed: usize,
    pub timed_out: usize,
    /// Refused before delivery (they did not happen).
    pub refused: usize,
    /// Never ended.
    pub pending: usize,
}

/// A thread-safe history of counter operations (see the module doc).
#[derive(Debug)]
pub struct History<K> {
    records: Mutex<Vec<Record<K>>>,
}

impl<K> Default for History<K> {
    fn default() -> Self {
        History {
            records: Mutex::new(Vec::new()),
        }
    }
}

impl<K: Ord + Clone + Debug> History<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `op` on `key` is being invoked now.
    pub fn invoke(&self, key: K, op: Op) -> OpId {
        let mut records = self.records.lock().unwrap();
        records.push(Record {
            key,
            op,
            invoked: Instant::now(),
            done: None,
        });
        OpId(records.len() - 1)
    }

    /// Records that operation `id` ended now with `outcome`.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap();
        let record = &mut records[id.0];
        assert!(record.done.is_none(), "operation {id:?} completed twice");
        record.done = Some((now, outcome));
    }

    /// Records a whole operation with given timestamps (tests of the checker itself).
    pub fn record(&self, record: Record<K>) {
        self.records.lock().unwrap().push(record);
    }

    /// A copy of the history so far.
    pub fn records(&self) -> Vec<Record<K>> {
        self.records.lock().unwrap().clone()
    }

    /// The largest value any operation on `key` was answered with so far.
    pub fn max_answer(&self, key: &K) -> Option<u64> {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .filter(|r| &r.key == key)
            .filter_map(|r| r.answer().map(|(_, v)| v))
            .max()
    }

    /// Checks the history against each key's final value (read after every operation
    /// ended or was abandoned). Keys in `last` without operations are checked too.
    pub fn check(&self, last: &BTreeMap<K, u64>) -> Result<Summary, Violations> {
        let records = self.records.lock().unwrap();
        let mut by_key: BTreeMap<&K, Vec<&Record<K>>> = BTreeMap::new();
        for r in records.iter() {
            by_key.entry(&r.key).or_default().push(r);
        }
        for k in last.keys() {
            by_key.entry(k).or_default();
        }
        let mut summary = Summary {
            keys: by_key.len(),
            ops: records.len(),
            ..Summary::default()
        };
        for r in records.iter() {
            match r.done {
                Some((_, Outcome::Ok(_))) => summary.ok += 1,
                Some((_, Outcome::Fail)) => summary.failed += 1,
                Some((_, Outcome::Timeout)) => summary.timed_out += 1,
                Some((_, Outcome::Refused)) => summary.refused += 1,
                None => summary.pending += 1,
            }
        }
        let mut violations = Vec::new();
        for (key, ops) in by_key {
            let name = format!("{key:?}");
            match last.get(key) {
                Some(&v) => check_key(&name, &ops, v, &mut violations),
                None if ops.is_empty() => {}
                None => violations.push(Violation::NoFinal { key: name }),
            }
        }
        if violations.is_empty() {
            Ok(summary)
        } else {
            Err(Violations(violations))
        }
    }
}

/// The checks of the module doc for one key's operations.
fn check_key<K>(key: &str, ops: &[&Record<K>], last: u64, out: &mut Vec<Violation>) {
    let answered: Vec<(&Record<K>, Instant, u64)> = ops
        .iter()
        .filter_map(|r| r.answer().map(|(at, v)| (*r, at, v)))
        .collect();

    // Lost writes: the final value covers every answer and every acknowledged increment.
    if let Some(&(_, _, acked)) = answered.iter().max_by_key(|a| a.2) {
        if last < acked {
            out.push(Violation::Lost {
                key: key.to_owned(),
                last,
                acked,
            });
        }
    }
    let acked_sum: u64 = answered.iter().map(|(r, _, _)| r.added()).sum();
    if last < acked_sum {
        out.push(Violation::LostSum {
            key: key.to_owned(),
            last,
            sum: acked_sum,
        });
    }

    // Attempts: increments invoked, by time, with running sums.
    let mut adds: Vec<(Instant, u64)> = ops
        .iter()
        .filter(|r| r.added() > 0)
        .map(|r| (r.invoked, r.added()))
        .collect();
    adds.sort_by_key(|a| a.0);
    let mut running = Vec::with_capacity(adds.len());
    let mut sum = 0;
    for &(_, n) in &adds {
        sum += n;
        running.push(sum);
    }
    let attempted_by = |at: Instant| {
        let count = adds.partition_point(|a| a.0 <= at);
        if count == 0 {
            0
        } else {
            running[count - 1]
        }
    };
    for &(_, at, value) in &answered {
        let attempted = attempted_by(at);
        if value > attempted {
            out.push(Violation::AboveAttempts {
                key: key.to_owned(),
                what: "an answer",
                value,
                attempted,
            });
        }
    }
    if last > sum {
        out.push(Violation::AboveAttempts {
            key: key.to_owned(),
            what: "the final value",
            value: last,
            attempted: sum,
        });
    }

    // Staleness: sweep operations in invocation order over answers in completion order.
    let mut by_done: Vec<(Instant, u64)> = answered.iter().map(|&(_, at, v)| (at, v)).collect();
    by_done.sort_by_key(|a| a.0);
    let mut by_invoke: Vec<&(&Record<K>, Instant, u64)> = answered.iter().collect();
    by_invoke.sort_by_key(|a| a.0.invoked);
    let (mut next, mut earlier) = (0, None::<u64>);
    for &&(r, _, value) in &by_invoke {
        while next < by_done.len() && by_done[next].0 < r.invoked {
            earlier = earlier.max(Some(by_done[next].1));
            next += 1;
        }
        if let Some(earlier) = earlier {
            let floor = earlier + r.added();
            if value < floor {
                out.push(Violation::Stale {
                    key: key.to_owned(),
                    op: r.op,
                    value,
                    earlier,
                    floor,
                });
            }
        }
    }

    // Counted twice: the totals covered by acknowledged increments are disjoint.
    let mut covered: Vec<(u64, u64)> = answered
        .iter()
        .filter(|(r, _, _)| r.added() > 0)
        .map(|(r, _, v)| (v.saturating_sub(r.added()), *v))
        .collect();
    covered.sort();
    for pair in covered.windows(2) {
        let ((_, a_end), (_, b_end)) = (pair[0], pair[1]);
        if pair[1].0 < a_end {
            out.push(Violation::CountedTwice {
                key: key.to_owned(),
                total: a_end.min(b_end),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One operation: `(op, invoked ms, (done ms, outcome) if it ended)`.
    type Spec = (Op, u64, Option<(u64, Outcome)>);

    /// A history of one key built from specs.
    fn history(ops: &[Spec]) -> History<&'static str> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let h = History::new();
        for &(op, invoked, done) in ops {
            h.record(Record {
                key: "c",
                op,
                invoked: at(invoked),
                done: done.map(|(ms, o)| (at(ms), o)),
            });
        }
        h
    }

    fn check(h: &History<&'static str>, last: u64) -> Result<Summary, Vec<Violation>> {
        h.check(&BTreeMap::from([("c", last)])).map_err(|v| v.0)
    }

    use Op::{Add, Read};
    use Outcome::{Fail, Ok as Answer, Refused, Timeout};

    #[test]
    fn a_sequential_history_with_indeterminate_increments_passes() {
        let h = history(&[
            (Add(1), 0, Some((1, Answer(1)))),
            (Add(1), 2, Some((3, Timeout))),
            (Read, 4, Some((5, Answer(2)))),
            (Add(1), 6, Some((7, Fail))),
            (Add(1), 8, Some((9, Answer(3)))),
            (Add(1), 10, None),
        ]);
        // The timed-out, failed and pending increments each may or may not have happened.
        for last in [3, 4] {
            let s = check(&h, last).unwrap();
            assert_eq!(
                (s.ok, s.failed, s.timed_out, s.pending),
                (3, 1, 1, 1),
                "{s:?}"
            );
        }
    }

    #[test]
    fn concurrent_increments_may_answer_in_either_order() {
        let h = history(&[
            (Add(1), 0, Some((10, Answer(2)))),
            (Add(1), 1, Some((5, Answer(1)))),
            (Read, 2, Some((3, Answer(0)))),
        ]);
        check(&h, 2).unwrap();
    }

    #[test]
    fn a_lost_acknowledged_increment_fails() {
        let h = history(&[
            (Add(1), 0, Some((1, Answer(1)))),
            (Add(1), 2, Some((3, Answer(2)))),
        ]);
        let v = check(&h, 1).unwrap_err();
        assert!(
            v.iter()
                .any(|v| matches!(v, Violation::Lost { acked: 2, .. })),
            "{v:?}"
        );
    }

    #[test]
    fn fewer_than_the_acknowledged_increments_fails_even_if_answers_were_low() {
        // Two acknowledged increments that both answered 1 (two copies): the final 1 covers
        // the largest answer but not both increments.
        let h = history(&[
            (Add(1), 0, Some((5, Answer(1)))),
            (Add(1), 1, Some((6, Answer(1)))),
        ]);
        let v = check(&h, 1).unwrap_err();
        assert!(
            v.iter()
                .any(|v| matches!(v, Violation::LostSum { sum: 2, .. })),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|v| matches!(v, Violation::CountedTwice { total: 1, .. })),
            "{v:?}"
        );
    }

    #[test]
    fn a_final_value_above_the_attempts_fails() {
        let h = history(&[(Add(1), 0, Some((1, Timeout))), (Add(1), 2, None)]);
        check(&h, 2).unwrap();
        let v = check(&h, 3).unwrap_err();
        assert_eq!(
            v,
            vec![Violation::AboveAttempts {
                key: "\"c\"".into(),
                what: "the final value",
                value: 3,
                attempted: 2
            }]
        );
    }

    /// An increment refused before delivery did not happen: a final value that counts it
    /// is above the attempts, where the same increment timed out would be allowed.
    #[test]
    fn a_refused_increment_that_happened_anyway_fails() {
        let h = history(&[
            (Add(1), 0, Some((1, Refused))),
            (Add(1), 2, Some((3, Answer(1)))),
        ]);
        assert_eq!(check(&h, 1).unwrap().refused, 1);
        let v = check(&h, 2).unwrap_err();
        assert_eq!(
            v,
            vec![Violation::AboveAttempts {
                key: "\"c\"".into(),
                what: "the final value",
                value: 2,
                attempted: 1
            }]
        );
        let h = history(&[
            (Add(1), 0, Some((1, Timeout))),
            (Add(1), 2, Some((3, Answer(2)))),
        ]);
        check(&h, 2).unwrap();
    }

    #[test]
    fn an_answer_above_the_increments_invoked_by_then_fails() {
        // The read answered 2 at 5 ms, but the second increment was only invoked at 6 ms.
        let h = history(&[
            (Add(1), 0, Some((1, Answer(1)))),
            (Read, 4, Some((5, Answer(2)))),
            (Add(1), 6, Some((7, Answer(2)))),
        ]);
        let v = check(&h, 2).unwrap_err();
        assert!(
            v.iter().any(|v| matches!(
                v,
                Violation::AboveAttempts {
                    what: "an answer",
                    value: 2,
                    attempted: 1,
                    ..
                }
            )),
            "{v:?}"
        );
    }

    #[test]
    fn a_read_below_an_earlier_completed_write_fails() {
        let h = history(&[
            (Add(1), 0, Some((1, Answer(1)))),
            (Add(1), 2, Some((3, Answer(2)))),
            (Read, 4, Some((5, Answer(1)))),
        ]);
        let v = check(&h, 2).unwrap_err();
        assert_eq!(
            v,
            vec![Violation::Stale {
                key: "\"c\"".into(),
                op: Read,
                value: 1,
                earlier: 2,
                floor: 2
            }]
        );
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_miss_it() {
        // The read began (at 2) before the increment answered (at 3).
        let h = history(&[
            (Add(1), 0, Some((3, Answer(1)))),
            (Read, 2, Some((4, Answer(0)))),
        ]);
        check(&h, 1).unwrap();
    }

    #[test]
    fn an_increment_that_does_not_see_an_earlier_answer_fails() {
        // A second copy of the counter (still at 0) acknowledges an increment after the
        // first copy answered 1.
        let h = history(&[
            (Add(1), 0, Some((1, Answer(1)))),
            (Add(1), 2, Some((3, Answer(1)))),
        ]);
        let v = check(&h, 2).unwrap_err();
        assert!(
            v.iter().any(|v| matches!(
                v,
                Violation::Stale {
                    op: Add(1),
                    floor: 2,
                    ..
                }
            )),
            "{v:?}"
        );
    }

    #[test]
    fn keys_are_checked_apart_and_a_missing_final_value_fails() {
        let h = History::new();
        let a = h.invoke("a", Add(1));
        h.complete(a, Answer(1));
        let b = h.invoke("b", Add(1));
        h.complete(b, Answer(1));
        assert_eq!(h.max_answer(&"a"), Some(1));
        let v = h.check(&BTreeMap::from([("a", 1)])).unwrap_err().0;
        assert_eq!(
            v,
            vec![Violation::NoFinal {
                key: "\"b\"".into()
            }]
        );
        let s = h.check(&BTreeMap::from([("a", 1), ("b", 1)])).unwrap();
        assert_eq!((s.keys, s.ops, s.ok), (2, 2, 2));
    }
}
