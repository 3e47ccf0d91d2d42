//! A restaurant per key: tables are held for a guest, then confirmed; a hold that is not
//! confirmed in time expires through the object's durable alarm. Two guests can never book
//! the same table, because one object handles one message at a time and commits before it
//! answers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use cairn::prelude::*;

/// Tables per restaurant.
pub const TABLES: u32 = 2;

/// A table's state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Seat {
    /// Held for `guest` until `until_ms` (milliseconds since the Unix epoch).
    Held {
        /// The guest.
        guest: String,
        /// Expiry.
        until_ms: u64,
    },
    /// Booked for `guest`.
    Booked {
        /// The guest.
        guest: String,
    },
}

/// What a [`Restaurant`] takes.
#[derive(Debug, Serialize, Deserialize)]
pub enum BookingMsg {
    /// Holds a free table for the guest for the given time; answers with the table.
    Hold(String, Duration, Reply<Result<u32, String>>),
    /// Confirms the guest's held table; answers with the table.
    Confirm(String, Reply<Result<u32, String>>),
    /// Answers with every table's state.
    Show(Reply<BTreeMap<u32, Seat>>),
}

/// A restaurant object (class `restaurant`).
pub struct Restaurant {
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
            BookingMsg::Hold(guest, hold_for, reply) => {
                let free = (1..=TABLES).find(|t| !self.seats.contains_key(t));
                let answer = match free {
                    Some(table) => {
                        let until_ms = now_ms() + hold_for.as_millis() as u64;
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
                tracing::info!(restaurant = ctx.key(), table, guest, "hold expired");
                false
            }
            _ => true,
        });
        self.save(ctx)
    }
}
