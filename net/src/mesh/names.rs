//! Cluster-wide names: the replicated name table (sans-IO), its foca broadcast handler,
//! and the mesh's claims and releases for local processes (`Inner::claim`, `Inner::release`).
//!
//! Every node keeps a full copy of the table `name -> NameClaim { pid, lamport }`. A node
//! changes it for its *own* processes only ([`NameTable::claim_local`],
//! [`NameTable::release_local`]) and tells the others with a [`NameOp`] disseminated as a
//! foca custom broadcast ([`NameBroadcasts`]); a node that joins asks one member for the
//! whole table (`Wire::SyncRequest`), so later joiners learn existing names.
//!
//! # One winner, the same on every node
//!
//! Two nodes may claim one name before hearing of each other. Claims are ordered by
//! `(lamport, pid)` — the registering node's Lamport clock, then the pid (node id first,
//! so ties between nodes break by node id) — and the **lowest claim wins**. Every node
//! applies the same rule to whatever claims reach it, in any order, so all converge on the
//! same winner (the rule is a deterministic function of the set of claims seen). The
//! Lamport clock advances past every claim a node sees, so a claim made *after* learning
//! of a holder sorts after it: a late registration can never steal a name from an earlier
//! one, and [`NameTable::claim_local`] refuses a name it already knows to be held. When a
//! local process loses, it is queued in `losers`; the mesh exits it with
//! `ExitReason::NameConflict(name)` and its entry is gone.
//!
//! # Releases, tombstones, dead nodes
//!
//! A release (exit or unregister) leaves a tombstone `(name, pid) -> lamport`, so a claim
//! still travelling in gossip cannot bring the name back: a claim is stale when a tombstone
//! of the same `(name, pid)` is at least as recent. When a node is declared down, every
//! claim and tombstone of its pids is dropped and claims of its pids are ignored until it
//! is seen up again (a restarted node reuses pids, so its old tombstones must not block
//! its new claims). Tombstones of live nodes are kept (memory grows with the number of
//! releases; collecting them needs a stable-cut rule, which is future work).
//!
//! A node is the authority on its own pids: claims and releases of them enter its table
//! only through `claim_local`/`release_local`. One arriving from elsewhere is about a
//! previous incarnation of this node (a restarted node reuses its node id and pids) and
//! is ignored.
//!
//! # Who may speak for a node's pids
//!
//! An op about node X's pids is taken only from X itself, over an authenticated link: a
//! SWIM packet whose sender is X (the membership screen has checked the sender is the
//! connection's peer), a sync request from X (its own claims), or X's answer to a sync.
//! The same op *relayed* by another member (gossip passes ops on; a sync answer carries
//! everyone's claims) is a *rumour*: it is not applied, but queued for X (at most
//! [`MAX_RUMOURS_PER_NODE`]) and X is asked for a sync (`Inner::ask_name_origins`). X's
//! answer settles each rumour it was asked about: a claim stands if X's own claims hold
//! it, a release if they no longer hold the name for that pid; anything else was not X's
//! word and is refused and counted. A rumour about a node that is down, unknown, or this
//! node is refused at once. Gossip still passes a rumour on, so every node hears of it
//! and asks X itself.
//!
//! # Bounds on what others may claim
//!
//! An op from another node is refused (dropped, counted in
//! [`MeshStats::refused_name_ops`](super::MeshStats::refused_name_ops)) when its name is
//! empty or longer than [`MAX_NAME_LEN`], its Lamport time is 0 (no node ever issues 0, so
//! it could only serve to outrank every real claim) or more than [`LAMPORT_WINDOW`] ahead
//! of this node's clock (a claim at `u64::MAX` would otherwise freeze every clock at the
//! top), or it would give one node more than [`MAX_NAMES_PER_NODE`] names or tombstones.
//! Local clocks advance with `saturating_add`, so they never wrap.
//!
//! Invariants: `entries[name].pid.node()` is never a node in `down`; an entry of a local
//! pid was made by `claim_local`; `held[n]` and `buried[n]` are the numbers of entries and
//! tombstones of node `n`'s pids, each at most [`MAX_NAMES_PER_NODE`] for other nodes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_scheduler::{Ctx, ExitReason, NodeId, Pid};
use parking_lot::Mutex;

use super::swim::NodeIdentity;
use super::wire::{decode_payload, encode_payload, NameClaim, NameOp};
use super::Inner;

/// Why [`Mesh::register_name`](super::Mesh::register_name) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is held by another process this node knows of (here or on another node).
    #[error("name {name:?} is already held by {holder:?}")]
    Taken {
        /// The name.
        name: String,
        /// Its holder.
        holder: Pid,
    },
    /// Only processes of this node can be registered here.
    #[error("{0:?} is not a process of this node")]
    NotLocal(Pid),
    /// The process is not alive.
    #[error("no such process: {0:?}")]
    NoProc(Pid),
    /// The name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("a name must have 1 to {MAX_NAME_LEN} bytes")]
    BadName,
    /// This mesh is closed.
    #[error("mesh closed")]
    Closed,
}

/// Longest name accepted: a name op must fit in one SWIM packet with room to spare.
pub const MAX_NAME_LEN: usize = 256;

