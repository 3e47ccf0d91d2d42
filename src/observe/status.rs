//! `GET /cairn/status.json`: one node's state for scripts and the dashboard.
//!
//! ```text
//! {
//!   "node": "0x…", "name": "n1", "region": "eu" | null, "listen": "127.0.0.1:7400" | null,
//!   "client": false, "time_ms": 1733450000000, "rss_bytes": 12345678 | null,
//!   "scheduler": { "workers", "processes", "run_queue", "polls", "steals", "parks",
//!                  "spawns", "full_refusals", "exits": { "normal": n, … } },
//!   "storage": { "commits", "write_sets", "failed_write_sets", "map_used", "map_size",
//!                "commit_count", "commit_sum_us", "fsync_count", "fsync_sum_us" },
//!   "objects": { "<class>": { "active", "activations", "evictions", "handler_failures",
//!                "alarms_fired", "alarms_retried", "alarms_given_up",
//!                "handler_count", "handler_sum_us" } },
//!   "mesh": null | { "members": [ { "node", "name", "addr", "region", "incarnation",
//!                    "incarnation_exact": "…", "self": bool, "connected": bool,
//!                    "state": "up" | "down", "links": ["0x…"] | null,
//!                    "rtt_ms", "bytes_sent", "bytes_received", "frames_sent",
//!                    "frames_received" (each null without a data connection) } ],
//!                    "delivered", "dead_letters" },
//!   "shards": null | { "count", "replication", "led", "followed", "commits",
//!                      "failed_proposals", "commit_count", "commit_sum_us",
//!                      "leader_changes", "follower_lag",
//!                      "map": [ { "shard": 0, "role": "leader" | "follower" | "candidate"
//!                                 | "learner", "term", "leader": "0x…" | null,
//!                                 "voters": ["0x…"], "learners": ["0x…"], "lag" } ] },
//!   "hot_objects": [ { "class", "key", "region": "eu" | null, "rate", "messages" } ],
//!   "supervisors": [ <supervisor> ], "supervisors_shown", "supervisors_total"
//! }
//! <supervisor> = { "pid": "<0.12.0>", "name": "…" | null, "busy": bool,
//!                  "strategy": "one_for_one" | "one_for_all" | "rest_for_one", "dynamic",
//!                  "max_restarts", "period_ms", "restarts", "children_total",
//!                  "children": [ { "id", "pid": "<…>" | null, "name": "…" | null,
//!                                  "kind": "worker" | "supervisor",
//!                                  "restart": "permanent" | "transient" | "temporary",
//!                                  "restarts", "supervisor": <supervisor> | null } ] }
//! ```
//!
//! `hot_objects` are the (at most [`HOT_SHOWN`]) objects handling the most messages on this
//! node lately, hottest first: `rate` is messages per second averaged over about the last
//! 10 s, `messages` those counted since the object entered the table. It is sampled (an
//! activation reports every 64th handler call), so an object with fewer calls may be
//! missing. Keys appear here, never in metric labels.
//!
//! `supervisors` are this node's supervision trees: each root (a supervisor no other
//! supervisor started), its children in start order, and under each running supervisor
//! child its own tree. `restarts` counts restarts since the supervisor started. A supervisor
//! that does not answer within [`DESCRIBE_TIMEOUT`] (busy restarting) shows `"busy": true`
//! and no children. Bounded: at most [`MAX_SUPERVISORS`] supervisors are described,
//! [`MAX_CHILDREN`] children listed per supervisor (`children_total` says how many it has),
//! and trees walked [`MAX_DEPTH`] levels deep (a root is level 1): a supervisor child below
//! that, or past the supervisor budget, is listed with `"supervisor": null`.
//!
//! `members` lists the live members (`up`), then nodes this node met that are no longer
//! members (`down`: failed, or left) — met itself (`Mesh::confirmed_peers`), never nodes
//! only named in another node's hello nor members only gossiped about. `incarnation` is a number of wall-clock nanoseconds,
//! beyond the integers a JavaScript number holds exactly (2^53): `incarnation_exact` is the
//! same number as a decimal string. `links` are the nodes a member has a data connection to
//! (the nodes it talks to), sorted, as the member itself says: this node asks each live
//! member (at most [`MAX_LINKED_MEMBERS`], all at once, each given [`LINKS_TIMEOUT`]);
//! `null` for a member that did not answer in time, and for a down one. Data connections
//! open on demand, so two members that never exchanged a message are not linked.
//!
//! `shards` is `null` without a shard driver (a node without a mesh, or a client); its `map`
//! lists the shards this node hosts, as its replica sees them (refreshed at least every
//! 250 ms), by shard id; `lag` is in entries, on leaders. Counters only grow; a reader
//! derives rates from two snapshots (`time_ms` apart), as the dashboard does. Fields may be
//! added; none is removed or renamed without a note in the README.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{json, Map, Value};

