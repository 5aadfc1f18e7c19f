//! virtiofsd, the host side of one volume share (see `vm::shares`): it serves one host
//! directory, and nothing else, to a memres VM.
//!
//! Copies cannot give `run -d -v ./dir:/data` what docker users expect (a host edit seen by
//! the running container, its writes seen on the host while it runs); a shared filesystem
//! can. Each volume directory gets its own virtiofsd (`--shared-dir <that dir>`,
//! `--readonly` for `:ro`), sandboxed in its own namespaces and run as the CLI's user, so
//! root in the guest (a `--privileged` container) reaches the volumes it was given and no
//! other host file: see docs/security.md. `VCONTAINER_HOST_SHARE=off` keeps memres VMs
//! copy-only.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process;

/// `VCONTAINER_HOST_SHARE=off` (or `0`, `no`) keeps memres VMs without the share: volumes
/// are then copied in and synced back as in batch mode.
pub const DISABLE_ENV: &str = "VCONTAINER_HOST_SHARE";
/// The program, found like vhost-device-vsock (`<exe>/../libexec`, then PATH).
pub const PROGRAM: &str = "virtiofsd";

/// True unless the user switched the share off with [`DISABLE_ENV`].
pub fn enabled_by_env() -> bool {
    !matches!(
        std::env::var(DISABLE_ENV).ok().as_deref().map(str::trim),
        Some("off" | "0" | "no" | "false")
    )
}

/// virtiofsd's arguments for sharing `dir` (read-only with `read_only`) on `socket`.
///
/// `--cache auto`: the guest caches attributes and directory entries for one second and
/// revalidates file data on every open (close-to-open consistency), so a host edit is seen
/// by the next open inside the container within that second, while a build reading many
/// files does not pay a round trip per stat. `never` would see edits at once but makes every
/// lookup a vhost-user round trip (slow under TCG); `always` would not see host edits at all.
/// Measured here (TCG, x86_64 guest): a host edit reached a container polling every 0.2 s
/// within 0.20-0.35 s with either `auto` or `never`, while `run --rm` reading 2000 small
/// files twice took 12 s with `auto` against 30 s with `never`.
/// No `--writeback`: the container's writes reach the host file as they are made, not when
/// the guest's page cache is flushed. `--sandbox namespace` always: virtiofsd in its own
/// mount, pid and net namespaces (a user namespace too when not root), as it recommends;
/// without them there is no share (see [`spawn`]). `--readonly`: a `:ro` volume is refused
/// writes by the host side, whatever root in the guest remounts.
pub fn argv(socket: &Path, dir: &Path, read_only: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--socket-path".into(),
        socket.as_os_str().to_owned(),
        "--shared-dir".into(),
        dir.as_os_str().to_owned(),
    ];
    if read_only {
        a.push("--readonly".into());
    }
    for (k, v) in [
        ("--cache", "auto"),
        ("--sandbox", "namespace"),
        ("--log-level", "warn"),
    ] {
        a.push(k.into());
        a.push(v.into());
    }
    a
}

/// Why virtiofsd cannot sandbox itself here, if it cannot: an unprivileged user needs user
/// namespaces, which some hosts disable (Debian's `kernel.unprivileged_userns_clone=0`,
/// Ubuntu's AppArmor restriction). There is then no share rather than an unsandboxed one
/// (`--sandbox none` would serve the host's files with no isolation at all): volumes are
/// copied, and the reason is shown to the user.
fn sandbox_refusal(root: bool, userns: bool) -> Option<String> {
    (!root && !userns).then(|| {
        format!(
            "{PROGRAM} cannot sandbox itself (unprivileged user namespaces are disabled on \
             this host) and is not run without a sandbox: volumes are copied instead of live"
        )
    })
}

fn userns_allowed() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() != Some("0")
        && read("/proc/sys/user/max_user_namespaces").as_deref() != Some("0")
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() != Some("1")
}

/// Files of one virtiofsd, and what it serves.
#[derive(Debug, Clone)]
pub struct Files<'a> {
    pub socket: &'a Path,
    pub log: &'a Path,
    pub dir: &'a Path,
    pub read_only: bool,
}

