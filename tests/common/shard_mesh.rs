//! Meshes of replicated-shard nodes in child processes, for the tests that kill, stop and
//! cut off whole nodes (`tests/shards_failover.rs`, `tests/shards_chaos.rs`).
//!
//! The parent re-executes its own test binary as [`CHILD_TEST`] (one mesh node per child,
//! on 127.0.0.1 with a random port; the first creates the shard cluster, the others join
//! it). Every test binary that uses this module declares that test with
//! [`shards_node_child!`](crate::shards_node_child), a call of [`child_main`], which does
//! nothing unless [`CHILD_VAR`] is set. [`serial`] runs one scenario of a binary at a time.
//!
//! # The protocol between parent and child
//! - The child writes marked stdout lines ([`cairn_testkit::tell_parent`]): `UP <id> <addr>`
//!   once its node runs, then `STATE <members> <replicated> <active> <led>` every
//!   [`REPORT_EVERY`]: the live mesh members it sees (itself included), the shards whose
//!   replica set here has the full replication factor of voters, which counters
//!   ([`counter_key`] `k` for `k <` [`SCANNED_KEYS`]) have their activation here (`-` for
//!   none, else indices joined by `,`), and how many shards it leads. A counter runs only on
//!   its shard's leader, so this tells the parent who leads which shard. With it comes
//!   `HOSTS <shard:role,..>`: the shards with a replica here (`L` leader, `F` follower, `C`
//!   candidate, `l` learner; `-` for none). An alarm of an [`Alarmed`](super::Alarmed) object
//!   that fires here writes `FIRED <key>` at once.
//! - The parent writes to the child's stdin: `STOP` asks for a graceful stop (the node
//!   shuts down, closing its mesh, and the child exits 0). `CUT <ports> <ports>` (ports
//!   joined by `,`) installs an in-mesh partition between the two sets of ports in the child
//!   ([`cairn::net::faults`]: its QUIC sockets drop the datagrams between them) and `HEAL`
//!   removes it; the child answers each with `FAULTS <n>`, the count of such commands it
//!   applied. End of file (the parent died or dropped its [`Children`]) makes the child exit
//!   at once, so no child outlives its test.
//!
//! A test that needs other shard settings (shards, replication, down grace) starts its
//! children with [`Children::start_with`]; they get them through [`CONF_VAR`].
//!
//! Children log membership changes and warnings ([`DEFAULT_CHILD_LOG`]) to their stderr,
//! which [`Children`] prints when it drops them during a failing test's unwinding, so a
//! failed wait in CI shows who saw whom. Set `CAIRN_CHILD_LOG` to another `RUST_LOG` filter
//! (e.g. `cairn_net=debug`) to have more, printed even when the test passes. The parent's own
//! nodes log with the same filter ([`parent_log`]) into libtest's capture, shown on failure.
//!
//! # Invariants
//! [`Children`] keeps the latest report of each child *life*: a report of a killed life
//! never overwrites the state of the life that replaced it. Dropping [`Children`] kills
//! (SIGKILL) and reaps every child still running.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn::net::faults::Partition;
use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::ShardConfig;
use cairn_testkit::{ChildRun, CHILD_LINE};

use super::{Alarmed, Counter};

/// The environment variable carrying a child's spec, `dir|name|seed|listen` (seed and
/// listen may be empty: no seed, a free port).
pub const CHILD_VAR: &str = "CAIRN_SHARDS_CHILD";
/// A `RUST_LOG` filter for the children's logs (see the module doc).
pub const LOG_VAR: &str = "CAIRN_CHILD_LOG";
/// The children's log filter when [`LOG_VAR`] is not set.
pub const DEFAULT_CHILD_LOG: &str = "warn,cairn_net::mesh::membership=info";
/// The environment variable carrying a child's shard settings when they are not
/// [`shard_config`]'s: `shards|replication|down_grace_ms` (see [`TestShards`]).
pub const CONF_VAR: &str = "CAIRN_SHARDS_CHILD_CONF";
/// The name of the child's `#[test]` function in every binary using this module.
pub const CHILD_TEST: &str = "shards_node_child";
/// Shards of the test clusters: few, so every node leads some and elections are quick.
pub const SHARDS: u32 = 8;
/// Bound on every wait for the mesh (startup, replication, rejoin, failover).
pub const WAIT: Duration = Duration::from_secs(60);
/// How often a child reports its state.
pub const REPORT_EVERY: Duration = Duration::from_millis(200);
/// How long a silent peer stays a member: short, so kills are detected quickly.
pub const FAILURE_TIMEOUT: Duration = Duration::from_secs(1);
/// Counters `0..SCANNED_KEYS` are the ones whose activations children report.
pub const SCANNED_KEYS: usize = 64;

