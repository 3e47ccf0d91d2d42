//! SWIM membership and cluster-wide names on real meshes (127.0.0.1, port 0), several
//! runtimes in one test process.

mod common;

use std::time::{Duration, Instant};

use cairn_net::{ClusterCa, Member, Mesh, MeshConfig, NameError, NodeEvent, NodeEvents, TlsConfig};
use cairn_scheduler::{CallError, Ctx, ExitReason, Message, NodeId, Pid, Reply, Runtime};
use common::{init_logs, localhost, spawn};
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

/// The default failure timeout: the bound every detection test asserts.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous bound for things that need no failure detection (joins, gossip).
const SETTLE: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// Kept, never answered.
    Hold(Reply<u64>),
}

struct Node {
    rt: Runtime,
    mesh: Mesh,
    events: NodeEvents,
}

fn cert_name(n: u64) -> String {
    format!("node-{n}")
}

/// The id of the node named `cert_name(n)`.
fn id(n: u64) -> NodeId {
    NodeId::of_name(&cert_name(n))
}

fn start(ca: &ClusterCa, n: u64, seeds: &[&Node], region: Option<&str>) -> Node {
    start_with(ca, n, seeds, region, 2, FAILURE_TIMEOUT)
}

fn start_with(
    ca: &ClusterCa,
    n: u64,
    seeds: &[&Node],
    region: Option<&str>,
    workers: usize,
    failure_timeout: Duration,
) -> Node {
    init_logs();
    let rt = Runtime::builder()
        .workers(workers)
        .node(id(n))
        .build()
        .unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(&cert_name(n)).unwrap());
    let mut config = MeshConfig::new(localhost(), tls);
    assert_eq!(config.failure_timeout, FAILURE_TIMEOUT, "the default");
    config = config.failure_timeout(failure_timeout);
    if let Some(region) = region {
        config = config.region(region);
    }
    for seed in seeds {
        config = config.seed(seed.mesh.local_addr(), seed.mesh.name());
    }
    let mesh = Mesh::start(&rt.handle(), config).unwrap();
    mesh.declare::<Msg>("test.membership.Msg").unwrap();
    let events = mesh.node_events();
    Node { rt, mesh, events }
}

/// The `n`s of `members` (named `cert_name(n)`), in order.
fn node_ids(members: &[Member]) -> Vec<u64> {
    let mut ns: Vec<u64> = members
        .iter()
        .map(|m| m.name.strip_prefix("node-").unwrap().parse().unwrap())
        .collect();
    ns.sort_unstable();
    ns
}

/// The member `cert_name(n)` in `members`.
fn member(members: &[Member], n: u64) -> &Member {
    members.iter().find(|m| m.node == id(n)).unwrap()
}

/// Waits, on `node`'s membership events, until `cond(members)` holds; panics after
/// `within`. Checks first, so events before the subscription are not needed.
fn wait_members(node: &mut Node, within: Duration, cond: impl Fn(&[Member]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let members = node.mesh.members();
        if cond(&members) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let handle = node.rt.handle();
        let events = &mut node.events;
        let got = node.rt.block_on(handle.timeout(left, events.next()));
        assert!(
            got.is_ok(),
            "node {} still sees members {:?} after {within:?}",
            node.mesh.node(),
            node_ids(&members)
        );
    }
}

/// Waits for `NodeEvent::Down` of `down` on `node`; returns its incarnation.
fn wait_down(node: &mut Node, down: u64, within: Duration) -> u64 {
    let handle = node.rt.handle();
    let events = &mut node.events;
    let got = node.rt.block_on(handle.timeout(within, async {
        loop {
            if let NodeEvent::Down {
                node, incarnation, ..
            } = events.next().await
            {
                if node == id(down) {
                    return incarnation;
                }
            }
        }
    }));
    got.unwrap_or_else(|_| {
        panic!(
            "node {} saw no Down of node {down} within {within:?}",
            node.mesh.node()
        )
    })
}

/// Polls `cond` until it holds (the name table has no event stream); panics after `within`.
fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process that waits until it is told to stop (any message) or killed.
fn idle_process(node: &Node) -> Pid {
    node.rt
        .spawn(|mut ctx: Ctx<()>| async move {
            ctx.recv().await;
        })
        .pid()
}

/// A process that keeps every `Hold` call unanswered and reports each one received.
fn holder(node: &Node) -> (Pid, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let pid = node
        .rt
        .spawn(move |mut ctx: Ctx<Msg>| async move {
            let mut held = Vec::new();
            while let Some(msg) = ctx.recv().await {
                if let Message::User(Msg::Hold(reply)) = msg {
                    held.push(reply);
                    let _ = tx.send(());
                }
            }
        })
        .pid();
    (pid, rx)
}