use cairn_scheduler::{ExitKind, Handle};
use cairn_supervisor::{ChildKind, Restart, Strategy, SupervisorRef};

use crate::object::Objects;
use crate::NodeInfo;

/// The status document of the node of `handle`.
pub(crate) fn status_json(handle: &Handle, objects: &Objects, info: &NodeInfo) -> Value {
    let node = crate::status_of(handle, objects, info);
    let s = handle.stats();
    let exits: Map<String, Value> = ExitKind::ALL
        .iter()
        .map(|k| (k.as_str().to_owned(), json!(s.exits_of(*k))))
        .collect();
    let st = objects.store().stats();
    let classes: Map<String, Value> = objects
        .class_stats()
        .into_iter()
        .map(|(class, c)| {
            let v = json!({
                "active": c.active,
                "activations": c.activations,
                "evictions": c.evictions,
                "handler_failures": c.handler_failures,
                "alarms_fired": c.alarms_fired,
                "alarms_retried": c.alarms_retried,
                "alarms_given_up": c.alarms_given_up,
                "handler_count": c.handler_time.count(),
                "handler_sum_us": c.handler_time.sum_us,
            });
            (class, v)
        })
        .collect();
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "node": node.node.to_string(),
        "name": node.name,
        "region": node.region,
        "listen": node.listen.map(|a| a.to_string()),
        "client": node.client,
        "time_ms": time_ms,
        "scheduler": {
            "workers": s.workers,
            "processes": s.processes,
            "run_queue": s.run_queue,
            "polls": s.polls,
            "steals": s.steals,
            "parks": s.parks,
            "spawns": s.spawns,
            "full_refusals": s.full_refusals,
            "exits": exits,
        },
        "storage": {
            "commits": st.commits,
            "write_sets": st.write_sets,
            "failed_write_sets": st.failed_write_sets,
            "map_used": st.map_used,
            "map_size": st.map_size,
            "commit_count": st.commit_latency.count(),
            "commit_sum_us": st.commit_latency.sum_us,
            "fsync_count": st.fsync_latency.count(),
            "fsync_sum_us": st.fsync_latency.sum_us,
        },
        "rss_bytes": crate::metrics::resident_memory_bytes(),
        "objects": classes,
        "mesh": mesh_json(handle),
        "shards": shards_json(objects),
        "hot_objects": hot_json(objects),
    })
}

/// Hottest objects listed.
pub const HOT_SHOWN: usize = 20;
/// Supervisors described in one status document, at most.
pub const MAX_SUPERVISORS: usize = 64;
/// Children listed per supervisor, at most.
pub const MAX_CHILDREN: usize = 100;
/// Levels of a supervision tree described, at most (a root is level 1).
pub const MAX_DEPTH: usize = 8;
/// How long a supervisor is given to describe itself.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long each member is given to list its links (the page polls every second).
pub const LINKS_TIMEOUT: Duration = Duration::from_millis(250);
/// Members asked for their links in one status document, at most (the first by node id).
pub const MAX_LINKED_MEMBERS: usize = 64;

fn hot_json(objects: &Objects) -> Value {
    let hot: Vec<Value> = objects
        .hot_objects(HOT_SHOWN)
        .into_iter()
        .map(|h| {
            json!({
                "class": h.class,
                "key": &*h.key,
                "region": h.region.as_deref(),
                "rate": h.rate,
                "messages": h.messages,
            })
        })
        .collect();
    Value::Array(hot)
}

