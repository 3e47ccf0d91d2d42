//! `cairn-node`: runs a Cairn node that hosts the demo object classes (`counter`,
//! `restaurant`, `chat`, and the web chat's `chatroom`, whose page `--http` serves at `/`;
//! see the `demo` module), makes cluster CAs, shows a mesh's status and pokes objects from
//! the command line.
//!
//! ```text
//! cairn-node ca init --dir ./ca
//! cairn-node cert issue --ca ./ca --name n1 --out ./certs/n1
//! cairn-node run --name n1 --listen 127.0.0.1:7400 --data-dir ./data/n1 \
//!     --cert ./certs/n1/n1.pem --key ./certs/n1/n1.key --ca ./certs/n1/ca.pem
//! cairn-node run --name n2 --listen 127.0.0.1:7401 --join 127.0.0.1:7400 --data-dir ./data/n2 \
//!     --cluster ./ca --dev-ca             # development only: n2 holds the CA's key
//! cairn-node cert issue --ca ./ca --name ops --role client --out ./certs/ops
//! cairn-node send counter alice add 5 --join 127.0.0.1:7401 \
//!     --cert ./certs/ops/ops.client.pem --key ./certs/ops/ops.client.key --ca ./certs/ops/ca.pem
//! cairn-node status --join 127.0.0.1:7400 --cluster ./ca --dev-ca   # development only
//! ```
//!
//! With no arguments it runs a one-node mesh on 127.0.0.1:7400 with storage under `./data`
//! and a cluster CA under `./cluster` (created if missing, marked `DEVELOPMENT-CA`, and
//! logged; `send` and `status` use such a marked CA without flags). Any other node, `send`
//! or `status` that would hold the CA's private key refuses without `--dev-ca`; a node's own
//! certificate must be valid now. SIGHUP makes `run` re-read its certificate files and
//! revocation list (`hangup`). A running node prints
//! `ready node=<id> name=<name> listen=<addr> region=<region>` on stdout once it accepts
//! connections, then `node up ...` / `node down ...` as peers come and go; logs go to
//! stderr (`RUST_LOG`; `--log-format json` for one JSON object per line, colour only on a
//! terminal). `status` and `send` are dial-only *clients* (see `client`): no members, no
//! data dir, one outbound connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn::net::{ClusterCa, Mesh, NodeEvent, SeedAddr};
use cairn::prelude::*;
use cairn::LogFormat;
use clap::{Args, Parser, Subcommand};
use demo::{BookingMsg, ChatMsg, ChatRoom, Counter, CounterMsg, Restaurant};

mod ca;
mod client;
mod demo;
mod hangup;
mod http;
mod observe;

/// How long `status` and `send` wait for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(name = "cairn-node", version, about = "Run and inspect Cairn nodes")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How logs are written to stderr: text (coloured only on a terminal) or json (one
    /// object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a node (the default).
    Run(RunArgs),
    /// Manages cluster certificate authorities.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The offline cluster CA (its key stays on the operator's machine).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Issues node and client certificates from an offline CA.
    #[command(subcommand)]
    Cert(ca::CertCommand),
    /// Prints every member of a mesh: name, region, processes and objects.
    Status(observe::StatusArgs),
    /// Copies a node's store (consistent, compacted) while the node runs.
    Backup(observe::BackupArgs),
    /// Puts a backup in place as the store of an empty data directory.
    Restore(observe::RestoreArgs),
    /// Sends to an object from the command line, through any node of the mesh.
    ///
    /// Operations (N defaults to 20, SECONDS to 60):
    ///   counter KEY add N | get
    ///   chat KEY join WHO | leave WHO | post WHO TEXT... | recent N
    ///   restaurant KEY hold GUEST SECONDS | confirm GUEST | show
    #[command(verbatim_doc_comment)]
    Send {
        /// The object class: counter, chat or restaurant.
        class: String,
        /// The object's key.
        #[arg(value_name = "KEY")]
        object_key: String,
        /// The operation and its arguments.
        #[arg(required = true, num_args = 1..)]
        op: Vec<String>,
        /// Place the object in this region (a location hint).
        #[arg(long)]
        region_hint: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Creates a new cluster CA in DIR (ca.pem, ca.key).
    Init {
        /// Where to write it.
        dir: PathBuf,
    },
    /// Issues a node certificate from the CA in DIR into OUT (NAME.pem, NAME.key, ca.pem),
    /// for nodes started with --cert/--key/--ca instead of --cluster.
    Issue {
        /// The CA directory.
        dir: PathBuf,
        /// The node name (a client's gets ".client" appended if missing).
        name: String,
        /// Issue a client certificate (sends and calls only) instead of a node's.
        #[arg(long)]
        client: bool,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = cairn::net::tls::DEFAULT_CERT_DAYS)]
        days: u32,
        /// The holder's region, in the certificate: the node must run with this --region
        /// and can claim no other.
        #[arg(long)]
        region: Option<String>,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Marks a CA directory the one-node default made for itself (see `self_issue`).
