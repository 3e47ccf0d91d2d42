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
//! | `cairn_storage_commit_seconds` | histogram | LMDB commit latency (flushes included) |
//! | `cairn_storage_map_used_bytes` / `cairn_storage_map_size_bytes` | gauge | map use against map size |
//! | `cairn_objects_active{class}` | gauge | live activations |
//! | `cairn_object_activations_total{class}` | counter | activations |
//! | `cairn_object_evictions_total{class}` | counter | evictions |
//! | `cairn_object_handler_failures_total{class}` | counter | failed handler calls |
//! | `cairn_object_handler_seconds{class}` | histogram | handler time |
//! | `cairn_object_gate_hold_seconds{class}` | histogram | output held behind its commit |
//! | `cairn_alarms_due` | gauge | stored alarms found due by the alarm process's last scan |
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
//! | `cairn_mesh_delivered_total`, `cairn_mesh_dead_letters_total`, `cairn_mesh_bad_messages_total`, `cairn_mesh_protocol_errors_total`, `cairn_mesh_refused_handshakes_total` | counter | mesh traffic and refusals |

use std::sync::{Arc, Weak};

use cairn_scheduler::{ExitKind, Handle};
use cairn_storage::latency::{bucket_bound_us, HistogramSnapshot, BUCKETS};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// Writes descriptors and values through a `DescriptorEncoder`.
struct Out<'a>(DescriptorEncoder<'a>);

type Fmt = Result<(), std::fmt::Error>;

