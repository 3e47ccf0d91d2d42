//! # Cairn
//!
//! Durable-Objects-style actors on an Erlang/OTP-style runtime, self-hosted, in Rust.
//!
//! This facade wires the layers into a [`Node`] and re-exports what applications use through
//! [`prelude`]: the scheduler (processes, links, monitors, timers, registry), OTP-style
//! supervision, durable storage and objects, and — when the node is given a listen address —
//! the QUIC mesh (`cairn-net`) with object placement across nodes ([`placement`]).
//!
//! ## Local or meshed
//! Without [`NodeBuilder::listen`] a node is local, as in the example below. With it, the
//! node starts a [`Mesh`] on its runtime: it authenticates with mutual TLS
//! ([`NodeBuilder::cluster`], [`NodeBuilder::tls_files`], or [`NodeBuilder::insecure_dev`]
//! for experiments), contacts its seeds ([`NodeBuilder::join`]), runs the `cairn.status`
//! process ([`STATUS_PROCESS`]) and routes objects of classes hosted with
//! [`Node::host`] to their owner node. A node's [`NodeId`] is [`NodeId::of_name`] of its name,
//! so a restarted node is the same node; its data dir (locked while it runs) counts its
//! starts, and pids carry that `creation`, so pids of an earlier life stay dead.
//!
//! ```
//! use std::time::Duration;
//! use cairn::prelude::*;
//!
//! enum Greeter { Hello(String, Reply<String>) }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let node = Node::builder().workers(2).data_dir(dir.path()).start().unwrap();
//! node.spawn_named("greeter", |mut ctx: Ctx<Greeter>| async move {
//!     while let Some(Message::User(Greeter::Hello(name, reply))) = ctx.recv().await {
//!         let _ = reply.send(format!("hello, {name}"));
//!     }
//! }).unwrap();
//! let pid = node.whereis("greeter").unwrap();
//! let answer = node.block_on(node.call(pid, |r| Greeter::Hello("ada".into(), r), Duration::from_secs(1)));
//! assert_eq!(answer.unwrap(), "hello, ada");
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "mesh")]
use cairn_net::mesh::Seed;
#[cfg(feature = "mesh")]
use cairn_net::{ClusterCa, Mesh, MeshConfig, TlsConfig};
use cairn_scheduler::{
    ActorRef, CallError, Ctx, Handle, IntoExitReason, NodeId, Pid, Reply, SendError, SpawnError,
};
#[cfg(feature = "mesh")]
use cairn_scheduler::{Message, SpawnOptions};
use cairn_storage::{DataDir, Keyspace, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// The macros' output names `::cairn::…`; this makes those paths resolve inside this crate
// (its unit tests) as they do in applications.
extern crate self as cairn;

pub mod access;
#[cfg(feature = "mesh")]
mod client;
#[cfg(feature = "mesh")]
pub mod cluster_status;
pub mod durable;
pub mod metrics;
mod node_ext;
pub mod object;
#[cfg(feature = "http")]
pub mod observe;
pub mod placement;
pub mod rpc;
#[cfg(feature = "mesh")]
pub mod tls_reload;

pub use cairn_macros::{actor, object};

#[cfg(feature = "http")]
pub use cairn_gateway as gateway;
// The request and response types of `Object::fetch`, for applications.
#[cfg(feature = "mesh")]
pub use cairn_net as net;
pub use cairn_scheduler as scheduler;
#[cfg(feature = "mesh")]
pub use cairn_shard as shard;
#[cfg(feature = "mesh")]
pub use cairn_shard::ShardConfig;
pub use cairn_storage as storage;
pub use cairn_supervisor as supervisor;
#[cfg(feature = "mesh")]
use object::Cluster;
use object::{Object, ObjectRef, Objects, ObjectsConfig, CLIENT_NAME_SUFFIX};
#[cfg(feature = "http")]
pub use {bytes, http};

/// What applications import: `use cairn::prelude::*;`.
pub mod prelude {
    pub use crate::access::ObjectAccess;
    pub use crate::durable::{Durable, DurableError};
    #[cfg(feature = "http")]
    pub use crate::object::http::{SocketId, WebSockets, WsMessage};
    pub use crate::object::{Object, ObjectCtx, ObjectError, ObjectRef, ObjectSendError, Retry};
    pub use crate::placement::PlacementError;
    pub use crate::rpc::{Call, Cast, DEFAULT_CALL_TIMEOUT};
    pub use crate::{Node, NodeBuilder, NodeStatus};
    pub use cairn_scheduler::{
        ActorRef, CallError, Ctx, ExitReason, Handle, Message, MonitorRef, NodeId, Pid, Reply,
        SendError, Signal, SpawnError, SpawnOptions, TimerRef,
    };
    pub use cairn_storage::{Keyspace, ListOptions, StorageError};
    // What every example needs besides Cairn: serde's derives (for messages, answers and
    // stored values; the application still depends on serde for them to expand) and time.
    pub use cairn_supervisor::{
        Actor, ActorCtx, ActorError, Addr, Backoff, ChildRef, ChildSpec, DynamicSupervisor,
        Restart, Shutdown, StartError, StartOptions, Strategy, Supervisor, SupervisorRef,
        SupervisorSpec,
    };
    pub use serde::{Deserialize, Serialize};
    pub use std::time::{Duration, SystemTime};
}

/// Where a node keeps its data by default: `./data` (LMDB under `./data/storage`).
pub const DEFAULT_DATA_DIR: &str = "data";
/// A node's name unless [`NodeBuilder::name`] sets one.
pub const DEFAULT_NODE_NAME: &str = "cairn";
/// The registered name of the process every meshed node runs to answer [`Node::node_status`].
pub const STATUS_PROCESS: &str = "cairn.status";

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Threads could not be started.
    #[error("starting the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// [`NodeBuilder::temporary`]'s directory could not be created.
    #[error("creating a temporary data dir: {0}")]
    TempDir(std::io::Error),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Storage(#[from] cairn_storage::StorageError),
    /// The cluster CA or the node's certificate could not be loaded or issued.
    #[cfg(feature = "mesh")]
    #[error("TLS: {0}")]
    Tls(#[from] cairn_net::TlsError),
    /// A certificate file could not be read.
    #[cfg(feature = "mesh")]
    #[error("reading {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The mesh could not start (e.g. the listen address is taken).
    #[cfg(feature = "mesh")]
    #[error("starting the mesh: {0}")]
    Mesh(#[from] cairn_net::MeshError),
    /// The HTTP gateway could not start (e.g. its address is taken).
    #[cfg(feature = "http")]
    #[error("starting the HTTP gateway: {0}")]
    Http(#[from] cairn_gateway::GatewayError),
    /// The options do not make a node.
    #[error("bad node configuration: {0}")]
    Config(String),
}

/// Where a meshed node's certificate comes from.
#[cfg(feature = "mesh")]
#[derive(Clone, Debug)]
enum Credentials {
    /// None given: only [`NodeBuilder::insecure_dev`] may start a mesh then.
    None,
    /// A CA directory made by `cairn-node cluster init`: issue our own certificate.
    Cluster(PathBuf),
    /// PEM files.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
}

/// Mesh options of a [`NodeBuilder`].
#[derive(Clone, Debug)]
struct MeshOptions {
    name: String,
    #[cfg(feature = "mesh")]
    listen: Option<SocketAddr>,
    #[cfg(feature = "mesh")]
    advertise: Option<SocketAddr>,
    #[cfg(feature = "mesh")]
    seeds: Vec<Seed>,
    #[cfg(feature = "mesh")]
    credentials: Credentials,
    #[cfg(feature = "mesh")]
    insecure_dev: bool,
    region: Option<String>,
    client: bool,
    #[cfg(feature = "mesh")]
    failure_timeout: Option<Duration>,
    #[cfg(feature = "mesh")]
    revoked: Option<PathBuf>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            name: DEFAULT_NODE_NAME.to_owned(),
            #[cfg(feature = "mesh")]
            listen: None,
            #[cfg(feature = "mesh")]
            advertise: None,
            #[cfg(feature = "mesh")]
            seeds: Vec::new(),
            #[cfg(feature = "mesh")]
            credentials: Credentials::None,
            #[cfg(feature = "mesh")]
            insecure_dev: false,
            region: None,
            client: false,
            #[cfg(feature = "mesh")]
            failure_timeout: None,
            #[cfg(feature = "mesh")]
            revoked: None,
        }
    }
}

impl MeshOptions {
    /// The TLS name this node goes by (clients carry [`CLIENT_NAME_SUFFIX`]).
    fn tls_name(&self) -> String {
        if self.client && !object::is_client(&self.name) {
            format!("{}{CLIENT_NAME_SUFFIX}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// The certificate files, when the node was given files ([`NodeBuilder::tls_files`]).
    #[cfg(feature = "mesh")]
    fn tls_files(&self) -> Option<tls_reload::TlsFiles> {
        match &self.credentials {
            Credentials::Files { cert, key, ca } => Some(tls_reload::TlsFiles {
                name: self.tls_name(),
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }

    #[cfg(feature = "mesh")]
    fn tls(&self) -> Result<TlsConfig, NodeError> {
        let name = self.tls_name();
        let (ca_pem, cert) = match &self.credentials {
            Credentials::Cluster(dir) => {
                let ca = ClusterCa::load(dir)?;
                tracing::warn!(ca = %dir.display(), node = %name, "this node holds the cluster CA's private key and signs its own certificate; in production keep the CA offline (cairn-node ca init / cert issue) and start nodes with --cert/--key/--ca");
                (ca.cert_pem().to_owned(), ca.issue(&name)?)
            }
            Credentials::Files { .. } => self.tls_files().expect("credentials are files").load()?,
            Credentials::None if self.insecure_dev => {
                // Nobody checks it: a throwaway CA only gives the handshake a certificate.
                let ca = ClusterCa::generate()?;
                (ca.cert_pem().to_owned(), ca.issue(&name)?)
            }
            Credentials::None => {
                return Err(NodeError::Config(
                    "a mesh node needs cluster(dir), tls_files(..) or insecure_dev()".to_owned(),
                ))
            }
        };
        if self.insecure_dev {
            tracing::error!(
                node = %name,
                "INSECURE DEV MODE: this node accepts and dials peers WITHOUT verifying certificates; never use it outside a laptop"
            );
            return Ok(TlsConfig::insecure_dev(cert));
        }
        Ok(TlsConfig::from_pem(&ca_pem, cert)?)
    }
}

/// Configures a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    runtime: cairn_scheduler::Builder,
    data_dir: PathBuf,
    storage: cairn_storage::Config,
    objects: ObjectsConfig,
    mesh: MeshOptions,
    #[cfg(feature = "http")]
    http: object::http::HttpOptions,
    /// [`NodeBuilder::temporary`]: a fresh data dir, removed with the node.
    temporary: bool,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            runtime: cairn_scheduler::Builder::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            storage: cairn_storage::Config::default(),
            objects: ObjectsConfig::default(),
            mesh: MeshOptions::default(),
            #[cfg(feature = "http")]
            http: object::http::HttpOptions::default(),
            temporary: false,
        }
    }
}

impl NodeBuilder {
    /// Scheduler worker threads (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.runtime = self.runtime.workers(n);
        self
    }

    /// Default mailbox capacity of new processes.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.runtime = self.runtime.mailbox_capacity(n);
        self
    }

    /// How long shutdown waits for processes to stop before killing them.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.runtime = self.runtime.shutdown_grace(d);
        self
    }

    /// Where durable state lives (default `./data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self.temporary = false;
        self
    }

    /// LMDB settings (map size, readers, batch bounds).
    pub fn storage(mut self, config: cairn_storage::Config) -> Self {
        self.storage = config;
        self
    }

    /// Idle time after which an object is evicted from memory.
    pub fn object_idle_timeout(mut self, d: Duration) -> Self {
        self.objects.idle_timeout = d;
        self
    }

    /// Alarm retry policy: first delay `base`, doubling, at most `max_retries` retries.
    pub fn alarm_retries(mut self, base: Duration, max_retries: u32) -> Self {
        self.objects.alarm_retry_base = base;
        self.objects.alarm_max_retries = max_retries;
        self
    }

    /// The wall clock alarms are read against (default the system clock); tests pass a
    /// manual [`object::WallClock`] to move time without sleeping.
    #[cfg(feature = "testing")]
    pub fn wall_clock(mut self, clock: object::WallClock) -> Self {
        self.objects.clock = clock;
        self
    }

    /// The node's name (default [`DEFAULT_NODE_NAME`]): the name in its TLS certificate and
    /// what peers and `cairn-node status` show. The node's id is [`NodeId::of_name`] of it,
    /// so names must be unique in a mesh and the same across restarts (the data dir
    /// refuses a node of another name). Names must be valid DNS names (letters, digits,
    /// `-`, `.`).
    pub fn name(mut self, name: &str) -> Self {
        self.mesh.name = name.to_owned();
        self
    }

    #[cfg(feature = "mesh")]
    /// Joins a mesh, accepting connections on `addr` (port 0 picks a free port). Without
    /// it the node is local.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.mesh.listen = Some(addr);
        self
    }

    #[cfg(feature = "mesh")]
    /// Seeds to contact at start (retried with backoff until each answers once, so seeds
    /// may start later). A seed is dialed under [`cairn_net::SEED_SERVER_NAME`]: any node
    /// certificate of the cluster CA passes TLS, and the seed's hello must then match the
    /// name in it. When the seed's name is known, [`NodeBuilder::join_named`] checks it at
    /// the handshake already.
    pub fn join(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.mesh.seeds.extend(
            seeds
                .into_iter()
                .map(|addr| Seed::new(addr, cairn_net::SEED_SERVER_NAME)),
        );
        self
    }

    #[cfg(feature = "mesh")]
    /// Seeds by address or DNS name (`db-1.internal:7400`; a name is resolved again on
    /// every retry), dialed under [`cairn_net::SEED_SERVER_NAME`] as with
    /// [`NodeBuilder::join`].
    pub fn join_seeds(mut self, seeds: impl IntoIterator<Item = cairn_net::SeedAddr>) -> Self {
        self.mesh.seeds.extend(
            seeds
                .into_iter()
                .map(|addr| Seed::new(addr, cairn_net::SEED_SERVER_NAME)),
        );
        self
    }

    #[cfg(feature = "mesh")]
    /// The address other nodes reach this one at (default: the listen address, or on
    /// `0.0.0.0`/`[::]` the address this host routes to its seeds from); see
    /// `cairn_net::MeshConfig::advertise`.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.mesh.advertise = Some(addr);
        self
    }

    #[cfg(feature = "mesh")]
    /// A seed whose certificate names `tls_name`.
    pub fn join_named(mut self, addr: SocketAddr, tls_name: &str) -> Self {
        self.mesh.seeds.push(Seed::new(addr, tls_name));
        self
    }

    #[cfg(feature = "mesh")]
    /// Authenticates with the cluster CA in `dir` (made by `cairn-node cluster init`):
    /// the node issues itself a certificate signed by it at start. **Development and
    /// tests only**: the node then holds the CA's private key, so any one node could
    /// issue certificates for all (`cairn-node run` refuses it without `--dev-ca`). In
    /// production use [`NodeBuilder::tls_files`].
    pub fn cluster(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mesh.credentials = Credentials::Cluster(dir.into());
        self
    }

    #[cfg(feature = "mesh")]
    /// Authenticates with PEM files: this node's certificate and PKCS#8 key, and the CA
    /// certificate it trusts. The certificate must be valid now and the key its own; the
    /// node re-reads the files when they change ([`Node::reload_tls`], [`tls_reload`]).
    pub fn tls_files(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        self.mesh.credentials = Credentials::Files {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        };
        self
    }

    #[cfg(feature = "mesh")]
    /// **Development only**: peers are not verified, anyone who reaches the port gets in.
    /// Logged as an error at start and by the TLS layer.
    pub fn insecure_dev(mut self) -> Self {
        self.mesh.insecure_dev = true;
        self
    }

    #[cfg(feature = "mesh")]
    /// This node's region label (e.g. `eu`), for location hints ([`Node::object_in`]).
    pub fn region(mut self, region: &str) -> Self {
        self.mesh.region = Some(region.to_owned());
        self
    }

    #[cfg(feature = "mesh")]
    /// A dial-only client: it sends and calls through one node of the mesh (its gateway,
    /// the first of its seeds that answers, then the next one if that node goes away) but
    /// is no member, takes no connections, owns no objects and needs no data dir (its
    /// store is a scratch one, removed as soon as it is open). Its name gets
    /// [`CLIENT_NAME_SUFFIX`]. `cairn-node status` and `cairn-node send` run as clients;
    /// see `cairn_net::MeshConfig::dial_only`.
    pub fn client(mut self) -> Self {
        self.mesh.client = true;
        self
    }

    #[cfg(feature = "mesh")]
    /// How long a silent peer may stay silent before it is declared down (default 5 s, the
    /// mesh's `DEFAULT_FAILURE_TIMEOUT`).
    pub fn failure_timeout(mut self, d: Duration) -> Self {
        self.mesh.failure_timeout = Some(d);
        self
    }

    #[cfg(feature = "mesh")]
    /// Honours the operator's revocation list at `path` (revoked certificate serials, one
    /// a line): read at start, checked at every hello, re-read every 10 s (see
    /// `cairn_net::MeshConfig::revoked`).
    pub fn revoked(mut self, path: impl Into<PathBuf>) -> Self {
        self.mesh.revoked = Some(path.into());
        self
    }

    #[cfg(feature = "http")]
    /// Serves HTTP and WebSockets into objects on `addr` (port 0 picks a free port; off
    /// unless set): `/{class}/{key}/...` reaches [`Object::fetch`] on the object's owner.
    /// See [`Node::http_addr`].
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http.addr = Some(addr);
        self
    }

    #[cfg(feature = "http")]
    /// The HTTP gateway's limits (header and body sizes, timeouts, connections, sockets).
    pub fn http_config(mut self, config: cairn_gateway::GatewayConfig) -> Self {
        self.http.config = config;
        self
    }

    #[cfg(feature = "mesh")]
    /// The replicated shards' settings (shard count, replication factor, Raft timing); the
    /// same on every node of a cluster. Default: [`ShardConfig::default`].
    pub fn shards(mut self, config: ShardConfig) -> Self {
        self.objects.shards = config;
        self
    }

    /// Opens the store and starts the node's threads (and its mesh, with a listen address).
    pub fn start(mut self) -> Result<Node, NodeError> {
        let temp_dir = self
            .temporary
            .then(node_ext::TempDataDir::create)
            .transpose()?;
        if let Some(dir) = &temp_dir {
            self.data_dir = dir.path().to_owned();
        }
        // Certificates first: a bad cluster directory fails before anything runs.
        #[cfg(feature = "mesh")]
        let mut mesh_config = match (self.mesh.listen, self.mesh.client) {
            (_, true) => Some(client::mesh_config(&self.mesh.seeds, self.mesh.tls()?)),
            (Some(listen), false) => {
                let mut config = MeshConfig::new(listen, self.mesh.tls()?);
                config.advertise = self.mesh.advertise;
                config.seeds = self.mesh.seeds.clone();
                config.region = self.mesh.region.clone();
                if let Some(d) = self.mesh.failure_timeout {
                    config = config.failure_timeout(d);
                }
                Some(config)
            }
            (None, false) => None,
        };
        #[cfg(feature = "mesh")]
        if let Some(config) = mesh_config.as_mut() {
            config.revoked = self.mesh.revoked.clone();
        }
        // The data dir is this node's alone (locked), and says which life this is. A client
        // keeps nothing: a scratch store, and a creation taken from the clock.
        let name = self.mesh.tls_name();
        #[cfg(feature = "mesh")]
        let (store, creation) = if self.mesh.client {
            client::scratch_store(self.storage)?
        } else {
            open_data_dir(&self.data_dir, &name, self.storage)?
        };
        #[cfg(not(feature = "mesh"))]
        let (store, creation) = open_data_dir(&self.data_dir, &name, self.storage)?;
        let runtime = self
            .runtime
            .name("cairn")
            .node(NodeId::of_name(&name))
            .creation(creation)
            .build()?;
        let handle = runtime.handle();
        let objects = Objects::start(handle.clone(), store, self.objects);
        handle.set_extension(objects.clone());
        let metrics = metrics::Metrics::new(handle.clone(), &objects);
        let info = Arc::new(NodeInfo {
            name: self.mesh.tls_name(),
            region: self.mesh.region.clone(),
            client: self.mesh.client,
        });
        #[cfg(feature = "mesh")]
        let mesh = match mesh_config {
            Some(config) => {
                let mesh = Mesh::start(&handle, config)?;
                objects.join_cluster(Cluster {
                    mesh: mesh.clone(),
                    creates: self.mesh.seeds.is_empty(),
                    client: self.mesh.client,
                });
                start_status_process(&mesh, &objects, &info);
                cluster_status::start(&mesh);
                #[cfg(feature = "http")]
                object::http::start_forwarding(&mesh, &objects);
                tracing::info!(node = %mesh.node(), name = %info.name, listen = %mesh.local_addr(), advertise = %mesh.advertised_addr(), region = ?info.region, "node joined the mesh");
                Some(mesh)
            }
            None => None,
        };
        #[cfg(feature = "http")]
        object::http::serve(
            &objects,
            self.http,
            (
                observe::CLASS,
                observe::Observer::of_parts(&handle, &objects, &info, &metrics),
            ),
        )?;
        // A member started from certificate files picks up rotated files while it runs.
        #[cfg(feature = "mesh")]
        let tls_reloader =
            match (&mesh, self.mesh.tls_files()) {
                (Some(mesh), Some(files)) if !self.mesh.client => Some(
                    tls_reload::Reloader::start(files, self.mesh.insecure_dev, mesh),
                ),
                _ => None,
            };
        Ok(Node {
            runtime,
            objects,
            metrics,
            #[cfg(feature = "mesh")]
            mesh,
            #[cfg(feature = "mesh")]
            tls_reloader,
            info,
            _temp_dir: temp_dir,
        })
    }
}