const DEV_CA_MARKER: &str = "DEVELOPMENT-CA";

/// What the marker says to whoever finds it.
const DEV_CA_MARKER_TEXT: &str = "This CA was made by a one-node development `cairn-node` (no --cluster, no --join), which reuses it on its next start. Do not use it for a real cluster: make one with `cairn-node ca init` on the operator's machine.\n";

/// The CA directory used when none is given (`--cluster`).
const DEFAULT_CLUSTER_DIR: &str = "./cluster";

/// How a node authenticates.
#[derive(Args, Debug, Clone)]
struct TlsArgs {
    /// DEVELOPMENT ONLY: a cluster CA directory (from `cluster init`, default ./cluster)
    /// whose private key the node uses to issue its own certificate. `run` refuses it
    /// without --dev-ca (except a lone default node, see README "Security model").
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// DEVELOPMENT ONLY: let `run --cluster` hold the cluster CA's private key. In
    /// production give each node its own --cert/--key/--ca (`cairn-node cert issue`).
    #[arg(long)]
    dev_ca: bool,
    /// This node's certificate (PEM); use with --key and --ca instead of --cluster.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// This node's private key (PKCS#8 PEM).
    #[arg(long, requires_all = ["cert", "ca"])]
    key: Option<PathBuf>,
    /// The CA certificate to trust (PEM).
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// DEVELOPMENT ONLY: do not verify peers; anyone who reaches the port gets in.
    #[arg(long)]
    insecure_dev: bool,
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// The node's name (its certificate's name).
    #[arg(long, default_value = "n1")]
    name: String,
    /// Where to accept mesh connections.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Seed nodes to join through, HOST:PORT (IP address or DNS name, resolved again on
    /// every retry; comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    join: Vec<SeedAddr>,
    /// The address other nodes reach this one at (default: the listen address; with
    /// --listen 0.0.0.0 or `[::]`, the address this host routes to its seeds from).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Where durable state lives.
    #[arg(long, default_value = cairn::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The most the store may hold (LMDB's map size): bytes, or with a K, M, G or T
    /// suffix (powers of 1024). Address space, not disk: the data file grows as data is
    /// written. A full map or a full disk refuses writes with "storage is full".
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    map_size: usize,
    /// This node's region label (for location hints).
    #[arg(long)]
    region: Option<String>,
    /// Scheduler worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds after which a silent (killed, hung, cut-off) member is declared down.
    #[arg(long, default_value_t = 5.0)]
    failure_timeout: f64,
    /// The operator's revocation list: revoked certificate serials, one a line (from
    /// `cert serial`); peers holding one are refused, and the file is re-read every 10 s.
    #[arg(long)]
    revoked: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    observe: observe::MetricsArgs,
    #[command(flatten)]
    http: http::HttpArgs,
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Nodes of the mesh, HOST:PORT (tried in turn until one answers).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7400")]
    join: Vec<SeedAddr>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Exit status after a fatal storage error (`EX_IOERR`): the node stops so that its
/// supervisor (systemd, Kubernetes) restarts it on its last committed state.
const EXIT_STORAGE_FAILED: i32 = 74;

/// A size in bytes, with an optional K/M/G/T suffix (powers of 1024; `KiB`, `MB` … read
/// the same).
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: usize = n.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("size out of range: {s:?}"))
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Node(#[from] cairn::NodeError),
    #[error(transparent)]
    Tls(#[from] cairn::net::TlsError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach {seed}: {reason}")]
    Join { seed: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("asking {node} for its status: {reason}")]
    Status { node: NodeId, reason: String },
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    /// A node was to use the cluster CA's private key without the development flag.
    #[error("refusing to start {name:?}: {} holds the cluster CA's private key, and a node must not hold it. Issue this node its own certificate on the CA's machine (`cairn-node cert issue --ca {} --name {name} --out ./certs/{name}`) and start it with --cert/--key/--ca, or pass --dev-ca on a development machine", .dir.display(), .dir.display())]
    HoldsCaKey { dir: PathBuf, name: String },
    /// `send`/`status` were to issue themselves a certificate from an operator's CA.
    #[error("refusing to {what} with {}: it holds the cluster CA's private key, which only the operator's machine may hold. Issue a client certificate there (`cairn-node cert issue --ca {} --name me --role client --out ./certs/me`) and pass --cert/--key/--ca, or pass --dev-ca on a development machine", .dir.display(), .dir.display())]
    ClientHoldsCaKey { dir: PathBuf, what: &'static str },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cairn::init_logging(cli.log_format);
    let result = match cli.command {
        None => run(RunArgs::parse_from(["cairn-node"])),
        Some(Command::Run(args)) => run(args),
        Some(Command::Cluster(ClusterCommand::Init { dir })) => ca::init(&dir),
        Some(Command::Cluster(ClusterCommand::Issue {
            dir,
            name,
            client,
            days,
            region,
            out,
        })) => {
            let role = if client {
                cairn::net::Role::Client
            } else {
                cairn::net::Role::of_name(&name)
            };
            ca::issue(&dir, &name, role, days, region.as_deref(), &out)
        }
        Some(Command::Ca(command)) => ca::ca(&command),
        Some(Command::Cert(command)) => ca::cert(&command),
        Some(Command::Status(args)) if args.json => observe::status_json(&args.client),
        Some(Command::Status(args)) => client::status(&args.client),
        Some(Command::Backup(args)) => observe::backup(&args),
        Some(Command::Restore(args)) => observe::restore(&args),
        Some(Command::Send {
            class,
            object_key,
            op,
            region_hint,
            client,
        }) => send(&client, &class, &object_key, &op, region_hint.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cairn-node: {error}");
            ExitCode::FAILURE
        }
    }
}

impl TlsArgs {
    /// The CA directory: `--cluster`, or [`DEFAULT_CLUSTER_DIR`].
    fn cluster_dir(&self) -> PathBuf {
        self.cluster
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER_DIR))
    }

    /// Whether holding the CA directory's private key was asked for (development only).
    fn may_use_ca_key(&self) -> bool {
        self.dev_ca || self.insecure_dev
    }

    /// Whether the CA directory is one a lone default node made for itself (marked so).
    fn is_development_ca(&self) -> bool {
        self.cluster_dir().join(DEV_CA_MARKER).exists()
    }
}

