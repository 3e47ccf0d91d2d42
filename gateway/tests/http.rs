//! Routing and error answers, with curl against a running gateway on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cairn_gateway::{GatewayConfig, WebSocketConfig};
use common::{curl, parse_response, TestGateway};

#[test]
fn requests_reach_the_object_named_by_class_and_key() {
    let gw = TestGateway::default();
    assert_eq!(curl(&["-d", "5", &gw.url("/counter/a/")]).body, "5");
    assert_eq!(curl(&["-d", "2", &gw.url("/counter/a")]).body, "7");
    let got = curl(&[&gw.url("/counter/a/")]);
    assert_eq!((got.status, got.body.as_str()), (200, "7"));
    assert_eq!(
        curl(&[&gw.url("/counter/b/")]).body,
        "0",
        "another key is another object"
    );
    // A percent-encoded key names the same object as its decoded form.
    assert_eq!(curl(&["-d", "1", &gw.url("/counter/caf%C3%A9/")]).body, "1");
    assert_eq!(curl(&[&gw.url("/counter/caf%c3%a9/")]).body, "1");
}

#[test]
fn paths_that_name_no_object_and_unknown_classes_are_404() {
    let gw = TestGateway::default();
    for path in ["/", "/counter", "/counter/", "//k/"] {
        assert_eq!(curl(&[&gw.url(path)]).status, 404, "{path}");
    }
    let unknown = curl(&[&gw.url("/nope/k/x")]);
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("unknown object class \"nope\""),
        "{unknown:?}"
    );
    // The object's own 404 passes through untouched.
    assert_eq!(
        curl(&[&gw.url("/counter/k/missing")]).body,
        "no such path\n"
    );
}

#[test]
fn with_an_index_the_front_page_is_served_as_the_path_it_names() {
    let config = GatewayConfig {
        index: Some("/counter/front/".to_owned()),
        ..GatewayConfig::default()
    };
    let gw = TestGateway::start(config, WebSocketConfig::default());
    assert_eq!(curl(&["-d", "4", &gw.url("/")]).body, "4");
    assert_eq!(curl(&[&gw.url("/?name=ada")]).body, "4", "with a query");
    assert_eq!(
        curl(&[&gw.url("/counter/front/")]).body,
        "4",
        "the same object"
    );
    // Only `/`: other paths naming no object stay 404.
    assert_eq!(curl(&[&gw.url("/counter")]).status, 404);
}

#[test]
fn an_alias_is_served_as_the_path_it_names_and_only_that_exact_path() {
    let config = GatewayConfig {
        aliases: vec![("/total".to_owned(), "/counter/front/".to_owned())],
        ..GatewayConfig::default()
    };
    let gw = TestGateway::start(config, WebSocketConfig::default());
    assert_eq!(curl(&["-d", "3", &gw.url("/total")]).body, "3");
    assert_eq!(curl(&[&gw.url("/total?x=1")]).body, "3", "with a query");
    assert_eq!(
        curl(&[&gw.url("/counter/front/")]).body,
        "3",
        "the same object"
    );
    for other in ["/", "/total/", "/totals", "/total/more"] {
        assert_eq!(curl(&[&gw.url(other)]).status, 404, "{other}");
    }
}

#[test]
fn a_failing_handler_is_500_with_the_request_id_in_body_and_header() {
    let gw = TestGateway::default();
    let got = curl(&[&gw.url("/counter/k/fail")]);
    assert_eq!(got.status, 500);
    let id = got.header("x-request-id").expect("x-request-id").to_owned();
    assert_eq!(id.len(), 16);
    assert!(got.body.contains(&id), "{got:?}");
    assert!(
        !got.body.contains("on purpose"),
        "the handler's message is logged, not sent"
    );
}

#[test]
fn a_panicking_handler_is_500_and_the_gateway_keeps_serving() {
    let gw = TestGateway::default();
    for _ in 0..3 {
        let got = curl(&[&gw.url("/counter/k/panic")]);
        assert_eq!(got.status, 500);
        assert!(got.body.contains(got.header("x-request-id").unwrap()));
    }
    assert_eq!(curl(&["-d", "1", &gw.url("/counter/k/")]).body, "1");
}

#[test]
fn an_overloaded_object_is_503_with_retry_after_in_whole_seconds() {
    let gw = TestGateway::default();
    let got = curl(&[&gw.url("/counter/k/busy")]);
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("2"), "1.5 s rounds up");
}

