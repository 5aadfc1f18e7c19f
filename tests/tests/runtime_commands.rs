//! End-to-end tests of the runner (issue 4 items 1, 4, 5, 6 and the exit-code rules): real
//! QEMU, real guest, real podman/docker, through the installed multi-call names with a
//! private HOME; foreground `vrun -p` (forwarded while it runs, freed after, also on Ctrl-C,
//! its container gone), `run --rm`'s status and removal, and one-shot volumes. Offline: the
//! only image is a busybox rootfs imported from the host.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vcontainer_tests::fixtures::MemresGuard;
use vcontainer_tests::net::{forwards_section, http_get, httpd, wait_http};
use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip, World,
};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

fn run(w: &World, tool: &str, args: &[&OsStr]) -> std::process::Output {
    w.run(tool, args)
}

fn ok(w: &World, tool: &str, args: &[&str]) -> String {
    w.run_ok(tool, args)
}

/// A world with a running memres VM and the busybox image `bb:1`.
fn memres_with_busybox(tool: &str) -> World {
    let w = World::new();
    ok(&w, tool, &["memres", "start"]);
    let tar = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    let o = run(
        &w,
        tool,
        &["import".as_ref(), tar.as_os_str(), "bb:1".as_ref()],
    );
    assert_eq!(o.status.code(), Some(0), "import: {}", stderr(&o));
    w
}

fn stop(w: &World, tool: &str) {
    let o = w.run(tool, ["memres", "stop"]);
    assert_eq!(o.status.code(), Some(0), "memres stop: {}", stderr(&o));
}

fn mtime_and_inode(p: &Path) -> (i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("metadata");
    (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino())
}

#[test]
fn exit_codes_follow_docker() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = memres_with_busybox(tool);
        let code = |args: &[&str]| w.run(tool, args).status.code();
        assert_eq!(code(&["vrun", "bb:1", "/bin/false"]), Some(1), "{tool}");
        assert_eq!(
            code(&["vrun", "bb:1", "sh", "-c", "exit 7"]),
            Some(7),
            "{tool}"
        );
        assert_eq!(
            code(&["run", "--rm", "bb:1", "/nonexistent"]),
            Some(127),
            "{tool}"
        );
        let o = w.run(tool, ["run", "--rm", "localhost/no-such-image:1", "true"]);
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        stop(&w, tool);
    }
}

#[test]
fn volumes_sync_back_only_what_the_container_changed() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = memres_with_busybox(tool);
        let dir = w.home.path().join("src");
        std::fs::create_dir_all(dir.join(".git/objects")).expect("mkdir");
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").expect("w");
        std::fs::write(dir.join(".env"), "SECRET=1\n").expect("w");
        std::fs::write(dir.join("keep.txt"), "keep\n").expect("w");
        std::fs::write(dir.join("change.txt"), "old\n").expect("w");
        std::fs::write(dir.join("delete.txt"), "bye\n").expect("w");
        let keep_before = mtime_and_inode(&dir.join("keep.txt"));
        let env_before = mtime_and_inode(&dir.join(".env"));

        // a relative -v source, and a container that fails after writing: still synced
        let o = w
            .cmd(tool)
            .current_dir(w.home.path())
            .args([
                "vrun",
                "-v",
                "./src:/data",
                "bb:1",
                "sh",
                "-c",
                "cat /data/.env && echo new > /data/change.txt && echo hi > /data/created.txt \
                 && mkdir /data/sub && echo x > /data/sub/f && rm /data/delete.txt && exit 3",
            ])
            .output()
            .expect("spawn");
        assert_eq!(o.status.code(), Some(3), "{tool}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            "SECRET=1\n",
            "{tool}: dotfiles reach the container"
        );
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_default();
        assert_eq!(read("change.txt"), "new\n", "{tool}");
        assert_eq!(read("created.txt"), "hi\n", "{tool}");
        assert_eq!(read("sub/f"), "x\n", "{tool}");
        assert!(!dir.join("delete.txt").exists(), "{tool}");
        assert_eq!(read(".git/HEAD"), "ref: refs/heads/main\n", "{tool}");
        assert_eq!(read(".env"), "SECRET=1\n", "{tool}");
        assert_eq!(
            mtime_and_inode(&dir.join("keep.txt")),
            keep_before,
            "{tool}: keep.txt touched"
        );
        assert_eq!(
            mtime_and_inode(&dir.join(".env")),
            env_before,
            "{tool}: .env touched"
        );

        // :ro cannot be written, and nothing comes back
        let src = dir.to_string_lossy().into_owned();
        let o = w.run(
            tool,
            [
                "vrun",
                "-v",
                &format!("{src}:/data:ro"),
                "bb:1",
                "sh",
                "-c",
                "echo x > /data/keep.txt",
            ],
        );
        assert_ne!(o.status.code(), Some(0), "{tool}: write to :ro succeeded");
        assert_eq!(read("keep.txt"), "keep\n", "{tool}");

        // a single-file volume
        let f = w.home.path().join("one.conf");
        std::fs::write(&f, "a=1\n").expect("w");
        let o = w.run(
            tool,
            [
                "vrun",
                "-v",
                &format!("{}:/etc/one.conf", f.display()),
                "bb:1",
                "sh",
                "-c",
                "echo a=2 > /etc/one.conf",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&f).expect("r"), "a=2\n", "{tool}");
        stop(&w, tool);
    }
}

