//! Why processes stop, and the signals the runtime delivers on a process's system lane.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pid::{NodeId, Pid};

/// Why a process ended, or the reason carried by an exit signal.
///
/// Erlang's rules apply to exit signals (see [`crate::Handle::exit`]): `Normal` is ignored by a
/// process that does not trap exits, `Kill` cannot be trapped and ends the target with `Killed`,
/// every other reason ends a non-trapping target with the same reason.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// The process finished its work.
    Normal,
    /// The process was asked to stop (supervisor or runtime shutdown).
    Shutdown,
    /// The untrappable kill signal. A process never exits with it: it exits with `Killed`.
    Kill,
    /// The process was ended by a `Kill` signal.
    Killed,
    /// A handler panicked; carries the panic message.
    Panic(String),
    /// The process returned an error; carries its display text.
    Error(String),
    /// The node hosting the process became unreachable.
    NoConnection,
    /// The process did not exist (or had already exited) when linked or monitored.
    NoProc,
    /// The process lost a cluster-wide name registration race to another process (the
    /// mesh resolves concurrent registrations of one name to one deterministic winner).
    ///
    /// A runtime reason, not an application error: names belong to this crate's registry
    /// (`spawn_named`, `register`), which a mesh only extends across nodes, and the process
    /// that registered the name did nothing wrong. A supervisor or monitor tells "lost the
    /// name to another node" from a crash by matching this variant, not by parsing
    /// `Error`'s text.
    NameConflict(String),
}

impl ExitReason {
    /// `Normal` and `Shutdown` are orderly; every other reason is abnormal (OTP's view,
    /// used by `Transient` restarts).
    pub fn is_orderly(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panic(m) => write!(f, "panic: {m}"),
            ExitReason::Error(m) => write!(f, "error: {m}"),
            ExitReason::NoConnection => f.write_str("noconnection"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::NameConflict(name) => write!(f, "name conflict: {name}"),
        }
    }
}

/// What a process body's output turns into when the body returns.
pub trait IntoExitReason {
    /// The reason the process exits with.
    fn into_exit_reason(self) -> ExitReason;
}

impl IntoExitReason for () {
    fn into_exit_reason(self) -> ExitReason {
        ExitReason::Normal
    }
}

impl IntoExitReason for ExitReason {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

impl<E: fmt::Display> IntoExitReason for Result<(), E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(()) => ExitReason::Normal,
            Err(e) => ExitReason::Error(e.to_string()),
        }
    }
}

/// Identifies one monitor, returned by `monitor` and carried by its [`Signal::Down`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct MonitorRef(pub(crate) u64);

impl MonitorRef {
    /// The ref as a number (for the mesh's wire format).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// Rebuilds a ref from [`MonitorRef::to_raw`] (a made-up ref matches no monitor).
    pub fn from_raw(raw: u64) -> MonitorRef {
        MonitorRef(raw)
    }
}

/// A system signal, delivered on the unbounded system lane ahead of user messages.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum Signal {
    /// A linked process exited (or `exit` was called on us) while we trap exits.
    Exit {
        /// Who sent the signal.
        from: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A monitored process exited. Fires exactly once per monitor.
    Down {
        /// The monitor that fired.
        monitor: MonitorRef,
        /// The monitored process.
        pid: Pid,
        /// Its exit reason (`NoProc` if it was already gone).
        reason: ExitReason,
    },
    /// A node we were connected to is gone.
    NodeDown(NodeId),
}
