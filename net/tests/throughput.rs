//! Throughput and latency on loopback. Ignored by default; run with
//! `cargo test -p cairn-net --release --test throughput -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{runtime, spawn, Cluster};

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn throughput_32_byte_frames_and_rtt() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["client", "server"]);
    let (client, server) = (cluster.endpoints[0].clone(), cluster.endpoints[1].clone());
    let server_addr = server.local_addr().unwrap();
    let handle = rt.handle();

    // A 31-character string encodes as a 32-byte MessagePack payload (fixstr).
    const FRAMES: u64 = 2_000_000;
    let payload = "x".repeat(31);
    assert_eq!(rmp_serde::to_vec(&payload).unwrap().len(), 32);

    const ROUND_TRIPS: usize = 20_000;
    let server_side = spawn(&rt, async move {
        let conn = server.accept().await.unwrap();
        // Bulk lane.
        let mut bulk = conn.accept_lane().await.unwrap();
        let mut count = 0u64;
        while let Some(frame) = bulk.recv_frame().await.unwrap() {
            assert_eq!(frame.payload().len(), 32);
            count += 1;
        }
        let bulk_done = Instant::now();
        // Echo lane: reply to each request on a lane of our own.
        let mut requests = conn.accept_lane().await.unwrap();
        let mut replies = conn.open_lane(1).await.unwrap();
        while let Some(n) = requests.recv::<u64>().await.unwrap() {
            replies.send(&n).await.unwrap();
        }
        drop(replies);
        (count, bulk_done)
    });

    let (start, rtts) = rt
        .block_on(handle.timeout(TIMEOUT, async move {
            let conn = client.connect(server_addr, "server").await.unwrap();
            let mut bulk = conn.open_lane(0).await.unwrap();
            let start = Instant::now();
            for _ in 0..FRAMES {
                bulk.send(payload.as_str()).await.unwrap();
            }
            bulk.finish().await.unwrap();

            let mut requests = conn.open_lane(1).await.unwrap();
            // The server opens its reply lane on the first request.
            requests.send(&0u64).await.unwrap();
            let mut replies = conn.accept_lane().await.unwrap();
            assert_eq!(replies.recv::<u64>().await.unwrap(), Some(0));
            let mut rtts = Vec::with_capacity(ROUND_TRIPS);
            for n in 1..=ROUND_TRIPS as u64 {
                let sent = Instant::now();
                requests.send(&n).await.unwrap();
                assert_eq!(replies.recv::<u64>().await.unwrap(), Some(n));
                rtts.push(sent.elapsed());
            }
            requests.finish().await.unwrap();
            (start, rtts)
        }))
        .unwrap();
    let (count, bulk_done) = server_side.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(count, FRAMES);
    let secs = (bulk_done - start).as_secs_f64();
    let mut rtts = rtts;
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    println!(
        "32-byte frames: {FRAMES} in {secs:.3} s = {:.2} M frames/s",
        FRAMES as f64 / secs / 1e6
    );
    println!(
        "request/response RTT over {ROUND_TRIPS}: p50 {:?}, p99 {:?}",
        pct(0.50),
        pct(0.99)
    );
    rt.shutdown();
}