#[test]
fn save_and_load_round_trip_and_storage_export_in_memres_and_batch() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = memres_with_busybox(tool);
        let saved = w.home.path().join("bb.tar");
        let o = run(
            &w,
            tool,
            &[
                "save".as_ref(),
                "-o".as_ref(),
                saved.as_os_str(),
                "bb:1".as_ref(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} save: {}", stderr(&o));
        assert!(
            stdout(&o).is_empty(),
            "{tool}: save printed on stdout: {}",
            stdout(&o)
        );
        let mut archive = tar::Archive::new(std::fs::File::open(&saved).expect("saved"));
        let names: Vec<PathBuf> = archive
            .entries()
            .expect("tar")
            .map(|e| e.expect("entry").path().expect("path").into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("manifest.json") || n.ends_with("index.json")),
            "{tool}: not an image archive: {names:?}"
        );

        // --storage under memres writes the tar (the old tool ignored it)
        let storage = w.home.path().join("storage.tar");
        let o = run(
            &w,
            tool,
            &["--storage".as_ref(), storage.as_os_str(), "images".as_ref()],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} --storage: {}", stderr(&o));
        let size = std::fs::metadata(&storage).expect("storage tar").len();
        assert!(size > 100_000, "{tool}: storage tar only {size} bytes");
        stop(&w, tool);

        // a fresh state: load -i brings the image back (batch VM)
        let w2 = World::new();
        let o = run(
            &w2,
            tool,
            &[
                "--no-daemon".as_ref(),
                "load".as_ref(),
                "-i".as_ref(),
                saved.as_os_str(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} load: {}", stderr(&o));
        let o = w2.run(tool, ["--no-daemon", "images"]);
        assert!(
            stdout(&o).contains("bb"),
            "{tool}: loaded image missing: {}",
            stdout(&o)
        );

        // --input-storage starts from the exported storage, without touching the state disk
        let w3 = World::new();
        let o = run(
            &w3,
            tool,
            &[
                "--input-storage".as_ref(),
                storage.as_os_str(),
                "images".as_ref(),
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tool} --input-storage: {}",
            stderr(&o)
        );
        assert!(stdout(&o).contains("bb"), "{tool}: {}", stdout(&o));
        let o = w3.run(tool, ["--no-daemon", "images"]);
        assert!(
            !stdout(&o).contains("bb"),
            "{tool}: input storage leaked into the state disk"
        );
    }
}

#[test]
fn run_detached_with_ports_forwards_lists_and_removes() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = memres_with_busybox(tool);
        let free = |base: u16| {
            (base..base + 200)
                .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
                .expect("free port")
        };
        let (p1, p2) = (free(18080), free(18480));
        let serve = |name: &str, port: u16, text: &str| {
            let o = w.run(
                tool,
                [
                    "run",
                    "-d",
                    "--name",
                    name,
                    "-p",
                    &format!("{port}:80"),
                    "--entrypoint",
                    "",
                    "bb:1",
                    "sh",
                    "-c",
                    &format!(
                        "mkdir -p /www && echo {text} > /www/index.html && httpd -f -p 80 -h /www"
                    ),
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{tool} run -d: {}", stderr(&o));
            stdout(&o).trim().to_string()
        };
        let id1 = serve("web1", p1, "one");
        serve("web2", p2, "two");
        assert!(
            wait_http(p1, "one", 60),
            "{tool}: port {p1} does not answer"
        );
        assert!(
            wait_http(p2, "two", 60),
            "{tool}: port {p2} does not answer"
        );

        let ps = ok(&w, tool, &["ps"]);
        let table = forwards_section(&ps);
        assert!(table.contains(&format!("127.0.0.1:{p1}")), "{tool}: {ps}");
        assert!(table.contains(&format!("127.0.0.1:{p2}")), "{tool}: {ps}");
        let quiet = ok(&w, tool, &["ps", "-q"]);
        assert!(!quiet.contains("Host Port Forwards"), "{tool}: {quiet}");

        // removed by id prefix
        ok(&w, tool, &["rm", "-f", &id1[..12.min(id1.len())]]);
        let ps = ok(&w, tool, &["ps"]);
        let table = forwards_section(&ps);
        assert!(
            !table.contains(&format!("127.0.0.1:{p1}")),
            "{tool}: forward left: {ps}"
        );
        assert!(table.contains(&format!("127.0.0.1:{p2}")), "{tool}: {ps}");
        assert!(http_get(p1).is_none_or(|b| !b.contains("one")), "{tool}");
        // and by name: no forward left, so no table
        ok(&w, tool, &["stop", "-t", "1", "web2"]);
        let ps = ok(&w, tool, &["ps", "-a"]);
        assert!(
            forwards_section(&ps).is_empty(),
            "{tool}: forward left: {ps}"
        );
        stop(&w, tool);
    }
}

#[test]
fn vshell_runs_in_the_vm_and_stateless_leaves_nothing() {
    let (tool, runtime) = TOOLS[0];
    vm_or_skip!(runtime);
    let w = World::new();
    let o = w.run(
        tool,
        ["--no-daemon", "vshell", "-c", "uname -m; test -d /proc/1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "x86_64\n");

    let o = w.run(tool, ["--stateless", "images"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("REPOSITORY"), "{}", stdout(&o));
    let root = w.home.path().join(format!(".{tool}"));
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n == "x86_64"),
        "--stateless left {left:?} in {}",
        root.display()
    );
}

#[test]
fn cp_copies_files_and_dirs_both_ways() {
    let (tool, runtime) = TOOLS[0];
    vm_or_skip!(runtime);
    let w = memres_with_busybox(tool);
    let dir = w.home.path().join("cp");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("in.txt"), "hello\n").expect("w");
    ok(
        &w,
        tool,
        &[
            "run",
            "-d",
            "--name",
            "c1",
            "--entrypoint",
            "",
            "bb:1",
            "sleep",
            "300",
        ],
    );
    let d = dir.to_string_lossy().into_owned();
    ok(&w, tool, &["cp", &format!("{d}/in.txt"), "c1:/tmp/in.txt"]);
    assert_eq!(
        ok(&w, tool, &["exec", "c1", "cat", "/tmp/in.txt"]),
        "hello\n"
    );
    ok(
        &w,
        tool,
        &[
            "exec",
            "c1",
            "sh",
            "-c",
            "mkdir /tmp/d && echo a > /tmp/d/a",
        ],
    );
    // into an existing dir: lands under its own name
    ok(&w, tool, &["cp", "c1:/tmp/d", &d]);
    assert_eq!(std::fs::read_to_string(dir.join("d/a")).expect("r"), "a\n");
    // to a new file name
    ok(
        &w,
        tool,
        &["cp", "c1:/tmp/in.txt", &format!("{d}/back.txt")],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("back.txt")).expect("r"),
        "hello\n"
    );
    ok(&w, tool, &["rm", "-f", "c1"]);
    stop(&w, tool);
}

