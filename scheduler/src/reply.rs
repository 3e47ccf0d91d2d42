//! One-shot reply ports: [`Reply<T>`] travels inside a request message, the caller awaits
//! the other end (Erlang's `{From, Ref}` pair).
//!
//! A `Reply` dropped without an answer (its message was dropped, its handler forgot it, its
//! process died) resolves the caller at once with [`CallError::NoReply`] instead of leaving
//! it to time out.

use std::alloc::Layout;
use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pid::NodeId;
use crate::remote::{current_codec, RemotePort};

/// Why a call returned no answer, or the callee's error answer.
///
/// `E` is the callee's *application* error: a typed method (see the `cairn-macros` crate)
/// that returns `Err(e)` answers its caller with [`CallError::Failed`]`(e)` — an answer
/// like any other, not a crash. Plain calls (`ActorRef::call`, `Handle::call`) have no
/// application error: `E` defaults to [`Infallible`], and [`CallError::widen`] turns such
/// an error into any `CallError<E>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E = Infallible> {
    /// The callee answered with its application error (a typed method returned `Err(e)`).
    /// Displayed with `E`'s `Debug`, so that any `E: Debug` makes this a `std::error::Error`
    /// (and `?` into `Box<dyn Error>` works without a `Display` for every domain error).
    #[error("the callee answered with an error: {0:?}")]
    Failed(E),
    /// No answer within the timeout.
    #[error("call timed out")]
    Timeout,
    /// The target process does not exist (or exited before taking the request).
    #[error("no such process")]
    NoProc,
    /// The request was taken but dropped without an answer (the handler ignored it or the
    /// process exited while handling it).
    #[error("the callee dropped the request without replying")]
    NoReply,
    /// The process at that pid takes another message type.
    #[error("the process takes another message type")]
    WrongType,
    /// The callee's node was lost (or could not be reached) before it answered.
    #[error("no connection to the callee's node")]
    NoConnection,
    /// The answer came back but did not decode as the expected type.
    #[error("the answer did not decode: {0}")]
    BadReply(String),
    /// The request could not be routed to a target: for an object, its class is not
    /// hosted here, its key is too long, no node can own it, or nodes disagree about its
    /// owner. The text says which.
    #[error("the request could not be routed: {0}")]
    Unroutable(String),
}

impl CallError<Infallible> {
    /// The same failure as a `CallError<E>` (a call without an application error cannot
    /// be `Failed`).
    pub fn widen<E>(self) -> CallError<E> {
        match self {
            CallError::Failed(never) => match never {},
            CallError::Timeout => CallError::Timeout,
            CallError::NoProc => CallError::NoProc,
            CallError::NoReply => CallError::NoReply,
            CallError::WrongType => CallError::WrongType,
            CallError::NoConnection => CallError::NoConnection,
            CallError::BadReply(text) => CallError::BadReply(text),
            CallError::Unroutable(text) => CallError::Unroutable(text),
        }
    }
}

impl<E> CallError<E> {
    /// The application error, if the callee answered with one.
    pub fn failed(self) -> Option<E> {
        match self {
            CallError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sending side is gone (answered or dropped).
    sender_done: bool,
    /// The receiving side is gone: answers are discarded.
    receiver_gone: bool,
    /// Why the sender finished without a value, when it knows better than `NoReply`.
    failure: Option<CallError>,
    /// Run if the receiver goes away before the sender is done (an exported reply's
    /// entry in the mesh is dropped then, so timed-out calls leave nothing behind).
    on_abandon: Option<Box<dyn FnOnce() + Send>>,
}

/// The shared cell behind a reply port (also used for exit watchers).
pub(crate) struct OneShot<T> {
    state: Mutex<State<T>>,
}

impl<T> State<T> {
    /// The state of a slot no one has used yet.
    fn fresh() -> Self {
        State {
            value: None,
            waker: None,
            sender_done: false,
            receiver_gone: false,
            failure: None,
            on_abandon: None,
        }
    }
}

impl<T> OneShot<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(OneShot::fresh())
    }

    fn fresh() -> Self {
        OneShot {
            state: Mutex::new(State::fresh()),
        }
    }

