//! Registry options end to end (issue 4 items 1 and 7) against a local `docker-registry` on
//! loopback, reached from the guest at 10.0.2.2: push/pull round trip with
//! `--insecure-registry`, applied at the next command of a running memres VM; login with
//! `--password-stdin` against an htpasswd-protected registry; `--config auth.json` for one
//! command; `--registry` as the default for unqualified names; `--config` validation.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use vcontainer_tests::fixtures::{write_auth_file, LocalRegistry, MemresGuard};
use vcontainer_tests::{busybox_rootfs_tar, pids_matching, stderr, stdout, vm_or_skip, World};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

fn registry_or_skip() -> bool {
    if LocalRegistry::available() {
        return true;
    }
    eprintln!("SKIPPED: /usr/bin/docker-registry is not installed");
    false
}

fn ok(w: &World, tool: &str, args: &[&str]) -> String {
    let o = w.run(tool, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{tool} {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn fails(w: &World, tool: &str, args: &[&str]) -> String {
    let o = w.run(tool, args);
    assert_ne!(
        o.status.code(),
        Some(0),
        "{tool} {args:?} succeeded: {}",
        stdout(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

/// A world with a running memres VM and the busybox image `bb:1`.
fn memres_with_busybox(tool: &str) -> World {
    let w = World::new();
    ok(&w, tool, &["memres", "start"]);
    let tar = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    let o = w.run(tool, ["vimport", tar.to_str().expect("utf-8"), "bb:1"]);
    if o.status.code() != Some(0) {
        let _ = w.run(tool, ["memres", "stop"]);
        panic!("{tool} vimport of the busybox rootfs: {}", stderr(&o));
    }
    w
}

/// `tool args` with `input` on stdin.
fn with_stdin(w: &World, tool: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = w
        .cmd(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn config_file_is_validated_before_anything_runs() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let d = w.home.path().join("auth");
    std::fs::create_dir_all(&d).expect("mkdir");
    let good = d.join("good.json");
    write_auth_file(&good, "10.0.2.2:5000", "u", "p", 0o600);
    let wide = d.join("wide.json");
    write_auth_file(&wide, "10.0.2.2:5000", "u", "p", 0o644);
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let empty = d.join("empty.json");
    std::fs::write(&empty, "").expect("write");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let big = d.join("big.json");
    std::fs::write(&big, vec![b' '; 1024 * 1024 + 1]).expect("write");
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let junk = d.join("junk.json");
    std::fs::write(&junk, "not json").expect("write");
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cases: [(&Path, &str); 7] = [
        (
            &wide,
            "file has unsafe permissions (0644); expected 0600 or 0400.",
        ),
        (&link, "must not be a symlink"),
        (&d.join("missing.json"), "file not found"),
        (&d, "must be a regular file"),
        (&empty, "file is empty or too small to be valid JSON"),
        (&big, "file is too large"),
        (&junk, "is not valid JSON"),
    ];
    for (tool, _) in TOOLS {
        for (path, want) in cases {
            let o = w.run(
                tool,
                ["--config", path.to_str().expect("utf-8"), "pull", "bb:1"],
            );
            assert_eq!(
                o.status.code(),
                Some(125),
                "{tool} {}: {}",
                path.display(),
                stderr(&o)
            );
            let err = stderr(&o);
            assert!(
                err.contains(&format!("--config {}: {want}", path.display())),
                "{tool}: {err}"
            );
        }
        // the environment variable gets the same checks (both tools read both names)
        let o = w
            .cmd(tool)
            .env("VDKR_CONFIG", &wide)
            .args(["images"])
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        assert!(stderr(&o).contains("unsafe permissions"), "{}", stderr(&o));
    }
    assert!(
        pids_matching(&w.home.path().display().to_string()).is_empty(),
        "a process was started although --config was refused"
    );
}

#[test]
fn push_pull_round_trip_with_insecure_registry() {
    if !registry_or_skip() {
        return;
    }
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let reg = LocalRegistry::plain().expect("registry");
        let addr = reg.guest_address();
        let remote = format!("{addr}/bb:1");
        let w = memres_with_busybox(tool);
        let _stop = MemresGuard::new(&w, tool);
        ok(&w, tool, &["tag", "bb:1", &remote]);
        // without the option the registry is TLS: refused
        let out = fails(&w, tool, &["push", &remote]);
        assert!(out.to_lowercase().contains("http"), "{tool}: {out}");
        // with it, on the same memres VM, without a restart
        ok(&w, tool, &["--insecure-registry", &addr, "push", &remote]);
        assert!(
            reg.has_repository("bb"),
            "{tool}: nothing arrived; {}",
            reg.log()
        );
        ok(&w, tool, &["rmi", &remote]);
        ok(&w, tool, &["rmi", "bb:1"]);
        ok(&w, tool, &["--insecure-registry", &addr, "pull", &remote]);
        let out = ok(&w, tool, &["vrun", &remote, "/bin/echo", "pulled-ok"]);
        assert_eq!(out.trim(), "pulled-ok");
        // the next command without the option is back to TLS
        ok(&w, tool, &["rmi", &remote]);
        fails(&w, tool, &["pull", &remote]);
        ok(&w, tool, &["memres", "stop"]);
    }
}

#[test]
fn login_with_password_stdin_against_htpasswd_registry() {
    if !registry_or_skip() {
        return;
    }
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let reg = LocalRegistry::with_htpasswd("tester", "s3cret pass").expect("registry");
        assert_eq!(reg.probe().expect("probe"), 401);
        let addr = reg.guest_address();
        let remote = format!("{addr}/private/bb:1");
        let w = memres_with_busybox(tool);
        let _stop = MemresGuard::new(&w, tool);
        ok(&w, tool, &["tag", "bb:1", &remote]);
        let out = fails(&w, tool, &["--insecure-registry", &addr, "push", &remote]);
        assert!(
            out.to_lowercase().contains("unauthorized")
                || out.contains("authentication required")
                || out.contains("no basic auth credentials"),
            "{tool}: {out}"
        );
        let login = [
            "--insecure-registry",
            &addr,
            "login",
            "-u",
            "tester",
            "--password-stdin",
            &addr,
        ];
        let o = with_stdin(&w, tool, &login, "wrong\n");
        assert_ne!(o.status.code(), Some(0), "{tool}: wrong password accepted");
        let o = with_stdin(&w, tool, &login, "s3cret pass\n");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tool}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("Login Succeeded"), "{}", stdout(&o));
        ok(&w, tool, &["--insecure-registry", &addr, "push", &remote]);
        assert!(reg.has_repository("private/bb"));
        ok(&w, tool, &["logout", &addr]);
        ok(&w, tool, &["memres", "stop"]);
    }
}

#[test]
fn config_auth_file_authenticates_one_command_only() {
    if !registry_or_skip() {
        return;
    }
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let reg = LocalRegistry::with_htpasswd("tester", "pw").expect("registry");
        let addr = reg.guest_address();
        let remote = format!("{addr}/cfg/bb:1");
        let w = memres_with_busybox(tool);
        let _stop = MemresGuard::new(&w, tool);
        let auth = w.home.path().join("auth.json");
        write_auth_file(&auth, &addr, "tester", "pw", 0o600);
        ok(&w, tool, &["tag", "bb:1", &remote]);
        let auth_s = auth.to_str().expect("utf-8");
        ok(
            &w,
            tool,
            &[
                "--config",
                auth_s,
                "--insecure-registry",
                &addr,
                "push",
                &remote,
            ],
        );
        assert!(reg.has_repository("cfg/bb"));
        // the credentials were for that command only
        fails(&w, tool, &["--insecure-registry", &addr, "push", &remote]);
        ok(&w, tool, &["memres", "stop"]);
    }
}

#[test]
fn default_registry_serves_unqualified_names() {
    if !registry_or_skip() {
        return;
    }
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let reg = LocalRegistry::plain().expect("registry");
        let addr = reg.guest_address();
        let w = memres_with_busybox(tool);
        let _stop = MemresGuard::new(&w, tool);
        let remote = format!("{addr}/bb:1");
        ok(&w, tool, &["tag", "bb:1", &remote]);
        ok(&w, tool, &["--insecure-registry", &addr, "push", &remote]);
        ok(&w, tool, &["rmi", &remote]);
        ok(&w, tool, &["rmi", "bb:1"]);
        // the private default registry is reached over plain HTTP without another option
        ok(&w, tool, &["--registry", &addr, "pull", "bb:1"]);
        let out = ok(&w, tool, &["vrun", "bb:1", "/bin/echo", "default-ok"]);
        assert_eq!(out.trim(), "default-ok");
        ok(&w, tool, &["memres", "stop"]);
    }
}