/// The `supervisors`, `supervisors_shown` and `supervisors_total` fields (see the module
/// doc), added to `status`.
pub(crate) async fn add_supervision(handle: &Handle, status: &mut Value) {
    let total = cairn_supervisor::running(handle).len();
    let mut budget = MAX_SUPERVISORS;
    let mut trees = Vec::new();
    for root in cairn_supervisor::roots(handle) {
        if budget == 0 {
            break;
        }
        trees.push(describe(handle, root, &mut budget, 1).await);
    }
    status["supervisors"] = Value::Array(trees);
    status["supervisors_shown"] = json!(MAX_SUPERVISORS - budget);
    status["supervisors_total"] = json!(total);
}

/// One supervisor (at level `depth`) and, within `budget` and [`MAX_DEPTH`], the trees of
/// its supervisor children.
fn describe<'a>(
    handle: &'a Handle,
    sup: SupervisorRef,
    budget: &'a mut usize,
    depth: usize,
) -> Pin<Box<dyn Future<Output = Value> + Send + 'a>> {
    Box::pin(async move {
        *budget = budget.saturating_sub(1);
        let pid = sup.pid();
        let mut out = json!({
            "pid": pid.to_string(),
            "name": handle.name_of(pid),
        });
        let Ok(info) = sup.describe(DESCRIBE_TIMEOUT).await else {
            out["busy"] = json!(true);
            out["children"] = json!([]);
            return out;
        };
        let mut children = Vec::new();
        for c in info.children.iter().take(MAX_CHILDREN) {
            let sub = match &c.supervisor {
                Some(s) if *budget > 0 && depth < MAX_DEPTH => {
                    describe(handle, s.clone(), budget, depth + 1).await
                }
                _ => Value::Null,
            };
            children.push(json!({
                "id": c.id,
                "pid": c.pid.map(|p| p.to_string()),
                "name": c.name,
                "kind": match c.kind {
                    ChildKind::Worker => "worker",
                    ChildKind::Supervisor => "supervisor",
                },
                "restart": match c.restart {
                    Restart::Permanent => "permanent",
                    Restart::Transient => "transient",
                    Restart::Temporary => "temporary",
                },
                "restarts": c.restarts,
                "supervisor": sub,
            }));
        }
        out["busy"] = json!(false);
        out["strategy"] = json!(match info.strategy {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        });
        out["dynamic"] = json!(info.dynamic);
        out["max_restarts"] = json!(info.max_restarts);
        out["period_ms"] = json!(info.period.as_millis() as u64);
        out["restarts"] = json!(info.restarts);
        out["children_total"] = json!(info.children.len());
        out["children"] = Value::Array(children);
        out
    })
}

/// The `links` of each member in `status["mesh"]["members"]` (see the module doc): this
/// node's own, and those of the live members that answer within [`LINKS_TIMEOUT`].
#[cfg(feature = "mesh")]
pub(crate) async fn add_links(handle: &Handle, status: &mut Value) {
    use cairn_scheduler::NodeId;

    let Some(mesh) = cairn_net::Mesh::from_handle(handle) else {
        return;
    };
    let me = mesh.node();
    fn ids(nodes: &[NodeId]) -> Value {
        Value::Array(nodes.iter().map(|n| json!(n.to_string())).collect())
    }
    // (node, its links or null), from each live member but this node.
    let asks: Vec<BoxedFuture<(String, Value)>> = mesh
        .members()
        .into_iter()
        .map(|m| m.node)
        .filter(|&node| node != me)
        .take(MAX_LINKED_MEMBERS)
        .map(|node| {
            let to = handle.named_ref::<crate::StatusRequest>(crate::STATUS_PROCESS, node);
            let ask: BoxedFuture<_> = Box::pin(async move {
                let answer = to.call(crate::StatusRequest, LINKS_TIMEOUT).await;
                (
                    node.to_string(),
                    answer.map_or(Value::Null, |s| ids(&s.links)),
                )
            });
            ask
        })
        .collect();
    let mut links = join_all(asks).await;
    let own: Vec<NodeId> = mesh.links().into_iter().map(|l| l.node).collect();
    links.push((me.to_string(), ids(&own)));
    let Some(members) = status["mesh"]["members"].as_array_mut() else {
        return;
    };
    for member in members {
        let of = links
            .iter()
            .find(|(node, _)| member["node"] == node.as_str())
            .map_or(Value::Null, |(_, l)| l.clone());
        member["links"] = of;
    }
}

