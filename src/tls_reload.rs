//! A node's own certificate: checked when it is loaded, and reloaded while the node runs.
//!
//! What this module owns and keeps true:
//! * **A node starts only on a certificate valid now.** An expired or not-yet-valid one
//!   fails the start with [`TlsError::NotValidNow`] (peers would refuse it at every
//!   handshake anyway); so does a key that is not the certificate's
//!   ([`TlsError::KeyMismatch`]).
//! * **Expiry is announced.** A certificate that ends within [`CERT_EXPIRY_WARNING`] is
//!   logged as a warning when it is loaded, and again once a day while the node runs (the
//!   log line says `certificate expires`).
//! * **Rotation without a restart.** A node started from files
//!   ([`NodeBuilder::tls_files`](crate::NodeBuilder::tls_files)) watches them: every
//!   [`TLS_WATCH_INTERVAL`] it compares their size and modification time, and when one
//!   changed it re-reads all three (its certificate, its key and the CA certificate) and
//!   hands them to [`Mesh::reload_tls`]: new connections use them, existing ones go on.
//!   [`Node::reload_tls`](crate::Node::reload_tls) does the same at once (`cairn-node` on
//!   SIGHUP). A reload that fails (unreadable file, a key written before its certificate,
//!   another name, an expired certificate) changes nothing and is logged; the watcher
//!   tries again when the files change again.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use cairn_net::tls::Serial;
use cairn_net::{Mesh, NodeCert, TlsConfig, TlsError};
use cairn_scheduler::Ctx;
use parking_lot::Mutex;

use crate::NodeError;

/// A node's certificate ending within this long is logged as a warning: 14 days.
pub const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// How often a node started from certificate files looks at them for a change.
pub const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How often an expiring (or expired) certificate is logged again while the node runs.
const WARN_EVERY: Duration = Duration::from_secs(86_400);

/// A node's certificate files.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    /// The name the node runs under (the certificate must allow it).
    pub(crate) name: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

/// What is looked at to see a change: each file's size and modification time.
type Stamp = Vec<Option<(u64, Option<SystemTime>)>>;

impl TlsFiles {
    fn read(path: &PathBuf) -> Result<String, NodeError> {
        std::fs::read_to_string(path).map_err(|source| NodeError::TlsFile {
            path: path.clone(),
            source,
        })
    }

    /// Reads the three files: the CA certificate (PEM) and this node's certificate, checked
    /// (its key, its name, valid now).
    pub(crate) fn load(&self) -> Result<(String, NodeCert), NodeError> {
        let cert = NodeCert::from_pem(
            &self.name,
            &Self::read(&self.cert)?,
            &Self::read(&self.key)?,
        )?;
        // Peers refuse a hello under a name the certificate does not allow: say so now.
        let certified = cairn_net::CertIdentity::of_cert(cert.cert_der());
        if !certified.as_ref().is_some_and(|c| c.allows(&self.name)) {
            return Err(NodeError::Config(format!(
                "the certificate is not for node {:?} (it names {:?})",
                self.name,
                certified.map(|c| c.names)
            )));
        }
        check_validity(&cert)?;
        Ok((Self::read(&self.ca)?, cert))
    }

    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key, &self.ca]
            .into_iter()
            .map(|path| {
                std::fs::metadata(path)
                    .ok()
                    .map(|m| (m.len(), m.modified().ok()))
            })
            .collect()
    }
}

/// Fails if `cert` is not valid now; warns if it ends within [`CERT_EXPIRY_WARNING`].
pub(crate) fn check_validity(cert: &NodeCert) -> Result<(), TlsError> {
    let left = cert.valid_at(SystemTime::now())?;
    if left < CERT_EXPIRY_WARNING {
        warn_expiring(cert.name(), left);
    }
    Ok(())
}

fn warn_expiring(name: &str, left: Duration) {
    tracing::warn!(
        node = %name,
        days_left = left.as_secs() / 86_400,
        hours_left = left.as_secs() / 3_600,
        "this node's certificate expires soon: issue a new one (`cairn-node cert issue`) and put it in place; the node reloads it without a restart"
    );
}

/// Reloads a running node's certificate files (see the module doc).
pub(crate) struct Reloader {
    files: TlsFiles,
    insecure_dev: bool,
    mesh: Mesh,
    /// The files as last looked at.
    seen: Mutex<Stamp>,
    /// When the expiry was last logged.
    warned: Mutex<Option<Instant>>,
}

impl Reloader {
    /// A reloader for `mesh`'s certificate `files`, with its watcher process running.
    pub(crate) fn start(files: TlsFiles, insecure_dev: bool, mesh: &Mesh) -> Arc<Reloader> {
        let reloader = Arc::new(Reloader {
            seen: Mutex::new(files.stamp()),
            files,
            insecure_dev,
            mesh: mesh.clone(),
            warned: Mutex::new(Some(Instant::now())),
        });
        let watched = Arc::downgrade(&reloader);
        let handle = mesh.handle().clone();
        mesh.handle()
            .spawn(move |_ctx: Ctx<()>| async move { watch(watched, handle).await });
        reloader
    }

    /// Re-reads the files and hands them to the mesh; the new certificate's serial.
    pub(crate) fn reload(&self) -> Result<Serial, NodeError> {
        *self.seen.lock() = self.files.stamp();
        let (ca_pem, cert) = self.files.load()?;
        let tls = if self.insecure_dev {
            TlsConfig::insecure_dev(cert)
        } else {
            TlsConfig::from_pem(&ca_pem, cert)?
        };
        Ok(self.mesh.reload_tls(&tls)?)
    }

    /// One look at the files (reloading on a change) and at the expiry.
    fn tick(&self) {
        let stamp = self.files.stamp();
        if *self.seen.lock() != stamp {
            match self.reload() {
                Ok(serial) => {
                    tracing::info!(%serial, cert = %self.files.cert.display(), "certificate files changed; reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "certificate files changed but could not be used; the current certificate stays in use");
                }
            }
        }
        let mut warned = self.warned.lock();
        if warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        drop(warned);
        match self.files.load() {
            Ok(_) => {} // warned inside if it ends soon
            Err(NodeError::Tls(error @ TlsError::NotValidNow { .. })) => {
                tracing::error!(%error, "this node's certificate is no longer valid: peers refuse new connections from it");
            }
            Err(_) => {}
        }
    }
}

/// The watcher process: a look every [`TLS_WATCH_INTERVAL`] until the node is gone.
async fn watch(reloader: Weak<Reloader>, handle: cairn_scheduler::Handle) {
    loop {
        handle.sleep(TLS_WATCH_INTERVAL).await;
        let Some(reloader) = reloader.upgrade() else {
            return;
        };
        reloader.tick();
    }
}
