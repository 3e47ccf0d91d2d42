//! A backup of a live node taken while objects keep writing (`Store::backup`, the copy
//! `cairn-node backup` makes: LMDB's compacting copy of one read snapshot), restored into a
//! fresh data dir and opened by a fresh node: every write acknowledged before the backup
//! began is there, none from the future, and no write set is torn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(20);
/// Bytes of each object's blob, rewritten with every bump.
const BLOB: usize = 2048;

#[derive(Serialize, Deserialize)]
enum LedgerMsg {
    /// Adds one to the count and rewrites the mirror and the blob with it, in one write
    /// set; answers the new count once it is durable.
    Bump(Reply<u64>),
    /// Answers what storage holds: (count, mirror, whether the blob matches the count).
    Read(Reply<(u64, u64, bool)>),
}

/// Three keys written together: a torn write set would show as a mirror or a blob that
/// disagrees with the count.
struct Ledger {
    count: u64,
}

impl Object for Ledger {
    const CLASS: &'static str = "obs-ledger";
    type Msg = LedgerMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Ledger {
            count: ctx.storage().get("count")?.unwrap_or(0),
        })
    }

    async fn handle(
        &mut self,
        msg: LedgerMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            LedgerMsg::Bump(reply) => {
                self.count += 1;
                ctx.storage().put("count", &self.count)?;
                ctx.storage().put("mirror", &self.count)?;
                ctx.storage().put("blob", &vec![self.count as u8; BLOB])?;
                let _ = reply.send(self.count);
            }
            LedgerMsg::Read(reply) => {
                let count: u64 = ctx.storage().get("count")?.unwrap_or(0);
                let mirror: u64 = ctx.storage().get("mirror")?.unwrap_or(0);
                let blob: Vec<u8> = ctx.storage().get("blob")?.unwrap_or_default();
                let whole = if count == 0 {
                    blob.is_empty()
                } else {
                    blob.len() == BLOB && blob.iter().all(|&b| b == count as u8)
                };
                let _ = reply.send((count, mirror, whole));
            }
        }
        Ok(())
    }
}

fn start(dir: &std::path::Path) -> Node {
    let node = Node::builder()
        .workers(2)
        .name("bk1")
        .data_dir(dir)
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure_dev()
        .start()
        .unwrap();
    node.host::<Ledger>();
    node
}

#[test]
fn a_backup_under_load_restores_every_write_acknowledged_before_it() {
    const WRITERS: usize = 4;
    const KEYS_EACH: usize = 8;
    const FILLER: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("live"));
    // Bulk beside the objects, so the copy takes a while as writes go on.
    let filler = node.keyspace("obs-filler").unwrap();
    for i in 0..FILLER {
        filler.put(format!("f{i:05}"), &vec![7u8; 4096]).unwrap();
    }
    filler.sync().unwrap();

    let keys: Vec<Vec<String>> = (0..WRITERS)
        .map(|w| (0..KEYS_EACH).map(|k| format!("w{w}k{k}")).collect())
        .collect();
    // The highest count acknowledged per key so far.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = keys
        .iter()
        .map(|mine| {
            let refs: Vec<_> = mine
                .iter()
                .map(|k| (k.clone(), node.object::<Ledger>(k)))
                .collect();
            let (acked, acks, stop) = (Arc::clone(&acked), Arc::clone(&acks), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for (key, r) in &refs {
                        let n = cairn::scheduler::block_on(r.call(LedgerMsg::Bump, T))
                            .expect("a bump failed");
                        let mut acked = acked.lock().unwrap();
                        let seen = acked.entry(key.clone()).or_default();
                        assert!(n > *seen, "{key}: count went from {seen} to {n}");
                        *seen = n;
                        drop(acked);
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    // Under load: wait for every key to have some acknowledged writes.
    let deadline = Instant::now() + T;
    while acked.lock().unwrap().len() < WRITERS * KEYS_EACH || acks.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let file_path = dir.path().join("live.backup");
    let file = std::fs::File::create_new(&file_path).unwrap();
    let floor = acked.lock().unwrap().clone();
    let acks_before = acks.load(Ordering::SeqCst);
    let began = Instant::now();
    node.store().backup(&file).unwrap();
    let took = began.elapsed();
    let acks_during = acks.load(Ordering::SeqCst) - acks_before;
    file.sync_all().unwrap();
    drop(file);
    // Writes go on after the copy, then stop.
    let until = acks.load(Ordering::SeqCst) + 100;
    while acks.load(Ordering::SeqCst) < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let ceiling = acked.lock().unwrap().clone();
    eprintln!(
        "backup of {} bytes took {took:?}; {acks_during} writes acknowledged meanwhile",
        std::fs::metadata(&file_path).unwrap().len()
    );
    node.shutdown();
    drop(node);

    let restored_dir = dir.path().join("restored");
    cairn::storage::Store::restore(&file_path, &restored_dir).unwrap();
    let restored = start(&restored_dir);
    let mut behind_live = 0;
    for key in keys.iter().flatten() {
        let (count, mirror, whole) = restored
            .block_on(restored.object::<Ledger>(key).call(LedgerMsg::Read, T))
            .unwrap();
        assert_eq!(count, mirror, "{key}: a torn write set");
        assert!(whole, "{key}: the blob does not match count {count}");
        assert!(
            count >= floor[key],
            "{key}: {count} restored, {} acknowledged before the backup",
            floor[key]
        );
        assert!(
            count <= ceiling[key],
            "{key}: {count} restored, only {} ever acknowledged",
            ceiling[key]
        );
        if count < ceiling[key] {
            behind_live += 1;
        }
    }
    // The copy is a snapshot: writes acknowledged after it are not in it.
    assert!(behind_live > 0, "the backup holds writes made after it");
    let filler = restored.keyspace("obs-filler").unwrap();
    assert_eq!(
        filler
            .get::<Vec<u8>>(format!("f{:05}", FILLER - 1))
            .unwrap(),
        Some(vec![7u8; 4096])
    );
    restored.shutdown();
}