/// How far ahead of this node's Lamport clock another node's op may be. Far beyond what
/// honest clusters reach between two syncs (each op advances a clock by one), far below
/// `u64::MAX`: a hostile member needs 2^32 accepted ops per 2^32 of clock it burns.
pub const LAMPORT_WINDOW: u64 = 1 << 32;

/// The most names (and, separately, tombstones) one other node's pids may hold here.
pub const MAX_NAMES_PER_NODE: usize = 65_536;

/// The most relayed ops about one node's pids waiting for that node to confirm them.
pub const MAX_RUMOURS_PER_NODE: usize = 1024;

/// A relayed op waiting for its origin's word (see the module doc).
#[derive(Debug)]
struct Rumour {
    op: NameOp,
    /// Whether the origin was asked since it arrived (only asked ones are settled by an
    /// answer; the answer may predate the others).
    asked: bool,
}

/// What a claim from its origin would do to the table ([`NameTable::claim_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimVerdict {
    /// Nothing: the claim is stale (this node's own pid, a down node, an earlier
    /// incarnation, released since) or loses to the holder.
    Stale,
    /// The name is free: the claim takes it.
    Takes,
    /// The holder claims again with an earlier time: the entry keeps the earliest.
    Earlier,
    /// The claim outranks the holder `loser` and replaces it.
    Beats { loser: Pid },
}

/// What a release from its origin would do to the table ([`NameTable::release_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReleaseVerdict {
    /// Its tombstone is newer than the one kept (or there is none).
    newer: bool,
    /// The released pid holds the name, claimed no later than the release.
    holds: bool,
}

/// The replicated table. See the module doc for the rules.
#[derive(Debug)]
pub(crate) struct NameTable {
    local: NodeId,
    /// This node's incarnation, stamped on its claims.
    incarnation: u64,
    /// The live incarnation of each other node that was up: older claims are stale.
    incarnations: HashMap<NodeId, u64>,
    lamport: u64,
    entries: HashMap<String, NameClaim>,
    tombstones: HashMap<(String, Pid), u64>,
    down: HashSet<NodeId>,
    losers: Vec<(String, Pid)>,
    /// Entries per node.
    held: HashMap<NodeId, usize>,
    /// Tombstones per node.
    buried: HashMap<NodeId, usize>,
    /// Ops from other nodes refused by the bounds (see the module doc).
    refused: u64,
    /// Relayed ops by origin node, waiting for its confirmation.
    rumours: HashMap<NodeId, Vec<Rumour>>,
}

fn rank(c: &NameClaim) -> (u64, Pid) {
    (c.lamport, c.pid)
}

impl NameTable {
    pub(crate) fn new(local: NodeId, incarnation: u64) -> NameTable {
        NameTable {
            local,
            incarnation,
            incarnations: HashMap::new(),
            lamport: 0,
            entries: HashMap::new(),
            tombstones: HashMap::new(),
            down: HashSet::new(),
            losers: Vec::new(),
            held: HashMap::new(),
            buried: HashMap::new(),
            refused: 0,
            rumours: HashMap::new(),
        }
    }

    /// Ops from other nodes refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether an op from another node about `name` at `lamport` is within bounds
    /// (counted if not).
    fn admissible(&mut self, name: &str, lamport: u64) -> bool {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && lamport != 0
            && lamport <= self.lamport.saturating_add(LAMPORT_WINDOW);
        if !ok {
            self.refused += 1;
            tracing::warn!(name = %name.chars().take(64).collect::<String>(), lamport, "name op out of bounds; refused");
        }
        ok
    }

    /// Whether `node` may hold one more entry (counted if not).
    fn room_for(&mut self, node: NodeId) -> bool {
        let room =
            node == self.local || self.held.get(&node).copied().unwrap_or(0) < MAX_NAMES_PER_NODE;
        if !room {
            self.refused += 1;
            tracing::warn!(%node, "node holds too many names; claim refused");
        }
        room
    }

    /// Sets `name`'s entry, keeping the per-node counts.
    fn put(&mut self, claim: NameClaim) {
        *self.held.entry(claim.pid.node()).or_insert(0) += 1;
        if let Some(old) = self.entries.insert(claim.name.clone(), claim) {
            self.uncount(old.pid.node());
        }
    }

    /// Removes `name`'s entry, keeping the per-node counts.
    fn take(&mut self, name: &str) {
        if let Some(old) = self.entries.remove(name) {
            self.uncount(old.pid.node());
        }
    }

