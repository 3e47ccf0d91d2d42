//! # cairn-net — Cairn's network transport
//!
//! QUIC ([quinn]) running on Cairn's own scheduler and mio reactor (no tokio runtime),
//! mutual TLS with a cluster CA, and ordered lanes of length-prefixed MessagePack frames.
//! Membership and the mesh build on this layer.
//!
//! ```
//! use cairn_net::{ClusterCa, Endpoint, TlsConfig};
//! use cairn_scheduler::Runtime;
//!
//! let rt = Runtime::builder().workers(2).build().unwrap();
//! let ca = ClusterCa::generate().unwrap();
//! let tls_a = TlsConfig::new(ca.cert_der().clone(), ca.issue("node-a").unwrap());
//! let tls_b = TlsConfig::new(ca.cert_der().clone(), ca.issue("node-b").unwrap());
//! let a = Endpoint::bind(&rt.handle(), "127.0.0.1:0".parse().unwrap(), &tls_a).unwrap();
//! let b = Endpoint::bind(&rt.handle(), "127.0.0.1:0".parse().unwrap(), &tls_b).unwrap();
//! let b_addr = b.local_addr().unwrap();
//!
//! let got: Vec<String> = rt.block_on(async move {
//!     let to_b = a.connect(b_addr, "node-b").await.unwrap();
//!     let mut lane = to_b.open_lane(0).await.unwrap();
//!     lane.send("hello").await.unwrap();
//!     lane.send("world").await.unwrap();
//!     let from_a = b.accept().await.unwrap();
//!     let mut rx = from_a.accept_lane().await.unwrap();
//!     let first = rx.recv::<String>().await.unwrap().unwrap();
//!     let second = rx.recv::<String>().await.unwrap().unwrap();
//!     vec![first, second]
//! });
//! assert_eq!(got, ["hello", "world"]);
//! rt.shutdown();
//! ```
//!
//! ## Pieces
//! - [`runtime`]: quinn's `Runtime` on the Cairn scheduler (timers, tasks, UDP sockets).
//! - [`tls`]: the cluster CA, node certificates, mutual-TLS quinn configurations.
//! - [`frame`]: the frame format and the sans-IO [`FrameDecoder`].
//! - [`endpoint`]: endpoints, connections, framed lanes (ordering and coalescing).
//! - [`mesh`]: nodes joined over QUIC with SWIM membership (foca) and cluster-wide names;
//!   it makes the scheduler's pids, names and replies work across nodes.
//! - `faults` (`testing` feature only): network partitions between sets of ports, by
//!   dropping datagrams in this process's QUIC sockets.

#![deny(unsafe_code)]

pub mod endpoint;
#[cfg(feature = "testing")]
pub mod faults;
pub mod frame;
pub mod mesh;
pub mod runtime;
pub mod tls;

pub use endpoint::{
    BindError, ConnectError, Connection, Endpoint, EndpointOptions, FramedReceiver, FramedSender,
    LaneError, RecvError, SendError, ACCEPT_BACKLOG, CLOSE_FRAME_ERROR, CLOSE_NORMAL,
    SEND_BUFFER_HIGH_WATER,
};
pub use frame::{encode_frame, Frame, FrameDecoder, FrameError, MAX_FRAME_DEFAULT};
pub use mesh::{
    DialError, Member, Mesh, MeshConfig, MeshError, MeshStats, NameError, NodeEvent, NodeEvents,
    Resolver, SeedAddr,
};
pub use runtime::CairnRuntime;
pub use tls::{
    CertIdentity, ClusterCa, NodeCert, Role, TlsConfig, TlsError, CLIENT_NAME_SUFFIX,
    SEED_SERVER_NAME,
};
