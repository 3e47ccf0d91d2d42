//! `cairn-node run --http ADDR`: serves HTTP and WebSockets into the node's objects (off
//! unless asked; see `cairn::NodeBuilder::http`), with the web chat as the front page: `/`
//! is the `chatroom` object `lobby`'s page ([`INDEX`]; rooms and the member name are picked
//! on it).

use std::net::SocketAddr;

use cairn::gateway::GatewayConfig;
use cairn::prelude::*;
use clap::Args;

/// What `/` is served as: the chat page of the room `lobby` (class `chatroom`, see
/// `demo::chatroom`).
pub const INDEX: &str = "/chatroom/lobby/";

/// The `--http` option of `run`.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Serve HTTP and WebSockets into objects here (`/{class}/{key}/...`, and the chat
    /// page at `/`), e.g. 127.0.0.1:8080. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

impl HttpArgs {
    /// Turns the gateway on in `builder` if asked.
    pub fn apply(&self, builder: NodeBuilder) -> NodeBuilder {
        match self.http {
            Some(addr) => builder.http(addr).http_config(GatewayConfig {
                index: Some(INDEX.to_owned()),
                ..GatewayConfig::default()
            }),
            None => builder,
        }
    }
}

/// Prints `http listen=<addr>` on stdout when the node serves HTTP (after `ready`).
pub fn announce(node: &Node) {
    if let Some(addr) = node.http_addr() {
        println!("http listen={addr}");
    }
}
