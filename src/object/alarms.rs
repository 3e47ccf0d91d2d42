//! Durable alarms: the node-wide alarm process, delivery to objects, and retries.
//!
//! `ctx.storage().set_alarm(at)` writes the alarm in the handler's write set. A node-wide alarm
//! process sleeps until the earliest committed alarm, then delivers it to its object (which
//! activates it if it was evicted, also after a node restart). The alarm row is cleared in the
//! same write set as [`Object::alarm`]'s writes (at least once: a crash before that commit
//! delivers it again); a failing alarm is retried after [`ALARM_RETRY_BASE`] doubling, at
//! most [`ALARM_MAX_RETRIES`] times (both configurable). The retry count lives in the
//! activation: an object evicted between retries starts counting again. Alarms are delivered
//! only to objects this node owns (an alarm of an object owned elsewhere waits in storage).
//!
//! With replicated shards the alarm row is part of the object's replicated state: it is
//! proposed with the handler's write set and applied on every replica (and carried by
//! snapshots), so every replica's alarm process sees it, but only the node *serving* the
//! object's shard delivers it; the others look again every [`ALARM_DUE_POLL`]. When a node
//! starts serving a shard (failover, move) its alarm process rescans at once. An alarm's row
//! name is the object's name, `class/key` or `class@region/key` (see `reference`).
//!
//! A named process's alarm (its name's keyspace, see [`crate::durable`]) arrives as an
//! ordinary message, built by the function the process gave
//! [`Durable::receive_alarms_as`](crate::durable::Durable::receive_alarms_as). Until the
//! process running under that name has asked, a due alarm waits in storage; a full mailbox
//! delays it to the next scan. The process clears the alarm itself once handled.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use cairn_scheduler::{ActorRef, Ctx, Handle, Pid, SendError, SpawnOptions};

use super::activation::Lookup;
use super::reference::parse_name;
use super::routing::Route;
use super::{Object, ObjectCtx, ObjectMsg, ObjectRef, Objects, ObjectsConfig};

/// First retry delay of a failing alarm; it doubles on every further failure.
pub const ALARM_RETRY_BASE: Duration = Duration::from_secs(2);
/// Retries of a failing alarm before it is dropped (logged as an error).
pub const ALARM_MAX_RETRIES: u32 = 6;
/// How often the alarm process rescans storage even without a wake-up: bounds the delay of
/// alarms written by plain named processes, which commit on their own and do not notify it.
pub const ALARM_RESCAN: Duration = Duration::from_secs(1);
/// How often the alarm process looks again while the earliest stored alarm is already due
/// but was delivered or is not deliverable here: a commit or a leadership change wakes it
/// sooner; this bounds its wake-ups to 20 a second instead of one per millisecond.
pub const ALARM_DUE_POLL: Duration = Duration::from_millis(50);

/// The most due alarms `Objects::alarms_due_now` counts (one index step each, in one LMDB
/// read transaction): a metrics scrape stays cheap even when far more are due. More than
/// this many due at once means the alarm process is far behind, which the capped figure
/// already shows.
pub const ALARMS_DUE_COUNT_LIMIT: u64 = 100_000;

/// Delivers a due alarm of one class: `(objects, key, region, at) -> delivered`.
pub(super) type AlarmDispatch =
    Arc<dyn Fn(&Arc<Objects>, &str, Option<&str>, SystemTime) -> bool + Send + Sync>;

/// Commands for the alarm process.
pub(crate) enum AlarmCmd {
    Rescan,
}

/// How a named process wants its alarm: the pid that asked and how to deliver to it.
pub(crate) struct NamedAlarm {
    pid: Pid,
    /// Sends the process its alarm message without waiting; false if it could not now.
    deliver: Box<dyn Fn(SystemTime) -> bool + Send + Sync>,
}

/// The alarm dispatch of class `O`.
pub(super) fn dispatch<O: Object>() -> AlarmDispatch {
    Arc::new(|objects, key, region, at| {
        ObjectRef::<O>::new_in(objects.clone(), key, region).deliver_alarm(at)
    })
}