    fn uncount(&mut self, node: NodeId) {
        if let Some(n) = self.held.get_mut(&node) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&node);
            }
        }
    }

    /// Records a tombstone unless `pid`'s node has too many; false if refused.
    fn bury(&mut self, name: &str, pid: Pid, lamport: u64) -> bool {
        let node = pid.node();
        let key = (name.to_owned(), pid);
        if !self.tombstones.contains_key(&key) {
            let count = self.buried.entry(node).or_insert(0);
            if node != self.local && *count >= MAX_NAMES_PER_NODE {
                self.refused += 1;
                tracing::warn!(%node, "node has too many released names; release refused");
                return false;
            }
            *count += 1;
        }
        self.tombstones.insert(key, lamport);
        true
    }

    /// Forgets `name`'s tombstone of `pid`.
    fn unbury(&mut self, name: &str, pid: Pid) {
        if self.tombstones.remove(&(name.to_owned(), pid)).is_some() {
            if let Some(n) = self.buried.get_mut(&pid.node()) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The holder of `name` as this node knows it.
    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.entries.get(name).map(|c| c.pid)
    }

    /// Registers a local `pid`: `Ok(Some(claim))` to disseminate, `Ok(None)` if `pid`
    /// already holds it.
    pub(crate) fn claim_local(
        &mut self,
        name: &str,
        pid: Pid,
    ) -> Result<Option<NameClaim>, NameError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(NameError::BadName);
        }
        match self.entries.get(name) {
            Some(c) if c.pid == pid => return Ok(None),
            Some(c) => {
                return Err(NameError::Taken {
                    name: name.to_owned(),
                    holder: c.pid,
                })
            }
            None => {}
        }
        self.lamport = self.lamport.saturating_add(1);
        let claim = NameClaim {
            name: name.to_owned(),
            pid,
            lamport: self.lamport,
            incarnation: self.incarnation,
        };
        self.unbury(name, pid);
        self.put(claim.clone());
        Ok(Some(claim))
    }

    /// Releases `name` for local `pid`: the op to disseminate, or `None` if `pid` did not
    /// hold it (nothing to tell).
    pub(crate) fn release_local(&mut self, name: &str, pid: Pid) -> Option<NameOp> {
        if self.entries.get(name).map(|c| c.pid) != Some(pid) {
            return None;
        }
        self.lamport = self.lamport.saturating_add(1);
        self.take(name);
        self.bury(name, pid, self.lamport);
        Some(NameOp::Release {
            name: name.to_owned(),
            pid,
            lamport: self.lamport,
        })
    }

    /// Applies an op from another node; true if it was news (to be disseminated further).
    pub(crate) fn apply(&mut self, op: &NameOp) -> bool {
        match op {
            NameOp::Claim(claim) => self.apply_claim(claim.clone()),
            NameOp::Release { name, pid, lamport } => {
                if !self.admissible(name, *lamport) {
                    return false;
                }
                self.lamport = self.lamport.max(*lamport);
                let ReleaseVerdict { newer, holds } = self.release_verdict(name, *pid, *lamport);
                if newer && !self.bury(name, *pid, *lamport) {
                    return false;
                }
                if holds {
                    self.take(name);
                }
                newer || holds
            }
        }
    }

    /// Applies a claim; true if it changed the table.
    pub(crate) fn apply_claim(&mut self, claim: NameClaim) -> bool {
        if !self.admissible(&claim.name, claim.lamport) {
            return false;
        }
        self.lamport = self.lamport.max(claim.lamport);
        match self.claim_verdict(&claim) {
            ClaimVerdict::Stale => false,
            ClaimVerdict::Earlier => {
                self.put(claim);
                true
            }
            ClaimVerdict::Takes => {
                if !self.room_for(claim.pid.node()) {
                    return false;
                }
                self.put(claim);
                true
            }
            ClaimVerdict::Beats { loser } => {
                if !self.room_for(claim.pid.node()) {
                    return false;
                }
                if loser.node() == self.local {
                    self.losers.push((claim.name.clone(), loser));
                }
                self.put(claim);
                true
            }
        }
    }

    /// What `claim`, heard from its origin, would do to the table: the one screening of
    /// claims, for `apply_claim` and for relayed ones (`would_change`). The per-node bound
    /// (`room_for`) is checked only when applying.
    fn claim_verdict(&self, claim: &NameClaim) -> ClaimVerdict {
        let node = claim.pid.node();
        // Claims of this node's pids are made by `claim_local` only: one coming from
        // elsewhere is about a previous incarnation of this node (same node id, and pids
        // are reused after a restart) and is stale.
        if node == self.local || self.down.contains(&node) {
            return ClaimVerdict::Stale;
        }
        // A claim made by an earlier life of a node that has since restarted (still
        // being gossiped, or in a sync from a node that had not seen the restart).
        if self
            .incarnations
            .get(&node)
            .is_some_and(|&live| claim.incarnation < live)
        {
            return ClaimVerdict::Stale;
        }
        if let Some(&released) = self.tombstones.get(&(claim.name.clone(), claim.pid)) {
            if released >= claim.lamport {
                return ClaimVerdict::Stale;
            }
        }
        match self.entries.get(&claim.name) {
            None => ClaimVerdict::Takes,
            // The same holder: keep the earliest time (the one others rank by).
            Some(held) if held.pid == claim.pid => {
                if claim.lamport < held.lamport {
                    ClaimVerdict::Earlier
                } else {
                    ClaimVerdict::Stale
                }
            }
            Some(held) if rank(claim) < rank(held) => ClaimVerdict::Beats { loser: held.pid },
            // The incoming claim loses: nothing changes.
            Some(_) => ClaimVerdict::Stale,
        }
    }

    /// What a release of `name` by `pid` at `lamport`, heard from its origin, would do to
    /// the table (for `apply` and `would_change`).
    fn release_verdict(&self, name: &str, pid: Pid, lamport: u64) -> ReleaseVerdict {
        // This node is the authority on its own pids (see `claim_verdict`).
        if pid.node() == self.local || self.down.contains(&pid.node()) {
            return ReleaseVerdict {
                newer: false,
                holds: false,
            };
        }
        ReleaseVerdict {
            newer: self
                .tombstones
                .get(&(name.to_owned(), pid))
                .is_none_or(|&t| t < lamport),
            holds: self
                .entries
                .get(name)
                .is_some_and(|c| c.pid == pid && c.lamport <= lamport),
        }
    }

    /// `node` was declared down: drops its claims and tombstones; returns the names it held.
    pub(crate) fn node_down(&mut self, node: NodeId) -> Vec<String> {
        if node == self.local {
            return Vec::new();
        }
        self.down.insert(node);
        self.rumours.remove(&node);
        self.tombstones.retain(|(_, pid), _| pid.node() != node);
        self.buried.remove(&node);
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, c)| c.pid.node() == node)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            self.take(n);
        }
        names
    }

    /// Hears `op` from `from` (an authenticated peer): applied if `from` is the node whose
    /// pid it is about, else kept as a rumour for that node to confirm (see the module doc).
    /// True if it is news to pass on.
    pub(crate) fn hear(&mut self, op: &NameOp, from: NodeId) -> bool {
        let origin = op.pid().node();
        if origin == from {
            return self.apply(op);
        }
        if origin == self.local {
            // About this node's own pids: only this node speaks for them (stale or forged).
            return false;
        }
        if !self.admissible(op.name(), op.lamport()) || !self.would_change(op) {
            return false;
        }
        let known = self.incarnations.contains_key(&origin) && !self.down.contains(&origin);
        let waiting = self.rumours.get(&origin).map_or(0, Vec::len);
        if !known || waiting >= MAX_RUMOURS_PER_NODE {
            self.refused += 1;
            // Debug only: a joining node hears of names before it knows their nodes (a sync
            // brings them again once it does).
            tracing::debug!(%origin, relayed_by = %from, name = %op.name().chars().take(64).collect::<String>(), "relayed name op about a node that is not a live member (or too many waiting); refused");
            return false;
        }
        let queue = self.rumours.entry(origin).or_default();
        if queue.iter().any(|r| r.op == *op) {
            return false;
        }
        queue.push(Rumour {
            op: op.clone(),
            asked: false,
        });
        true
    }

    /// Whether applying `op` (from its origin) would change the table (the per-node
    /// bound aside).
    fn would_change(&self, op: &NameOp) -> bool {
        match op {
            NameOp::Claim(claim) => self.claim_verdict(claim) != ClaimVerdict::Stale,
            NameOp::Release { name, pid, lamport } => {
                let ReleaseVerdict { newer, holds } = self.release_verdict(name, *pid, *lamport);
                newer || holds
            }
        }
    }

    /// Nodes with rumours they were not asked about yet.
    pub(crate) fn origins_to_ask(&self) -> Vec<NodeId> {
        self.rumours
            .iter()
            .filter(|(_, queue)| queue.iter().any(|r| !r.asked))
            .map(|(&node, _)| node)
            .collect()
    }

    /// `node` is being asked (a sync request is on its way): its rumours so far are settled
    /// by its answer.
    pub(crate) fn mark_asked(&mut self, node: NodeId, asked: bool) {
        for rumour in self.rumours.get_mut(&node).into_iter().flatten() {
            rumour.asked = asked;
        }
    }

    /// `from`'s own word on its pids: `claims`, all the names its processes hold. Applies
    /// them, and settles `from`'s rumours (all of them when `all`, else those it was asked
    /// about): confirmed ones are applied, the others refused and counted.
    pub(crate) fn confirm(&mut self, from: NodeId, claims: &[NameClaim], all: bool) {
        let rumours = self.rumours.remove(&from).unwrap_or_default();
        let (settle, keep): (Vec<Rumour>, Vec<Rumour>) =
            rumours.into_iter().partition(|r| all || r.asked);
        if !keep.is_empty() {
            self.rumours.insert(from, keep);
        }
        for claim in claims.iter().filter(|c| c.pid.node() == from) {
            self.apply_claim(claim.clone());
        }
        for Rumour { op, .. } in settle {
            let confirmed = match &op {
                NameOp::Claim(rumoured) => claims.iter().any(|c| c == rumoured),
                // Released: the node's processes no longer hold it for that pid.
                NameOp::Release { name, pid, .. } => {
                    !claims.iter().any(|c| c.name == *name && c.pid == *pid)
                }
            };
            if confirmed {
                self.apply(&op);
            } else {
                self.refused += 1;
                tracing::warn!(origin = %from, name = %op.name().chars().take(64).collect::<String>(), "a relayed name op its node does not confirm; refused");
            }
        }
    }

    /// `node` (a new incarnation, or back from a false suspicion) is up again.
    pub(crate) fn node_up(&mut self, node: NodeId, incarnation: u64) {
        self.down.remove(&node);
        self.incarnations.insert(node, incarnation);
    }

    /// This node rejoined as a new incarnation: its claims carry it from now on.
    pub(crate) fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
        let local = self.local;
        for claim in self.entries.values_mut() {
            if claim.pid.node() == local {
                claim.incarnation = incarnation;
            }
        }
    }

    /// Claims held by this node's processes.
    pub(crate) fn local_claims(&self) -> Vec<NameClaim> {
        self.entries
            .values()
            .filter(|c| c.pid.node() == self.local)
            .cloned()
            .collect()
    }

    /// Every claim.
    pub(crate) fn all_claims(&self) -> Vec<NameClaim> {
        self.entries.values().cloned().collect()
    }

    /// Local processes that lost a name race since the last call.
    pub(crate) fn take_losers(&mut self) -> Vec<(String, Pid)> {
        std::mem::take(&mut self.losers)
    }
}

