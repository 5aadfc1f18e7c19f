//! Finding the program to run, so "not found" (127) and "cannot run" (126) are told apart
//! the way a shell does, before anything is spawned.

use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};
use vcontainer_proto::exit;

/// Why a program cannot be run: the shell exit code and the message for stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct NotRunnable {
    pub code: i32,
    pub message: String,
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolve `program` against `search_path` (colon separated) and `cwd`.
pub fn resolve(program: &str, search_path: &str, cwd: &Path) -> Result<PathBuf, NotRunnable> {
    if program.is_empty() {
        return Err(not_found(program));
    }
    if program.contains('/') {
        let path = cwd.join(program);
        return match runnable(&path) {
            Candidate::Runnable => Ok(path),
            Candidate::Missing => Err(NotRunnable {
                code: exit::NOT_FOUND,
                message: format!("{program}: no such file or directory"),
            }),
            Candidate::NotExecutable => Err(not_executable(program)),
        };
    }
    let mut saw_non_executable = false;
    for dir in search_path.split(':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(dir)
        };
        let path = cwd.join(dir).join(program);
        match runnable(&path) {
            Candidate::Runnable => return Ok(path),
            Candidate::NotExecutable => saw_non_executable = true,
            Candidate::Missing => {}
        }
    }
    if saw_non_executable {
        Err(not_executable(program))
    } else {
        Err(not_found(program))
    }
}

fn not_found(program: &str) -> NotRunnable {
    NotRunnable {
        code: exit::NOT_FOUND,
        message: format!("{program}: command not found"),
    }
}

fn not_executable(program: &str) -> NotRunnable {
    NotRunnable {
        code: exit::CANNOT_EXECUTE,
        message: format!("{program}: permission denied (not an executable file)"),
    }
}

enum Candidate {
    Runnable,
    Missing,
    NotExecutable,
}

fn runnable(path: &Path) -> Candidate {
    match path.metadata() {
        Err(_) => Candidate::Missing,
        Ok(meta) if !meta.is_file() => Candidate::NotExecutable,
        Ok(_) if access(path, AccessFlags::X_OK).is_ok() => Candidate::Runnable,
        Ok(_) => Candidate::NotExecutable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_refuses_missing_and_non_executable() {
        let root = Path::new("/");
        assert!(resolve("sh", DEFAULT_PATH, root).is_ok());
        assert_eq!(
            resolve("no-such-program-xyz", DEFAULT_PATH, root)
                .expect_err("missing")
                .code,
            127
        );
        assert_eq!(
            resolve("/etc", DEFAULT_PATH, root).expect_err("dir").code,
            126
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("write");
        let err = resolve(file.to_str().expect("utf8"), DEFAULT_PATH, root).expect_err("plain");
        // root may execute a file with no x bit only if some x bit is set; none is here.
        assert_eq!(err.code, 126);
    }
}