/// Applies the TLS options to a builder.
fn with_tls(mut builder: NodeBuilder, tls: &TlsArgs) -> NodeBuilder {
    builder = match (&tls.cert, &tls.key, &tls.ca) {
        (Some(cert), Some(key), Some(ca)) => builder.tls_files(cert, key, ca),
        _ => builder.cluster(tls.cluster_dir()),
    };
    if tls.insecure_dev {
        builder = builder.insecure_dev();
    }
    builder
}

fn run(args: RunArgs) -> Result<(), CliError> {
    // Before the node starts a thread: every thread then leaves SIGHUP to `reload_on_hangup`.
    let hangup = hangup::block()
        .map_err(|e| CliError::Usage(format!("cannot take SIGHUP for reloads: {e}")))?;
    // A client's certificate names a `.client` holder, and a node runs under its
    // certificate's name: so this is a client certificate, which may not host objects.
    if matches!(
        cairn::net::Role::of_name(&args.name),
        cairn::net::Role::Client
    ) {
        return Err(CliError::Usage(format!(
            "{:?} is a client: a client certificate sends to objects and reads status \
             (`cairn-node send`, `cairn-node status`) but cannot host objects or be a member",
            args.name
        )));
    }
    if args.tls.cert.is_none() {
        self_issue(&args)?;
    }
    let mut builder = Node::builder()
        .name(&args.name)
        .listen(args.listen)
        .join_seeds(args.join.iter().cloned())
        .data_dir(&args.data_dir)
        .storage(cairn_storage_config(args.map_size));
    if let Some(addr) = args.advertise {
        builder = builder.advertise(addr);
    }
    if let Some(region) = &args.region {
        builder = builder.region(region);
    }
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(path) = &args.revoked {
        builder = builder.revoked(path);
    }
    let failure_timeout = Duration::try_from_secs_f64(args.failure_timeout)
        .map_err(|e| CliError::Usage(format!("--failure-timeout {}: {e}", args.failure_timeout)))?;
    builder = builder.failure_timeout(failure_timeout);
    let node = with_tls(args.http.apply(builder), &args.tls).start()?;
    // A store that failed (EIO, LMDB's fatal error) takes no more writes; the node would
    // only keep failing its objects. Stop, and let the supervisor restart it.
    node.store().on_fatal(|error| {
        tracing::error!(%error, "storage failed; exiting so that a supervisor restarts this node");
        eprintln!("cairn-node: {error}; exiting with status {EXIT_STORAGE_FAILED}");
        std::process::exit(EXIT_STORAGE_FAILED);
    });
    demo::host_all(&node);
    observe::serve_metrics(&node, &args.observe)?;
    let mesh = node
        .mesh()
        .expect("a node with a listen address has a mesh");
    let events = mesh.node_events();
    println!(
        "ready node={} name={} listen={} advertise={} advertise_source={:?} region={}",
        mesh.node(),
        node.name(),
        mesh.local_addr(),
        mesh.advertised_addr(),
        mesh.advertise_source(),
        node.region().unwrap_or("-")
    );
    http::announce(&node);
    std::thread::scope(|scope| {
        scope.spawn(|| reload_on_hangup(&hangup, &node));
        node.block_on(report_peers(mesh.clone(), events));
    });
    Ok(())
}

