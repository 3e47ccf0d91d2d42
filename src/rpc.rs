//! Typed RPC: methods instead of message enums.
//!
//! [`macro@crate::object`] (for durable objects) and [`macro@crate::actor`] (for actors) go
//! on an `impl` block of methods. Each method becomes a message; the macro writes the
//! message enum (with serde, so it crosses nodes), the `Object`/`Actor` impl dispatching
//! it, and a client trait `<Type>Client` on the reference (`ObjectRef<T>` or
//! `ActorRef<TMsg>`), so that a call is a method call:
//!
//! ```
//! use cairn::prelude::*;
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum LinkError { Unknown }
//!
//! #[derive(Default)]
//! struct Link { url: Option<String> }
//!
//! #[cairn::object]
//! impl Link {
//!     const CLASS: &'static str = "link";
//!
//!     /// Loads the state on every activation (optional: without it, `Default`).
//!     async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
//!         Ok(Link { url: ctx.storage().get("url")? })
//!     }
//!
//!     /// A call: `Err` is an answer (`CallError::Failed`), not a crash.
//!     pub async fn resolve(&mut self) -> Result<String, LinkError> {
//!         self.url.clone().ok_or(LinkError::Unknown)
//!     }
//!
//!     /// A call whose `Err` is a crash (the caller gets `CallError::NoReply`).
//!     pub async fn shorten(&mut self, ctx: &mut ObjectCtx<Self>, url: String) -> Result<(), ActorError> {
//!         ctx.storage().put("url", &url)?;
//!         self.url = Some(url);
//!         Ok(())
//!     }
//!
//!     /// Returns nothing: one-way (a cast).
//!     pub async fn forget(&mut self, ctx: &mut ObjectCtx<Self>) {
//!         self.url = None;
//!         let _ = ctx.storage().delete("url");
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let node = Node::builder().workers(1).data_dir(dir.path()).start().unwrap();
//! node.host::<Link>();
//! let link = node.object::<Link>("abc");
//! node.block_on(async {
//!     assert_eq!(link.resolve().await, Err(CallError::Failed(LinkError::Unknown)));
//!     link.shorten("https://example.com".into()).await.unwrap();
//!     let url = link.resolve().timeout(Duration::from_secs(1)).await.unwrap();
//!     assert_eq!(url, "https://example.com");
//!     link.forget().await.unwrap();
//!     assert_eq!(link.resolve().await, Err(CallError::Failed(LinkError::Unknown)));
//! });
//! ```
//!
//! ## Durable fields: `#[cairn::object(state)]`
//! With `state`, the object's struct is its stored state, and the macro writes `activate`:
//! the fields are loaded from the object's keyspace (key [`STATE_KEY`]), or start as
//! `Default::default()` when nothing is stored. After each method, and after the `alarm`
//! and `deactivate` hooks, the fields are written back **if they changed** (their encoding
//! is compared before and after: a method that only reads writes nothing). The write joins
//! the handler's own write set, so the rules of the error model below hold unchanged: an
//! `Err(e)` answer commits the change, a crash discards it (the object re-activates from
//! what is stored). Fields back at their `Default` are stored as nothing: an object reset
//! to its default takes no storage. The struct needs `Default`, `Serialize` and
//! `Deserialize`; methods may still use `ctx.storage()` for other keys, and
//! [`ObjectCtx::set_alarm`](crate::object::ObjectCtx::set_alarm) sets an alarm without a
//! `Result` to convert.
//!
//! ```
//! use cairn::prelude::*;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Visits { count: u64, last: Option<String> }
//!
//! #[cairn::object(state)]
//! impl Visits {
//!     const CLASS: &'static str = "visits";
//!
//!     pub async fn visit(&mut self, who: String) -> u64 {
//!         self.count += 1;
//!         self.last = Some(who);
//!         self.count
//!     }
//!
//!     pub async fn last(&mut self) -> Option<String> {
//!         self.last.clone()
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! for expected in [1, 2] {
//!     // A new node on the same data dir: the fields come back from storage.
//!     let node = Node::builder().workers(1).data_dir(dir.path()).start().unwrap();
//!     node.host::<Visits>();
//!     let page = node.object::<Visits>("home");
//!     assert_eq!(node.block_on(page.visit("ada".into())), Ok(expected));
//!     assert_eq!(node.block_on(page.last()), Ok(Some("ada".into())));
//!     node.shutdown();
//! }
//! ```
//!
//! ## Hooks and timers
//! The lifecycle hooks keep their trait names (`activate`, `alarm`, `deactivate`,
//! `idle_timeout`; `init`, `handle_signal`, `terminate`). `alarm`, `deactivate` and `init`
//! may also be written like methods: without `ctx`, and returning nothing when they cannot
//! fail. On an actor, `#[every(period)]` above a one-way method without arguments starts a
//! timer, before `init` runs, that sends that method's message every `period` (an
//! expression evaluated in `init`, with `self` in scope) until the actor exits:
//!
//! ```
//! use cairn::prelude::*;
//!
//! #[derive(Default)]
//! struct Heartbeat { every_ms: u64, beats: u32 }
//!
//! #[cairn::actor]
//! impl Heartbeat {
//!     #[every(Duration::from_millis(self.every_ms))]
//!     pub async fn beat(&mut self) {
//!         self.beats += 1;
//!     }
//!
//!     pub async fn beats(&mut self) -> u32 {
//!         self.beats
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let node = Node::builder().workers(1).data_dir(dir.path()).start().unwrap();
//! let beat = Heartbeat { every_ms: 5, beats: 0 };
//! let beat = node
//!     .block_on(cairn::supervisor::start(node.handle(), beat, StartOptions::default()))
//!     .unwrap();
//! while node.block_on(beat.beats()).unwrap() < 2 {
//!     node.block_on(node.handle().sleep(Duration::from_millis(5)));
//! }
//! ```
//!
//! ## The error model
//! What a caller of a typed method sees ([`CallError<E>`](crate::prelude::CallError)):
//! - the method returned `Err(e)` (any `E` but `ActorError`): `Failed(e)`. This is an
//!   **answer**: the process carries on with its state as the method left it. For an
//!   object, the handler's writes **commit** like those of any other answer, and the
//!   caller gets `Failed(e)` once they are durable (the output gate holds answers, errors
//!   included). We keep the writes because an `Err` is a value the method chose to return,
//!   not a fault: discarding them would leave the in-memory state ahead of storage (or
//!   force a reload from storage on every domain error), and a method often must record
//!   why it refused (a failed-attempt counter, a lockout). Durable Objects behaves the
//!   same: an exception thrown from an RPC method does not roll back the storage writes
//!   made before it. To refuse without effect, check before writing (one message at a
//!   time, so nothing changes in between);
//! - the method returned `Err(ActorError)`, or panicked: a **crash**, as for a
//!   hand-written handler: `NoReply` (a method that needs both returns
//!   `Result<Result<T, E>, ActorError>`: the outer `Err` crashes, the inner one answers). An object discards that handler's writes and held
//!   output and re-activates from storage; an actor stops (its supervisor decides);
//! - no answer in time: `Timeout` ([`DEFAULT_CALL_TIMEOUT`], or `.timeout(d)`);
//! - the process is gone or never existed: `NoProc`; its node is lost or unreachable:
//!   `NoConnection`; an object that cannot be routed (class not hosted, key too long, no
//!   node to own it): `Unroutable`;
//! - a full mailbox is not an error for a typed call: the call waits for room, within
//!   its timeout.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use cairn_scheduler::{CallError, SendError};

use crate::object::ObjectError;

mod state;

pub use state::STATE_KEY;

/// How long a typed call waits for its answer unless [`Call::timeout`] says otherwise
/// (gen_server's default).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A typed call, ready to go: `.await` it (or `block_on` it), optionally after
/// [`Call::timeout`]. Nothing is sent before it is first polled.
///
/// Resolves to the method's answer, or [`CallError<E>`]: `Failed(e)` when the method
/// returned `Err(e)` (see the module doc, "The error model").
#[must_use = "a call is sent when awaited"]
pub struct Call<T, E = Infallible> {
    state: CallState<T, E>,
    timeout: Duration,
}

type StartCall<T, E> = Box<dyn FnOnce(Duration) -> BoxFuture<Result<T, CallError<E>>> + Send>;

enum CallState<T, E> {
    /// Not polled yet: the timeout may still change.
    Ready(StartCall<T, E>),
    Running(BoxFuture<Result<T, CallError<E>>>),
    /// Polled to completion.
    Done,
}

impl<T, E> Call<T, E> {
    fn new(
        run: impl FnOnce(Duration) -> BoxFuture<Result<T, CallError<E>>> + Send + 'static,
    ) -> Self {
        Call {
            state: CallState::Ready(Box::new(run)),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Waits at most `timeout` for the answer (instead of [`DEFAULT_CALL_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<T, E> Future for Call<T, E> {
    type Output = Result<T, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is boxed or `Copy`: `Call` is `Unpin`.
        let this = self.get_mut();
        if let CallState::Ready(_) = this.state {
            let CallState::Ready(start) = std::mem::replace(&mut this.state, CallState::Done)
            else {
                unreachable!("matched just above")
            };
            this.state = CallState::Running(start(this.timeout));
        }
        let CallState::Running(fut) = &mut this.state else {
            panic!("a typed call polled after it completed");
        };
        let out = ready!(fut.as_mut().poll(cx));
        this.state = CallState::Done;
        Poll::Ready(out)
    }
}

impl<T, E> fmt::Debug for Call<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A one-way typed message (a method that returns nothing): resolves once the message
/// is delivered (queued in the mailbox, or on the connection to the owner's node). It
/// waits for mailbox room, so the only errors are `NoProc`, `NoConnection`, `WrongType`
/// and (objects) `Unroutable`.
pub type Cast = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send>>;

/// An object's routing failure as a typed caller sees it.
fn object_failure<E>(error: ObjectError) -> CallError<E> {
    match error {
        ObjectError::Call(e) => e.widen(),
        ObjectError::Unreachable { .. } => CallError::NoConnection,
        other => CallError::Unroutable(other.to_string()),
    }
}

/// A send's failure as a typed caller sees it (the message itself is internal to the
/// generated client, so it is not given back).
fn send_failure<M>(error: SendError<M>) -> CallError {
    match error {
        SendError::NoConnection(_) => CallError::NoConnection,
        SendError::WrongType(_) | SendError::Unregistered(_) => CallError::WrongType,
        _ => CallError::NoProc,
    }
}

/// What the generated code calls; not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::{object_failure, send_failure, Call, Cast};
    use cairn_scheduler::CallError;

    pub use crate::object::{Object, ObjectCtx, ObjectRef};
    pub use cairn_scheduler::{ActorRef, Reply};
    pub use cairn_supervisor::{Actor, ActorCtx, ActorError};
    pub use serde;

    /// Types that may travel in a typed message: arguments and answers.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in a typed message: it must be serializable",
        label = "this type needs `Serialize` and `Deserialize`",
        note = "typed-RPC arguments and answers cross nodes: derive `serde::Serialize` and `serde::Deserialize` for it, or write `#[cairn::object(local)]` / `#[cairn::actor(local)]` for types that never leave this node"
    )]
    pub trait Wire {}

    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Wire for T {}

    /// Checks one argument or answer type (its span is the user's type).
    pub fn assert_wire<T: Wire>() {}

    pub use super::state::{assert_state, load_state, save_state, snapshot};

    /// A method answering `T`.
    pub fn answer<T, E>(value: T) -> Result<T, CallError<E>> {
        Ok(value)
    }

    /// A method answering `Result<T, E>`: its `Err` is the caller's `Failed`.
    pub fn failed<T, E>(value: Result<T, E>) -> Result<T, CallError<E>> {
        value.map_err(CallError::Failed)
    }

    /// A typed call to an object.
    pub fn call_object<O, R, T, E>(
        target: &ObjectRef<O>,
        make: impl FnOnce(Reply<R>) -> O::Msg + Send + 'static,
        finish: fn(R) -> Result<T, CallError<E>>,
    ) -> Call<T, E>
    where
        O: Object,
        R: Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let target = target.clone();
        Call::new(move |timeout| {
            Box::pin(async move {
                match target.call(make, timeout).await {
                    Ok(answer) => finish(answer),
                    Err(e) => Err(object_failure(e)),
                }
            })
        })
    }

    /// A typed one-way message to an object.
    pub fn cast_object<O: Object>(target: &ObjectRef<O>, msg: O::Msg) -> Cast {
        let target = target.clone();
        Box::pin(async move { target.send(msg).await.map_err(|e| object_failure(e.error)) })
    }

    /// A typed call to an actor.
    pub fn call_actor<M, R, T, E>(
        target: &ActorRef<M>,
        make: impl FnOnce(Reply<R>) -> M + Send + 'static,
        finish: fn(R) -> Result<T, CallError<E>>,
    ) -> Call<T, E>
    where
        M: Send + 'static,
        R: Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let target = target.clone();
        Call::new(move |timeout| {
            Box::pin(async move {
                match target.call(make, timeout).await {
                    Ok(answer) => finish(answer),
                    Err(e) => Err(e.widen()),
                }
            })
        })
    }

    /// A typed one-way message to an actor.
    pub fn cast_actor<M: Send + 'static>(target: &ActorRef<M>, msg: M) -> Cast {
        let target = target.clone();
        Box::pin(async move { target.send(msg).await.map_err(send_failure) })
    }
}
