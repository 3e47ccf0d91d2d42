//! A chat room application over HTTP and hibernating WebSockets: each room is a
//! [`room::ChatRoom`] object that serves its own page and holds its members' sockets; the
//! front page `/` is the room `lobby`'s page, where a room and a name are picked.
//!
//! ```text
//! cargo run --example chat            # then open http://127.0.0.1:8080/
//! cargo run --example chat -- 127.0.0.1:9000 ./data/chat
//! ```

use std::net::SocketAddr;

use cairn::gateway::GatewayConfig;
use cairn::prelude::*;

mod room;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let http: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let data = args.next().unwrap_or_else(|| "data/chat".to_owned());
    let front = GatewayConfig {
        index: Some("/chatroom/lobby/".to_owned()),
        ..GatewayConfig::default()
    };
    let node = Node::builder()
        .data_dir(data)
        .http(http)
        .http_config(front)
        .start()?;
    node.host::<room::ChatRoom>();
    let addr = node.http_addr().expect("serving HTTP");
    println!("chat at http://{addr}/");
    node.block_on(std::future::pending::<()>());
    Ok(())
}
