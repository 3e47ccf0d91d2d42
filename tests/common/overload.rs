//! The 10× overload driver of `tests/memory_overload*.rs`: an object whose commits stall is
//! offered ten times what it can hold in 16 KiB messages by 64 concurrent senders; senders
//! must be pushed back (their sends wait, and time out), the object take no more than its
//! bound, the process's peak resident memory (`/proc/self/status`) grow by a small fraction
//! of what was offered, and nothing taken be lost but what the owner counted as lost (write
//! sets whose commit failed, messages it took and could not deliver in time). One test per
//! binary: the peak is process-wide.

use std::sync::mpsc;
use std::time::Duration;

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

pub const PAYLOAD: usize = 16 << 10;
pub const SENDERS: u64 = 64;
/// How long one send may wait for room before its sender gives it up.
pub const PATIENCE: Duration = Duration::from_millis(20);

#[derive(Serialize, Deserialize)]
pub enum BlobMsg {
    /// Stores how many bytes it has seen; no answer.
    Put(Vec<u8>),
    Total(Reply<u64>),
}

pub struct Blob {
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

/// What [`overload`] asserts.
pub struct Bounds {
    /// What the object's node can hold: `10 ×` this is offered.
    pub capacity: u64,
    /// Sends that may complete while no commit does.
    pub taken: u64,
    /// Peak resident growth.
    pub rss: u64,
    /// Whether a send that timed out is surely not delivered (true on one node; across
    /// the mesh a send that timed out may already be on its way).
    pub exact: bool,
    /// Whether to release the stall and read the object's total back (every taken message
    /// stored, but those the owners counted as lost).
    pub read_back: bool,
    /// Taken messages whose effect may be lost, each counted by its owner node
    /// (`write_sets_failed`, `undeliverable`): a replicated object's shard may lose its
    /// lease during the stall, failing the write sets in flight and leaving messages parked
    /// without a serving leader past `SHARD_WAIT`.
    pub may_lose: u64,
}

/// Offers `10 × capacity` messages to `blob` (reached from `senders`, already holding one
/// message) while the stores of `owners` hold their commits; asserts at most `taken` taken,
/// the rest pushed back, peak resident growth under `rss`, and then, released, that every
/// taken message was stored but those whose write set failed, as the owners count them (and,
/// if `exact`, nothing else).
pub fn overload(senders: &Node, blob: &ObjectRef<Blob>, owners: &[&Node], bounds: Bounds) {
    let Bounds {
        capacity,
        taken: bound,
        rss: rss_bound,
        exact,
        read_back,
        may_lose,
    } = bounds;
    let offered = 10 * capacity / SENDERS * SENDERS;
    let holds: Vec<_> = owners
        .iter()
        .map(|n| n.store().fault_injection().hold_commits())
        .collect();
    let before = status_bytes("VmRSS:");
    let (done, results) = mpsc::channel();
    for _ in 0..SENDERS {
        let blob = blob.clone();
        let done = done.clone();
        let handle = senders.handle().clone();
        senders.spawn(move |_ctx: Ctx<()>| async move {
            let (mut taken, mut refused) = (0u64, 0u64);
            for _ in 0..offered / SENDERS {
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
        "offered {} MiB in {offered} messages: taken {taken}, refused {refused}; \
         VmRSS before {} MiB, peak {} MiB (+{} MiB, bound {} MiB)",
        (offered * PAYLOAD as u64) >> 20,
        before >> 20,
        peak >> 20,
        grown >> 20,
        rss_bound >> 20,
    );
    assert!(
        taken <= bound,
        "{taken} messages taken while no commit completed (bound {bound})"
    );
    assert!(
        refused >= offered - bound,
        "senders were not pushed back: {refused} refused"
    );
    assert!(
        grown < rss_bound,
        "peak resident memory grew by {} MiB (bound {} MiB)",
        grown >> 20,
        rss_bound >> 20
    );
    drop(holds);
    if !read_back {
        return;
    }
    // A read may be retried whatever it met (a re-activation after the stall, say).
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let released = std::time::Instant::now();
    let total = loop {
        match senders.block_on(blob.call(BlobMsg::Total, Duration::from_secs(30))) {
            Ok(total) => {
                eprintln!("total read {:?} after the release", released.elapsed());
                break total;
            }
            Err(e) if e.retry() != Retry::Never && std::time::Instant::now() < deadline => {
                eprintln!("reading the total: {e} (retrying)");
            }
            Err(e) => panic!("reading the total: {e}"),
        }
    };
    let (failed, undeliverable) = owners
        .iter()
        .filter_map(|n| n.object_stats().get(Blob::CLASS).cloned())
        .fold((0, 0), |(f, u), s| {
            (f + s.write_sets_failed, u + s.undeliverable)
        });
    let lost = failed + undeliverable;
    eprintln!("counted lost: {failed} write sets failed, {undeliverable} undeliverable");
    assert!(
        lost <= may_lose,
        "{lost} taken messages lost (at most {may_lose} may be)"
    );
    let least = taken + 1 - lost;
    let most = if exact { taken + 1 } else { offered + 1 };
    assert!(
        (least * PAYLOAD as u64..=most * PAYLOAD as u64).contains(&total),
        "stored {} messages; {taken} were taken (and 1 before), {lost} counted as lost",
        total / PAYLOAD as u64
    );
}