impl Out<'_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> Fmt {
        let metric = ConstCounter::new(value);
        metric.encode(
            self.0
                .encode_descriptor(name, help, None, metric.metric_type())?,
        )
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> Fmt {
        let metric = ConstGauge::new(value);
        metric.encode(
            self.0
                .encode_descriptor(name, help, None, metric.metric_type())?,
        )
    }

    /// One family with a single label, one sample per `(label value, value)`.
    fn labelled<'v, V: 'v>(
        &mut self,
        (name, help, kind): (&str, &str, MetricType),
        label: &str,
        samples: impl IntoIterator<Item = (&'v str, V)>,
        mut encode: impl FnMut(MetricEncoder<'_>, V) -> Fmt,
    ) -> Fmt {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for (value_of_label, value) in samples {
            let labels = [(label, value_of_label)];
            encode(family.encode_family(&labels)?, value)?;
        }
        Ok(())
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> Fmt {
        let family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        encode_histogram(family, h)
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

fn gauge_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut out = Out(encoder);
        let s = self.handle.stats();
        out.gauge("cairn_processes", "Live processes", gauge_of(s.processes))?;
        out.gauge(
            "cairn_run_queue_depth",
            "Processes queued to run",
            gauge_of(s.run_queue),
        )?;
        out.gauge(
            "cairn_scheduler_workers",
            "Scheduler worker threads",
            gauge_of(s.workers),
        )?;
        out.counter("cairn_scheduler_polls", "Process turns run", s.polls)?;
        out.counter(
            "cairn_scheduler_steals",
            "Tasks taken by searching workers",
            s.steals,
        )?;
        out.counter(
            "cairn_scheduler_parks",
            "Times a worker found no work and slept",
            s.parks,
        )?;
        out.counter("cairn_process_spawns", "Processes spawned", s.spawns)?;
        out.labelled(
            (
                "cairn_process_exits",
                "Processes exited, by reason",
                MetricType::Counter,
            ),
            "reason",
            ExitKind::ALL.iter().map(|k| (k.as_str(), s.exits_of(*k))),
            |mut e, v| {
                e.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
            },
        )?;
        out.counter(
            "cairn_mailbox_full_refusals",
            "Local try_sends answered Full",
            s.full_refusals,
        )?;
        if let Some(rss) = resident_memory_bytes() {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the OS process (all its nodes)",
                i64::try_from(rss).unwrap_or(i64::MAX),
            )?;
        }
        out.counter(
            "cairn_mailbox_dead_letters",
            "Messages dropped undelivered by closed mailboxes (whole OS process)",
            cairn_mailbox_dead_letters(),
        )?;

        let Some(objects) = self.objects.upgrade() else {
            return Ok(());
        };
        out.gauge(
            "cairn_alarms_due",
            "Stored alarms found due by the alarm process's last scan",
            i64::try_from(
                objects
                    .alarms_due
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .unwrap_or(i64::MAX),
        )?;
        let st = objects.store().stats();
        out.counter(
            "cairn_storage_commits",
            "LMDB commits (one fdatasync each)",
            st.commits,
        )?;
        out.counter(
            "cairn_storage_write_sets",
            "Write sets committed",
            st.write_sets,
        )?;
        out.counter(
            "cairn_storage_failed_write_sets",
            "Write sets whose commit failed",
            st.failed_write_sets,
        )?;
        out.histogram(
            "cairn_storage_commit_seconds",
            "LMDB commit latency, flushes included",
            &st.commit_latency,
        )?;
        out.gauge(
            "cairn_storage_map_used_bytes",
            "Bytes of the LMDB map in use (high-water mark)",
            i64::try_from(st.map_used).unwrap_or(i64::MAX),
        )?;
        out.gauge(
            "cairn_storage_map_size_bytes",
            "LMDB map size",
            i64::try_from(st.map_size).unwrap_or(i64::MAX),
        )?;

        let classes = objects.class_stats();
        let per_class =
            |f: fn(&ObjectClassStats) -> u64| classes.iter().map(move |(c, s)| (c.as_str(), f(s)));
        let counter = |mut e: MetricEncoder<'_>, v: u64| {
            e.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
        };
        out.labelled(
            (
                "cairn_objects_active",
                "Live object activations",
                MetricType::Gauge,
            ),
            "class",
            per_class(|s| s.active as u64),
            |mut e, v| e.encode_gauge(&v),
        )?;
        type Field = fn(&ObjectClassStats) -> u64;
        let fields: [(&str, &str, Field); 6] = [
            ("cairn_object_activations", "Object activations", |s| {
                s.activations
            }),
            ("cairn_object_evictions", "Object evictions", |s| {
                s.evictions
            }),
            (
                "cairn_object_handler_failures",
                "Failed object handler calls",
                |s| s.handler_failures,
            ),
            ("cairn_alarms_fired", "Alarms delivered", |s| s.alarms_fired),
            ("cairn_alarms_retried", "Failed alarms set again", |s| {
                s.alarms_retried
            }),
            (
                "cairn_alarms_given_up",
                "Alarms dropped after the last retry",
                |s| s.alarms_given_up,
            ),
        ];
        for (name, help, f) in fields {
            out.labelled(
                (name, help, MetricType::Counter),
                "class",
                per_class(f),
                counter,
            )?;
        }
        out.labelled(
            (
                "cairn_object_handler_seconds",
                "Object handler time",
                MetricType::Histogram,
            ),
            "class",
            classes.iter().map(|(c, s)| (c.as_str(), &s.handler_time)),
            encode_histogram,
        )?;
        out.labelled(
            (
                "cairn_object_gate_hold_seconds",
                "Output held behind its commit",
                MetricType::Histogram,
            ),
            "class",
            classes.iter().map(|(c, s)| (c.as_str(), &s.gate_hold)),
            encode_histogram,
        )?;

        #[cfg(feature = "mesh")]
        if let Some(mesh) = cairn_net::Mesh::from_handle(&self.handle) {
            let ms = mesh.stats();
            let members = mesh.members();
            let me = mesh.node();
            let connected = members
                .iter()
                .filter(|m| m.node != me && mesh.is_connected(m.node))
                .count();
            out.gauge(
                "cairn_mesh_members",
                "Live members, this node included",
                gauge_of(members.len()),
            )?;
            out.gauge(
                "cairn_mesh_connected_peers",
                "Members with a data connection up",
                gauge_of(connected),
            )?;
            encode_links(&mut out, &mesh, &members)?;
            out.counter(
                "cairn_mesh_delivered",
                "Messages received and delivered",
                ms.delivered,
            )?;
            out.counter(
                "cairn_mesh_dead_letters",
                "Messages for a dead pid or unknown name",
                ms.dead_letters,
            )?;
            out.counter(
                "cairn_mesh_bad_messages",
                "Messages with an unknown tag or undecodable payload",
                ms.bad_messages,
            )?;
            out.counter(
                "cairn_mesh_protocol_errors",
                "Connections closed for an invalid frame",
                ms.protocol_errors,
            )?;
            out.counter(
                "cairn_mesh_refused_handshakes",
                "Incoming connections refused as duplicates",
                ms.duplicates_refused,
            )?;
        }
        #[cfg(feature = "mesh")]
        if let Some((sh, _)) = objects.shard_stats() {
            encode_shards(&mut out, &sh)?;
        }
        Ok(())
    }
}

/// Members by state and the per-peer link families (labelled by the peer's node name:
/// members are bounded, so the label is too).
#[cfg(feature = "mesh")]
fn encode_links(out: &mut Out<'_>, mesh: &cairn_net::Mesh, members: &[cairn_net::Member]) -> Fmt {
    let states = mesh.member_states();
    out.labelled(
        (
            "cairn_mesh_members_by_state",
            "Other members by SWIM state",
            MetricType::Gauge,
        ),
        "state",
        [
            ("alive", states.alive),
            ("suspect", states.suspect),
            ("down", states.down),
        ],
        |mut e, v| e.encode_gauge(&(i64::try_from(v).unwrap_or(i64::MAX))),
    )?;
    let links = mesh.links();
    let names: Vec<(String, cairn_net::mesh::LinkStats)> = links
        .into_iter()
        .map(|l| {
            let name = members
                .iter()
                .find(|m| m.node == l.node)
                .map_or_else(|| l.node.to_string(), |m| m.name.clone());
            (name, l)
        })
        .collect();
    let per_peer = |f: fn(&cairn_net::mesh::LinkStats) -> u64| {
        names.iter().map(move |(n, l)| (n.as_str(), f(l)))
    };
    out.labelled(
        (
            "cairn_mesh_rtt_seconds",
            "QUIC smoothed round-trip time to each connected peer",
            MetricType::Gauge,
        ),
        "peer",
        names.iter().map(|(n, l)| (n.as_str(), l.rtt.as_secs_f64())),
        |mut e, v| e.encode_gauge(&v),
    )?;
    type Field = fn(&cairn_net::mesh::LinkStats) -> u64;
    let fields: [(&str, &str, Field); 4] = [
        (
            "cairn_mesh_sent_bytes",
            "UDP bytes sent to each peer on its connection",
            |l| l.bytes_sent,
        ),
        (
            "cairn_mesh_received_bytes",
            "UDP bytes received from each peer on its connection",
            |l| l.bytes_received,
        ),
        (
            "cairn_mesh_sent_frames",
            "Mesh frames queued to each peer on its connection",
            |l| l.frames_sent,
        ),
        (
            "cairn_mesh_received_frames",
            "Mesh frames read from each peer on its connection",
            |l| l.frames_received,
        ),
    ];
    for (name, help, f) in fields {
        out.labelled(
            (name, help, MetricType::Counter),
            "peer",
            per_peer(f),
            |mut e, v| {
                e.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
            },
        )?;
    }
    Ok(())
}

/// The `cairn_shard_*` families of a node running a shard driver.
#[cfg(feature = "mesh")]
fn encode_shards(out: &mut Out<'_>, sh: &cairn_shard::stats::ShardStatsSnapshot) -> Fmt {
    out.gauge(
        "cairn_shard_led",
        "Shards this node leads",
        gauge_of(sh.led),
    )?;
    out.gauge(
        "cairn_shard_followed",
        "Shards this node hosts without leading them",
        gauge_of(sh.followed),
    )?;
    out.counter(
        "cairn_shard_commits",
        "Write sets committed through shards this node leads",
        sh.commits,
    )?;
    out.counter(
        "cairn_shard_failed_proposals",
        "Write sets refused, not committed, or of unknown fate",
        sh.failed_proposals,
    )?;
    out.histogram(
        "cairn_shard_commit_seconds",
        "Shard commit latency: proposal to committed on a majority and applied here",
        &sh.commit_latency,
    )?;
    out.gauge(
        "cairn_shard_follower_lag_entries",
        "Entries the furthest-behind follower of a shard led here lacks",
        i64::try_from(sh.follower_lag).unwrap_or(i64::MAX),
    )?;
    out.counter(
        "cairn_shard_leader_changes",
        "Times this node saw a hosted shard's leader change",
        sh.leader_changes,
    )
}

/// The OS process's resident set (`VmRSS` in `/proc/self/status`); `None` off Linux.
pub(crate) fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cairn_mailbox_dead_letters() -> u64 {
    cairn_scheduler::dead_letters()
}
