//! The demo object classes `cairn-node` hosts, so a mesh can be tried without writing code.
//! `examples/counter.rs` and `examples/booking.rs` run two of them on one node, including
//! these files with `#[path]` (each file depends on `cairn`'s public API only). The other
//! way round, the web chat's room (class `chatroom`, served at `/` with `--http`) is the
//! chat example's own class, `examples/chat/room.rs`, included here.
//!
//! Every message type here serializes (a [`Reply`](cairn::scheduler::Reply) included), so
//! the classes are placed across a mesh with [`cairn::Node::host`]; [`host_all`] hosts
//! them all. They are small on purpose: read them as templates for an application's own
//! classes.

pub mod booking;
pub mod chat;
#[path = "../../../../examples/chat/room.rs"]
pub mod chatroom;
pub mod counter;

pub use booking::{BookingMsg, Restaurant};
pub use chat::{ChatMsg, ChatRoom};
pub use counter::{Counter, CounterMsg};

/// Hosts [`Counter`], [`Restaurant`], [`ChatRoom`] and the web chat's
/// [`chatroom::ChatRoom`] on `node`.
pub fn host_all(node: &cairn::Node) {
    node.host::<Counter>();
    node.host::<Restaurant>();
    node.host::<ChatRoom>();
    node.host::<chatroom::ChatRoom>();
}