#[test]
fn a_handler_that_never_answers_is_504_after_the_handler_timeout() {
    let config = GatewayConfig {
        handler_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let gw = TestGateway::start(config, WebSocketConfig::default());
    let start = std::time::Instant::now();
    let got = curl(&[&gw.url("/counter/k/slow")]);
    assert_eq!(got.status, 504);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_handler_outlasting_the_header_read_timeout_is_504_only_at_the_handler_timeout() {
    // The header read and the handler of one connection share one driver timer: the
    // entry armed for the head fires while the handler runs, and must not end it.
    let config = GatewayConfig {
        header_read_timeout: Duration::from_millis(400),
        handler_timeout: Duration::from_millis(1500),
        ..GatewayConfig::default()
    };
    let gw = TestGateway::start(config, WebSocketConfig::default());
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = std::time::Instant::now();
    stream
        .write_all(b"GET /counter/k/slow HTTP/1.1\r\n")
        .unwrap();
    // The head in two parts, so that hyper waits for its end on the header-read deadline
    // (arming the shared entry for 400 ms) whatever the scheduling.
    std::thread::sleep(Duration::from_millis(100));
    stream
        .write_all(b"host: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let took = start.elapsed();
    let got = parse_response(&answer).expect("a response");
    assert_eq!(got.status, 504, "{answer:?}");
    assert!(took >= Duration::from_millis(1500), "504 after {took:?}");
    let id = got.header("x-request-id").expect("a request id").to_owned();
    assert!(
        got.body.contains(&id),
        "the body names the request: {got:?}"
    );
}

#[test]
fn bad_class_or_key_encoding_and_oversized_keys_are_400() {
    let config = GatewayConfig {
        max_segment_bytes: 16,
        ..GatewayConfig::default()
    };
    let gw = TestGateway::start(config, WebSocketConfig::default());
    assert_eq!(curl(&[&gw.url("/counter/%FF/")]).status, 400);
    let long = "k".repeat(17);
    let got = curl(&[&gw.url(&format!("/counter/{long}/"))]);
    assert_eq!(got.status, 400);
    assert!(got.body.contains("longer than 16"), "{got:?}");
    assert_eq!(
        curl(&[&gw.url(&format!("/counter/{}/", &long[..16]))]).status,
        200
    );
}

#[test]
fn the_request_id_is_current_in_dispatch_and_in_its_future() {
    let gw = TestGateway::default();
    for _ in 0..2 {
        let got = curl(&[&gw.url("/counter/k/id")]);
        let id = got.header("x-request-id").expect("x-request-id");
        assert_eq!(got.body, format!("{id} {id}"));
    }
}

#[test]
fn request_ids_differ_between_requests() {
    let gw = TestGateway::default();
    let a = curl(&[&gw.url("/counter/k/")]);
    let b = curl(&[&gw.url("/counter/k/")]);
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[test]
fn one_keep_alive_connection_serves_pipelined_requests_in_order() {
    let gw = TestGateway::default();
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut pipelined = Vec::new();
    for n in 1..=3 {
        pipelined.extend_from_slice(
            format!("POST /counter/p/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n{n}")
                .as_bytes(),
        );
    }
    stream.write_all(&pipelined).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("HTTP/1.1 200").count() < 3 || !seen.ends_with('6') {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let bodies: Vec<String> = seen
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| parse_response(&format!("HTTP/1.1 {r}")).unwrap().body)
        .collect();
    assert_eq!(bodies, ["1", "3", "6"]);
    assert_eq!(gw.gateway.connections(), 1, "all three on one connection");
}

#[test]
fn concurrent_keep_alive_clients_all_reach_the_same_object() {
    const THREADS: usize = 16;
    const REQUESTS: usize = 100;
    let gw = TestGateway::default();
    let addr = gw.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let request =
                    b"POST /counter/hot/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n1";
                let mut buf = [0u8; 1024];
                for _ in 0..REQUESTS {
                    stream.write_all(request).unwrap();
                    let n = stream.read(&mut buf).unwrap();
                    assert!(
                        buf[..n].starts_with(b"HTTP/1.1 200"),
                        "{:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        curl(&[&gw.url("/counter/hot/")]).body,
        (THREADS * REQUESTS).to_string()
    );
}
