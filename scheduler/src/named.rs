//! Typed handles to a registered name on a given node: Erlang's `{Name, Node} ! Msg`.
//!
//! A [`NamedRef`] does not hold a process: the name is resolved *by the node it names*, at
//! each send, with that node's [`Handle::whereis`] (its local registry, then the cluster's
//! names). So it reaches a process that restarts under the same name, and it reaches a
//! process that every node runs under one local name (a per-node service) on exactly the
//! node asked for. On this node it resolves to an [`ActorRef`] and sends through it; on
//! another node the mesh's router carries the name and the receiving node resolves it
//! (there an unknown name is a dead letter, as a dead pid is).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actor_ref::{ActorRef, SendError};
use crate::pid::NodeId;
use crate::remote::{AnyMessage, RemoteSendFailure};
use crate::reply::{CallError, Reply};
use crate::runtime::Handle;

/// A typed handle to the process registered as `name` on `node` (see the module doc).
/// Cheap to clone.
pub struct NamedRef<M> {
    name: Arc<str>,
    node: NodeId,
    handle: Handle,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for NamedRef<M> {
    fn clone(&self) -> Self {
        NamedRef {
            name: Arc::clone(&self.name),
            node: self.node,
            handle: self.handle.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M> fmt::Debug for NamedRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamedRef({:?} on {})", self.name, self.node)
    }
}

/// Why a name did not resolve to a process of the expected type on this node.
enum Unresolved {
    NoProc,
    WrongType,
}

impl Handle {
    /// A handle to the process registered as `name` on `node` (this node or another),
    /// resolved by that node at each send (Erlang's `{Name, Node}`; see [`NamedRef`]).
    pub fn named_ref<M: Send + 'static>(&self, name: &str, node: NodeId) -> NamedRef<M> {
        NamedRef {
            name: name.into(),
            node,
            handle: self.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M: Send + 'static> NamedRef<M> {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node that resolves the name.
    pub fn node(&self) -> NodeId {
        self.node
    }

    fn is_local(&self) -> bool {
        self.node == self.handle.node()
    }

    /// The process the name names on this node.
    fn resolve(&self) -> Result<ActorRef<M>, Unresolved> {
        let pid = self.handle.whereis(&self.name).ok_or(Unresolved::NoProc)?;
        self.handle.actor_ref::<M>(pid).ok_or_else(|| {
            if self.handle.is_alive(pid) {
                Unresolved::WrongType
            } else {
                Unresolved::NoProc
            }
        })
    }

    /// Sends without waiting, as [`ActorRef::try_send`] does: `Full` when the target's
    /// mailbox (locally) or the connection to its node (remotely) has no room now.
    /// Inside a gated handler the message is held until the handler's writes are durable.
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        if crate::gate::is_active() {
            self.hold(msg);
            return Ok(());
        }
        self.try_send_ungated(msg)
    }

    /// Sends, waiting for room, as [`ActorRef::send`] does (held by an active gate).
    pub async fn send(&self, msg: M) -> Result<(), SendError<M>> {
        if crate::gate::is_active() {
            self.hold(msg);
            return Ok(());
        }
        self.send_ungated(msg).await
    }

    fn hold(&self, msg: M) {
        let to = self.clone();
        let held = Box::pin(async move {
            let _ = to.send_ungated(msg).await;
        });
        if let Err(held) = crate::gate::hold_future(held) {
            // No gate after all (checked just before): send from a process of its own.
            self.handle.spawn(move |_ctx: crate::Ctx<()>| held);
        }
    }

    /// Sends without waiting and without the output gate (see [`crate::gate`]).
    pub fn try_send_ungated(&self, msg: M) -> Result<(), SendError<M>> {
        if self.is_local() {
            return match self.resolve() {
                Ok(actor) => actor.try_send_ungated(msg),
                Err(why) => Err(why.with(msg)),
            };
        }
        match self.handle.shared.router() {
            Some(router) => router
                .try_send_named(self.node, &self.name, Box::new(msg))
                .map_err(give_back),
            None => Err(SendError::NoConnection(msg)),
        }
    }

    /// Sends, waiting for room, without the output gate (see [`crate::gate`]).
    pub async fn send_ungated(&self, msg: M) -> Result<(), SendError<M>> {
        if self.is_local() {
            return match self.resolve() {
                Ok(actor) => actor.send_ungated(msg).await,
                Err(why) => Err(why.with(msg)),
            };
        }
        let msg = match self.try_send_ungated(msg) {
            Err(SendError::Full(msg)) => msg,
            done => return done,
        };
        match self.handle.shared.router() {
            Some(router) => router
                .send_named(self.node, &self.name, Box::new(msg))
                .await
                .map_err(give_back),
            None => Err(SendError::NoConnection(msg)),
        }
    }

    /// Sends a request built around a fresh [`Reply`] and waits for the answer, at most
    /// `timeout` in all, as [`ActorRef::call`] does. On another node an unknown name fails
    /// the call at once with [`CallError::NoProc`], as a dead pid does.
    pub async fn call<R>(
        &self,
        make: impl FnOnce(Reply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        if self.is_local() {
            return match self.resolve() {
                Ok(actor) => actor.call(make, timeout).await,
                Err(Unresolved::NoProc) => Err(CallError::NoProc),
                Err(Unresolved::WrongType) => Err(CallError::WrongType),
            };
        }
        let deadline = Instant::now() + timeout;
        let driver = self.handle.driver();
        let (reply, rx) = Reply::pair();
        // A request leaves at once even from a gated handler, which waits for the answer.
        match crate::gate::bypass(|| self.try_send_ungated(make(reply))) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => {
                match crate::time::with_deadline(driver, deadline, self.send_ungated(msg)).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(request_failed(&e)),
                    None => return Err(CallError::Timeout),
                }
            }
            Err(e) => return Err(request_failed(&e)),
        }
        crate::time::until(driver, deadline, std::pin::pin!(rx))
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

impl Unresolved {
    fn with<M>(self, msg: M) -> SendError<M> {
        match self {
            Unresolved::NoProc => SendError::NoProc(msg),
            Unresolved::WrongType => SendError::WrongType(msg),
        }
    }
}

/// Why a request could not be sent to another node, as the caller sees it.
fn request_failed<M>(error: &SendError<M>) -> CallError {
    match error {
        SendError::WrongType(_) | SendError::Unregistered(_) => CallError::WrongType,
        SendError::NoConnection(_) => CallError::NoConnection,
        SendError::Full(_) | SendError::NoProc(_) => CallError::NoProc,
    }
}

/// Turns the router's refusal back into a typed error with the message.
fn give_back<M: 'static>((failure, msg): (RemoteSendFailure, AnyMessage)) -> SendError<M> {
    // The router gives back the box it was handed (its contract), so this always holds.
    let msg = *msg
        .downcast::<M>()
        .expect("RemoteRouter returned a different message than it was given");
    match failure {
        RemoteSendFailure::Full => SendError::Full(msg),
        RemoteSendFailure::NoConnection => SendError::NoConnection(msg),
        RemoteSendFailure::Unregistered => SendError::Unregistered(msg),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;
    use crate::gate::Gate;
    use crate::{Ctx, Message, Runtime};

    enum Msg {
        Add(u64),
        Get(Reply<u64>),
    }

    /// A counter registered as `name`; answers `Get` with its total.
    fn counter(rt: &Runtime, name: &str) -> crate::Pid {
        rt.spawn_named(name, |mut ctx: Ctx<Msg>| async move {
            let mut total = 0;
            while let Some(msg) = ctx.recv().await {
                match msg {
                    Message::User(Msg::Add(n)) => total += n,
                    Message::User(Msg::Get(reply)) => {
                        let _ = reply.send(total);
                    }
                    Message::Signal(_) => {}
                }
            }
        })
        .unwrap()
        .pid()
    }

    #[test]
    fn a_local_name_is_resolved_at_each_send_and_answers_calls() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let here = rt.node();
        let to = rt.named_ref::<Msg>("counter", here);
        // Nobody registered yet: the message comes back.
        assert!(matches!(
            to.try_send(Msg::Add(1)),
            Err(SendError::NoProc(Msg::Add(1)))
        ));
        let first = counter(&rt, "counter");
        to.try_send(Msg::Add(2)).unwrap();
        rt.block_on(to.send(Msg::Add(3))).unwrap();
        let second = Duration::from_secs(5);
        assert_eq!(rt.block_on(to.call(Msg::Get, second)), Ok(5));
        // The name moves to a new process: the same NamedRef follows it.
        rt.kill(first);
        rt.block_on(rt.wait_exit(first));
        counter(&rt, "counter");
        assert_eq!(rt.block_on(to.call(Msg::Get, second)), Ok(0));
        assert_eq!(
            rt.block_on(rt.named_ref::<Msg>("nobody", here).call(Msg::Get, second)),
            Err(CallError::NoProc)
        );
        // Another message type: refused with the message.
        let wrong = rt.named_ref::<u8>("counter", here);
        assert!(matches!(wrong.try_send(7), Err(SendError::WrongType(7))));
        assert_eq!(to.name(), "counter");
        rt.shutdown();
    }

    #[test]
    fn a_name_on_another_node_without_a_mesh_has_no_connection() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let elsewhere = NodeId(rt.node().0 + 1);
        let to = rt.named_ref::<Msg>("counter", elsewhere);
        assert_eq!(to.node(), elsewhere);
        assert!(matches!(
            to.try_send(Msg::Add(1)),
            Err(SendError::NoConnection(Msg::Add(1)))
        ));
        assert!(matches!(
            rt.block_on(to.send(Msg::Add(2))),
            Err(SendError::NoConnection(Msg::Add(2)))
        ));
        assert_eq!(
            rt.block_on(to.call(Msg::Get, Duration::from_secs(1))),
            Err(CallError::NoConnection)
        );
        rt.shutdown();
    }

    #[test]
    fn inside_a_gate_sends_are_held_until_released() {
        let rt = Runtime::builder().workers(1).build().unwrap();
        counter(&rt, "counter");
        let to = rt.named_ref::<Msg>("counter", rt.node());
        let mut gate = Gate::new();
        let mut handler = pin!(async {
            to.try_send(Msg::Add(4)).unwrap();
            to.send(Msg::Add(5)).await.unwrap();
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(gate.poll_within(handler.as_mut(), &mut cx).is_ready());
        assert_eq!(gate.len(), 2, "both sends are held");
        let second = Duration::from_secs(5);
        assert_eq!(rt.block_on(to.call(Msg::Get, second)), Ok(0));
        rt.block_on(gate.take().release());
        assert_eq!(rt.block_on(to.call(Msg::Get, second)), Ok(9));
        rt.shutdown();
    }
}
