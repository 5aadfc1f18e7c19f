//! `--config auth.json`: the registry credentials file, checked before it goes anywhere.
//!
//! The rules and messages are the old tool's (docs/old-tool-cli.md "Registry auth file"),
//! made race-free: the file is opened without following symlinks and every check is made on
//! the open descriptor, so it cannot be swapped between the check and the read. The contents are then pushed
//! into the guest for one command only (never on a command line).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Larger files are refused (an auth file is a few hundred bytes).
pub const MAX_AUTH_BYTES: u64 = 1024 * 1024;

/// Why `--config FILE` was refused; the message starts with `--config FILE:`.
#[derive(Debug, thiserror::Error)]
#[error("--config {}: {reason}", .path.display())]
pub struct AuthConfigError {
    pub path: PathBuf,
    pub reason: String,
}

/// A validated auth file, read into memory.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// Non-fatal findings (a file owned by another user).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for AuthFile {
    /// Never prints the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// `--registry-user` / `--registry-password`: turned into an auth-file entry for one
/// registry, so the password never appears on a guest command line.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `auth` value of a docker config.json / podman auth.json entry:
    /// base64 of `user:password`.
    pub fn basic_auth(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password).as_bytes())
    }
}

fn refuse(path: &Path, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Opens, checks and reads the auth file at `path`: no symlink, a regular file of the
/// user's own (else a warning), 0600/0400, at most 1 MiB, a JSON object.
pub fn load(path: &Path) -> Result<AuthFile, AuthConfigError> {
    let mut file = open_no_symlink(path)?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(path, format!("cannot be examined: {e}")))?;
    let warnings = check(path, &meta)?;
    let contents = read_json_object(path, &mut file, meta.len())?;
    Ok(AuthFile {
        path: path.to_path_buf(),
        contents,
        warnings,
    })
}

/// Opens `path` for reading unless it is a symlink. A symlink is refused by name first, so
/// the message says so (O_NOFOLLOW alone gives ELOOP, which reads like a loop).
fn open_no_symlink(path: &Path) -> Result<File, AuthConfigError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(path, "file not found"))
        }
        Err(e) => return Err(refuse(path, format!("cannot be examined: {e}"))),
        Ok(m) if m.file_type().is_symlink() => return Err(refuse(path, "must not be a symlink")),
        Ok(_) => {}
    }
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e {
            e if e.raw_os_error() == Some(libc::ELOOP) => refuse(path, "must not be a symlink"),
            e if e.kind() == std::io::ErrorKind::PermissionDenied => {
                refuse(path, "file is not readable")
            }
            e => refuse(path, format!("cannot be opened: {e}")),
        })
}

/// The opened file's kind, mode and size; a warning when someone else owns it.
fn check(path: &Path, meta: &std::fs::Metadata) -> Result<Vec<String>, AuthConfigError> {
    if !meta.file_type().is_file() {
        return Err(refuse(path, "must be a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 || mode & 0o400 == 0 {
        return Err(refuse(
            path,
            format!(
                "file has unsafe permissions ({mode:04o}); expected 0600 or 0400.\nFix with: chmod 600 \"{}\"",
                path.display()
            ),
        ));
    }
    if meta.len() > MAX_AUTH_BYTES {
        return Err(refuse(
            path,
            format!("file is too large ({} bytes, max 1 MiB)", meta.len()),
        ));
    }
    if meta.len() < 2 {
        return Err(refuse(path, "file is empty or too small to be valid JSON"));
    }
    let mut warnings = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        warnings.push(format!(
            "Warning: --config {} is owned by uid {}, not by you (uid {euid})",
            path.display(),
            meta.uid()
        ));
    }
    Ok(warnings)
}

/// The file's bytes (at most 1 MiB, however it grew since it was examined), which must
/// hold a JSON object.
fn read_json_object(path: &Path, file: &mut File, len: u64) -> Result<Vec<u8>, AuthConfigError> {
    let mut contents = Vec::with_capacity(len.min(MAX_AUTH_BYTES) as usize);
    file.take(MAX_AUTH_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| refuse(path, format!("file is not readable: {e}")))?;
    if contents.len() as u64 > MAX_AUTH_BYTES {
        return Err(refuse(path, "file is too large (max 1 MiB)"));
    }
    match serde_json::from_slice::<serde_json::Value>(&contents) {
        Ok(serde_json::Value::Object(_)) => Ok(contents),
        Ok(_) => Err(refuse(path, "must hold a JSON object ({\"auths\": {...}})")),
        Err(e) => Err(refuse(path, format!("is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    const GOOD: &[u8] = br#"{"auths":{"10.0.2.2:5000":{"auth":"dTpw"}}}"#;

    #[test]
    fn basic_auth_is_standard_base64_and_debug_hides_the_password() {
        let c = Credentials {
            user: "tester".into(),
            password: "s3cret pass".into(),
        };
        assert_eq!(c.basic_auth(), "dGVzdGVyOnMzY3JldCBwYXNz");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn owner_only_files_are_accepted() {
        let d = tempfile::tempdir().expect("tmp");
        for mode in [0o600, 0o400] {
            let p = write(d.path(), &format!("a{mode:o}.json"), GOOD, mode);
            let a = load(&p).expect("valid");
            assert_eq!(a.contents, GOOD);
            assert!(
                !format!("{a:?}").contains("dTpw"),
                "Debug leaks credentials"
            );
        }
    }

    #[test]
    fn every_rule_names_the_problem() {
        let d = tempfile::tempdir().expect("tmp");
        let good = write(d.path(), "good.json", GOOD, 0o600);
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        let cases: Vec<(PathBuf, &str)> = vec![
            (d.path().join("missing.json"), "file not found"),
            (link, "must not be a symlink"),
            (d.path().to_path_buf(), "must be a regular file"),
            (
                write(d.path(), "wide.json", GOOD, 0o644),
                "unsafe permissions (0644)",
            ),
            (write(d.path(), "group.json", GOOD, 0o640), "chmod 600"),
            (
                write(d.path(), "empty.json", b"{", 0o600),
                "empty or too small",
            ),
            (
                write(d.path(), "bad.json", b"{nope", 0o600),
                "not valid JSON",
            ),
            (write(d.path(), "arr.json", b"[1,2]", 0o600), "JSON object"),
            (
                write(
                    d.path(),
                    "big.json",
                    &vec![b' '; (MAX_AUTH_BYTES + 1) as usize],
                    0o600,
                ),
                "too large",
            ),
        ];
        for (path, want) in cases {
            let e = load(&path).expect_err(want).to_string();
            assert!(
                e.starts_with(&format!("--config {}:", path.display())),
                "{e}"
            );
            assert!(e.contains(want), "{}: {e}", path.display());
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let e = load(&p).expect_err("fifo").to_string();
        assert!(e.contains("must be a regular file"), "{e}");
    }
}