    /// Stores the value and wakes the receiver. Gives the value back if nobody waits.
    pub(crate) fn complete(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut st = self.state.lock();
            if st.receiver_gone || st.sender_done {
                return Err(value);
            }
            st.value = Some(value);
            st.sender_done = true;
            st.on_abandon = None;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn sender_dropped(&self) {
        self.finish_without_value(None);
    }

    /// Ends the exchange without a value, `failure` saying why (`None`: `NoReply`).
    pub(crate) fn finish_without_value(&self, failure: Option<CallError>) {
        let waker = {
            let mut st = self.state.lock();
            if st.sender_done {
                return;
            }
            st.sender_done = true;
            st.failure = failure;
            st.on_abandon = None;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Polls for the value: `Ready(None)` when the sender went away without one.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.state.lock();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.sender_done {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn try_take(&self) -> Option<T> {
        self.state.lock().value.take()
    }

    fn failure(&self) -> CallError {
        self.state
            .lock()
            .failure
            .clone()
            .unwrap_or(CallError::NoReply)
    }

    fn receiver_dropped(&self) {
        let abandon = {
            let mut st = self.state.lock();
            st.receiver_gone = true;
            st.value = None;
            st.waker = None;
            st.on_abandon.take()
        };
        if let Some(abandon) = abandon {
            abandon();
        }
    }

    fn on_abandon(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut st = self.state.lock();
        if st.receiver_gone {
            drop(st);
            hook();
        } else if !st.sender_done {
            st.on_abandon = Some(hook);
        }
    }
}

/// The answering end of a request: send exactly one value with [`Reply::send`].
///
/// A `Reply` may travel inside a message to another node (its `Serialize`/`Deserialize`
/// work while the mesh encodes or decodes a message; see [`crate::remote`]): the callee
/// answers it there exactly as it would locally.
pub struct Reply<T> {
    // A mutex only because `Serialize` takes `&self` and must move the port out.
    port: Mutex<Option<Port<T>>>,
}

// Both variants are one pointer, so a `Reply` (inside every request message) stays small:
// what only a remote caller needs lives behind the box.
enum Port<T> {
    /// The caller is on this node.
    Local(Arc<OneShot<T>>),
    /// The caller is on another node; answers are encoded and sent there.
    Remote(Box<RemoteEnd<T>>),
}

/// The port of a caller on another node.
struct RemoteEnd<T> {
    port: Box<dyn RemotePort>,
    encode: fn(&T) -> Result<Vec<u8>, String>,
    /// The request the call was sent for, as its frame said (0: none; see `crate::trace`).
    request: u64,
}

impl<T> Reply<T> {
    fn with(port: Port<T>) -> Reply<T> {
        Reply {
            port: Mutex::new(Some(port)),
        }
    }

    /// The request this call belongs to (see [`crate::trace`]) when the call came from
    /// another node: the one its frame carried, current while the mesh decoded it. A reply
    /// made on this node answers `None` (a local call does not pay for request ids; a
    /// local caller that wants the callee to know passes the id in its message).
    pub fn request_id(&self) -> Option<u64> {
        match self.port.lock().as_ref()? {
            Port::Remote(end) => (end.request != 0).then_some(end.request),
            Port::Local(_) => None,
        }
    }

    /// A reply port and the future that receives its answer.
    pub fn pair() -> (Reply<T>, ReplyReceiver<T>) {
        let slot = OneShot::new();
        (
            Reply::with(Port::Local(slot.clone())),
            ReplyReceiver {
                slot,
                resolved: false,
            },
        )
    }

    /// [`Reply::pair`] for a call that gives its receiver back with
    /// [`ReplyReceiver::recycle`] once done: the slot is this thread's spare one if it has
    /// one of the same size and alignment (see [`SPARE_SLOT`]), so a thread's sequential
    /// calls allocate no slot after the first.
    pub(crate) fn pair_cached() -> (Reply<T>, ReplyReceiver<T>) {
        let slot = Spare::take::<T>().unwrap_or_else(OneShot::new);
        (
            Reply::with(Port::Local(slot.clone())),
            ReplyReceiver {
                slot,
                resolved: false,
            },
        )
    }

    /// Answers the request. Gives the value back if the caller stopped waiting (or, for
    /// a caller on another node, if the answer cannot leave this node).
    ///
    /// Inside a gated handler (durable objects) the answer is held until the handler's
    /// writes are durable, and this returns `Ok` at once.
    pub fn send(mut self, value: T) -> Result<(), T>
    where
        T: Send + 'static,
    {
        let Some(port) = self.port.get_mut().take() else {
            return Err(value);
        };
        if crate::gate::is_active() {
            // Re-wrap so that discarding the held output drops a `Reply` (caller: NoReply).
            let reply = Reply::with(port);
            let deliver: crate::gate::Held = Box::new(move || {
                let _ = reply.send_now(value);
                crate::gate::HeldSend::Done
            });
            if let Err(deliver) = crate::gate::hold(deliver) {
                deliver();
            }
            return Ok(());
        }
        port.answer(value)
    }

    fn send_now(mut self, value: T) -> Result<(), T> {
        match self.port.get_mut().take() {
            Some(port) => port.answer(value),
            None => Err(value),
        }
    }
}

impl<T> Port<T> {
    fn answer(self, value: T) -> Result<(), T> {
        match self {
            Port::Local(slot) => slot.complete(value),
            Port::Remote(end) => match (end.encode)(&value) {
                Ok(bytes) => end.port.answer(bytes).map_err(|_| value),
                Err(error) => {
                    tracing::error!(%error, "a reply could not be encoded for its remote caller");
                    end.port.dropped();
                    Err(value)
                }
            },
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        match self.port.get_mut().take() {
            Some(Port::Local(slot)) => slot.sender_dropped(),
            Some(Port::Remote(end)) => end.port.dropped(),
            None => {}
        }
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(value).map_err(|e| e.to_string())
}

/// Exports the port (see [`crate::remote`]): on the wire a reply is `(node, id)`.
impl<T> Serialize for Reply<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let codec = current_codec()
            .ok_or_else(|| S::Error::custom("a Reply can only be encoded by the mesh"))?;
        let (node, id) = match self.port.lock().take() {
            Some(Port::Local(slot)) => {
                let answer_slot = slot.clone();
                let (node, id) = codec.export(Box::new(move |answer| match answer {
                    Ok(bytes) => match rmp_serde::from_slice::<T>(&bytes) {
                        Ok(value) => {
                            let _ = answer_slot.complete(value);
                        }
                        Err(e) => answer_slot
                            .finish_without_value(Some(CallError::BadReply(e.to_string()))),
                    },
                    Err(failure) => answer_slot.finish_without_value(Some(failure)),
                }));
                let codec = codec.clone();
                slot.on_abandon(Box::new(move || codec.forget(id)));
                (node, id)
            }
            // Passing on a reply that came from elsewhere: this node exports it again and
            // relays the answer home, so a caller's node hears only from the node it
            // sent the call to (answers from anyone else are refused as forged).
            Some(Port::Remote(end)) => codec.export(Box::new(move |answer| match answer {
                Ok(bytes) => {
                    if end.port.answer(bytes).is_err() {
                        tracing::debug!("a relayed answer could not be sent home");
                    }
                }
                Err(failure) => end.port.fail(failure),
            })),
            None => return Err(S::Error::custom("this Reply was already used")),
        };
        (node.0, id).serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Reply<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (node, id) = <(u64, u64)>::deserialize(deserializer)?;
        let codec = current_codec()
            .ok_or_else(|| D::Error::custom("a Reply can only be decoded by the mesh"))?;
        let node = NodeId(node);
        // The mesh makes the frame's request current while it decodes (crate::trace).
        Ok(Reply::with(Port::Remote(Box::new(RemoteEnd {
            port: codec.import(node, id),
            encode: encode_value::<T>,
            request: crate::trace::current_request().unwrap_or(0),
        }))))
    }
}

thread_local! {
    /// One spare reply slot per thread: a process makes one call at a time, so its
    /// worker's calls reuse one slot instead of allocating and freeing one each (about 160
    /// instructions of the ~1,500 of a local call).
    ///
    /// Only a slot nothing else refers to comes here (`Arc::get_mut` in
    /// [`ReplyReceiver::recycle`]): no `Reply`, no exported copy, no waker of an earlier
    /// call can reach it, so an answer for an earlier call (one that timed out, whose
    /// `Reply` is still out there) can never complete a later call through a reused slot:
    /// that slot is simply never reused.
    static SPARE_SLOT: Cell<Option<Spare>> = const { Cell::new(None) };
}

/// A reply slot kept for reuse: an `Arc<OneShot<T>>` in its fresh state, as a raw pointer
/// so that any answer type of the same size and alignment can take it (a `TypeId` would
/// need `T: 'static`, which `call`'s signature does not promise).
struct Spare {
    /// From `Arc::<OneShot<T>>::into_raw`; the only reference to the slot.
    slot: NonNull<u8>,
    /// `Layout::new::<OneShot<T>>()`.
    layout: Layout,
    /// Frees the slot as the `Arc<OneShot<T>>` it is (`free_spare::<T>`).
    free: unsafe fn(NonNull<u8>),
}

/// Frees a spare slot made from an `Arc<OneShot<T>>`.
///
/// # Safety
///
/// `slot` came from `Arc::<OneShot<T>>::into_raw`, is the only reference to it, and is not
/// used after this.
#[allow(unsafe_code)] // Rebuilding the `Arc`; see the SAFETY note.
unsafe fn free_spare<T>(slot: NonNull<u8>) {
    let slot = slot.as_ptr().cast::<OneShot<T>>().cast_const();
    // SAFETY: the caller's promise above (`Spare::slot`'s invariant).
    let slot = unsafe { Arc::from_raw(slot) };
    drop(slot);
}

impl Drop for Spare {
    #[allow(unsafe_code)] // See the SAFETY note.
    fn drop(&mut self) {
        // SAFETY: `free` is `free_spare::<T>` for the `T` whose `Arc<OneShot<T>>` made
        // `slot`, and a dropped `Spare` is not used again.
        unsafe { (self.free)(self.slot) }
    }
}

impl Spare {
    /// Keeps `slot` (fresh, referred to by nothing else) as this thread's spare, dropping
    /// the one there before.
    fn keep<T>(slot: Arc<OneShot<T>>) {
        // `Arc::into_raw` never returns null.
        let Some(raw) = NonNull::new(Arc::into_raw(slot).cast_mut()) else {
            return;
        };
        let spare = Spare {
            slot: raw.cast::<u8>(),
            layout: Layout::new::<OneShot<T>>(),
            free: free_spare::<T>,
        };
        // During the thread's teardown the spare is dropped here instead (freed).
        let _ = SPARE_SLOT.try_with(|cell| cell.set(Some(spare)));
    }

    /// This thread's spare slot as a fresh `Arc<OneShot<T>>`, if it has one of
    /// `OneShot<T>`'s size and alignment (another is left where it is).
    #[allow(unsafe_code)] // Reusing the allocation for `T`; see the SAFETY notes.
    fn take<T>() -> Option<Arc<OneShot<T>>> {
        let spare = SPARE_SLOT.try_with(Cell::take).ok()??;
        if spare.layout != Layout::new::<OneShot<T>>() {
            let _ = SPARE_SLOT.try_with(|cell| cell.set(Some(spare)));
            return None;
        }
        let spare = std::mem::ManuallyDrop::new(spare);
        let slot = spare.slot.as_ptr().cast::<OneShot<T>>();
        // SAFETY: `slot` points to a live `OneShot<U>` (for the `U` that made the spare)
        // inside an `Arc` allocation that nothing else refers to, in its fresh state, which
        // owns nothing (every field `None` or `false`), so overwriting it without dropping
        // it leaks nothing; `OneShot<T>` has the same size and alignment (checked above),
        // so the write stays inside the value and is aligned.
        unsafe { slot.write(OneShot::fresh()) };
        // SAFETY: `slot` came from `Arc::<OneShot<U>>::into_raw` with `OneShot<U>` of the
        // same size and alignment as `OneShot<T>` (what `Arc::from_raw` requires), its
        // strong count is 1 and no `Weak` exists (`recycle` checked with `Arc::get_mut`),
        // and the `ManuallyDrop` above keeps `Spare`'s drop from freeing it.
        Some(unsafe { Arc::from_raw(slot.cast_const()) })
    }
}

/// The caller's end: resolves to the answer, or `NoReply` if the `Reply` was dropped.
pub struct ReplyReceiver<T> {
    slot: Arc<OneShot<T>>,
    /// A poll returned `Ready`: the sending side is done and the slot holds nothing the
    /// receiver's drop must clear (no value, no waker, no abandon hook), so the drop skips
    /// the slot's lock. Set only by `poll`, which has `&mut self`.
    resolved: bool,
}

impl<T> ReplyReceiver<T> {
    /// The answer if it has arrived.
    pub fn try_recv(&self) -> Option<T> {
        self.slot.try_take()
    }
}

impl<T> ReplyReceiver<T> {
    /// Drops the receiver, keeping its slot as this thread's spare (see [`SPARE_SLOT`]) if
    /// the call is over (resolved) and the slot is no longer shared with anyone; otherwise
    /// it is dropped as usual.
    #[allow(unsafe_code)] // Moving the slot out of a `Drop` type; see the SAFETY note.
    pub(crate) fn recycle(self) {
        if !self.resolved {
            return;
        }
        // Resolved: the receiver's drop would do nothing but drop `slot` (see `Drop`), so
        // skipping it and taking `slot` out loses nothing.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again, so this read moves `slot` out
        // exactly once (no double drop; `resolved` is `Copy`).
        let mut slot = unsafe { std::ptr::read(&this.slot) };
        let Some(one_shot) = Arc::get_mut(&mut slot) else {
            return;
        };
        *one_shot.state.get_mut() = State::fresh();
        Spare::keep(slot);
    }
}

impl<T> Future for ReplyReceiver<T> {
    type Output = Result<T, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let out = ready!(this.slot.poll_take(cx));
        this.resolved = true;
        Poll::Ready(out.ok_or_else(|| this.slot.failure()))
    }
}

impl<T> Drop for ReplyReceiver<T> {
    fn drop(&mut self) {
        // Once resolved, the sender is done: `complete` and `finish_without_value` took the
        // waker and cleared the abandon hook, and nothing sets either again.
        if !self.resolved {
            self.slot.receiver_dropped();
        }
    }
}

impl<T> fmt::Debug for ReplyReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyReceiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Checks that `rx` waits while `reply` lives and resolves to `NoReply` once it is
    /// dropped unanswered.
    fn assert_no_reply_once_dropped(reply: Reply<u32>, rx: &mut ReplyReceiver<u32>) {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut *rx).poll(&mut cx).is_pending());
        drop(reply);
        assert_eq!(
            Pin::new(&mut *rx).poll(&mut cx),
            Poll::Ready(Err(CallError::NoReply))
        );
    }

