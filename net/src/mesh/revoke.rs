//! Certificate revocation: the serials in the operator's revocation list
//! ([`MeshConfig::revoked`](super::MeshConfig::revoked)) are refused.
//!
//! The list is a text file, one serial a line in hex (as `cairn-node cert issue` and
//! `cairn-node cert serial` print it; `:` separators and `0x` are accepted), with blank
//! lines and `#` comments. This module owns the set of revoked serials (`Inner::revoked`, a
//! leaf lock) and keeps these invariants:
//!
//! * **Checked on arrival and at every hello**, on the accepting and the dialing side: a
//!   peer whose certificate serial is listed is closed before any frame of it is handled
//!   (an incoming connection before it takes a place among those waiting for a hello;
//!   counted in
//!   [`MeshStats::revoked_peers`](super::MeshStats::revoked_peers)). SWIM control
//!   connections are checked in both directions too (a dialed one carries no hello back),
//!   and every connection is checked again once installed, so a reload racing a hello
//!   cannot miss a connection that was not yet in the tables it closes.
//! * **Re-read while running**, every
//!   [`MeshConfig::revocation_reload`](super::MeshConfig::revocation_reload): after a reload
//!   that revokes a connected peer, its data and control connections are closed. A list that
//!   cannot be read or parsed leaves the previous one in force (logged); at start it is an
//!   error, so a node never runs without the list it was given.
//! * **Bounded**: a list has at most [`MAX_REVOKED`] serials.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::stats::Count;
use super::Inner;
use crate::endpoint::Connection;
use crate::tls::{peer_identity, Serial};

/// The most serials a revocation list may hold.
pub const MAX_REVOKED: usize = 1_000_000;

/// Why a revocation list could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The file could not be read.
    #[error("revocation list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a serial.
    #[error("revocation list {path}, line {line}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Its line number (from 1).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// More than [`MAX_REVOKED`] serials.
    #[error("revocation list {0}: more than {MAX_REVOKED} serials")]
    TooMany(PathBuf),
}

/// Reads the revocation list at `path`.
pub fn read_revocation_list(path: &Path) -> Result<HashSet<Serial>, RevocationError> {
    let text = std::fs::read_to_string(path).map_err(|source| RevocationError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut serials = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let serial = line.parse::<Serial>().map_err(|why| RevocationError::Bad {
            path: path.to_owned(),
            line: i + 1,
            why,
        })?;
        serials.insert(serial);
        if serials.len() > MAX_REVOKED {
            return Err(RevocationError::TooMany(path.to_owned()));
        }
    }
    Ok(serials)
}

impl Inner {
    /// Whether the certificate of `conn`'s peer is revoked; if so, closes `conn` and
    /// counts it.
    pub(super) fn refuse_revoked(&self, conn: &Connection) -> bool {
        let Some(serial) = peer_identity(conn.quinn()).map(|c| c.serial) else {
            return false;
        };
        if !self.revoked.read().contains(&serial) {
            return false;
        }
        tracing::warn!(remote = %conn.remote_address(), %serial, "refused a peer whose certificate is revoked");
        self.counters.bump(Count::RevokedPeer);
        conn.close(super::wire::CLOSE_PROTOCOL, b"certificate revoked");
        true
    }

    /// Re-reads the revocation list every `revocation_reload` and closes the
    /// connections of peers it revokes (see the module doc).
    pub(super) async fn reload_revocations(self: Arc<Self>, path: PathBuf) {
        loop {
            self.handle.sleep(self.config.revocation_reload).await;
            if self.is_closed() {
                return;
            }
            self.reload_revocation_list(&path);
        }
    }

    /// Re-reads the revocation list at `path` once; closes the connections of peers it
    /// revokes. A list that cannot be read leaves the previous one in force (logged).
    pub(super) fn reload_revocation_list(&self, path: &Path) {
        match read_revocation_list(path) {
            Ok(serials) => {
                let changed = *self.revoked.read() != serials;
                if changed {
                    tracing::info!(path = %path.display(), serials = serials.len(), "revocation list reloaded");
                    *self.revoked.write() = serials;
                    self.close_revoked();
                }
            }
            Err(error) => {
                tracing::error!(%error, "revocation list not reloaded; the previous one stays in force");
            }
        }
    }

    /// Closes every data and control connection whose peer is revoked now.
    fn close_revoked(&self) {
        // Every connection up, not only those to nodes this one can dial: a client is
        // never dialed, so it is not among them.
        let data: Vec<Connection> = self
            .conns
            .lock()
            .all_up()
            .iter()
            .map(|conn| conn.quic().clone())
            .collect();
        let controls = self.controls.lock().connections();
        for conn in data.iter().chain(&controls) {
            self.refuse_revoked(conn);
        }
    }
}

impl super::Mesh {
    /// Re-reads the revocation list ([`MeshConfig::revoked`](super::MeshConfig::revoked))
    /// now rather than at the next periodic reload (`cairn-node` does on SIGHUP); nothing
    /// without one.
    pub fn reload_revocations(&self) {
        if let Some(path) = &self.inner.config.revoked {
            self.inner.reload_revocation_list(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_holds_serials_comments_and_blank_lines_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        std::fs::write(&path, "# revoked 2026-12-06\n\n1f:A0 # node-3\n0x00ff\n").unwrap();
        let list = read_revocation_list(&path).unwrap();
        assert_eq!(
            list,
            [
                "1fa0".parse::<Serial>().unwrap(),
                Serial::from_bytes(&[0xff])
            ]
            .into_iter()
            .collect()
        );
        std::fs::write(&path, "1fa0\nnode-3\n").unwrap();
        assert!(matches!(
            read_revocation_list(&path),
            Err(RevocationError::Bad { line: 2, .. })
        ));
        assert!(matches!(
            read_revocation_list(&dir.path().join("missing")),
            Err(RevocationError::Io { .. })
        ));
    }
}
