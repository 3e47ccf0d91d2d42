//! A probe actor that reports its lifecycle on a channel, for the OTP behaviour tests.
#![allow(dead_code)]

use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use cairn_scheduler::{ExitReason, Pid, Reply, Runtime, Signal};
use cairn_supervisor::{
    Actor, ActorCtx, ActorError, ChildSpec, DynamicSupervisor, StartError, Supervisor,
    SupervisorRef, SupervisorSpec,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Init(String, Pid),
    Terminate(String, ExitReason),
}

pub enum ProbeMsg {
    Crash,
    Panic,
    Exit(ExitReason),
    Pid(Reply<Pid>),
}

pub struct Probe {
    pub id: String,
    pub events: Sender<Event>,
    pub fail_init: bool,
    pub ignore_shutdown: bool,
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        if self.fail_init {
            return Err(format!("{} refuses to start", self.id).into());
        }
        let _ = self.events.send(Event::Init(self.id.clone(), ctx.pid()));
        Ok(())
    }

    async fn handle(&mut self, msg: ProbeMsg, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        match msg {
            ProbeMsg::Crash => return Err("crash requested".into()),
            ProbeMsg::Panic => panic!("panic requested"),
            ProbeMsg::Exit(reason) => ctx.stop(reason),
            ProbeMsg::Pid(r) => {
                let _ = r.send(ctx.pid());
            }
        }
        Ok(())
    }

    async fn handle_signal(
        &mut self,
        signal: Signal,
        ctx: &mut ActorCtx<Self>,
    ) -> Result<(), ActorError> {
        if let Signal::Exit { reason, .. } = signal {
            if !self.ignore_shutdown && reason != ExitReason::Normal {
                ctx.stop(reason);
            }
        }
        Ok(())
    }

    async fn terminate(&mut self, reason: &ExitReason, _ctx: &mut ActorCtx<Self>) {
        let _ = self
            .events
            .send(Event::Terminate(self.id.clone(), reason.clone()));
    }
}

fn probe_spec(
    id: &str,
    events: &Sender<Event>,
    fail_init: bool,
    ignore_shutdown: bool,
) -> ChildSpec {
    let (id2, events) = (id.to_owned(), events.clone());
    ChildSpec::worker(id, move || Probe {
        id: id2.clone(),
        events: events.clone(),
        fail_init,
        ignore_shutdown,
    })
}

pub fn probe(id: &str, events: &Sender<Event>) -> ChildSpec {
    probe_spec(id, events, false, false)
}

pub fn failing_probe(id: &str, events: &Sender<Event>) -> ChildSpec {
    probe_spec(id, events, true, false)
}

pub fn stubborn_probe(id: &str, events: &Sender<Event>) -> ChildSpec {
    probe_spec(id, events, false, true)
}

/// A hang guard, not a pacing sleep: events are expected long before it.
pub const GUARD: Duration = Duration::from_secs(10);

pub fn next(rx: &Receiver<Event>) -> Event {
    rx.recv_timeout(GUARD)
        .expect("expected another lifecycle event")
}

/// The next `n` events, simplified to "init:a" / "terminate:a:reason".
pub fn take(rx: &Receiver<Event>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match next(rx) {
            Event::Init(id, _) => format!("init:{id}"),
            Event::Terminate(id, reason) => format!("terminate:{id}:{reason}"),
        })
        .collect()
}

pub fn no_more(rx: &Receiver<Event>) {
    if let Ok(e) = rx.recv_timeout(Duration::from_millis(100)) {
        panic!("unexpected event {e:?}");
    }
}

pub fn rt() -> Runtime {
    Runtime::builder()
        .workers(2)
        .shutdown_grace(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Starts a static supervisor, which must succeed.
pub fn start(rt: &Runtime, spec: SupervisorSpec) -> SupervisorRef {
    rt.block_on(Supervisor::start(rt, spec)).unwrap()
}

/// Starts a dynamic supervisor, which must succeed.
pub fn start_dynamic(rt: &Runtime, spec: SupervisorSpec) -> SupervisorRef {
    rt.block_on(DynamicSupervisor::start(rt, spec)).unwrap()
}

/// Starts a static supervisor that must fail because the child at `path` failed its `init`
/// with an error that contains `says`.
#[track_caller]
pub fn assert_start_fails_at(rt: &Runtime, spec: SupervisorSpec, path: &str, says: &str) {
    match rt.block_on(Supervisor::start(rt, spec)).unwrap_err() {
        StartError::Child { id, cause } => {
            assert_eq!(id, path);
            assert!(
                matches!(*cause, StartError::InitFailed(ref m) if m.contains(says)),
                "{cause:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The ids of the supervisor's children, in its order.
pub fn child_ids(rt: &Runtime, sup: &SupervisorRef) -> Vec<String> {
    rt.block_on(sup.which_children())
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// The event (as [`take`] shows it) of probe `id` terminating after a requested crash.
pub fn crashed(id: &str) -> String {
    let reason = ExitReason::Error("crash requested".into());
    format!("terminate:{id}:{reason}")
}

/// Crashes the probe `id` running as `pid`, checks that it terminated with the crash, and
/// returns the pid of its restarted successor.
#[track_caller]
pub fn crash_and_restart(rt: &Runtime, events: &Receiver<Event>, pid: Pid, id: &str) -> Pid {
    rt.try_send(pid, ProbeMsg::Crash).unwrap();
    assert_eq!(take(events, 1), [crashed(id)]);
    pid_of(rt, events, id)
}

pub fn pid_of(rt: &Runtime, events: &Receiver<Event>, id: &str) -> Pid {
    let _ = rt;
    match next(events) {
        Event::Init(got, pid) if got == id => pid,
        other => panic!("expected init of {id}, got {other:?}"),
    }
}