/// Issue 13 item 3, the reproducer: in a one-shot VM (copy-mode volume), a container links a
/// host path and hard-links that symlink; the sync-back must not copy the host file's
/// contents into the volume, and a setuid file comes back without its setuid bit.
#[test]
fn one_shot_sync_back_follows_no_planted_link_and_drops_setuid() {
    use std::os::unix::fs::PermissionsExt;

    let (tool, runtime) = TOOLS[1];
    vm_or_skip!(runtime);
    let w = World::new();
    let tar = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    let o = run(
        &w,
        tool,
        &[
            "--no-daemon".as_ref(),
            "import".as_ref(),
            tar.as_os_str(),
            "bb:1".as_ref(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "import: {}", stderr(&o));
    let secret = w.home.path().join(".secret");
    std::fs::write(&secret, "top secret\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let dir = w.home.path().join("vol");
    std::fs::create_dir(&dir).expect("vol");

    let script = format!(
        "ln -s {} /data/a && ln /data/a /data/b && echo x > /data/c && chmod 4755 /data/c",
        secret.display()
    );
    let volume = format!("{}:/data", dir.display());
    let o = w.run(
        tool,
        [
            "--no-daemon",
            "run",
            "--rm",
            "-v",
            &volume,
            "bb:1",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "run: {}", stderr(&o));
    let b = dir.join("b");
    assert!(
        std::fs::read(&b).map_or(true, |data| data != b"top secret\n"),
        "the host secret was copied into the volume"
    );
    assert!(
        std::fs::symlink_metadata(&b).map_or(true, |m| m.file_type().is_symlink()),
        "b came back as a regular file"
    );
    assert!(std::fs::symlink_metadata(dir.join("a"))
        .expect("a comes back")
        .file_type()
        .is_symlink());
    let mode = std::fs::metadata(dir.join("c"))
        .expect("c")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "setuid came back: {mode:o}");
    assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    assert_eq!(
        std::fs::read(&secret).expect("secret"),
        b"top secret\n",
        "the secret itself is untouched"
    );
}

// ---------------------------------------------------------------------------------------
// foreground -p and one-shot volumes (docs/old-bugs.md §1, §10, §12)

/// Imports the busybox test image as `name`.
fn import_busybox(w: &World, tool: &str, name: &str) {
    let tar = w.home.path().join("bb-rootfs.tar");
    if !tar.exists() {
        busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    }
    let o = w.run(
        tool,
        [OsStr::new("import"), tar.as_os_str(), OsStr::new(name)],
    );
    assert_eq!(o.status.code(), Some(0), "{tool} import: {}", stderr(&o));
}

fn free_port(base: u16) -> u16 {
    (base..base + 500)
        .find(|p| TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("free port")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Runs `vrun -p PORT:80` of a container that serves for 30 s then exits: the host port must
/// reach it while it runs, and be free again once `vrun` returned.
fn foreground_publish_reaches_the_container(w: &World, tool: &str, global: &[&str], port: u16) {
    let mut args: Vec<String> = global.iter().map(|a| a.to_string()).collect();
    let serve = "mkdir -p /www && echo foreground-reply > /www/index.html && \
                 httpd -p 80 -h /www && sleep 30";
    args.extend(
        [
            "vrun",
            "-p",
            &format!("{port}:80"),
            "bb:1",
            "sh",
            "-c",
            serve,
        ]
        .map(String::from),
    );
    let child = w
        .cmd(tool)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let answered = wait_http(port, "foreground-reply", 90);
    let o = child.wait_with_output().expect("wait");
    assert!(
        answered,
        "{tool} {args:?}: the host port never reached the container; stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{tool} {args:?}: {}", stderr(&o));
    assert!(
        TcpListener::bind(("0.0.0.0", port)).is_ok(),
        "{tool} {args:?}: host port {port} still taken after the command"
    );
}

/// §8.1 (the copy-in skipped dot-files and `rsync --delete` removed `.git/` and `.env` from
/// the host) and §8.10 (a non-zero exit skipped the sync-back), on the path that still copies:
/// a one-shot VM (memres VMs bind the host dir over virtiofs instead).
fn one_shot_volume_keeps_dotfiles_and_syncs_after_a_failure(w: &World, tool: &str) {
    let dir = w.home.path().join("one-shot volume");
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").expect("w");
    std::fs::write(dir.join(".env"), "SECRET=1\n").expect("w");
    std::fs::write(dir.join("keep.txt"), "keep\n").expect("w");
    std::fs::write(dir.join("delete.txt"), "bye\n").expect("w");
    let keep = mtime_and_inode(&dir.join("keep.txt"));
    let env = mtime_and_inode(&dir.join(".env"));
    let o = w.run(
        tool,
        [
            "--no-daemon",
            "vrun",
            "-v",
            &format!("{}:/data", dir.display()),
            "bb:1",
            "sh",
            "-c",
            "cat /data/.env /data/.git/HEAD && echo made > /data/created.txt && \
             rm /data/delete.txt && exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "SECRET=1\nref: refs/heads/main\n",
        "dot-files not copied in"
    );
    assert_eq!(
        read(&dir.join("created.txt")),
        "made\n",
        "no sync-back after exit 3"
    );
    assert!(
        !dir.join("delete.txt").exists(),
        "the deletion did not come back"
    );
    assert_eq!(read(&dir.join(".git/HEAD")), "ref: refs/heads/main\n");
    assert_eq!(mtime_and_inode(&dir.join(".env")), env, ".env rewritten");
    assert_eq!(
        mtime_and_inode(&dir.join("keep.txt")),
        keep,
        "keep.txt rewritten"
    );
    assert_no_vm_processes(w.home.path());
}

/// §8.12 (`vrun -p H:C` forwarded host H to the VM's H, so the README's `-p 8080:80`
/// examples were unreachable): a foreground `vrun -p H:C` reaches the container's C from the
/// host while it runs, on a memres VM and in a one-shot VM, and the forward goes with it.
/// Then a one-shot VM's copied volume (§8.1, §8.10) on the state disk this left.
#[test]
fn foreground_publish_and_one_shot_volumes() {
    let tool = "vpdmn";
    vm_or_skip!("podman");
    let w = World::new();
    ok(&w, tool, &["memres", "start"]);
    let guard = MemresGuard::new(&w, tool);
    import_busybox(&w, tool, "bb:1");
    foreground_publish_reaches_the_container(&w, tool, &[], free_port(25100));
    let ps = ok(&w, tool, &["ps", "-a"]);
    assert!(forwards_section(&ps).is_empty(), "forward recorded: {ps}");
    ok(&w, tool, &["memres", "stop"]);
    drop(guard);
    assert_no_vm_processes(w.home.path());
    foreground_publish_reaches_the_container(&w, tool, &["--no-daemon"], free_port(25600));
    assert_no_vm_processes(w.home.path());
    one_shot_volume_keeps_dotfiles_and_syncs_after_a_failure(&w, tool);
}

/// §8.12 (port-forward bookkeeping leaked forwards): a foreground `vrun -p` stopped with
/// Ctrl-C (SIGINT, as the terminal sends it) must not leave its host port forwarded. As with
/// `docker run`, the first Ctrl-C goes to the container, which decides: round 0 traps it and
/// exits 130. A container's PID 1 ignores SIGINT by default (round 1): the second Ctrl-C
/// stops waiting. Either way the same `vrun -p` works again right after, and the port is
/// free once it ends.
#[test]
fn interrupted_foreground_publish_frees_its_port() {
    let tool = "vpdmn";
    vm_or_skip!("podman");
    let w = World::new();
    ok(&w, tool, &["memres", "start"]);
    let _guard = MemresGuard::new(&w, tool);
    import_busybox(&w, tool, "bb:1");
    let port = free_port(26100);
    for (round, (trap, signals)) in [("trap 'exit 130' INT; ", 1), ("", 2)].iter().enumerate() {
        let reply = format!("round-{round}");
        let mut child = w
            .cmd(tool)
            .args([
                "vrun",
                "-p",
                &format!("{port}:80"),
                "bb:1",
                "sh",
                "-c",
                &format!(
                    "{trap}{}; while :; do sleep 0.2; done",
                    httpd(80, &reply).replace("httpd -f", "httpd")
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let answered = wait_http(port, &reply, 90);
        for _ in 0..*signals {
            let interrupted = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill -INT");
            assert!(interrupted.success());
            std::thread::sleep(Duration::from_millis(500));
        }
        // bounds a hang only
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let ended = child.try_wait().expect("try_wait").is_some();
        if !ended {
            let _ = child.kill();
        }
        let o = child.wait_with_output().expect("wait");
        assert!(
            answered,
            "round {round}: host port {port} never reached the container; stderr: {}",
            stderr(&o)
        );
        assert!(
            ended,
            "round {round}: vrun still ran 60 s after {signals} Ctrl-C; stderr: {}",
            stderr(&o)
        );
        assert_eq!(o.status.code(), Some(130), "round {round}: {}", stderr(&o));
        assert!(
            TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "round {round}: host port {port} still forwarded after Ctrl-C; stderr: {}",
            stderr(&o)
        );
        // the memres VM lives on: the interrupted vrun's container must not
        let left = all_containers(&w, tool, &[]);
        assert!(left.is_empty(), "round {round}: containers left: {left:?}");
    }
}

/// The containers in `ps -a -q` (one id per line), through `global` (`--no-daemon` or none).
fn all_containers(w: &World, tool: &str, global: &[&str]) -> Vec<String> {
    let args: Vec<&str> = global.iter().copied().chain(["ps", "-a", "-q"]).collect();
    ok(w, tool, &args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `run --rm` / `vrun` give the container's own status and leave no container, with the
/// user's `--name` or without, and the removal prints nothing of its own; a `--name` that is
/// taken fails the run and leaves the container of that name alone.
fn run_rm_leaves_nothing(w: &World, tool: &str, global: &[&str]) {
    let with = |args: &[&str]| -> Vec<String> {
        global.iter().chain(args).map(|a| a.to_string()).collect()
    };
    let code = |args: &[&str]| {
        let o = w.run(tool, with(args));
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let (c, _, err) = code(&["run", "--rm", "bb:1", "sh", "-c", "exit 7"]);
    assert_eq!(c, Some(7), "{tool} {global:?}: {err}");
    let (c, _, err) = code(&[
        "run", "--rm", "--name", "named", "bb:1", "sh", "-c", "exit 5",
    ]);
    assert_eq!(c, Some(5), "{tool} {global:?} --name: {err}");
    let (c, _, err) = code(&["vrun", "bb:1", "sh", "-c", "exit 3"]);
    assert_eq!(c, Some(3), "{tool} {global:?} vrun: {err}");
    let (c, out, err) = code(&["run", "--rm", "bb:1", "echo", "hi"]);
    assert_eq!(
        (c, out.as_str()),
        (Some(0), "hi\n"),
        "{tool} {global:?}: {err}"
    );
    assert!(!err.contains("follow-up"), "{tool} {global:?}: {err}");
    // no container was created: nothing to remove, and no warning about it
    let (c, _, err) = code(&["run", "--rm", "localhost/no-such-image:1", "true"]);
    assert_eq!(c, Some(125), "{tool} {global:?}: {err}");
    assert!(!err.contains("follow-up"), "{tool} {global:?}: {err}");
    let left = all_containers(w, tool, global);
    assert!(
        left.is_empty(),
        "{tool} {global:?}: containers left: {left:?}"
    );
    // a taken name: the run fails before creating anything, and `taken` stays
    w.run_ok(tool, with(&["create", "--name", "taken", "bb:1", "true"]));
    let (c, _, err) = code(&["run", "--rm", "--name", "taken", "bb:1", "true"]);
    assert_eq!(c, Some(125), "{tool} {global:?}: taken name: {err}");
    assert_eq!(
        all_containers(w, tool, global).len(),
        1,
        "{tool} {global:?}: taken removed"
    );
    w.run_ok(tool, with(&["rm", "taken"]));
}

/// A `vpdmn run --rm` whose CLI is SIGKILLed while the container runs: the agent runs the
/// removal the CLI would have (`ExecRequest::if_host_lost`), so no container is left.
fn killed_client_leaves_no_container(w: &World, tool: &str) {
    use std::io::BufRead;
    let mut child = w
        .cmd(tool)
        .args(["run", "--rm", "bb:1", "sh", "-c", "echo up; sleep 120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read");
    assert_eq!(first, "up\n");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut left = all_containers(w, tool, &[]);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        left = all_containers(w, tool, &[]);
    }
    assert!(left.is_empty(), "{tool}: left by a killed client: {left:?}");
}

/// Issue 16 item 1 (the follow-up step): podman's `run --rm` can lose the container's exit
/// status to the removal (docs/plugins.md, "Follow-up steps"), so vpdmn runs it without
/// `--rm` and removes the container afterwards, on a memres VM and in a one-shot VM; vdkr
/// keeps docker's own `--rm`, with the same results.
#[test]
fn run_rm_gives_the_status_and_leaves_no_container() {
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = World::new();
        ok(&w, tool, &["memres", "start"]);
        let guard = MemresGuard::new(&w, tool);
        import_busybox(&w, tool, "bb:1");
        run_rm_leaves_nothing(&w, tool, &[]);
        if tool == "vpdmn" {
            killed_client_leaves_no_container(&w, tool);
        }
        ok(&w, tool, &["memres", "stop"]);
        drop(guard);
        if tool == "vpdmn" {
            run_rm_leaves_nothing(&w, tool, &["--no-daemon"]);
        }
        assert_no_vm_processes(w.home.path());
    }
}
