//! Counters of each hosted object class on this node: activations, evictions, handler time,
//! how long output waited behind its commit (the output gate), alarms.
//!
//! One [`ClassStats`] per class, shared by that class's activations (each holds an `Arc`
//! taken once at activation, so a message costs no lookup); counters are relaxed atomics
//! and the histograms are `cairn_storage::latency` histograms, so recording never locks.
//! Labels stay bounded: metrics are per class, never per key.
//!
//! The one per-key figure, the hottest objects by message rate ([`HotObjects`], shown on the
//! dashboard and in `status.json`, never in metrics), is sampled: an activation counts its
//! messages in a plain field of its own and reports every [`HOT_STRIDE`]th to a small
//! bounded table, so the message path pays one increment and one branch per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cairn_storage::latency::{Histogram, HistogramSnapshot};
use parking_lot::{Mutex, RwLock};

/// One class's live counters.
#[derive(Default)]
pub(crate) struct ClassStats {
    pub(crate) activations: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) handler_failures: AtomicU64,
    pub(crate) write_sets_failed: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
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
    /// Write sets whose commit failed or timed out: each one handler's writes, whose held
    /// output was discarded (its caller got `NoReply`). A storage error discards the writes;
    /// through a shard that lost its leader they may still have been applied (the outcome is
    /// unknown), so a one-way send's effect is lost or kept, never doubled.
    pub write_sets_failed: u64,
    /// Messages this node took for the class's objects (a router, from another node; a
    /// deposed activation, to pass on) and then dropped because no owner could be reached
    /// within `SHARD_WAIT` (or the nodes disagreed about it): a one-way send's effect is
    /// lost, as a send is at-most-once; a call's caller gets `NoReply`. Never silent: each is
    /// logged and counted here.
    pub undeliverable: u64,
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

/// Every class's counters, by class name, and the hottest objects.
#[derive(Default)]
pub(crate) struct ObjectStats {
    classes: RwLock<BTreeMap<&'static str, Arc<ClassStats>>>,
    pub(crate) hot: HotObjects,
}

/// Messages an activation handles between two reports to [`HotObjects`] (a power of two).
pub(crate) const HOT_STRIDE: u64 = 64;
/// Objects [`HotObjects`] keeps (the hottest of them are shown): a report for an object not
/// in the table replaces the coldest one, so the table never grows past this.
const HOT_TRACKED: usize = 64;
/// The time constant of the rates, in seconds: an object's rate is its messages averaged
/// over about the last this many seconds (an exponentially decaying count).
const HOT_TAU_SECS: f64 = 10.0;

/// The objects handling the most messages lately on this node (see the module doc).
pub(crate) struct HotObjects {
    epoch: Instant,
    table: Mutex<Vec<HotEntry>>,
}

impl Default for HotObjects {
    fn default() -> Self {
        HotObjects {
            epoch: Instant::now(),
            table: Mutex::new(Vec::with_capacity(HOT_TRACKED)),
        }
    }
}

struct HotEntry {
    class: &'static str,
    key: Arc<str>,
    region: Option<Arc<str>>,
    /// Messages, decayed with [`HOT_TAU_SECS`], as of `at`.
    score: f64,
    /// Seconds since the table's epoch.
    at: f64,
    /// Messages reported since the object entered the table.
    messages: u64,
}

impl HotEntry {
    fn score_at(&self, now: f64) -> f64 {
        self.score * (-(now - self.at).max(0.0) / HOT_TAU_SECS).exp()
    }
}

/// One of the hottest objects ([`HotObjects::top`]; read by the status page).
#[cfg(any(feature = "http", test))]
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HotObject {
    pub(crate) class: &'static str,
    pub(crate) key: Arc<str>,
    pub(crate) region: Option<Arc<str>>,
    /// Messages per second, averaged over about the last [`HOT_TAU_SECS`].
    pub(crate) rate: f64,
    /// Messages counted since it entered the table (a multiple of [`HOT_STRIDE`]).
    pub(crate) messages: u64,
}

impl HotObjects {
    /// `messages` more handled by `class`/`key` (in `region`).
    pub(crate) fn report(
        &self,
        class: &'static str,
        key: &Arc<str>,
        region: &Option<Arc<str>>,
        messages: u64,
    ) {
        let now = self.epoch.elapsed().as_secs_f64();
        let mut table = self.table.lock();
        let same = |e: &HotEntry| {
            e.class == class && (Arc::ptr_eq(&e.key, key) || e.key == *key) && e.region == *region
        };
        if let Some(e) = table.iter_mut().find(|e| same(e)) {
            e.score = e.score_at(now) + messages as f64;
            e.at = now;
            e.messages += messages;
            return;
        }
        let entry = HotEntry {
            class,
            key: Arc::clone(key),
            region: region.clone(),
            score: messages as f64,
            at: now,
            messages,
        };
        if table.len() < HOT_TRACKED {
            table.push(entry);
        } else if let Some(coldest) = (0..table.len())
            .min_by(|&a, &b| table[a].score_at(now).total_cmp(&table[b].score_at(now)))
        {
            table[coldest] = entry;
        }
    }

    /// The `n` hottest objects, hottest first.
    #[cfg(any(feature = "http", test))]
    pub(crate) fn top(&self, n: usize) -> Vec<HotObject> {
        let now = self.epoch.elapsed().as_secs_f64();
        let mut hot: Vec<HotObject> = self
            .table
            .lock()
            .iter()
            .map(|e| HotObject {
                class: e.class,
                key: Arc::clone(&e.key),
                region: e.region.clone(),
                rate: e.score_at(now) / HOT_TAU_SECS,
                messages: e.messages,
            })
            .collect();
        hot.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        hot.truncate(n);
        hot
    }
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
                    write_sets_failed: get(&s.write_sets_failed),
                    undeliverable: get(&s.undeliverable),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_table_is_bounded_and_keeps_the_busiest() {
        let hot = HotObjects::default();
        let busy: Arc<str> = Arc::from("busy");
        for _ in 0..50 {
            hot.report("c", &busy, &None, HOT_STRIDE);
        }
        // Many more objects than the table holds, each reported once.
        for i in 0..(3 * HOT_TRACKED) {
            hot.report("c", &Arc::from(format!("k{i}")), &None, HOT_STRIDE);
        }
        assert_eq!(hot.table.lock().len(), HOT_TRACKED);
        let top = hot.top(20);
        assert_eq!(top.len(), 20);
        assert_eq!(&*top[0].key, "busy");
        assert_eq!(top[0].messages, 50 * HOT_STRIDE);
        assert!(top[0].rate > 10.0 * top[1].rate, "{top:?}");
        // The same key in another class or region is another object.
        hot.report("d", &busy, &None, 2 * HOT_STRIDE);
        hot.report("c", &busy, &Some(Arc::from("eu")), 2 * HOT_STRIDE);
        let mut busy_ones: Vec<_> = hot
            .top(HOT_TRACKED)
            .into_iter()
            .filter(|h| &*h.key == "busy")
            .collect();
        busy_ones.sort_by_key(|h| h.messages);
        assert_eq!(busy_ones.len(), 3);
        assert_eq!(busy_ones[2].messages, 50 * HOT_STRIDE);
    }
}
