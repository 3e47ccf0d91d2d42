//! The request path driven from bytes in memory (what the fuzz target does): a head split
//! at every point parses the same, and the answers match the TCP tests'.

mod common;

use cairn_gateway::memory::MemoryIo;
use common::{parse_response, TestGateway};

fn serve(gw: &TestGateway, input: &[u8], chunk: usize) -> String {
    let detached = &gw.gateway;
    let (io, output) = MemoryIo::new(input.to_vec(), chunk);
    let _ = gw.rt.block_on(detached.serve_connection(io));
    let out = output.lock();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_request_split_at_every_byte_gets_the_same_answer() {
    let gw = TestGateway::default();
    let request = b"POST /counter/split/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n1";
    for chunk in 1..=request.len() {
        let answer = serve(&gw, request, chunk);
        let parsed = parse_response(&answer).unwrap_or_else(|| panic!("chunk {chunk}: {answer:?}"));
        assert_eq!(parsed.status, 200, "chunk {chunk}");
        assert_eq!(parsed.body, chunk.to_string(), "one increment per request");
    }
}

#[test]
fn in_memory_answers_match_the_tcp_ones() {
    let gw = TestGateway::default();
    let cases: &[(&[u8], u16)] = &[
        (b"GET /counter/m/ HTTP/1.1\r\nhost: x\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        (b"GET /nope/k/ HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        (b"GET /counter/k/fail HTTP/1.1\r\nhost: x\r\n\r\n", 500),
        (b"GET /counter/k/busy HTTP/1.1\r\nhost: x\r\n\r\n", 503),
        (b"GARBAGE\r\n\r\n", 400),
    ];
    for (input, status) in cases {
        let answer = serve(&gw, input, 7);
        assert_eq!(
            parse_response(&answer).map(|r| r.status),
            Some(*status),
            "{answer:?}"
        );
    }
}