/// What a node says about itself.
struct NodeInfo {
    name: String,
    region: Option<String>,
    client: bool,
}

/// A node's answer to a status request ([`Node::status`], [`Node::node_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Its id.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// The address it accepts mesh connections at, as advertised to peers (`None` for a
    /// local node).
    pub listen: Option<SocketAddr>,
    /// Its region label.
    pub region: Option<String>,
    /// Whether it is a client node (owns no objects).
    pub client: bool,
    /// Live processes on it.
    pub processes: usize,
    /// Live object activations on it, per class.
    pub objects: BTreeMap<String, usize>,
    /// The other live members it sees, sorted (never nodes only named by another node).
    pub peers: Vec<NodeId>,
    /// The nodes it has a data connection to now (the nodes it talks to), sorted. Empty
    /// from a node that predates this field.
    #[serde(default)]
    pub links: Vec<NodeId>,
}

#[cfg(feature = "mesh")]
/// A request to [`STATUS_PROCESS`].
#[derive(Serialize, Deserialize)]
pub(crate) struct StatusRequest(pub(crate) Reply<NodeStatus>);

/// Opens (and locks) a node's data dir, claims it for `name` and counts this life in it.
fn open_data_dir(
    path: &std::path::Path,
    name: &str,
    config: cairn_storage::Config,
) -> Result<(Store, u32), NodeError> {
    let data_dir = DataDir::open(path)?;
    let identity = data_dir.claim_identity(name, NodeId::of_name(name).0)?;
    tracing::info!(node = identity.node, %name, creation = identity.creation, dir = %path.display(), "node identity");
    Ok((Store::open_in(&data_dir, config)?, identity.creation))
}

