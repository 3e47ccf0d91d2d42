//! [`ObjectRef`]: the address of an object, and what sending through it guarantees.
//!
//! An object's name — its registered name, its keyspace and its alarm's row — is
//! `class/key`, or `class@region/key` with a location hint: the hint is part of the
//! object's identity (`docs/location_hints.md`). A class name holds neither `@` nor `/` and
//! a region no `/`, so [`parse_name`] gets the parts back.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use cairn_scheduler::{CallError, NodeId, Pid, Reply, SendError};
use parking_lot::Mutex;

use super::activation::Activation;
use super::routing::Route;
use super::{Object, ObjectError, ObjectSendError, Objects};

/// A cheap, cloneable reference to the object `(O::CLASS, key)`. Sending activates it.
pub struct ObjectRef<O: Object> {
    pub(super) objects: Arc<Objects>,
    pub(super) key: Arc<str>,
    pub(super) name: Arc<str>,
    /// Location hint: only nodes of this region may own the object.
    pub(super) region: Option<Arc<str>>,
    /// The activation last found, a cache each clone starts with a copy of: held here, not
    /// shared behind an `Arc`, so that making a reference (once per HTTP request) does not
    /// allocate for it. A stale entry is only a wasted check (`is_alive`).
    pub(super) cached: Mutex<Option<Activation<O>>>,
    _class: PhantomData<fn() -> O>,
}

impl<O: Object> Clone for ObjectRef<O> {
    fn clone(&self) -> Self {
        ObjectRef {
            objects: self.objects.clone(),
            key: self.key.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            cached: Mutex::new(self.cached.lock().clone()),
            _class: PhantomData,
        }
    }
}

impl<O: Object> std::fmt::Debug for ObjectRef<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.name)
    }
}

/// The name of the object `(class, key)` with location hint `region`: `class/key` or
/// `class@region/key`.
pub(super) fn object_name(class: &str, region: Option<&str>, key: &str) -> String {
    // Concatenated rather than `format!`ted: this runs for every request to an object.
    let hint = region.map_or(0, |r| r.len() + 1);
    let mut name = String::with_capacity(class.len() + hint + 1 + key.len());
    name.push_str(class);
    if let Some(region) = region {
        name.push('@');
        name.push_str(region);
    }
    name.push('/');
    name.push_str(key);
    name
}

/// [`object_name`] as an `Arc<str>` in one allocation (a `String` made into an `Arc<str>`
/// is copied into a second one): a reference is made for every HTTP request. Names up to
/// [`INLINE_NAME`] bytes are assembled on the stack.
fn shared_name(class: &str, region: Option<&str>, key: &str) -> Arc<str> {
    let hint = region.map_or(0, |r| r.len() + 1);
    let len = class.len() + hint + 1 + key.len();
    if len > INLINE_NAME {
        return object_name(class, region, key).into();
    }
    let mut buf = [0u8; INLINE_NAME];
    let mut at = 0;
    let mut push = |part: &str| {
        buf[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    };
    push(class);
    if let Some(region) = region {
        push("@");
        push(region);
    }
    push("/");
    push(key);
    // Whole `str`s joined at their boundaries: valid UTF-8, checked anyway (a few bytes).
    let name = std::str::from_utf8(&buf[..len]).expect("strs joined are UTF-8");
    Arc::from(name)
}

/// The longest name [`shared_name`] assembles on the stack.
const INLINE_NAME: usize = 256;

/// `(class, region, key)` of an object's name (see [`object_name`]); `None` for a name with
/// no `/` (a named process's).
pub(super) fn parse_name(name: &str) -> Option<(&str, Option<&str>, &str)> {
    let (head, key) = name.split_once('/')?;
    Some(match head.split_once('@') {
        Some((class, region)) => (class, Some(region), key),
        None => (head, None, key),
    })
}

/// Why `class` (with `region`) cannot name objects, if it cannot (see [`object_name`]).
pub(super) fn name_error(class: &str, region: Option<&str>) -> Option<&'static str> {
    if class.is_empty() || class.contains(['@', '/']) {
        return Some("an object class name must be non-empty and contain neither '@' nor '/'");
    }
    region_error(region)
}

