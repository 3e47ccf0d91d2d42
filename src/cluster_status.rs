//! The cluster's status in one call: every meshed node runs [`CLUSTER_STATUS_PROCESS`],
//! which lists the members it sees and asks each for its [`NodeStatus`] (the
//! `cairn.status` process). A dial-only client — which sees no membership — asks its
//! gateway's; this is what `cairn-node status` prints.
//!
//! A member that does not answer within the per-member timeout is listed with the reason,
//! so one hung node neither hides the others nor stalls the answer for long.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_net::Mesh;
use cairn_scheduler::{CallError, Ctx, Message, NodeId, Reply, SpawnOptions};
use serde::{Deserialize, Serialize};

use crate::{Node, NodeStatus, StatusRequest, STATUS_PROCESS};

/// The registered name (local on every node) of the process answering
/// [`Node::cluster_status`].
pub const CLUSTER_STATUS_PROCESS: &str = "cairn.cluster-status";

/// The mesh tag of [`ClusterStatusRequest`].
const TAG: &str = "cairn.ClusterStatusRequest";

/// Every member as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The node that answered.
    pub via: NodeId,
    /// The live members it sees, sorted by node id.
    pub members: Vec<MemberStatus>,
}

/// One member of a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its node id.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Its advertised address, as gossiped.
    pub addr: SocketAddr,
    /// Its region label.
    pub region: Option<String>,
    /// Its own answer, or why there is none.
    pub status: Result<NodeStatus, String>,
}

/// A request to [`CLUSTER_STATUS_PROCESS`]: the answer, and how long to wait for each
/// member.
#[derive(Serialize, Deserialize)]
struct ClusterStatusRequest {
    reply: Reply<ClusterStatus>,
    per_member_ms: u64,
}

/// Declares the request type and, on a member, starts [`CLUSTER_STATUS_PROCESS`].
pub(crate) fn start(mesh: &Mesh) {
    if let Err(error) = mesh.declare::<ClusterStatusRequest>(TAG) {
        tracing::error!(%error, "cannot declare the cluster status request type");
        return;
    }
    if mesh.is_dial_only() {
        // Clients ask their gateway's.
        return;
    }
    let weak_mesh = mesh.clone();
    let spawned = mesh.handle().spawn_opts(
        SpawnOptions {
            name: Some(CLUSTER_STATUS_PROCESS.to_owned()),
            local_name: true,
            ..SpawnOptions::default()
        },
        move |mut ctx: Ctx<ClusterStatusRequest>| async move {
            let mesh = weak_mesh;
            while let Some(msg) = ctx.recv().await {
                let Message::User(request) = msg else {
                    continue;
                };
                // Bounded: a hostile request cannot pin this process for long.
                let per_member = Duration::from_millis(request.per_member_ms.clamp(1, 10_000));
                let answer = gather(&ctx, &mesh, per_member).await;
                if request.reply.send(answer).is_err() {
                    tracing::debug!(
                        "could not answer a cluster status request (the caller is gone)"
                    );
                }
            }
        },
    );
    if let Err(error) = spawned {
        tracing::error!(?error, "cannot start the cluster status process");
    }
}

async fn gather<M: Send + 'static>(
    ctx: &Ctx<M>,
    mesh: &Mesh,
    per_member: Duration,
) -> ClusterStatus {
    let mut members = Vec::new();
    for member in mesh.members() {
        let status = ctx
            .handle()
            .named_ref::<StatusRequest>(STATUS_PROCESS, member.node)
            .call(StatusRequest, per_member)
            .await
            .map_err(|e| e.to_string());
        members.push(MemberStatus {
            node: member.node,
            name: member.name,
            addr: member.addr,
            region: member.region,
            status,
        });
    }
    ClusterStatus {
        via: mesh.node(),
        members,
    }
}

impl Node {
    /// Every member of the mesh and its status, as seen by this node — or, on a dial-only
    /// client, by its gateway. Each member gets `per_member` to answer; this call waits at
    /// most `timeout` for the whole answer (and again at most `timeout` for a client's
    /// gateway).
    pub async fn cluster_status(
        &self,
        per_member: Duration,
        timeout: Duration,
    ) -> Result<ClusterStatus, CallError> {
        let Some(mesh) = self.mesh() else {
            return Err(CallError::NoConnection);
        };
        let via = if mesh.is_dial_only() {
            mesh.wait_gateway(timeout)
                .await
                .map_err(|_| CallError::NoConnection)?
        } else {
            mesh.node()
        };
        let per_member_ms = u64::try_from(per_member.as_millis()).unwrap_or(u64::MAX);
        self.handle()
            .named_ref::<ClusterStatusRequest>(CLUSTER_STATUS_PROCESS, via)
            .call(
                |reply| ClusterStatusRequest {
                    reply,
                    per_member_ms,
                },
                timeout,
            )
            .await
    }
}
