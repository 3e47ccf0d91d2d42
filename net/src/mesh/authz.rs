//! Authorization: what an authenticated peer may do on this node, by its role and by the
//! process it addresses. Membership (a certificate from the cluster CA) lets a peer in;
//! this module decides what it may do once in.
//!
//! # Rules (each a named test below)
//!
//! * **System processes refuse remote exit signals and links.** A local process registered
//!   under a name starting with [`SYSTEM_PREFIX`] (`cairn.`: the alarm process, the object
//!   routers, the status processes) is part of the node: no other node may kill it, or
//!   link to it (a link is an exit signal waiting to happen). System processes never link
//!   to remote processes themselves, so no legitimate exit signal is lost.
//! * **A client reaches only published processes.** A peer with a client certificate
//!   ([`Role::Client`]) may send to a name registered on this node, or to a pid that is
//!   registered under a name; any other pid is refused.
//! * **A client does not signal processes.** Exit signals and links from a client are
//!   refused (monitors, unlinks, demonitors and its own processes' `Down`s pass: they
//!   change nothing of the target).
//! * **A client takes no part in membership or names.** SWIM packets, control
//!   connections, membership syncs and name claims from a client are refused, so a client
//!   never becomes a member, never owns an object (placement runs over members only) and
//!   never registers a cluster name.
//! * **A member claims names for its own processes only.** The name claims a joining node
//!   sends with its sync request are taken for its own pids only (`inbound`).
//!
//! * **A region in the certificate is the only one a node may claim.** Its SWIM identity
//!   must carry it ([`region_allowed`]; checked in `membership`, refused packets counted as
//!   refused membership updates), and `Mesh::start` refuses another `region`.
//!
//! A refused message that was a call is answered with
//! [`RemoteFailure::Unauthorized`](super::wire::RemoteFailure::Unauthorized) (the caller
//! sees `CallError::Unroutable`); every refusal is logged and counted in
//! [`MeshStats::unauthorized`](super::MeshStats::unauthorized). The checks are pure: the
//! caller passes the peer's role and a lookup of local registered names.

use cairn_scheduler::Pid;

use super::wire::{Target, Wire};
use crate::tls::{Role, Serial};

/// What a peer's certificate says of it, read once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCert {
    /// A client if its certificate or its (certified) name says so.
    pub(crate) role: Role,
    /// `None` without a certificate (insecure dev mode only).
    pub(crate) serial: Option<Serial>,
    /// The region its certificate names, if any.
    pub(crate) region: Option<String>,
}

impl PeerCert {
    /// Of the peer of `conn`, which introduced itself as `name` (already checked against
    /// the certificate by the hello rules).
    pub(crate) fn of(conn: &crate::endpoint::Connection, name: &str) -> PeerCert {
        let cert = crate::tls::peer_identity(conn.quinn());
        let role = match &cert {
            Some(c) if c.role == Role::Client => Role::Client,
            _ => Role::of_name(name),
        };
        PeerCert {
            role,
            serial: cert.as_ref().map(|c| c.serial.clone()),
            region: cert.and_then(|c| c.region),
        }
    }
}

/// Names of system processes start with this.
pub const SYSTEM_PREFIX: &str = "cairn.";

