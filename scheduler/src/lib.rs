//! # cairn-scheduler — Cairn's VM
//!
//! Lightweight processes on a work-stealing executor, Erlang-style: each process runs an
//! async body that receives from its own bounded mailbox, one message at a time; processes
//! are named by [`Pid`]s (or registered names), linked and monitored, and stopped with
//! typed [`ExitReason`]s.
//!
//! ```
//! use std::time::Duration;
//! use cairn_scheduler::{Message, Reply, Runtime};
//!
//! enum Msg { Add(u64), Get(Reply<u64>) }
//!
//! let rt = Runtime::builder().workers(2).build().unwrap();
//! let counter = rt.spawn_named("counter", |mut ctx| async move {
//!     let mut total = 0;
//!     while let Some(msg) = ctx.recv().await {
//!         match msg {
//!             Message::User(Msg::Add(n)) => total += n,
//!             Message::User(Msg::Get(reply)) => { let _ = reply.send(total); }
//!             Message::Signal(_) => {}
//!         }
//!     }
//! }).unwrap();
//! counter.try_send(Msg::Add(2)).unwrap();
//! let total = rt.block_on(counter.call(Msg::Get, Duration::from_secs(1))).unwrap();
//! assert_eq!(total, 2);
//! assert_eq!(rt.whereis("counter"), Some(counter.pid()));
//! rt.shutdown();
//! ```
//!
//! ## Pieces
//! - `executor`: worker threads, per-worker deques, the LIFO slot, stealing and parking.
//! - `task_state`: the per-process scheduling state machine (loom-checked).
//! - `process`, `table`: process records, the sharded slab of live processes, the exit
//!   protocol (links, monitors, names).
//! - `wheel`, `driver`: the hashed timing wheel and the driver thread that owns it and the
//!   mio poller (I/O readiness for the network layer).
//! - `budget`: the per-turn message budget ([`MESSAGE_BUDGET`]).
//! - `blocking`: the blocking-work pool.
//! - `outside`: monitors and links made by code that is not a process.
//! - `stats`: per-worker counters of polls, steals, parks, spawns and exits ([`SchedulerStats`]).

#![deny(unsafe_code)]

mod actor_ref;
mod blocking;
mod budget;
mod context;
pub mod driver;
mod executor;
mod exit;
pub mod gate;
mod named;
mod outside;
mod pid;
mod process;
pub mod remote;
mod reply;
mod runtime;
pub mod stable_hash;
mod stats;
mod sync;
mod table;
mod task_state;
mod time;
pub mod trace;
mod unwind;
pub mod wheel;

pub use actor_ref::{ActorRef, SendError, SendFut};
pub use blocking::{BlockingJoin, BLOCKING_KEEP_ALIVE, MAX_BLOCKING_THREADS};
pub use budget::MESSAGE_BUDGET;
pub use cairn_mailbox::dead_letters;
pub use context::{Ctx, Message, Recv};
pub use executor::{
    FIFO_BEFORE_SPAWNS_INTERVAL, GLOBAL_QUEUE_INTERVAL, MAX_LIFO_POLLS_PER_TICK,
    OLDEST_SPAWN_INTERVAL,
};
pub use exit::{ExitReason, IntoExitReason, MonitorRef, Signal};
pub use named::NamedRef;
pub use outside::{Monitor, NotLocal};
pub use pid::{NodeId, Pid};
pub use reply::{CallError, Reply, ReplyReceiver};
pub use runtime::{
    block_on, Builder, ExitWatch, Handle, RegisterError, Runtime, SpawnError, SpawnOptions,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use stats::{ExitKind, SchedulerStats};
pub use time::{Elapsed, TimerRef, FULL_MAILBOX_RETRY};
pub use unwind::{catch_unwind_future, panic_message, CatchUnwind};
