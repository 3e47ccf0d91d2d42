//! Shared by the root integration tests: each `tests/*.rs` is its own crate and pulls this
//! in with `mod common;`. Holds the plain durable counter object the tests drive, and the
//! node they run it on; [`shard_mesh`]: meshes of replicated-shard nodes in child processes.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

pub mod http;
pub mod overload;
pub mod shard_mesh;

use std::path::Path;
use std::time::Duration;

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

/// What a [`Counter`] takes (serializable, so it may be hosted across a mesh).
#[derive(Serialize, Deserialize)]
pub enum CounterMsg {
    /// Adds `n`; no answer.
    Add(u64),
    /// Adds `n` and answers with the new total (held by the output gate until durable).
    AddAndGet(u64, Reply<u64>),
    /// Answers with the total.
    Get(Reply<u64>),
}

/// A counter object: its total is loaded from and written to the key `total`.
pub struct Counter {
    total: u64,
}

impl Object for Counter {
    const CLASS: &'static str = "test-counter";
    type Msg = CounterMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Counter {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
            }
            CounterMsg::AddAndGet(n, reply) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
                let _ = reply.send(self.total);
            }
            CounterMsg::Get(reply) => {
                let _ = reply.send(self.total);
            }
        }
        Ok(())
    }
}

/// What an [`Alarmed`] takes.
#[derive(Serialize, Deserialize)]
pub enum AlarmMsg {
    /// Sets the alarm to this many milliseconds after the Unix epoch; answers once stored.
    SetAt(u64, Reply<()>),
}

/// An object whose alarm, when it fires, tells the test: in a child of
/// [`shard_mesh::Children`] it writes `FIRED <key>` to the parent (see there).
pub struct Alarmed;

impl Object for Alarmed {
    const CLASS: &'static str = "test-alarmed-child";
    type Msg = AlarmMsg;

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Alarmed)
    }

    async fn handle(&mut self, msg: AlarmMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            AlarmMsg::SetAt(ms, reply) => {
                ctx.set_alarm(std::time::UNIX_EPOCH + Duration::from_millis(ms));
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        cairn_testkit::tell_parent(&format!("FIRED {}", ctx.key()));
        Ok(())
    }
}

/// A standalone node on `dir` with `workers` scheduler threads that evicts objects idle for
/// `idle`. Register object classes on it yourself.
pub fn node(dir: impl AsRef<Path>, workers: usize, idle: Duration) -> Node {
    Node::builder()
        .workers(workers)
        .data_dir(dir.as_ref())
        .object_idle_timeout(idle)
        .start()
        .unwrap()
}

/// A node of a test mesh under `dir`: named `name`, data in `dir/name`, the cluster CA in
/// `dir/cluster`, on a free port of 127.0.0.1, joined through `join`. Add options, then
/// `start()`.
pub fn mesh_builder(dir: &Path, name: &str, join: Option<std::net::SocketAddr>) -> NodeBuilder {
    let builder = Node::builder()
        .name(name)
        .workers(2)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .listen("127.0.0.1:0".parse().unwrap());
    match join {
        Some(seed) => builder.join([seed]),
        None => builder,
    }
}

/// Polls `f` (every 20 ms) until it returns `Some`, for at most `within`; fails the test
/// naming `what` if it never does.
pub fn poll_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `within`) for an `Up` of `peer` on `events`, a subscription of `node`'s.
pub fn wait_up(node: &Node, events: &mut cairn::net::NodeEvents, peer: NodeId, within: Duration) {
    let up = node.block_on(node.handle().timeout(within, async {
        loop {
            if let cairn::net::NodeEvent::Up { node, .. } = events.next().await {
                if node == peer {
                    return;
                }
            }
        }
    }));
    assert!(up.is_ok(), "{peer} never came up on {}", node.name());
}

/// Waits (up to `within`) until `node` knows `peer`, subscribing first so that an `Up`
/// cannot slip by.
pub fn wait_knows(node: &Node, peer: NodeId, within: Duration) {
    let mesh = node.mesh().unwrap();
    let mut events = mesh.node_events();
    if !mesh.members().iter().any(|m| m.node == peer) {
        wait_up(node, &mut events, peer, within);
    }
}