/// The key of test counter `k`.
pub fn counter_key(k: usize) -> String {
    format!("c{k}")
}

/// The oracle once the callers have stopped: counter `k` ([`counter_key`]), read through
/// `client`, holds at least the highest total acknowledged to its caller and at most the
/// increments it attempted; `bounds` gives `(acknowledged, attempted)` per counter, in order.
pub fn check_counters(client: &Node, bounds: impl IntoIterator<Item = (u64, u64)>) {
    for (k, (acked, attempts)) in bounds.into_iter().enumerate() {
        let counter = client.object::<Counter>(&counter_key(k));
        let value = client
            .block_on(counter.call(super::CounterMsg::Get, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("c{k}: {e}"));
        assert!(
            value >= acked,
            "c{k} holds {value}, but {acked} was acknowledged"
        );
        assert!(
            value <= attempts,
            "c{k} holds {value}, but only {attempts} increments were attempted"
        );
    }
}

/// The shard settings of every node of a test cluster.
pub fn shard_config() -> ShardConfig {
    ShardConfig {
        shards: SHARDS,
        ..ShardConfig::default()
    }
}

/// Shard settings of a test cluster other than [`shard_config`]'s (see
/// [`Children::start_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestShards {
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: usize,
    /// How long a member may be down before its replicas are replaced.
    pub down_grace: Duration,
}

impl TestShards {
    /// The settings as a node takes them.
    pub fn config(&self) -> ShardConfig {
        ShardConfig {
            shards: self.shards,
            replication: self.replication,
            down_grace: self.down_grace,
            ..ShardConfig::default()
        }
    }

    fn encode(&self) -> String {
        format!(
            "{}|{}|{}",
            self.shards,
            self.replication,
            self.down_grace.as_millis()
        )
    }

    fn decode(text: &str) -> TestShards {
        let v: Vec<u64> = text.split('|').map(|w| w.parse().unwrap()).collect();
        TestShards {
            shards: v[0] as u32,
            replication: v[1] as usize,
            down_grace: Duration::from_millis(v[2]),
        }
    }
}

/// A node of a test cluster under `dir`: named `name`, data in `dir/name`, the cluster CA
/// in `dir/cluster`, replicated shards, on a free port of 127.0.0.1. Add seeds, `start()`.
pub fn builder(dir: &Path, name: &str) -> NodeBuilder {
    builder_with(dir, name, shard_config())
}

/// [`builder`] with shard settings `shards`.
pub fn builder_with(dir: &Path, name: &str, shards: ShardConfig) -> NodeBuilder {
    Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .shards(shards)
        .failure_timeout(FAILURE_TIMEOUT)
        .listen("127.0.0.1:0".parse().unwrap())
}

/// What the child's stdin said.
const RUNNING: u8 = 0;
const STOP: u8 = 1;
const PARENT_GONE: u8 = 2;

/// Declares [`CHILD_TEST`], the `#[test]` function the children run, at the top level of a
/// test binary that has `mod common;`: `shards_node_child!();`.
#[macro_export]
macro_rules! shards_node_child {
    () => {
        /// The child's body: one mesh node; does nothing unless run by a test of this binary.
        #[test]
        fn shards_node_child() {
            $crate::common::shard_mesh::child_main();
        }
    };
}