/// Whether `name` is a system process's name.
pub fn is_system_name(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

/// The system processes a client serves through: the object routers
/// (`cairn.objects.{class}`), status (`cairn.status`, `cairn.cluster-status`) and HTTP
/// forwarding (`cairn.http`). The names are the `cairn` crate's (its tests check they pass
/// here); every other system process — shard replication, alarms — is for members only.
const CLIENT_FACING: [&str; 3] = ["cairn.status", "cairn.cluster-status", "cairn.http"];

/// Prefix of the object routers' names (see [`CLIENT_FACING`]).
const OBJECT_ROUTERS: &str = "cairn.objects.";

/// Whether a client may send to the process registered as `name`: any application name,
/// and of the system processes only those clients are served through.
pub fn client_may_reach(name: &str) -> bool {
    !is_system_name(name) || name.starts_with(OBJECT_ROUTERS) || CLIENT_FACING.contains(&name)
}

/// Why a peer's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    #[error("a client may only send to published (registered) processes, not {0:?}")]
    Unpublished(Pid),
    #[error("system process {0:?} takes messages from members only, not from a client")]
    MembersOnly(String),
    #[error("system process {0:?} refuses remote exit signals and links")]
    SystemProcess(String),
    #[error("a client may not send exit signals or links")]
    ClientSignal,
    #[error("a client takes no part in membership or cluster names")]
    ClientMembership,
    #[error("a node may claim names for its own processes only")]
    OthersNames,
}

/// Whether a peer in `role` may send a message to `to` on this node (`name_of`: the name
/// a local pid is registered under).
pub(crate) fn check_send(
    role: Role,
    to: &Target,
    name_of: impl FnOnce(Pid) -> Option<String>,
) -> Result<(), Denied> {
    let name = match (role, to) {
        (Role::Node, _) => return Ok(()),
        (Role::Client, Target::Name(name)) => name.clone(),
        (Role::Client, Target::Pid(pid)) => name_of(*pid).ok_or(Denied::Unpublished(*pid))?,
    };
    if client_may_reach(&name) {
        Ok(())
    } else {
        Err(Denied::MembersOnly(name))
    }
}

/// Whether a peer in `role` may apply the signal `frame` to a local process.
pub(crate) fn check_signal(
    role: Role,
    frame: &Wire,
    name_of: impl FnOnce(Pid) -> Option<String>,
) -> Result<(), Denied> {
    let to = match frame {
        Wire::Exit { to, .. } | Wire::Link { to, .. } => *to,
        // Monitors, unlinks, demonitors and downs change nothing of the target.
        _ => return Ok(()),
    };
    if role == Role::Client {
        return Err(Denied::ClientSignal);
    }
    match name_of(to) {
        Some(name) if is_system_name(&name) => Err(Denied::SystemProcess(name)),
        _ => Ok(()),
    }
}

/// Whether a peer whose certificate names `certified` (if any) may go by the region
/// `claimed` in membership: a certified region is the only one it may claim.
pub(crate) fn region_allowed(certified: Option<&str>, claimed: Option<&str>) -> bool {
    match certified {
        None => true,
        Some(region) => claimed == Some(region),
    }
}

/// Whether a peer in `role` may speak SWIM, open a control connection, or exchange
/// membership syncs and name claims.
pub(crate) fn check_membership(role: Role) -> Result<(), Denied> {
    match role {
        Role::Node => Ok(()),
        Role::Client => Err(Denied::ClientMembership),
    }
}

#[cfg(test)]
mod tests {
    use cairn_scheduler::{ExitReason, NodeId};

    use super::*;

    fn pid(n: u64) -> Pid {
        Pid::from_parts(NodeId(1), 0, n)
    }

    /// Pid 1 is `cairn.alarms`, pid 2 is `greeter`, pid 3 has no name.
    fn name_of(p: Pid) -> Option<String> {
        match p.id() {
            1 => Some("cairn.alarms".into()),
            2 => Some("greeter".into()),
            _ => None,
        }
    }

    fn kill(to: Pid, link: bool) -> Wire {
        Wire::Exit {
            to,
            from: Pid::from_parts(NodeId(9), 0, 1),
            reason: ExitReason::Kill,
            link,
        }
    }

