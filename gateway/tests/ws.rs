//! WebSockets held by the gateway, with tungstenite's blocking client against a running
//! gateway on 127.0.0.1.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use cairn_gateway::{
    AutoResponse, GatewayConfig, ObjectKey, SocketError, SocketEventKind, WebSocketConfig,
    WsMessage,
};
use common::TestGateway;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(gw: &TestGateway, path: &str) -> Client {
    let url = format!("ws://{}{}", gw.addr, path);
    let (mut client, response) = tungstenite::connect(url).expect("handshake");
    assert_eq!(response.status(), 101);
    if let MaybeTlsStream::Plain(stream) = client.get_mut() {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(
        next_text(&mut client),
        "welcome",
        "the accept's initial message comes first"
    );
    client
}

fn next_text(client: &mut Client) -> String {
    loop {
        match client.read().expect("a message") {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; its code.
fn close_code(client: &mut Client) -> u16 {
    loop {
        match client.read() {
            Ok(Message::Close(Some(frame))) => return frame.code.into(),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

fn send(client: &mut Client, text: &str) {
    client.send(Message::Text(text.into())).unwrap();
}

fn room(key: &str) -> ObjectKey {
    ObjectKey::new("counter", key)
}

#[test]
fn a_message_reaches_the_object_and_its_broadcast_reaches_every_socket() {
    let gw = TestGateway::default();
    let mut a = connect(&gw, "/counter/room1/ws");
    let mut b = connect(&gw, "/counter/room1/ws");
    let mut other = connect(&gw, "/counter/room2/ws");
    send(&mut a, "inc");
    assert_eq!(next_text(&mut a), "count=1");
    assert_eq!(next_text(&mut b), "count=1");
    send(&mut b, "inc");
    assert_eq!(next_text(&mut a), "count=2");
    assert_eq!(next_text(&mut b), "count=2");
    // Another object's sockets heard nothing: its next message is its own answer.
    send(&mut other, "list");
    assert_eq!(next_text(&mut other), "sockets=1");
    let event = gw
        .log
        .wait_for(|e| e.kind == SocketEventKind::Message(WsMessage::Text("inc".into())));
    assert_eq!(event.object, room("room1"));
}

#[test]
fn sending_to_a_tag_reaches_only_the_sockets_with_that_tag() {
    let gw = TestGateway::default();
    let mut red = connect(&gw, "/counter/tags/ws?tags=red");
    let mut blue = connect(&gw, "/counter/tags/ws?tags=blue,sky");
    send(&mut red, "tag:blue:hello blue");
    assert_eq!(next_text(&mut blue), "hello blue");
    send(&mut red, "tag:sky:hello sky");
    assert_eq!(next_text(&mut blue), "hello sky");
    // Had `red` received either, it would come before this answer.
    send(&mut red, "list");
    assert_eq!(next_text(&mut red), "sockets=2");
    let listed = gw.sockets.list(&room("tags"), Some("blue"));
    assert_eq!(listed.len(), 1);
    assert_eq!(&*listed[0].tags, ["blue".to_owned(), "sky".to_owned()]);
    assert_eq!(gw.sockets.list(&room("tags"), None).len(), 2);
}

#[test]
fn each_socket_keeps_its_own_attachment() {
    let gw = TestGateway::default();
    let mut a = connect(&gw, "/counter/att/ws");
    let mut b = connect(&gw, "/counter/att/ws");
    send(&mut a, "attachment");
    assert_eq!(a.read().unwrap(), Message::Binary("initial".into()));
    send(&mut a, "attach:member=ann");
    send(&mut a, "attachment");
    assert_eq!(a.read().unwrap(), Message::Binary("member=ann".into()));
    send(&mut b, "attachment");
    assert_eq!(b.read().unwrap(), Message::Binary("initial".into()));
    let attachments: Vec<_> = gw
        .sockets
        .list(&room("att"), None)
        .into_iter()
        .map(|s| s.attachment.unwrap())
        .collect();
    assert_eq!(attachments, ["member=ann", "initial"]);
}

#[test]
fn the_auto_response_is_answered_without_calling_the_handler() {
    let gw = TestGateway::default();
    gw.sockets.set_auto_response(
        &room("auto"),
        Some(AutoResponse {
            request: "ping".into(),
            response: "pong".into(),
        }),
    );
    let mut client = connect(&gw, "/counter/auto/ws");
    for _ in 0..3 {
        send(&mut client, "ping");
        assert_eq!(next_text(&mut client), "pong");
    }
    send(&mut client, "list");
    assert_eq!(next_text(&mut client), "sockets=1");
    // The handler saw `list` (so events flow) and never `ping`.
    gw.log
        .wait_for(|e| e.kind == SocketEventKind::Message(WsMessage::Text("list".into())));
    let pings = gw
        .log
        .all()
        .into_iter()
        .filter(|e| e.kind == SocketEventKind::Message(WsMessage::Text("ping".into())))
        .count();
    assert_eq!(pings, 0);
    // Cleared: `ping` now reaches the handler.
    gw.sockets.set_auto_response(&room("auto"), None);
    send(&mut client, "ping");
    gw.log
        .wait_for(|e| e.kind == SocketEventKind::Message(WsMessage::Text("ping".into())));
}

#[test]
fn protocol_pings_are_answered_with_pongs() {
    let gw = TestGateway::default();
    let mut client = connect(&gw, "/counter/ping/ws");
    client.send(Message::Ping("are you there".into())).unwrap();
    assert_eq!(
        client.read().unwrap(),
        Message::Pong("are you there".into())
    );
}

#[test]
fn the_clients_close_reaches_the_handler_with_code_and_reason() {
    let gw = TestGateway::default();
    let mut client = connect(&gw, "/counter/bye/ws");
    assert_eq!(gw.sockets.count(&room("bye")), 1);
    client
        .close(Some(CloseFrame {
            code: CloseCode::from(4000),
            reason: "bye".into(),
        }))
        .unwrap();
    let event = gw
        .log
        .wait_for(|e| matches!(e.kind, SocketEventKind::Close { .. }));
    assert_eq!(
        event.kind,
        SocketEventKind::Close {
            code: 4000,
            reason: "bye".into()
        }
    );
    assert_eq!(
        gw.sockets.count(&room("bye")),
        0,
        "gone before the handler heard of it"
    );
    gw.wait_until("the socket's permit is released", || {
        gw.gateway.connections() == 0
    });
}

#[test]
fn a_dropped_connection_is_a_close_with_1006() {
    let gw = TestGateway::default();
    let client = connect(&gw, "/counter/drop/ws");
    drop(client);
    let event = gw
        .log
        .wait_for(|e| !matches!(e.kind, SocketEventKind::Message(_)));
    assert_eq!(
        event.kind,
        SocketEventKind::Close {
            code: 1006,
            reason: String::new()
        }
    );
}

#[test]
fn a_message_over_the_limit_closes_the_socket_with_1009() {
    let ws = WebSocketConfig {
        max_message_bytes: 1024,
        ..WebSocketConfig::default()
    };
    let gw = TestGateway::start(GatewayConfig::default(), ws);
    let mut client = connect(&gw, "/counter/big/ws");
    send(&mut client, &"x".repeat(1000));
    send(&mut client, &"x".repeat(2000));
    assert_eq!(close_code(&mut client), 1009);
    let event = gw
        .log
        .wait_for(|e| matches!(e.kind, SocketEventKind::Error(_)));
    assert_eq!(event.object, room("big"));
    // The message under the limit was delivered before.
    gw.log
        .wait_for(|e| e.kind == SocketEventKind::Message(WsMessage::Text("x".repeat(1000))));
}

#[test]
fn a_frame_over_the_limit_closes_the_socket_with_1009() {
    let ws = WebSocketConfig {
        max_frame_bytes: 512,
        max_message_bytes: 64 * 1024,
        ..WebSocketConfig::default()
    };
    let gw = TestGateway::start(GatewayConfig::default(), ws);
    let mut client = connect(&gw, "/counter/frame/ws");
    client.send(Message::Binary(vec![7u8; 600].into())).unwrap();
    assert_eq!(close_code(&mut client), 1009);
}

#[test]
fn a_socket_past_the_objects_limit_is_closed_with_1013() {
    let ws = WebSocketConfig {
        max_sockets_per_object: 2,
        ..WebSocketConfig::default()
    };
    let gw = TestGateway::start(GatewayConfig::default(), ws);
    let _a = connect(&gw, "/counter/full/ws");
    let _b = connect(&gw, "/counter/full/ws");
    let (mut third, _) = tungstenite::connect(format!("ws://{}/counter/full/ws", gw.addr)).unwrap();
    assert_eq!(close_code(&mut third), 1013);
    assert_eq!(gw.sockets.count(&room("full")), 2);
    // Another object is not affected.
    let _c = connect(&gw, "/counter/other/ws");
}

#[test]
fn the_object_can_close_a_socket_and_no_close_event_follows() {
    let gw = TestGateway::default();
    let mut client = connect(&gw, "/counter/kick/ws");
    let id = gw.sockets.list(&room("kick"), None)[0].id;
    gw.sockets.close(id, 4001, "kicked").unwrap();
    assert_eq!(close_code(&mut client), 4001);
    gw.wait_until("the socket is unregistered", || {
        gw.sockets.count(&room("kick")) == 0
    });
    assert_eq!(
        gw.sockets.send(id, WsMessage::Text("late".into())),
        Err(SocketError::NoSocket(id))
    );
    assert!(gw
        .log
        .all()
        .iter()
        .all(|e| matches!(e.kind, SocketEventKind::Message(_))));
}

#[test]
fn a_panicking_handler_closes_the_socket_with_1011() {
    let gw = TestGateway::default();
    let mut client = connect(&gw, "/counter/boom/ws");
    send(&mut client, "panic");
    assert_eq!(close_code(&mut client), 1011);
    gw.wait_until("the socket is unregistered", || {
        gw.sockets.count(&room("boom")) == 0
    });
    // The gateway still accepts sockets.
    let _again = connect(&gw, "/counter/boom/ws");
}

#[test]
fn sends_to_a_client_that_does_not_read_fail_with_full_instead_of_growing() {
    let ws = WebSocketConfig {
        send_queue: 4,
        ..WebSocketConfig::default()
    };
    let gw = TestGateway::start(GatewayConfig::default(), ws);
    let _client = connect(&gw, "/counter/slow/ws");
    let id = gw.sockets.list(&room("slow"), None)[0].id;
    let chunk = "z".repeat(256 * 1024);
    let mut sent = 0;
    let result = loop {
        match gw.sockets.send(id, WsMessage::Text(chunk.clone())) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 2000, "500 MB queued without backpressure");
    };
    assert_eq!(result, SocketError::Full(id));
}

#[test]
fn shutdown_closes_every_socket_with_1001() {
    let gw = TestGateway::default();
    let mut a = connect(&gw, "/counter/s1/ws");
    let mut b = connect(&gw, "/counter/s2/ws");
    gw.gateway.shutdown();
    assert_eq!(close_code(&mut a), 1001);
    assert_eq!(close_code(&mut b), 1001);
}

#[test]
fn a_plain_request_to_a_websocket_route_is_400() {
    let gw = TestGateway::default();
    let got = common::curl(&[&gw.url("/counter/k/ws")]);
    assert_eq!(got.status, 400);
}

#[test]
fn many_clients_on_one_object_see_every_increment_and_leave_nothing_behind() {
    const CLIENTS: usize = 24;
    const INCS: usize = 20;
    // Room for every broadcast: what a slow socket cannot take yet is queued, not dropped.
    let ws = WebSocketConfig {
        send_queue: CLIENTS * INCS,
        ..WebSocketConfig::default()
    };
    let gw = TestGateway::start(GatewayConfig::default(), ws);
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| connect(&gw, "/counter/crowd/ws"))
        .collect();
    assert_eq!(gw.sockets.count(&room("crowd")), CLIENTS);
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                for _ in 0..INCS {
                    send(&mut client, "inc");
                }
                // Every socket sees every broadcast once. (Their order across senders is
                // the stand-in handler's race, not the gateway's: its handlers run
                // concurrently, where an object would run them one at a time.)
                let total = CLIENTS * INCS;
                let mut seen: Vec<usize> = (0..total)
                    .map(|_| {
                        next_text(&mut client)
                            .strip_prefix("count=")
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (1..=total).collect::<Vec<_>>(),
                    "none lost, none twice"
                );
                client.close(None).unwrap();
                while client.read().is_ok() {}
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    gw.wait_until("every socket is gone", || {
        gw.sockets.is_empty() && gw.gateway.connections() == 0
    });
}

#[test]
fn messages_to_a_socket_are_written_while_its_handler_is_still_running() {
    let gw = TestGateway::default();
    let mut client = connect(&gw, "/counter/busy/ws");
    let id = gw.sockets.list(&room("busy"), None)[0].id;
    send(&mut client, "hold");
    gw.wait_until("the handler is running", || {
        gw.hold.started.load(std::sync::atomic::Ordering::Acquire)
    });
    gw.sockets
        .send(id, WsMessage::Text("during".into()))
        .unwrap();
    assert_eq!(next_text(&mut client), "during");
    gw.hold
        .release
        .store(true, std::sync::atomic::Ordering::Release);
    send(&mut client, "list");
    assert_eq!(next_text(&mut client), "sockets=1");
}
