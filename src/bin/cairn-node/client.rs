//! `status` and `send` as dial-only clients: they connect from any local address to one
//! seed (the next one if it does not answer or goes away), are no mesh members and need no
//! data dir; `status` asks that node's `cairn.cluster-status` process.

use std::time::Duration;

use cairn::cluster_status::ClusterStatus;
use cairn::net::SeedAddr;
use cairn::placement::{self, Candidate};
use cairn::prelude::*;

use super::{with_tls, CliError, ClientArgs, CLIENT_TIMEOUT};

/// How long each member gets to answer a status request.
const PER_MEMBER: Duration = Duration::from_secs(3);

/// Starts a client node and waits for it to reach one of `args.join`.
pub(crate) fn client(args: &ClientArgs, what: &'static str) -> Result<Node, CliError> {
    // With its own certificate (`--cert`, from `cert issue --role client`) a client goes by
    // the name in it. Issuing itself one from a CA directory (`--cluster`) holds the CA's
    // key: allowed with --dev-ca, or for the one-node demo's own development CA.
    let name = match &args.tls.cert {
        Some(path) => cert_name(path)?,
        None if args.tls.may_use_ca_key() || args.tls.is_development_ca() => {
            format!("{what}-{}", std::process::id())
        }
        None => {
            return Err(CliError::ClientHoldsCaKey {
                dir: args.tls.cluster_dir(),
                what,
            })
        }
    };
    let builder = Node::builder()
        .name(&name)
        .client()
        .workers(2)
        .join_seeds(args.join.iter().cloned());
    let node = with_tls(builder, &args.tls).start()?;
    super::demo::host_all(&node);
    let mesh = node.mesh().expect("client nodes have a mesh").clone();
    node.block_on(mesh.wait_gateway(CLIENT_TIMEOUT))
        .map_err(|e| CliError::Join {
            seed: seeds(&args.join),
            reason: e.to_string(),
        })?;
    Ok(node)
}

/// The holder's name in the certificate at `path`.
fn cert_name(path: &std::path::Path) -> Result<String, CliError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?;
    cairn::net::tls::CertIdentity::of_pem(&pem)
        .and_then(|id| id.names.into_iter().next())
        .ok_or_else(|| CliError::Usage(format!("{} holds no named certificate", path.display())))
}

fn seeds(join: &[SeedAddr]) -> String {
    join.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The whole mesh's status, through the client's gateway.
pub(crate) fn cluster_status(node: &Node) -> Result<ClusterStatus, CliError> {
    node.block_on(node.cluster_status(PER_MEMBER, CLIENT_TIMEOUT))
        .map_err(|e| CliError::Status {
            node: node.mesh().and_then(|m| m.gateway()).unwrap_or_default(),
            reason: e.to_string(),
        })
}

/// `cairn-node status`.
pub(crate) fn status(args: &ClientArgs) -> Result<(), CliError> {
    let node = client(args, "status")?;
    let cluster = cluster_status(&node)?;
    node.shutdown();
    let mut unreachable = 0;
    for m in &cluster.members {
        match &m.status {
            Ok(s) => {
                let objects: usize = s.objects.values().sum();
                let classes: Vec<String> =
                    s.objects.iter().map(|(c, n)| format!("{c}={n}")).collect();
                let line = format!(
                    "member node={} name={} region={} listen={} processes={} objects={} {}",
                    s.node,
                    s.name,
                    s.region.as_deref().unwrap_or("-"),
                    s.listen.map_or("-".to_owned(), |a| a.to_string()),
                    s.processes,
                    objects,
                    classes.join(" ")
                );
                println!("{}", line.trim_end());
            }
            Err(reason) => {
                println!(
                    "member node={} name={} listen={} unreachable={reason:?}",
                    m.node, m.name, m.addr
                );
                unreachable += 1;
            }
        }
    }
    // A member that did not answer is listed as such: still a status, not a failure.
    println!(
        "members={} unreachable={} via={}",
        cluster.members.len(),
        unreachable,
        cluster.via
    );
    Ok(())
}

/// The node that owns `class`/`key` as the mesh sees it (a client computes no placement
/// itself; this asks for the membership and applies the same rule every node applies).
pub(crate) fn owner(
    node: &Node,
    class: &str,
    key: &str,
    region: Option<&str>,
) -> Result<NodeId, CliError> {
    let cluster = cluster_status(node)?;
    let candidates: Vec<Candidate> = cluster
        .members
        .iter()
        .filter(|m| !cairn::object::is_client(&m.name))
        .map(|m| Candidate::new(m.node, m.region.as_deref()))
        .collect();
    placement::owner(class, key, &candidates, region)
        .map_err(|e| CliError::Object(ObjectError::from(e)))
}
