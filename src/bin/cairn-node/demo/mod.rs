//! The demo object classes `cairn-node` hosts, so a mesh can be tried without writing code.
//! `examples/counter.rs` and `examples/booking.rs` run two of them on one node, including
//! these files with `#[path]` (each file depends on `cairn`'s public API only).
//!
//! Every message type here serializes (a [`Reply`](cairn::scheduler::Reply) included), so
//! the classes are placed across a mesh with [`cairn::Node::host`]; [`host_all`] hosts the
//! three. They are small on purpose: read them as templates for an application's own
//! classes.

pub mod booking;
pub mod chat;
pub mod counter;

pub use booking::{BookingMsg, Restaurant};
pub use chat::{ChatMsg, ChatRoom};
pub use counter::{Counter, CounterMsg};

/// Hosts [`Counter`], [`Restaurant`] and [`ChatRoom`] on `node`.
pub fn host_all(node: &cairn::Node) {
    node.host::<Counter>();
    node.host::<Restaurant>();
    node.host::<ChatRoom>();
}
