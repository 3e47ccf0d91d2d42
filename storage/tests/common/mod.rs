//! Shared by storage's integration tests: seeded randomness, child processes that re-run
//! this test binary, and the power-loss shim (`powerloss_shim.c`, see its header).

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed of a randomized test: `CAIRN_SEED` if set (to replay a failure), else a fresh
/// one. Printed either way, so a failing run's output names the seed that replays it.
pub fn seeded_rng() -> (u64, StdRng) {
    let seed = match std::env::var("CAIRN_SEED") {
        Ok(s) => s.parse().expect("CAIRN_SEED must be a u64"),
        Err(_) => rand::thread_rng().gen(),
    };
    eprintln!("seed {seed}: replay with CAIRN_SEED={seed}");
    (seed, StdRng::seed_from_u64(seed))
}

/// Marks stdout lines of a child that are meant for the parent.
pub const CHILD_LINE: &str = "CHILD ";

/// Makes any panic in this (child) process end it at once with a line on stderr, so a
/// panicking worker thread cannot silently stop contributing while the others carry on.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("CHILD PANICKED");
        std::process::abort();
    }));
}

/// A running child: this test binary re-executed to run one `#[test]` function.
pub struct ChildRun {
    pub child: Child,
    /// Everything the child wrote to stderr, collected by a thread.
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildRun {
    /// Starts `test` (a `#[test]` fn of this binary) with `env`; `configure` may add more.
    pub fn start(test: &str, env: &[(&str, &str)], configure: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        configure(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = pipe.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        ChildRun {
            child,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The child's stdout lines marked with [`CHILD_LINE`], from the mark on (libtest may
    /// have begun the line with `test name ... `).
    pub fn lines(&mut self) -> impl Iterator<Item = String> {
        let out: ChildStdout = self.child.stdout.take().unwrap();
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.split_once(CHILD_LINE).map(|(_, rest)| rest.to_owned()))
    }

    /// Waits for the child; returns its exit status and everything it wrote on stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        self.stderr_reader.take().unwrap().join().unwrap();
        let stderr = std::mem::take(&mut *self.stderr.lock().unwrap());
        (status, stderr)
    }
}

/// Prints one whole line for the parent with one `write` (atomic on a pipe).
pub fn tell_parent(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{CHILD_LINE}{line}\n").as_bytes())
        .unwrap();
    out.flush().unwrap();
}

/// The power-loss shim, built once per test binary with the system C compiler.
pub fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/powerloss_shim.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("cairn-powerloss-shim.so");
        // Build under a unique name, then rename: test binaries may build it concurrently.
        let tmp = dir.join(format!("cairn-powerloss-shim.{}.so", std::process::id()));
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args([
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
            ])
            .arg(&tmp)
            .arg(&src)
            .args(["-ldl", "-lpthread"])
            .status()
            .expect("a C compiler (cc) builds the power-loss shim");
        assert!(status.success(), "building {} failed", src.display());
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
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
