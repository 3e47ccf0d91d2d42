//! Alarms against an injected wall clock ([`WallClock::manual`], behind cairn's `testing`
//! feature): an alarm fires once the clock reaches its time and never before, whichever way
//! the clock jumps, also after a node restart, and a failing alarm's retries wait for their
//! backoff on that clock. No test sleeps for the timing: the clock moves only when a test
//! moves it, and "not delivered yet" is checked after a whole alarm scan at the new time has
//! run and the object has handled everything queued before (see [`settle`]).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use cairn::object::WallClock;
use cairn::prelude::*;

const T: Duration = Duration::from_secs(10);

/// What the alarm handler saw.
#[derive(Debug, PartialEq)]
struct Fired {
    retry_count: u32,
}

#[derive(Default)]
struct Probe {
    listener: Option<Sender<Fired>>,
    failures_left: u32,
}

/// Per key (each test uses its own keys; tests run in parallel in this binary).
fn probes() -> &'static Mutex<HashMap<String, Probe>> {
    static P: OnceLock<Mutex<HashMap<String, Probe>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

fn listen(key: &str, failures: u32) -> Receiver<Fired> {
    let (tx, rx) = channel();
    probes().lock().unwrap().insert(
        key.to_owned(),
        Probe {
            listener: Some(tx),
            failures_left: failures,
        },
    );
    rx
}

enum Msg {
    SetAlarm(SystemTime, Reply<()>),
    Ping(Reply<()>),
}

struct Sleeper;

impl Object for Sleeper {
    const CLASS: &'static str = "alarm-clock";
    type Msg = Msg;

    async fn activate(_: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Sleeper)
    }

    async fn handle(&mut self, msg: Msg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            Msg::SetAlarm(at, reply) => {
                ctx.storage().set_alarm(at)?;
                let _ = reply.send(());
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        let mut probes = probes().lock().unwrap();
        let probe = probes.get_mut(ctx.key()).expect("a listener for every key");
        let fired = Fired {
            retry_count: ctx.alarm_retry_count(),
        };
        let _ = probe.listener.as_ref().unwrap().send(fired);
        if probe.failures_left > 0 {
            probe.failures_left -= 1;
            return Err("this alarm fails".into());
        }
        Ok(())
    }
}

/// A fixed point far from the real time, so nothing here depends on the machine's clock.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

fn start(dir: &std::path::Path, clock: &WallClock) -> Node {
    let node = Node::builder()
        .workers(2)
        .data_dir(dir)
        .wall_clock(clock.clone())
        .alarm_retries(Duration::from_secs(10), 3)
        .start()
        .unwrap();
    node.host_local::<Sleeper>();
    node
}

/// Returns once an alarm due at the clock's current time would have been handled: the alarm
/// process has run a whole scan that began after the last move (three reads of the clock:
/// the process reads it once before delivering and once after, alternately), and the object
/// has answered a ping queued behind anything that scan delivered.
fn settle(node: &Node, clock: &WallClock, obj: &ObjectRef<Sleeper>) {
    let before = clock.reads();
    let deadline = Instant::now() + T;
    // A bounded poll on a condition (the alarm process rescans within a second at most).
    while clock.reads() < before + 3 {
        assert!(Instant::now() < deadline, "the alarm process did not scan");
        std::thread::yield_now();
    }
    node.block_on(obj.call(Msg::Ping, T)).unwrap();
}

fn set_alarm(node: &Node, obj: &ObjectRef<Sleeper>, at: SystemTime) {
    // The answer is released only once the alarm's write set is durable.
    node.block_on(obj.call(|r| Msg::SetAlarm(at, r), T))
        .unwrap();
}

fn assert_not_fired(rx: &Receiver<Fired>, when: &str) {
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "fired {when}");
}

#[test]
fn an_alarm_fires_when_the_clock_reaches_it_never_before_whichever_way_the_clock_jumps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = WallClock::manual(t0());
    let node = start(dir.path(), &clock);
    let key = "jumps";
    let rx = listen(key, 0);
    let obj = node.object::<Sleeper>(key);
    let at = t0() + Duration::from_secs(60);
    set_alarm(&node, &obj, at);

    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "a minute early");
    clock.set(at - Duration::from_millis(1));
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "a millisecond early");
    // The clock jumps back an hour (an NTP step, say): still not due.
    clock.set(t0() - Duration::from_secs(3600));
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "after the clock jumped back");

    clock.set(at);
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 0 });
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "twice");
    assert_eq!(
        node.keyspace("alarm-clock/jumps")
            .unwrap()
            .get_alarm()
            .unwrap(),
        None
    );

    // A forward jump far past a second alarm delivers it once, at once.
    let second = t0() + Duration::from_secs(120);
    set_alarm(&node, &obj, second);
    clock.set(t0() + Duration::from_secs(86_400));
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 0 });
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "twice after a forward jump");
    // And the clock going back before it does not bring it back.
    clock.set(second - Duration::from_secs(1));
    settle(&node, &clock, &obj);
    clock.set(second);
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "again after the clock went back over it");
}

#[test]
fn an_alarm_set_before_a_restart_fires_after_it_at_its_time_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = WallClock::manual(t0());
    let key = "restart";
    let rx = listen(key, 0);
    let at = t0() + Duration::from_secs(30);
    {
        let node = start(dir.path(), &clock);
        set_alarm(&node, &node.object::<Sleeper>(key), at);
    }
    let node = start(dir.path(), &clock);
    let obj = node.object::<Sleeper>(key);
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "early after the restart");
    clock.set(at - Duration::from_millis(1));
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "a millisecond early after the restart");
    clock.set(at);
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 0 });
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "twice after the restart");
    // A delivered alarm was cleared in its handler's write set: another restart, which
    // forgets what the alarm process delivered, does not bring it back.
    drop(obj);
    drop(node);
    let node = start(dir.path(), &clock);
    let obj = node.object::<Sleeper>(key);
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "again after a second restart");
}

#[test]
fn a_failing_alarm_is_retried_after_its_backoff_on_the_clock_and_not_before() {
    // Base 10 s, doubling (see `start`): retries at +10 s and then +20 s of clock time.
    let dir = tempfile::tempdir().unwrap();
    let clock = WallClock::manual(t0());
    let node = start(dir.path(), &clock);
    let key = "retry";
    let rx = listen(key, 2);
    let obj = node.object::<Sleeper>(key);
    let at = t0() + Duration::from_secs(5);
    set_alarm(&node, &obj, at);

    clock.set(at);
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 0 });
    // The failure's retry (read off the clock) is committed before the ping is answered.
    node.block_on(obj.call(Msg::Ping, T)).unwrap();
    let first_retry = at + Duration::from_secs(10);
    clock.set(first_retry - Duration::from_millis(1));
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "before the first backoff ended");
    clock.set(first_retry);
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 1 });
    node.block_on(obj.call(Msg::Ping, T)).unwrap();

    let second_retry = first_retry + Duration::from_secs(20);
    clock.set(second_retry - Duration::from_millis(1));
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "before the doubled backoff ended");
    clock.set(second_retry);
    assert_eq!(rx.recv_timeout(T).unwrap(), Fired { retry_count: 2 });
    settle(&node, &clock, &obj);
    assert_not_fired(&rx, "after it succeeded");
    assert_eq!(
        node.keyspace("alarm-clock/retry")
            .unwrap()
            .get_alarm()
            .unwrap(),
        None
    );
}