/// One scenario at a time in a test binary: each runs several nodes, which would otherwise
/// compete for the CPU.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock of [`SERIAL`] for one scenario (a scenario that panicked holding it does
/// not stop the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The child's body (see the module doc); returns at once unless run by [`Children`].
pub fn child_main() {
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return;
    };
    cairn_testkit::abort_on_panic();
    let filter = std::env::var(LOG_VAR).unwrap_or_else(|_| DEFAULT_CHILD_LOG.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let mut parts = spec.split('|');
    let (dir, name, seed, listen) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let shards = std::env::var(CONF_VAR)
        .map(|c| TestShards::decode(&c).config())
        .unwrap_or_else(|_| shard_config());
    let mut b = builder_with(Path::new(dir), name, shards);
    if !seed.is_empty() {
        b = b.join([seed.parse().unwrap()]);
    }
    if !listen.is_empty() {
        b = b.listen(listen.parse().unwrap());
    }
    let node = b.start().unwrap();
    node.host::<Counter>();
    node.host::<Alarmed>();
    let mesh = node.mesh().unwrap();
    cairn_testkit::tell_parent(&format!("UP {} {}", node.id().0, mesh.local_addr()));
    let command = Arc::new(AtomicU8::new(RUNNING));
    let seen = command.clone();
    std::thread::spawn(move || {
        let mut cut: Option<Partition> = None;
        let mut applied = 0;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["STOP"] => {
                    seen.store(STOP, Ordering::Release);
                    return;
                }
                ["CUT", a, b] => cut = Some(Partition::new(&ports(a), &ports(b))),
                ["HEAL"] => cut = None,
                _ => continue,
            }
            applied += 1;
            cairn_testkit::tell_parent(&format!("FAULTS {applied}"));
        }
        drop(cut);
        seen.store(PARENT_GONE, Ordering::Release);
    });
    loop {
        match command.load(Ordering::Acquire) {
            STOP => {
                node.shutdown();
                std::process::exit(0);
            }
            PARENT_GONE => std::process::exit(0),
            _ => {}
        }
        let full = node.block_on(node.shards_fully_replicated());
        let members = mesh.members().len();
        let active: Vec<String> = (0..SCANNED_KEYS)
            .filter(|&k| node.object::<Counter>(&counter_key(k)).pid().is_some())
            .map(|k| k.to_string())
            .collect();
        let active = if active.is_empty() {
            "-".to_owned()
        } else {
            active.join(",")
        };
        let led = node.shard_stats().map_or(0, |s| s.led);
        cairn_testkit::tell_parent(&format!("STATE {members} {full} {active} {led}"));
        cairn_testkit::tell_parent(&format!("HOSTS {}", hosts(&node)));
        std::thread::sleep(REPORT_EVERY);
    }
}

