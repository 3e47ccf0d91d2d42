//! Two processes bounce a counter back and forth; prints the round-trip rate.
//!
//! `cargo run --release --example ping_pong`

use std::time::Instant;

use cairn::prelude::*;

enum Ball {
    Ping(u64, ActorRef<Ball>),
    Pong(u64),
}

const ROUND_TRIPS: u64 = 1_000_000;

fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let node = Node::builder().start().expect("start node");
    let ponger = node.spawn(|mut ctx: Ctx<Ball>| async move {
        while let Some(msg) = ctx.recv().await {
            if let Message::User(Ball::Ping(n, from)) = msg {
                if from.send(Ball::Pong(n)).await.is_err() {
                    break;
                }
            }
        }
    });
    let pinger = node.spawn(move |mut ctx: Ctx<Ball>| async move {
        let start = Instant::now();
        ponger.send(Ball::Ping(0, ctx.me())).await.ok();
        while let Some(msg) = ctx.recv().await {
            if let Message::User(Ball::Pong(n)) = msg {
                if n + 1 == ROUND_TRIPS {
                    break;
                }
                ponger.send(Ball::Ping(n + 1, ctx.me())).await.ok();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{ROUND_TRIPS} round trips in {:.1} ms: {:.2}M round trips/s",
            secs * 1e3,
            ROUND_TRIPS as f64 / secs / 1e6
        );
    });
    let reason = node.block_on(node.handle().wait_exit(pinger.pid()));
    assert_eq!(reason, ExitReason::Normal);
}
