//! The scheduler's door to other nodes: location transparency without a network.
//!
//! The scheduler knows nothing of sockets (a lower layer never names a higher one). The mesh
//! installs a [`RemoteRouter`] once, at node start ([`install`], which hands it the
//! [`Inbound`] capability for what other nodes do to local processes);
//! from then on every pid whose node is not this one is handed to it: `try_send`, `send`
//! and `call` on a [`crate::Handle`] or [`crate::ActorRef`], exit signals, links and
//! monitors. Messages cross the boundary as [`AnyMessage`] (a boxed `Any`): the router
//! finds the serializer by the message's type (the mesh declares types under tags), so
//! the scheduler's API needs no `Serialize` bound and local sends never serialize.
//!
//! # What the scheduler keeps for remote peers
//!
//! - **Links** to remote pids sit in the local process's link list, like local ones, and
//!   in `RemotePeers` by node, so a lost node can be answered without scanning every
//!   process: each local process linked to a pid there gets an exit signal with
//!   `NoConnection` (Erlang's `noconnection`).
//! - **Monitors** of remote pids are kept here (the target's node keeps the watcher as a
//!   remote pid); a `Down` from the target's node, or the loss of that node, fires each
//!   monitor exactly once (semantic 7).
//!
//! # Replies across nodes
//!
//! A [`crate::Reply`] inside a message that leaves the node is *exported*: while the
//! mesh encodes a message it installs a [`ReplyCodec`] for this thread
//! ([`with_reply_codec`]); `Reply`'s `Serialize` hands its one-shot to the codec and
//! writes the `(node, id)` the codec returns. On the callee's node, `Deserialize` asks
//! the codec for a [`RemotePort`] for that `(node, id)`; answering it sends the value
//! back. A `Reply` serialized or deserialized outside a codec is an error, never a silent
//! dead port.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::exit::{ExitReason, MonitorRef};
use crate::pid::{NodeId, Pid};
use crate::process::Watcher;
use crate::reply::CallError;

/// A message on its way to another node, type-erased.
pub type AnyMessage = Box<dyn Any + Send>;

/// A boxed future, as the router's async methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why the router did not take a message. The message goes back to the sender with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteSendFailure {
    /// No room on the way to that node now (its lane is full); `send` waits instead.
    #[error("no room on the connection to the remote node")]
    Full,
    /// The node is not a live member, or the connection could not be opened.
    #[error("no connection to the remote node")]
    NoConnection,
    /// The message type is not declared to the mesh (`Mesh::declare`), so it cannot be
    /// serialized.
    #[error("the message type is not declared to the mesh")]
    Unregistered,
}

/// What a send to a remote pid returns: the message back on failure.
pub type RemoteSendResult = Result<(), (RemoteSendFailure, AnyMessage)>;

/// The network side of the scheduler, installed by the mesh.
///
/// Every method is called with a pid (or a node) that is not this one (`to`, `target`,
/// `watcher`, `node`).
/// Methods that carry signals (`exit`, `link`, `monitor`, `down`) are fire-and-forget:
/// when the node cannot be reached the router answers locally with `NoConnection` (by
/// calling back into the scheduler), so nothing waits forever.
pub trait RemoteRouter: Send + Sync + 'static {
    /// Sends without waiting: `Full` when the connection's queue has no room.
    fn try_send(&self, to: Pid, msg: AnyMessage) -> RemoteSendResult;
    /// Sends, waiting for room on the connection (and for it to open).
    fn send(&self, to: Pid, msg: AnyMessage) -> BoxFuture<RemoteSendResult>;
    /// [`RemoteRouter::try_send`] to the process registered as `name` on `node`, the name
    /// resolved there ([`crate::NamedRef`]).
    fn try_send_named(&self, node: NodeId, name: &str, msg: AnyMessage) -> RemoteSendResult;
    /// [`RemoteRouter::send`] to the process registered as `name` on `node`.
    fn send_named(&self, node: NodeId, name: &str, msg: AnyMessage) -> BoxFuture<RemoteSendResult>;
    /// An exit signal from local `from` to remote `to` (`via_link`: a linked process died).
    fn exit(&self, to: Pid, from: Pid, reason: ExitReason, via_link: bool);
    /// Local `from` linked itself to remote `to`: `to`'s node adds the other half.
    fn link(&self, to: Pid, from: Pid);
    /// Local `from` removed its link to remote `to`.
    fn unlink(&self, to: Pid, from: Pid);
    /// Local `watcher` monitors remote `target` under `monitor`.
    fn monitor(&self, target: Pid, watcher: Pid, monitor: MonitorRef);
    /// The monitor `monitor` of remote `target` was cancelled.
    fn demonitor(&self, target: Pid, monitor: MonitorRef);
    /// Local `target` exited; tell its remote `watcher`.
    fn down(&self, watcher: Pid, monitor: MonitorRef, target: Pid, reason: ExitReason);
    /// The cluster-wide holder of `name`, if another node holds it.
    fn whereis(&self, name: &str) -> Option<Pid>;
    /// A local process registered a cluster-wide name.
    fn name_registered(&self, name: &str, pid: Pid);
    /// A local process's cluster-wide name was released (exit or unregister).
    fn name_released(&self, name: &str, pid: Pid);
    /// Whether `node` is a live member (for `ActorRef::is_alive` on remote pids).
    fn is_up(&self, node: NodeId) -> bool;
}

