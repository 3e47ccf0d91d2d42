//! One request: limits, routing, the dispatcher call, and the mapping of every outcome to
//! an answer (see the crate docs' table).

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cairn_scheduler::trace::with_request;
use cairn_scheduler::{catch_unwind_future, panic_message, Handle};
use http::{header, HeaderName, HeaderValue, StatusCode};

use crate::body::{Body, BodyFault, BodyWatch};
use crate::config::GatewayConfig;
use crate::conn::Limiter;
use crate::dispatch::{DispatchError, Dispatcher, RequestId, Response};
use crate::route::{route_uri, ObjectKey, RouteError};
use crate::rt::{until, ConnClock};
use crate::ws::{spawn_socket, AcceptWebSocket, NewSocket, SocketHandler, Sockets};

/// What every connection of one gateway shares.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) handle: Handle,
    pub(crate) dispatcher: Arc<dyn Dispatcher>,
    pub(crate) websockets: Option<(Sockets, Arc<dyn SocketHandler>)>,
    pub(crate) limiter: Arc<Limiter>,
    next_request: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: GatewayConfig,
        handle: Handle,
        dispatcher: Arc<dyn Dispatcher>,
        websockets: Option<(Sockets, Arc<dyn SocketHandler>)>,
    ) -> Self {
        let limiter = Arc::new(Limiter::new(config.max_connections, config.max_refusing));
        // Ids differ across restarts (the high bits come from the start time) and across
        // nodes (mixed with the node id), so one id names one request in a cluster's logs.
        let seed = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            << 32)
            ^ cairn_scheduler::stable_hash::fmix64(handle.node().0);
        Shared {
            config,
            handle,
            dispatcher,
            websockets,
            limiter,
            next_request: AtomicU64::new(seed),
        }
    }

    fn request_id(&self) -> RequestId {
        RequestId(self.next_request.fetch_add(1, Ordering::Relaxed))
    }
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 503 with `Retry-After` in whole seconds (at least 1).
pub(crate) fn overloaded(retry_after: Duration, why: &'static str) -> Response {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, why);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// The URI `/` (or an alias) is served as: `index` (the alias's target) with the
/// request's query (`None` if that is not a valid origin-form URI, and the path stays as
/// it was).
fn index_uri(index: &str, query: Option<&str>) -> Option<http::Uri> {
    let path_and_query = match query {
        Some(query) => format!("{index}?{query}"),
        None => index.to_owned(),
    };
    let path_and_query = http::uri::PathAndQuery::try_from(path_and_query).ok()?;
    http::Uri::builder()
        .path_and_query(path_and_query)
        .build()
        .ok()
}

fn internal_error(id: RequestId) -> Response {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error; request id {id}\n"),
    )
}

/// Serves one request. Never fails: every outcome is an answer. `clock` is the connection's
/// (see [`crate::rt`]): the handler's 504 deadline waits on it. `id` names the request and
/// `id_value` is its `x-request-id` (see [`RequestIds`]).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    clock: Arc<ConnClock>,
    (id, id_value): (RequestId, HeaderValue),
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, Infallible> {
    let mut response = answer(&shared, &clock, id, request).await;
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id_value);
    Ok(response)
}

/// The bytes of one connection's `x-request-id` values, cut from one buffer: a header value
/// made from a slice copies it into an allocation of its own, one per request; these share
/// a chunk of [`ID_CHUNK`] bytes, one allocation (and one for the chunk's shared count) per
/// `ID_CHUNK / 16` requests.
#[derive(Debug, Default)]
pub(crate) struct RequestIds {
    chunk: BytesMut,
}

/// The bytes [`RequestIds`] allocates at a time: 32 ids. Small, because a keep-alive
/// connection holds its chunk (and a response its value's) while it lives.
const ID_CHUNK: usize = 32 * 16;

impl RequestIds {
    /// A new id from `shared` and its `x-request-id` value.
    pub(crate) fn next(&mut self, shared: &Shared) -> (RequestId, HeaderValue) {
        let id = shared.request_id();
        (id, self.value(id))
    }

