//! Crash durability of objects under `kill -9` (DESIGN.md semantic 17, through the object
//! layer).
//!
//! The parent test re-executes this test binary as a child (`crash_child`, switched on by an
//! environment variable). The child runs a node on the shared data dir with [`OBJECTS`] counter
//! objects, one caller process per object incrementing it as fast as it can (so [`OBJECTS`]
//! calls are in flight at any time), and prints
//!
//! * `START <key> <value>` with the value the object loaded from storage,
//! * `TRY <key> <value>` before each increment is sent (`value` is what it will produce),
//! * `ACK <key> <value>` once the call's answer arrived — the output gate releases it only
//!   after the increment's commit is durable.
//!
//! The parent SIGKILLs the child after a random number of acknowledgements, restarts a node on
//! the same data dir in its own process, and checks every counter: at least its last `ACK`
//! (acknowledged writes survive) and at most its last `TRY` (nothing that was never attempted).
//! The next round's child continues from what is stored.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn::prelude::*;

const DIR_VAR: &str = "CAIRN_OBJECT_CRASH_DIR";
const OBJECTS: usize = 1_000;
const ROUNDS: usize = 4;
/// Increments per object after which an orphaned child's callers stop by themselves.
const MAX_INCREMENTS: u64 = 100_000;
/// How long an orphaned child lives at most.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(30);

enum Msg {
    /// Adds one and answers with the new value.
    Incr(Reply<u64>),
    /// Answers with the value.
    Get(Reply<u64>),
}

struct Counter {
    value: u64,
}

impl Object for Counter {
    const CLASS: &'static str = "crash-counter";
    type Msg = Msg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Counter {
            value: ctx.storage().get("value")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: Msg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            Msg::Incr(reply) => {
                self.value += 1;
                ctx.storage().put("value", &self.value)?;
                let _ = reply.send(self.value);
            }
            Msg::Get(reply) => {
                let _ = reply.send(self.value);
            }
        }
        Ok(())
    }
}

fn start_node(dir: &str) -> Node {
    let node = Node::builder().workers(2).data_dir(dir).start().unwrap();
    node.host_local::<Counter>();
    node
}

/// Prints one whole line with one `write` (a pipe write under `PIPE_BUF` is atomic, so a kill
/// never leaves half a line).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// The child's body; does nothing unless run by `acknowledged_increments_survive_kill_9`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    // libtest printed `test crash_child ... ` without a newline: end that line first.
    say("\n".to_owned());
    let node = start_node(&dir);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    for k in 0..OBJECTS {
        let counter = node.object::<Counter>(&format!("c{k}"));
        let done_tx = done_tx.clone();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let mut value = counter.call(Msg::Get, T).await.unwrap();
            say(format!("START {k} {value}\n"));
            for _ in 0..MAX_INCREMENTS {
                say(format!("TRY {k} {}\n", value + 1));
                let got = counter.call(Msg::Incr, T).await.unwrap();
                assert_eq!(got, value + 1, "c{k} answered out of turn");
                value = got;
                say(format!("ACK {k} {value}\n"));
            }
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);
    // Normally killed long before; an orphaned child ends by itself.
    let deadline = std::time::Instant::now() + CHILD_LIFETIME;
    for _ in 0..OBJECTS {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    std::process::exit(0);
}

fn random_below(n: u64) -> u64 {
    RandomState::new().build_hasher().finish() % n
}

/// What the parent knows of one counter.
#[derive(Clone, Copy, Debug, Default)]
struct Model {
    /// The value read back after the previous round (the floor and the start of this one).
    stored: u64,
    /// The last value acknowledged to the child.
    acked: u64,
    /// The last value the child attempted.
    tried: u64,
}

#[test]
fn acknowledged_increments_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let exe = std::env::current_exe().unwrap();
    let mut model = vec![Model::default(); OBJECTS];
    let mut total_acks = 0u64;
    for round in 0..ROUNDS {
        // At least one acknowledgement, at most ten per object on average: a kill during the
        // first activations as well as one in steady state (~1 s of debug-build increments).
        let kill_after = 1 + random_below(10 * OBJECTS as u64);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, &dir_str)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        for m in &mut model {
            m.acked = m.stored;
            m.tried = m.stored;
        }
        let mut acks = 0u64;
        let mut killed = false;
        let mut starts: HashMap<usize, u64> = HashMap::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let mut words = line.split(' ');
            let (Some(tag), Some(key), Some(value), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                continue; // the test harness's own output
            };
            let (Ok(key), Ok(value)) = (key.parse::<usize>(), value.parse::<u64>()) else {
                continue;
            };
            let m = &mut model[key];
            match tag {
                "START" => {
                    assert_eq!(
                        value, m.stored,
                        "round {round}: c{key} started from {value}, but {} was stored",
                        m.stored
                    );
                    starts.insert(key, value);
                }
                "TRY" => {
                    assert_eq!(
                        value,
                        m.tried + 1,
                        "round {round}: c{key} tries out of turn"
                    );
                    m.tried = value;
                }
                "ACK" => {
                    assert_eq!(
                        value, m.tried,
                        "round {round}: c{key} acked {value} untried"
                    );
                    m.acked = value;
                    acks += 1;
                    if acks == kill_after {
                        child.kill().unwrap(); // SIGKILL; lines already written are still read
                        killed = true;
                    }
                }
                _ => {}
            }
        }
        let status = child.wait().unwrap();
        assert!(
            killed,
            "round {round}: child ended before being killed ({status:?}) after {acks} acks"
        );
        total_acks += acks;

        let node = start_node(&dir_str);
        let mut unacked_but_stored = 0;
        for (key, m) in model.iter_mut().enumerate() {
            let counter = node.object::<Counter>(&format!("c{key}"));
            let stored = node.block_on(counter.call(Msg::Get, T)).unwrap();
            assert!(
                stored >= m.acked,
                "round {round}: c{key} holds {stored}, but {} was acknowledged",
                m.acked
            );
            assert!(
                stored <= m.tried,
                "round {round}: c{key} holds {stored}, but only {} was attempted",
                m.tried
            );
            unacked_but_stored += stored - m.acked;
            m.stored = stored;
        }
        drop(node);
        eprintln!(
            "round {round}: killed after {kill_after} acks ({acks} read, {} objects started); \
             {unacked_but_stored} increments durable but not acknowledged",
            starts.len()
        );
    }
    assert!(total_acks >= ROUNDS as u64);
}
