//! `leave-detect`: how long after a node starts shutting down its peer declares it down,
//! with the close frames flushed ([`Mesh::close_and_flush`], what `Node::shutdown` does)
//! and without (a bare [`Mesh::close`] right before the runtime stops: the close frames
//! may never leave, and the peer waits for its failure timeout).
//!
//! Two runtimes in one process on 127.0.0.1 (the time measured is protocol and timers, not
//! CPU), default failure timeout (5 s). The clock runs from the call that closes node 1 to
//! the moment node 2's `Down` event for it arrives (noted on node 2, so the flush's own
//! wait is not counted).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_net::{ClusterCa, Mesh, MeshConfig, NodeEvent, TlsConfig};
use cairn_scheduler::{Ctx, NodeId, Runtime};

use super::{Config, Row};

/// What `Node::shutdown` waits for the close frames.
const FLUSH: Duration = Duration::from_millis(50);
/// Longer than any detection (failure timeout 5 s).
const DEADLINE: Duration = Duration::from_secs(30);

fn node(ca: &ClusterCa, n: u64, seed: Option<SocketAddr>) -> Result<(Runtime, Mesh), String> {
    let rt = Runtime::builder()
        .workers(1)
        .node(NodeId::of_name(&format!("node-{n}")))
        .build()
        .map_err(|e| e.to_string())?;
    let cert = ca.issue(&format!("node-{n}")).map_err(|e| e.to_string())?;
    let mut config = MeshConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        TlsConfig::new(ca.cert_der().clone(), cert),
    );
    if let Some(seed) = seed {
        config = config.seed(seed, "node-1");
    }
    let mesh = Mesh::start(&rt.handle(), config).map_err(|e| e.to_string())?;
    Ok((rt, mesh))
}

/// One leave: the time until the peer sees node 1 down.
fn one_leave(flush: bool) -> Result<Duration, String> {
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let (rt1, one) = node(&ca, 1, None)?;
    let (rt2, two) = node(&ca, 2, Some(one.local_addr()))?;
    let joined = Instant::now() + DEADLINE;
    while !(one.members().len() == 2 && two.members().len() == 2) {
        if Instant::now() > joined {
            return Err("the two nodes never joined".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut events = two.node_events();
    // Node 2 notes when it sees the leave, whatever node 1's thread is still doing.
    let (tx, rx) = std::sync::mpsc::channel();
    rt2.spawn(move |_ctx: Ctx<()>| async move {
        loop {
            if let NodeEvent::Down { node, .. } = events.next().await {
                if node == NodeId::of_name("node-1") {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        }
    });
    let start = Instant::now();
    if flush {
        one.close_and_flush(FLUSH);
    } else {
        one.close();
    }
    rt1.shutdown();
    let seen = rx
        .recv_timeout(DEADLINE)
        .map_err(|_| format!("node 1 not declared down within {DEADLINE:?}"))?;
    let took = seen.duration_since(start);
    two.close();
    rt2.shutdown();
    Ok(took)
}

pub fn leave_detect(_cfg: &Config) -> Result<Vec<Row>, String> {
    let flushed = one_leave(true)?;
    let bare = one_leave(false)?;
    Ok(vec![
        Row::lower("leave-detect-flushed", "ms", flushed.as_secs_f64() * 1e3),
        Row::lower("leave-detect-unflushed", "ms", bare.as_secs_f64() * 1e3),
    ])
}