    #[test]
    fn dropped_reply_resolves_the_caller_with_no_reply() {
        let (reply, mut rx) = Reply::<u32>::pair();
        assert_no_reply_once_dropped(reply, &mut rx);
    }

    #[test]
    fn a_plain_call_error_widens_to_any_application_error_unchanged() {
        let plain = [
            CallError::Timeout,
            CallError::NoProc,
            CallError::NoReply,
            CallError::WrongType,
            CallError::NoConnection,
            CallError::BadReply("x".into()),
            CallError::Unroutable("y".into()),
        ];
        for e in plain {
            let text = e.to_string();
            let wide: CallError<String> = e.widen();
            assert_eq!(wide.to_string(), text);
            assert_eq!(wide.failed(), None);
        }
        let failed = CallError::Failed("sold out".to_owned());
        assert_eq!(
            failed.to_string(),
            "the callee answered with an error: \"sold out\""
        );
        assert_eq!(failed.failed().as_deref(), Some("sold out"));
    }

    #[test]
    fn a_reply_is_three_words_whatever_it_answers() {
        // It rides in every request message: what only remote callers need is boxed.
        assert_eq!(size_of::<Reply<u32>>(), 3 * size_of::<usize>());
        assert_eq!(size_of::<Reply<[u8; 256]>>(), 3 * size_of::<usize>());
    }

