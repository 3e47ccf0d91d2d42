//! Memory stays bounded at 10× overload: an object whose commits stall is offered ten
//! times what it can hold (its held handlers plus its mailbox) in 16 KiB messages, by 64
//! concurrent senders. Senders get backpressure (their sends wait, and time out), the
//! object takes no more than its bound, and the process's peak resident memory grows by a
//! small fraction of what was offered (read from `/proc/self/status`).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

/// Held handlers (activation.rs) plus a default mailbox, plus the one being handled.
const BOUND: u64 = 1024 + 1024 + 1;
const PAYLOAD: usize = 16 << 10;
const SENDERS: u64 = 64;
/// Ten times what the object can hold.
const OFFERED: u64 = 10 * BOUND;
/// How long one send may wait for room before its sender gives it up.
const PATIENCE: Duration = Duration::from_millis(20);
/// The stated bound on peak resident growth. Unbounded queueing would take
/// `OFFERED × PAYLOAD` = 320 MiB; the bounded path keeps at most `BOUND × PAYLOAD` = 32 MiB
/// (measured: +21 MiB peak).
const RSS_BOUND: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
enum BlobMsg {
    /// Stores how many bytes it has seen; no answer.
    Put(Vec<u8>),
    Total(Reply<u64>),
}

struct Blob {
    bytes: u64,
}

impl Object for Blob {
    const CLASS: &'static str = "test-blob";
    type Msg = BlobMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Blob {
            bytes: ctx.storage().get("bytes")?.unwrap_or(0),
        })
    }

    async fn handle(&mut self, msg: BlobMsg, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        match msg {
            BlobMsg::Put(data) => {
                self.bytes += data.len() as u64;
                ctx.storage().put("bytes", &self.bytes)?;
            }
            BlobMsg::Total(reply) => {
                let _ = reply.send(self.bytes);
            }
        }
        Ok(())
    }
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn ten_times_overload_is_refused_with_backpressure_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::node(dir.path(), 2, Duration::from_secs(60));
    node.host_local::<Blob>();
    let blob = node.object::<Blob>("slow");
    node.block_on(blob.send(BlobMsg::Put(vec![0; PAYLOAD])))
        .unwrap();
    let store = node.store().clone();
    let hold = store.fault_injection().hold_commits();
    let before = status_bytes("VmRSS:");

    let (done, results) = mpsc::channel();
    for _ in 0..SENDERS {
        let blob = blob.clone();
        let done = done.clone();
        let handle = node.handle().clone();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let (mut taken, mut refused) = (0u64, 0u64);
            for _ in 0..OFFERED / SENDERS {
                let send = blob.send(BlobMsg::Put(vec![7; PAYLOAD]));
                match handle.timeout(PATIENCE, send).await {
                    Ok(Ok(())) => taken += 1,
                    Ok(Err(e)) => panic!("send failed: {e:?}"),
                    Err(_) => refused += 1,
                }
            }
            let _ = done.send((taken, refused));
        });
    }
    let (mut taken, mut refused) = (0, 0);
    for _ in 0..SENDERS {
        let (t, r) = results.recv_timeout(Duration::from_secs(120)).unwrap();
        taken += t;
        refused += r;
    }
    let peak = status_bytes("VmHWM:");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "offered {} MiB in {} messages: taken {taken}, refused {refused}; \
         VmRSS before {} MiB, peak {} MiB (+{} MiB, bound {} MiB)",
        ((OFFERED / SENDERS * SENDERS) * PAYLOAD as u64) >> 20,
        OFFERED / SENDERS * SENDERS,
        before >> 20,
        peak >> 20,
        grown >> 20,
        RSS_BOUND >> 20,
    );
    assert!(
        taken <= BOUND,
        "{taken} messages taken while no commit completed"
    );
    assert!(
        refused >= OFFERED / SENDERS * SENDERS - BOUND,
        "senders were not pushed back: {refused} refused"
    );
    assert!(
        grown < RSS_BOUND,
        "peak resident memory grew by {} MiB (bound {} MiB)",
        grown >> 20,
        RSS_BOUND >> 20
    );
    drop(hold);
    let total = node
        .block_on(blob.call(BlobMsg::Total, Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        total,
        (taken + 1) * PAYLOAD as u64,
        "a taken message was lost"
    );
}
