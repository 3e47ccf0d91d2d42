//! A fixed-bucket latency histogram of atomics, for the commit path (see [`Stats`]) and the
//! layers above (objects' handler times), which export it as Prometheus histograms.
//!
//! The writer thread records one commit at a time, so a record is a few relaxed atomic adds
//! on lines nobody else writes; readers (a metrics scrape) sum the buckets. Buckets are
//! powers of two of microseconds, from 16 µs to ~4.2 s, plus an overflow bucket: enough to
//! tell a page-cache commit (tens of µs) from an `fdatasync` on a disk (ms) from a stall.
//!
//! [`Stats`]: crate::Stats

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many finite buckets a [`Histogram`] has.
pub const BUCKETS: usize = 19;

/// The upper bound of finite bucket `i`, in microseconds: `16 << i`.
pub fn bucket_bound_us(i: usize) -> u64 {
    16 << i
}

/// The bucket counts and sum of a [`Histogram`], non-cumulative; the last slot counts the
/// observations above every finite bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (`counts[i]` for `(bound(i-1), bound(i)]`, the last one over).
    pub counts: [u64; BUCKETS + 1],
    /// The sum of every observation, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The histogram itself: record from any thread (relaxed atomic adds), snapshot from any.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `d`.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (0..BUCKETS)
            .find(|&i| us <= bucket_bound_us(i))
            .unwrap_or(BUCKETS);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut out = HistogramSnapshot {
            sum_us: self.sum_us.load(Ordering::Relaxed),
            ..HistogramSnapshot::default()
        };
        for (o, c) in out.counts.iter_mut().zip(&self.counts) {
            *o = c.load(Ordering::Relaxed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_bound() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10)); // <= 16
        h.record(Duration::from_micros(16)); // <= 16
        h.record(Duration::from_micros(17)); // <= 32
        h.record(Duration::from_secs(100)); // over every bound
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[BUCKETS], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 10 + 16 + 17 + 100_000_000);
    }
}