    /// Answers through `reply` and returns what `rx` resolves to.
    fn answered(
        reply: Reply<u32>,
        mut rx: ReplyReceiver<u32>,
        value: u32,
    ) -> (ReplyReceiver<u32>, Result<u32, CallError>) {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(reply.send(value).is_ok());
        match Pin::new(&mut rx).poll(&mut cx) {
            Poll::Ready(out) => (rx, out),
            Poll::Pending => panic!("an answered receiver is ready"),
        }
    }

    #[test]
    fn a_finished_calls_slot_is_reused_by_the_next_call_on_the_thread_fresh() {
        let (reply, rx) = Reply::<u32>::pair_cached();
        let first = Arc::as_ptr(&rx.slot);
        let (rx, out) = answered(reply, rx, 1);
        assert_eq!(out, Ok(1));
        rx.recycle();
        let (reply, mut rx) = Reply::<u32>::pair_cached();
        assert_eq!(Arc::as_ptr(&rx.slot), first, "the spare slot is reused");
        // Fresh: no value, not done, and a dropped `Reply` still says `NoReply`.
        assert_no_reply_once_dropped(reply, &mut rx);
        rx.recycle();
        // A slot of another size is not handed out (and stays the spare); one of the same
        // size and alignment is, as a fresh slot of its own type.
        let (reply, rx) = Reply::<String>::pair_cached();
        assert_ne!(Arc::as_ptr(&rx.slot).cast::<()>(), first.cast::<()>());
        drop((reply, rx));
        let (reply, mut rx) = Reply::<i32>::pair_cached();
        assert_eq!(Arc::as_ptr(&rx.slot).cast::<()>(), first.cast::<()>());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        assert!(reply.send(-3).is_ok());
        assert_eq!(Pin::new(&mut rx).poll(&mut cx), Poll::Ready(Ok(-3)));
    }