/// The virtiofsd to run, or why volumes of this host cannot be shared (not installed, no
/// sandbox possible): checked when a memres VM boots, to decide whether it gets share slots.
pub fn program() -> Result<PathBuf, String> {
    let bin = process::which(PROGRAM).ok_or_else(|| {
        format!("{PROGRAM} not found (scripts/setup-host.sh installs it; or put it on PATH)")
    })?;
    if let Some(why) = sandbox_refusal(nix::unistd::geteuid().is_root(), userns_allowed()) {
        return Err(why);
    }
    Ok(bin)
}

/// Starts virtiofsd for one share, outliving this process: it ends by itself when QEMU, its
/// only client, goes (the supervisor also stops it with the VM). `Err` says why there is no
/// share, for the volume to be copied instead.
pub fn spawn(files: &Files<'_>) -> Result<Child, String> {
    // no retry with `--sandbox none`: a share without a sandbox is worse than none
    spawn_with(&program()?, files)
}

fn spawn_with(bin: &Path, files: &Files<'_>) -> Result<Child, String> {
    remove_files(files.socket);
    let log = File::create(files.log).map_err(|e| format!("{}: {e}", files.log.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(argv(files.socket, files.dir, files.read_only))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log2)
        .stderr(log);
    process::close_other_fds(&mut cmd);
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    match wait_listening(&mut child, files) {
        Ok(()) => Ok(child),
        Err(e) => {
            process::kill_child(&mut child);
            remove_files(files.socket);
            Err(e)
        }
    }
}

/// QEMU connects to the socket at start-up, so it must exist first. With namespaces the
/// socket appears before the sandbox is entered (and an unshare refused ends the process),
/// so wait for the sandboxed child as well.
fn wait_listening(child: &mut Child, files: &Files<'_>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "{PROGRAM} (--sandbox namespace) exited ({st}):\n{}",
                process::tail_lines(files.log, 5)
            ));
        }
        let ready = files.socket.exists() && has_children(child.id() as i32).unwrap_or(true);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{PROGRAM} did not listen on {} within 10 s",
                files.socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` has a child (None: the kernel does not say).
fn has_children(pid: i32) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .map(|s| !s.trim().is_empty())
}

/// The socket and the pid file virtiofsd writes next to it.
pub fn remove_files(socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(pid_file(socket));
}

fn pid_file(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".pid");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn argv_shares_one_dir_with_coherent_caching() {
        let a = strings(&argv(
            Path::new("/s/vfs0.sock"),
            Path::new("/home/u/src"),
            false,
        ));
        assert_eq!(
            a,
            [
                "--socket-path",
                "/s/vfs0.sock",
                "--shared-dir",
                "/home/u/src",
                "--cache",
                "auto",
                "--sandbox",
                "namespace",
                "--log-level",
                "warn"
            ]
        );
        assert!(!a.iter().any(|x| x == "--writeback"));
        let ro = strings(&argv(Path::new("/s/vfs1.sock"), Path::new("/d"), true));
        assert_eq!(ro[4], "--readonly", "{ro:?}");
    }

    #[test]
    fn no_share_rather_than_an_unsandboxed_one() {
        assert_eq!(sandbox_refusal(true, false), None, "root has namespaces");
        assert_eq!(sandbox_refusal(false, true), None);
        let why = sandbox_refusal(false, false).expect("refused");
        assert!(why.contains("copied"), "{why}");
    }

    #[test]
    fn pid_file_is_next_to_the_socket() {
        assert_eq!(
            pid_file(Path::new("/s/virtiofs.sock")),
            Path::new("/s/virtiofs.sock.pid")
        );
    }

    #[test]
    fn a_missing_program_is_a_reason_not_a_panic() {
        let t = tempfile::tempdir().expect("tmp");
        let sock = t.path().join("v.sock");
        let log = t.path().join("v.log");
        let bin = t.path().join("false-virtiofsd");
        // Written by a child shell, not by this process: while this (multi-threaded) test
        // process held the script open for writing, a fork by any parallel test would
        // inherit that fd until its exec, and executing the script then fails with
        // ETXTBSY ("Text file busy").
        let written = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '#!/bin/sh\\necho nope >&2\\nexit 3\\n' > \"$1\" && chmod 755 \"$1\"",
            ])
            .arg("sh")
            .arg(&bin)
            .status()
            .expect("sh");
        assert!(written.success());
        let files = Files {
            socket: &sock,
            log: &log,
            dir: t.path(),
            read_only: false,
        };
        let e = spawn_with(&bin, &files).expect_err("exits at once");
        assert!(e.contains("exited") && e.contains("nope"), "{e}");
        assert!(!sock.exists());
    }
}
