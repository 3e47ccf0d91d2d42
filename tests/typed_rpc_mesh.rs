//! Typed RPC across a two-node mesh on 127.0.0.1: calls to an object owned by the other
//! node, its application error travelling back as `Failed(E)`, its `state` fields stored
//! on the owner, a one-way method, a typed
//! actor on the other node (its generated message type declared with the mesh), and the
//! caller's view of a lost node.

use std::time::Duration;

use cairn::net::{ClusterCa, NodeEvent};
use cairn::prelude::*;

const T: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum VoteError {
    Closed,
    AlreadyVoted(String),
}

/// Its fields are its durable state (`state`): kept on the owner, whoever calls.
#[derive(Default, Serialize, Deserialize)]
struct Poll {
    voters: Vec<String>,
    closed: bool,
}

#[cairn::object(state)]
impl Poll {
    const CLASS: &'static str = "poll";

    pub async fn vote(&mut self, voter: String) -> Result<usize, VoteError> {
        if self.closed {
            return Err(VoteError::Closed);
        }
        if self.voters.contains(&voter) {
            return Err(VoteError::AlreadyVoted(voter));
        }
        self.voters.push(voter);
        Ok(self.voters.len())
    }

    pub async fn voters(&mut self) -> Vec<String> {
        self.voters.clone()
    }

    /// One-way.
    pub async fn close(&mut self) {
        self.closed = true;
    }

    /// Which node answered (the owner's id).
    pub async fn node(&mut self, ctx: &mut ObjectCtx<Self>) -> NodeId {
        ctx.handle().node()
    }
}

/// An actor reached by pid from the other node.
#[derive(Default)]
struct Tally {
    total: i64,
}

#[cairn::actor]
impl Tally {
    pub async fn add(&mut self, n: i64) -> Result<i64, String> {
        if n < 0 {
            return Err(format!("cannot add {n}"));
        }
        self.total += n;
        Ok(self.total)
    }
}

/// Logs membership and connections into libtest's capture (shown when the test fails).
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,cairn_net::mesh=info".into()),
        ))
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

fn start(dir: &std::path::Path, name: &str, join: Option<std::net::SocketAddr>) -> Node {
    log();
    let mut b = Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        // The mesh's default failure timeout (5 s), not a short one: nothing here waits on
        // failure detection (`b` leaves gracefully, and `a` hears its close frames), while a
        // 1 s timeout let a loaded machine declare a live node down, which fails the calls
        // in flight to it with `NoConnection` (22 of 24 runs beside `stress --cpu 6`).
        .listen("127.0.0.1:0".parse().unwrap());
    if let Some(seed) = join {
        b = b.join([seed]);
    }
    let node = b.start().unwrap();
    node.host::<Poll>();
    node.mesh()
        .unwrap()
        .declare::<TallyMsg>("test.TallyMsg")
        .unwrap();
    node
}

/// Waits until `node` sees `peer` go up (`up`) or down, subscribing before it checks.
fn wait_for(node: &Node, peer: NodeId, up: bool) {
    let mesh = node.mesh().unwrap();
    let mut events = mesh.node_events();
    if mesh.members().iter().any(|m| m.node == peer) == up {
        return;
    }
    let seen = node.block_on(node.handle().timeout(T, async {
        loop {
            match events.next().await {
                NodeEvent::Up { node, .. } if node == peer && up => return,
                NodeEvent::Down { node, .. } if node == peer && !up => return,
                _ => {}
            }
        }
    }));
    assert!(
        seen.is_ok(),
        "{peer} never went {}",
        if up { "up" } else { "down" }
    );
}

#[test]
fn typed_calls_cross_the_mesh_and_application_errors_travel_back() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let a = start(dir.path(), "a", None);
    let b = start(dir.path(), "b", Some(a.mesh().unwrap().local_addr()));
    let (a_id, b_id) = (a.mesh().unwrap().node(), b.mesh().unwrap().node());
    wait_for(&a, b_id, true);
    wait_for(&b, a_id, true);

    // A poll that a runs (it created the shard cluster and leads its shards), called from b.
    let key = "poll0".to_owned();
    let poll = b.object::<Poll>(&key);
    b.block_on(async {
        assert_eq!(poll.node().timeout(T).await, Ok(a_id));
        assert_eq!(poll.vote("ann".into()).timeout(T).await, Ok(1));
        assert_eq!(
            poll.vote("ann".into()).timeout(T).await,
            Err(CallError::Failed(VoteError::AlreadyVoted("ann".into())))
        );
        // One-way, then a call behind it on the same path sees its effect.
        poll.close().await.unwrap();
        assert_eq!(
            poll.vote("bo".into()).timeout(T).await,
            Err(CallError::Failed(VoteError::Closed))
        );
    });
    assert!(poll.pid().is_none(), "b activated an object a runs");
    // The state lives in the owner's storage, committed before the answers left.
    let stored = a.store().keyspace(&format!("poll/{key}")).unwrap();
    assert!(
        stored
            .get::<serde::de::IgnoredAny>(cairn::rpc::STATE_KEY)
            .unwrap()
            .is_some(),
        "the owner did not store the poll's state"
    );
    assert_eq!(
        b.block_on(poll.voters().timeout(T)),
        Ok(vec!["ann".to_owned()])
    );

    // No node is in the hinted region: the message comes back with the reason.
    let nowhere = a.object_in::<Poll>(&key, "mars");
    let failed = a.block_on(nowhere.send(PollMsg::Close)).unwrap_err();
    assert!(
        matches!(failed.error, ObjectError::Placement(_)),
        "{failed}"
    );
    assert!(matches!(failed.into_inner(), PollMsg::Close));

    // A typed actor on b, called from a by pid.
    let on_b: Addr<Tally> = b
        .block_on(cairn::supervisor::start(
            b.handle(),
            Tally::default(),
            StartOptions::default(),
        ))
        .unwrap();
    let from_a: Addr<Tally> = a.handle().actor_ref(on_b.pid()).unwrap();
    a.block_on(async {
        assert_eq!(from_a.add(2).timeout(T).await, Ok(2));
        assert_eq!(
            from_a.add(-1).timeout(T).await,
            Err(CallError::Failed("cannot add -1".to_owned()))
        );
        assert_eq!(from_a.add(3).timeout(T).await, Ok(5));
    });

    // The node goes away: calls to its actor fail with NoConnection.
    b.shutdown();
    wait_for(&a, b_id, false);
    assert_eq!(
        a.block_on(from_a.add(1).timeout(T)),
        Err(CallError::NoConnection)
    );
}