/// On every SIGHUP: the node's certificate files (when it runs from --cert/--key/--ca) and
/// its revocation list (--revoked) are read again; new connections use them.
fn reload_on_hangup(hangup: &hangup::Hangup, node: &Node) {
    loop {
        if let Err(error) = hangup.wait() {
            tracing::error!(%error, "waiting for SIGHUP failed; reload by replacing the files instead");
            return;
        }
        tracing::info!("SIGHUP: reloading the certificate and the revocation list");
        match node.reload_tls() {
            Ok(Some(serial)) => tracing::info!(%serial, "certificate reloaded on SIGHUP"),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "certificate not reloaded; the current one stays in use");
            }
        }
        if let Some(mesh) = node.mesh() {
            mesh.reload_revocations();
        }
    }
}

/// A node without its own certificate (`--cert`) issues one from a CA directory, which
/// means holding the cluster CA's private key: allowed only as a development setup (see
/// [`CliError::HoldsCaKey`]). The one-node default (`cairn-node`, or `run` without
/// `--cluster` and `--join`) is one: it makes a local CA in `./cluster` when there is none.
fn self_issue(args: &RunArgs) -> Result<(), CliError> {
    let dir = args.tls.cluster_dir();
    let ca_missing = !dir.join(cairn::net::tls::CA_KEY_FILE).exists();
    // The one-node default may make a CA, and reuse only a CA it made (marked so): an
    // operator's CA in ./cluster is refused like any other without --dev-ca.
    let lone_default = args.tls.cluster.is_none()
        && args.join.is_empty()
        && (ca_missing || args.tls.is_development_ca());
    if !(args.tls.may_use_ca_key() || lone_default) {
        return Err(CliError::HoldsCaKey {
            dir,
            name: args.name.clone(),
        });
    }
    if ca_missing && args.join.is_empty() && !args.tls.insecure_dev {
        // A first node with no CA yet makes one, so that `cairn-node` alone starts a
        // one-node mesh. A node that joins others must be given their CA.
        ClusterCa::generate()?.save(&dir)?;
        let marker = dir.join(DEV_CA_MARKER);
        std::fs::write(&marker, DEV_CA_MARKER_TEXT).map_err(|source| CliError::Write {
            path: marker,
            source,
        })?;
        tracing::warn!(dir = %dir.display(), node = %args.name, "created a local cluster CA for this one-node development mesh; the node issues itself a certificate from it (for a real cluster: `cairn-node ca init` on the operator's machine, `cairn-node cert issue` per node, and `run --cert/--key/--ca`)");
    } else {
        tracing::warn!(dir = %dir.display(), node = %args.name, "DEVELOPMENT: this node holds the cluster CA's private key and issues itself a certificate from it");
    }
    Ok(())
}

