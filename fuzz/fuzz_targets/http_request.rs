//! Fuzzes the gateway's request path with arbitrary bytes as a client's side of one
//! connection: hyper's head parser, the limits, routing, the dispatcher seam and the error
//! answers (and, after a WebSocket upgrade, tungstenite's frame decoder). It must never
//! panic, and everything written back must be HTTP/1.x responses with a known status.
//!
//! Input layout: byte 0 picks the read size (1..=256 bytes per read, to split heads at
//! every point), the rest is what the client sends before closing. The path is also
//! routed on its own, checking `route`'s invariants.

#![no_main]

use std::sync::{Arc, OnceLock};

use cairn_gateway::memory::MemoryIo;
use cairn_gateway::route::route;
use cairn_gateway::{
    accept_websocket, AcceptWebSocket, Body, DispatchError, DispatchFuture, Dispatcher,
    EventFuture, Gateway, GatewayConfig, Request, Response, Route, SocketEvent, SocketHandler,
    Sockets, WebSocketConfig,
};
use cairn_scheduler::Runtime;
use libfuzzer_sys::fuzz_target;

/// Answers by `rest`: every dispatcher outcome the gateway maps (panics excluded:
/// libfuzzer aborts on any panic, caught or not).
struct FuzzDispatcher;

impl Dispatcher for FuzzDispatcher {
    fn dispatch(&self, route: Route, request: Request) -> DispatchFuture {
        Box::pin(async move {
            match route.rest() {
                "/fail" => Err(DispatchError::Failed("fuzz".into())),
                "/busy" => Err(DispatchError::Overloaded {
                    retry_after: std::time::Duration::from_millis(1),
                }),
                "/gone" => Err(DispatchError::Unavailable("fuzz".into())),
                "/ws" => Ok(accept_websocket(&request, AcceptWebSocket::default())
                    .unwrap_or_else(|e| e.into_response())),
                _ if route.class() == "nope" => Err(DispatchError::UnknownClass(route.class().to_owned())),
                _ => {
                    let body = request.into_body().collect().await.unwrap_or_default();
                    // The length, not the bytes: an echoed "HTTP/1.1 " would confuse the check.
                    Ok(Response::new(Body::from(body.len().to_string())))
                }
            }
        })
    }
}

struct Ignore;

impl SocketHandler for Ignore {
    fn on_event(&self, _event: SocketEvent) -> EventFuture {
        Box::pin(async {})
    }
}

fn gateway() -> &'static (Runtime, Gateway) {
    static GATEWAY: OnceLock<(Runtime, Gateway)> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let rt = Runtime::builder().workers(1).build().unwrap();
        let config = GatewayConfig {
            max_body_bytes: 256,
            max_segment_bytes: 32,
            ..GatewayConfig::default()
        };
        let ws = WebSocketConfig {
            max_frame_bytes: 256,
            max_message_bytes: 512,
            ..WebSocketConfig::default()
        };
        let sockets = Sockets::new(rt.handle().node(), ws);
        let gateway = Gateway::builder(rt.handle(), Arc::new(FuzzDispatcher))
            .config(config)
            .websockets(sockets, Arc::new(Ignore))
            .detached();
        (rt, gateway)
    })
}

const KNOWN: &[&str] = &[
    "200", "101", "400", "404", "413", "414", "426", "431", "500", "501", "503", "505",
];

fuzz_target!(|data: &[u8]| {
    let [chunk, input @ ..] = data else {
        return;
    };
    // Routing alone: never panics; a route's rest starts with '/'.
    if let Ok(text) = std::str::from_utf8(input) {
        let path = text.split([' ', '?']).nth(1).unwrap_or(text);
        if let Ok(route) = route(path, 32) {
            assert!(route.rest().starts_with('/'));
            assert!(!route.class().is_empty() && !route.key().is_empty());
            assert!(route.class().len() <= 32 && route.key().len() <= 32);
        }
    }
    let (rt, gateway) = gateway();
    let (io, output) = MemoryIo::new(input.to_vec(), usize::from(*chunk) + 1);
    let _ = rt.block_on(gateway.serve_connection(io));
    let output = output.lock();
    // An HTTP/1.0 request is answered in HTTP/1.0.
    let text = String::from_utf8_lossy(&output).replace("HTTP/1.0 ", "HTTP/1.1 ");
    for response in text.split("HTTP/1.1 ").skip(1) {
        let status = &response[..response.len().min(3)];
        assert!(KNOWN.contains(&status), "unexpected status {status:?} in {text:?}");
    }
    if !output.is_empty() {
        assert!(output.starts_with(b"HTTP/1."), "{text:?}");
    }
});