    #[test]
    fn a_timed_out_calls_slot_is_never_reused_so_its_late_answer_reaches_no_later_call() {
        // Call 1 gives up (its receiver is dropped unresolved) while the callee keeps its
        // `Reply`; call 2 on the same thread must not share call 1's slot.
        let (stale, rx1) = Reply::<u32>::pair_cached();
        let first = Arc::as_ptr(&rx1.slot);
        rx1.recycle();
        let (reply2, mut rx2) = Reply::<u32>::pair_cached();
        assert_ne!(Arc::as_ptr(&rx2.slot), first);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut rx2).poll(&mut cx).is_pending());
        assert_eq!(
            stale.send(111),
            Err(111),
            "nobody waits for call 1 any more"
        );
        assert!(
            Pin::new(&mut rx2).poll(&mut cx).is_pending(),
            "call 1's late answer must not complete call 2"
        );
        let (_, out) = answered(reply2, rx2, 2);
        assert_eq!(out, Ok(2));
    }

    #[test]
    fn a_slot_still_shared_when_its_call_ends_is_not_reused() {
        // Resolved, but another holder keeps the slot (an exported reply's answer closure
        // does, until the mesh forgets it): it must not become the spare.
        let (reply, rx) = Reply::<u32>::pair_cached();
        let holder = rx.slot.clone();
        let (rx, out) = answered(reply, rx, 5);
        assert_eq!(out, Ok(5));
        rx.recycle();
        let (_reply, rx) = Reply::<u32>::pair_cached();
        assert!(!Arc::ptr_eq(&rx.slot, &holder));
        assert_eq!(holder.complete(9), Err(9), "the old slot is done");
    }

    #[test]
    fn reply_to_a_gone_caller_gives_the_value_back() {
        let (reply, rx) = Reply::<u32>::pair();
        drop(rx);
        assert_eq!(reply.send(7), Err(7));
    }
}
