//! Helpers shared by the integration tests: a runtime, a cluster, and captured logs.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cairn_net::{ClusterCa, Endpoint, TlsConfig};
use cairn_scheduler::Runtime;

/// Every log line written by any test in this binary.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary).
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(Arc::clone(&buf));
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        buf
    });
}

/// The captured log text so far.
pub fn logs() -> String {
    let buf = LOGS.get().expect("init_logs first").lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits (up to 10 s) until some log line contains every one of `needles`.
pub fn wait_for_log(needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = logs();
        if let Some(line) = logs
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needles:?} in:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn runtime() -> Runtime {
    init_logs();
    Runtime::builder().workers(2).build().unwrap()
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A CA and endpoints on 127.0.0.1 with certificates named `names`.
pub struct Cluster {
    pub ca: ClusterCa,
    pub endpoints: Vec<Endpoint>,
}

impl Cluster {
    pub fn new(rt: &Runtime, names: &[&str]) -> Cluster {
        let ca = ClusterCa::generate().unwrap();
        let endpoints = names
            .iter()
            .map(|name| {
                let tls = TlsConfig::new(ca.cert_der().clone(), ca.issue(name).unwrap());
                Endpoint::bind(&rt.handle(), localhost(), &tls).unwrap()
            })
            .collect();
        Cluster { ca, endpoints }
    }

    pub fn tls(&self, name: &str) -> TlsConfig {
        TlsConfig::new(self.ca.cert_der().clone(), self.ca.issue(name).unwrap())
    }
}

/// Runs `fut` as a Cairn process; the result arrives on the returned channel.
pub fn spawn<T, F>(rt: &Runtime, fut: F) -> std::sync::mpsc::Receiver<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(move |_ctx: cairn_scheduler::Ctx<()>| async move {
        let _ = tx.send(fut.await);
    });
    rx
}

/// xorshift64*: seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The id of the node named `node-{n}` (what [`start_mesh`] names node `n`).
pub fn id(n: u64) -> cairn_scheduler::NodeId {
    cairn_scheduler::NodeId::of_name(&format!("node-{n}"))
}

/// A runtime (node id [`id`]`(n)`) with a mesh on 127.0.0.1:0 whose certificate is
/// `node-{n}`, joined through `seeds` (other meshes of the same CA).
pub fn start_mesh(
    ca: &ClusterCa,
    n: u64,
    seeds: &[&cairn_net::Mesh],
    idle: Duration,
) -> (Runtime, cairn_net::Mesh) {
    start_node(ca, n, seeds, 2, |config| config.idle_timeout(idle))
}

/// A runtime of `workers` threads (node id [`id`]`(n)`) with a mesh on 127.0.0.1:0 whose
/// certificate is `node-{n}`, joined through `seeds` (other meshes of the same CA), its
/// configuration passed through `configure` last (timeouts, regions).
pub fn start_node(
    ca: &ClusterCa,
    n: u64,
    seeds: &[&cairn_net::Mesh],
    workers: usize,
    configure: impl FnOnce(cairn_net::MeshConfig) -> cairn_net::MeshConfig,
) -> (Runtime, cairn_net::Mesh) {
    init_logs();
    let rt = Runtime::builder()
        .workers(workers)
        .node(id(n))
        .build()
        .unwrap();
    let tls = TlsConfig::new(
        ca.cert_der().clone(),
        ca.issue(&format!("node-{n}")).unwrap(),
    );
    let mut config = cairn_net::MeshConfig::new(localhost(), tls);
    for seed in seeds {
        config = config.seed(seed.local_addr(), seed.name());
    }
    let mesh = cairn_net::Mesh::start(&rt.handle(), configure(config)).unwrap();
    (rt, mesh)
}
