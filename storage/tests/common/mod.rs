//! Shared by storage's integration tests: the power-loss shim (`powerloss_shim.c`, see its
//! header) and the power-loss image it lets a test build.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::Rng;

/// The power-loss shim, built once per test binary with the system C compiler.
pub fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| build_shim("powerloss_shim"))
}

/// The storage-fault shim (`fault_shim.c`: ENOSPC or EIO from the Nth write or flush of
/// `data.mdb`), built once per test binary.
pub fn fault_shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| build_shim("fault_shim"))
}

/// Builds `tests/common/<name>.c` into a shared library.
fn build_shim(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/common/{name}.c"));
    cairn_testkit::shim::build_c_shim(&src, Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// Runs a child under the shim, tracking the files under `root` (see the shim's header).
pub fn under_shim(cmd: &mut Command, root: &Path, counts: Option<&Path>) {
    cmd.env("LD_PRELOAD", shim())
        .env("CAIRN_POWERLOSS_DIR", root);
    if let Some(counts) = counts {
        cmd.env("CAIRN_POWERLOSS_COUNTS", counts);
    }
}

/// The shim's counters (tracked files only), as last published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushes {
    pub fsync: u64,
    pub fdatasync: u64,
    /// Writes through a descriptor opened with `O_DSYNC`/`O_SYNC` (durable on return).
    pub dsync_writes: u64,
    /// Writes that need a later sync to be durable.
    pub writes: u64,
    pub msync: u64,
}

impl Flushes {
    /// Reads the counts file the shim keeps.
    pub fn read(path: &Path) -> Flushes {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut f = Flushes::default();
        for field in text.split_whitespace() {
            let (k, v) = field.split_once('=').expect("key=value");
            let v: u64 = v.parse().unwrap();
            match k {
                "fsync" => f.fsync = v,
                "fdatasync" => f.fdatasync = v,
                "dsync_writes" => f.dsync_writes = v,
                "writes" => f.writes = v,
                "msync" => f.msync = v,
                other => panic!("unknown count {other}"),
            }
        }
        f
    }
}

/// What [`power_loss`] left on the disk.
#[derive(Debug, Default)]
pub struct PowerLoss {
    /// Unsynced writes at the crash.
    pub pending: usize,
    /// Of those, the ones that reached the disk anyway.
    pub kept: usize,
}

/// Turns the files the shim tracked under `dir` into what a power loss at the moment the
/// child died leaves: each file becomes its durable image plus each complete unsynced write
/// with probability `keep` (applied in order). LMDB's lock file is removed (LMDB rebuilds
/// it), and so are the shim's own files, so the next child starts from this image.
pub fn power_loss(dir: &Path, rng: &mut StdRng, keep: f64) -> PowerLoss {
    let mut report = PowerLoss::default();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "lock.mdb" {
            std::fs::remove_file(&path).unwrap();
            continue;
        }
        let Some(base) = name.strip_suffix(".durable") else {
            continue;
        };
        let file = dir.join(base);
        let pending_path = dir.join(format!("{base}.pending"));
        let mut image = std::fs::read(&path).unwrap();
        let pending = std::fs::read(&pending_path).unwrap_or_default();
        let mut pos = 0;
        while pos + 16 <= pending.len() {
            let off = u64::from_ne_bytes(pending[pos..pos + 8].try_into().unwrap()) as usize;
            let len = u64::from_ne_bytes(pending[pos + 8..pos + 16].try_into().unwrap()) as usize;
            let Some(bytes) = pending.get(pos + 16..pos + 16 + len) else {
                break; // cut short by the kill: never completed, so never acknowledged
            };
            pos += 16 + len;
            report.pending += 1;
            if rng.gen_bool(keep) {
                report.kept += 1;
                if image.len() < off + len {
                    image.resize(off + len, 0);
                }
                image[off..off + len].copy_from_slice(bytes);
            }
        }
        std::fs::write(&file, &image).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(&pending_path);
    }
    report
}
