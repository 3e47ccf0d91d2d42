//! Links and monitors made by code outside any process: `main`, tests, a library's API.
//!
//! Erlang's `link/1` and `monitor/2` always act for the calling process. Code that is not a
//! process (a test driving a tree, an operator tool) still needs to watch processes and tie
//! them together, so [`Handle`] offers:
//! - [`Handle::monitor`]: a [`Monitor`] future that resolves exactly once with the exit
//!   reason (at once with `NoProc` for a pid that is already gone, `NoConnection` when its
//!   node is lost), and [`Handle::demonitor`], which removes it and *flushes* it: a `Down`
//!   that fired meanwhile is never observed (Erlang's `demonitor(Ref, [flush, info])`).
//! - [`Handle::link`] / [`Handle::unlink`]: link two processes as if one had called
//!   `Ctx::link` on the other, with the same semantics (an exited pid sends `NoProc`).
//!
//! These are the same monitors and links as in-process ones (one code path in the runtime):
//! the semantics tests of `tests/links.rs` run again for them in `tests/outside.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::exit::{ExitReason, MonitorRef};
use crate::pid::Pid;
use crate::process::Watcher;
use crate::reply::OneShot;
use crate::runtime::Handle;

/// [`Handle::link`] was given two pids of other nodes: a link needs one end here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("neither {0} nor {1} is a process of this node")]
pub struct NotLocal(pub Pid, pub Pid);

/// A monitor held outside any process; see [`Handle::monitor`].
///
/// Resolves once with the monitored process's exit reason. Dropping it removes the monitor
/// (nothing is left behind on the target).
#[must_use = "a monitor does nothing unless awaited or polled"]
pub struct Monitor {
    handle: Handle,
    pid: Pid,
    monitor: MonitorRef,
    slot: Arc<OneShot<ExitReason>>,
    /// The reason was handed out: the monitor fired, exactly once.
    fired: bool,
}

impl Monitor {
    /// The monitored pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The monitor's reference (the one in-process monitors see in `Signal::Down`).
    pub fn monitor_ref(&self) -> MonitorRef {
        self.monitor
    }

    /// The exit reason if the monitor fired and the reason was not taken yet (by this or
    /// by awaiting the monitor): `Some` at most once.
    pub fn try_down(&mut self) -> Option<ExitReason> {
        if self.fired {
            return None;
        }
        let reason = self.slot.try_take();
        self.fired = reason.is_some();
        reason
    }
}

impl Future for Monitor {
    type Output = ExitReason;

    /// Ready once with the reason; pending forever after that (a monitor fires once).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitReason> {
        if self.fired {
            return Poll::Pending;
        }
        match self.slot.poll_take(cx) {
            Poll::Ready(Some(reason)) => {
                self.fired = true;
                Poll::Ready(reason)
            }
            // The exchange ended without a reason: the runtime is shutting down and the
            // target's record went away with it; there is no exit to report.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if !self.fired {
            self.handle.remove_monitor(self.pid, self.monitor);
        }
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Monitor({}, {:?})", self.pid, self.monitor)
    }
}

impl Handle {
    /// Monitors `pid` from outside any process: the returned [`Monitor`] resolves exactly
    /// once with `pid`'s exit reason — at once with `NoProc` if it is already gone, with
    /// `NoConnection` if it is on another node that is (or becomes) unreachable.
    ///
    /// ```
    /// use cairn_scheduler::{Ctx, ExitReason, Runtime};
    ///
    /// let rt = Runtime::builder().workers(1).build().unwrap();
    /// let worker = rt.spawn(|mut ctx: Ctx<()>| async move { ctx.recv().await; });
    /// let down = rt.monitor(worker.pid());
    /// worker.try_send(()).unwrap();
    /// assert_eq!(rt.block_on(down), ExitReason::Normal);
    /// ```
    pub fn monitor(&self, pid: Pid) -> Monitor {
        let slot = OneShot::new();
        let monitor = self.add_monitor(Watcher::External(slot.clone()), pid);
        Monitor {
            handle: self.clone(),
            pid,
            monitor,
            slot,
            fired: false,
        }
    }

    /// Removes `monitor` and flushes it: whatever happens to the process afterwards, and
    /// even if the monitor fired a moment ago, no exit reason is observed through it.
    /// Returns whether it was still active (false if it had fired already), like Erlang's
    /// `demonitor(Ref, [flush, info])`.
    pub fn demonitor(&self, mut monitor: Monitor) -> bool {
        // Marked as handled so its drop does not look the target up a second time.
        monitor.fired = true;
        self.remove_monitor(monitor.pid, monitor.monitor)
    }

    /// Links `a` and `b` from outside both, exactly as if `a` had called `Ctx::link(b)`:
    /// an abnormal exit of either kills the other unless it traps exits; if either is
    /// already gone, the other gets an exit signal with `NoProc`. At least one of them must
    /// be a process of this node (the other may be remote).
    ///
    /// ```
    /// use cairn_scheduler::{Ctx, ExitReason, Runtime};
    ///
    /// let rt = Runtime::builder().workers(1).build().unwrap();
    /// let a = rt.spawn(|mut ctx: Ctx<()>| async move { ctx.recv().await; ExitReason::Error("boom".into()) });
    /// let b = rt.spawn(|mut ctx: Ctx<()>| async move { ctx.recv().await; });
    /// rt.link(a.pid(), b.pid()).unwrap();
    /// let b_down = rt.monitor(b.pid());
    /// a.try_send(()).unwrap();
    /// assert_eq!(rt.block_on(b_down), ExitReason::Error("boom".into()));
    /// ```
    pub fn link(&self, a: Pid, b: Pid) -> Result<(), NotLocal> {
        let here = self.node();
        match (a.node() == here, b.node() == here) {
            (true, _) => self.link_pair(a, b),
            (false, true) => self.link_pair(b, a),
            (false, false) => return Err(NotLocal(a, b)),
        }
        Ok(())
    }

    /// Removes the link between `a` and `b` (both directions), as `Ctx::unlink` would.
    pub fn unlink(&self, a: Pid, b: Pid) -> Result<(), NotLocal> {
        let here = self.node();
        match (a.node() == here, b.node() == here) {
            (true, _) => self.unlink_pair(a, b),
            (false, true) => self.unlink_pair(b, a),
            (false, false) => return Err(NotLocal(a, b)),
        }
        Ok(())
    }
}
