//! A node's Prometheus metrics: one `prometheus-client` [`Registry`] per node, encoded as
//! OpenMetrics text ([`Metrics::encode`]; served at `GET /metrics` by [`crate::observe`]).
//!
//! The runtime's own figures are not kept twice: the scheduler, the store, the objects and
//! the mesh each count in their own lock-free counters (per-worker blocks in the scheduler,
//! see `cairn_scheduler::SchedulerStats`), and one [`Collector`] reads their snapshots at
//! scrape time. Recording therefore costs the hot paths nothing beyond those counters, and
//! a scrape costs one snapshot of each. Labels are bounded: object metrics are per class,
//! never per key; exits are per reason kind.
//!
//! Each family is one row of a constant table (`Family`: name, help, and a plain `fn`
//! reading its value from one snapshot), so adding a family is adding a row.
//!
//! Other layers (and applications) add their own metrics with [`Metrics::register`].
//!
//! | family | type | what |
//! |---|---|---|
//! | `cairn_processes` | gauge | live processes |
//! | `cairn_run_queue_depth` | gauge | processes queued to run |
//! | `cairn_scheduler_workers` | gauge | worker threads |
//! | `cairn_scheduler_polls_total` | counter | process turns run |
//! | `cairn_scheduler_steals_total` | counter | tasks stolen by idle workers |
//! | `cairn_scheduler_parks_total` | counter | times a worker went to sleep |
//! | `cairn_process_spawns_total` | counter | processes spawned |
//! | `cairn_process_exits_total{reason}` | counter | processes exited, by reason kind |
//! | `cairn_mailbox_full_refusals_total` | counter | `try_send`s answered `Full` |
//! | `cairn_mailbox_dead_letters_total` | counter | messages dropped by closed mailboxes (OS process) |
//! | `cairn_storage_commits_total` | counter | LMDB commits (one `fdatasync` each) |
//! | `cairn_storage_write_sets_total` | counter | write sets committed |
//! | `cairn_storage_failed_write_sets_total` | counter | write sets whose commit failed |
//! | `cairn_storage_commit_seconds` | histogram | LMDB write transaction latency: its write sets applied, then flushed |
//! | `cairn_storage_fsync_seconds` | histogram | LMDB flush latency: each commit's page writes, `fdatasync` and meta-page write |
//! | `cairn_storage_map_used_bytes` / `cairn_storage_map_size_bytes` | gauge | map use against map size |
//! | `cairn_objects_active{class}` | gauge | live activations |
//! | `cairn_object_activations_total{class}` | counter | activations |
//! | `cairn_object_evictions_total{class}` | counter | evictions |
//! | `cairn_object_handler_failures_total{class}` | counter | failed handler calls |
//! | `cairn_object_write_sets_failed_total{class}` | counter | write sets whose commit failed or timed out (their handlers' output discarded) |
//! | `cairn_object_undeliverable_total{class}` | counter | messages this node took (a router, a deposed activation) and dropped: no owner reachable within `SHARD_WAIT` |
//! | `cairn_object_handler_seconds{class}` | histogram | handler time |
//! | `cairn_object_gate_hold_seconds{class}` | histogram | output held behind its commit |
//! | `cairn_alarms_due` | gauge | committed alarms due now, counted in storage at scrape time (one LMDB read over the alarm index, capped at `ALARMS_DUE_COUNT_LIMIT` = 100,000); not kept by the alarm process, whose figure lagged by up to a rescan (`ALARM_RESCAN`, 1 s), nor at each alarm commit, which alarms falling due by the clock alone would miss |
//! | `cairn_alarms_fired_total{class}` / `_retried_total` / `_given_up_total` | counter | alarms |
//! | `process_resident_memory_bytes` | gauge | resident memory of the OS process (Linux) |
//! | `cairn_mesh_members` | gauge | live members, this node included |
//! | `cairn_mesh_connected_peers` | gauge | peers with a data connection up |
//! | `cairn_mesh_members_by_state{state}` | gauge | other members as SWIM sees them: alive, suspect, down |
//! | `cairn_mesh_rtt_seconds{peer}` | gauge | QUIC's smoothed RTT to each connected peer (label: its node name) |
//! | `cairn_mesh_sent_bytes_total{peer}` / `cairn_mesh_received_bytes_total{peer}` | counter | UDP bytes of each peer's connection |
//! | `cairn_mesh_sent_frames_total{peer}` / `cairn_mesh_received_frames_total{peer}` | counter | mesh frames of each peer's connection |
//! | `cairn_shard_led` / `cairn_shard_followed` | gauge | shards this node leads / hosts without leading |
//! | `cairn_shard_commits_total` / `cairn_shard_failed_proposals_total` | counter | write sets committed through shards led here / not committed |
//! | `cairn_shard_commit_seconds` | histogram | shard commit latency (proposal to majority commit, applied here) |
//! | `cairn_shard_follower_lag_entries` | gauge | entries the furthest-behind follower of a led shard lacks |
//! | `cairn_shard_leader_changes_total` | counter | leader changes seen on hosted shards |
//! | `cairn_mesh_delivered_total`, `cairn_mesh_dead_letters_total`, `cairn_mesh_bad_messages_total`, `cairn_mesh_protocol_errors_total` | counter | mesh traffic and bad input |
//! | `cairn_mesh_refusals_total{what}` | counter | what peers tried that the mesh refused: `spoofed_swim_packet`, `membership_update`, `down_claim_downgraded`, `unrequested_sync`, `forged_reply`, `stream`, `control_connection`, `name_op`, `hello_peer`, `unmet_member`, `signal_overflow`, `unauthorized` |
//! | `cairn_mesh_refused_handshakes_total{reason}` | counter | incoming connections refused: `handshake` (QUIC/TLS handshake failed: another CA, no certificate), `duplicate` (another connection to that node is kept), `revoked` (revoked certificate), `busy` (too many connections waiting for their hello: 4 per certificate, 64 in all) |

