//! Every HTTP limit has a defined answer: real clients (curl, raw TCP for what curl will not
//! send) against a running gateway on 127.0.0.1.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use cairn_gateway::{GatewayConfig, WebSocketConfig};
use common::{curl, parse_response, raw_exchange, time_until_closed, TestGateway};

fn with(config: GatewayConfig) -> TestGateway {
    TestGateway::start(config, WebSocketConfig::default())
}

#[test]
fn a_request_head_over_the_limit_is_431() {
    let gw = with(GatewayConfig {
        max_header_bytes: 16 * 1024,
        ..GatewayConfig::default()
    });
    let big = format!("x-big: {}", "a".repeat(20 * 1024));
    assert_eq!(curl(&["-H", &big, &gw.url("/counter/k/")]).status, 431);
    let fits = format!("x-big: {}", "a".repeat(8 * 1024));
    assert_eq!(curl(&["-H", &fits, &gw.url("/counter/k/")]).status, 200);
}

#[test]
fn too_many_header_fields_is_431() {
    let gw = with(GatewayConfig {
        max_headers: 20,
        ..GatewayConfig::default()
    });
    let mut request = String::from("GET /counter/k/ HTTP/1.1\r\nhost: x\r\n");
    for i in 0..30 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let answer = raw_exchange(gw.addr, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[test]
fn a_declared_body_over_the_limit_is_413_without_running_the_handler() {
    let gw = with(GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    });
    // "5" padded to 2000 bytes: the counter would add 5 if the handler ran.
    let body = format!("5{}", " ".repeat(1999));
    let got = curl(&["--data-binary", &body, &gw.url("/counter/k/")]);
    assert_eq!(got.status, 413);
    assert!(got.body.contains("larger than 1024"), "{got:?}");
    assert_eq!(curl(&[&gw.url("/counter/k/")]).body, "0");
}

#[test]
fn a_streamed_body_is_counted_and_cut_at_the_limit_with_413() {
    let gw = with(GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    });
    let chunked = ["-H", "transfer-encoding: chunked", "--data-binary"];
    let under = "u".repeat(1000);
    let got = curl(&[&chunked[..], &[under.as_str(), &gw.url("/echo/k/")]].concat());
    assert_eq!(
        (got.status, got.body.len()),
        (200, 1000),
        "a body under the limit streams through"
    );
    let over = "o".repeat(5000);
    let got = curl(&[&chunked[..], &[over.as_str(), &gw.url("/echo/k/")]].concat());
    assert_eq!(got.status, 413, "{got:?}");
}

#[test]
fn a_malformed_body_is_400() {
    let gw = TestGateway::default();
    let answer = raw_exchange(
        gw.addr,
        b"POST /echo/k/ HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nnot a chunk\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
}

#[test]
fn malformed_requests_are_400_and_the_gateway_keeps_serving() {
    let gw = TestGateway::default();
    let malformed: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /counter/k/ HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /counter/k/ HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"GET /counter/k/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"GET /counter/k/ HTTP/1.1\r\nx-nul: a\0b\r\n\r\n",
        b"GET /counter/k/ HTTP/9.9\r\n\r\n",
        b"GET counter/k HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello\r\n\r\n",
        b"GET /counter/k/ HTTP/1.1\r\n\xff\xfe: \xff\r\n\r\n",
    ];
    for request in malformed {
        let answer = raw_exchange(gw.addr, request);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(curl(&["-d", "1", &gw.url("/counter/k/")]).body, "1");
}

#[test]
fn a_slowloris_head_is_cut_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(500);
    let gw = with(GatewayConfig {
        header_read_timeout: timeout,
        ..GatewayConfig::default()
    });
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.write_all(b"GET /counter/k/ HTTP/1.1\r\n").unwrap();
    let mut writer = stream.try_clone().unwrap();
    // One header byte every 50 ms: always progressing, never finishing.
    let trickle = std::thread::spawn(move || {
        for _ in 0..200 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let took = time_until_closed(&mut stream);
    assert!(
        took >= timeout.saturating_sub(Duration::from_millis(50)),
        "{took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "cut near the timeout, not at the end: {took:?}"
    );
    trickle.join().unwrap();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let gw = with(GatewayConfig {
        header_read_timeout: timeout,
        ..GatewayConfig::default()
    });
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .write_all(b"GET /counter/k/ HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let took = time_until_closed(&mut stream);
    assert!(
        took >= timeout.saturating_sub(Duration::from_millis(50)),
        "{took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    gw.wait_until("the connection is released", || {
        gw.gateway.connections() == 0
    });
}

#[test]
fn a_trickled_body_is_cut_at_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let gw = with(GatewayConfig {
        idle_timeout: idle,
        ..GatewayConfig::default()
    });
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    // Ten of the declared hundred bytes, then silence.
    stream
        .write_all(b"POST /echo/k/ HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .unwrap();
    let took = time_until_closed(&mut stream);
    assert!(
        took >= idle.saturating_sub(Duration::from_millis(50)),
        "{took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    gw.wait_until("the connection is released", || {
        gw.gateway.connections() == 0
    });
}

#[test]
fn connections_over_the_limit_get_503_with_retry_after() {
    let gw = with(GatewayConfig {
        max_connections: 2,
        ..GatewayConfig::default()
    });
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    gw.wait_until("both connections are accepted", || {
        gw.gateway.connections() == 2
    });
    let refused = curl(&[&gw.url("/counter/k/")]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(held);
    gw.wait_until("the held connections are released", || {
        gw.gateway.connections() == 0
    });
    assert_eq!(curl(&[&gw.url("/counter/k/")]).status, 200);
}

#[test]
fn a_connection_flood_past_the_refusal_limit_is_closed_unanswered() {
    let gw = with(GatewayConfig {
        max_connections: 1,
        max_refusing: 1,
        ..GatewayConfig::default()
    });
    let _held = TcpStream::connect(gw.addr).unwrap();
    gw.wait_until("the first connection is accepted", || {
        gw.gateway.connections() == 1
    });
    // Takes the one refusal slot and keeps it (it never sends a request).
    let _refusing = TcpStream::connect(gw.addr).unwrap();
    // Now nothing is left: the next connection is closed without an answer.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(raw_exchange(
            gw.addr,
            b"GET /counter/k/ HTTP/1.1\r\nhost: x\r\n\r\n",
        ));
    }
    assert!(answers.iter().any(String::is_empty), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
}

#[test]
fn a_503_refusal_reads_the_request_first() {
    // The refusal is a real HTTP answer, parsed by a client as one.
    let gw = with(GatewayConfig {
        max_connections: 0,
        ..GatewayConfig::default()
    });
    let answer = raw_exchange(gw.addr, b"GET /counter/k/ HTTP/1.1\r\nhost: x\r\n\r\n");
    let parsed = parse_response(&answer).unwrap();
    assert_eq!(parsed.status, 503);
    assert_eq!(parsed.body, "too many connections\n");
}
