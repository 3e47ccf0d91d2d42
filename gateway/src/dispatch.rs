//! The HTTP seam: the gateway hands each routed request to an installed [`Dispatcher`] and
//! turns its outcome into a response.
//!
//! The gateway owns sockets, parsing, limits and error answers; the dispatcher owns what a
//! request means (in phase 2: find the object's owner, forward over the mesh if it is
//! remote, run `Object::fetch`). The seam is a trait object so that the layer above
//! installs into this one, never the reverse.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::body::Body;
use crate::route::Route;

/// A request as dispatchers see it (its id is [`RequestId::current`]).
pub type Request = http::Request<Body>;
/// A dispatcher's answer.
pub type Response = http::Response<Body>;
/// What [`Dispatcher::dispatch`] returns.
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Response, DispatchError>> + Send>>;

/// Routes requests for `/{class}/{key}/...` to objects.
///
/// `dispatch` is called once per request, on a Cairn worker; it should return quickly and
/// do its work in the future. While `dispatch` runs and whenever its future is polled, the
/// request's id is the current request ([`RequestId::current`]; the calls made for it
/// carry it, see `cairn_scheduler::trace`). The future may panic: the gateway catches it
/// (500). To accept a WebSocket, answer with [`crate::accept_websocket`]'s response.
pub trait Dispatcher: Send + Sync + 'static {
    /// Handles `request` for `route`.
    fn dispatch(&self, route: Route, request: Request) -> DispatchFuture;
}

/// Why a dispatcher produced no response. Each maps to one status (see the crate docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// No object class has that name: 404.
    #[error("unknown object class {0:?}")]
    UnknownClass(String),
    /// The object's mailbox is full (Durable Objects' "overloaded"): 503 with `Retry-After`.
    #[error("object overloaded; retry after {retry_after:?}")]
    Overloaded {
        /// How long the client should wait (rounded up to whole seconds, at least 1).
        retry_after: Duration,
    },
    /// The object's owner cannot be reached now (moving, failed, partitioned): 503 with
    /// `Retry-After: 1`.
    #[error("object unavailable: {0}")]
    Unavailable(String),
    /// The handler failed: 500 with the request id in the body; the message is logged, not
    /// sent.
    #[error("handler failed: {0}")]
    Failed(String),
}

/// Identifies one request in responses (`x-request-id`, and the body of a 500) and logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The request being served: set while [`Dispatcher::dispatch`] runs and while its
    /// future is polled (the scheduler's current request), `None` elsewhere.
    pub fn current() -> Option<RequestId> {
        cairn_scheduler::trace::current_request().map(RequestId)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