/// The shards with a replica on `node`, as `shard:role` joined by `,` (`-` for none).
fn hosts(node: &Node) -> String {
    let Some(stats) = node.shard_stats() else {
        return "-".into();
    };
    let list: Vec<String> = stats
        .shards
        .iter()
        .map(|v| format!("{}:{}", v.shard.0, v.role.letter()))
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// Ports joined by `,`.
fn ports(list: &str) -> Vec<u16> {
    list.split(',').map(|p| p.parse().unwrap()).collect()
}

/// Ports `ports` joined by `,`.
fn port_list(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    list.join(",")
}

/// Logs this (parent) process's nodes with the children's filter, through libtest's
/// capture: a failing test prints them with its output, a passing one does not.
pub fn parent_log() {
    let filter = std::env::var(LOG_VAR).unwrap_or_else(|_| DEFAULT_CHILD_LOG.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Writes a fresh cluster CA into `dir/cluster`.
pub fn make_cluster(dir: &Path) {
    ClusterCa::generate()
        .unwrap()
        .save(&dir.join("cluster"))
        .unwrap();
}

/// Makes a cluster under `dir`: its CA, three children (the creator leads every shard at
/// first; returns once each shard has three voters) and an in-process member named
/// `parent`, joined and hosting [`Counter`], which the tests call from.
pub fn three_children_and_a_caller(dir: &Path) -> (Children, Node) {
    parent_log();
    make_cluster(dir);
    let children = Children::start(dir, 3);
    children.wait_replicated(0);
    let parent = builder(dir, "parent")
        .join([children.addr(0)])
        .start()
        .unwrap();
    parent.host::<Counter>();
    (children, parent)
}

/// A dial-only client of the cluster under `dir` (no member, no replicas: it calls through
/// the first of `seeds` that answers, then the next), hosting [`Counter`]; returned once it
/// reached a gateway (within [`WAIT`]).
pub fn dial_only_client(dir: &Path, name: &str, seeds: &[SocketAddr]) -> Node {
    parent_log();
    let node = Node::builder()
        .name(name)
        .workers(2)
        .client()
        .data_dir(dir.join(format!("{name}-data")))
        .cluster(dir.join("cluster"))
        .join(seeds.iter().copied())
        .start()
        .unwrap();
    node.host::<Counter>();
    node.host::<Alarmed>();
    let deadline = Instant::now() + WAIT;
    while node.mesh().unwrap().gateway().is_none() {
        assert!(Instant::now() < deadline, "{name} never reached a gateway");
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

/// The latest report of one child.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Which life of the child this is (0 for the first start).
    pub life: u32,
    /// Its node id and mesh address, once it reported `UP`.
    pub up: Option<(NodeId, SocketAddr)>,
    /// Live members it sees, itself included.
    pub members: usize,
    /// Shards fully replicated as it sees them.
    pub replicated: u32,
    /// The counters (by index, see [`counter_key`]) whose activation runs there.
    pub active: Vec<usize>,
    /// How many shards it leads.
    pub led: usize,
    /// Whether this life's stdout closed (the process ended).
    pub gone: bool,
    /// How many fault commands (`CUT`, `HEAL`) this life applied.
    pub faults: u32,
    /// The shards with a replica there, with its role letter (see the module doc).
    pub hosts: Vec<(u32, char)>,
    /// The [`Alarmed`] keys whose alarm fired there, with when the parent heard it.
    pub fired: Vec<(String, Instant)>,
}

impl Report {
    /// The shards this child leads.
    pub fn leads(&self) -> std::collections::BTreeSet<u32> {
        self.hosts
            .iter()
            .filter(|(_, role)| *role == 'L')
            .map(|(s, _)| *s)
            .collect()
    }

    /// The shards with a replica on this child.
    pub fn hosted(&self) -> std::collections::BTreeSet<u32> {
        self.hosts.iter().map(|(s, _)| *s).collect()
    }
}

/// One running child.
struct Child {
    run: ChildRun,
    stdin: ChildStdin,
}

/// Child nodes of one test cluster (see the module doc).
pub struct Children {
    dir: PathBuf,
    /// Shard settings passed to every child ([`CONF_VAR`]), if not the default ones.
    conf: Option<TestShards>,
    children: Vec<Option<Child>>,
    reports: Arc<(Mutex<Vec<Report>>, Condvar)>,
}

impl Children {
    /// Starts `n` children under `dir` (which holds the cluster CA): the first creates the
    /// cluster, the others join it through the first; returns once each reported `UP`.
    pub fn start(dir: &Path, n: usize) -> Children {
        Children::start_conf(dir, n, None)
    }

    /// [`Children::start`], every child with shard settings `conf`.
    pub fn start_with(dir: &Path, n: usize, conf: TestShards) -> Children {
        Children::start_conf(dir, n, Some(conf))
    }

    fn start_conf(dir: &Path, n: usize, conf: Option<TestShards>) -> Children {
        let mut children = Children {
            dir: dir.to_owned(),
            conf,
            children: (0..n).map(|_| None).collect(),
            reports: Arc::new((Mutex::new(vec![Report::default(); n]), Condvar::new())),
        };
        children.spawn(0, None, None);
        let seed = children.addr(0);
        for i in 1..n {
            children.spawn(i, Some(seed), None);
        }
        children
    }

    /// Starts child `i` (named `n<i>`, data in `dir/n<i>`), joining through `seed` if given,
    /// listening on `listen` if given (else a free port); returns once it reported `UP`.
    fn spawn(&mut self, i: usize, seed: Option<SocketAddr>, listen: Option<SocketAddr>) {
        assert!(self.children[i].is_none(), "child {i} still runs");
        let life = {
            let mut reports = self.reports.0.lock().unwrap();
            let r = &mut reports[i];
            let life = if r.up.is_some() || r.gone {
                r.life + 1
            } else {
                0
            };
            *r = Report {
                life,
                ..Report::default()
            };
            life
        };
        let text = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let spec = format!(
            "{}|n{i}|{}|{}",
            self.dir.display(),
            text(seed),
            text(listen)
        );
        let conf = self.conf.map(|c| c.encode());
        let mut env = vec![(CHILD_VAR, spec.as_str())];
        if let Some(c) = &conf {
            env.push((CONF_VAR, c.as_str()));
        }
        let mut run = ChildRun::start(CHILD_TEST, &env, |cmd| {
            cmd.stdin(Stdio::piped());
        });
        let stdin = run.child.stdin.take().unwrap();
        let out = run.child.stdout.take().unwrap();
        let reports = self.reports.clone();
        std::thread::spawn(move || {
            let update = |f: &dyn Fn(&mut Report)| {
                let (lock, changed) = &*reports;
                let mut all = lock.lock().unwrap();
                if all[i].life == life {
                    f(&mut all[i]);
                    changed.notify_all();
                }
            };
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Some((_, rest)) = line.split_once(CHILD_LINE) else {
                    continue;
                };
                let words: Vec<&str> = rest.split(' ').collect();
                match words.as_slice() {
                    ["UP", id, addr] => {
                        let up = (NodeId(id.parse().unwrap()), addr.parse().unwrap());
                        update(&|r| r.up = Some(up));
                    }
                    ["FAULTS", n] => {
                        let n = n.parse().unwrap();
                        update(&|r| r.faults = n);
                    }
                    ["HOSTS", list] => {
                        let hosts: Vec<(u32, char)> = list
                            .split(',')
                            .filter(|e| *e != "-")
                            .map(|e| {
                                let (s, role) = e.split_once(':').unwrap();
                                (s.parse().unwrap(), role.chars().next().unwrap())
                            })
                            .collect();
                        update(&|r| r.hosts = hosts.clone());
                    }
                    ["FIRED", key] => {
                        let at = Instant::now();
                        update(&|r| r.fired.push(((*key).to_owned(), at)));
                    }
                    ["STATE", members, full, active, led] => {
                        let (m, f) = (members.parse().unwrap(), full.parse().unwrap());
                        let led = led.parse().unwrap();
                        let a: Vec<usize> = match *active {
                            "-" => Vec::new(),
                            list => list.split(',').map(|k| k.parse().unwrap()).collect(),
                        };
                        update(&|r| {
                            r.members = m;
                            r.replicated = f;
                            r.active = a.clone();
                            r.led = led;
                        });
                    }
                    _ => {}
                }
            }
            update(&|r| r.gone = true);
        });
        self.children[i] = Some(Child { run, stdin });
        self.wait_for(&format!("child {i} to come up"), |r| {
            assert!(!r[i].gone, "child {i} ended before it came up");
            r[i].up.is_some()
        });
    }

    /// Waits (up to [`WAIT`]) until `done` holds for the children's reports.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Report]) -> bool) {
        let deadline = Instant::now() + WAIT;
        let (lock, changed) = &*self.reports;
        let mut reports = lock.lock().unwrap();
        while !done(&reports) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen: Vec<String> = reports
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        format!(
                            "n{i} (life {}{}): {} members, {} replicated shards",
                            r.life,
                            if r.gone { ", gone" } else { "" },
                            r.members,
                            r.replicated
                        )
                    })
                    .collect();
                drop(reports);
                panic!(
                    "timed out waiting for {what}; children: {}",
                    seen.join("; ")
                );
            }
            reports = changed.wait_timeout(reports, left).unwrap().0;
        }
    }

    /// Waits until child `i` sees every shard with its full replication factor of voters.
    pub fn wait_replicated(&self, i: usize) {
        self.wait_for(
            &format!("child {i} to see {SHARDS} replicated shards"),
            |r| r[i].replicated == SHARDS,
        );
    }

    /// How many children there are.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Child `i`'s node id (it keeps it across restarts).
    pub fn id(&self, i: usize) -> NodeId {
        self.report(i).up.expect("the child came up").0
    }

    /// Child `i`'s mesh address (its one UDP port).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.report(i).up.expect("the child came up").1
    }

    /// Child `i`'s latest report.
    pub fn report(&self, i: usize) -> Report {
        self.reports.0.lock().unwrap()[i].clone()
    }

    /// Kills child `i` with SIGKILL and reaps it; returns when it is dead.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("the child runs");
        child.run.child.kill().unwrap();
        let _ = child.run.finish();
    }

    /// Asks child `i` to stop gracefully (its node shuts down) and waits until it exited.
    pub fn stop(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("the child runs");
        child.stdin.write_all(b"STOP\n").unwrap();
        child.stdin.flush().unwrap();
        let deadline = Instant::now() + WAIT;
        while child.run.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "child {i} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (status, stderr) = child.run.finish();
        assert!(
            status.success(),
            "child {i} stopped with {status}: {stderr}"
        );
    }

    /// Starts one more child, listening on `listen`, joining through the first running
    /// child; returns its index once it is up.
    pub fn add(&mut self, listen: SocketAddr) -> usize {
        let i = self.children.len();
        let seed = (0..i)
            .find(|&j| self.children[j].is_some())
            .map(|j| self.addr(j))
            .expect("a child runs");
        self.children.push(None);
        self.reports.0.lock().unwrap().push(Report::default());
        self.spawn(i, Some(seed), Some(listen));
        i
    }

    /// Whether child `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Starts child `i` again on its data dir and at its address (as a restarted server
    /// comes back), joining through another running child, and checks that it kept its id.
    pub fn restart(&mut self, i: usize) {
        let (old, addr) = (self.id(i), self.addr(i));
        let seed = (0..self.len())
            .find(|&j| j != i && self.children[j].is_some())
            .map(|j| self.addr(j))
            .expect("another child runs");
        self.spawn(i, Some(seed), Some(addr));
        assert_eq!(self.id(i), old, "a restarted node keeps its id");
    }

    /// Cuts ports `a` off from ports `b` by fault injection in the mesh: in every running
    /// child and in this process (for the nodes it runs), until the returned cut is healed.
    /// Returns once every child applied it.
    pub fn cut(&self, a: &[u16], b: &[u16]) -> InMeshCut<'_> {
        InMeshCut {
            children: self,
            local: self.cut_unbound(a, b),
        }
    }

    /// [`Children::cut`] without holding on to the children (so more may be started while
    /// it lasts): heal it with [`Children::heal_all`] and by dropping the returned partition
    /// (this process's side). Children started after the cut do not know it; the cut-off
    /// side's processes drop their traffic anyway.
    pub fn cut_unbound(&self, a: &[u16], b: &[u16]) -> Partition {
        let local = Partition::new(a, b);
        self.tell_all(&format!("CUT {} {}", port_list(a), port_list(b)));
        local
    }

    /// Heals every partition in every running child.
    pub fn heal_all(&self) {
        self.tell_all("HEAL");
    }

    /// Sends `command` to every running child and waits until each applied it.
    fn tell_all(&self, command: &str) {
        let mut expected = Vec::new();
        for (i, child) in self.children.iter().enumerate() {
            let Some(child) = child else { continue };
            let applied = self.reports.0.lock().unwrap()[i].faults;
            let mut stdin = &child.stdin;
            writeln!(stdin, "{command}").unwrap();
            stdin.flush().unwrap();
            expected.push((i, applied + 1));
        }
        self.wait_for(&format!("every child to apply {command}"), |r| {
            expected.iter().all(|&(i, n)| r[i].faults >= n)
        });
    }

    /// Waits until every running child sees at least `members` live members (itself
    /// included).
    pub fn wait_all_see(&self, members: usize) {
        let running: Vec<usize> = (0..self.len())
            .filter(|&i| self.children[i].is_some())
            .collect();
        self.wait_for(&format!("every child to see {members} members"), |r| {
            running.iter().all(|&i| r[i].members >= members)
        });
    }

    /// Waits until child `i` sees `members` live members (itself included) and `node`
    /// sees child `i` as a live member.
    pub fn wait_rejoined(&self, i: usize, node: &Node, members: usize) {
        let id = self.id(i);
        self.wait_for(&format!("child {i} to see {members} members"), |r| {
            r[i].members >= members
        });
        let deadline = Instant::now() + WAIT;
        let mesh = node.mesh().unwrap();
        while !mesh.members().iter().any(|m| m.node == id) {
            assert!(Instant::now() < deadline, "{id} never rejoined");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A partition by fault injection ([`Children::cut`]), in force until healed.
pub struct InMeshCut<'a> {
    children: &'a Children,
    local: Partition,
}

impl InMeshCut<'_> {
    /// Heals the partition in every running child and in this process.
    pub fn heal(self) {
        self.children.heal_all();
        self.local.heal();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let show = std::env::var_os(LOG_VAR).is_some() || std::thread::panicking();
        for (i, child) in self.children.iter_mut().enumerate() {
            let Some(child) = child.take() else { continue };
            let mut run = child.run;
            let _ = run.child.kill();
            let (_, stderr) = run.finish();
            if show {
                eprintln!("---- n{i}'s stderr ----\n{stderr}");
            }
        }
    }
}
