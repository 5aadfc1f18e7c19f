//! One error type for the library; the binary turns it into a message with anyhow.

use std::path::{Path, PathBuf};

/// Everything that can stop a guest image build. Each variant names the file or program
/// involved, because a build runs for minutes and a bare "No such file" would be useless.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source} (is it installed? scripts/setup-host.sh installs it)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}){}", tail_suffix(.stderr_tail))]
    Command {
        program: String,
        status: std::process::ExitStatus,
        stderr_tail: String,
    },
    #[error(transparent)]
    UnknownArch(#[from] vcontainer_arch::UnknownArch),
    #[error("kernel module {name:?} is neither a module nor built into kernel {kernel_version}")]
    ModuleNotFound {
        name: String,
        kernel_version: String,
    },
    #[error("module dependency loop through {0}")]
    ModuleCycle(String),
    #[error("unexpected rootfs layout: {0}")]
    Layout(String),
    #[error("refusing to write {path}: {reason}")]
    UnsafePath { path: PathBuf, reason: &'static str },
    #[error("{what} is too large for a newc cpio archive (4 GiB limit)")]
    TooLarge { what: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("writing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.trim_end())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the action and the path to an io::Error, e.g. `.map_err(io_err("reading", &p))`.
pub fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
