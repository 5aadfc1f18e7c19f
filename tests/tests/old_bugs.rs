//! The old shell tool's known bugs (docs/old-bugs.md, items 1-19) that only a real VM can
//! show are gone: real QEMU, real guest, real podman/docker, through the installed
//! multi-call names with a private HOME. docs/old-bugs.md maps every item to its tests; the
//! ones that need no VM are with their feature (core/cli/tests/cli_front.rs,
//! core/cli/tests/exec_protocol.rs).
//!
//! Few boots on purpose (TCG): one memres session walks through many items.

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vcontainer_tests::fixtures::{base64, BusyboxLayouts, LocalRegistry, MemresGuard};
use vcontainer_tests::net::{forwards_section, http_get, httpd, wait_http};
use vcontainer_tests::terminal::on_terminal;
use vcontainer_tests::{
    assert_fsck_clean, assert_no_vm_processes, busybox_rootfs_tar, pids_matching, stderr, stdout,
    vm_or_skip, World,
};

fn ok(w: &World, tool: &str, args: &[&str]) -> String {
    w.run_ok(tool, args)
}

fn state_dir(w: &World, tool: &str) -> PathBuf {
    w.home.path().join(format!(".{tool}")).join("x86_64")
}

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

/// The QEMU pid `memres status` reports (`running (pid N, ...`).
fn memres_pid(w: &World, tool: &str) -> String {
    let status = ok(w, tool, &["memres", "status"]);
    status
        .strip_prefix("running (pid ")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("{tool}: memres status: {status}"))
        .to_string()
}

fn free_port(base: u16) -> u16 {
    (base..base + 500)
        .find(|p| TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("free port")
}

/// Polls `exec <ctr> <argv>` until it succeeds.
fn wait_exec(w: &World, tool: &str, ctr: &str, argv: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut args = vec!["exec", ctr];
    args.extend_from_slice(argv);
    while Instant::now() < deadline {
        if w.run(tool, &args).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{tool}: `exec {ctr} {argv:?}` never succeeded");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Command lines (and for VM processes the environment) of every process that mentions
/// `needle`, plus every process's command line: where a secret must never show.
fn process_texts(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let ours: Vec<u32> = pids_matching(needle);
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let mut text = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ours.contains(&pid) {
            text.extend(std::fs::read(e.path().join("environ")).unwrap_or_default());
        }
        out.push((pid, String::from_utf8_lossy(&text).replace('\0', " ")));
    }
    out
}

/// Every regular file under `dir` up to 4 MiB (the state disk image excluded) as text.
fn small_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(small_files(&p));
        } else if meta.is_file() && meta.len() <= 4 << 20 {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            out.push((p, text));
        }
    }
    out
}

