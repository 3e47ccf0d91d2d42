//! A chat room per key, reached over HTTP and hibernating WebSockets: `GET
//! /chatroom/{room}/` serves the page (examples/chat/index.html, shipped in the binary: no
//! CDN), `GET /chatroom/{room}/ws?name=N` joins the room as `N`. On the page a member picks
//! a room by name and a member name. `cairn-node --http` hosts this class too and serves
//! the page as its front page, `/` (`GatewayConfig::index`).
//!
//! Over the socket a client sends a line of text to post it, or `/history` to get the last
//! [`HISTORY`] posts (and announce itself). Posts are durable (`post/{seq}`), broadcast to
//! every member on every node, and rate-limited per member ([`RATE_LIMIT`] a second). A
//! room idle for [`ROOM_TTL`] deletes itself (its alarm). The room object may be evicted
//! while members stay connected: the next message wakes it (the member's name is the
//! socket's attachment).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use cairn::bytes::Bytes;
use cairn::http;
use cairn::prelude::*;
use cairn::storage::ListOptions;

/// Posts sent on `/history`.
pub const HISTORY: usize = 50;
/// Posts per member per second; more are refused with a notice.
pub const RATE_LIMIT: u32 = 5;
/// A room with no post for this long deletes itself.
pub const ROOM_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest post, in bytes.
pub const MAX_POST: usize = 2000;

const PAGE: &str = include_str!("index.html");

/// A chat room (class `chatroom`).
pub struct ChatRoom {
    next_seq: u64,
    /// Per member socket: the start of its rate window and its posts in it (in memory: an
    /// eviction resets it, which only forgives).
    rate: HashMap<SocketId, (Instant, u32)>,
}

fn answer(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> http::Response<Bytes> {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    response
}

fn post_key(seq: u64) -> String {
    format!("post/{seq:020}")
}

impl ChatRoom {
    fn name_of(attachment: Option<Bytes>) -> String {
        attachment.map_or_else(
            || "guest".to_owned(),
            |a| String::from_utf8_lossy(&a).into_owned(),
        )
    }

    /// Whether `socket` may post now (counts the post).
    fn admit(&mut self, socket: SocketId) -> bool {
        let now = Instant::now();
        let (start, count) = self.rate.entry(socket).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count <= RATE_LIMIT
    }
}

impl Object for ChatRoom {
    const CLASS: &'static str = "chatroom";
    type Msg = ();

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(ChatRoom {
            next_seq: ctx.storage().get("next_seq")?.unwrap_or(1),
            rate: HashMap::new(),
        })
    }

    async fn handle(&mut self, (): (), _ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        Ok(())
    }

    async fn fetch(
        &mut self,
        request: http::Request<Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        let rest = request.uri().path().splitn(4, '/').nth(3).unwrap_or("");
        match rest {
            "" => Ok(answer(
                http::StatusCode::OK,
                "text/html; charset=utf-8",
                PAGE,
            )),
            "ws" => {
                let name = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
                    .map(|n| percent_decode(n).chars().take(32).collect::<String>())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "guest".to_owned());
                match ctx.accept_websocket(&request, vec!["member".to_owned()], Some(name.into())) {
                    Ok(response) => Ok(response),
                    Err(e) => Ok(answer(
                        http::StatusCode::BAD_REQUEST,
                        "text/plain",
                        e.to_string(),
                    )),
                }
            }
            _ => Ok(answer(
                http::StatusCode::NOT_FOUND,
                "text/plain",
                "no such page\n",
            )),
        }
    }

    async fn websocket_message(
        &mut self,
        socket: SocketId,
        message: WsMessage,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        let WsMessage::Text(text) = message else {
            return Ok(());
        };
        let sockets = ctx.websockets();
        let name = Self::name_of(sockets.attachment(socket).await.unwrap_or(None));
        if text == "/history" {
            let options = ListOptions {
                prefix: Some(b"post/".to_vec()),
                reverse: true,
                limit: Some(HISTORY),
                ..ListOptions::default()
            };
            let mut posts: Vec<(Vec<u8>, String)> = ctx.storage().list(&options)?;
            posts.reverse();
            for (_, post) in posts {
                let _ = sockets.send(socket, WsMessage::Text(post));
            }
            sockets.broadcast(Some("member"), WsMessage::Text(format!("* {name} is here")));
            return Ok(());
        }
        if text.len() > MAX_POST || text.trim().is_empty() {
            let _ = sockets.send(
                socket,
                WsMessage::Text("* post refused: empty or too long".to_owned()),
            );
            return Ok(());
        }
        if !self.admit(socket) {
            let _ = sockets.send(socket, WsMessage::Text("* slow down".to_owned()));
            return Ok(());
        }
        let post = format!("{name}: {text}");
        ctx.storage().put(post_key(self.next_seq), &post)?;
        self.next_seq += 1;
        ctx.storage().put("next_seq", &self.next_seq)?;
        ctx.storage().set_alarm(SystemTime::now() + ROOM_TTL)?;
        // Leaves once the post is durable.
        sockets.broadcast(Some("member"), WsMessage::Text(post));
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        socket: SocketId,
        _code: u16,
        _reason: String,
        _ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        self.rate.remove(&socket);
        Ok(())
    }

    /// Idle for a day: the room and its history go.
    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        ctx.storage().delete_all()?;
        self.next_seq = 1;
        Ok(())
    }
}

/// Decodes a query value (`+` and `%XX`; bad UTF-8 becomes U+FFFD).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}
