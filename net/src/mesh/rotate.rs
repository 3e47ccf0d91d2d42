//! Certificate rotation without a restart: [`Mesh::reload_tls`] swaps this node's own
//! certificate and key, and the CA certificate it trusts, while the mesh runs.
//!
//! Invariants:
//! * **New connections only.** The endpoint's server configuration (quinn's
//!   `Endpoint::set_server_config`) and its client configuration (taken per `connect`) are
//!   replaced; connections already made keep the certificate they were made with and keep
//!   working until they close (a peer that revokes the old serial closes them itself).
//! * **Same identity.** The new certificate must allow this node's name and, if it names
//!   a region, this node's region: an identity change is a new node, not a rotation. A
//!   refused certificate changes nothing.
//! * **The transport limits stay** (`limits::transport`): the new configurations get the
//!   same transport configuration as at start.
//! * A dial-only client has no server configuration and gets none.

use std::sync::Arc;

use super::{limits, Mesh, MeshError};
use crate::endpoint::EndpointOptions;
use crate::tls::{Serial, TlsConfig};

impl Mesh {
    /// Uses `tls` (this node's rotated certificate and key, and the CA certificate to trust)
    /// for every connection made from now on; returns the new certificate's serial. See
    /// the module doc: existing connections are kept, and a certificate for another name or
    /// region is refused ([`MeshError::Config`]) without changing anything.
    pub fn reload_tls(&self, tls: &TlsConfig) -> Result<Serial, MeshError> {
        let inner = &self.inner;
        let identity = tls
            .node()
            .identity()
            .ok_or_else(|| MeshError::Config("the new certificate does not parse".to_owned()))?;
        if !identity.allows(&inner.name) {
            return Err(MeshError::Config(format!(
                "the new certificate is not for {:?} (it names {:?}); a rotation keeps the node's name",
                inner.name, identity.names
            )));
        }
        if let Some(certified) = &identity.region {
            if inner.config.region.as_deref() != Some(certified.as_str()) {
                return Err(MeshError::Config(format!(
                    "the new certificate is for region {certified:?}, but this node runs in {:?}",
                    inner.config.region
                )));
            }
        }
        let idle = quinn::IdleTimeout::try_from(inner.config.idle_timeout).map_err(|_| {
            MeshError::Config(format!("idle timeout {:?}", inner.config.idle_timeout))
        })?;
        let transport = Arc::new(limits::transport(idle, inner.config.keep_alive));
        let mut options = EndpointOptions::from_tls(tls)?;
        options.client.transport_config(Arc::clone(&transport));
        let server = if inner.config.dial_only {
            None
        } else {
            options.server.map(|mut server| {
                server.transport_config(transport);
                server
            })
        };
        inner.endpoint.set_configs(server, options.client);
        let serial = identity.serial;
        *inner.serial.lock() = Some(serial.clone());
        tracing::info!(node = %inner.node, %serial, "TLS certificate reloaded; new connections use it");
        Ok(serial)
    }

    /// The serial of the certificate this node presents to new connections (`None` if it
    /// does not parse).
    pub fn certificate_serial(&self) -> Option<Serial> {
        self.inner.serial.lock().clone()
    }
}