    #[test]
    fn system_processes_refuse_remote_exit_signals_and_links() {
        for frame in [
            kill(pid(1), false),
            kill(pid(1), true),
            Wire::Link {
                to: pid(1),
                from: Pid::from_parts(NodeId(9), 0, 1),
            },
        ] {
            assert_eq!(
                check_signal(Role::Node, &frame, name_of),
                Err(Denied::SystemProcess("cairn.alarms".into()))
            );
        }
        // Other processes are a member's to signal.
        assert_eq!(
            check_signal(Role::Node, &kill(pid(2), false), name_of),
            Ok(())
        );
        assert_eq!(
            check_signal(Role::Node, &kill(pid(3), false), name_of),
            Ok(())
        );
        // Watching a system process is fine.
        let monitor = Wire::Monitor {
            target: pid(1),
            watcher: Pid::from_parts(NodeId(9), 0, 1),
            monitor: 7,
        };
        assert_eq!(check_signal(Role::Node, &monitor, name_of), Ok(()));
    }

    #[test]
    fn a_client_signals_no_process_but_may_watch() {
        for to in [pid(1), pid(2), pid(3)] {
            assert_eq!(
                check_signal(Role::Client, &kill(to, false), name_of),
                Err(Denied::ClientSignal)
            );
            let link = Wire::Link {
                to,
                from: Pid::from_parts(NodeId(9), 0, 1),
            };
            assert_eq!(
                check_signal(Role::Client, &link, name_of),
                Err(Denied::ClientSignal)
            );
        }
        let monitor = Wire::Monitor {
            target: pid(2),
            watcher: Pid::from_parts(NodeId(9), 0, 1),
            monitor: 7,
        };
        assert_eq!(check_signal(Role::Client, &monitor, name_of), Ok(()));
    }

    #[test]
    fn a_client_reaches_only_published_processes() {
        let by_name = Target::Name("greeter".into());
        assert_eq!(check_send(Role::Client, &by_name, name_of), Ok(()));
        assert_eq!(
            check_send(Role::Client, &Target::Pid(pid(2)), name_of),
            Ok(())
        );
        assert_eq!(
            check_send(Role::Client, &Target::Pid(pid(3)), name_of),
            Err(Denied::Unpublished(pid(3)))
        );
        // A member reaches anything.
        assert_eq!(
            check_send(Role::Node, &Target::Pid(pid(3)), name_of),
            Ok(())
        );
        assert_eq!(
            check_send(Role::Node, &Target::Name("cairn.shards".into()), name_of),
            Ok(())
        );
    }

    #[test]
    fn a_client_reaches_the_system_processes_that_serve_clients_only() {
        for name in ["cairn.shards", "cairn.alarms", "cairn.anything-new"] {
            assert_eq!(
                check_send(Role::Client, &Target::Name(name.into()), name_of),
                Err(Denied::MembersOnly(name.into()))
            );
        }
        // By pid too: pid 1 is registered as `cairn.alarms`.
        assert_eq!(
            check_send(Role::Client, &Target::Pid(pid(1)), name_of),
            Err(Denied::MembersOnly("cairn.alarms".into()))
        );
        for name in [
            "cairn.objects.Counter",
            "cairn.status",
            "cairn.cluster-status",
            "cairn.http",
        ] {
            assert_eq!(
                check_send(Role::Client, &Target::Name(name.into()), name_of),
                Ok(())
            );
        }
    }

    #[test]
    fn a_client_takes_no_part_in_membership() {
        assert_eq!(check_membership(Role::Node), Ok(()));
        assert_eq!(
            check_membership(Role::Client),
            Err(Denied::ClientMembership)
        );
        assert!(is_system_name("cairn.objects.Counter"));
    }

    #[test]
    fn a_certified_region_is_the_only_one_a_peer_may_claim() {
        assert!(region_allowed(Some("eu"), Some("eu")));
        assert!(!region_allowed(Some("eu"), Some("us")));
        assert!(!region_allowed(Some("eu"), None));
        // A certificate without a region leaves the label to the node.
        assert!(region_allowed(None, Some("us")));
        assert!(region_allowed(None, None));
        assert!(!is_system_name("cairnish"));
    }
}
