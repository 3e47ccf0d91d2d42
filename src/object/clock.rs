//! The wall clock alarms are read against: the system clock, or (behind the `testing`
//! feature) a manual clock a test moves by hand.
//!
//! Alarms are wall-clock instants (`SystemTime`), so the alarm process asks this clock what
//! time it is, and a failing alarm's retry is set relative to it. A manual clock lets a test
//! move time forward and backward without sleeping: every move wakes the alarm processes of
//! the nodes using the clock (their listeners), which rescan storage at once. The manual
//! clock also counts how often it was read, so a test can wait until a scan that began after
//! a move has finished (`WallClock::reads`, with the `testing` feature).
//!
//! Invariant: [`WallClock::now`] of the system clock is `SystemTime::now()`; nothing else in
//! the object layer reads the wall clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

/// The wall clock of a node's alarms. `WallClock::default()` is the system clock.
#[derive(Clone, Default)]
pub struct WallClock {
    manual: Option<Arc<Manual>>,
}

/// A clock that only moves when told to.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
struct Manual {
    now: Mutex<SystemTime>,
    reads: AtomicU64,
    /// Called after every move (the alarm processes' wake-ups).
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl WallClock {
    /// The system clock.
    pub fn system() -> WallClock {
        WallClock::default()
    }

    /// A manual clock showing `start` until [`set`](Self::set) or
    /// [`advance`](Self::advance) moves it.
    #[cfg(feature = "testing")]
    pub fn manual(start: SystemTime) -> WallClock {
        WallClock {
            manual: Some(Arc::new(Manual {
                now: Mutex::new(start),
                reads: AtomicU64::new(0),
                listeners: Mutex::new(Vec::new()),
            })),
        }
    }

    /// Sets a manual clock to `to` (forward or backward) and wakes the alarm processes
    /// using it. Panics on the system clock, which no test can move.
    #[cfg(feature = "testing")]
    pub fn set(&self, to: SystemTime) {
        let manual = self
            .manual
            .as_ref()
            .expect("only a manual clock can be set");
        *manual.now.lock() = to;
        for wake in manual.listeners.lock().iter() {
            wake();
        }
    }

    /// Moves a manual clock forward by `by` (see [`set`](Self::set)).
    #[cfg(feature = "testing")]
    pub fn advance(&self, by: std::time::Duration) {
        self.set(self.now() + by);
    }

    /// How often a manual clock was read so far (0 for the system clock). The alarm process
    /// reads it once before delivering due alarms and once after, so three reads after a
    /// move mean a whole scan ran at the new time, unless a metrics scrape (which reads it
    /// once for `cairn_alarms_due`) ran meanwhile.
    #[cfg(feature = "testing")]
    pub fn reads(&self) -> u64 {
        self.manual
            .as_ref()
            .map_or(0, |m| m.reads.load(Ordering::SeqCst))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(manual) => {
                let now = *manual.now.lock();
                manual.reads.fetch_add(1, Ordering::SeqCst);
                now
            }
        }
    }

    /// Calls `wake` whenever a manual clock moves (never for the system clock).
    pub(crate) fn on_change(&self, wake: impl Fn() + Send + Sync + 'static) {
        if let Some(manual) = &self.manual {
            manual.listeners.lock().push(Box::new(wake));
        }
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("WallClock::System"),
            Some(m) => write!(f, "WallClock::Manual({:?})", *m.now.lock()),
        }
    }
}
