//! `#[cairn::object(state)]`: an object's fields are its durable state. They load on
//! activation (`Default` when nothing is stored), are written after each method or hook
//! that changed them, in the same write set as the handler's other writes (so an
//! application error commits them and a crash discards them), cost no write when nothing
//! changed, and take no storage when back to `Default`.

mod common;

use std::time::Duration;

use cairn::prelude::*;
use cairn::rpc::STATE_KEY;
use serde::de::IgnoredAny;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyError {
    TooBig { limit: u64 },
}

#[derive(Default, Serialize, Deserialize)]
struct Tally {
    total: u64,
    adds: u32,
    refused: u32,
}

const LIMIT: u64 = 100;

#[cairn::object(state)]
impl Tally {
    const CLASS: &'static str = "tally";

    /// The alarm resets the tally (so its state is dropped from storage).
    async fn alarm(&mut self, _ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        *self = Tally::default();
        Ok(())
    }

    pub async fn add(&mut self, n: u64) -> Result<u64, TallyError> {
        if self.total + n > LIMIT {
            // Recorded, then refused: an answer, so this change commits.
            self.refused += 1;
            return Err(TallyError::TooBig { limit: LIMIT });
        }
        self.total += n;
        self.adds += 1;
        Ok(self.total)
    }

    /// Changes the fields, then crashes: the change must not survive.
    pub async fn add_then_crash(&mut self, n: u64) -> Result<u64, ActorError> {
        self.total += n;
        Err("boom".into())
    }

    pub async fn read(&mut self) -> (u64, u32, u32) {
        (self.total, self.adds, self.refused)
    }

    pub async fn reset(&mut self) {
        *self = Tally::default();
    }

    /// Whether anything is stored under the state key (as this handler sees it).
    pub async fn stored(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<bool, ActorError> {
        Ok(ctx.storage().get::<IgnoredAny>(STATE_KEY)?.is_some())
    }

    pub async fn ring_in(&mut self, ctx: &mut ObjectCtx<Self>, ms: u64) {
        ctx.set_alarm(SystemTime::now() + Duration::from_millis(ms));
    }
}

fn node(dir: &std::path::Path) -> Node {
    let node = common::node(dir, 2, cairn::object::DEFAULT_IDLE_TIMEOUT);
    node.host::<Tally>();
    node
}

#[test]
fn state_fields_start_from_default_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = node(dir.path());
        let t = node.object::<Tally>("a");
        node.block_on(async {
            assert_eq!(t.read().await, Ok((0, 0, 0)));
            assert_eq!(t.add(5).await, Ok(5));
            assert_eq!(t.add(7).await, Ok(12));
        });
        node.shutdown();
    }
    let node = node(dir.path());
    assert_eq!(
        node.block_on(node.object::<Tally>("a").read()),
        Ok((12, 2, 0))
    );
    // Another key has its own state.
    assert_eq!(
        node.block_on(node.object::<Tally>("b").read()),
        Ok((0, 0, 0))
    );
}

#[test]
fn an_application_error_commits_the_change_and_a_crash_discards_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = node(dir.path());
        let t = node.object::<Tally>("a");
        node.block_on(async {
            assert_eq!(t.add(60).await, Ok(60));
            assert_eq!(
                t.add(60).await,
                Err(CallError::Failed(TallyError::TooBig { limit: LIMIT }))
            );
            assert_eq!(t.add_then_crash(1).await, Err(CallError::NoReply));
            // Re-activated from storage: the refusal is there, the crashed change is not.
            assert_eq!(t.read().await, Ok((60, 1, 1)));
        });
        node.shutdown();
    }
    let node = node(dir.path());
    assert_eq!(
        node.block_on(node.object::<Tally>("a").read()),
        Ok((60, 1, 1))
    );
}

#[test]
fn a_method_that_changes_nothing_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let t = node.object::<Tally>("a");
    assert_eq!(node.block_on(t.add(3)), Ok(3));
    let before = node.store().stats().write_sets;
    for _ in 0..5 {
        assert_eq!(node.block_on(t.read()), Ok((3, 1, 0)));
    }
    assert_eq!(node.store().stats().write_sets, before, "a read wrote");
    assert_eq!(node.block_on(t.add(1)), Ok(4));
    assert_eq!(
        node.store().stats().write_sets,
        before + 1,
        "a change did not write"
    );
}

#[test]
fn a_state_back_to_default_takes_no_storage() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let t = node.object::<Tally>("a");
    node.block_on(async {
        assert_eq!(t.stored().await, Ok(false));
        assert_eq!(t.add(2).await, Ok(2));
        assert_eq!(t.stored().await, Ok(true));
        t.reset().await.unwrap();
        assert_eq!(t.stored().await, Ok(false));
        assert_eq!(t.read().await, Ok((0, 0, 0)));
    });
}

#[test]
fn an_alarm_hook_that_changes_the_fields_saves_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = node(dir.path());
        let t = node.object::<Tally>("a");
        node.block_on(async {
            assert_eq!(t.add(9).await, Ok(9));
            t.ring_in(50).await.unwrap();
            // The alarm resets the tally; its save deletes the stored state.
            while t.read().await != Ok((0, 0, 0)) {
                node.handle().sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(t.stored().await, Ok(false));
        });
        node.shutdown();
    }
    let node = node(dir.path());
    assert_eq!(
        node.block_on(node.object::<Tally>("a").read()),
        Ok((0, 0, 0))
    );
}
