//! Message-type registry: tags on the wire ⇄ Rust types in mailboxes (`Mesh::declare`).

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use cairn_scheduler::{Handle, Pid, SendError};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::router::Reported;
use super::wire::{decode_payload, encode_payload, RemoteFailure};

/// Serializes a type-erased message of one registered type (for remote pids reached
/// through the scheduler, which hands the mesh `Box<dyn Any>`).
pub(crate) type Encode = fn(&dyn std::any::Any) -> Result<Vec<u8>, String>;

fn encode_as<M: Serialize + 'static>(msg: &dyn std::any::Any) -> Result<Vec<u8>, String> {
    match msg.downcast_ref::<M>() {
        Some(msg) => encode_payload(msg),
        None => Err("message of another type than registered".to_owned()),
    }
}

/// The outcome of handing a received payload to a local process.
pub(crate) enum Delivery {
    /// In the mailbox.
    Done,
    /// The mailbox is full: await this (it resolves once the message is in, or with the
    /// failure if the process exited meanwhile).
    Wait(Pin<Box<dyn Future<Output = Result<(), RemoteFailure>> + Send>>),
    /// Not delivered.
    Failed(RemoteFailure),
}

/// Decodes one registered type and delivers it. The target is looked up first, so a
/// message for a dead pid is never decoded (its replies are reported by the caller of
/// `deliver`, see `router::Reported`).
pub(crate) trait Deliver: Send + Sync {
    fn deliver(&self, handle: &Handle, to: Pid, payload: &[u8], report: Reported) -> Delivery;
}

struct Typed<M>(PhantomData<fn() -> M>);

impl<M: DeserializeOwned + Send + 'static> Deliver for Typed<M> {
    fn deliver(&self, handle: &Handle, to: Pid, payload: &[u8], report: Reported) -> Delivery {
        let Some(actor) = handle.actor_ref::<M>(to) else {
            return Delivery::Failed(if handle.is_alive(to) {
                RemoteFailure::WrongType
            } else {
                RemoteFailure::NoProc
            });
        };
        let msg: M = match decode_payload(payload) {
            Ok(msg) => msg,
            Err(reason) => return Delivery::Failed(RemoteFailure::Malformed(reason)),
        };
        let failure = |e: &SendError<M>| match e {
            SendError::WrongType(_) => RemoteFailure::WrongType,
            _ => RemoteFailure::NoProc,
        };
        match actor.try_send(msg) {
            Ok(()) => Delivery::Done,
            Err(SendError::Full(msg)) => Delivery::Wait(Box::pin(async move {
                actor.send(msg).await.map_err(|e| {
                    let why = failure(&e);
                    report.drop_message(e);
                    why
                })
            })),
            Err(e) => Delivery::Failed(failure(&e)),
        }
    }
}

/// Why [`Mesh::declare`](super::Mesh::declare) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// Another type is declared under this tag.
    #[error("tag {0:?} is already declared for another type")]
    TagTaken(&'static str),
    /// This type is declared under another tag.
    #[error("the type is already declared under tag {0:?}")]
    TypeTaken(&'static str),
}

/// The registry's hasher: every send looks its type up and every received message its
/// tag, and SipHash was ~150 instructions per message of the remote benchmarks. Keys are a
/// `TypeId` (already a hash: its bits are used as they are) or a tag (FNV-1a). No HashDoS
/// exposure: the maps only hold what this node declared, and a lookup of a hostile tag
/// costs one probe of a small map.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        use cairn_scheduler::stable_hash::{fnv1a, FNV_OFFSET};
        let h = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        self.0 = fnv1a(h, bytes);
    }

    fn write_u64(&mut self, n: u64) {
        // A `TypeId` hashes as (part of) its own 128-bit hash.
        self.0 ^= n;
    }
}

type Keyed<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
pub(crate) struct Registry {
    inner: RwLock<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    by_type: Keyed<TypeId, (&'static str, Encode)>,
    by_tag: Keyed<&'static str, (TypeId, Arc<dyn Deliver>)>,
}

impl Registry {
    pub(crate) fn declare<M: Serialize + DeserializeOwned + Send + 'static>(
        &self,
        tag: &'static str,
    ) -> Result<(), DeclareError> {
        let ty = TypeId::of::<M>();
        let mut inner = self.inner.write();
        match (inner.by_type.get(&ty), inner.by_tag.get(tag)) {
            (Some(&(t, _)), _) if t == tag => return Ok(()),
            (Some(&(t, _)), _) => return Err(DeclareError::TypeTaken(t)),
            (None, Some(_)) => return Err(DeclareError::TagTaken(tag)),
            (None, None) => {}
        }
        inner.by_type.insert(ty, (tag, encode_as::<M>));
        inner
            .by_tag
            .insert(tag, (ty, Arc::new(Typed::<M>(PhantomData))));
        Ok(())
    }

    /// The tag and serializer of the type with id `ty`.
    pub(crate) fn encoder(&self, ty: TypeId) -> Option<(&'static str, Encode)> {
        self.inner.read().by_type.get(&ty).copied()
    }

    /// Runs `f` with the deliverer of `tag` (`None`: no type declared under it).
    pub(crate) fn with_deliverer<R>(
        &self,
        tag: &str,
        f: impl FnOnce(&dyn Deliver) -> R,
    ) -> Option<R> {
        let inner = self.inner.read();
        let (_, deliverer) = inner.by_tag.get(tag)?;
        Some(f(deliverer.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tag_per_type_and_one_type_per_tag() {
        let registry = Registry::default();
        registry.declare::<u32>("u32").unwrap();
        registry.declare::<u32>("u32").unwrap();
        assert_eq!(
            registry.declare::<u64>("u32"),
            Err(DeclareError::TagTaken("u32"))
        );
        assert_eq!(
            registry.declare::<u32>("other"),
            Err(DeclareError::TypeTaken("u32"))
        );
        let tag_of = |ty| registry.encoder(ty).map(|(tag, _)| tag);
        assert_eq!(tag_of(TypeId::of::<u32>()), Some("u32"));
        assert!(tag_of(TypeId::of::<u64>()).is_none());
        assert!(registry.with_deliverer("u32", |_| ()).is_some());
        assert!(registry.with_deliverer("nope", |_| ()).is_none());
    }
}