use std::borrow::Borrow;
use std::sync::{Arc, Weak};

use cairn_scheduler::{ExitKind, Handle, SchedulerStats};
use cairn_storage::latency::{bucket_bound_us, HistogramSnapshot, BUCKETS};
use cairn_storage::Stats as StoreStats;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::object::{ObjectClassStats, Objects};

/// The node's registry. Cheap to share (`Arc`).
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry exporting the runtime's figures of `handle`'s node and its `objects`.
    pub(crate) fn new(handle: Handle, objects: &Arc<Objects>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector {
            handle,
            objects: Arc::downgrade(objects),
        }));
        Arc::new(Metrics {
            registry: Mutex::new(registry),
        })
    }

    /// Adds a metric of another layer or of the application (`name` without the `cairn_`
    /// prefix applications should add themselves; `prometheus-client` adds `_total` to
    /// counters).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// Every metric as OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        // Writing into a String cannot fail; a collector error would be a bug.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

/// Reads the runtime's counters at scrape time.
struct NodeCollector {
    handle: Handle,
    objects: Weak<Objects>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

/// How one family's single value is read from a snapshot `S` (a plain `fn`, so tables of
/// families are constants).
enum Read<S> {
    Counter(fn(&S) -> u64),
    Gauge(fn(&S) -> i64),
    // Only the mesh's per-peer RTT reads a float.
    #[cfg_attr(not(feature = "mesh"), allow(dead_code))]
    GaugeF64(fn(&S) -> f64),
    Histogram(fn(&S) -> &HistogramSnapshot),
}

/// One metric family: name, help, and how its value is read.
struct Family<S>(&'static str, &'static str, Read<S>);

impl<S> Read<S> {
    fn kind(&self) -> MetricType {
        match self {
            Read::Counter(_) => MetricType::Counter,
            Read::Gauge(_) | Read::GaugeF64(_) => MetricType::Gauge,
            Read::Histogram(_) => MetricType::Histogram,
        }
    }

