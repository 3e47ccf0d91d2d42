//! Counters of each hosted object class on this node: activations, evictions, handler time,
//! how long output waited behind its commit (the output gate), alarms.
//!
//! One [`ClassStats`] per class, shared by that class's activations (each holds an `Arc`
//! taken once at activation, so a message costs no lookup); counters are relaxed atomics
//! and the histograms are `cairn_storage::latency` histograms, so recording never locks.
//! Labels stay bounded: metrics are per class, never per key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_storage::latency::{Histogram, HistogramSnapshot};
use parking_lot::RwLock;

/// One class's live counters.
#[derive(Default)]
pub(crate) struct ClassStats {
    pub(crate) activations: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) handler_failures: AtomicU64,
    pub(crate) alarms_fired: AtomicU64,
    pub(crate) alarms_retried: AtomicU64,
    pub(crate) alarms_given_up: AtomicU64,
    /// Time inside `handle` / `alarm`, per call.
    pub(crate) handler_time: Histogram,
    /// From a handler's end to its write set being durable, while its output is held.
    pub(crate) gate_hold: Histogram,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of one class's counters ([`crate::Node::object_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectClassStats {
    /// Live activations now.
    pub active: usize,
    /// Activations started (a re-activation after a failure counts too).
    pub activations: u64,
    /// Activations evicted (idle, or handed off to another node).
    pub evictions: u64,
    /// Handler calls that failed (error or panic; the object restarted from storage).
    pub handler_failures: u64,
    /// Alarms delivered to a handler.
    pub alarms_fired: u64,
    /// Failed alarm handlers set again for a retry.
    pub alarms_retried: u64,
    /// Alarms dropped after the last retry failed.
    pub alarms_given_up: u64,
    /// Handler times.
    pub handler_time: HistogramSnapshot,
    /// Output-gate hold times (handler end to durable commit).
    pub gate_hold: HistogramSnapshot,
}

/// Every class's counters, by class name.
#[derive(Default)]
pub(crate) struct ObjectStats {
    classes: RwLock<BTreeMap<&'static str, Arc<ClassStats>>>,
}

impl ObjectStats {
    /// The counters of `class`, created on first use.
    pub(crate) fn class(&self, class: &'static str) -> Arc<ClassStats> {
        if let Some(stats) = self.classes.read().get(class) {
            return Arc::clone(stats);
        }
        Arc::clone(self.classes.write().entry(class).or_default())
    }

    /// Snapshots of every class seen, with `active` filled from `active`.
    pub(crate) fn snapshot(
        &self,
        active: &BTreeMap<String, usize>,
    ) -> BTreeMap<String, ObjectClassStats> {
        let mut out: BTreeMap<String, ObjectClassStats> = self
            .classes
            .read()
            .iter()
            .map(|(class, s)| {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let snapshot = ObjectClassStats {
                    active: 0,
                    activations: get(&s.activations),
                    evictions: get(&s.evictions),
                    handler_failures: get(&s.handler_failures),
                    alarms_fired: get(&s.alarms_fired),
                    alarms_retried: get(&s.alarms_retried),
                    alarms_given_up: get(&s.alarms_given_up),
                    handler_time: s.handler_time.snapshot(),
                    gate_hold: s.gate_hold.snapshot(),
                };
                ((*class).to_owned(), snapshot)
            })
            .collect();
        for (class, n) in active {
            out.entry(class.clone()).or_default().active = *n;
        }
        out
    }
}
