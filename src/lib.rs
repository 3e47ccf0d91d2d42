//! # Cairn
//!
//! Durable-Objects-style actors on an Erlang/OTP-style runtime, self-hosted, in Rust.
//!
//! This facade wires the layers into a [`Node`] and re-exports what applications use through
//! [`prelude`]. Today a node is local: the scheduler (processes, links, monitors, timers,
//! registry) and OTP-style supervision. Durable storage and the mesh plug in here as their
//! crates land.
//!
//! ```
//! use std::time::Duration;
//! use cairn::prelude::*;
//!
//! enum Greeter { Hello(String, Reply<String>) }
//!
//! let node = Node::builder().workers(2).start().unwrap();
//! node.spawn_named("greeter", |mut ctx: Ctx<Greeter>| async move {
//!     while let Some(Message::User(Greeter::Hello(name, reply))) = ctx.recv().await {
//!         let _ = reply.send(format!("hello, {name}"));
//!     }
//! }).unwrap();
//! let pid = node.whereis("greeter").unwrap();
//! let answer = node.block_on(node.call(pid, |r| Greeter::Hello("ada".into(), r), Duration::from_secs(1)));
//! assert_eq!(answer.unwrap(), "hello, ada");
//! ```

use std::time::Duration;

pub use cairn_scheduler as scheduler;
pub use cairn_supervisor as supervisor;

/// What applications import: `use cairn::prelude::*;`.
pub mod prelude {
    pub use crate::{Node, NodeBuilder};
    pub use cairn_scheduler::{
        ActorRef, CallError, Ctx, ExitReason, Handle, Message, MonitorRef, NodeId, Pid, Reply,
        SendError, Signal, SpawnError, SpawnOptions, TimerRef,
    };
    pub use cairn_supervisor::{
        Actor, ActorCtx, ActorError, Addr, Backoff, ChildRef, ChildSpec, DynamicSupervisor,
        Restart, Shutdown, StartError, StartOptions, Strategy, Supervisor, SupervisorRef,
        SupervisorSpec,
    };
}

/// Configures a [`Node`].
#[derive(Clone, Debug, Default)]
pub struct NodeBuilder {
    runtime: cairn_scheduler::Builder,
}

impl NodeBuilder {
    /// Scheduler worker threads (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.runtime = self.runtime.workers(n);
        self
    }

    /// Default mailbox capacity of new processes.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.runtime = self.runtime.mailbox_capacity(n);
        self
    }

    /// How long shutdown waits for processes to stop before killing them.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.runtime = self.runtime.shutdown_grace(d);
        self
    }

    /// Starts the node's threads.
    pub fn start(self) -> std::io::Result<Node> {
        Ok(Node {
            runtime: self.runtime.name("cairn").build()?,
        })
    }
}

/// A Cairn node: the runtime and (as they land) its storage and mesh.
///
/// Derefs to the scheduler's [`Handle`](cairn_scheduler::Handle): `spawn`, `spawn_named`,
/// `whereis`, `try_send`, `send`, `call`, `exit`, `wait_exit`, timers, `block_on`.
/// Dropping the node shuts it down (every process stopped, every thread joined).
pub struct Node {
    runtime: cairn_scheduler::Runtime,
}

impl Node {
    /// Configures a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Stops every process and joins every thread (also done on drop).
    pub fn shutdown(&self) {
        self.runtime.shutdown();
    }
}

impl std::ops::Deref for Node {
    type Target = cairn_scheduler::Handle;
    fn deref(&self) -> &Self::Target {
        &self.runtime
    }
}

/// Installs a `tracing` subscriber for binaries and examples, filtered by `RUST_LOG`
/// (default `info`). Does nothing if one is already installed.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
