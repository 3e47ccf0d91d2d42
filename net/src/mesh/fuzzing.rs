//! Entry points for the fuzz targets under `fuzz/` (`testing` feature only): the mesh's
//! decoders and screens take bytes from any member, so each must turn every input into
//! a value or an error, never a panic, and keep its invariants. Each function asserts
//! them; a fuzz target calls it with arbitrary bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::NodeId;
use foca::{Identity, Member, State};
use parking_lot::Mutex;

use super::names::{NameBroadcasts, NameTable};
use super::screen::{self, Packet, View, MAX_INCARNATION_BUMP};
use super::swim::{Effects, NodeIdentity, Swim};
use super::wire::{decode_payload, encode_payload, NameOp, Wire};
use super::{MAX_NAMES_PER_NODE, MAX_NAME_LEN};

/// Decodes `data` as a [`Wire`] frame; a decoded frame re-encodes to one that decodes
/// to the same value.
pub fn wire_frame(data: &[u8]) {
    let Ok(frame) = decode_payload::<Wire>(data) else {
        return;
    };
    let again = encode_payload(&frame).expect("a decoded frame encodes");
    assert_eq!(decode_payload::<Wire>(&again).as_ref(), Ok(&frame));
}

/// Applies the name ops in `data` (MessagePack values separated by `0xc1`, a byte that
/// starts no MessagePack value) to node 1's table as if gossiped by others (in turn: from
/// their own node, and relayed by node 2, settled by node 3's word): no op about node 1's
/// own pids takes hold, and the table's bounds hold.
pub fn name_ops(data: &[u8]) {
    let local = NodeId(1);
    let mut table = NameTable::new(local, 1);
    table.node_up(NodeId(3), 1);
    for (i, chunk) in data.split(|b| *b == 0xc1).enumerate() {
        if let Ok(op) = decode_payload::<NameOp>(chunk) {
            if i % 2 == 0 {
                table.apply(&op);
            } else {
                table.hear(&op, NodeId(2));
                table.mark_asked(NodeId(3), true);
                let word: Vec<_> = table.all_claims();
                table.confirm(NodeId(3), &word, i % 4 == 1);
            }
        }
    }
    let claims = table.all_claims();
    let mut per_node: HashMap<NodeId, usize> = HashMap::new();
    for claim in &claims {
        assert_ne!(claim.pid.node(), local, "another node claimed a local pid");
        assert!(claim.name.len() <= MAX_NAME_LEN, "{claim:?}");
        *per_node.entry(claim.pid.node()).or_default() += 1;
    }
    assert!(per_node.values().all(|n| *n <= MAX_NAMES_PER_NODE));
}

fn identity(n: u64) -> NodeIdentity {
    NodeIdentity {
        node: NodeId(n),
        name: format!("node-{n}"),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
        region: None,
        incarnation: 100,
        epoch: 0,
    }
}

/// Screens `data` as a SWIM packet from node 2 to node 1 (which knows nodes 2 and 3),
/// checks the screen's promises, then hands what passed to a real foca instance.
pub fn swim_packet(data: &[u8]) {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    assert_eq!(Packet::decode(&packet.encode()).as_ref(), Ok(&packet));
    let me = identity(1);
    let known: HashMap<NodeId, Member<NodeIdentity>> = [2, 3]
        .into_iter()
        .map(|n| (NodeId(n), Member::new(identity(n), 5, State::Alive)))
        .collect();
    let view = View {
        me: &me,
        my_incarnation: 5,
        known: known.clone(),
        room_for_unmet: 1,
    };
    let Ok(verdict) = screen::screen_packet(NodeId(2), packet, &view) else {
        return;
    };
    let mut strangers = 0;
    for update in verdict.packet.updates.iter().flatten() {
        let node = update.id().node;
        if node == NodeId(2) {
            continue;
        }
        assert_ne!(update.state(), State::Down, "a third party's Down passed");
        let current = if node == me.node {
            Some(&me)
        } else {
            known.get(&node).map(|k| k.id())
        };
        let Some(current) = current else {
            strangers += 1;
            assert!(
                strangers <= 1,
                "gossip introduced more than the room allowed"
            );
            assert_eq!(
                node,
                NodeId::of_name(&update.id().name),
                "a stranger not its name's"
            );
            continue;
        };
        assert!(
            update.id() == current || current.win_addr_conflict(update.id()),
            "a third party replaced a live identity"
        );
        if update.id() == current {
            assert!(update.incarnation() <= 5 + MAX_INCARNATION_BUMP);
        }
    }
    let table = Arc::new(Mutex::new(NameTable::new(me.node, me.incarnation)));
    let mut swim = Swim::new(me, Duration::from_secs(5), NameBroadcasts { table }, 7);
    let mut fx = Effects::default();
    let _ = swim.foca.apply_many(known.into_values(), false, &mut fx);
    let _ = swim.foca.handle_data(&verdict.packet.encode(), &mut fx);
}
