//! Supervisor reports (OTP's SASL reports): a crash and its restart are logged at WARN, so
//! they show at the default log level; an orderly exit is not.
//!
//! The supervisor logs from worker threads, so this binary installs a global subscriber
//! that records every event; it holds this one test so nothing else logs into it.

mod common;

use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use cairn_supervisor::{Restart, Strategy, SupervisorSpec};
use common::*;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One recorded event: its level and `message=… field=…` text.
type Record = (Level, String);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text.0));
    }
}

impl Recorder {
    fn warnings_about(&self, child: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, text)| {
                *level == Level::WARN && text.contains(&format!("child={child} "))
            })
            .map(|(_, text)| text.clone())
            .collect()
    }
}

#[test]
fn a_crash_and_its_restart_are_reported_at_warn_and_an_orderly_exit_is_not() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .unwrap();
    let rt = rt();
    let (tx, rx) = channel();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("crashy", &tx))
        .child(probe("calm", &tx).restart(Restart::Transient));
    let sup = start(&rt, spec);
    let crashy = pid_of(&rt, &rx, "crashy");
    let calm = pid_of(&rt, &rx, "calm");

    rt.try_send(crashy, ProbeMsg::Crash).unwrap();
    let restarted = match next(&rx) {
        Event::Terminate(id, _) if id == "crashy" => pid_of(&rt, &rx, "crashy"),
        other => panic!("{other:?}"),
    };
    rt.try_send(calm, ProbeMsg::Exit(cairn_scheduler::ExitReason::Normal))
        .unwrap();
    assert_eq!(take(&rx, 1), ["terminate:calm:normal"]);
    // The supervisor handles this request after both exits: their reports are logged.
    rt.block_on(sup.which_children()).unwrap();

    let warnings = recorder.warnings_about("crashy");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("child crashed")
            && warnings[0].contains(&format!("{crashy}"))
            && warnings[0].contains("crash requested"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("child restarted") && warnings[1].contains(&format!("{restarted}")),
        "{}",
        warnings[1]
    );
    assert_eq!(recorder.warnings_about("calm"), Vec::<String>::new());
}
