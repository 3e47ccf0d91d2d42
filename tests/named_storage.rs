//! Durable storage of named processes: the keyspace belongs to the name and
//! outlives incarnations; alarms of named processes arrive as ordinary messages.

use std::sync::mpsc::channel;
use std::time::{Duration, SystemTime};

use cairn::prelude::*;

const T: Duration = Duration::from_secs(10);

fn node(dir: &std::path::Path) -> Node {
    Node::builder().workers(2).data_dir(dir).start().unwrap()
}

struct Ledger {
    count: u64,
    storage: Option<Keyspace>,
}

enum LedgerMsg {
    Inc(Reply<u64>),
    Crash,
}

impl Actor for Ledger {
    type Msg = LedgerMsg;

    async fn init(&mut self, ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
        let storage = ctx.process().storage()?;
        self.count = storage.get("count")?.unwrap_or(0);
        self.storage = Some(storage);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: LedgerMsg,
        _ctx: &mut ActorCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            LedgerMsg::Inc(reply) => {
                let storage = self.storage.as_ref().expect("opened in init");
                self.count += 1;
                storage.put("count", &self.count)?;
                storage.commit().await?;
                let _ = reply.send(self.count);
            }
            LedgerMsg::Crash => return Err("crash".into()),
        }
        Ok(())
    }
}

#[test]
fn a_named_child_finds_its_data_after_its_supervisor_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(
        ChildSpec::worker("ledger", || Ledger {
            count: 0,
            storage: None,
        })
        .named("ledger"),
    );
    let _sup = node
        .block_on(Supervisor::start(node.handle(), spec))
        .unwrap();
    let first = node.whereis("ledger").unwrap();
    for expected in 1..=3 {
        assert_eq!(
            node.block_on(node.call(first, LedgerMsg::Inc, T)).unwrap(),
            expected
        );
    }
    let exited = node.handle().wait_exit(first);
    node.try_send(first, LedgerMsg::Crash).unwrap();
    node.block_on(exited);
    let second = loop {
        match node.whereis("ledger") {
            Some(p) if p != first => break p,
            _ => std::thread::yield_now(),
        }
    };
    assert_eq!(
        node.block_on(node.call(second, LedgerMsg::Inc, T)).unwrap(),
        4
    );
}

#[test]
fn a_process_spawned_under_the_same_name_after_a_node_restart_finds_its_data() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=3u64 {
        let node = node(dir.path());
        let (tx, rx) = channel();
        node.spawn_named("keeper", move |ctx: Ctx<()>| async move {
            let storage = ctx.storage().unwrap();
            let seen: u64 = storage.get("boots").unwrap().unwrap_or(0);
            storage.put("boots", &(seen + 1)).unwrap();
            storage.commit().await.unwrap();
            tx.send(seen).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), round - 1);
    }
}

#[test]
fn an_unnamed_process_has_no_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let (tx, rx) = channel();
    node.spawn(move |ctx: Ctx<()>| async move {
        tx.send(ctx.storage().map(|_| ())).unwrap();
    });
    match rx.recv_timeout(T).unwrap() {
        Err(DurableError::Unnamed(_)) => {}
        other => panic!("expected Unnamed, got {other:?}"),
    }
}

#[test]
fn a_named_process_alarm_waits_for_a_process_under_the_name_and_arrives_as_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // The alarm falls due when the test moves this clock, not after a wait.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let clock = cairn::object::WallClock::manual(start);
    let node = Node::builder()
        .workers(2)
        .data_dir(dir.path())
        .wall_clock(clock.clone())
        .start()
        .unwrap();
    let due = start + Duration::from_millis(100);
    let first = node
        .spawn_named("sleeper", move |ctx: Ctx<()>| async move {
            let storage = ctx.storage().unwrap();
            storage.set_alarm(due).unwrap();
            storage.commit().await.unwrap();
        })
        .unwrap();
    // The first incarnation is gone (the name is free) ...
    let exited = node.block_on(
        node.handle()
            .timeout(T, node.handle().wait_exit(first.pid())),
    );
    assert_eq!(exited, Ok(ExitReason::Normal));
    // ... and then the alarm falls due, as the store itself sees it.
    clock.set(due);
    assert!(node
        .store()
        .due_alarms(clock.now())
        .unwrap()
        .iter()
        .any(|a| a.name == "sleeper"));
    let (tx, rx) = channel();
    let process_clock = clock.clone();
    node.spawn_named("sleeper", move |mut ctx: Ctx<Wake>| async move {
        ctx.receive_alarms_as(Wake::Alarm).unwrap();
        while let Some(msg) = ctx.recv().await {
            if let Message::User(Wake::Alarm(at)) = msg {
                let storage = ctx.storage().unwrap();
                storage.delete_alarm().unwrap();
                storage.commit().await.unwrap();
                tx.send((at, process_clock.now())).unwrap();
                return;
            }
        }
    })
    .unwrap();
    let (at, received) = rx
        .recv_timeout(T)
        .expect("alarm delivered to the new incarnation");
    // Alarm times are stored with millisecond precision.
    let diff = due
        .duration_since(at)
        .expect("stored time is not later than asked");
    assert!(diff < Duration::from_millis(1), "{diff:?}");
    assert!(received >= at);
    assert_eq!(node.keyspace("sleeper").unwrap().get_alarm().unwrap(), None);
}

/// What the alarm test's named process takes.
enum Wake {
    Alarm(SystemTime),
}

#[test]
fn a_new_incarnation_does_not_commit_what_its_crashed_predecessor_left_pending() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let first = node
        .spawn_named("stepper", |ctx: Ctx<()>| async move {
            let storage = ctx.storage().unwrap();
            storage.put("done", &1u32).unwrap();
            storage.commit().await.unwrap();
            storage.put("half", &2u32).unwrap(); // never committed: the process crashes
            let crash = true;
            if crash {
                panic!("crash between a write and its commit");
            }
        })
        .unwrap();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let reason = node.block_on(node.handle().wait_exit(first.pid()));
    std::panic::set_hook(prev);
    assert!(matches!(reason, ExitReason::Panic(_)));
    let (tx, rx) = channel();
    node.spawn_named("stepper", move |ctx: Ctx<()>| async move {
        let storage = ctx.storage().unwrap();
        let half: Option<u32> = storage.get("half").unwrap();
        storage.put("done", &2u32).unwrap();
        storage.commit().await.unwrap();
        tx.send(half).unwrap();
    })
    .unwrap();
    assert_eq!(
        rx.recv_timeout(T).unwrap(),
        None,
        "the predecessor's pending write is gone"
    );
    let ks = node.keyspace("stepper").unwrap();
    assert_eq!(
        ks.get::<u32>("half").unwrap(),
        None,
        "and was never committed"
    );
    assert_eq!(ks.get::<u32>("done").unwrap(), Some(2));
}