/// What pointed at a lost node: (local, remote) link pairs and (ref, watcher, target)
/// monitors.
pub(crate) type LostPeers = (Vec<(Pid, Pid)>, Vec<(MonitorRef, Watcher, Pid)>);

/// Local processes' links and monitors that point at other nodes, by node.
#[derive(Default)]
pub(crate) struct RemotePeers {
    inner: Mutex<PeersByNode>,
}

#[derive(Default)]
struct PeersByNode {
    /// (local, remote) link pairs.
    links: HashMap<NodeId, Vec<(Pid, Pid)>>,
    /// Monitors held by local watchers on remote targets.
    monitors: HashMap<NodeId, HashMap<MonitorRef, (Watcher, Pid)>>,
}

impl RemotePeers {
    pub(crate) fn add_link(&self, local: Pid, remote: Pid) {
        let mut inner = self.inner.lock();
        let pairs = inner.links.entry(remote.node()).or_default();
        if !pairs.contains(&(local, remote)) {
            pairs.push((local, remote));
        }
    }

    /// Removes a link pair; returns whether it was there.
    pub(crate) fn remove_link(&self, local: Pid, remote: Pid) -> bool {
        let mut inner = self.inner.lock();
        let Some(pairs) = inner.links.get_mut(&remote.node()) else {
            return false;
        };
        let before = pairs.len();
        pairs.retain(|&p| p != (local, remote));
        let removed = pairs.len() != before;
        if pairs.is_empty() {
            inner.links.remove(&remote.node());
        }
        removed
    }

    pub(crate) fn add_monitor(&self, monitor: MonitorRef, watcher: Watcher, target: Pid) {
        self.inner
            .lock()
            .monitors
            .entry(target.node())
            .or_default()
            .insert(monitor, (watcher, target));
    }

    /// Takes a monitor out (fired or cancelled): at most once.
    pub(crate) fn take_monitor(&self, node: NodeId, monitor: MonitorRef) -> Option<(Watcher, Pid)> {
        let mut inner = self.inner.lock();
        let by_node = inner.monitors.get_mut(&node)?;
        let taken = by_node.remove(&monitor);
        if by_node.is_empty() {
            inner.monitors.remove(&node);
        }
        taken
    }

    /// Takes everything that points at `node` (it was lost).
    pub(crate) fn take_node(&self, node: NodeId) -> LostPeers {
        let mut inner = self.inner.lock();
        let links = inner.links.remove(&node).unwrap_or_default();
        let monitors = inner
            .monitors
            .remove(&node)
            .unwrap_or_default()
            .into_iter()
            .map(|(m, (w, t))| (m, w, t))
            .collect();
        (links, monitors)
    }
}

/// How a caller's node completes an exported reply: the answer's bytes, or why none came.
pub type ReplyCompletion = Box<dyn FnOnce(Result<Vec<u8>, CallError>) + Send>;

/// The mesh's side of reply ports that cross nodes (see the module doc).
pub trait ReplyCodec: Send + Sync {
    /// Keeps `complete` until the answer (or a failure) arrives; returns the `(node, id)`
    /// that names it on the wire.
    fn export(&self, complete: ReplyCompletion) -> (NodeId, u64);
    /// A port that answers reply `id` of node `node`.
    fn import(&self, node: NodeId, id: u64) -> Box<dyn RemotePort>;
    /// The caller stopped waiting for exported reply `id` (timeout): drop its entry.
    fn forget(&self, id: u64);
}

/// The callee's end of an imported reply: sends the encoded answer home.
pub trait RemotePort: Send {
    /// Sends the answer (MessagePack bytes); `Err` gives them back if it cannot leave.
    fn answer(self: Box<Self>, value: Vec<u8>) -> Result<(), Vec<u8>>;
    /// The port was dropped unanswered: the caller gets `NoReply` at once.
    fn dropped(self: Box<Self>);
    /// A node this reply was passed on to failed it (`NoProc`, `NoConnection`, ...): the
    /// caller gets that failure, as near as the wire can say it (by default `NoReply`).
    fn fail(self: Box<Self>, failure: CallError) {
        let _ = failure;
        self.dropped();
    }
}

