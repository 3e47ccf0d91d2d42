//! `LD_PRELOAD` shims for tests: C sources built into shared libraries with the system C
//! compiler (`$CC`, else `cc`), once per test binary and output directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the C file `src` into `out_dir/cairn-<stem>.so` and returns that path. Builds under
/// a unique name, then renames: test binaries may build the same shim at once.
pub fn build_c_shim(src: &Path, out_dir: &Path) -> PathBuf {
    let stem = src.file_stem().unwrap().to_string_lossy();
    let out = out_dir.join(format!("cairn-{stem}.so"));
    let tmp = out_dir.join(format!("cairn-{stem}.{}.so", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&tmp)
        .arg(src)
        .args(["-ldl", "-lpthread"])
        .status()
        .expect("a C compiler (cc) builds the shim");
    assert!(status.success(), "building {} failed", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}