/// Starts a call from `from` to `target` that is never answered; returns once the
/// request has arrived, with the receiver of the call's outcome.
fn pending_call(
    from: &Node,
    target: Pid,
    arrived: &mpsc::Receiver<()>,
) -> mpsc::Receiver<Result<u64, CallError>> {
    let handle = from.rt.handle();
    let call = spawn(&from.rt, async move {
        handle
            .call(target, Msg::Hold, Duration::from_secs(60))
            .await
    });
    arrived
        .recv_timeout(SETTLE)
        .expect("the call reached its target");
    call
}

fn shutdown(nodes: Vec<Node>) {
    for node in &nodes {
        node.mesh.close();
    }
    for node in nodes {
        node.rt.shutdown();
    }
}

/// Three nodes started with seeds, all joined (each sees `n` members).
fn cluster(ca: &ClusterCa, n: u64) -> Vec<Node> {
    let mut nodes = vec![start(ca, 1, &[], None)];
    for i in 2..=n {
        let node = start(ca, i, &[&nodes[0]], None);
        nodes.push(node);
    }
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| m.len() == n as usize);
    }
    nodes
}

#[test]
fn nodes_joining_through_one_seed_learn_everyone_and_later_joiners_too() {
    let ca = ClusterCa::generate().unwrap();
    let n1 = start(&ca, 1, &[], Some("eu"));
    let n2 = start(&ca, 2, &[&n1], Some("us-west"));
    let n3 = start(&ca, 3, &[&n1], None);
    let mut nodes = vec![n1, n2, n3];
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| node_ids(m) == [1, 2, 3]);
    }
    // Every node has the same view, regions and addresses included.
    let view = nodes[0].mesh.members();
    for node in &nodes {
        assert_eq!(node.mesh.members(), view);
    }
    assert_eq!(member(&view, 1).region.as_deref(), Some("eu"));
    assert_eq!(member(&view, 2).region.as_deref(), Some("us-west"));
    assert_eq!(member(&view, 3).region, None);
    for (n, node) in (1..).zip(&nodes) {
        let member = member(&view, n);
        assert_eq!(member.addr, node.mesh.local_addr());
        assert_eq!(member.name, cert_name(n));
    }
    // Membership is not a full mesh of data connections: n2 and n3 only dialed the
    // seed and never sent each other data; SWIM reaches between them on control
    // connections.
    assert!(!nodes[1].mesh.is_connected(id(3)));
    assert!(!nodes[2].mesh.is_connected(id(2)));

    // A 4th node joins through n3 (not the first seed): everyone learns of it, and it of
    // everyone.
    let n4 = start(&ca, 4, &[&nodes[2]], Some("eu"));
    nodes.push(n4);
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| node_ids(m) == [1, 2, 3, 4]);
    }
    let view = nodes[3].mesh.members();
    assert_eq!(member(&view, 4).region.as_deref(), Some("eu"));
    for node in &nodes {
        assert_eq!(node.mesh.members(), view);
    }
    shutdown(nodes);
}

#[test]
fn a_closed_node_and_a_killed_node_are_declared_down_everywhere() {
    let ca = ClusterCa::generate().unwrap();
    let mut nodes = cluster(&ca, 4);

    // Closed (leaves): its connected peers see it at once, the others by gossip.
    let closed = nodes.pop().unwrap();
    let started = Instant::now();
    closed.mesh.close();
    for node in &mut nodes {
        wait_down(node, 4, FAILURE_TIMEOUT);
        wait_members(node, FAILURE_TIMEOUT, |m| node_ids(m) == [1, 2, 3]);
    }
    eprintln!(
        "closed node declared down everywhere after {:?}",
        started.elapsed()
    );
    closed.rt.shutdown();

    // Killed: its runtime stops without a word (sockets go silent). A call pending to
    // it fails with NoConnection once it is declared down.
    let killed = nodes.pop().unwrap();
    let (target, arrived) = holder(&killed);
    let call = pending_call(&nodes[0], target, &arrived);
    let started = Instant::now();
    killed.rt.shutdown();
    drop(killed);
    for node in &mut nodes {
        wait_down(node, 3, FAILURE_TIMEOUT);
    }
    let detected = started.elapsed();
    assert!(detected < FAILURE_TIMEOUT, "{detected:?}");
    eprintln!("killed node declared down everywhere after {detected:?}");
    assert_eq!(
        call.recv_timeout(Duration::from_secs(1)).unwrap(),
        Err(CallError::NoConnection)
    );
    for node in &nodes {
        assert_eq!(node_ids(&node.mesh.members()), [1, 2]);
    }
    shutdown(nodes);
}

