//! Making sure the external tools a command needs are present, installing the
//! missing ones when allowed (apt packages as root, rustup components).
//!
//! Commands describe what they need as a list of [`Tool`]s; probing is kept
//! apart from planning so the planning can be unit-tested without a machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::infra::targets;

/// The first executable file called `name` in the directories of `path_var`.
pub fn find_on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
pub(crate) fn is_executable(path: &Path) -> bool {
    path.is_file() || path.with_extension("exe").is_file()
}

/// `<sysroot>/lib/rustlib/<host>/bin/llvm-strip` from the llvm-tools component.
pub fn llvm_strip() -> Option<PathBuf> {
    let sysroot = targets::output("rustc", &["--print", "sysroot"])?;
    let host = crate::infra::environment::parse_rustc_vv(&targets::output("rustc", &["-vV"])?).0?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-strip");
    path.is_file().then_some(path)
}
