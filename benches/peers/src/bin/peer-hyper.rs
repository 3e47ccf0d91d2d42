//! A plain hyper 1.x "hello" server on tokio: the ceiling cairn-gateway's `http-get`
//! benchmark compares with (benches/http_get.py). Same HTTP stack as the gateway (hyper's
//! HTTP/1 server, keep-alive, TCP_NODELAY), none of the gateway's routing, limits or
//! request ids; a multi-thread runtime with `--workers` threads (default 2, as the gateway).
//!
//! ```text
//! peer-hyper [--addr 127.0.0.1:8080] [--workers 2]
//! ```
//! Prints `listening ADDR` once ready.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut workers = 2;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => addr = value.parse().expect("--addr HOST:PORT"),
            "--workers" => workers = value.parse().expect("--workers N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!("listening {}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
