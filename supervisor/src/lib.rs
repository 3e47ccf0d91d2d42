//! # cairn-supervisor — OTP for Cairn
//!
//! The [`Actor`] behaviour (OTP's gen_server) and supervision trees with OTP's semantics:
//! strategies `OneForOne`, `OneForAll`, `RestForOne`; restart types `Permanent`, `Transient`,
//! `Temporary`; restart intensity that escalates to the parent; ordered start and reverse-order
//! shutdown with per-child `Shutdown` specs; dynamic supervisors; optional restart backoff.
//!
//! ```
//! use std::time::Duration;
//! use cairn_scheduler::{Reply, Runtime};
//! use cairn_supervisor::{Actor, ActorCtx, ActorError, ChildSpec, Strategy, Supervisor, SupervisorSpec};
//!
//! struct Counter(u64);
//! enum Msg { Add(u64), Get(Reply<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     async fn handle(&mut self, msg: Msg, _ctx: &mut ActorCtx<Self>) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Get(r) => { let _ = r.send(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().workers(2).build().unwrap();
//! let spec = SupervisorSpec::new(Strategy::OneForOne)
//!     .child(ChildSpec::worker("counter", || Counter(0)).named("counter"));
//! let sup = rt.block_on(Supervisor::start(&rt, spec)).unwrap();
//! let pid = rt.whereis("counter").unwrap();
//! rt.try_send(pid, Msg::Add(3)).unwrap();
//! assert_eq!(rt.block_on(rt.call(pid, Msg::Get, Duration::from_secs(1))).unwrap(), 3);
//! # let _ = sup;
//! ```

#![deny(unsafe_code)]

pub mod actor;
pub mod restart;
pub mod supervisor;

pub use actor::{start, Actor, ActorCtx, ActorError, Addr, StartError, StartOptions};
pub use restart::{Directive, Indices, Intensity, Restart, Strategy, Supervision, INTENSITY_GRAIN};
pub use supervisor::{
    roots, running, Backoff, ChildCounts, ChildError, ChildInfo, ChildKind, ChildRef, ChildSpec,
    DynamicSupervisor, Shutdown, Supervisor, SupervisorInfo, SupervisorMsg, SupervisorRef,
    SupervisorSpec, DEFAULT_SHUTDOWN_TIMEOUT,
};