thread_local! {
    static CODEC: RefCell<Option<Arc<dyn ReplyCodec>>> = const { RefCell::new(None) };
}

/// Runs `f` (an encode or decode of one message) with `codec` handling its replies.
pub fn with_reply_codec<R>(codec: &Arc<dyn ReplyCodec>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn ReplyCodec>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CODEC.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CODEC.with(|c| c.borrow_mut().replace(codec.clone()));
    let _restore = Restore(previous);
    f()
}

/// The codec installed for this thread, if a message is being encoded or decoded.
pub(crate) fn current_codec() -> Option<Arc<dyn ReplyCodec>> {
    CODEC.with(|c| c.borrow().clone())
}

/// Installs `router` as this runtime's door to other nodes, at node start (a node has
/// one mesh): from then on every pid of another node is handed to it. Returns the
/// capability through which the router applies what other nodes do to local processes;
/// `None` if a router is already installed.
pub fn install(handle: &crate::Handle, router: Arc<dyn RemoteRouter>) -> Option<Inbound> {
    handle.shared.router.set(router).ok()?;
    Some(Inbound {
        handle: handle.clone(),
    })
}

/// What other nodes may do to this node's processes: the signals the mesh receives, and
/// the loss of a node. Only the installed router gets one ([`install`]), so these
/// operations are not part of [`crate::Handle`]. Each takes the remote half as
/// `from`/`watcher`/`remote` and a local pid as the target.
#[derive(Clone)]
pub struct Inbound {
    handle: crate::Handle,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbound")
    }
}

impl Inbound {
    /// An exit signal from remote `from` to local `to` (`via_link`: a linked process died).
    pub fn exit(&self, to: Pid, from: Pid, reason: ExitReason, via_link: bool) {
        let shared = &self.handle.shared;
        if to.node() != shared.node {
            return;
        }
        if via_link {
            shared.remote_peers.remove_link(to, from);
        }
        shared.exit_signal(to, from, reason, via_link);
    }

    /// Remote `remote` linked itself to local `local`: add this half. If `local` is gone,
    /// `remote` gets `NoProc` back (Erlang's link to a dead pid).
    pub fn link(&self, local: Pid, remote: Pid) {
        let shared = &self.handle.shared;
        let process = shared.table.get(local).filter(|p| {
            let mut control = p.core().control.lock();
            if control.dead {
                return false;
            }
            control.links.insert(remote);
            true
        });
        match process {
            Some(_) => shared.remote_peers.add_link(local, remote),
            None => {
                if let Some(router) = shared.router() {
                    router.exit(remote, local, ExitReason::NoProc, true);
                }
            }
        }
    }

    /// Remote `remote` removed its link to local `local`.
    pub fn unlink(&self, local: Pid, remote: Pid) {
        let shared = &self.handle.shared;
        if let Some(p) = shared.table.get(local) {
            p.core().control.lock().links.remove(remote);
        }
        shared.remote_peers.remove_link(local, remote);
    }

    /// Remote `watcher` monitors local `target` under `monitor` (fires at once with
    /// `NoProc` if `target` is gone).
    pub fn monitor(&self, target: Pid, watcher: Pid, monitor: MonitorRef) {
        if target.node() != self.handle.shared.node {
            self.handle.shared.notify_down(
                Watcher::Process(watcher),
                monitor,
                target,
                ExitReason::NoProc,
            );
            return;
        }
        self.handle
            .monitor_local(monitor, Watcher::Process(watcher), target);
    }

    /// A remote watcher cancelled its monitor of local `target`.
    pub fn demonitor(&self, target: Pid, monitor: MonitorRef) {
        if target.node() == self.handle.shared.node {
            self.handle.remove_monitor(target, monitor);
        }
    }

    /// Remote `target`, monitored from here under `monitor`, exited.
    pub fn down(&self, monitor: MonitorRef, target: Pid, reason: ExitReason) {
        let shared = &self.handle.shared;
        if let Some((watcher, _)) = shared.remote_peers.take_monitor(target.node(), monitor) {
            shared.notify_down(watcher, monitor, target, reason);
        }
    }

    /// `node` was lost: every local process linked to a process there gets an exit signal
    /// with `NoConnection`, every monitor of a process there fires with `NoConnection`.
    pub fn node_down(&self, node: NodeId) {
        let shared = &self.handle.shared;
        let (links, monitors) = shared.remote_peers.take_node(node);
        for (local, remote) in links {
            if let Some(p) = shared.table.get(local) {
                crate::process::deliver_exit(p, remote, ExitReason::NoConnection, true);
            }
        }
        for (monitor, watcher, target) in monitors {
            shared.notify_down(watcher, monitor, target, ExitReason::NoConnection);
        }
    }
}
