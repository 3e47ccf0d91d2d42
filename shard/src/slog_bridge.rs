//! raft-rs logs through `slog`; Cairn logs through `tracing`. [`logger`] returns a slog
//! `Logger` whose records become `tracing` events (target `raft`), with the record's
//! key-values rendered into one `kv` field. Debug/trace records are dropped before
//! formatting unless `tracing` wants them, so the hot path pays one level check.

use std::fmt::Write as _;

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// Forwards slog records to `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

struct KvText(String);

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push_str(", ");
        }
        let _ = write!(self.0, "{key}={val}");
        Ok(())
    }
}

fn wanted(level: Level) -> bool {
    match level {
        Level::Critical | Level::Error => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        Level::Info | Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = record.level();
        if !wanted(level) {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        let kv = kv.0;
        match level {
            Level::Critical | Level::Error => tracing::error!(target: "raft", %kv, "{msg}"),
            Level::Warning => tracing::warn!(target: "raft", %kv, "{msg}"),
            // raft-rs logs every election and conf change at info; that is debug for us.
            Level::Info => tracing::debug!(target: "raft", %kv, "{msg}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "raft", %kv, "{msg}"),
        }
        Ok(())
    }
}

/// A slog logger for raft-rs that forwards to `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