fn status_of(handle: &cairn_scheduler::Handle, objects: &Objects, info: &NodeInfo) -> NodeStatus {
    #[cfg(feature = "mesh")]
    let mesh = Mesh::from_handle(handle);
    #[cfg(feature = "mesh")]
    let (listen, peers, links) = (
        mesh.as_ref().map(Mesh::advertised_addr),
        mesh.as_ref()
            .map(|m| {
                let me = m.node();
                m.members()
                    .into_iter()
                    .map(|member| member.node)
                    .filter(|&node| node != me)
                    .collect()
            })
            .unwrap_or_default(),
        // `links()` is sorted by node.
        mesh.map(|m| m.links().into_iter().map(|l| l.node).collect())
            .unwrap_or_default(),
    );
    #[cfg(not(feature = "mesh"))]
    let (listen, peers, links) = (None, Vec::new(), Vec::new());
    NodeStatus {
        node: handle.node(),
        name: info.name.clone(),
        listen,
        region: info.region.clone(),
        client: info.client,
        processes: handle.process_count(),
        objects: objects.counts(),
        peers,
        links,
    }
}

#[cfg(feature = "mesh")]
/// Starts [`STATUS_PROCESS`], which answers [`StatusRequest`]s from any node.
fn start_status_process(mesh: &Mesh, objects: &Arc<Objects>, info: &Arc<NodeInfo>) {
    const TAG: &str = "cairn.StatusRequest";
    if let Err(error) = mesh.declare::<StatusRequest>(TAG) {
        tracing::error!(%error, "cannot declare the status request type");
        return;
    }
    let objects = Arc::downgrade(objects);
    let info = Arc::clone(info);
    let spawned = mesh.handle().spawn_opts(
        SpawnOptions {
            name: Some(STATUS_PROCESS.to_owned()),
            // Every node runs its own.
            local_name: true,
            ..SpawnOptions::default()
        },
        move |mut ctx: Ctx<StatusRequest>| async move {
            while let Some(msg) = ctx.recv().await {
                let Message::User(StatusRequest(reply)) = msg else {
                    continue;
                };
                let Some(objects) = objects.upgrade() else {
                    return;
                };
                if reply
                    .send(status_of(ctx.handle(), &objects, &info))
                    .is_err()
                {
                    tracing::debug!("could not answer a status request (the caller is gone)");
                }
            }
        },
    );
    if let Err(error) = spawned {
        tracing::error!(?error, "cannot start the status process");
    }
}