/// What foca keeps per broadcast so it can drop superseded ones from its backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameKey {
    name: String,
    pid: Pid,
    lamport: u64,
    release: bool,
}

impl NameKey {
    fn of(op: &NameOp) -> NameKey {
        match op {
            NameOp::Claim(c) => NameKey {
                name: c.name.clone(),
                pid: c.pid,
                lamport: c.lamport,
                release: false,
            },
            NameOp::Release { name, pid, lamport } => NameKey {
                name: name.clone(),
                pid: *pid,
                lamport: *lamport,
                release: true,
            },
        }
    }
}

impl foca::Invalidates for NameKey {
    /// A later op on the same `(name, pid)` supersedes an earlier one (a release beats
    /// the claim it ends).
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name
            && self.pid == other.pid
            && (self.lamport, self.release) >= (other.lamport, other.release)
    }
}

/// A name op that did not decode.
#[derive(Debug, thiserror::Error)]
#[error("bad name broadcast: {0}")]
pub(crate) struct BadNameOp(String);

/// foca's custom-broadcast handler: applies name ops from peers to the shared table.
pub(crate) struct NameBroadcasts {
    pub(crate) table: Arc<Mutex<NameTable>>,
}

impl foca::BroadcastHandler<NodeIdentity> for NameBroadcasts {
    type Key = NameKey;
    type Error = BadNameOp;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<NameKey>, BadNameOp> {
        let op: NameOp = decode_payload(data).map_err(BadNameOp)?;
        // `sender == None`: our own op, already applied by `claim_local`/`release_local`
        // and added on purpose — always disseminate it. Otherwise the sender is the
        // packet's, which the screen checked is the connection's authenticated peer.
        let news = match sender {
            None => true,
            Some(sender) => self.table.lock().hear(&op, sender.node),
        };
        Ok(news.then(|| NameKey::of(&op)))
    }
}