/// Starts the node's alarm process (`cairn.alarms`, node-local).
pub(super) fn start(handle: &Handle, objects: Weak<Objects>) -> ActorRef<AlarmCmd> {
    handle
        .spawn_opts(
            SpawnOptions {
                name: Some("cairn.alarms".to_owned()),
                local_name: true,
                ..SpawnOptions::default()
            },
            move |ctx| run_alarms(ctx, objects),
        )
        .expect("the alarm process's name is reserved")
}

impl Objects {
    /// The process `me`, registered under `name`, takes its name's alarms as
    /// `wrap(at)` from now on (replacing what an earlier process under the name asked).
    pub(crate) fn receive_named_alarms<M: Send + 'static>(
        &self,
        name: String,
        me: ActorRef<M>,
        wrap: impl Fn(SystemTime) -> M + Send + Sync + 'static,
    ) {
        let pid = me.pid();
        let deliver = Box::new(move |at| me.try_send(wrap(at)).is_ok());
        self.named_alarms
            .lock()
            .insert(name, NamedAlarm { pid, deliver });
        // An alarm that fell due while nobody asked is delivered now, not at the next rescan.
        self.wake_alarms();
    }

    /// Delivers the due alarm of the named process `name` if the process registered under it
    /// asked for it; false if not (yet), so a later scan tries again.
    fn deliver_named_alarm(&self, name: &str, at: SystemTime) -> bool {
        let Some(pid) = self.handle.whereis(name) else {
            return false;
        };
        let mut named = self.named_alarms.lock();
        match named.get(name) {
            Some(wanted) if wanted.pid == pid => (wanted.deliver)(at),
            Some(stale) if !self.handle.is_alive(stale.pid) => {
                // Asked by an earlier process under the name, which has exited.
                named.remove(name);
                false
            }
            _ => false,
        }
    }

    /// Committed alarms due now by this node's alarm clock, counted in storage at the call
    /// (`cairn_alarms_due`), at most [`ALARMS_DUE_COUNT_LIMIT`]; 0 (logged) if storage
    /// cannot be read.
    ///
    /// Counted at the call, not remembered from the alarm process's last scan: an alarm
    /// falls due by the clock alone, with no commit to announce it, and a plain named
    /// process's commits do not wake the alarm process, so a figure kept at each scan lagged
    /// by up to [`ALARM_RESCAN`], and one kept at each alarm commit would miss alarms falling
    /// due. Like the scan, this counts every stored alarm, also those of shards another node
    /// serves. It reads the alarm clock (a manual clock counts the read).
    pub(crate) fn alarms_due_now(&self) -> u64 {
        let now = self.config.clock.now();
        self.store
            .count_due_alarms(now, ALARMS_DUE_COUNT_LIMIT)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot count the due alarms");
                0
            })
    }

    /// Asks the alarm process to rescan storage (a handler may have set or moved an alarm).
    pub(super) fn wake_alarms(&self) {
        if let Some(p) = self.alarm_process.get() {
            let _ = p.try_send(AlarmCmd::Rescan);
        }
    }
}

impl<O: Object> ObjectRef<O> {
    /// Hands a due alarm to the live (or a new) activation; false if it could not be
    /// delivered now (full mailbox, activation shutting down): the next scan tries again.
    fn deliver_alarm(&self, at: SystemTime) -> bool {
        if !matches!(self.route(), Ok(Route::Local)) {
            // Owned elsewhere now: the alarm waits in this node's storage (see the routing
            // module's doc, "Membership change").
            return false;
        }
        let mut msg = ObjectMsg::Alarm(at);
        loop {
            match self.activation() {
                Lookup::Live(a) => match a.try_send_ungated(msg) {
                    Ok(()) => return true,
                    Err(SendError::NoProc(m)) => msg = m,
                    Err(_) => return false,
                },
                Lookup::Exiting(_) => return false,
            }
        }
    }
}