/// A Cairn node: the runtime, its durable store, its objects and, when started with a listen
/// address, its mesh.
///
/// It offers what applications use directly: processes ([`Node::spawn`],
/// [`Node::spawn_named`], [`Node::whereis`], [`Node::send`], [`Node::try_send`],
/// [`Node::call`]), objects ([`Node::host`], [`Node::object`]), [`Node::block_on`] and
/// [`Node::shutdown`]; the rest of the runtime (links, monitors, exit signals, timers,
/// spawn options) is on its [`Node::handle`]. Dropping the node shuts it down (every process
/// stopped, every thread joined).
pub struct Node {
    runtime: cairn_scheduler::Runtime,
    objects: Arc<Objects>,
    metrics: Arc<metrics::Metrics>,
    #[cfg(feature = "mesh")]
    mesh: Option<Mesh>,
    /// Reloads the node's certificate files (`tls_reload`), when it was given files.
    #[cfg(feature = "mesh")]
    tls_reloader: Option<Arc<tls_reload::Reloader>>,
    info: Arc<NodeInfo>,
    /// Dropped last, once the runtime and the store are closed.
    _temp_dir: Option<node_ext::TempDataDir>,
}

impl Node {
    /// Configures a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// The runtime's handle, for everything else the scheduler offers (links, monitors, exit
    /// signals, timers, `spawn_opts`, `actor_ref`, `wait_exit` ...). Cheap to clone into
    /// threads and processes.
    pub fn handle(&self) -> &Handle {
        &self.runtime
    }

