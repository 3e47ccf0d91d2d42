//! `cairn-bench --http-serve MODE --addr ADDR`: a Cairn node serving an in-memory object
//! over HTTP, for `benches/http_get.py` (which drives it with `wrk`). Not a workload of
//! the harness: it serves until killed.
//!
//! - `node`: one node (no mesh); `GET /hello/bench/` reaches the object
//!   `(hello, bench)` through `Object::fetch` on that node.
//! - `forward`: two meshed nodes in this process (mutual TLS on loopback, each with
//!   `--workers` threads); only the one that does *not* own the key serves HTTP, so every
//!   request is forwarded over the mesh to the owner and its answer comes back.
//!
//! Prints `listening ADDR PATH` on stdout once the node(s) serve, PATH being the object's
//! (in `forward`, a key the edge routes to the other node).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::bytes::Bytes;
use cairn::http;
use cairn::net::{ClusterCa, NodeEvent};
use cairn::prelude::*;

use super::Config;

/// The benchmark's object: counts the requests it answered, in memory only.
struct Hello {
    hits: u64,
}

impl Object for Hello {
    const CLASS: &'static str = "hello";
    type Msg = ();

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Hello { hits: 0 })
    }

    async fn handle(&mut self, (): (), _ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }

    async fn fetch(
        &mut self,
        _request: http::Request<Bytes>,
        _ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        self.hits += 1;
        Ok(http::Response::new(Bytes::from_static(b"hello")))
    }
}

/// How long the mesh may take to form and elect its shard leaders.
const MESH_READY: Duration = Duration::from_secs(60);

/// Runs `--http-serve MODE` until the process is killed.
pub fn serve(mode: &str, addr: &str, cfg: &Config) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("--addr {addr:?}: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Logs (to stderr) only when asked, e.g. `RUST_LOG=cairn::request=debug`.
    if std::env::var_os("RUST_LOG").is_some() {
        cairn::init_logging(cairn::LogFormat::Text);
    }
    // Kept alive until the process ends.
    let (_nodes, key) = match mode {
        "node" => {
            let node = Node::builder()
                .workers(cfg.workers)
                .data_dir(dir.path())
                .http(addr)
                .start()
                .map_err(|e| format!("starting the node: {e}"))?;
            node.host_local::<Hello>();
            (vec![node], "bench".to_owned())
        }
        "forward" => forward_pair(dir.path(), addr, cfg)?,
        other => return Err(format!("--http-serve {other:?}: expected node or forward")),
    };
    println!("listening {addr} /hello/{key}/");
    loop {
        std::thread::park();
    }
}

fn mesh_node(dir: &Path, name: &str, cfg: &Config) -> NodeBuilder {
    Node::builder()
        .name(name)
        .workers(cfg.workers)
        .data_dir(dir.join(name))
        .cluster(dir.join("cluster"))
        .listen("127.0.0.1:0".parse().expect("an address"))
}

/// Waits until `node` knows `peer`.
fn wait_knows(node: &Node, peer: NodeId) -> Result<(), String> {
    let mesh = node.mesh().ok_or("no mesh")?;
    let mut events = mesh.node_events();
    if mesh.members().iter().any(|m| m.node == peer) {
        return Ok(());
    }
    node.block_on(node.handle().timeout(MESH_READY, async {
        loop {
            if let NodeEvent::Up { node, .. } = events.next().await {
                if node == peer {
                    return;
                }
            }
        }
    }))
    .map_err(|_| format!("{peer} never came up on {}", node.name()))
}

/// Two meshed nodes, `edge` serving HTTP at `addr`, and a key that `edge` routes to
/// `owner`.
fn forward_pair(dir: &Path, addr: SocketAddr, cfg: &Config) -> Result<(Vec<Node>, String), String> {
    let ca = ClusterCa::generate().map_err(|e| format!("cluster CA: {e}"))?;
    ca.save(&dir.join("cluster"))
        .map_err(|e| format!("saving the cluster CA: {e}"))?;
    // The first node creates the shards and leads them: it owns the keys at first.
    let owner = mesh_node(dir, "owner", cfg)
        .start()
        .map_err(|e| format!("starting the owner: {e}"))?;
    owner.host::<Hello>();
    let seed = owner.mesh().ok_or("no mesh")?.local_addr();
    let edge = mesh_node(dir, "edge", cfg)
        .join([seed])
        .http(addr)
        .start()
        .map_err(|e| format!("starting the edge: {e}"))?;
    edge.host::<Hello>();
    wait_knows(&owner, edge.id())?;
    wait_knows(&edge, owner.id())?;
    // Waits for the shards' first elections: the edge routes the key to the owner, and the
    // owner serves it (leader with a lease, caught up). Until then a forwarded request waits
    // on the owner for its shard, up to a second at start (128 shards electing), which
    // wrk's latency correction spreads over hundreds of samples: that was #13's "p99 ~1 s".
    let deadline = Instant::now() + MESH_READY;
    loop {
        let key = (0..1000).map(|i| format!("bench{i}")).find(|k| {
            edge.object::<Hello>(k).owner().ok() == Some(owner.id())
                && owner.object::<Hello>(k).owner().ok() == Some(owner.id())
        });
        if let Some(key) = key {
            return Ok((vec![edge, owner], key));
        }
        if Instant::now() > deadline {
            return Err("the edge routes no key to the owner".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
