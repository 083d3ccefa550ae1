//! Finding tools on this machine: executables on `PATH`, `llvm-strip` from
//! rustup's llvm-tools, and running a probe command with a time limit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::Duration;

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
    let sysroot = output("rustc", &["--print", "sysroot"])?;
    let host = crate::infra::environment::parse_rustc_vv(&output("rustc", &["-vV"])?).0?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-strip");
    path.is_file().then_some(path)
}

/// Runs a command with a deadline; its stdout when it succeeded.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    output_within(program, args, Duration::from_secs(20)).ok()
}

/// stdout of a successful run, or a one-line reason (stderr's first line).
pub(crate) fn output_within(
    program: &str,
    args: &[&str],
    limit: Duration,
) -> std::result::Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program} {}` did not answer within {} s",
                    args.join(" "),
                    limit.as_secs()
                ));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output");
        Err(format!("`{program} {}` failed: {first}", args.join(" ")))
    }
}
