//! The gateway's limits. Every one has a defined answer (see the crate docs' table) and a
//! test in `gateway/tests/`.

use std::time::Duration;

/// hyper's smallest accepted read buffer (`MINIMUM_MAX_BUFFER_SIZE` in hyper's h1 I/O): the
/// request head limit cannot go below it.
pub const MIN_HEADER_BYTES: usize = 8192;

/// HTTP limits and timeouts.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest request head (request line and headers) in bytes; larger → 431. At least
    /// [`MIN_HEADER_BYTES`] (smaller values are raised to it).
    pub max_header_bytes: usize,
    /// Most header fields in one request; more → 431.
    pub max_headers: usize,
    /// Largest request body in bytes; larger → 413 (bodies stream up to it).
    pub max_body_bytes: u64,
    /// Longest decoded class or key in a path; longer → 400.
    pub max_segment_bytes: usize,
    /// A request head must arrive within this from when the connection is ready for it
    /// (so it also bounds how long a keep-alive connection may sit between requests);
    /// else the connection is closed (slowloris on heads).
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves for this long while the gateway waits on the
    /// client (a trickled body, an unread response) is closed (slowloris on bodies).
    pub idle_timeout: Duration,
    /// A dispatcher that has not answered after this long → 504.
    pub handler_timeout: Duration,
    /// Open connections (HTTP and WebSocket) at most; more → 503 with `Retry-After`.
    pub max_connections: usize,
    /// Connections being refused with 503 at once, at most; beyond this they are closed
    /// without an answer (a refusal costs a small task until its request is read).
    pub max_refusing: usize,
    /// WebSocket limits.
    pub websocket: WebSocketConfig,
    /// The path a request for `/` is served as (e.g. `/chatroom/lobby/`; the query is
    /// kept): a front page, served by an object like any other path. `None`: `/` is
    /// answered 404, as every path without a class and a key.
    pub index: Option<String>,
    /// Paths served as other paths, `(path, served as)`: a request whose path is exactly
    /// `path` is routed as `served as` (the query is kept). For pages outside the
    /// `/{class}/{key}` space, e.g. `/metrics` served as a node's `/cairn/metrics`; a path
    /// of one segment cannot clash with an object's. Empty by default.
    pub aliases: Vec<(String, String)>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_segment_bytes: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handler_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_refusing: 64,
            websocket: WebSocketConfig::default(),
            index: None,
            aliases: Vec::new(),
        }
    }
}

/// WebSocket limits.
#[derive(Clone, Debug)]
pub struct WebSocketConfig {
    /// Sockets attached to one object at most; one more is accepted and closed at once
    /// with code 1013 (Try Again Later).
    pub max_sockets_per_object: usize,
    /// Largest frame in bytes; larger → close 1009 (Message Too Big).
    pub max_frame_bytes: usize,
    /// Largest message (all its frames) in bytes; larger → close 1009.
    pub max_message_bytes: usize,
    /// Largest serialized attachment per socket in bytes.
    pub max_attachment_bytes: usize,
    /// Outgoing messages queued per socket at most; a send to a full queue fails
    /// ([`crate::SocketError::Full`]) rather than growing memory for a slow client.
    pub send_queue: usize,
    /// How long a closing socket waits for the client's close reply.
    pub close_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_sockets_per_object: 32_768,
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 1024 * 1024,
            max_attachment_bytes: 2048,
            send_queue: 256,
            close_timeout: Duration::from_secs(5),
        }
    }
}
