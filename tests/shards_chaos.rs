//! Chaos against replicated shards: three node processes (`shards_node_child`, see
//! `common::shard_mesh`) and an in-process caller node (the *parent*) whose callers
//! increment and read counters without pause while nodes are killed, restarted, stopped and
//! cut off. In the kill rounds and the rolling restart the parent is a dial-only client of
//! the three (it holds no replicas, so every shard is led by a child that may be killed);
//! in the partition it is a member, on the majority side.
//!
//! - **Kill rounds**: [`ROUNDS`] times, one child is killed with SIGKILL (in even rounds the
//!   leader of the busiest shard, in odd rounds a seeded choice) and restarted on its data
//!   dir and address; every round measures the time until every counter answers again (an operation
//!   invoked after the kill answered; one caller per counter, so this includes the [`CALL`]
//!   timeout of a call in flight to the killed node), and the run prints its median and
//!   maximum.
//!   [`soak_kill_rounds`] (ignored) runs [`SOAK_ROUNDS`] of them.
//! - **Rolling restart**: each child in turn stops gracefully and restarts on its data dir.
//! - **Partition**: the packets between one child's port and the ports of the other
//!   children and the parent are dropped, by nftables ([`cairn_testkit::ports`]) or by fault
//!   injection in the mesh ([`cairn::net::faults`], installed in every node's process); a
//!   dial-only client whose only gateway is the cut-off child keeps calling through it. The
//!   cut-off node must stop answering within a bound and answer nothing for the rest of the
//!   partition, while the majority side serves every counter; after healing, the whole
//!   history checks out, and the healed node must be a member again within [`MERGE_BOUND`].
//!   [`a_healed_node_rejoins_and_serves_again`] and the fault-injection test also require
//!   calls through the healed node to answer again within [`REJOIN_BOUND`].
//!
//! The oracle is [`cairn_testkit::history`]: every operation is recorded with its
//! invocation and answer times (one process, one monotonic clock: the parent's callers and
//! the dial-only client's share one history) and checked against each counter's final
//! value: no acknowledged increment lost, no value above the increments attempted, no read
//! or increment answering less than an operation that was answered before it began, no
//! total counted twice (two live copies of one counter).
//!
//! Seeded choices (victims, reads among increments) replay with `CAIRN_SEED`; the seed is
//! printed. One scenario runs at a time (a lock), so their nodes do not compete for the CPU.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn::shard::placement::object_shard;
use cairn_testkit::history::{History, Op, Outcome};
use common::shard_mesh::{self, counter_key, serial, Children, WAIT};
use common::{Counter, CounterMsg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counters under load (each has one caller on the parent).
const COUNTERS: usize = 24;
/// One call's answer timeout: a call lost with a node is retried after it.
const CALL: Duration = Duration::from_secs(2);
/// Kill rounds of the CI test.
const ROUNDS: usize = 10;
/// Kill rounds of the soak test.
const SOAK_ROUNDS: usize = 100;
/// Share of the callers' operations that are reads (the rest add 1).
const READ_SHARE: f64 = 0.25;
/// A caller whose call failed waits this long before the next (errors can be immediate).
const FAIL_PAUSE: Duration = Duration::from_millis(20);
/// Every member of a test cluster with a member caller: three children and the parent.
const MEMBERS: usize = 4;
/// How long a partition lasts at least: well beyond a lease (0.9 s by default), so a
/// cut-off node that still acknowledged would be seen.
const PARTITION_HOLD: Duration = Duration::from_secs(6);
/// The cut-off node may still answer this long after the cut: replies already on their way,
/// and reads within its lease (which the majority cannot outlive: it elects no leader
/// before the lease ran out).
const STOP_SERVING_BOUND: Duration = Duration::from_secs(3);

/// Bound from healing a partition until the cut-off node is a member again as every member
/// sees it: it hears a member within a periodic announce to down members (twice the failure
/// timeout, [`shard_mesh::FAILURE_TIMEOUT`]; seeds are announced to sooner), rejoins as a
/// new incarnation and is gossiped within a few rounds; the children report their view
/// every [`shard_mesh::REPORT_EVERY`].
const MERGE_BOUND: Duration = Duration::from_secs(4 * shard_mesh::FAILURE_TIMEOUT.as_secs());

/// Bound from healing a partition until calls through the healed node answer again:
/// the cut-off node hears a member within a periodic announce to down members (twice the
/// failure timeout, [`shard_mesh::FAILURE_TIMEOUT`]), rejoins as a new incarnation, is
/// gossiped and synced within a few gossip rounds, and routes the client's calls to the
/// shards' leaders (guessing a replica where it knows no leader); plus a call already
/// waiting out its [`CALL`] timeout when the node came back.
const REJOIN_BOUND: Duration =
    Duration::from_secs(4 * shard_mesh::FAILURE_TIMEOUT.as_secs() + 2 * CALL.as_secs() + 2);

shards_node_child!();

/// What a set of callers saw since the last [`Load::mark`].
struct Progress {
    mark: Instant,
    /// Per key: when an operation invoked after the mark was first answered.
    first: Vec<Option<Instant>>,
    /// When any operation was last answered.
    last_answer: Option<Instant>,
}

/// Callers looping over increments and reads of counters, recording into one history.
struct Load {
    progress: Arc<Mutex<Progress>>,
    keys: Vec<usize>,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
}

impl Load {
    /// Starts one caller per key of `keys` on `node`; each draws reads and increments from
    /// its own rng, seeded by `seed` and its key.
    fn start(node: &Node, keys: Vec<usize>, history: &Arc<History<usize>>, seed: u64) -> Load {
        let progress = Arc::new(Mutex::new(Progress {
            mark: Instant::now(),
            first: vec![None; COUNTERS],
            last_answer: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel();
        for &k in &keys {
            let counter = node.object::<Counter>(&counter_key(k));
            let (history, progress, stop, done_tx) = (
                history.clone(),
                progress.clone(),
                stop.clone(),
                done_tx.clone(),
            );
            let mut rng = StdRng::seed_from_u64(seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9));
            node.spawn(move |ctx: Ctx<()>| async move {
                while !stop.load(Ordering::Acquire) {
                    let op = if rng.gen_bool(READ_SHARE) {
                        Op::Read
                    } else {
                        Op::Add(1)
                    };
                    let invoked = Instant::now();
                    let id = history.invoke(k, op);
                    let answer = match op {
                        Op::Read => counter.call(CounterMsg::Get, CALL).await,
                        Op::Add(n) => counter.call(|r| CounterMsg::AddAndGet(n, r), CALL).await,
                    };
                    let outcome = match answer {
                        Ok(v) => Outcome::Ok(v),
                        Err(ObjectError::Call(CallError::Timeout)) => Outcome::Timeout,
                        // An error that says the object never got the message: the
                        // checker holds it to that (the increment must not have happened).
                        Err(e) if e.retry() == Retry::Safe => Outcome::Refused,
                        Err(_) => Outcome::Fail,
                    };
                    history.complete(id, outcome);
                    if let Outcome::Ok(_) = outcome {
                        let now = Instant::now();
                        let mut p = progress.lock().unwrap();
                        if invoked >= p.mark && p.first[k].is_none() {
                            p.first[k] = Some(now);
                        }
                        p.last_answer = Some(now);
                    } else {
                        ctx.handle().sleep(FAIL_PAUSE).await;
                    }
                }
                let _ = done_tx.send(());
            });
        }
        Load {
            progress,
            keys,
            stop,
            done,
        }
    }

    /// From now on, [`Load::wait_all_answered`] waits for operations invoked after now.
    fn mark(&self) -> Instant {
        let mut p = self.progress.lock().unwrap();
        p.mark = Instant::now();
        p.first = vec![None; COUNTERS];
        p.mark
    }

    /// Waits (up to [`WAIT`]) until every key of this load answered an operation invoked
    /// after the mark; returns the time from the mark until the last of them answered.
    fn wait_all_answered(&self, what: &str) -> Duration {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let p = self.progress.lock().unwrap();
                let firsts: Option<Vec<Instant>> = self.keys.iter().map(|&k| p.first[k]).collect();
                if let Some(firsts) = firsts {
                    let last = firsts.into_iter().max().unwrap_or(p.mark);
                    return last - p.mark;
                }
            }
            if Instant::now() >= deadline {
                let p = self.progress.lock().unwrap();
                let missing: Vec<usize> = self
                    .keys
                    .iter()
                    .copied()
                    .filter(|&k| p.first[k].is_none())
                    .collect();
                panic!("timed out waiting for every counter to answer {what}: {missing:?} did not");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When any operation of this load was last answered.
    fn last_answer(&self) -> Option<Instant> {
        self.progress.lock().unwrap().last_answer
    }

    /// Stops the callers and waits until each ended (its last call answered or timed out).
    fn finish(self) {
        self.stop.store(true, Ordering::Release);
        for _ in &self.keys {
            // A call may wait for its shard's leader before its own timeout starts.
            self.done
                .recv_timeout(WAIT)
                .expect("a caller never stopped");
        }
    }
}

/// Three children, the node calling them, and the seed of the run's choices.
struct Chaos {
    // Fields drop in order: the children die first, the data dirs (`tmp`) go last.
    children: Children,
    /// The calling node: a member (it then holds replicas and may lead shards too) or a
    /// dial-only client (it holds nothing: every shard is led by a child).
    parent: Node,
    /// Whether `parent` is a member.
    member: bool,
    history: Arc<History<usize>>,
    seed: u64,
    rng: StdRng,
    tmp: tempfile::TempDir,
}

impl Chaos {
    /// Starts the cluster and waits until every shard has three voters; the caller is a
    /// member joined to it, or (`member` false) a dial-only client of all three children.
    fn start(member: bool) -> Chaos {
        let (seed, rng) = cairn_testkit::seeded_rng();
        let tmp = tempfile::tempdir().unwrap();
        let (children, parent) = if member {
            shard_mesh::three_children_and_a_caller(tmp.path())
        } else {
            shard_mesh::make_cluster(tmp.path());
            let children = Children::start(tmp.path(), 3);
            children.wait_replicated(0);
            let seeds: Vec<_> = (0..3).map(|i| children.addr(i)).collect();
            let client = shard_mesh::dial_only_client(tmp.path(), "caller", &seeds);
            (children, client)
        };
        let chaos = Chaos {
            children,
            parent,
            member,
            history: Arc::new(History::new()),
            seed,
            rng,
            tmp,
        };
        for i in 0..chaos.children.len() {
            chaos.wait_member(i);
        }
        chaos
    }

    /// Waits until child `i` is a member again, as every member sees it.
    fn wait_member(&self, i: usize) {
        if self.member {
            self.children.wait_rejoined(i, &self.parent, MEMBERS);
            self.children.wait_all_see(MEMBERS);
        } else {
            self.children.wait_all_see(MEMBERS - 1);
        }
    }

    /// One caller per counter on the parent.
    fn load(&self) -> Load {
        Load::start(
            &self.parent,
            (0..COUNTERS).collect(),
            &self.history,
            self.seed,
        )
    }

    /// The child leading the shard with the most counters that a child leads (a counter
    /// runs on its shard's leader): `(child, shard, counters in it)`.
    fn leader_of_busiest_shard(&self) -> Option<(usize, u32, usize)> {
        let cfg = shard_mesh::shard_config();
        let mut shards: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for k in 0..COUNTERS {
            let shard = object_shard(Counter::CLASS, &counter_key(k), None, &cfg);
            shards.entry(shard.0).or_default().push(k);
        }
        let mut by_load: Vec<(u32, Vec<usize>)> = shards.into_iter().collect();
        by_load.sort_by_key(|(shard, keys)| (std::cmp::Reverse(keys.len()), *shard));
        by_load.into_iter().find_map(|(shard, keys)| {
            (0..self.children.len())
                .find(|&i| {
                    let active = self.children.report(i).active;
                    keys.iter().any(|k| active.contains(k))
                })
                .map(|i| (i, shard, keys.len()))
        })
    }

    /// Waits (up to [`WAIT`]) until every counter's activation is reported somewhere (a
    /// child's report, or the parent itself), so the choices below see who leads what.
    fn locate_counters(&self) {
        let mut missing = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let reports: Vec<_> = (0..self.children.len())
                .map(|i| self.children.report(i).active)
                .collect();
            missing = (0..COUNTERS)
                .filter(|k| !reports.iter().any(|a| a.contains(k)))
                .filter(|&k| {
                    self.parent
                        .object::<Counter>(&counter_key(k))
                        .pid()
                        .is_none()
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            std::thread::sleep(shard_mesh::REPORT_EVERY);
        }
        panic!("counters {missing:?} run nowhere");
    }

    /// Counters running on each child and on the parent (for the log).
    fn placement(&self) -> String {
        let mut out: Vec<String> = (0..self.children.len())
            .map(|i| format!("n{i}: {}", self.children.report(i).active.len()))
            .collect();
        let here = (0..COUNTERS)
            .filter(|&k| {
                self.parent
                    .object::<Counter>(&counter_key(k))
                    .pid()
                    .is_some()
            })
            .count();
        out.push(format!("parent: {here}"));
        out.join(", ")
    }

    /// The child running the most counters.
    fn busiest_child(&self) -> usize {
        (0..self.children.len())
            .max_by_key(|&i| self.children.report(i).active.len())
            .unwrap()
    }

    /// Waits until restarted child `i` is a member again and every counter answers.
    fn rejoin(&self, i: usize, load: &Load) {
        self.wait_member(i);
        load.mark();
        load.wait_all_answered("after the restart");
    }

    /// Reads every counter's final value (callers stopped) and checks the history.
    fn check(&self) {
        let mut finals = BTreeMap::new();
        for k in 0..COUNTERS {
            let counter = self.parent.object::<Counter>(&counter_key(k));
            let deadline = Instant::now() + WAIT;
            let value = loop {
                match self.parent.block_on(counter.call(CounterMsg::Get, CALL)) {
                    Ok(v) => break v,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "c{k}: no final value: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            };
            finals.insert(k, value);
        }
        match self.history.check(&finals) {
            Ok(s) => eprintln!(
                "history of {} counters checks out: {} operations, {} answered, {} failed, {} refused before delivery, {} timed out (seed {})",
                s.keys, s.ops, s.ok, s.failed, s.refused, s.timed_out, self.seed
            ),
            Err(v) => panic!(
                "seed {}: {v}\nall violations: {:#?}",
                self.seed, v.0
            ),
        }
    }
}

/// Median and maximum of `times`.
fn median_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

/// `rounds` of kill -9 and restart under load (see the module doc).
fn kill_rounds(rounds: usize) {
    let _serial = serial();
    let mut chaos = Chaos::start(false);
    let load = chaos.load();
    load.mark();
    load.wait_all_answered("at the start");
    let mut recovery = Vec::with_capacity(rounds);
    for round in 0..rounds {
        chaos.locate_counters();
        let busiest = chaos.leader_of_busiest_shard();
        let (victim, why) = match busiest {
            Some((i, shard, n)) if round % 2 == 0 => {
                (i, format!("leader of shard {shard} ({n} counters)"))
            }
            _ => (
                chaos.rng.gen_range(0..chaos.children.len()),
                "seeded".into(),
            ),
        };
        let placement = chaos.placement();
        let ran = chaos.children.report(victim).active.len();
        chaos.children.kill(victim);
        load.mark();
        let took = load.wait_all_answered(&format!("after kill -9 of n{victim}"));
        recovery.push((took, ran));
        eprintln!("round {round}: kill -9 n{victim} ({why}; counters on {placement}): every counter answered again within {took:?}");
        chaos.children.restart(victim);
        chaos.rejoin(victim, &load);
    }
    load.finish();
    chaos.check();
    let all: Vec<Duration> = recovery.iter().map(|r| r.0).collect();
    let (median, max) = median_max(&all);
    eprintln!(
        "{rounds} kill -9 rounds: every counter answered again within median {median:?}, max {max:?}"
    );
    let running: Vec<Duration> = recovery.iter().filter(|r| r.1 > 0).map(|r| r.0).collect();
    if !running.is_empty() {
        let (median, max) = median_max(&running);
        eprintln!(
            "{} of them killed a node running counters: median {median:?}, max {max:?}",
            running.len()
        );
    }
}

#[test]
fn kill_rounds_lose_no_acknowledged_increment() {
    kill_rounds(ROUNDS);
}

#[test]
#[ignore = "soak: 100 kill rounds, minutes long"]
fn soak_kill_rounds() {
    kill_rounds(SOAK_ROUNDS);
}

#[test]
fn a_rolling_restart_loses_no_acknowledged_increment() {
    let _serial = serial();
    let mut chaos = Chaos::start(false);
    let load = chaos.load();
    load.mark();
    load.wait_all_answered("at the start");
    let mut recovery = Vec::new();
    for i in 0..chaos.children.len() {
        chaos.children.stop(i);
        load.mark();
        let took = load.wait_all_answered(&format!("after n{i} stopped"));
        recovery.push(took);
        eprintln!("rolling restart: n{i} stopped; every counter answered again within {took:?}");
        chaos.children.restart(i);
        chaos.rejoin(i, &load);
    }
    load.finish();
    chaos.check();
    let (median, max) = median_max(&recovery);
    eprintln!(
        "rolling restart: every counter answered again within median {median:?}, max {max:?}"
    );
}

#[test]
fn a_cut_off_node_acknowledges_nothing_and_the_histories_check_out_after_healing() {
    partition(Cut::Nftables, Healed::Member);
}

/// The same partition, then the healed node must also serve its callers again.
#[test]
fn a_healed_node_rejoins_and_serves_again() {
    partition(Cut::Nftables, Healed::Serves);
}

/// The partition by fault injection in the mesh (`cairn::net::faults`) rather than by
/// nftables: it needs no root, so it runs everywhere.
#[test]
fn a_node_cut_off_by_fault_injection_acknowledges_nothing_and_serves_again_after_healing() {
    partition(Cut::InMesh, Healed::Serves);
}

/// What a healed partition must give besides a history that checks out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Healed {
    /// The cut-off node is a member again, as every member sees it, within [`MERGE_BOUND`].
    Member,
    /// That, and calls through it answer again within [`REJOIN_BOUND`].
    Serves,
}

/// How a partition drops the packets between its sides.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// nftables rules on the ports (root and `nft`; skipped without, unless in CI).
    Nftables,
    /// The mesh's own fault injection, in every node's process.
    InMesh,
}

/// Cuts off the child running the most counters (see the module doc); after healing, it
/// must be a member again, and (`Healed::Serves`) answer the calls made through it.
fn partition(how: Cut, healed_must: Healed) {
    let _serial = serial();
    // Skip (or, in CI, fail) before starting anything if packets cannot be dropped here.
    if let Cut::Nftables = how {
        match cairn_testkit::require_port_partition(&[1], &[2]) {
            Some(probe) => probe.heal().unwrap(),
            None => return,
        }
    }
    let chaos = Chaos::start(true);
    let load = chaos.load();
    load.mark();
    load.wait_all_answered("at the start");
    chaos.locate_counters();
    let victim = chaos.busiest_child();
    // A dial-only client whose only gateway is the victim: the one caller that still
    // reaches it during the partition. Its port is neither side's.
    let via_victim = Node::builder()
        .name("probe")
        .workers(1)
        .client()
        .data_dir(chaos.tmp.path().join("probe-data"))
        .cluster(chaos.tmp.path().join("cluster"))
        .join([chaos.children.addr(victim)])
        .start()
        .unwrap();
    via_victim.host::<Counter>();
    let probe_keys: Vec<usize> = (0..COUNTERS).step_by(3).collect();
    let probe = Load::start(&via_victim, probe_keys, &chaos.history, !chaos.seed);
    probe.mark();
    probe.wait_all_answered("through the victim at the start");

    let port = |addr: std::net::SocketAddr| addr.port();
    let mut majority: Vec<u16> = (0..chaos.children.len())
        .filter(|&i| i != victim)
        .map(|i| port(chaos.children.addr(i)))
        .collect();
    majority.push(port(chaos.parent.mesh().unwrap().local_addr()));
    let victim_port = port(chaos.children.addr(victim));
    let (mut nft, mut in_mesh) = (None, None);
    match how {
        Cut::Nftables => {
            nft = Some(
                cairn_testkit::ports::PortPartition::new(&[victim_port], &majority)
                    .expect("nftables worked a moment ago"),
            )
        }
        Cut::InMesh => in_mesh = Some(chaos.children.cut(&[victim_port], &majority)),
    }
    let cut_at = load.mark();
    eprintln!(
        "partition ({how:?}): n{victim} (running {} counters) cut off from the other members",
        chaos.children.report(victim).active.len()
    );
    let majority_took = load.wait_all_answered("on the majority side");
    eprintln!("partition: the majority side answered every counter again within {majority_took:?}");
    let hold_until = cut_at + PARTITION_HOLD;
    while Instant::now() < hold_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = probe.last_answer().unwrap_or(cut_at);
    let serving_after = last.saturating_duration_since(cut_at);
    eprintln!("partition: the cut-off node stopped answering {serving_after:?} after the cut");
    assert!(
        serving_after <= STOP_SERVING_BOUND,
        "the cut-off node still answered {serving_after:?} after the cut"
    );
    if let Some(cut) = nft.take() {
        cut.heal().unwrap();
    }
    if let Some(cut) = in_mesh.take() {
        cut.heal();
    }
    let healed = probe.mark();
    chaos.wait_member(victim);
    let member_again = healed.elapsed();
    eprintln!("partition healed: n{victim} was a member again (as every member sees it) {member_again:?} after healing");
    assert!(
        member_again <= MERGE_BOUND,
        "the healed node was a member again only {member_again:?} after healing"
    );
    if healed_must == Healed::Member {
        // Check what both sides answered, reading the final values through the majority.
        probe.finish();
        load.finish();
        chaos.check();
        return;
    }
    let probe_took = probe.wait_all_answered("through the healed node");
    eprintln!("partition healed: calls through n{victim} answered again within {probe_took:?}");
    assert!(
        probe_took <= REJOIN_BOUND,
        "calls through the healed node answered again only {probe_took:?} after healing"
    );
    load.mark();
    load.wait_all_answered("after healing");
    probe.finish();
    load.finish();
    chaos.check();
}
