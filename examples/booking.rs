//! A restaurant per object: tables are held for a guest, then confirmed; a hold that is not
//! confirmed expires through the object's durable alarm. Two guests can never book the same
//! table, because one object handles one message at a time and commits before it answers.
//! The `Restaurant` class is one of `cairn-node`'s demo classes (`src/bin/cairn-node/demo/`).
//!
//! `cargo run --release --example booking`

use std::time::Duration;

use cairn::prelude::*;
#[path = "../src/bin/cairn-node/demo/booking.rs"]
mod booking;
use booking::{BookingMsg, Restaurant};

const HOLD_FOR: Duration = Duration::from_millis(300);

fn main() {
    cairn::init_logging(cairn::LogFormat::Text);
    let dir = std::env::temp_dir().join(format!("cairn-booking-{}", std::process::id()));
    let node = Node::builder().data_dir(&dir).start().expect("start node");
    node.host::<Restaurant>();
    let t = Duration::from_secs(5);
    let chez = node.object::<Restaurant>("chez-cairn");

    for guest in ["ada", "grace", "linus"] {
        let r = node
            .block_on(chez.call(|r| BookingMsg::Hold(guest.into(), HOLD_FOR, r), t))
            .unwrap();
        println!("{guest:>6} asks for a table: {r:?}");
    }
    let r = node
        .block_on(chez.call(|r| BookingMsg::Confirm("ada".into(), r), t))
        .unwrap();
    println!("   ada confirms: {r:?}");
    println!("grace does not confirm; waiting for her hold to expire...");
    std::thread::sleep(HOLD_FOR + Duration::from_millis(1_500));
    let r = node
        .block_on(chez.call(|r| BookingMsg::Confirm("grace".into(), r), t))
        .unwrap();
    println!(" grace confirms too late: {r:?}");
    let r = node
        .block_on(chez.call(|r| BookingMsg::Hold("linus".into(), HOLD_FOR, r), t))
        .unwrap();
    println!(" linus asks again: {r:?}");
    let seats = node.block_on(chez.call(BookingMsg::Show, t)).unwrap();
    println!("tables now: {seats:?}");
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
