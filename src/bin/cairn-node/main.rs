//! `cairn-node`: runs a Cairn node that hosts the demo object classes (`counter`,
//! `restaurant`, `chat`, and the web chat's `chatroom`, whose page `--http` serves at `/`;
//! see the `demo` module), makes cluster CAs, shows a mesh's status and pokes objects from
//! the command line.
//!
//! ```text
//! cairn-node cluster init ./cluster
//! cairn-node run --name n1 --listen 127.0.0.1:7400 --data-dir ./data/n1 --cluster ./cluster
//! cairn-node run --name n2 --listen 127.0.0.1:7401 --join 127.0.0.1:7400 --data-dir ./data/n2 --cluster ./cluster
//! cairn-node send counter alice add 5 --join 127.0.0.1:7401 --cluster ./cluster
//! cairn-node status --join 127.0.0.1:7400 --cluster ./cluster
//! ```
//!
//! With no arguments it runs a one-node mesh on 127.0.0.1:7400 with storage under `./data`
//! and a cluster CA under `./cluster` (created if missing). A running node prints
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
        /// The node name.
        name: String,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
}

/// How a node authenticates.
#[derive(Args, Debug, Clone)]
struct TlsArgs {
    /// Cluster CA directory (from `cluster init`); the node issues its certificate from it.
    #[arg(long, default_value = "./cluster")]
    cluster: PathBuf,
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
    /// --listen 0.0.0.0 or [::], the address this host routes to its seeds from).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cairn::init_logging(cli.log_format);
    let result = match cli.command {
        None => run(RunArgs::parse_from(["cairn-node"])),
        Some(Command::Run(args)) => run(args),
        Some(Command::Cluster(ClusterCommand::Init { dir })) => ca::init(&dir),
        Some(Command::Cluster(ClusterCommand::Issue { dir, name, out })) => {
            let role = cairn::net::Role::of_name(&name);
            ca::issue(
                &dir,
                &name,
                role,
                cairn::net::tls::DEFAULT_CERT_DAYS,
                None,
                &out,
            )
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

/// Applies the TLS options to a builder.
fn with_tls(mut builder: NodeBuilder, tls: &TlsArgs) -> NodeBuilder {
    builder = match (&tls.cert, &tls.key, &tls.ca) {
        (Some(cert), Some(key), Some(ca)) => builder.tls_files(cert, key, ca),
        _ => builder.cluster(&tls.cluster),
    };
    if tls.insecure_dev {
        builder = builder.insecure_dev();
    }
    builder
}

fn run(args: RunArgs) -> Result<(), CliError> {
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
    // A first node (no seeds) with no CA yet makes one, so that `cairn-node` alone starts
    // a one-node mesh. A node that joins others must be given their CA.
    let ca_missing = !args.tls.cluster.join(cairn::net::tls::CA_KEY_FILE).exists();
    if args.tls.cert.is_none() && !args.tls.insecure_dev && ca_missing && args.join.is_empty() {
        tracing::warn!(dir = %args.tls.cluster.display(), "no cluster CA there; creating a new cluster");
        ClusterCa::generate()?.save(&args.tls.cluster)?;
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
    node.block_on(report_peers(mesh.clone(), events));
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
