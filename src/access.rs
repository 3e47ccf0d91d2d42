//! Naming objects from anywhere on a node: [`ObjectAccess`] gives the scheduler's
//! [`Handle`] and the supervisor's [`ActorCtx`] the `object::<O>(key)` that [`crate::Node`]
//! and [`crate::object::ObjectCtx`] have, so an actor reaches objects without `main`
//! building the references and capturing them in its `ChildSpec` factory.
//!
//! The lower crates cannot name objects (arrows point down), so this is a trait of the
//! facade: the node installs its object directory as a runtime extension at start, and
//! these methods look it up.

use cairn_scheduler::Handle;
use cairn_supervisor::{Actor, ActorCtx};

use crate::object::{Object, ObjectRef, Objects};

/// `object::<O>(key)` on a [`Handle`] or an [`ActorCtx`] (in the prelude).
///
/// ```
/// use cairn::prelude::*;
///
/// #[derive(Default)]
/// struct Tally { n: u64 }
///
/// #[cairn::object]
/// impl Tally {
///     const CLASS: &'static str = "tally";
///     pub async fn bump(&mut self) -> u64 { self.n += 1; self.n }
/// }
///
/// /// An actor that names objects itself.
/// struct Bumper;
///
/// #[cairn::actor]
/// impl Bumper {
///     pub async fn bump(&mut self, ctx: &mut ActorCtx<Self>, key: String) -> Result<u64, ActorError> {
///         Ok(ctx.object::<Tally>(&key).bump().await?)
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let node = Node::builder().workers(1).data_dir(dir.path()).start().unwrap();
/// node.host::<Tally>();
/// let bumper = node.block_on(cairn::supervisor::start(node.handle(), Bumper, StartOptions::default())).unwrap();
/// assert_eq!(node.block_on(bumper.bump("a".into())), Ok(1));
/// let handle: Handle = bumper.handle();
/// assert_eq!(node.block_on(handle.object::<Tally>("a").bump()), Ok(2));
/// ```
pub trait ObjectAccess {
    /// A reference to the object `(O::CLASS, key)` (cheap; activates on first message).
    ///
    /// # Panics
    /// On a runtime not started by [`crate::Node`] (a bare `cairn_scheduler::Runtime` has
    /// no objects): that is a wiring mistake, not a runtime condition.
    fn object<O: Object>(&self, key: &str) -> ObjectRef<O>;

    /// A reference to the object `(O::CLASS, key)` placed within `region` (see
    /// [`crate::Node::object_in`]).
    ///
    /// # Panics
    /// As [`ObjectAccess::object`].
    fn object_in<O: Object>(&self, key: &str, region: &str) -> ObjectRef<O>;
}

fn objects_of(handle: &Handle) -> std::sync::Arc<Objects> {
    handle
        .extension::<Objects>()
        .expect("object references need a runtime started by cairn::Node")
}

impl ObjectAccess for Handle {
    fn object<O: Object>(&self, key: &str) -> ObjectRef<O> {
        ObjectRef::new(objects_of(self), key)
    }

    fn object_in<O: Object>(&self, key: &str, region: &str) -> ObjectRef<O> {
        ObjectRef::new_in(objects_of(self), key, Some(region))
    }
}

impl<A: Actor> ObjectAccess for ActorCtx<A> {
    fn object<O: Object>(&self, key: &str) -> ObjectRef<O> {
        self.handle().object(key)
    }

    fn object_in<O: Object>(&self, key: &str, region: &str) -> ObjectRef<O> {
        self.handle().object_in(key, region)
    }
}
