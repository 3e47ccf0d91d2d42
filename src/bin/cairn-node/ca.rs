//! The offline cluster CA: `cairn-node ca init`, `cairn-node cert issue` and
//! `cairn-node cert serial` (for the revocation list, `run --revoked`).
//!
//! The CA's private key stays in the operator's CA directory. Nodes and clients are given
//! their own certificate and key plus the CA certificate (`--cert/--key/--ca`), never the
//! CA key. Issued certificates carry the holder's name and role (node or client) and are
//! valid for a bounded time ([`DEFAULT_CERT_DAYS`] unless `--days` says otherwise); every
//! private key is written readable by its owner only.

use std::path::{Path, PathBuf};

use cairn::net::tls::{CA_CERT_FILE, CA_KEY_FILE, DEFAULT_CERT_DAYS};
use cairn::net::{ClusterCa, Role, CLIENT_NAME_SUFFIX};
use clap::Subcommand;

use super::CliError;

/// `cairn-node ca …`
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Creates a cluster CA in DIR: ca.pem (give it to every node) and ca.key (readable by
    /// its owner only; keep it on this machine).
    Init {
        /// Where to write it.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// `cairn-node cert …`
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issues a certificate signed by the CA in --ca: writes NAME.pem, NAME.key (owner-only)
    /// and the CA's ca.pem into --out, what a node needs for --cert/--key/--ca.
    Issue {
        /// The CA directory (from `ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// The holder's name (a client's gets ".client" appended if missing).
        #[arg(long)]
        name: String,
        /// node (a member that may own objects) or client (sends and calls only).
        #[arg(long, default_value = "node")]
        role: Role,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u32,
        /// The holder's region, in the certificate: the node must run with this --region
        /// and can claim no other.
        #[arg(long)]
        region: Option<String>,
        /// The directory to write the files to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the serial of a certificate (PEM), as a revocation list (`run --revoked`)
    /// takes it.
    Serial {
        /// The certificate file.
        cert: PathBuf,
    },
}

/// Runs `ca init`.
pub fn ca(command: &CaCommand) -> Result<(), CliError> {
    let CaCommand::Init { dir } = command;
    init(dir)
}

/// Makes a CA in `dir`, refusing to replace one.
pub fn init(dir: &Path) -> Result<(), CliError> {
    if dir.join(CA_KEY_FILE).exists() {
        return Err(CliError::Usage(format!(
            "{} already holds a cluster CA; refusing to replace it",
            dir.display()
        )));
    }
    ClusterCa::generate()?.save(dir)?;
    println!(
        "cluster CA written to {} (keep {CA_KEY_FILE} there; nodes need only {CA_CERT_FILE})",
        dir.display()
    );
    Ok(())
}

/// Runs `cert issue`.
pub fn cert(command: &CertCommand) -> Result<(), CliError> {
    let (ca, name, role, days, region, out) = match command {
        CertCommand::Issue {
            ca,
            name,
            role,
            days,
            region,
            out,
        } => (ca, name, role, days, region, out),
        CertCommand::Serial { cert } => return serial(cert),
    };
    issue(ca, name, *role, *days, region.as_deref(), out)
}

/// Prints the serial of the certificate in `path`.
fn serial(path: &Path) -> Result<(), CliError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?;
    let identity = cairn::net::tls::CertIdentity::of_pem(&pem)
        .ok_or_else(|| CliError::Usage(format!("{} holds no certificate", path.display())))?;
    println!("{}", identity.serial);
    Ok(())
}

/// Issues a certificate for `name` (a client's with ".client" appended if missing; in
/// `region`, if given) from the CA in `ca_dir` into `out`.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    role: Role,
    days: u32,
    region: Option<&str>,
    out: &Path,
) -> Result<(), CliError> {
    let name = &match role {
        Role::Client if !name.ends_with(CLIENT_NAME_SUFFIX) => {
            format!("{name}{CLIENT_NAME_SUFFIX}")
        }
        _ => name.to_owned(),
    };
    let ca = ClusterCa::load(ca_dir)?;
    let cert = ca.issue_in(name, role, days, region)?;
    let serial = cert
        .identity()
        .map_or_else(|| "?".to_owned(), |c| c.serial.to_string());
    let (cert_path, key_path) = cert.save(out)?;
    let ca_path = out.join(CA_CERT_FILE);
    std::fs::write(&ca_path, ca.cert_pem()).map_err(|source| CliError::Write {
        path: ca_path.clone(),
        source,
    })?;
    println!(
        "{role} certificate for {name} (serial {serial}, region {}) valid {days} days: --cert {} --key {} --ca {}",
        region.unwrap_or("-"),
        cert_path.display(),
        key_path.display(),
        ca_path.display()
    );
    Ok(())
}
