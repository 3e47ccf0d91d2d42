//! A restaurant per object: tables are held for a guest, then confirmed; a hold that is not
//! confirmed expires through the object's durable alarm. Two guests can never book the same
//! table, because one object handles one message at a time and commits before it answers.
//!
//! `cargo run --release --example booking`

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

const TABLES: u32 = 2;
const HOLD_FOR: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
enum Seat {
    Held { guest: String, until_ms: u64 },
    Booked { guest: String },
}

enum BookingMsg {
    Hold(String, Reply<Result<u32, String>>),
    Confirm(String, Reply<Result<u32, String>>),
    Show(Reply<BTreeMap<u32, Seat>>),
}

struct Restaurant {
    seats: BTreeMap<u32, Seat>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Restaurant {
    fn save(&self, ctx: &ObjectCtx<Self>) -> Result<(), ActorError> {
        ctx.storage().put("seats", &self.seats)?;
        // The alarm fires at the earliest hold's expiry.
        let next = self.seats.values().filter_map(|s| match s {
            Seat::Held { until_ms, .. } => Some(*until_ms),
            Seat::Booked { .. } => None,
        });
        match next.min() {
            Some(ms) => ctx
                .storage()
                .set_alarm(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))?,
            None => ctx.storage().delete_alarm()?,
        }
        Ok(())
    }
}

impl Object for Restaurant {
    const CLASS: &'static str = "restaurant";
    type Msg = BookingMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Restaurant {
            seats: ctx.storage().get("seats")?.unwrap_or_default(),
        })
    }

    async fn handle(
        &mut self,
        msg: BookingMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            BookingMsg::Hold(guest, reply) => {
                let free = (1..=TABLES).find(|t| !self.seats.contains_key(t));
                let answer = match free {
                    Some(table) => {
                        let until_ms = now_ms() + HOLD_FOR.as_millis() as u64;
                        self.seats.insert(table, Seat::Held { guest, until_ms });
                        self.save(ctx)?;
                        Ok(table)
                    }
                    None => Err("fully booked".to_owned()),
                };
                let _ = reply.send(answer);
            }
            BookingMsg::Confirm(guest, reply) => {
                let held = self.seats.iter().find_map(|(t, s)| match s {
                    Seat::Held { guest: g, .. } if *g == guest => Some(*t),
                    _ => None,
                });
                let answer = match held {
                    Some(table) => {
                        self.seats.insert(table, Seat::Booked { guest });
                        self.save(ctx)?;
                        Ok(table)
                    }
                    None => Err(format!("{guest} holds no table (expired?)")),
                };
                let _ = reply.send(answer);
            }
            BookingMsg::Show(reply) => {
                let _ = reply.send(self.seats.clone());
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<(), ActorError> {
        let now = now_ms();
        self.seats.retain(|table, seat| match seat {
            Seat::Held { guest, until_ms } if *until_ms <= now => {
                println!("  alarm: hold of table {table} by {guest} expired");
                false
            }
            _ => true,
        });
        self.save(ctx)
    }
}

fn main() {
    cairn::init_logging();
    let dir = std::env::temp_dir().join(format!("cairn-booking-{}", std::process::id()));
    let node = Node::builder().data_dir(&dir).start().expect("start node");
    node.register::<Restaurant>();
    let t = Duration::from_secs(5);
    let chez = node.object::<Restaurant>("chez-cairn");

    for guest in ["ada", "grace", "linus"] {
        let r = node
            .block_on(chez.call(|r| BookingMsg::Hold(guest.into(), r), t))
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
        .block_on(chez.call(|r| BookingMsg::Hold("linus".into(), r), t))
        .unwrap();
    println!(" linus asks again: {r:?}");
    let seats = node.block_on(chez.call(BookingMsg::Show, t)).unwrap();
    println!("tables now: {seats:?}");
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