    fn encode(&self, mut encoder: MetricEncoder<'_>, s: &S) -> Fmt {
        match self {
            Read::Counter(f) => encoder
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&f(s), None),
            Read::Gauge(f) => encoder.encode_gauge(&f(s)),
            Read::GaugeF64(f) => encoder.encode_gauge(&f(s)),
            Read::Histogram(f) => encode_histogram(encoder, f(s)),
        }
    }
}

/// Writes descriptors and values through a `DescriptorEncoder`.
struct Out<'a>(DescriptorEncoder<'a>);

type Fmt = Result<(), std::fmt::Error>;

impl Out<'_> {
    /// Families without labels, each one value read from `s`.
    fn families<S>(&mut self, s: &S, table: &[Family<S>]) -> Fmt {
        for Family(name, help, read) in table {
            let encoder = self.0.encode_descriptor(name, help, None, read.kind())?;
            read.encode(encoder, s)?;
        }
        Ok(())
    }

    /// Families with one label: each has one sample per row, `(label value, snapshot)`.
    fn labelled<S, R: Borrow<S>>(
        &mut self,
        label: &str,
        rows: &[(&str, R)],
        table: &[Family<S>],
    ) -> Fmt {
        for Family(name, help, read) in table {
            let mut family = self.0.encode_descriptor(name, help, None, read.kind())?;
            for (value_of_label, s) in rows {
                let s: &S = s.borrow();
                read.encode(family.encode_family(&[(label, *value_of_label)])?, s)?;
            }
        }
        Ok(())
    }
}

/// A microsecond histogram as a Prometheus histogram in seconds.
fn encode_histogram(mut encoder: MetricEncoder<'_>, h: &HistogramSnapshot) -> Fmt {
    let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
        .map(|i| {
            let bound = if i == BUCKETS {
                f64::INFINITY
            } else {
                bucket_bound_us(i) as f64 / 1e6
            };
            (bound, h.counts[i])
        })
        .collect();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_us as f64 / 1e6,
        h.count(),
        &buckets,
        None,
    )
}

