//! A deposed activation (three in-process nodes, every shard on all three): the leader of an
//! object's shard stalls — its store holds every commit, so its shard driver stops and its
//! lease lapses — and the other voters elect a new leader while the old activation still has
//! messages queued behind its in-flight write sets. Once the stall ends, the old activation
//! must pass what it had queued on to the new leader: not handle it (its writes would be
//! fenced), not hold it without bound, not spin. Every message sent is then stored on the
//! new leader, or counted by a node as lost (`write_sets_failed`: the write sets in flight
//! when the leader stalled; `undeliverable`), and none is applied twice. An HTTP request
//! queued behind them is routed again and answered by the new leader, not by the deposed
//! activation.

mod common;

use std::time::Duration;

use cairn::bytes::Bytes;
use cairn::net::ClusterCa;
use cairn::prelude::*;
use cairn::ShardConfig;
use serde::{Deserialize, Serialize};

/// Bound on every wait (first elections, the new leader's election, the drain).
const WAIT: Duration = Duration::from_secs(60);
/// One call's timeout.
const CALL: Duration = Duration::from_secs(20);
/// Messages sent while the leader stalls: more than the write sets one activation may have
/// in flight (64), so most wait in its mailbox when it is deposed.
const SENT: u64 = 300;
/// The write sets one replicated activation may have in flight (`MAX_REPLICATED_IN_FLIGHT`):
/// the most the stall may fail.
const IN_FLIGHT: u64 = 64;
const SHARDS: u32 = 4;

#[derive(Serialize, Deserialize)]
enum TallyMsg {
    /// Adds `n`; no answer.
    Add(u64),
    Get(Reply<u64>),
}

/// Nodes whose [`Tally`] ran its `deactivate` hook.
static DEACTIVATED: std::sync::Mutex<Vec<NodeId>> = std::sync::Mutex::new(Vec::new());

/// A durable counter whose `fetch` answers with the id of the node that ran it, and whose
/// `deactivate` records where it ran.
struct Tally {
    total: u64,
}

impl Object for Tally {
    const CLASS: &'static str = "test-tally";
    type Msg = TallyMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Tally {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: TallyMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            TallyMsg::Add(n) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
            }
            TallyMsg::Get(reply) => {
                let _ = reply.send(self.total);
            }
        }
        Ok(())
    }

    async fn deactivate(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        DEACTIVATED.lock().unwrap().push(ctx.handle().node());
        Ok(())
    }

    async fn fetch(
        &mut self,
        _request: http::Request<Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        Ok(http::Response::new(Bytes::from(
            ctx.handle().node().to_string(),
        )))
    }
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::poll_for(what, WAIT, f)
}

/// The one node of `nodes` serving `key`'s shard now (it routes the object to itself).
fn leader(nodes: &[Node], key: &str) -> Option<usize> {
    let mut serving = (0..nodes.len())
        .filter(|&i| nodes[i].object::<Tally>(key).owner().ok() == Some(nodes[i].id()));
    let one = serving.next()?;
    serving.next().is_none().then_some(one)
}

/// Taken messages each node counted as lost: `(write sets failed, undeliverable)`.
fn lost(nodes: &[Node]) -> (u64, u64) {
    nodes
        .iter()
        .filter_map(|n| n.object_stats().get(Tally::CLASS).cloned())
        .fold((0, 0), |(f, u), s| {
            (f + s.write_sets_failed, u + s.undeliverable)
        })
}

/// The stall ends once another node leads: the deposed activation finds the new leader at
/// once.
#[test]
fn a_deposed_activation_passes_its_queued_messages_to_the_new_leader() {
    depose(Release::OnceAnotherLeads);
}

/// The stalled leader is also cut off from the others (mesh fault injection) until its
/// write sets have failed: the deposed activation's forwards find no leader and wait (its
/// 64 at once, taking no more mail); after healing they all finish together, and the
/// activation must take mail again (it once waited forever there: finished forwards did
/// not wake it).
#[test]
fn a_deposed_activation_whose_forwards_wait_for_a_leader_takes_mail_again() {
    depose(Release::CutOff);
}

/// How the stalled leader is deposed.
#[derive(Clone, Copy, PartialEq)]
enum Release {
    /// Its store lets go once another node leads.
    OnceAnotherLeads,
    /// It is also cut off from the others; its store lets go once another node leads, and
    /// the cut heals once its write sets in flight have failed.
    CutOff,
}