#[cfg(not(feature = "mesh"))]
pub(crate) async fn add_links(_handle: &Handle, _status: &mut Value) {}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `futures` together; their outputs in completion order.
async fn join_all<T>(mut futures: Vec<BoxedFuture<T>>) -> Vec<T> {
    let mut done = Vec::with_capacity(futures.len());
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < futures.len() {
            if let std::task::Poll::Ready(out) = futures[i].as_mut().poll(cx) {
                done.push(out);
                drop(futures.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done
}

#[cfg(feature = "mesh")]
fn shards_json(objects: &Objects) -> Value {
    let Some((sh, cfg)) = objects.shard_stats() else {
        return Value::Null;
    };
    let ids = |nodes: &[cairn_scheduler::NodeId]| -> Vec<String> {
        nodes.iter().map(ToString::to_string).collect()
    };
    let map: Vec<Value> = sh
        .shards
        .iter()
        .map(|v| {
            json!({
                "shard": v.shard.0,
                "role": v.role.as_str(),
                "term": v.term,
                "leader": v.leader.map(|n| n.to_string()),
                "voters": ids(&v.voters),
                "learners": ids(&v.learners),
                "lag": v.lag,
            })
        })
        .collect();
    json!({
        "count": cfg.shards,
        "replication": cfg.replication,
        "led": sh.led,
        "followed": sh.followed,
        "commits": sh.commits,
        "failed_proposals": sh.failed_proposals,
        "commit_count": sh.commit_latency.count(),
        "commit_sum_us": sh.commit_latency.sum_us,
        "leader_changes": sh.leader_changes,
        "follower_lag": sh.follower_lag,
        "map": map,
    })
}

#[cfg(not(feature = "mesh"))]
fn shards_json(_objects: &Objects) -> Value {
    Value::Null
}

#[cfg(feature = "mesh")]
fn mesh_json(handle: &Handle) -> Value {
    let Some(mesh) = cairn_net::Mesh::from_handle(handle) else {
        return Value::Null;
    };
    let me = mesh.node();
    let live = mesh.members();
    let links = mesh.links();
    let mut members: Vec<Value> = live
        .iter()
        .map(|m| {
            let link = links.iter().find(|l| l.node == m.node);
            json!({
                "rtt_ms": link.map(|l| l.rtt.as_secs_f64() * 1e3),
                "bytes_sent": link.map(|l| l.bytes_sent),
                "bytes_received": link.map(|l| l.bytes_received),
                "frames_sent": link.map(|l| l.frames_sent),
                "frames_received": link.map(|l| l.frames_received),
                "node": m.node.to_string(),
                "name": m.name,
                "addr": m.addr.to_string(),
                "region": m.region,
                "incarnation": m.incarnation,
                "incarnation_exact": m.incarnation.to_string(),
                "self": m.node == me,
                "connected": m.node == me || mesh.is_connected(m.node),
                "state": "up",
            })
        })
        .collect();
    // Nodes this node met before that are no longer members: down (or left). Only those it
    // confirmed itself: a node speaks for itself, not for the nodes other nodes name in
    // their hellos (any member may name made-up ones, up to `cairn_net`'s bound of 16,384).
    for peer in mesh.confirmed_peers() {
        if live.iter().any(|m| m.node == peer.node) || crate::object::is_client(&peer.name) {
            continue;
        }
        members.push(json!({
            "node": peer.node.to_string(),
            "name": peer.name,
            "addr": peer.addr.to_string(),
            "region": null,
            "incarnation": null,
            "incarnation_exact": null,
            "self": false,
            "connected": false,
            "state": "down",
            "links": null,
            "rtt_ms": null,
            "bytes_sent": null,
            "bytes_received": null,
            "frames_sent": null,
            "frames_received": null,
        }));
    }
    let ms = mesh.stats();
    json!({
        "members": members,
        "delivered": ms.delivered,
        "dead_letters": ms.dead_letters,
    })
}

#[cfg(not(feature = "mesh"))]
fn mesh_json(_handle: &Handle) -> Value {
    Value::Null
}