/// A count as a gauge value (saturating).
fn gauge_of(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

const SCHEDULER: &[Family<SchedulerStats>] = &[
    Family(
        "cairn_processes",
        "Live processes",
        Read::Gauge(|s| gauge_of(s.processes)),
    ),
    Family(
        "cairn_run_queue_depth",
        "Processes queued to run",
        Read::Gauge(|s| gauge_of(s.run_queue)),
    ),
    Family(
        "cairn_scheduler_workers",
        "Scheduler worker threads",
        Read::Gauge(|s| gauge_of(s.workers)),
    ),
    Family(
        "cairn_scheduler_polls",
        "Process turns run",
        Read::Counter(|s| s.polls),
    ),
    Family(
        "cairn_scheduler_steals",
        "Tasks taken by searching workers",
        Read::Counter(|s| s.steals),
    ),
    Family(
        "cairn_scheduler_parks",
        "Times a worker found no work and slept",
        Read::Counter(|s| s.parks),
    ),
    Family(
        "cairn_process_spawns",
        "Processes spawned",
        Read::Counter(|s| s.spawns),
    ),
];

const EXITS: &[Family<u64>] = &[Family(
    "cairn_process_exits",
    "Processes exited, by reason",
    Read::Counter(|n| *n),
)];

const MAILBOX: &[Family<SchedulerStats>] = &[Family(
    "cairn_mailbox_full_refusals",
    "Local try_sends answered Full",
    Read::Counter(|s| s.full_refusals),
)];

const RESIDENT: &[Family<u64>] = &[Family(
    "process_resident_memory_bytes",
    "Resident memory of the OS process (all its nodes)",
    Read::Gauge(|rss| gauge_of(*rss)),
)];

const DEAD_LETTERS: &[Family<()>] = &[Family(
    "cairn_mailbox_dead_letters",
    "Messages dropped undelivered by closed mailboxes (whole OS process)",
    Read::Counter(|_| cairn_scheduler::dead_letters()),
)];

const ALARMS_DUE: &[Family<Objects>] = &[Family(
    "cairn_alarms_due",
    "Committed alarms due now, counted in storage at scrape time (capped at ALARMS_DUE_COUNT_LIMIT)",
    Read::Gauge(|o| gauge_of(o.alarms_due_now())),
)];

const STORAGE: &[Family<StoreStats>] = &[
    Family(
        "cairn_storage_commits",
        "LMDB commits (one fdatasync each)",
        Read::Counter(|s| s.commits),
    ),
    Family(
        "cairn_storage_write_sets",
        "Write sets committed",
        Read::Counter(|s| s.write_sets),
    ),
    Family(
        "cairn_storage_failed_write_sets",
        "Write sets whose commit failed",
        Read::Counter(|s| s.failed_write_sets),
    ),
    Family(
        "cairn_storage_commit_seconds",
        "LMDB write transaction latency: its write sets applied, then flushed",
        Read::Histogram(|s| &s.commit_latency),
    ),
    Family(
        "cairn_storage_fsync_seconds",
        "LMDB flush latency: a commit's page writes, fdatasync and synchronous meta-page write",
        Read::Histogram(|s| &s.fsync_latency),
    ),
    Family(
        "cairn_storage_map_used_bytes",
        "Bytes of the LMDB map in use (high-water mark)",
        Read::Gauge(|s| gauge_of(s.map_used)),
    ),
    Family(
        "cairn_storage_map_size_bytes",
        "LMDB map size",
        Read::Gauge(|s| gauge_of(s.map_size)),
    ),
];

/// Per class (label `class`).
const CLASSES: &[Family<ObjectClassStats>] = &[
    Family(
        "cairn_objects_active",
        "Live object activations",
        Read::Gauge(|s| gauge_of(s.active)),
    ),
    Family(
        "cairn_object_activations",
        "Object activations",
        Read::Counter(|s| s.activations),
    ),
    Family(
        "cairn_object_evictions",
        "Object evictions",
        Read::Counter(|s| s.evictions),
    ),
    Family(
        "cairn_object_handler_failures",
        "Failed object handler calls",
        Read::Counter(|s| s.handler_failures),
    ),
    Family(
        "cairn_object_write_sets_failed",
        "Object write sets whose commit failed or timed out (their held output discarded)",
        Read::Counter(|s| s.write_sets_failed),
    ),
    Family(
        "cairn_object_undeliverable",
        "Messages this node took for an object and dropped: no owner reachable in time",
        Read::Counter(|s| s.undeliverable),
    ),
    Family(
        "cairn_alarms_fired",
        "Alarms delivered",
        Read::Counter(|s| s.alarms_fired),
    ),
    Family(
        "cairn_alarms_retried",
        "Failed alarms set again",
        Read::Counter(|s| s.alarms_retried),
    ),
    Family(
        "cairn_alarms_given_up",
        "Alarms dropped after the last retry",
        Read::Counter(|s| s.alarms_given_up),
    ),
    Family(
        "cairn_object_handler_seconds",
        "Object handler time",
        Read::Histogram(|s| &s.handler_time),
    ),
    Family(
        "cairn_object_gate_hold_seconds",
        "Output held behind its commit",
        Read::Histogram(|s| &s.gate_hold),
    ),
];

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Out(encoder);
        let s = self.handle.stats();
        out.families(&s, SCHEDULER)?;
        let exits: Vec<(&str, u64)> = ExitKind::ALL
            .iter()
            .map(|k| (k.as_str(), s.exits_of(*k)))
            .collect();
        out.labelled("reason", &exits, EXITS)?;
        out.families(&s, MAILBOX)?;
        if let Some(rss) = resident_memory_bytes() {
            out.families(&rss, RESIDENT)?;
        }
        out.families(&(), DEAD_LETTERS)?;

        let Some(objects) = self.objects.upgrade() else {
            return Ok(());
        };
        out.families(&*objects, ALARMS_DUE)?;
        out.families(&objects.store().stats(), STORAGE)?;
        let classes = objects.class_stats();
        let rows: Vec<(&str, &ObjectClassStats)> =
            classes.iter().map(|(c, s)| (c.as_str(), s)).collect();
        out.labelled("class", &rows, CLASSES)?;

        #[cfg(feature = "mesh")]
        if let Some(mesh) = cairn_net::Mesh::from_handle(&self.handle) {
            encode_mesh(&mut out, &mesh)?;
        }
        #[cfg(feature = "mesh")]
        if let Some((sh, _)) = objects.shard_stats() {
            out.families(&sh, SHARDS)?;
        }
        Ok(())
    }
}