    /// `id` as `x-request-id` shows it: 16 lowercase hex digits, as [`RequestId`]'s
    /// `Display` (written without the formatting machinery: this runs for every request).
    fn value(&mut self, id: RequestId) -> HeaderValue {
        if self.chunk.capacity() < 16 {
            self.chunk = BytesMut::with_capacity(ID_CHUNK);
        }
        self.chunk.extend_from_slice(&hex_digits(id));
        // The value's bytes leave the chunk (shared, not copied); the rest stays for the
        // next ids.
        let value = self.chunk.split().freeze();
        HeaderValue::from_maybe_shared(value).expect("hex digits are a valid header value")
    }
}

/// The response header naming the request. Made once, from a `'static` string (cloned
/// without copying): a name given as a `&str` is not a standard header's, so `insert`
/// would copy it into an allocation of its own for every response.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `id`'s 16 lowercase hex digits.
fn hex_digits(id: RequestId) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((id.0 >> (60 - 4 * i)) & 0xf) as usize];
    }
    digits
}

async fn answer(
    shared: &Arc<Shared>,
    clock: &ConnClock,
    id: RequestId,
    mut request: hyper::Request<hyper::body::Incoming>,
) -> Response {
    let config = &shared.config;
    let path = request.uri().path();
    let served_as = if path == "/" {
        config.index.as_deref()
    } else {
        config
            .aliases
            .iter()
            .find(|(alias, _)| alias == path)
            .map(|(_, target)| target.as_str())
    };
    if let Some(target) = served_as {
        if let Some(uri) = index_uri(target, request.uri().query()) {
            *request.uri_mut() = uri;
        }
    }
    let route = match route_uri(request.uri(), config.max_segment_bytes) {
        Ok(route) => route,
        Err(RouteError::NoRoute) => {
            return text(
                StatusCode::NOT_FOUND,
                "no route: paths are /{class}/{key}/...\n",
            )
        }
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    if let Some(length) = content_length(&request) {
        if length > config.max_body_bytes {
            return body_too_large(config.max_body_bytes);
        }
    }
    let upgrade = is_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let watch = BodyWatch::default();
    let (parts, body) = request.into_parts();
    // The route goes to the dispatcher; the object is routed again from the URI (its `Bytes`
    // shared, not copied) for the answers that name it, rather than copied for every request.
    let uri = parts.uri.clone();
    let object = || object_of(&uri, config.max_segment_bytes);
    let request = http::Request::from_parts(
        parts,
        Body::incoming(body, config.max_body_bytes, watch.clone()),
    );
    let dispatcher = &shared.dispatcher;
    // The request is current while `dispatch` runs and while its future is polled (see
    // `RequestId::current`): no extension map is made for every request to carry its id.
    let request_id = Some(id.0);
    let dispatch = || with_request(request_id, || dispatcher.dispatch(route, request));
    let outcome = match catch_unwind(AssertUnwindSafe(dispatch)) {
        Err(payload) => Err(panic_message(&*payload)),
        Ok(mut future) => {
            let future = std::future::poll_fn(move |cx| {
                with_request(request_id, || future.as_mut().poll(cx))
            });
            let deadline = Instant::now() + config.handler_timeout;
            match until(clock, deadline, catch_unwind_future(future)).await {
                Some(result) => result,
                None => {
                    tracing::warn!(request_id = %id, object = %object(), timeout = ?config.handler_timeout, "handler timed out");
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("handler timed out; request id {id}\n"),
                    );
                }
            }
        }
    };
    match watch.fault() {
        BodyFault::None => {}
        BodyFault::TooLarge => return body_too_large(config.max_body_bytes),
        BodyFault::Broken => {
            return text(
                StatusCode::BAD_REQUEST,
                "malformed or incomplete request body\n",
            )
        }
    }
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return dispatch_error(id, object, error),
        Err(panic) => {
            tracing::error!(request_id = %id, object = %object(), %panic, "handler panicked");
            return internal_error(id);
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    accept_upgrade(shared, id, object(), upgrade, response)
}

/// The object a routed request's `uri` names (see [`answer`]).
fn object_of(uri: &http::Uri, max_segment_bytes: usize) -> ObjectKey {
    route_uri(uri, max_segment_bytes)
        .expect("the request was routed by this path")
        .object()
}

/// Completes a dispatcher's 101: only a WebSocket it accepted with [`AcceptWebSocket`] on
/// an upgrade request, with sockets enabled, is honoured; anything else is a handler bug.
fn accept_upgrade(
    shared: &Arc<Shared>,
    id: RequestId,
    object: ObjectKey,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut response: Response,
) -> Response {
    let accept = response.extensions_mut().remove::<AcceptWebSocket>();
    let (Some(upgrade), Some(accept), Some((sockets, handler))) =
        (upgrade, accept, &shared.websockets)
    else {
        tracing::error!(request_id = %id, %object, "101 without an accepted WebSocket upgrade (or WebSockets are off)");
        return internal_error(id);
    };
    if let Some(attachment) = &accept.attachment {
        let limit = sockets.config().max_attachment_bytes;
        if attachment.len() > limit {
            tracing::error!(request_id = %id, %object, len = attachment.len(), limit, "WebSocket attachment too large");
            return internal_error(id);
        }
    }
    let new = NewSocket {
        sockets: sockets.clone(),
        handler: Arc::clone(handler),
        object,
        accept,
        // The HTTP connection's permit is released when hyper hands the socket over.
        permit: shared.limiter.acquire_forced(),
    };
    spawn_socket(&shared.handle, upgrade, new);
    response
}

/// The answer to `error`; `object` names the object in the logs.
fn dispatch_error(id: RequestId, object: impl Fn() -> ObjectKey, error: DispatchError) -> Response {
    match error {
        DispatchError::UnknownClass(class) => text(
            StatusCode::NOT_FOUND,
            format!("unknown object class {class:?}\n"),
        ),
        DispatchError::Overloaded { retry_after } => overloaded(retry_after, "object overloaded\n"),
        DispatchError::Unavailable(why) => {
            tracing::warn!(request_id = %id, object = %object(), %why, "object unavailable");
            overloaded(Duration::from_secs(1), "object unavailable\n")
        }
        DispatchError::Failed(why) => {
            tracing::error!(request_id = %id, object = %object(), %why, "handler failed");
            internal_error(id)
        }
    }
}

fn body_too_large(limit: u64) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {limit} bytes\n"),
    )
}