fn depose(release: Release) {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::generate()
        .unwrap()
        .save(&dir.path().join("cluster"))
        .unwrap();
    let start = |name: &str, join: Option<std::net::SocketAddr>| {
        let node = common::mesh_builder(dir.path(), name, join)
            .shards(ShardConfig {
                shards: SHARDS,
                ..ShardConfig::default()
            })
            .failure_timeout(Duration::from_secs(1))
            .http("127.0.0.1:0".parse().unwrap())
            .start()
            .unwrap();
        node.host::<Tally>();
        node
    };
    // Names (and so node ids) apart from the other test's, which runs in this process.
    let tag = match release {
        Release::OnceAnotherLeads => "deposed",
        Release::CutOff => "cut",
    };
    let first = start(&format!("{tag}-a"), None);
    let seed = first.mesh().unwrap().local_addr();
    let nodes = vec![
        first,
        start(&format!("{tag}-b"), Some(seed)),
        start(&format!("{tag}-c"), Some(seed)),
    ];
    wait_for("every shard to have three voters", || {
        let full = nodes[0].block_on(nodes[0].shards_fully_replicated());
        (full == SHARDS).then_some(())
    });
    let key = "deposed";
    let old = wait_for("a leader", || leader(&nodes, key));
    let stalled = &nodes[old];
    let counter = stalled.object::<Tally>(key);
    assert_eq!(
        stalled.block_on(counter.call(TallyMsg::Get, CALL)).unwrap(),
        0
    );

    let hold = stalled.store().fault_injection().hold_commits();
    // Sent through the leader's own node while it still serves: they reach its activation,
    // which takes IN_FLIGHT of them (their write sets stall) and queues the rest.
    stalled.block_on(async {
        for _ in 0..SENT {
            counter.send(TallyMsg::Add(1)).await.unwrap();
        }
    });
    // Queued behind them the same way (the stalled node still serves: its lease outlives
    // these few milliseconds), answered once the activation gets to it.
    let url = format!("http://{}/test-tally/{key}/", stalled.http_addr().unwrap());
    let fetched = std::thread::spawn(move || common::http::curl("GET", &url, None));
    let port = |n: &Node| n.mesh().unwrap().local_addr().port();
    let others: Vec<u16> = (0..nodes.len())
        .filter(|&i| i != old)
        .map(|i| port(&nodes[i]))
        .collect();
    let cut = (release == Release::CutOff)
        .then(|| cairn::net::faults::Partition::new(&[port(stalled)], &others));
    let new = wait_for("another node to lead the shard", || {
        leader(&nodes, key).filter(|&i| i != old)
    });
    drop(hold);
    if let Some(cut) = cut {
        // Healed once the stalled leader's write sets in flight have failed (it stepped
        // down): its activation is then passing its mailbox on, to no leader it can reach.
        wait_for("the cut-off leader's write sets to fail", || {
            let failed = stalled
                .object_stats()
                .get(Tally::CLASS)
                .map_or(0, |s| s.write_sets_failed);
            (failed >= IN_FLIGHT).then_some(())
        });
        cut.heal();
    }

    // The stalled leader's write sets fail (or commit, if they reached the others first);
    // its activation re-activates, finds itself deposed and passes its mailbox on.
    let leading = &nodes[new];
    let leading_counter = leading.object::<Tally>(key);
    let (total, failed, undeliverable) = wait_for("every message stored or counted lost", || {
        let total = leading
            .block_on(leading_counter.call(TallyMsg::Get, CALL))
            .ok()?;
        let (failed, undeliverable) = lost(&nodes);
        (total + failed + undeliverable >= SENT).then_some((total, failed, undeliverable))
    });
    eprintln!(
        "leader {old} -> {new}: stored {total} of {SENT}; {failed} write sets failed, \
         {undeliverable} undeliverable"
    );
    assert!(
        total <= SENT,
        "{total} stored of {SENT} sent: one applied twice"
    );
    assert!(
        failed <= IN_FLIGHT,
        "{failed} write sets failed: the deposed activation handled queued messages itself \
         (only the {IN_FLIGHT} in flight when it stalled may fail)"
    );
    assert_eq!(undeliverable, 0, "a queued message was dropped");
    assert!(
        total >= SENT - IN_FLIGHT,
        "{total} stored: the queued messages did not reach the new leader"
    );
    // The deposed activation evicts once it passed everything on, without running the
    // `deactivate` hook (the object lives on at the leader).
    wait_for("the deposed activation to evict", || {
        let active = stalled
            .object_stats()
            .get(Tally::CLASS)
            .map_or(0, |s| s.active);
        (active == 0).then_some(())
    });
    assert!(
        !DEACTIVATED.lock().unwrap().contains(&stalled.id()),
        "the deposed activation ran its deactivate hook"
    );
    let fetched = fetched.join().unwrap();
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert_ne!(
        fetched.body,
        stalled.id().to_string(),
        "the deposed activation ran the request itself"
    );
}
