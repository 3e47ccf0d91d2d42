//! Example object classes: what `cairn-node` hosts so a mesh can be tried without writing
//! code, and what `examples/counter.rs` and `examples/booking.rs` run on one node.
//!
//! Every message type here serializes (a [`Reply`](crate::scheduler::Reply) included), so
//! the classes are placed across a mesh with [`crate::Node::host`]; [`host_all`]
//! hosts the three. They are small on purpose: read them as templates for an
//! application's own classes.

pub mod booking;
pub mod chat;
pub mod counter;

pub use booking::{BookingMsg, Restaurant, Seat};
pub use chat::{ChatMsg, ChatRoom, Post};
pub use counter::{Counter, CounterMsg};

/// Registers [`Counter`], [`Restaurant`] and [`ChatRoom`] on `node`.
pub fn host_all(node: &crate::Node) {
    node.host::<Counter>();
    node.host::<Restaurant>();
    node.host::<ChatRoom>();
}
