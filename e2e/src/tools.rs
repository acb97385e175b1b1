//! Third-party tools installed by `.ci/install-tools.sh` into `.tools/` (`source .ci/env.sh` puts them on
//! `PATH`). A missing tool skips its test locally, with a message saying how to install it; under CI (the
//! `CI` variable set to anything but `false`/`0`) a missing tool fails the test.

use std::path::{Path, PathBuf};

/// True when running under CI.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false)
}

/// The project's tools directory: `$TOOLS_DIR`, else `<repo>/.tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".tools"))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds `name`: first in the project's tool directories (`bin/`, `venv/bin/`), then on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    let tools = tools_dir();
    let local = [tools.join("bin").join(name), tools.join("venv/bin").join(name)];
    if let Some(found) = local.into_iter().find(|p| executable(p)) {
        return Some(found);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| executable(p))
    })
}

/// The project venv's Python (it has `mcp` 2.x and `jsonschema`).
pub fn venv_python() -> Option<PathBuf> {
    let python = tools_dir().join("venv/bin/python");
    executable(&python).then_some(python)
}

/// Returns the tool, or `None` after printing the skip message (locally). Panics under CI.
pub fn require(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    match found {
        Some(path) => Some(path),
        None if under_ci() => {
            panic!("{name} not installed and CI is set: run `bash .ci/install-tools.sh` first")
        }
        None => {
            println!("SKIPPED: {name} not installed — run .ci/install-tools.sh");
            eprintln!("SKIPPED: {name} not installed — run .ci/install-tools.sh");
            None
        }
    }
}