#[test]
fn a_hung_node_is_declared_down_within_5s_and_rejoins_as_a_new_incarnation() {
    let ca = ClusterCa::generate().unwrap();
    let mut nodes = cluster(&ca, 3);
    let old_incarnation = member(&nodes[0].mesh.members(), 3).incarnation;

    // A call from n1 to a process on n3 is pending when n3 hangs.
    let (target, arrived) = holder(&nodes[2]);
    let call = pending_call(&nodes[0], target, &arrived);

    // n3 stops answering SWIM; its QUIC connections stay open (keep-alives flow), so
    // only SWIM can notice.
    let started = Instant::now();
    nodes[2].mesh.set_membership_frozen(true);
    for node in &mut nodes[..2] {
        let down = wait_down(node, 3, FAILURE_TIMEOUT);
        assert_eq!(down, old_incarnation);
    }
    let detected = started.elapsed();
    eprintln!("hung node declared down everywhere after {detected:?}");
    assert!(detected < FAILURE_TIMEOUT, "detected after {detected:?}");
    assert_eq!(
        call.recv_timeout(Duration::from_secs(1)).unwrap(),
        Err(CallError::NoConnection)
    );
    for node in &nodes[..2] {
        assert_eq!(node_ids(&node.mesh.members()), [1, 2]);
    }

    // Thawed, n3 hears that it was declared down and rejoins as a new incarnation.
    nodes[2].mesh.set_membership_frozen(false);
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| {
            node_ids(m) == [1, 2, 3] && member(m, 3).incarnation > old_incarnation
        });
    }
    let view = nodes[0].mesh.members();
    for node in &nodes {
        assert_eq!(node.mesh.members(), view);
    }
    shutdown(nodes);
}

#[test]
fn names_are_cluster_wide_and_go_with_their_process_or_node() {
    let ca = ClusterCa::generate().unwrap();
    let nodes = cluster(&ca, 3);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // Registered on n1, found from n3.
    let svc = idle_process(n1);
    n1.mesh.register_name("svc", svc).unwrap();
    assert_eq!(n1.mesh.whereis("svc"), Some(svc));
    wait_until("n3 learns svc", SETTLE, || {
        n3.mesh.whereis("svc") == Some(svc)
    });
    wait_until("n2 learns svc", SETTLE, || {
        n2.mesh.whereis("svc") == Some(svc)
    });
    // Registering it again for the same pid is a no-op; for another pid it is refused,
    // on any node that knows it.
    n1.mesh.register_name("svc", svc).unwrap();
    let other = idle_process(n3);
    assert_eq!(
        n3.mesh.register_name("svc", other),
        Err(NameError::Taken {
            name: "svc".into(),
            holder: svc
        })
    );
    assert_eq!(
        n3.mesh.register_name("x", svc),
        Err(NameError::NotLocal(svc))
    );

    // The process exits: the name is gone everywhere.
    n1.rt.handle().kill(svc);
    for node in &nodes {
        wait_until("svc released", SETTLE, || {
            node.mesh.whereis("svc").is_none()
        });
    }
    // Unregistering works too, and the name can be taken again.
    n3.mesh.register_name("svc", other).unwrap();
    wait_until("n1 learns the new svc", SETTLE, || {
        n1.mesh.whereis("svc") == Some(other)
    });
    n3.mesh.unregister_name("svc");
    for node in &nodes {
        wait_until("svc unregistered", SETTLE, || {
            node.mesh.whereis("svc").is_none()
        });
    }

    // A name on a node that goes down goes with it.
    let on_n2 = idle_process(n2);
    n2.mesh.register_name("on-n2", on_n2).unwrap();
    for node in [n1, n3] {
        wait_until("on-n2 known", SETTLE, || {
            node.mesh.whereis("on-n2") == Some(on_n2)
        });
    }
    let mut nodes = nodes;
    let n2 = nodes.remove(1);
    n2.mesh.close();
    for node in &mut nodes {
        wait_down(node, 2, FAILURE_TIMEOUT);
        assert_eq!(node.mesh.whereis("on-n2"), None, "dropped with its node");
    }
    n2.rt.shutdown();
    shutdown(nodes);
}

