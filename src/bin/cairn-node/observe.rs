//! The observability part of the command line: `run --metrics ADDR`, `status --json`,
//! `backup` and `restore`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn::prelude::*;
use clap::Args;

use super::{client, CliError, ClientArgs};

/// Why an observability command failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("serving metrics: {0}")]
    Serve(#[from] cairn::observe::ServeError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; a backup never overwrites a file")]
    Exists(PathBuf),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `run`'s observability options.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve /cairn/metrics, /cairn/status.json and /cairn/dashboard on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// Starts the pages' gateway if asked; prints `metrics listen=ADDR` once it listens. The
/// gateway runs until the node stops.
pub fn serve_metrics(node: &Node, args: &MetricsArgs) -> Result<(), CliError> {
    if let Some(addr) = args.metrics {
        let gateway = cairn::observe::serve(node, addr).map_err(ObserveError::Serve)?;
        if let Some(local) = gateway.local_addr() {
            println!("metrics listen={local}");
        }
    }
    Ok(())
}

/// `status`'s options.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// One JSON document (`{"members": [...]}`, each member's status) instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `status --json`: every member's status as one JSON document on stdout; a member that
/// did not answer appears with its `unreachable` reason instead.
pub fn status_json(args: &ClientArgs) -> Result<(), CliError> {
    let node = client::client(args, "status")?;
    let cluster = client::cluster_status(&node)?;
    node.shutdown();
    let members: Vec<serde_json::Value> = cluster
        .members
        .into_iter()
        .map(|m| match m.status {
            Ok(status) => serde_json::to_value(status),
            Err(reason) => Ok(serde_json::json!({
                "node": m.node, "name": m.name, "addr": m.addr, "unreachable": reason,
            })),
        })
        .collect::<Result<_, _>>()
        .map_err(ObserveError::Json)?;
    let doc = serde_json::json!({ "members": members, "via": cluster.via });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).map_err(ObserveError::Json)?
    );
    Ok(())
}

/// `backup`'s options.
#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// The node's data directory (the node may be running).
    #[arg(long, default_value = cairn::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The backup file to write (must not exist).
    #[arg(long)]
    out: PathBuf,
}

/// `backup`: a consistent, compacted copy of a node's store, taken while it runs.
pub fn backup(args: &BackupArgs) -> Result<(), CliError> {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.out)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => ObserveError::Exists(args.out.clone()),
            _ => ObserveError::File {
                what: "creating",
                path: args.out.clone(),
                source,
            },
        })?;
    if let Err(e) = cairn::storage::Store::backup_dir(&args.data_dir, &out) {
        drop(out);
        let _ = std::fs::remove_file(&args.out);
        return Err(ObserveError::Storage(e).into());
    }
    out.sync_all().map_err(|source| ObserveError::File {
        what: "flushing",
        path: args.out.clone(),
        source,
    })?;
    let size = out.metadata().map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {} written to {} ({size} bytes)",
        args.data_dir.display(),
        args.out.display()
    );
    Ok(())
}

/// `restore`'s options.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A file written by `backup`.
    file: PathBuf,
    /// The data directory to restore into (must hold no store yet).
    #[arg(long)]
    data_dir: PathBuf,
}

/// `restore`: puts a backup in place as a new node's store.
pub fn restore(args: &RestoreArgs) -> Result<(), CliError> {
    restore_into(&args.file, &args.data_dir)?;
    println!(
        "restored {} into {}",
        args.file.display(),
        args.data_dir.display()
    );
    Ok(())
}

fn restore_into(file: &Path, data_dir: &Path) -> Result<(), ObserveError> {
    if !file.is_file() {
        return Err(ObserveError::File {
            what: "reading",
            path: file.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(cairn::storage::Store::restore(file, data_dir)?)
}