/// Pushes the busybox test image from the host to `reg` as `repo` (skopeo, no VM).
fn push_from_host(reg: &LocalRegistry, repo: &str) -> Result<(), String> {
    let layouts = BusyboxLayouts::new()?;
    let layout = layouts.single("bb", "amd64")?;
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if let Some((user, password)) = &reg.credentials {
        cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    let o = cmd
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://127.0.0.1:{}/{repo}", reg.port))
        .output()
        .map_err(|e| format!("skopeo: {e}"))?;
    if !o.status.success() {
        return Err(format!("skopeo copy: {}", stderr(&o)));
    }
    Ok(())
}

fn registry_ready() -> bool {
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok();
    if !LocalRegistry::available() || !have("skopeo") || !have("umoci") {
        vcontainer_tests::skip("docker-registry, skopeo or umoci is not installed");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------------------

/// One vpdmn memres session through the items about ports, detached volumes, interactive
/// runs, argument quoting, `--stateless` and the memres messages.
#[test]
fn memres_session_has_none_of_the_old_bugs() {
    let tool = "vpdmn";
    vm_or_skip!("podman");
    let w = World::new();
    let (static_host, static_guest) = (free_port(23100), 18081);

    // §8.12 (memres start -p H:C forwarded H to the VM's port H). Without the host share:
    // volumes take the copy path (copy in, sync back), where the old volume bugs lived; the
    // virtiofs path is containers_live.rs::detached_volumes_are_live_over_virtiofs
    let o = w
        .cmd(tool)
        .args(["memres", "start", "-p"])
        .arg(format!("{static_host}:{static_guest}"))
        .env("VCONTAINER_HOST_SHARE", "off")
        .output()
        .expect("spawn");
    assert_eq!(o.status.code(), Some(0), "memres start: {}", stderr(&o));
    let _guard = MemresGuard::new(&w, tool);
    // §8.16 (`memres status` printed an empty `VM:`)
    let status = ok(&w, tool, &["memres", "status"]);
    let state = state_dir(&w, tool);
    assert!(
        status.starts_with("running (pid ")
            && status.contains("podman x86_64")
            && status.contains(&*state.to_string_lossy())
            && !status.contains("virtiofs"),
        "{status}"
    );
    // §8.12 (`memres list` never showed the ports)
    let list = ok(&w, tool, &["memres", "list"]);
    let forward = format!("{static_host}:{static_guest}/tcp");
    assert!(list.contains(&forward), "memres list: {list}");
    let qemu_pid = memres_pid(&w, tool);
    import_busybox(&w, tool, "bb:1");

    // §8.12: the static forward ends at the VM's port C, where a host-network container serves
    ok(
        &w,
        tool,
        &[
            "run",
            "-d",
            "--name",
            "static",
            "--network",
            "host",
            "bb:1",
            "sh",
            "-c",
            &httpd(static_guest, "static-reply"),
        ],
    );
    assert!(
        wait_http(static_host, "static-reply", 90),
        "host {static_host} does not reach the VM's {static_guest}"
    );

    // §8.12 (QMP failures recorded as successes): a host port that is taken is an error,
    // nothing is recorded and the container is not started
    let busy_port = free_port(23700);
    let holder = TcpListener::bind(("0.0.0.0", busy_port)).expect("hold the port");
    let o = w.run(
        tool,
        [
            "run",
            "-d",
            "--name",
            "busy",
            "-p",
            &format!("{busy_port}:80"),
            "bb:1",
            "sleep",
            "600",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "taken port: {}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot forward host port {busy_port}")),
        "{}",
        stderr(&o)
    );
    let ps = ok(&w, tool, &["ps", "-a"]);
    assert!(
        !forwards_section(&ps).contains(&format!(":{busy_port} ")),
        "a refused forward was recorded: {ps}"
    );
    let names = ok(&w, tool, &["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!names.lines().any(|n| n == "busy"), "{names}");
    drop(holder);

    // §8.12 (`stop` looked only at its first argument): both forwards go
    let (p1, p2) = (free_port(24100), free_port(24600));
    for (name, port) in [("w1", p1), ("w2", p2)] {
        ok(
            &w,
            tool,
            &[
                "run",
                "-d",
                "--name",
                name,
                "-p",
                &format!("{port}:80"),
                "bb:1",
                "sh",
                "-c",
                &httpd(80, &format!("reply-{name}")),
            ],
        );
    }
    assert!(wait_http(p1, "reply-w1", 90) && wait_http(p2, "reply-w2", 90));
    ok(&w, tool, &["stop", "-t", "1", "w1", "w2"]);
    let ps = ok(&w, tool, &["ps", "-a"]);
    let table = forwards_section(&ps);
    assert!(
        !table.contains(&format!("127.0.0.1:{p1} "))
            && !table.contains(&format!("127.0.0.1:{p2} ")),
        "forwards left after `stop w1 w2`: {ps}"
    );
    assert!(
        table.contains(&format!("127.0.0.1:{static_host} ")),
        "the static forward went too: {ps}"
    );
    assert!(http_get(p2).is_none_or(|b| !b.contains("reply-w2")));

    // §8.13 (a `run -d` volume was deleted right after start, and any load/import/save/cp
    // emptied the share dir): the volume stays complete while the container runs, through
    // those commands, and its writes come back at stop. §8.3 (paths and labels with spaces)
    let dir = w.home.path().join("my volume");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(".env"), "SECRET=1\n").expect("w");
    std::fs::write(dir.join("keep.txt"), "keep\n").expect("w");
    let vol = format!("{}:/data", dir.display());
    ok(
        &w,
        tool,
        &[
            "run",
            "-d",
            "--name",
            "live",
            "--label",
            "note=two words; $HOME",
            "-v",
            &vol,
            "bb:1",
            "sh",
            "-c",
            "touch /data/.ready; sleep 600",
        ],
    );
    wait_exec(&w, tool, "live", &["test", "-e", "/data/.ready"]);
    let saved = w.home.path().join("saved image.tar");
    let saved_s = saved.to_str().expect("utf-8");
    import_busybox(&w, tool, "bb:2");
    ok(&w, tool, &["save", "-o", saved_s, "bb:2"]);
    ok(&w, tool, &["load", "-i", saved_s]);
    let cp_in = w.home.path().join("cp in.txt");
    std::fs::write(&cp_in, "copied\n").expect("w");
    ok(
        &w,
        tool,
        &["cp", cp_in.to_str().expect("utf-8"), "live:/tmp/cp.txt"],
    );
    assert_eq!(
        ok(
            &w,
            tool,
            &["exec", "live", "cat", "/data/keep.txt", "/data/.env"]
        ),
        "keep\nSECRET=1\n",
        "the live volume lost files"
    );
    assert_eq!(
        ok(
            &w,
            tool,
            &[
                "inspect",
                "--format",
                "{{index .Config.Labels \"note\"}}",
                "live"
            ]
        )
        .trim(),
        "two words; $HOME"
    );
    ok(
        &w,
        tool,
        &["exec", "live", "sh", "-c", "echo late > /data/late.txt"],
    );
    ok(&w, tool, &["stop", "-t", "1", "live"]);
    assert_eq!(read(&dir.join("late.txt")), "late\n");
    assert_eq!(read(&dir.join(".env")), "SECRET=1\n");
    ok(&w, tool, &["rm", "live"]);

    // §8.13 (interactive + volume ran an ephemeral VM without the share), §8.14 (exit code
    // of an interactive run lost; Ctrl-A taken by QEMU's -nographic), §8.4 (`run -ti` was
    // not treated as interactive): on a terminal, in the memres VM
    let script = "cat /data/keep.txt; echo tty > /data/from-tty.txt; \
                  echo waiting-for-keys; read -r x; echo \"len=${#x}\"; exit 6";
    let (code, shown) = on_terminal(
        &w,
        tool,
        &["run", "-ti", "--rm", "-v", &vol, "bb:1", "sh", "-c", script],
        &[("waiting-for-keys", Duration::from_millis(500), "\u{1}x\r")],
    );
    assert_eq!(code, 6, "exit status of run -ti: {shown}");
    assert!(shown.contains("keep"), "{shown}");
    assert!(
        shown.contains("len=2"),
        "Ctrl-A did not reach the container: {shown}"
    );
    assert_eq!(read(&dir.join("from-tty.txt")), "tty\n");
    assert_eq!(memres_pid(&w, tool), qemu_pid, "another VM served run -ti");

    // §8.5 (a stale reply went to the next command): a client killed mid-command leaves
    // nothing for the next one
    let mut abandoned = w
        .cmd(tool)
        .args([
            "vrun",
            "bb:1",
            "sh",
            "-c",
            "echo old-1; sleep 30; echo old-2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 6];
    abandoned
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("first line");
    assert_eq!(&first, b"old-1\n");
    abandoned.kill().expect("kill the client");
    let _ = abandoned.wait();
    for i in 0..3 {
        let o = w.run(
            tool,
            [
                "vrun",
                "bb:1",
                "sh",
                "-c",
                &format!("echo fresh-{i}; exit {i}"),
            ],
        );
        assert_eq!(stdout(&o), format!("fresh-{i}\n"), "{}", stderr(&o));
        assert_eq!(o.status.code(), Some(i));
    }

    // §8.7 (`--storage` was ignored whenever the memres VM was used: the README's own
    // `--storage X vimport ...` produced no file)
    let storage = w.home.path().join("storage out.tar");
    let rootfs = w.home.path().join("bb-rootfs.tar");
    let o = w.run(
        tool,
        [
            OsStr::new("--storage"),
            storage.as_os_str(),
            OsStr::new("vimport"),
            rootfs.as_os_str(),
            OsStr::new("bb:3"),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "--storage vimport: {}",
        stderr(&o)
    );
    let size = std::fs::metadata(&storage).map(|m| m.len()).unwrap_or(0);
    assert!(size > 100_000, "--storage wrote {size} bytes");
    assert_eq!(memres_pid(&w, tool), qemu_pid, "--storage bypassed memres");

    // §8.8 (`--stateless` used the running stateful VM): it sees none of its images and
    // leaves it running
    let o = w.run(tool, ["--stateless", "images"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("REPOSITORY") && !stdout(&o).contains("bb"),
        "--stateless saw the memres VM's images: {}",
        stdout(&o)
    );
    assert_eq!(memres_pid(&w, tool), qemu_pid, "--stateless touched memres");

    // §8.16 (`memres stop` printed ===SHUTTING_DOWN=== on stdout)
    let o = w.run(tool, ["memres", "stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "memres stop wrote to stdout");
    assert_no_vm_processes(w.home.path());
    assert_fsck_clean(&state.join("podman-state.img"));
}

/// §8.5 (a hard 60 s read timeout made long commands "succeed" with exit 0) and §8.14 (the
/// idle watchdog ignored interactive activity): with a 5 s idle timeout, a command silent
/// for 65 s returns its own output and status, and a VM shell left idle on a terminal for
/// 15 s still answers; once nothing runs, the idle stop does happen, cleanly (§8.9).
#[test]
fn long_silent_commands_and_idle_shells_outlive_the_idle_timeout() {
    let tool = "vpdmn";
    vm_or_skip!("podman");
    let w = World::new();
    ok(&w, tool, &["vconfig", "idle-timeout", "5"]);
    ok(&w, tool, &["memres", "start"]);
    let _guard = MemresGuard::new(&w, tool);
    import_busybox(&w, tool, "bb:1");

    let long = w
        .cmd(tool)
        .args(["vrun", "bb:1", "sh", "-c", "sleep 65; echo done; exit 3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (code, shown) = on_terminal(
        &w,
        tool,
        &["vshell"],
        &[(
            "Opening VM shell",
            Duration::from_secs(15),
            "echo got-$((6*7)); exit 0\r",
        )],
    );
    assert_eq!(code, 0, "idle vshell: {shown}");
    assert!(shown.contains("got-42"), "idle vshell: {shown}");
    let o = long.wait_with_output().expect("wait");
    assert_eq!(stdout(&o), "done\n", "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // nothing runs now: the idle timeout stops the VM, with a clean state disk
    let deadline = Instant::now() + Duration::from_secs(120);
    while w.run(tool, ["memres", "status"]).status.code() == Some(0) {
        assert!(Instant::now() < deadline, "the idle timeout never fired");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_no_vm_processes(w.home.path());
    assert_fsck_clean(&state_dir(&w, tool).join("podman-state.img"));
}

/// §8.6 (`pull` never auto-started the daemon), §8.3 (`--registry-password 'p w'` broke the
/// runner argv), §8.18 (the password went base64 onto QEMU's command line; user/password
/// were ignored without a default registry) and §8.15 (`login` on a cold start could not
/// prompt), against a local htpasswd registry.
#[test]
fn cold_pull_with_credentials_and_cold_login_on_a_terminal() {
    let tool = "vpdmn";
    if !registry_ready() {
        return;
    }
    vm_or_skip!("podman");
    // unique, so no other process can show it by chance
    let password = format!("old bug {}", std::process::id());
    let password = password.as_str();
    let reg = LocalRegistry::with_htpasswd("tester", password).expect("registry");
    push_from_host(&reg, "cold/bb:1").expect("push the test image");
    let addr = reg.guest_address();
    let remote = format!("{addr}/cold/bb:1");
    let w = World::new();
    let _guard = MemresGuard::new(&w, tool);

    // cold: the pull starts the memres VM and authenticates with a password with a space
    let o = w.run(
        tool,
        [
            "--registry-user",
            "tester",
            "--registry-password",
            password,
            "--insecure-registry",
            &addr,
            "pull",
            &remote,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "cold pull: {}", stderr(&o));
    assert!(
        ok(&w, tool, &["memres", "status"]).starts_with("running"),
        "pull did not start the memres VM"
    );
    let out = ok(&w, tool, &["vrun", &remote, "echo", "pulled-ok"]);
    assert_eq!(out, "pulled-ok\n");
    // the secret is on no process's command line (nor a VM process's environment), in no
    // file of the state dir
    let secrets = [
        password.to_string(),
        base64(password.as_bytes()),
        base64(format!("tester:{password}").as_bytes()),
    ];
    let home = w.home.path().to_string_lossy().into_owned();
    for (pid, text) in process_texts(&home) {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "pid {pid} shows the password: {text}"
            );
        }
    }
    for (path, text) in small_files(&state_dir(&w, tool)) {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{} holds the password",
                path.display()
            );
        }
    }
    let o = w.run(tool, ["memres", "stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_no_vm_processes(w.home.path());

    // cold again: `login` starts the VM and still prompts on the terminal
    let (code, shown) = on_terminal(
        &w,
        tool,
        &["--insecure-registry", &addr, "login", &addr],
        &[
            ("Username", Duration::ZERO, "tester\r"),
            ("Password", Duration::ZERO, &format!("{password}\r")),
        ],
    );
    assert_eq!(code, 0, "cold login: {shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(
        !shown.contains(password),
        "the password was echoed: {shown}"
    );
    // the login is what authenticates the next pull
    ok(&w, tool, &["rmi", &remote]);
    ok(&w, tool, &["--insecure-registry", &addr, "pull", &remote]);
    ok(&w, tool, &["logout", &addr]);
    ok(&w, tool, &["memres", "stop"]);
    assert_no_vm_processes(w.home.path());
}

/// §8.6 (a one-shot vdkr `pull` always reported failure, exit 1): with no memres VM, `pull`
/// in a one-shot VM succeeds and the image is on the state disk for the next command.
#[test]
fn vdkr_one_shot_pull_succeeds_and_keeps_the_image() {
    let tool = "vdkr";
    if !registry_ready() {
        return;
    }
    vm_or_skip!("docker");
    let reg = LocalRegistry::plain().expect("registry");
    push_from_host(&reg, "oneshot/bb:1").expect("push the test image");
    let addr = reg.guest_address();
    let remote = format!("{addr}/oneshot/bb:1");
    let w = World::new();
    let o = w.run(
        tool,
        ["--no-daemon", "--insecure-registry", &addr, "pull", &remote],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "one-shot pull: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains(&remote), "{}", stdout(&o));
    assert_no_vm_processes(w.home.path());
    let images = ok(&w, tool, &["--no-daemon", "images"]);
    assert!(
        images.contains(&format!("{addr}/oneshot/bb")),
        "the pulled image is not on the state disk: {images}"
    );
    assert_no_vm_processes(w.home.path());
    assert_fsck_clean(&state_dir(&w, tool).join("docker-state.img"));
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

fn mtime_and_inode(p: &Path) -> (i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("metadata");
    (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino())
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
    }
}