#[test]
fn a_later_joiner_learns_existing_names() {
    let ca = ClusterCa::generate().unwrap();
    let mut nodes = cluster(&ca, 2);
    let a = idle_process(&nodes[0]);
    let b = idle_process(&nodes[1]);
    nodes[0].mesh.register_name("a", a).unwrap();
    nodes[1].mesh.register_name("b", b).unwrap();
    for node in &nodes {
        wait_until("names spread", SETTLE, || {
            node.mesh.whereis("a") == Some(a) && node.mesh.whereis("b") == Some(b)
        });
    }
    // Gossip of these names is long over (each op is sent a bounded number of times);
    // the joiner gets them from the table sync.
    let mut late = start(&ca, 3, &[&nodes[1]], None);
    wait_members(&mut late, SETTLE, |m| m.len() == 3);
    wait_until("the joiner learns the names", SETTLE, || {
        late.mesh.whereis("a") == Some(a) && late.mesh.whereis("b") == Some(b)
    });
    nodes.push(late);
    shutdown(nodes);
}

#[test]
fn concurrent_registrations_end_with_one_winner_everywhere_and_the_loser_exits() {
    let ca = ClusterCa::generate().unwrap();
    let nodes = cluster(&ca, 3);
    let p1 = idle_process(&nodes[0]);
    let p2 = idle_process(&nodes[1]);
    let exit1 = nodes[0].rt.handle().wait_exit(p1);
    let exit2 = nodes[1].rt.handle().wait_exit(p2);
    // Both register while cut off from each other (their SWIM packets are dropped), so
    // neither can have heard of the other's claim; then they reconnect.
    nodes[0].mesh.set_membership_frozen(true);
    nodes[1].mesh.set_membership_frozen(true);
    nodes[0].mesh.register_name("leader", p1).unwrap();
    nodes[1].mesh.register_name("leader", p2).unwrap();
    nodes[0].mesh.set_membership_frozen(false);
    nodes[1].mesh.set_membership_frozen(false);

    wait_until("one winner everywhere", SETTLE, || {
        let seen: Vec<Option<Pid>> = nodes.iter().map(|n| n.mesh.whereis("leader")).collect();
        seen[0].is_some() && seen.iter().all(|s| *s == seen[0])
    });
    let winner = nodes[0].mesh.whereis("leader").unwrap();
    let (loser_node, loser_exit) = if winner == p1 {
        (&nodes[1], exit2)
    } else {
        assert_eq!(winner, p2);
        (&nodes[0], exit1)
    };
    let reason = loser_node
        .rt
        .block_on(loser_node.rt.handle().timeout(SETTLE, loser_exit))
        .expect("the loser exits");
    assert_eq!(reason, ExitReason::NameConflict("leader".into()));
    assert!(nodes
        .iter()
        .find(|n| n.mesh.node() == winner.node())
        .unwrap()
        .rt
        .handle()
        .is_alive(winner));
    // Still one winner once the loser's release has spread.
    for node in &nodes {
        assert_eq!(node.mesh.whereis("leader"), Some(winner));
    }
    shutdown(nodes);
}

#[test]
fn a_restarted_node_is_a_new_member_and_its_old_incarnation_goes_down() {
    let ca = ClusterCa::generate().unwrap();
    let mut nodes = cluster(&ca, 3);
    let old = member(&nodes[0].mesh.members(), 2).clone();
    let on_old = idle_process(&nodes[1]);
    nodes[1].mesh.register_name("old", on_old).unwrap();
    wait_until("n1 learns the name", SETTLE, || {
        nodes[0].mesh.whereis("old") == Some(on_old)
    });
    // n2 dies and comes back at once with the same node id and name (new port), before
    // SWIM could declare the old one down.
    let n2 = nodes.remove(1);
    n2.rt.shutdown();
    drop(n2);
    let restarted = start(&ca, 2, &[&nodes[0]], Some("eu"));
    nodes.insert(1, restarted);
    for node in &mut nodes[..1] {
        wait_down(node, 2, SETTLE);
    }
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| {
            node_ids(m) == [1, 2, 3] && member(m, 2).incarnation > old.incarnation
        });
    }
    let new = member(&nodes[2].mesh.members(), 2).clone();
    assert_ne!(new.addr, old.addr);
    assert_eq!(new.region.as_deref(), Some("eu"));
    // The old incarnation's names went with it.
    for node in &nodes {
        assert_eq!(node.mesh.whereis("old"), None);
    }
    shutdown(nodes);
}

