//! End-to-end tests of issue 14 (cold start from a snapshot, docs/snapshot.md): by default
//! a one-shot command saves the booted guest once, and later ones restore it;
//! `VCONTAINER_SNAPSHOT=0` boots cold. Each test proves from the `-v` lines that the path was taken, and from real
//! output that the restored guest is the host's run: its state disk is the user's (hot-plugged
//! after the restore), its clock is now, two restores at once are two different guests, and a
//! snapshot that does not load gives a cold boot.
//! One one-shot test per runtime; the podman one carries the checks that are the same for
//! both (and that its VM is suspended too), the docker one those of suspended VMs.
//! A memres VM starts from the same snapshot: its live volumes (virtiofs hot-plugged after
//! the restore), static port forwards and exposed engine API work as after a cold boot.
//! A docker VM is suspended with its disk after its command and restored with dockerd running.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};
use vcontainer::vm::ramfile;

use vcontainer_tests::net::{httpd, wait_http};
use vcontainer_tests::{
    assert_fsck_clean, assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip,
    World,
};

const SAVED: &str = "saved the snapshot";
const RESTORED: &str = "restored from the snapshot";

fn run(w: &World, tool: &str, args: &[&str], state_dir: Option<&std::path::Path>) -> Output {
    run_env(w, tool, args, state_dir, &[])
}

/// [`run`] with more environment.
fn run_env(
    w: &World,
    tool: &str,
    args: &[&str],
    state_dir: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> Output {
    let mut c = w.cmd(tool);
    c.envs(env.iter().copied());
    // snapshots are the default (no VCONTAINER_SNAPSHOT); the world's own ~/.cache, not the
    // harness's shared one: these tests see the save
    c.env_remove("VCONTAINER_SNAPSHOT")
        .env_remove("XDG_CACHE_HOME")
        .arg("-v")
        .args(args);
    if let Some(d) = state_dir {
        c.env(format!("{}_STATE_DIR", tool.to_uppercase()), d);
    }
    c.output().expect("spawn vcontainer")
}

/// `tool -v args` booted cold (`VCONTAINER_SNAPSHOT=0`), in the world's own ~/.cache as [`run`].
fn run_cold(w: &World, tool: &str, args: &[&str]) -> Output {
    w.cmd(tool)
        .env("VCONTAINER_SNAPSHOT", "0")
        .env_remove("XDG_CACHE_HOME")
        .arg("-v")
        .args(args)
        .output()
        .expect("spawn vcontainer")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn snapshots(w: &World) -> Vec<String> {
    std::fs::read_dir(w.home.path().join(".cache/vcontainer/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn podman_one_shot_commands_restore_a_snapshot_with_the_users_state() {
    vm_or_skip!("podman");
    let w = World::new();
    // first need: saved, then restored for this very command (not suspended at its end, so
    // that the next two restore the shared snapshot)
    let o = run_env(
        &w,
        "vpdmn",
        &["--no-daemon", "volume", "create", "snapvol"],
        None,
        &[("VCONTAINER_SUSPEND", "0")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&o).trim(), "snapvol");
    assert!(err.contains(SAVED) && err.contains(RESTORED), "{err}");
    let files = snapshots(&w);
    assert_eq!(files.len(), 1, "one snapshot, no temporary left: {files:?}");
    assert!(files[0].starts_with("podman-x86_64-") && files[0].ends_with(".snap"));

    // two restores of the one snapshot at once: the user's state dir and another one
    let other = w.home.path().join("other-state");
    let probe = "podman volume ls -q; date +%s; cat /proc/sys/kernel/random/uuid";
    let before = now();
    let (mine, theirs) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&w, "vpdmn", &["--no-daemon", "vshell", "-c", probe], None));
        let b = s.spawn(|| {
            run(
                &w,
                "vpdmn",
                &["--no-daemon", "vshell", "-c", probe],
                Some(&other),
            )
        });
        (a.join().expect("a"), b.join().expect("b"))
    });
    let after = now();
    let mut uuids = Vec::new();
    for (o, has_volume) in [(&mine, true), (&theirs, false)] {
        let (out, err) = (stdout(o), stderr(o));
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(RESTORED) && !err.contains(SAVED), "{err}");
        // the -v line says where the restore's time went
        let line = err
            .lines()
            .find(|l| l.contains(RESTORED))
            .unwrap_or_default();
        for phase in ["qemu ", "load ", "plug ", "hello ", "resume "] {
            assert!(line.contains(phase), "no {phase}phase in: {line}");
        }
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // the state disk attached after the restore is the one of that state dir
        assert_eq!(lines.contains(&"snapvol"), has_volume, "{out}");
        // the clock was set on restore (the saved one stood at the save, seconds ago)
        let guest: u64 = lines[lines.len() - 2].parse().expect("date +%s");
        assert!(
            guest + 1 >= before && guest <= after + 1,
            "guest clock {guest} outside the run [{before}, {after}]"
        );
        uuids.push(lines[lines.len() - 1].to_string());
    }
    assert_ne!(
        uuids[0], uuids[1],
        "the two restores draw the same random numbers"
    );
    assert_eq!(snapshots(&w).len(), 1);

    // those two were suspended (podman's per-boot state is kept): the next command of the
    // state dir restores its own
    let o = run(&w, "vpdmn", &["--no-daemon", "volume", "ls", "-q"], None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&o).trim(), "snapvol");
    assert!(err.contains(RESUMED) && err.contains(SUSPENDED), "{err}");

    // the opt-out: a cold boot, the snapshot left alone
    let o = run_cold(&w, "vpdmn", &["--no-daemon", "volume", "ls", "-q"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&o).trim(), "snapvol");
    assert!(!err.contains(RESTORED) && !err.contains(SAVED), "{err}");
    assert_eq!(snapshots(&w).len(), 1);
    assert_no_vm_processes(w.home.path());
}

