//! Real endpoints on 127.0.0.1: ordering, garbage datagrams, bad frames.

mod common;

use std::time::Duration;

use cairn_net::{FrameError, RecvError, CLOSE_FRAME_ERROR};
use common::{localhost, runtime, spawn, wait_for_log, Cluster, Rng};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn round_trip_100k_ordered_frames() {
    const N: u64 = 100_000;
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["client", "server"]);
    let (client, server) = (cluster.endpoints[0].clone(), cluster.endpoints[1].clone());
    let server_addr = server.local_addr().unwrap();

    let received = spawn(&rt, async move {
        let conn = server.accept().await.expect("a connection");
        let mut lane = conn.accept_lane().await.unwrap();
        assert_eq!(lane.lane(), 7);
        let mut next = 0u64;
        while let Some((seq, text)) = lane.recv::<(u64, String)>().await.unwrap() {
            assert_eq!(seq, next, "out of order or lost");
            assert_eq!(text, format!("m{seq}"));
            next += 1;
        }
        next
    });

    let handle = rt.handle();
    rt.block_on(handle.timeout(TIMEOUT, async move {
        let conn = client.connect(server_addr, "server").await.unwrap();
        let mut lane = conn.open_lane(7).await.unwrap();
        for seq in 0..N {
            lane.send(&(seq, format!("m{seq}"))).await.unwrap();
        }
        lane.finish().await.unwrap();
        let stats = conn.quinn().stats();
        // Coalescing: far fewer stream writes than frames show up as far fewer packets.
        assert!(
            stats.path.sent_packets < N / 10,
            "{} packets for {N} frames",
            stats.path.sent_packets
        );
    }))
    .expect("client finished in time");
    assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), N);
    rt.shutdown();
}

#[test]
fn garbage_datagrams_do_not_crash_the_endpoint() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["client", "server"]);
    let (client, server) = (cluster.endpoints[0].clone(), cluster.endpoints[1].clone());
    let server_addr = server.local_addr().unwrap();

    let junk = std::net::UdpSocket::bind(localhost()).unwrap();
    let mut rng = Rng(0x9a4b_a6e0_0000_0001);
    for i in 0..2_000 {
        let len = 1 + (rng.next() % 1500) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 3 == 0 && len >= 6 {
            // Looks like a QUIC v1 long-header Initial, so it gets past the first checks.
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        junk.send_to(&datagram, server_addr).unwrap();
    }

    let echoed = spawn(&rt, async move {
        let conn = server.accept().await.expect("a connection");
        let mut lane = conn.accept_lane().await.unwrap();
        lane.recv::<String>().await.unwrap()
    });
    let handle = rt.handle();
    rt.block_on(handle.timeout(TIMEOUT, async move {
        let conn = client.connect(server_addr, "server").await.unwrap();
        let mut lane = conn.open_lane(0).await.unwrap();
        lane.send("still serving").await.unwrap();
        lane.finish().await.unwrap();
    }))
    .unwrap();
    assert_eq!(
        echoed.recv_timeout(TIMEOUT).unwrap().as_deref(),
        Some("still serving")
    );
    rt.shutdown();
}

/// Opens a raw uni stream (bypassing `FramedSender`), writes a lane id and `bytes`.
async fn send_raw(conn: &cairn_net::Connection, bytes: &[u8]) {
    let mut stream = conn.quinn().open_uni().await.unwrap();
    stream.write_all(&3u32.to_be_bytes()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
}

#[test]
fn oversized_and_bad_version_frames_close_only_that_connection() {
    let rt = runtime();
    let cluster = Cluster::new(&rt, &["server", "oversized", "bad-version", "good"]);
    let server = cluster.endpoints[0].clone();
    let server_addr = server.local_addr().unwrap();
    let handle = rt.handle();

    // The server reports each connection's first receive result.
    let results = spawn(&rt, async move {
        let mut results = Vec::new();
        for _ in 0..3 {
            let conn = server.accept().await.expect("a connection");
            let mut lane = conn.accept_lane().await.unwrap();
            let result = lane.recv::<String>().await;
            results.push((conn.remote_address(), result));
        }
        results
    });

    let oversized = cluster.endpoints[1].clone();
    let bad_version = cluster.endpoints[2].clone();
    let good = cluster.endpoints[3].clone();
    let (oversized_addr, bad_version_addr, good_addr) = (
        oversized.local_addr().unwrap(),
        bad_version.local_addr().unwrap(),
        good.local_addr().unwrap(),
    );

    let mut results = rt
        .block_on(handle.timeout(TIMEOUT, async move {
            // 1. A header announcing 4 GiB - 1.
            let conn = oversized.connect(server_addr, "server").await.unwrap();
            send_raw(&conn, &[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0]).await;
            let reason = conn.closed().await;
            assert!(
                matches!(&reason, quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_FRAME_ERROR)),
                "{reason:?}"
            );
            // 2. Version 9.
            let conn = bad_version.connect(server_addr, "server").await.unwrap();
            send_raw(&conn, &[0, 0, 0, 1, 9, 0, 0, 0, 0x07]).await;
            let reason = conn.closed().await;
            assert!(
                matches!(&reason, quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_FRAME_ERROR)),
                "{reason:?}"
            );
            // 3. The endpoint still serves a well-behaved peer.
            let conn = good.connect(server_addr, "server").await.unwrap();
            let mut lane = conn.open_lane(3).await.unwrap();
            lane.send("fine").await.unwrap();
            lane.finish().await.unwrap();
            results.recv_timeout(TIMEOUT).unwrap()
        }))
        .unwrap();
    results.sort_by_key(|(addr, _)| {
        [oversized_addr, bad_version_addr, good_addr]
            .iter()
            .position(|a| a == addr)
    });
    assert!(matches!(
        &results[0].1,
        Err(RecvError::Frame(FrameError::TooLarge {
            len: 0xffff_ffff,
            ..
        }))
    ));
    assert!(matches!(
        &results[1].1,
        Err(RecvError::Frame(FrameError::UnknownVersion { version: 9 }))
    ));
    assert_eq!(results[2].1.as_ref().unwrap().as_deref(), Some("fine"));
    wait_for_log(&[
        "invalid frame",
        &oversized_addr.to_string(),
        "exceeds the maximum",
    ]);
    wait_for_log(&[
        "invalid frame",
        &bad_version_addr.to_string(),
        "unknown frame version",
    ]);
    rt.shutdown();
}
