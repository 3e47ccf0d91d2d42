//! Child test processes: a test that must crash or be killed runs in a child process — this
//! same test binary re-executed to run one `#[test]` function — talking to the parent
//! through marked stdout lines ([`tell_parent`]), with its stderr collected for failure
//! messages. [`abort_on_panic`] makes a panic on any of the child's threads end the child at
//! once, so it cannot quietly stop one part of the work while the parent keeps waiting.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

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
    /// have begun the line with `test name ... `). Read them to the end: dropping the
    /// iterator early closes the pipe under the child, whose next write then fails.
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