/// `vdkr --no-daemon vshell -c <script>`: its stdout and stderr, exit 0 asserted.
fn vdkr_sh(w: &World, script: &str) -> (String, String) {
    ok(w, "vdkr", &["--no-daemon", "vshell", "-c", script])
}

const SUSPENDED: &str = "suspended the VM into";
const RESUMED: &str = "restored the suspended VM";

/// A one-shot docker VM is suspended (saved with its disk, dockerd running) instead of shut
/// down, and the next command of that state dir restores it with dockerd up. The disk alone
/// stays complete (the guest froze it: fsck clean, the volume on it); a cold boot that wrote
/// the disk since makes the next command drop the suspended VM; anything still running in
/// the guest keeps it from being suspended; `memres start`/`stop` restore and suspend too.
#[test]
fn docker_vm_is_suspended_with_its_disk_and_restored_with_dockerd_running() {
    vm_or_skip!("docker");
    let w = World::new();
    let state = w.home.path().join(".vdkr/x86_64");
    let img = state.join("docker-state.img");
    let suspended = state.join("suspended.snap");
    // first need: saved, restored (dockerd started on the state disk hot-plugged after the
    // restore), then suspended; the state dir and reuse checks are the podman test's
    let (out, err) = ok(&w, "vdkr", &["--no-daemon", "volume", "create", "snapvol"]);
    assert_eq!(out.trim(), "snapvol");
    assert!(
        err.contains(SAVED) && err.contains(RESTORED) && err.contains(SUSPENDED),
        "{err}"
    );
    assert!(suspended.exists() && state.join("suspended.json").exists());
    // its RAM stayed in its tmpfs file, 0600, which no longer is the running VM's (a host
    // without a tmpfs saves the RAM in the file)
    let json = std::fs::read_to_string(state.join("suspended.json")).expect("json");
    let kept = ramfile::suspended(&state);
    assert_eq!(json.contains("\"ram\":{"), kept.is_some(), "{json}");
    if let Some(kept) = &kept {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kept)
            .expect("suspended.ram")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ramfile::running(&state), None);
    }
    let (listed, _) = ok(&w, "vdkr", &["snapshot", "ls"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&*suspended.to_string_lossy()) && l.ends_with("\tsuspended")),
        "{listed}"
    );
    // the disk alone is complete while its guest is suspended: dockerd made the volume on it
    // (its root is /var/lib/docker), not in RAM
    assert_fsck_clean(&img);
    let ls = std::process::Command::new("debugfs")
        .args(["-R", "ls /volumes"])
        .arg(&img)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(stdout(&ls).contains("snapvol"), "{}", stdout(&ls));
    assert_no_vm_processes(w.home.path());

    // the next command: dockerd was running already (its log has one start only)
    let (out, err) = vdkr_sh(
        &w,
        "docker volume ls -q; grep -c 'API listen' /var/log/vcontainer/dockerd.log",
    );
    assert!(err.contains(RESUMED) && err.contains(SUSPENDED), "{err}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["snapvol", "1"]);

    // a cold boot writes the disk: the suspended VM no longer fits it
    let o = run_cold(&w, "vdkr", &["--no-daemon", "volume", "create", "coldvol"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        suspended.exists(),
        "a cold boot leaves the file to the next check"
    );
    // a process left running in the guest keeps it from being suspended
    let (out, err) = vdkr_sh(&w, "docker volume ls -q; setsid -f sleep 600");
    assert!(
        err.contains("dropped the suspended VM: the state disk changed") && err.contains(RESTORED),
        "{err}"
    );
    assert!(
        err.contains("not suspending the VM") && err.contains("sleep (pid"),
        "{err}"
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["coldvol", "snapvol"]
    );
    assert!(!suspended.exists());
    // a VM that ended without being suspended leaves no guest memory behind
    assert_eq!(ramfile::running(&state), None);
    assert_eq!(ramfile::suspended(&state), None);

    // memres: `start` restores a suspended VM, `stop` suspends it
    ok(&w, "vdkr", &["--no-daemon", "volume", "ls"]);
    assert!(suspended.exists());
    let (_, err) = ok(&w, "vdkr", &["memres", "start"]);
    assert!(err.contains(RESUMED), "{err}");
    let (out, _) = ok(&w, "vdkr", &["volume", "ls", "-q"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["coldvol", "snapvol"]
    );
    ok(&w, "vdkr", &["memres", "stop"]);
    let log = std::fs::read_to_string(state.join("vm.log")).unwrap_or_default();
    assert!(log.contains("suspended in"), "{log}");
    assert!(suspended.exists());
    assert_fsck_clean(&img);

    // a VM given a secret is never written to a file
    let (_, err) = vdkr_sh(
        &w,
        "echo pw-Zr48sQ | docker login -u me --password-stdin 127.0.0.1:1 || true",
    );
    assert!(err.contains(RESUMED), "{err}");
    assert!(err.contains("a command gave it a secret"), "{err}");
    assert!(!suspended.exists());
    assert_no_vm_processes(w.home.path());
}

fn ok(w: &World, tool: &str, args: &[&str]) -> (String, String) {
    let o = run(w, tool, args, None);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{tool} {args:?}: {out}{err}");
    (out, err)
}

/// `memres start -p H:H --expose` from a snapshot (saved by that very start): a live `-v`
/// volume is shared over virtiofs (a share slot hot-plugged into the restored guest), the
/// static forward reaches a server in the guest, the engine API answers on the host socket;
/// and a daemon auto-started by a command restores the snapshot too.
#[test]
fn podman_memres_vm_starts_from_the_snapshot_with_volumes_ports_and_api() {
    vm_or_skip!("podman");
    let w = World::new();
    let port = (19300..19800)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("free port");
    let fwd = format!("{port}:{port}");
    let (out, err) = ok(&w, "vpdmn", &["memres", "start", "-p", &fwd, "--expose"]);
    assert!(err.contains(SAVED) && err.contains(RESTORED), "{err}");
    assert_eq!(snapshots(&w).len(), 1, "{:?}", snapshots(&w));
    let (status, _) = ok(&w, "vpdmn", &["memres", "status"]);
    assert!(
        status.contains("live volumes (virtiofs") && status.contains(&format!("{fwd}/tcp")),
        "{status}"
    );

    // a live volume: the container's write is on the host when it returns
    let tar = w.home.path().join("bb.tar");
    busybox_rootfs_tar(&tar).expect("busybox tar");
    let tar_s = tar.to_string_lossy().into_owned();
    ok(&w, "vpdmn", &["import", &tar_s, "bb:1"]);
    let dir = w.home.path().join("vol");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("in.txt"), "from-host\n").expect("write");
    let vol = format!("{}:/data", dir.display());
    let (got, _) = ok(
        &w,
        "vpdmn",
        &[
            "run",
            "--rm",
            "-v",
            &vol,
            "bb:1",
            "sh",
            "-c",
            "cat /data/in.txt; echo from-ctr > /data/out.txt",
        ],
    );
    assert_eq!(got.trim(), "from-host");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).expect("out.txt"),
        "from-ctr\n"
    );
    let shares = std::fs::read_to_string(w.home.path().join(".vpdmn/x86_64/shares.json"))
        .unwrap_or_default();
    assert!(
        shares.contains(&dir.to_string_lossy().into_owned()),
        "the volume was copied, not shared: {shares}"
    );

    // the static forward (the restoring QEMU's own -netdev) reaches the guest
    ok(
        &w,
        "vpdmn",
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "host",
            "bb:1",
            "sh",
            "-c",
            &httpd(port, "restored-reply"),
        ],
    );
    assert!(wait_http(port, "restored-reply", 90), "port {port} silent");

    // the engine API on the host socket (podman's serves the Docker API's /_ping)
    let socket = w.home.path().join(".vpdmn/x86_64/podman.sock");
    assert!(
        out.contains(&format!("unix://{}", socket.display())),
        "{out}"
    );
    let mut s = UnixStream::connect(&socket).expect("the engine API socket");
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
        "{reply}"
    );
    ok(&w, "vpdmn", &["memres", "stop"]);

    // a daemon started by a command restores too (the snapshot is the same)
    let (_, err) = ok(&w, "vpdmn", &["images"]);
    assert!(err.contains(RESTORED) && !err.contains(SAVED), "{err}");
    ok(&w, "vpdmn", &["memres", "stop"]);
    assert_eq!(snapshots(&w).len(), 1);
    assert_no_vm_processes(w.home.path());
}