/// What the mesh families read, taken once per scrape.
#[cfg(feature = "mesh")]
struct MeshFigures {
    stats: cairn_net::MeshStats,
    members: usize,
    connected: usize,
}

#[cfg(feature = "mesh")]
const MESH_MEMBERS: &[Family<MeshFigures>] = &[
    Family(
        "cairn_mesh_members",
        "Live members, this node included",
        Read::Gauge(|m| gauge_of(m.members)),
    ),
    Family(
        "cairn_mesh_connected_peers",
        "Members with a data connection up",
        Read::Gauge(|m| gauge_of(m.connected)),
    ),
];

#[cfg(feature = "mesh")]
const MESH_BY_STATE: &[Family<u64>] = &[Family(
    "cairn_mesh_members_by_state",
    "Other members by SWIM state",
    Read::Gauge(|n| gauge_of(*n)),
)];

/// Per peer (label `peer`: the peer's node name; members are bounded, so the label is too).
#[cfg(feature = "mesh")]
const LINKS: &[Family<cairn_net::mesh::LinkStats>] = &[
    Family(
        "cairn_mesh_rtt_seconds",
        "QUIC smoothed round-trip time to each connected peer",
        Read::GaugeF64(|l| l.rtt.as_secs_f64()),
    ),
    Family(
        "cairn_mesh_sent_bytes",
        "UDP bytes sent to each peer on its connection",
        Read::Counter(|l| l.bytes_sent),
    ),
    Family(
        "cairn_mesh_received_bytes",
        "UDP bytes received from each peer on its connection",
        Read::Counter(|l| l.bytes_received),
    ),
    Family(
        "cairn_mesh_sent_frames",
        "Mesh frames queued to each peer on its connection",
        Read::Counter(|l| l.frames_sent),
    ),
    Family(
        "cairn_mesh_received_frames",
        "Mesh frames read from each peer on its connection",
        Read::Counter(|l| l.frames_received),
    ),
];

#[cfg(feature = "mesh")]
const MESH_TRAFFIC: &[Family<MeshFigures>] = &[
    Family(
        "cairn_mesh_delivered",
        "Messages received and delivered",
        Read::Counter(|m| m.stats.delivered),
    ),
    Family(
        "cairn_mesh_dead_letters",
        "Messages for a dead pid or unknown name",
        Read::Counter(|m| m.stats.dead_letters),
    ),
    Family(
        "cairn_mesh_bad_messages",
        "Messages with an unknown tag or undecodable payload",
        Read::Counter(|m| m.stats.bad_messages),
    ),
    Family(
        "cairn_mesh_protocol_errors",
        "Connections closed for an invalid frame",
        Read::Counter(|m| m.stats.protocol_errors),
    ),
    Family(
        "cairn_mesh_swim_epochs",
        "Times this node moved to its next SWIM epoch (its incarnation passed the mark: a sustained suspicion attack, docs/swim_incarnation.md)",
        Read::Counter(|m| m.stats.swim_epochs),
    ),
];

/// Refusals of incoming connections, by reason (label `reason`).
#[cfg(feature = "mesh")]
const MESH_REFUSED: &[Family<u64>] = &[Family(
    "cairn_mesh_refused_handshakes",
    "Incoming connections refused: QUIC/TLS handshake failed, duplicate, revoked certificate, too many waiting for their hello",
    Read::Counter(|n| *n),
)];

/// What one member tried that the mesh refused (label `what`; README "Security model").
#[cfg(feature = "mesh")]
const MESH_REFUSALS: &[Family<u64>] = &[Family(
    "cairn_mesh_refusals",
    "What peers tried that the mesh refused, by kind (see the README's security model)",
    Read::Counter(|n| *n),
)];