fn content_length<B>(request: &hyper::Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether hyper may hand this request's connection over (an `Upgrade` request).
fn is_upgrade<B>(request: &hyper::Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_header_is_the_ids_display() {
        let mut ids = RequestIds::default();
        for id in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = RequestId(id);
            assert_eq!(ids.value(id).to_str().unwrap(), id.to_string());
        }
    }

    #[test]
    fn request_id_values_cut_from_one_chunk_stay_apart_across_chunks() {
        let mut ids = RequestIds::default();
        // Three chunks' worth, every value kept alive while later ones are cut.
        let n = 3 * ID_CHUNK / 16 + 5;
        let values: Vec<(RequestId, HeaderValue)> = (0..n as u64)
            .map(|i| {
                let id = RequestId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                (id, ids.value(id))
            })
            .collect();
        for (id, value) in &values {
            assert_eq!(value.to_str().unwrap(), id.to_string());
        }
        // Values share their chunk, not copied one by one.
        let first = values[0].1.as_bytes().as_ptr();
        let second = values[1].1.as_bytes().as_ptr();
        assert_eq!(
            second,
            first.wrapping_add(16),
            "the second value follows the first"
        );
    }

    #[test]
    fn the_object_a_uri_names_is_routed_again_decoded_and_without_the_rest() {
        let uri: http::Uri = "/room/caf%C3%A9/ws?tags=a".parse().unwrap();
        assert_eq!(object_of(&uri, 64), ObjectKey::new("room", "café"));
    }
}
