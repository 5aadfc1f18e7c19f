//! Reads the runtime's CLI binary into the page cache in the background at boot.
//!
//! Why: the first command of a cold VM runs the runtime's CLI (`docker`, `podman`: tens of
//! MB) from the squashfs rootfs, and under TCG paging it in (decompression included) takes
//! most of a second. The guest has two vCPUs and the host spends that time connecting and
//! starting services, so reading the file now takes it off the command's path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use crate::resolve::{resolve, DEFAULT_PATH};

/// The file of `program` on the agent's PATH; only plain names are looked up.
fn program_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return None;
    }
    resolve(program, DEFAULT_PATH, Path::new("/")).ok()
}

/// Reads `path` to its end; the bytes read.
fn read_through(path: &Path) -> std::io::Result<u64> {
    std::io::copy(&mut File::open(path)?, &mut std::io::sink())
}

/// Starts reading the CLI of `runtime` (named as the runtime, as docker and podman are) on a
/// thread of its own; a missing binary is no error (the command will say so).
pub(super) fn runtime_cli(runtime: &str) {
    let Some(path) = program_path(runtime) else {
        return;
    };
    let _ = thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            let started = Instant::now();
            match read_through(&path) {
                Ok(bytes) => crate::debug_log!(
                    "prefetched {} ({} KiB) in {:.2} s",
                    path.display(),
                    bytes / 1024,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => crate::debug_log!("prefetching {}: {e}", path.display()),
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_by_plain_name_only() {
        assert!(program_path("sh").is_some());
        assert_eq!(program_path(""), None);
        assert_eq!(program_path("/bin/sh"), None);
        assert_eq!(program_path("../bin/sh"), None);
        assert_eq!(program_path("no-such-program-here"), None);
    }

    #[test]
    fn reads_a_file_to_its_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("blob");
        std::fs::write(&file, vec![7u8; 3 << 20 | 5]).expect("write");
        assert_eq!(read_through(&file).expect("read"), (3 << 20 | 5) as u64);
    }
}
