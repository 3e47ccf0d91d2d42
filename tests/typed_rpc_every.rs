//! `#[every(period)]` on a typed actor's one-way method: a timer started before the
//! actor's own `init` sends that method's message every `period` while the actor lives.
//! Hooks may also take the short forms methods do (no `ctx`, returning nothing).

mod common;

use std::time::Duration;

use cairn::prelude::*;

#[derive(Default)]
struct Beat {
    period_ms: u64,
    /// Set by `init`: the hook still runs, after the timers started.
    started: bool,
    ticks: u32,
    /// Ticks seen before `init` finished (none: the first tick waits for `init`).
    early: u32,
}

#[cairn::actor]
impl Beat {
    /// The short form: no `ctx`, cannot fail.
    async fn init(&mut self) {
        self.started = true;
    }

    #[every(Duration::from_millis(self.period_ms))]
    pub async fn tick(&mut self) {
        if !self.started {
            self.early += 1;
        }
        self.ticks += 1;
    }

    pub async fn seen(&mut self) -> (bool, u32, u32) {
        (self.started, self.ticks, self.early)
    }
}

#[test]
fn an_every_method_ticks_on_its_period_and_init_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::node(dir.path(), 2, cairn::object::DEFAULT_IDLE_TIMEOUT);
    let beat = Beat {
        period_ms: 5,
        ..Beat::default()
    };
    let beat = node
        .block_on(cairn::supervisor::start(
            node.handle(),
            beat,
            StartOptions::default(),
        ))
        .unwrap();
    node.block_on(async {
        // The ticks come without being sent by hand (given up to ~2 s on a loaded host).
        let mut ticks = 0;
        for _ in 0..400 {
            let (started, seen, early) = beat.seen().await.unwrap();
            assert!(started, "init did not run");
            assert_eq!(early, 0, "a tick ran before init");
            ticks = seen;
            if ticks >= 3 {
                break;
            }
            node.handle().sleep(Duration::from_millis(5)).await;
        }
        assert!(ticks >= 3, "{ticks} ticks");
        // The method is still an ordinary one-way message too.
        let (_, before, _) = beat.seen().await.unwrap();
        beat.tick().await.unwrap();
        let (_, after, _) = beat.seen().await.unwrap();
        assert!(after > before);
    });
}