/// The store's settings with `map_size`.
fn cairn_storage_config(map_size: usize) -> cairn::storage::Config {
    cairn::storage::Config {
        map_size,
        ..Default::default()
    }
}

/// Prints `node up` / `node down` lines for ever (peers connected before the subscription
/// included, each once).
async fn report_peers(mesh: Mesh, mut events: cairn::net::NodeEvents) {
    let mut up = std::collections::HashSet::new();
    let me = mesh.node();
    for member in mesh.members() {
        if member.node != me && up.insert(member.node) {
            println!("node up node={} addr={}", member.node, member.addr);
        }
    }
    loop {
        match events.next().await {
            NodeEvent::Up { node, addr, .. } if up.insert(node) => {
                println!("node up node={node} addr={addr}");
            }
            NodeEvent::Down { node, reason, .. } => {
                up.remove(&node);
                println!("node down node={node} reason={reason:?}");
            }
            _ => {}
        }
    }
}

fn send(
    args: &ClientArgs,
    class: &str,
    key: &str,
    op: &[String],
    region: Option<&str>,
) -> Result<(), CliError> {
    let node = client::client(args, "send")?;
    let answer = node.block_on(send_op(&node, class, key, op, region));
    node.shutdown();
    println!("{}", answer?);
    Ok(())
}

fn object<O: Object>(node: &Node, key: &str, region: Option<&str>) -> ObjectRef<O> {
    match region {
        Some(r) => node.object_in::<O>(key, r),
        None => node.object::<O>(key),
    }
}

fn arg<'a>(op: &'a [String], i: usize, what: &str) -> Result<&'a str, CliError> {
    op.get(i)
        .map(String::as_str)
        .ok_or_else(|| CliError::Usage(format!("missing {what}")))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, CliError> {
    s.parse()
        .map_err(|_| CliError::Usage(format!("not a number: {s}")))
}

