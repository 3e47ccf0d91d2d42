//! A durable counter per key: every acknowledged increment is on disk.

use serde::{Deserialize, Serialize};

use cairn::bytes::Bytes;
use cairn::http;
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

    /// `GET /counter/{key}/` answers the total; `POST` adds the body's number (1 if the
    /// body is empty) and answers the new total once it is durable.
    async fn fetch(
        &mut self,
        request: http::Request<Bytes>,
        ctx: &mut ObjectCtx<Self>,
    ) -> Result<http::Response<Bytes>, ActorError> {
        let answer = |status: http::StatusCode, text: String| {
            let mut response = http::Response::new(Bytes::from(text));
            *response.status_mut() = status;
            response
        };
        match *request.method() {
            http::Method::GET => Ok(answer(http::StatusCode::OK, format!("{}\n", self.total))),
            http::Method::POST => {
                let body = std::str::from_utf8(request.body()).unwrap_or("").trim();
                let Ok(n) = (if body.is_empty() {
                    Ok(1)
                } else {
                    body.parse::<u64>()
                }) else {
                    let why = format!("the body must be a number, not {body:?}\n");
                    return Ok(answer(http::StatusCode::BAD_REQUEST, why));
                };
                self.total = self.total.saturating_add(n);
                ctx.storage().put("total", &self.total)?;
                Ok(answer(http::StatusCode::OK, format!("{}\n", self.total)))
            }
            _ => Ok(answer(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "GET or POST\n".to_owned(),
            )),
        }
    }
}