/// Why `region` cannot be a location hint, if it cannot: [`name_error`]'s half that depends
/// on the reference, not on its class.
fn region_error(region: Option<&str>) -> Option<&'static str> {
    if region.is_some_and(|r| r.is_empty() || r.contains('/')) {
        return Some("a location hint must be non-empty and contain no '/'");
    }
    None
}

impl<O: Object> ObjectRef<O> {
    pub(crate) fn new(objects: Arc<Objects>, key: &str) -> Self {
        Self::new_in(objects, key, None)
    }

    pub(crate) fn new_in(objects: Arc<Objects>, key: &str, region: Option<&str>) -> Self {
        ObjectRef {
            name: shared_name(O::CLASS, region, key),
            key: key.into(),
            region: region.map(Into::into),
            objects,
            cached: Mutex::new(None),
            _class: PhantomData,
        }
    }

    /// The location hint this reference was made with.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The node that owns the object now: this node's id when it has no mesh or the class
    /// is local ([`crate::Node::host_local`]).
    pub fn owner(&self) -> Result<NodeId, ObjectError> {
        match self.route()? {
            Route::Local => Ok(self.objects.handle.node()),
            #[cfg(feature = "mesh")]
            Route::Remote(_, node, ..) => Ok(node),
        }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's name (`class/key`, or `class@region/key` with a location hint), which is
    /// also its keyspace and registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the current activation on this node, if any (an object owned by another
    /// node has none here).
    pub fn pid(&self) -> Option<Pid> {
        self.objects.handle.whereis(&self.name)
    }

    fn check(&self) -> Result<(), ObjectError> {
        // A hosted class's name is valid (hosting refuses others, see `refuses`), so on
        // this path, run by every send and call, only the hint is left to check; the scan
        // of the class name is paid only by an unhosted class, to say BadName first.
        let hosted = self.objects.classes.read().contains_key(O::CLASS);
        let region = self.region.as_deref();
        let bad = if hosted {
            region_error(region)
        } else {
            name_error(O::CLASS, region)
        };
        if let Some(reason) = bad {
            let name = self.name.to_string();
            return Err(ObjectError::BadName { name, reason });
        }
        if !hosted {
            return Err(ObjectError::NotHosted(O::CLASS));
        }
        if self.name.len() > cairn_storage::MAX_NAME_LEN {
            return Err(ObjectError::KeyTooLong {
                len: self.name.len(),
                max: cairn_storage::MAX_NAME_LEN,
            });
        }
        Ok(())
    }

    /// Sends a message to the object's owner (this node or another), activating the object
    /// if needed and waiting for mailbox room (or for the connection to the owner).
    ///
    /// From inside another object's handler the message is held by that handler's output
    /// gate and sent when its writes are durable — to whichever activation is live then (a
    /// held send that fails then is logged).
    ///
    /// A message to another node is confirmed once it is queued on the connection; if the
    /// owner's node then has no router for the class, it is a dead letter there (logged).
    ///
    /// On failure the message comes back with the reason ([`ObjectSendError`]), so nothing
    /// is lost: retry it, or hand it to someone else.
    pub async fn send(&self, msg: O::Msg) -> Result<(), ObjectSendError<O::Msg>> {
        if let Err(error) = self.check() {
            return Err(ObjectSendError::new(error, msg));
        }
        match self.hold_if_gated(msg) {
            Ok(()) => Ok(()),
            Err(msg) => self.deliver(msg, 0).await,
        }
    }

    /// Inside a gated handler, holds `msg` in the gate as a send through this reference
    /// (resolved at release, so an activation evicted meanwhile is replaced). Gives the
    /// message back when no gate is active.
    fn hold_if_gated(&self, msg: O::Msg) -> Result<(), O::Msg> {
        if !cairn_scheduler::gate::is_active() {
            return Err(msg);
        }
        let me = self.clone();
        let held = cairn_scheduler::gate::hold_future(Box::pin(async move {
            if let Err(ObjectSendError { error, .. }) = me.deliver(msg, 0).await {
                tracing::warn!(object = %me.name, %error, "a held send failed after its commit");
            }
        }));
        debug_assert!(held.is_ok(), "a gate is active on this thread");
        Ok(())
    }

    /// Sends without waiting: `Full` gives the message back if the mailbox is full, or if
    /// the object is being evicted right now (try again shortly). Held by the output gate when
    /// called from a gated handler (see [`ObjectRef::send`]).
    ///
    /// For an object owned by another node, `Full` means no room on the connection to that
    /// node now, or the connection is still being opened (this starts opening it); the
    /// owner's mailbox is not consulted (a full one there holds the message on that node's
    /// router). `NoConnection` if the owner cannot be reached, `NoProc` when the class is
    /// not hosted or no node can own the object.
    pub fn try_send(&self, msg: O::Msg) -> Result<(), SendError<O::Msg>> {
        if self.check().is_err() {
            return Err(SendError::NoProc(msg));
        }
        let Err(msg) = self.hold_if_gated(msg) else {
            return Ok(());
        };
        match self.route() {
            Ok(Route::Local) => self.try_send_local(msg),
            #[cfg(feature = "mesh")]
            Ok(Route::Remote(mesh, node, _, try_send)) => {
                try_send(&mesh, node, self.envelope(msg, 1))
            }
            Err(_) => Err(SendError::NoProc(msg)),
        }
    }

    /// Sends a request to the owner and waits for the answer (at most `timeout` for the
    /// answer). The request leaves at once even from inside another object's handler, which
    /// waits for it. To an owner on another node, the [`Reply`] travels in the message and
    /// the answer comes back over the mesh.
    pub async fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<R>) -> O::Msg,
        timeout: Duration,
    ) -> Result<R, ObjectError> {
        self.check()?;
        let (reply, rx) = Reply::pair();
        self.deliver(make(reply), 0).await.map_err(|e| e.error)?;
        let answer = self.objects.handle.timeout(timeout, rx).await;
        Ok(answer.map_err(|_| CallError::Timeout)??)
    }
}