/// The mesh families: members, members by state, each peer's link, traffic, refusals.
#[cfg(feature = "mesh")]
fn encode_mesh(out: &mut Out<'_>, mesh: &cairn_net::Mesh) -> Fmt {
    let members = mesh.members();
    let me = mesh.node();
    let figures = MeshFigures {
        stats: mesh.stats(),
        members: members.len(),
        connected: members
            .iter()
            .filter(|m| m.node != me && mesh.is_connected(m.node))
            .count(),
    };
    out.families(&figures, MESH_MEMBERS)?;
    let states = mesh.member_states();
    let by_state = [
        ("alive", states.alive),
        ("suspect", states.suspect),
        ("down", states.down),
    ];
    out.labelled("state", &by_state, MESH_BY_STATE)?;
    let links: Vec<(String, cairn_net::mesh::LinkStats)> = mesh
        .links()
        .into_iter()
        .map(|l| {
            let name = members
                .iter()
                .find(|m| m.node == l.node)
                .map_or_else(|| l.node.to_string(), |m| m.name.clone());
            (name, l)
        })
        .collect();
    let rows: Vec<(&str, cairn_net::mesh::LinkStats)> =
        links.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    out.labelled("peer", &rows, LINKS)?;
    out.families(&figures, MESH_TRAFFIC)?;
    let refused = [
        ("handshake", figures.stats.failed_handshakes),
        ("duplicate", figures.stats.duplicates_refused),
        ("revoked", figures.stats.revoked_peers),
        ("busy", figures.stats.refused_pending_hellos),
    ];
    out.labelled("reason", &refused, MESH_REFUSED)?;
    let s = &figures.stats;
    let refusals = [
        ("spoofed_swim_packet", s.spoofed_swim_packets),
        ("membership_update", s.refused_membership_updates),
        ("down_claim_downgraded", s.downgraded_down_claims),
        ("unrequested_sync", s.unrequested_syncs),
        ("forged_reply", s.forged_replies),
        ("stream", s.refused_streams),
        ("control_connection", s.refused_control_connections),
        ("name_op", s.refused_name_ops),
        ("hello_peer", s.refused_hello_peers),
        ("unmet_member", s.refused_unmet_members),
        ("signal_overflow", s.signal_overflows),
        ("unauthorized", s.unauthorized),
    ];
    out.labelled("what", &refusals, MESH_REFUSALS)
}

/// The `cairn_shard_*` families of a node running a shard driver.
#[cfg(feature = "mesh")]
const SHARDS: &[Family<cairn_shard::stats::ShardStatsSnapshot>] = &[
    Family(
        "cairn_shard_led",
        "Shards this node leads",
        Read::Gauge(|s| gauge_of(s.led)),
    ),
    Family(
        "cairn_shard_followed",
        "Shards this node hosts without leading them",
        Read::Gauge(|s| gauge_of(s.followed)),
    ),
    Family(
        "cairn_shard_commits",
        "Write sets committed through shards this node leads",
        Read::Counter(|s| s.commits),
    ),
    Family(
        "cairn_shard_failed_proposals",
        "Write sets refused, not committed, or of unknown fate",
        Read::Counter(|s| s.failed_proposals),
    ),
    Family(
        "cairn_shard_commit_seconds",
        "Shard commit latency: proposal to committed on a majority and applied here",
        Read::Histogram(|s| &s.commit_latency),
    ),
    Family(
        "cairn_shard_follower_lag_entries",
        "Entries the furthest-behind follower of a shard led here lacks",
        Read::Gauge(|s| gauge_of(s.follower_lag)),
    ),
    Family(
        "cairn_shard_leader_changes",
        "Times this node saw a hosted shard's leader change",
        Read::Counter(|s| s.leader_changes),
    ),
];

/// The OS process's resident set (`VmRSS` in `/proc/self/status`); `None` off Linux.
pub(crate) fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