    /// Spawns a process running `body`, which receives from its own mailbox through `Ctx`.
    pub fn spawn<M, F, Fut>(&self, body: F) -> ActorRef<M>
    where
        M: Send + 'static,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.runtime.spawn(body)
    }

    /// Spawns a process under `name` (cluster-wide on a meshed node); fails if the name is
    /// taken. The name also owns a durable keyspace ([`durable::Durable`]).
    pub fn spawn_named<M, F, Fut>(&self, name: &str, body: F) -> Result<ActorRef<M>, SpawnError>
    where
        M: Send + 'static,
        F: FnOnce(Ctx<M>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.runtime.spawn_named(name, body)
    }

    /// The pid registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.runtime.whereis(name)
    }

    /// Sends to `pid` (on this node or another), waiting for room in a full mailbox.
    pub async fn send<M: Send + 'static>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        self.runtime.send(pid, msg).await
    }

    /// Sends to `pid` without waiting; every failure gives the message back.
    pub fn try_send<M: Send + 'static>(&self, pid: Pid, msg: M) -> Result<(), SendError<M>> {
        self.runtime.try_send(pid, msg)
    }

    /// Sends a request made with a [`Reply`] to `pid` and waits at most `timeout` for the
    /// answer.
    pub async fn call<M: Send + 'static, R>(
        &self,
        pid: Pid,
        make: impl FnOnce(Reply<R>) -> M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.runtime.call(pid, make, timeout).await
    }

    /// Runs `future` to completion on the calling thread (for `main` and tests; never from
    /// inside a process).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Hosts an object class: its objects can be reached and their alarms delivered. On a
    /// meshed node its objects are placed across the mesh (each key lives on its owner
    /// node), so its messages must serialize; host the class on every node.
    pub fn host<O>(&self)
    where
        O: Object,
        O::Msg: Serialize + DeserializeOwned,
    {
        self.objects.host::<O>();
    }

    /// Hosts an object class that is never placed: every node has its own objects of
    /// it (its messages need not serialize).
    pub fn host_local<O: Object>(&self) {
        self.objects.host_local::<O>();
    }

    /// A reference to the object `(O::CLASS, key)`; cheap, activates on first message, on
    /// the key's owner node.
    pub fn object<O: Object>(&self, key: &str) -> ObjectRef<O> {
        ObjectRef::new(self.objects.clone(), key)
    }

    /// A reference to the object `(O::CLASS, key)` placed on a node of `region`. The hint is
    /// part of the object's identity: this is the object `class@region/key`, another object
    /// than [`object`](Self::object)`(key)`, with its own storage. With replicated shards and
    /// `region` in [`ShardConfig::regions`], all its replicas stay on members of that region
    /// (`docs/location_hints.md`). Sends fail with
    /// [`placement::PlacementError::NoNodeInRegion`] if no live node is in it, and with
    /// [`ObjectError::BadName`](object::ObjectError::BadName) if `region` is empty or contains `/`.
    pub fn object_in<O: Object>(&self, key: &str, region: &str) -> ObjectRef<O> {
        ObjectRef::new_in(self.objects.clone(), key, Some(region))
    }

    /// Re-reads this node's certificate, key and CA certificate (the files of
    /// [`NodeBuilder::tls_files`]) and uses them for every new connection, without a
    /// restart (see [`tls_reload`]); the new certificate's serial. `Ok(None)` for a node
    /// that was not started from files. A refused certificate changes nothing.
    #[cfg(feature = "mesh")]
    pub fn reload_tls(&self) -> Result<Option<cairn_net::tls::Serial>, NodeError> {
        self.tls_reloader
            .as_ref()
            .map(|reloader| reloader.reload())
            .transpose()
    }

    #[cfg(feature = "mesh")]
    /// The node's mesh, if it was started with a listen address.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    /// The node's id (pids of its processes carry it).
    pub fn id(&self) -> NodeId {
        self.runtime.node()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The node's region label.
    pub fn region(&self) -> Option<&str> {
        self.info.region.as_deref()
    }

    /// The node's metrics registry ([`metrics`]): what `/cairn/metrics` serves; other
    /// layers and applications register into it.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// Counters of every object class hosted or seen on this node.
    pub fn object_stats(&self) -> BTreeMap<String, object::ObjectClassStats> {
        self.objects.class_stats()
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        status_of(&self.runtime.handle(), &self.objects, &self.info)
    }

    #[cfg(feature = "mesh")]
    /// How many shards this node's replicas see with the full replication factor of voters
    /// (0 without a mesh or on a client): what a test waits for before it kills a node.
    pub async fn shards_fully_replicated(&self) -> u32 {
        self.objects.shards_fully_replicated().await
    }

    #[cfg(feature = "mesh")]
    /// The shard layer's counters and this node's map of the shards it hosts (role, voters,
    /// learners, leader), as the status page shows them; `None` without a shard driver
    /// (no mesh, or a client). The map is at most `cairn_shard::stats::MAP_REFRESH` stale.
    pub fn shard_stats(&self) -> Option<cairn_shard::stats::ShardStatsSnapshot> {
        self.objects.shard_stats().map(|(stats, _)| stats)
    }

    #[cfg(feature = "mesh")]
    /// Asks `node` (any node of the mesh, or this one) for its status. On a node without a
    /// mesh this fails with [`CallError::NoConnection`].
    pub async fn node_status(
        &self,
        node: NodeId,
        timeout: Duration,
    ) -> Result<NodeStatus, CallError> {
        if self.mesh.is_none() {
            return Err(CallError::NoConnection);
        }
        self.runtime
            .named_ref::<StatusRequest>(STATUS_PROCESS, node)
            .call(StatusRequest, timeout)
            .await
    }

    /// The durable keyspace of a named process (its registered name): the same store and
    /// guarantees as objects, committed explicitly with `commit()`.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, cairn_storage::StorageError> {
        self.objects.store().keyspace(name)
    }

    /// The node's store.
    pub fn store(&self) -> &Store {
        self.objects.store()
    }

    #[cfg(feature = "http")]
    /// Where the node serves HTTP ([`NodeBuilder::http`]), if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        object::http::HttpState::of(self.handle()).local_addr()
    }

    /// Closes the mesh (peers see this node leave at once: the close frames are flushed,
    /// waiting at most [`CLOSE_FLUSH`]), stops every process and joins every thread (also
    /// done on drop).
    pub fn shutdown(&self) {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            mesh.close_and_flush(CLOSE_FLUSH);
        }
        self.runtime.shutdown();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Before the runtime's own drop: peers learn of the close instead of timing out.
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            mesh.close_and_flush(CLOSE_FLUSH);
        }
    }
}

#[cfg(feature = "mesh")]
/// How long [`Node::shutdown`] waits for the mesh's close frames to leave: one round trip
/// on a LAN is well under this, and a peer that misses them still learns of the leave by
/// SWIM within its failure timeout.
pub const CLOSE_FLUSH: Duration = Duration::from_millis(50);

/// How [`init_logging`] writes log lines.
#[cfg(feature = "cli")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured only when stderr is a terminal (and
    /// `NO_COLOR` is unset), so logs written to a file or pipe carry no escape codes.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log
    /// collectors.
    Json,
}

/// Installs a `tracing` subscriber writing to stderr for binaries and examples, filtered by
/// `RUST_LOG` (default `info`). Does nothing if one is already installed.
#[cfg(feature = "cli")]
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder.json().try_init(),
    };
}