#[test]
fn an_unused_control_connection_is_closed_when_idle() {
    // A shorter failure timeout: control connections idle out after 2 x 2 s.
    let t = Duration::from_secs(2);
    let ca = ClusterCa::generate().unwrap();
    let n1 = start_with(&ca, 1, &[], None, 1, t);
    let n2 = start_with(&ca, 2, &[&n1], None, 1, t);
    let n3 = start_with(&ca, 3, &[&n1], None, 1, t);
    let mut nodes = vec![n1, n2, n3];
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| m.len() == 3);
    }
    // n2 and n3 probe each other on a control connection (they share no data one).
    wait_until("n2 has a control connection", SETTLE, || {
        nodes[1].mesh.stats().control_connections > 0
    });
    // Once they talk directly, SWIM uses the data connection and the control one
    // goes quiet and is closed.
    nodes[1].rt.block_on(nodes[1].mesh.connect(id(3))).unwrap();
    wait_until("idle control connections closed", SETTLE, || {
        nodes[1].mesh.stats().control_connections == 0
            && nodes[2].mesh.stats().control_connections == 0
    });
    // Membership is unaffected.
    for node in &nodes {
        assert_eq!(node_ids(&node.mesh.members()), [1, 2, 3]);
    }
    shutdown(nodes);
}

/// Node count for the larger cluster test (`CAIRN_MESH_NODES`, default 12).
fn cluster_size() -> u64 {
    std::env::var("CAIRN_MESH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[test]
fn a_larger_cluster_converges_and_sees_a_failure_everywhere() {
    let n = cluster_size();
    let ca = ClusterCa::generate().unwrap();
    let started = Instant::now();
    let mut nodes = vec![start_with(&ca, 1, &[], None, 1, FAILURE_TIMEOUT)];
    for i in 2..=n {
        // Seeds spread over the first three nodes.
        let seed = &nodes[((i - 2) % 3).min(nodes.len() as u64 - 1) as usize];
        let node = start_with(&ca, i, &[seed], None, 1, FAILURE_TIMEOUT);
        nodes.push(node);
    }
    for node in &mut nodes {
        wait_members(node, SETTLE, |m| m.len() == n as usize);
    }
    eprintln!("{n} nodes converged after {:?}", started.elapsed());
    let data: u64 = nodes
        .iter()
        .map(|a| {
            nodes
                .iter()
                .filter(|b| a.mesh.is_connected(b.mesh.node()))
                .count() as u64
        })
        .sum();
    let control: u64 = nodes
        .iter()
        .map(|a| a.mesh.stats().control_connections)
        .sum();
    eprintln!("{n} nodes: {data} data connection ends, {control} control connection ends");
    // Nobody sent application data: each joiner holds exactly one data connection, the one
    // to the seed it joined through (SWIM runs on control connections, which come and go).
    for (i, a) in nodes.iter().enumerate() {
        let connected: Vec<u64> = (1..)
            .zip(&nodes)
            .filter(|(_, b)| a.mesh.is_connected(b.mesh.node()))
            .map(|(j, _)| j)
            .collect();
        let seed_of = |j: u64| ((j - 2) % 3).min(j - 2) + 1;
        let expected: Vec<u64> = (1..=n)
            .filter(|&j| {
                (j >= 2 && seed_of(j) == i as u64 + 1) || (i >= 1 && j == seed_of(i as u64 + 1))
            })
            .collect();
        assert_eq!(connected, expected, "data connections of node {}", i + 1);
    }
    assert_eq!(
        data,
        2 * (n - 1),
        "one data connection per joiner, counted at both ends"
    );

    let killed = nodes.pop().unwrap();
    let started = Instant::now();
    killed.rt.shutdown();
    drop(killed);
    for node in &mut nodes {
        wait_down(node, n, FAILURE_TIMEOUT);
    }
    assert!(
        started.elapsed() < FAILURE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    eprintln!(
        "{n} nodes: a killed node was declared down everywhere after {:?}",
        started.elapsed()
    );
    shutdown(nodes);
}

#[test]
fn a_failure_timeout_below_the_minimum_is_refused() {
    init_logs();
    let rt = Runtime::builder()
        .workers(1)
        .node(NodeId::of_name("n"))
        .build()
        .unwrap();
    let ca = ClusterCa::generate().unwrap();
    let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue("n").unwrap());
    let config = MeshConfig::new(localhost(), tls).failure_timeout(Duration::from_millis(10));
    let refused = Mesh::start(&rt.handle(), config).unwrap_err();
    assert!(refused.to_string().contains("failure timeout"), "{refused}");
    rt.shutdown();
}