/// Encodes an op for `Foca::add_broadcast`.
pub(crate) fn encode_op(op: &NameOp) -> Vec<u8> {
    // A NameOp holds strings, integers and pids only: encoding cannot fail.
    encode_payload(op).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The mesh's side: claiming and releasing names of local processes, and what membership
// and the scheduler's router ask of the table.
// ---------------------------------------------------------------------------------------

impl Inner {
    /// The cluster-wide holder of `name`, as this node knows it.
    pub(super) fn cluster_whereis(&self, name: &str) -> Option<Pid> {
        self.names.lock().whereis(name)
    }

    /// Every claim this node holds (a sync answer).
    pub(super) fn name_claims(&self) -> Vec<NameClaim> {
        self.names.lock().all_claims()
    }

    /// The claims of this node's processes (sent with a sync request).
    pub(super) fn local_name_claims(&self) -> Vec<NameClaim> {
        self.names.lock().local_claims()
    }

    /// Membership saw `node` (incarnation `incarnation`) come up.
    pub(super) fn names_node_up(&self, node: NodeId, incarnation: u64) {
        self.names.lock().node_up(node, incarnation);
    }

    /// Membership declared `node` down: its names go. Returns how many.
    pub(super) fn names_node_down(&self, node: NodeId) -> usize {
        self.names.lock().node_down(node).len()
    }

    /// This node rejoined as `incarnation`: its claims, restamped, as broadcasts to add.
    pub(super) fn reclaim_names(&self, incarnation: u64) -> Vec<Vec<u8>> {
        let mut names = self.names.lock();
        names.set_incarnation(incarnation);
        names
            .local_claims()
            .into_iter()
            .map(|claim| encode_op(&NameOp::Claim(claim)))
            .collect()
    }

    /// A local `spawn_named`/`register` made `name` cluster-wide. The scheduler checked
    /// the cluster view first; a claim that arrived since makes this one lose the race.
    pub(super) fn claimed_by_scheduler(self: &Arc<Self>, name: &str, pid: Pid) {
        match self.claim(name, pid, false) {
            Ok(()) => {}
            Err(NameError::Taken { holder, .. }) => {
                tracing::warn!(%name, %pid, %holder, "cluster-wide name taken meanwhile; the new holder exits");
                self.handle
                    .exit(pid, ExitReason::NameConflict(name.to_owned()));
            }
            Err(error) => tracing::warn!(%name, %pid, %error, "name not registered cluster-wide"),
        }
    }

    /// Applies the claims of a name-table sync from `from`: its own claims are its word
    /// (settling its rumours: all of them when `complete`, a sync request's list of its
    /// own; else those it was asked about); the others' claims are rumours for their
    /// nodes (see the module doc), who are then asked.
    pub(super) fn apply_name_sync(
        self: &Arc<Self>,
        from: NodeId,
        claims: Vec<NameClaim>,
        complete: bool,
    ) {
        {
            let mut names = self.names.lock();
            names.confirm(from, &claims, complete);
            for claim in claims.into_iter().filter(|c| c.pid.node() != from) {
                names.hear(&NameOp::Claim(claim), from);
            }
        }
        self.exit_name_losers();
        self.ask_name_origins();
    }

    /// Exits local processes that lost a name race.
    pub(super) fn exit_name_losers(&self) {
        let losers = self.names.lock().take_losers();
        for (name, pid) in losers {
            tracing::warn!(%name, ?pid, "lost a cluster-wide name race; exiting the process");
            self.handle.exit(pid, ExitReason::NameConflict(name));
        }
    }

    /// Registers a cluster-wide name for a local process and disseminates it.
    /// `watch_exit`: release the name when `pid` exits. Not needed for names the
    /// scheduler registered (`spawn_named`): it releases them itself at exit.
    pub(super) fn claim(
        self: &Arc<Self>,
        name: &str,
        pid: Pid,
        watch_exit: bool,
    ) -> Result<(), NameError> {
        if pid.node() != self.node {
            return Err(NameError::NotLocal(pid));
        }
        if !self.handle.is_alive(pid) {
            return Err(NameError::NoProc(pid));
        }
        if self.is_closed() {
            return Err(NameError::Closed);
        }
        let Some(claim) = self.names.lock().claim_local(name, pid)? else {
            return Ok(());
        };
        tracing::info!(%name, ?pid, lamport = claim.lamport, "registered a cluster-wide name");
        if watch_exit {
            // Released everywhere when the process exits, however it exits.
            let inner = Arc::clone(self);
            let watched = name.to_owned();
            let exit = self.handle.wait_exit(pid);
            self.handle.spawn(move |_ctx: Ctx<()>| async move {
                let reason = exit.await;
                tracing::debug!(name = %watched, ?pid, %reason, "name holder exited");
                inner.release(&watched, pid);
            });
        }
        self.broadcast_name(NameOp::Claim(claim));
        Ok(())
    }

    /// Releases `name` if local `pid` holds it, and tells the cluster.
    pub(super) fn release(self: &Arc<Self>, name: &str, pid: Pid) {
        let op = self.names.lock().release_local(name, pid);
        if let Some(op) = op {
            tracing::info!(%name, ?pid, "released a cluster-wide name");
            self.broadcast_name(op);
        }
    }

    fn broadcast_name(self: &Arc<Self>, op: NameOp) {
        self.with_swim(|swim, fx| {
            if let Err(error) = swim.foca.add_broadcast(&encode_op(&op)) {
                tracing::warn!(%error, "could not queue a name broadcast");
                return;
            }
            // Send it now rather than with the next probe or gossip round.
            if let Err(error) = swim.foca.broadcast(fx) {
                tracing::debug!(%error, "SWIM broadcast");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: u64, id: u64) -> Pid {
        Pid::from_parts(NodeId(node), 0, id)
    }

    #[test]
    fn concurrent_claims_converge_on_the_lowest_in_any_order() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        let mut n2 = NameTable::new(NodeId(2), 1);
        let mut n3 = NameTable::new(NodeId(3), 1);
        let c1 = n1.claim_local("svc", pid(1, 7)).unwrap().unwrap();
        let c2 = n2.claim_local("svc", pid(2, 3)).unwrap().unwrap();
        // Same Lamport time: node 1's pid sorts first and wins everywhere.
        assert_eq!(c1.lamport, c2.lamport);
        assert!(!n1.apply_claim(c2.clone()));
        assert!(n2.apply_claim(c1.clone()));
        assert!(n3.apply_claim(c2.clone()));
        assert!(n3.apply_claim(c1.clone()));
        for t in [&n1, &n2, &n3] {
            assert_eq!(t.whereis("svc"), Some(pid(1, 7)));
        }
        assert!(
            !n1.apply_claim(NameClaim {
                name: "stale".into(),
                pid: pid(1, 9),
                lamport: 9,
                incarnation: 1,
            }),
            "claims of this node's pids from elsewhere are stale"
        );
        assert_eq!(n1.whereis("stale"), None);
        assert!(n1.take_losers().is_empty());
        assert_eq!(n2.take_losers(), vec![("svc".to_owned(), pid(2, 3))]);
        assert!(n3.take_losers().is_empty());
    }

    #[test]
    fn a_known_name_is_refused_and_a_later_claim_never_wins() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        let mut n2 = NameTable::new(NodeId(2), 1);
        let c1 = n1.claim_local("svc", pid(1, 1)).unwrap().unwrap();
        n2.apply_claim(c1);
        assert_eq!(
            n2.claim_local("svc", pid(2, 1)),
            Err(NameError::Taken {
                name: "svc".into(),
                holder: pid(1, 1)
            })
        );
        // n2's clock moved past the claim it saw: its own next claim sorts after.
        let other = n2.claim_local("other", pid(2, 1)).unwrap().unwrap();
        assert!(other.lamport > 1);
    }

    #[test]
    fn release_removes_and_a_late_claim_does_not_resurrect() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        let mut n2 = NameTable::new(NodeId(2), 1);
        let claim = n1.claim_local("svc", pid(1, 1)).unwrap().unwrap();
        let release = n1.release_local("svc", pid(1, 1)).unwrap();
        assert_eq!(n1.whereis("svc"), None);
        // n2 hears the release before the claim.
        assert!(n2.apply(&release));
        assert!(!n2.apply_claim(claim));
        assert_eq!(n2.whereis("svc"), None);
        // Registering again (a newer claim) works and reaches n2.
        let again = n1.claim_local("svc", pid(1, 1)).unwrap().unwrap();
        assert!(n2.apply_claim(again));
        assert_eq!(n2.whereis("svc"), Some(pid(1, 1)));
    }

    #[test]
    fn a_down_node_takes_its_names_until_it_is_up_again() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        let mut n2 = NameTable::new(NodeId(2), 1);
        let c = n2.claim_local("svc", pid(2, 1)).unwrap().unwrap();
        n1.apply_claim(c.clone());
        assert_eq!(n1.node_down(NodeId(2)), vec!["svc".to_owned()]);
        assert_eq!(n1.whereis("svc"), None);
        assert!(
            !n1.apply_claim(c.clone()),
            "gossip from a down node is ignored"
        );
        n1.node_up(NodeId(2), 1);
        assert!(n1.apply_claim(c));
        assert_eq!(n1.whereis("svc"), Some(pid(2, 1)));
    }

    #[test]
    fn a_claim_from_an_earlier_incarnation_is_stale_once_the_restart_is_known() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        let mut old_n2 = NameTable::new(NodeId(2), 5);
        let stale = old_n2.claim_local("svc", pid(2, 1)).unwrap().unwrap();
        n1.node_up(NodeId(2), 5);
        n1.node_down(NodeId(2));
        // n2 restarted (incarnation 6); its old claim is still being gossiped.
        n1.node_up(NodeId(2), 6);
        assert!(
            !n1.apply_claim(stale),
            "an old incarnation's claim came back"
        );
        assert_eq!(n1.whereis("svc"), None);
        let mut new_n2 = NameTable::new(NodeId(2), 6);
        let fresh = new_n2.claim_local("svc", pid(2, 1)).unwrap().unwrap();
        assert!(n1.apply_claim(fresh));
        assert_eq!(n1.whereis("svc"), Some(pid(2, 1)));
    }

    #[test]
    fn later_ops_invalidate_earlier_ones_of_the_same_name_and_pid() {
        use foca::Invalidates;
        let claim = NameKey::of(&NameOp::Claim(NameClaim {
            name: "a".into(),
            pid: pid(1, 1),
            lamport: 3,
            incarnation: 1,
        }));
        let release = NameKey::of(&NameOp::Release {
            name: "a".into(),
            pid: pid(1, 1),
            lamport: 3,
        });
        assert!(release.invalidates(&claim));
        assert!(!claim.invalidates(&release));
        let other = NameKey {
            pid: pid(2, 1),
            ..claim.clone()
        };
        assert!(!release.invalidates(&other));
    }

    fn claim(name: &str, pid: Pid, lamport: u64) -> NameClaim {
        NameClaim {
            name: name.to_owned(),
            pid,
            lamport,
            incarnation: 0,
        }
    }

    #[test]
    fn relayed_ops_wait_for_the_word_of_the_node_they_are_about() {
        let mut n1 = NameTable::new(NodeId(1), 1);
        n1.node_up(NodeId(2), 1);
        let mut n2 = NameTable::new(NodeId(2), 1);
        let real = n2.claim_local("real", pid(2, 1)).unwrap().unwrap();
        // Relayed by node 3: none is applied, all wait for node 2 (and are passed on).
        let forged = NameClaim {
            incarnation: 1,
            ..claim("forged", pid(2, 9), 1)
        };
        let release = NameOp::Release {
            name: "real".into(),
            pid: pid(2, 1),
            lamport: 5,
        };
        for op in [NameOp::Claim(real.clone()), NameOp::Claim(forged), release] {
            assert!(n1.hear(&op, NodeId(3)), "{op:?}");
        }
        assert_eq!(n1.whereis("real"), None);
        assert_eq!(n1.origins_to_ask(), vec![NodeId(2)]);
        n1.mark_asked(NodeId(2), true);
        assert!(n1.origins_to_ask().is_empty());
        // Node 2's word: its claims. The real claim stands; the forged claim and the
        // release it never made are refused and counted.
        n1.confirm(NodeId(2), &n2.local_claims(), false);
        assert_eq!(n1.whereis("real"), Some(pid(2, 1)));
        assert_eq!(n1.whereis("forged"), None);
        assert_eq!(n1.refused(), 2);
        // About a node that is not a live member: refused at once.
        assert!(!n1.hear(&NameOp::Claim(claim("x", pid(7, 1), 1)), NodeId(3)));
        assert_eq!(n1.refused(), 3);
        // From the node itself: applied at once.
        let gone = n2.release_local("real", pid(2, 1)).unwrap();
        assert!(n1.hear(&gone, NodeId(2)));
        assert_eq!(n1.whereis("real"), None);
        // A relayed release that the node confirms (it no longer holds the name) is taken.
        let again = n2.claim_local("real", pid(2, 1)).unwrap().unwrap();
        assert!(n1.hear(&NameOp::Claim(again), NodeId(2)));
        let release = n2.release_local("real", pid(2, 1)).unwrap();
        assert!(n1.hear(&release, NodeId(3)));
        n1.confirm(NodeId(2), &n2.local_claims(), true);
        assert_eq!(n1.whereis("real"), None);
        assert_eq!(n1.refused(), 3);
    }

    #[test]
    fn a_claim_at_lamport_zero_cannot_steal_a_held_name() {
        let mut table = NameTable::new(NodeId(1), 1);
        table.claim_local("svc", pid(1, 7)).unwrap().unwrap();
        assert!(!table.apply_claim(claim("svc", pid(66, 1), 0)));
        assert_eq!(table.whereis("svc"), Some(pid(1, 7)));
        assert!(!table.apply_claim(claim("free", pid(66, 1), 0)));
        assert_eq!(table.whereis("free"), None);
        assert_eq!(table.refused(), 2);
    }

    #[test]
    fn a_claim_far_ahead_of_the_clock_is_refused_and_the_clock_never_wraps() {
        let mut table = NameTable::new(NodeId(1), 1);
        for lamport in [u64::MAX, LAMPORT_WINDOW + 1] {
            assert!(!table.apply_claim(claim("far", pid(66, 1), lamport)));
        }
        assert!(!table.apply(&NameOp::Release {
            name: "far".into(),
            pid: pid(66, 1),
            lamport: u64::MAX,
        }));
        assert_eq!(table.refused(), 3);
        assert_eq!(table.whereis("far"), None);
        // The clock did not move: a local claim still ranks first among later ones.
        let mine = table.claim_local("mine", pid(1, 2)).unwrap().unwrap();
        assert_eq!(mine.lamport, 1);
        // Within the window: accepted, and the clock follows it.
        assert!(table.apply_claim(claim("near", pid(66, 1), LAMPORT_WINDOW)));
        let next = table.claim_local("next", pid(1, 3)).unwrap().unwrap();
        assert_eq!(next.lamport, LAMPORT_WINDOW + 1);
        // At the very top the clock saturates rather than wrapping to 0.
        table.lamport = u64::MAX - 1;
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let c = table
                .claim_local(name, pid(1, 10 + i as u64))
                .unwrap()
                .unwrap();
            assert!(c.lamport >= u64::MAX - 1, "wrapped: {}", c.lamport);
        }
    }

    #[test]
    fn remote_names_longer_than_the_limit_are_refused() {
        let mut table = NameTable::new(NodeId(1), 1);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(!table.apply_claim(claim(&long, pid(66, 1), 1)));
        assert!(!table.apply_claim(claim("", pid(66, 1), 1)));
        assert!(table.apply_claim(claim(&long[..MAX_NAME_LEN], pid(66, 1), 1)));
        assert_eq!(table.refused(), 2);
    }

    #[test]
    fn one_node_holds_at_most_the_per_node_limit_of_names_and_tombstones() {
        let mut table = NameTable::new(NodeId(1), 1);
        for i in 0..MAX_NAMES_PER_NODE as u64 {
            assert!(table.apply_claim(claim(&format!("n{i}"), pid(66, i), 1)));
        }
        assert!(!table.apply_claim(claim("one-more", pid(66, 0), 1)));
        assert_eq!(table.whereis("one-more"), None);
        assert_eq!(table.refused(), 1);
        // Another node is not held back by node 66's flood.
        assert!(table.apply_claim(claim("other", pid(67, 1), 1)));
        // Releases free room.
        assert!(table.apply(&NameOp::Release {
            name: "n0".into(),
            pid: pid(66, 0),
            lamport: 2,
        }));
        assert!(table.apply_claim(claim("one-more", pid(66, 0), 3)));
        // Tombstones are bounded too: releases of names never held fill them.
        let mut refused_before = table.refused();
        for i in 0..MAX_NAMES_PER_NODE as u64 + 10 {
            table.apply(&NameOp::Release {
                name: format!("ghost{i}"),
                pid: pid(66, i),
                lamport: 4,
            });
        }
        assert!(table.refused() > refused_before);
        refused_before = table.buried[&NodeId(66)] as u64;
        assert!(refused_before <= MAX_NAMES_PER_NODE as u64);
        // Declared down: everything of node 66 goes, counts with it.
        table.node_down(NodeId(66));
        assert!(!table.held.contains_key(&NodeId(66)));
        assert!(!table.buried.contains_key(&NodeId(66)));
    }
}
