//! A durable counter per key: every acknowledged increment is on disk.

use serde::{Deserialize, Serialize};

use cairn::prelude::*;

/// What a [`Counter`] takes.
#[derive(Debug, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Adds `n` (no answer).
    Add(u64),
    /// Adds `n` and answers with the new total once it is durable.
    AddAndGet(u64, Reply<u64>),
    /// Answers with the total.
    Get(Reply<u64>),
}

/// A counter object (class `counter`).
pub struct Counter {
    total: u64,
}

impl Object for Counter {
    const CLASS: &'static str = "counter";
    type Msg = CounterMsg;

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Counter {
            total: ctx.storage().get("total")?.unwrap_or(0),
        })
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
            }
            CounterMsg::AddAndGet(n, reply) => {
                self.total += n;
                ctx.storage().put("total", &self.total)?;
                // Held by the output gate until the write above is durable.
                let _ = reply.send(self.total);
            }
            CounterMsg::Get(reply) => {
                let _ = reply.send(self.total);
            }
        }
        Ok(())
    }
}