/// Performs one object operation; the answer as a line of text.
async fn send_op(
    node: &Node,
    class: &str,
    key: &str,
    op: &[String],
    region: Option<&str>,
) -> Result<String, CliError> {
    let t = CLIENT_TIMEOUT;
    let verb = arg(op, 0, "operation")?;
    match (class, verb) {
        ("counter", "add") => {
            let n: u64 = number(arg(op, 1, "amount")?)?;
            let counter = object::<Counter>(node, key, region);
            counter
                .send(CounterMsg::Add(n))
                .await
                .map_err(ObjectError::from)?;
            // A round trip to the gateway on the same connection (asking it for the
            // membership): the add reached it before this client leaves.
            let owner = client::owner(node, Counter::CLASS, key, region)?;
            Ok(format!("sent add {n} to counter/{key} owner={owner}"))
        }
        ("counter", "get") => {
            let counter = object::<Counter>(node, key, region);
            let total = counter.call(CounterMsg::Get, t).await?;
            let owner = client::owner(node, Counter::CLASS, key, region)?;
            Ok(format!("counter/{key} = {total} owner={owner}"))
        }
        ("chat", "join" | "leave") => {
            let who = arg(op, 1, "member")?.to_owned();
            let room = object::<ChatRoom>(node, key, region);
            let members = if verb == "join" {
                room.call(|r| ChatMsg::Join(who, r), t).await?
            } else {
                room.call(|r| ChatMsg::Leave(who, r), t).await?
            };
            Ok(format!("chat/{key} members: {}", members.join(", ")))
        }
        ("chat", "post") => {
            let from = arg(op, 1, "member")?.to_owned();
            let text = op.get(2..).unwrap_or_default().join(" ");
            let room = object::<ChatRoom>(node, key, region);
            match room
                .call(|reply| ChatMsg::Post { from, text, reply }, t)
                .await?
            {
                Ok(seq) => Ok(format!("chat/{key} post #{seq}")),
                Err(why) => Err(CliError::Usage(why)),
            }
        }
        ("chat", "recent") => {
            let n = match op.get(1) {
                Some(s) => number(s)?,
                None => 20,
            };
            let room = object::<ChatRoom>(node, key, region);
            let posts = room.call(|r| ChatMsg::Recent(n, r), t).await?;
            Ok(posts
                .iter()
                .map(|p| format!("#{} {}: {}", p.seq, p.from, p.text))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        ("restaurant", "hold") => {
            let guest = arg(op, 1, "guest")?.to_owned();
            let secs: u64 = match op.get(2) {
                Some(s) => number(s)?,
                None => 60,
            };
            let place = object::<Restaurant>(node, key, region);
            let hold = Duration::from_secs(secs);
            let r = place
                .call(|reply| BookingMsg::Hold(guest, hold, reply), t)
                .await?;
            Ok(format!("restaurant/{key} hold: {r:?}"))
        }
        ("restaurant", "confirm") => {
            let guest = arg(op, 1, "guest")?.to_owned();
            let place = object::<Restaurant>(node, key, region);
            let r = place
                .call(|reply| BookingMsg::Confirm(guest, reply), t)
                .await?;
            Ok(format!("restaurant/{key} confirm: {r:?}"))
        }
        ("restaurant", "show") => {
            let place = object::<Restaurant>(node, key, region);
            let seats = place.call(BookingMsg::Show, t).await?;
            Ok(format!("restaurant/{key} tables: {seats:?}"))
        }
        _ => Err(CliError::Usage(format!(
            "unknown operation {verb:?} for class {class:?} (see `cairn-node send --help`)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        RunArgs::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_send_takes_its_operation() {
        let cli = Cli::try_parse_from(["cairn-node"]).unwrap();
        assert!(cli.command.is_none());
        let defaults = RunArgs::try_parse_from(["cairn-node"]).unwrap();
        assert_eq!(defaults.listen, SocketAddr::from(([127, 0, 0, 1], 7400)));
        assert_eq!(defaults.data_dir, PathBuf::from("data"));
        let cli = Cli::try_parse_from([
            "cairn-node",
            "send",
            "chat",
            "lobby",
            "post",
            "ada",
            "hello",
            "all",
            "--join",
            "127.0.0.1:7401",
        ])
        .unwrap();
        let Some(Command::Send {
            class,
            object_key,
            op,
            client,
            ..
        }) = cli.command
        else {
            panic!("not a send");
        };
        assert_eq!((class.as_str(), object_key.as_str()), ("chat", "lobby"));
        assert_eq!(op, ["post", "ada", "hello", "all"]);
        assert_eq!(
            client.join,
            [SeedAddr::Addr(SocketAddr::from(([127, 0, 0, 1], 7401)))]
        );
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("G").is_err());
    }
}