#[cfg(test)]
mod tests {
    use super::{name_error, object_name, parse_name, shared_name, INLINE_NAME};

    #[test]
    fn an_objects_name_parses_back_into_class_region_and_key() {
        for (region, key) in [
            (None, "k"),
            (Some("eu"), "k"),
            (Some("eu"), "a/b@c"),
            (Some("eu@x"), "@"),
            (None, ""),
        ] {
            let name = object_name("counter", region, key);
            assert_eq!(parse_name(&name), Some(("counter", region, key)), "{name}");
            assert_eq!(*shared_name("counter", region, key), name);
        }
        assert_ne!(
            object_name("c", Some("eu"), "k"),
            object_name("c", None, "k")
        );
        assert_eq!(parse_name("a-named-process"), None);
        assert!(name_error("counter", Some("eu")).is_none());
        assert!(name_error("count@er", None).is_some());
        assert!(name_error("count/er", None).is_some());
        assert!(name_error("", None).is_some());
        assert!(name_error("counter", Some("eu/west")).is_some());
        assert!(name_error("counter", Some("")).is_some());
    }

    #[test]
    fn a_shared_name_is_the_objects_name_at_every_length() {
        // Around the stack buffer's size: the last that fits, and the first that does not.
        for len in [
            0,
            1,
            INLINE_NAME - 9,
            INLINE_NAME - 8,
            INLINE_NAME - 7,
            1000,
        ] {
            let key = "é".repeat(len / 2) + &"k".repeat(len % 2);
            for region in [None, Some("eu")] {
                let name = object_name("counter", region, &key);
                assert_eq!(*shared_name("counter", region, &key), name, "{len}");
            }
        }
    }
}
