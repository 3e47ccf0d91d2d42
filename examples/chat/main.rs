//! A chat room application over HTTP and hibernating WebSockets: each room is a
//! [`room::ChatRoom`] object that serves its own page and holds its members' sockets.
//!
//! ```text
//! cargo run --example chat            # then open http://127.0.0.1:8080/chatroom/lobby/?name=ada
//! cargo run --example chat -- 127.0.0.1:9000 ./data/chat
//! ```

use std::net::SocketAddr;

use cairn::prelude::*;

mod room;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let http: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let data = args.next().unwrap_or_else(|| "data/chat".to_owned());
    let node = Node::builder().data_dir(data).http(http).start()?;
    node.host::<room::ChatRoom>();
    let addr = node.http_addr().expect("serving HTTP");
    println!("chat at http://{addr}/chatroom/lobby/?name=ada");
    node.block_on(std::future::pending::<()>());
    Ok(())
}