/// After a failed alarm handler: sets the alarm again after the backoff (in the pending
/// write set, which the caller commits), or drops it after the last retry.
pub(super) fn schedule_alarm_retry<O: Object>(
    config: &ObjectsConfig,
    octx: &mut ObjectCtx<O>,
    at: SystemTime,
) {
    octx.alarm_retries += 1;
    if octx.alarm_retries > config.alarm_max_retries {
        super::stats::bump(&octx.stats.alarms_given_up);
        tracing::error!(
            object = %octx.storage.name(),
            retries = config.alarm_max_retries,
            "alarm kept failing; dropping it"
        );
        octx.alarm_retries = 0;
        let _ = octx.storage.delete_alarm();
        return;
    }
    super::stats::bump(&octx.stats.alarms_retried);
    let delay = config.alarm_retry_base * 2u32.saturating_pow(octx.alarm_retries - 1);
    let next = config.clock.now().max(at) + delay;
    let _ = octx.storage.set_alarm(next);
}

/// The node's alarm process: sleeps until the earliest committed alarm (or a rescan request,
/// or [`ALARM_RESCAN`]), then delivers every due alarm to its object.
async fn run_alarms(mut ctx: Ctx<AlarmCmd>, objects: Weak<Objects>) {
    // (name, at) delivered recently: not delivered again while the object handles it.
    let mut delivered: HashMap<String, (SystemTime, Instant)> = HashMap::new();
    loop {
        let Some(objs) = objects.upgrade() else {
            return;
        };
        objs.alarm_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = objs.config.clock.now();
        match objs.store.due_alarms(now) {
            Ok(due) => {
                for alarm in due {
                    let fresh = delivered.get(&alarm.name).is_none_or(|&(at, when)| {
                        at != alarm.at || when.elapsed() > Duration::from_secs(30)
                    });
                    if !fresh {
                        continue;
                    }
                    let class = parse_name(&alarm.name).map(|(class, region, key)| {
                        let dispatch = objs.classes.read().get(class).map(|c| c.alarm.clone());
                        (dispatch, region, key)
                    });
                    let was_delivered = match class {
                        Some((Some(dispatch), region, key)) => {
                            dispatch(&objs, key, region, alarm.at)
                        }
                        // A named process's alarm: delivered if the process under the name
                        // asked for it, else on a later scan.
                        _ => objs.deliver_named_alarm(&alarm.name, alarm.at),
                    };
                    if was_delivered {
                        delivered.insert(alarm.name.clone(), (alarm.at, Instant::now()));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "alarm scan failed"),
        }
        let wait = match objs.store.next_alarm() {
            // A due alarm still stored was just delivered (its handler has not committed
            // yet), or cannot be delivered here (its shard is served elsewhere, its named
            // process is not running): look again soon, without spinning on it.
            Ok(Some(next)) => next
                .at
                .duration_since(objs.config.clock.now())
                .unwrap_or(ALARM_DUE_POLL)
                .min(ALARM_RESCAN),
            _ => ALARM_RESCAN,
        };
        drop(objs);
        delivered.retain(|_, (_, when)| when.elapsed() < Duration::from_secs(60));
        let _ = ctx.recv_timeout(wait).await;
        while ctx.try_recv().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, SystemTime};

    use cairn_scheduler::Runtime;
    use cairn_storage::{Config, Store};

    use super::super::{Objects, ObjectsConfig};
    use super::ALARM_DUE_POLL;

    /// A due alarm nobody can take (its named process is not running; likewise an object
    /// whose shard another node serves) must not wake the alarm process every millisecond.
    #[test]
    fn an_undeliverable_due_alarm_does_not_spin_the_alarm_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let ks = store.keyspace("nobody-runs-this").unwrap();
        ks.set_alarm(SystemTime::now() - Duration::from_secs(1))
            .unwrap();
        ks.sync().unwrap();
        let rt = Runtime::builder().workers(1).build().unwrap();
        let objects = Objects::start(rt.handle(), store, ObjectsConfig::default());
        let window = Duration::from_millis(400);
        std::thread::sleep(window);
        let scans = objects.alarm_scans.load(Ordering::Relaxed);
        // One scan per ALARM_DUE_POLL (plus the first); a 1 ms spin would make ~400.
        let bound = (window.as_millis() / ALARM_DUE_POLL.as_millis()) as u64 + 3;
        assert!(scans >= 1, "the alarm process never scanned");
        assert!(
            scans <= bound,
            "{scans} scans in {window:?} (bound {bound})"
        );
    }
}
