//! A gateway serving an in-memory handler, for the `http-get` benchmark
//! (`benches/http_get.py`) and for trying the gateway by hand.
//!
//! ```text
//! cargo run --release -p cairn-gateway --example http_server -- [--addr 127.0.0.1:8080]
//!     [--workers 2] [--handler inline|object]
//! ```
//!
//! `inline` answers `hello` from the dispatcher itself (the gateway's own cost, like a
//! plain hyper "hello" server); `object` reads a counter held by a Cairn process per key
//! (a call through the process's mailbox per request, as an in-memory object would).
//! Prints `listening ADDR` once ready, then serves until killed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_gateway::{
    Body, DispatchError, DispatchFuture, Dispatcher, Gateway, GatewayConfig, Request, Response,
    Route,
};
use cairn_scheduler::{ActorRef, Handle, Message, Reply, Runtime};
use parking_lot::Mutex;

struct Inline;

impl Dispatcher for Inline {
    fn dispatch(&self, _route: Route, _request: Request) -> DispatchFuture {
        Box::pin(std::future::ready(Ok(Response::new(Body::from("hello")))))
    }
}

/// A counter per key, each a process; a GET reads it with a call.
struct Objects {
    handle: Handle,
    counters: Mutex<HashMap<String, ActorRef<Reply<u64>>>>,
}

impl Objects {
    fn counter(&self, key: &str) -> ActorRef<Reply<u64>> {
        if let Some(counter) = self.counters.lock().get(key) {
            return counter.clone();
        }
        let counter = self
            .handle
            .spawn(|mut ctx: cairn_scheduler::Ctx<Reply<u64>>| async move {
                let mut reads = 0u64;
                while let Some(msg) = ctx.recv().await {
                    if let Message::User(reply) = msg {
                        reads += 1;
                        let _ = reply.send(reads);
                    }
                }
            });
        self.counters
            .lock()
            .entry(key.to_owned())
            .or_insert(counter)
            .clone()
    }
}

impl Dispatcher for Objects {
    fn dispatch(&self, route: Route, _request: Request) -> DispatchFuture {
        let counter = self.counter(route.key());
        Box::pin(async move {
            let reads = counter
                .call(|reply| reply, Duration::from_secs(5))
                .await
                .map_err(|e| DispatchError::Failed(e.to_string()))?;
            Ok(Response::new(Body::from(reads.to_string())))
        })
    }
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut workers = 2;
    let mut handler = String::from("inline");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => addr = value.parse().expect("--addr HOST:PORT"),
            "--workers" => workers = value.parse().expect("--workers N"),
            "--handler" => handler = value,
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime");
    let dispatcher: Arc<dyn Dispatcher> = match handler.as_str() {
        "inline" => Arc::new(Inline),
        "object" => Arc::new(Objects {
            handle: rt.handle(),
            counters: Mutex::new(HashMap::new()),
        }),
        other => panic!("--handler inline|object, not {other}"),
    };
    let gateway = Gateway::builder(rt.handle(), dispatcher)
        .config(GatewayConfig::default())
        .bind(addr)
        .expect("bind");
    println!("listening {}", gateway.local_addr().unwrap());
    loop {
        std::thread::park();
    }
}
