//! End-to-end tests of long-lived containers on a memres VM (issue 4 items 3, 4 and 5): `run -d`
//! volumes, static and per-container port forwards and their removal, `memres restart
//! --clean` and `memres clean-ports`, `-it` on a real PTY (window size and Ctrl-C), `logs -f`
//! and `exec -it`; and one memres session that walks through the old tool's bugs in these
//! areas (docs/old-bugs.md). Real QEMU, real guest, real docker/podman, offline busybox image.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vcontainer_tests::fixtures::MemresGuard;
use vcontainer_tests::net::{forwards_section, http_get, httpd, tcp_listen_addrs, wait_http};
use vcontainer_tests::terminal::on_terminal;
use vcontainer_tests::{
    assert_fsck_clean, assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip,
    World,
};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

/// The tools to test: both, or those named in `VCT_TOOLS` (e.g. `vdkr`) when debugging one.
fn tools() -> Vec<(&'static str, &'static str)> {
    let only = std::env::var("VCT_TOOLS").unwrap_or_default();
    TOOLS
        .into_iter()
        .filter(|(t, _)| only.is_empty() || only.split(',').any(|o| o == *t))
        .collect()
}

/// A world with a running memres VM (stopped on drop, also when the test fails).
struct Live {
    w: World,
    tool: &'static str,
}

impl Live {
    /// `memres start` with `start_args`, then import the busybox image as `bb:1`.
    fn start(tool: &'static str, start_args: &[&str]) -> Live {
        Live::start_with(tool, start_args, true)
    }

    /// Like `start`, with the host share (live volumes over virtiofs) switched off: volumes
    /// are copied in and synced back, the path taken when virtiofsd is missing.
    fn start_copying(tool: &'static str) -> Live {
        Live::start_with(tool, &[], false)
    }

    fn start_with(tool: &'static str, start_args: &[&str], share: bool) -> Live {
        let live = Live {
            w: World::new(),
            tool,
        };
        let mut cmd = live.w.cmd(tool);
        cmd.args(["memres", "start"]).args(start_args);
        if !share {
            cmd.env("VCONTAINER_HOST_SHARE", "off");
        }
        let o = cmd.output().expect("spawn vcontainer");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tool} memres start: {}",
            stderr(&o)
        );
        let tar = live.w.home.path().join("bb-rootfs.tar");
        busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
        let o = live.w.run(
            tool,
            [OsStr::new("import"), tar.as_os_str(), OsStr::new("bb:1")],
        );
        assert_eq!(o.status.code(), Some(0), "{tool} import: {}", stderr(&o));
        live
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.w.run(self.tool, args)
    }

    /// Runs and asserts exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.w.run_ok(self.tool, args)
    }

    fn state_dir(&self) -> PathBuf {
        self.w
            .home
            .path()
            .join(format!(".{}", self.tool))
            .join("x86_64")
    }

    /// Polls `exec <ctr> test -e <path>` until the container has made `path`.
    fn wait_in_container(&self, ctr: &str, path: &str) {
        self.wait_exec(ctr, &["test", "-e", path]);
    }

    /// Polls `exec <ctr> <argv>` until it succeeds.
    fn wait_exec(&self, ctr: &str, argv: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut args = vec!["exec", ctr];
        args.extend_from_slice(argv);
        while Instant::now() < deadline {
            if self.run(&args).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{}: `exec {ctr} {argv:?}` never succeeded", self.tool);
    }

    fn stop_memres(&self) {
        self.ok(&["memres", "stop"]);
        assert_no_vm_processes(self.w.home.path());
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.w.run(self.tool, ["memres", "stop"]);
    }
}

fn mtime_and_inode(p: &Path) -> (i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("metadata");
    (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// volumes of detached containers

/// A `run -d -v` container keeps its volume while it runs (the old tool deleted it right
/// after start, docs/old-bugs.md §13); what it wrote comes back to the host when it is stopped
/// (by name), removed (`rm -f` by id) or when the memres VM stops, with the foreground
/// volume rules: dotfiles kept, nothing the container did not change touched. A `start`
/// after `stop` shows the container the host's edits made meanwhile. This is the copy path
/// (a memres VM without the host share, as when virtiofsd is missing).
#[test]
fn detached_volume_changes_reach_the_host_on_stop_rm_and_memres_stop() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let live = Live::start_copying(tool);
        let dir = live.w.home.path().join("src");
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").expect("w");
        std::fs::write(dir.join(".env"), "SECRET=1\n").expect("w");
        std::fs::write(dir.join("keep.txt"), "keep\n").expect("w");
        std::fs::write(dir.join("change.txt"), "old\n").expect("w");
        std::fs::write(dir.join("delete.txt"), "bye\n").expect("w");
        let keep_before = mtime_and_inode(&dir.join("keep.txt"));
        let env_before = mtime_and_inode(&dir.join(".env"));
        let vol = format!("{}:/data", dir.display());

        // 1. stop by name: the container's changes come back; the rest is untouched
        live.ok(&[
            "run",
            "-d",
            "--name",
            "vol1",
            "-v",
            &vol,
            "bb:1",
            "sh",
            "-c",
            "cat /data/.env > /data/seen-env; echo new > /data/change.txt; \
             echo made > /data/created.txt; rm -f /data/delete.txt; \
             cat /data/host-edit.txt > /data/seen-host-edit 2>/dev/null; touch /data/.ready; \
             sleep 600",
        ]);
        live.wait_in_container("vol1", "/data/.ready");
        // still running: the volume is there and complete
        assert_eq!(
            live.ok(&["exec", "vol1", "cat", "/data/keep.txt"]),
            "keep\n",
            "{tool}"
        );
        live.ok(&["stop", "-t", "1", "vol1"]);
        assert_eq!(read(&dir.join("seen-env")), "SECRET=1\n", "{tool}");
        assert_eq!(read(&dir.join("change.txt")), "new\n", "{tool}");
        assert_eq!(read(&dir.join("created.txt")), "made\n", "{tool}");
        assert!(!dir.join("delete.txt").exists(), "{tool}: delete.txt kept");
        assert_eq!(read(&dir.join(".git/HEAD")), "ref: refs/heads/main\n");
        assert_eq!(
            mtime_and_inode(&dir.join("keep.txt")),
            keep_before,
            "{tool}"
        );
        assert_eq!(mtime_and_inode(&dir.join(".env")), env_before, "{tool}");
        // an edit on the host while it is stopped is what it sees when it starts again
        std::fs::write(dir.join("host-edit.txt"), "from-host\n").expect("w");
        live.ok(&["start", "vol1"]);
        live.wait_exec("vol1", &["grep", "-q", "from-host", "/data/seen-host-edit"]);
        live.ok(&["rm", "-f", "vol1"]);
        assert_eq!(read(&dir.join("seen-host-edit")), "from-host\n", "{tool}");
        assert_eq!(read(&dir.join("host-edit.txt")), "from-host\n", "{tool}");
        assert_eq!(
            mtime_and_inode(&dir.join("keep.txt")),
            keep_before,
            "{tool}"
        );

        // 2. rm -f by id of a running container
        let out = live.ok(&[
            "run",
            "-d",
            "-v",
            &vol,
            "bb:1",
            "sh",
            "-c",
            "echo two > /data/by-id.txt && touch /data/.ready2 && sleep 600",
        ]);
        let id = out.trim().lines().last().unwrap_or_default().to_string();
        assert!(id.len() >= 12, "{tool}: no id in {out:?}");
        live.wait_in_container(&id, "/data/.ready2");
        assert!(!dir.join("by-id.txt").exists(), "{tool}: synced too early");
        live.ok(&["rm", "-f", &id[..12]]);
        assert_eq!(read(&dir.join("by-id.txt")), "two\n", "{tool}");

        // 3. memres stop with the container still running
        live.ok(&[
            "run",
            "-d",
            "--name",
            "vol3",
            "-v",
            &vol,
            "bb:1",
            "sh",
            "-c",
            "echo three > /data/at-memres-stop.txt && touch /data/.ready3 && sleep 600",
        ]);
        live.wait_in_container("vol3", "/data/.ready3");
        live.stop_memres();
        assert_eq!(read(&dir.join("at-memres-stop.txt")), "three\n", "{tool}");
        assert!(
            !live.state_dir().join("live-volumes.json").exists(),
            "{tool}: volume records outlived the VM"
        );
        assert_eq!(
            mtime_and_inode(&dir.join("keep.txt")),
            keep_before,
            "{tool}"
        );
        assert_eq!(read(&dir.join(".env")), "SECRET=1\n", "{tool}");
    }
}

/// Polls `cond` every 50 ms for up to `secs`; returns how long it took.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("waited {secs}s for {what}");
}

/// `run -d -v dir:/data` on a memres VM with the host share is a live bind of the host
/// directory (virtiofs): a host edit is seen by the running container, its writes are on
/// the host while it runs (no stop needed), `:ro` cannot be written, dotfiles are never
/// touched, nothing is recorded for a sync, a symlinked host path works (canonicalized),
/// foreground `run --rm` writes are there when it returns, and `memres stop` leaves no
/// virtiofsd behind. And the guest holds nothing of the host but the volumes: a privileged
/// container that mounts every share it can name finds no file outside them, and cannot
/// write through a `:ro` volume's share even as root (virtiofsd --readonly).
#[test]
fn detached_volumes_are_live_over_virtiofs() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let live = Live::start(tool, &[]);
        let status = live.ok(&["memres", "status"]);
        assert!(
            status.contains("live volumes (virtiofs"),
            "{tool}: no host share: {status}\n{}",
            read(&live.state_dir().join("vm.log"))
        );
        let dir = live.w.home.path().join("src");
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").expect("w");
        std::fs::write(dir.join(".env"), "SECRET=1\n").expect("w");
        std::fs::write(dir.join("host.txt"), "v0\n").expect("w");
        let git_before = mtime_and_inode(&dir.join(".git/HEAD"));
        let env_before = mtime_and_inode(&dir.join(".env"));
        let link = live.w.home.path().join("src-link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let rw = format!("{}:/data", link.display());
        let ro = format!("{}:/ro:ro", dir.display());

        live.ok(&[
            "run",
            "-d",
            "--name",
            "lv",
            "-v",
            &rw,
            "-v",
            &ro,
            "bb:1",
            "sh",
            "-c",
            "echo hello > /data/from-ctr.txt; \
             while true; do cp /data/host.txt /data/seen.txt; sleep 0.2; done",
        ]);
        // the container's write is on the host while it runs
        let took = wait_for(120, "the container's write on the host", || {
            read(&dir.join("from-ctr.txt")) == "hello\n"
        });
        eprintln!("{tool}: container write seen on the host after {took:?} (from run -d)");
        wait_for(30, "the loop's first copy", || {
            read(&dir.join("seen.txt")) == "v0\n"
        });
        // a host edit is seen by the running container (it copies it back to seen.txt)
        for n in 1..=3 {
            let text = format!("edit-{n}\n");
            std::fs::write(dir.join("host.txt"), &text).expect("w");
            let took = wait_for(30, "the host edit seen inside", || {
                read(&dir.join("seen.txt")) == text
            });
            eprintln!("{tool}: host edit {n} seen inside and back after {took:?}");
        }
        // :ro is enforced by the runtime's read-only bind
        let o = live.run(&["exec", "lv", "sh", "-c", "echo x > /ro/nope.txt"]);
        assert_ne!(o.status.code(), Some(0), "{tool}: wrote through :ro");
        assert!(!dir.join("nope.txt").exists(), "{tool}");
        assert_eq!(
            live.ok(&["exec", "lv", "cat", "/ro/.env"]),
            "SECRET=1\n",
            "{tool}: dotfiles are visible inside"
        );
        assert!(
            !live.state_dir().join("live-volumes.json").exists(),
            "{tool}: a live volume was recorded for a sync"
        );
        // a foreground run's writes are there when it returns
        live.ok(&[
            "run",
            "--rm",
            "-v",
            &rw,
            "bb:1",
            "sh",
            "-c",
            "echo fg > /data/fg.txt",
        ]);
        assert_eq!(read(&dir.join("fg.txt")), "fg\n", "{tool}");
        nothing_but_the_volumes_is_shared(&live, tool);
        live.ok(&["rm", "-f", "lv"]);
        live.stop_memres();
        assert_eq!(
            mtime_and_inode(&dir.join(".git/HEAD")),
            git_before,
            "{tool}"
        );
        assert_eq!(mtime_and_inode(&dir.join(".env")), env_before, "{tool}");
        assert_eq!(read(&dir.join(".env")), "SECRET=1\n", "{tool}");
        assert_eq!(read(&dir.join("from-ctr.txt")), "hello\n", "{tool}");
        assert!(
            vcontainer_tests::pids_matching("virtiofsd")
                .into_iter()
                .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
                .all(|c| !String::from_utf8_lossy(&c)
                    .contains(&*live.w.home.path().to_string_lossy())),
            "{tool}: virtiofsd left behind"
        );
    }
}

/// The trust boundary of the shares (security review: memres VMs used to get the host's `/`
/// read-write): root in a privileged container mounts every virtio-fs tag there is (the old
/// `/` share's `vchost` and every volume slot) and looks for a 0600 file that no volume
/// names, and writes into each; the agent's own view is checked too.
fn nothing_but_the_volumes_is_shared(live: &Live, tool: &str) {
    let home = live.w.home.path();
    let secret = home.join(".secret");
    std::fs::write(&secret, "TOPSECRET\n").expect("w");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let ro_only = home.join("ro-only");
    std::fs::create_dir_all(&ro_only).expect("mkdir");
    std::fs::write(ro_only.join("keep.txt"), "keep\n").expect("w");
    let tags: Vec<String> = std::iter::once("vchost".to_string())
        .chain((0..8).map(|n| format!("vcvol{n}")))
        .collect();
    let script = format!(
        "for t in {}; do mkdir -p /m/$t; \
           if busybox mount -t virtiofs $t /m/$t 2>/dev/null; then echo mounted $t; \
             busybox find /m/$t -name .secret -exec cat {{}} \\; 2>/dev/null; \
             (echo pwn > /m/$t/pwn-$t) 2>/dev/null && echo wrote $t; \
           fi; done; true",
        tags.join(" ")
    );
    let ro = format!("{}:/r:ro", ro_only.display());
    let out = live.ok(&[
        "run",
        "--rm",
        "--privileged",
        "-v",
        &ro,
        "bb:1",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        !out.contains("TOPSECRET"),
        "{tool}: the secret was reached: {out}"
    );
    assert!(
        !out.contains("mounted vchost"),
        "{tool}: the host's / is shared: {out}"
    );
    assert!(
        out.contains("mounted vcvol"),
        "{tool}: no share was mountable: {out}"
    );
    let names: Vec<_> = std::fs::read_dir(&ro_only)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        ["keep.txt"],
        "{tool}: written through a :ro share: {out}"
    );
    assert!(!home.join("pwn-vchost").exists(), "{tool}");
    // the agent's side (the reproducer of the review): no host tree under /run/vcontainer
    let o = live.run(&[
        "vshell",
        "-c",
        &format!("cat /run/vcontainer/host{}", secret.display()),
    ]);
    assert_ne!(o.status.code(), Some(0), "{tool}: {}", stdout(&o));
    assert!(!stdout(&o).contains("TOPSECRET"), "{tool}");
    let listing = live.ok(&["vshell", "-c", "ls /run/vcontainer"]);
    assert!(
        !listing.lines().any(|l| l.trim() == "host"),
        "{tool}: a host dir in the guest: {listing}"
    );
}

// ---------------------------------------------------------------------------------------
// ports

fn free_port(base: u16) -> u16 {
    (base..base + 500)
        .find(|p| {
            std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok()
        })
        .expect("free port")
}

/// `memres start -p H:H -p U:U/udp`: static forwards reach a container on the VM's network;
/// `run -d -p 127.0.0.1:H:80` and `run -d -p H:80` (same inside port, different host ports):
/// both answer, both show in `ps`; `stop <id>` and `rm -f <name>` remove their forwards, `start` restores them, a
/// `create -p` container gets its forward when it starts; `memres stop` leaves no forward
/// behind for the next VM.
#[test]
fn static_and_container_port_forwards_answer_and_go_away() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let (hs, udp, p1, p2, p3) = (
            free_port(19100),
            free_port(19700),
            free_port(20300),
            free_port(20900),
            free_port(22100),
        );
        let live = Live::start(
            tool,
            &[
                "-p",
                &format!("{hs}:{hs}"),
                "-p",
                &format!("{udp}:{udp}/udp"),
            ],
        );
        let status = live.ok(&["memres", "status"]);
        assert!(
            status.contains(&format!("{hs}:{hs}/tcp"))
                && status.contains(&format!("{udp}:{udp}/udp")),
            "{tool}: static forwards not in status: {status}"
        );
        // QEMU holds the udp port on the host (no udp server in the busybox image to answer)
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", udp)).is_err(),
            "{tool}: udp {udp} not forwarded"
        );
        // the static forward ends at the VM's port: a container on the VM's network serves it
        live.ok(&[
            "run",
            "-d",
            "--name",
            "static",
            "--network",
            "host",
            "bb:1",
            "sh",
            "-c",
            &httpd(hs, "static-reply"),
        ]);
        assert!(
            wait_http(hs, "static-reply", 90),
            "{tool}: static port {hs} silent"
        );

        // a named host address is the host side's: the container still answers through it
        let out = live.ok(&[
            "run",
            "-d",
            "--name",
            "webA",
            "-p",
            &format!("127.0.0.1:{p1}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "reply-from-A"),
        ]);
        let id_a = out.trim().lines().last().unwrap_or_default().to_string();
        live.ok(&[
            "run",
            "-d",
            "--name",
            "webB",
            "-p",
            &format!("{p2}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "reply-from-B"),
        ]);
        assert!(wait_http(p1, "reply-from-A", 90), "{tool}: {p1} silent");
        assert!(wait_http(p2, "reply-from-B", 90), "{tool}: {p2} silent");
        // no address named: the forwards listen on loopback only, not on the network
        for p in [hs, p1, p2] {
            assert_eq!(
                tcp_listen_addrs(p),
                [std::net::Ipv4Addr::LOCALHOST],
                "{tool}: forward {p} is not on 127.0.0.1 only"
            );
        }
        let ps = live.ok(&["ps"]);
        let table = forwards_section(&ps);
        for p in [p1, p2, hs, udp] {
            assert!(
                table.contains(&format!("127.0.0.1:{p}")),
                "{tool}: {p} not in {ps}"
            );
        }
        assert!(
            table.contains("webA") && table.contains("webB"),
            "{tool}: {ps}"
        );

        // stop by (short) id
        assert!(id_a.len() >= 12, "{tool}: no id: {out}");
        live.ok(&["stop", "-t", "1", &id_a[..12]]);
        let table = live.ok(&["ps", "-a"]);
        assert!(
            !forwards_section(&table).contains(&format!("127.0.0.1:{p1}")),
            "{tool}: {table}"
        );
        assert!(
            http_get(p1).is_none_or(|b| !b.contains("reply-from-A")),
            "{tool}"
        );
        // start again: its published port is forwarded again, as docker restores it
        live.ok(&["start", "webA"]);
        assert!(
            wait_http(p1, "reply-from-A", 90),
            "{tool}: {p1} silent after start"
        );
        let table = live.ok(&["ps"]);
        assert!(
            forwards_section(&table).contains(&format!("127.0.0.1:{p1}")),
            "{tool}: {table}"
        );
        // a created container's ports are forwarded when it starts
        live.ok(&[
            "create",
            "--name",
            "webD",
            "-p",
            &format!("{p3}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "reply-from-D"),
        ]);
        live.ok(&["start", "webD"]);
        assert!(
            wait_http(p3, "reply-from-D", 90),
            "{tool}: {p3} silent after create + start"
        );
        // rm -f by name
        live.ok(&["rm", "-f", "webB"]);
        let table = live.ok(&["ps", "-a"]);
        let section = forwards_section(&table);
        assert!(
            !section.contains(&format!("127.0.0.1:{p2}")),
            "{tool}: {table}"
        );
        // the static ones stay until the VM goes
        assert!(
            section.contains(&format!("127.0.0.1:{hs}")),
            "{tool}: {table}"
        );
        // the host port of a removed forward is free for a new container
        live.ok(&[
            "run",
            "-d",
            "--name",
            "webC",
            "-p",
            &format!("{p2}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "reply-from-C"),
        ]);
        assert!(
            wait_http(p2, "reply-from-C", 90),
            "{tool}: {p2} silent after reuse"
        );

        // memres stop: every forward goes with the VM, nothing stale for the next one
        live.stop_memres();
        for p in [p1, p2, p3] {
            assert!(http_get(p).is_none(), "{tool}: {p} still answers");
        }
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", udp)).is_ok(),
            "{tool}: udp {udp} still taken"
        );
        assert!(
            !live.state_dir().join("port-forwards.json").exists(),
            "{tool}"
        );
        live.ok(&["memres", "start"]);
        let ps = live.ok(&["ps", "-a"]);
        assert!(
            forwards_section(&ps).is_empty(),
            "{tool}: stale forwards: {ps}"
        );
        live.stop_memres();
    }
}

// ---------------------------------------------------------------------------------------
// memres restart --clean, clean-ports

/// `memres clean-ports` drops forwards whose container went away behind the tool's back
/// (removed from inside the VM), freeing the host port; `memres restart --clean` wipes the
/// state disk (images gone) and leaves a running VM.
#[test]
fn clean_ports_drops_stale_forwards_and_restart_clean_wipes_state() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let live = Live::start(tool, &[]);
        let p = free_port(21500);
        live.ok(&[
            "run",
            "-d",
            "--name",
            "gone",
            "-p",
            &format!("{p}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "gone-reply"),
        ]);
        assert!(wait_http(p, "gone-reply", 90), "{tool}: {p} silent");
        // removed inside the VM: the tool never hears of it, the forward is stale
        live.ok(&["vshell", "-c", &format!("{runtime} rm -f gone >/dev/null")]);
        let ps = live.ok(&["ps", "-a"]);
        assert!(
            forwards_section(&ps).contains(&format!("127.0.0.1:{p}")),
            "{tool}: {ps}"
        );
        let o = live.run(&["memres", "clean-ports"]);
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Cleared 1 port forward"),
            "{tool}: {}",
            stderr(&o)
        );
        let ps = live.ok(&["ps", "-a"]);
        assert!(forwards_section(&ps).is_empty(), "{tool}: {ps}");
        // QEMU let go of the port too: a new container can have it
        live.ok(&[
            "run",
            "-d",
            "--name",
            "again",
            "-p",
            &format!("{p}:80"),
            "bb:1",
            "sh",
            "-c",
            &httpd(80, "again-reply"),
        ]);
        assert!(
            wait_http(p, "again-reply", 90),
            "{tool}: {p} silent after clean-ports"
        );
        let o = live.run(&["memres", "clean-ports"]);
        assert!(stderr(&o).contains("Cleared 1"), "{tool}: {}", stderr(&o));
        let o = live.run(&["memres", "clean-ports"]);
        assert!(
            stderr(&o).contains("already empty"),
            "{tool}: {}",
            stderr(&o)
        );

        // restart --clean: the state disk is new, the image is gone, the VM runs
        assert!(live.ok(&["images"]).contains("bb"), "{tool}");
        let state_img = live.state_dir().join(format!("{runtime}-state.img"));
        std::fs::write(live.state_dir().join("marker-not-ours"), "x").expect("w");
        let o = live.run(&["memres", "restart", "--clean"]);
        assert_eq!(o.status.code(), Some(0), "{tool}: {}", stderr(&o));
        assert!(
            live.ok(&["memres", "status"]).starts_with("running"),
            "{tool}"
        );
        assert!(state_img.is_file(), "{tool}: no new state disk");
        let images = live.ok(&["images"]);
        assert!(
            !images.contains("bb"),
            "{tool}: image survived --clean: {images}"
        );
        assert!(
            forwards_section(&live.ok(&["ps", "-a"])).is_empty(),
            "{tool}"
        );
        // only the VM's own files were wiped
        assert!(live.state_dir().join("marker-not-ours").exists(), "{tool}");
        live.stop_memres();
    }
}

// ---------------------------------------------------------------------------------------
// PTY

/// The CLI on a pseudo-terminal, as a user's shell would run it.
struct OnPty {
    master: std::fs::File,
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
}

fn winsize(rows: u16, cols: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl OnPty {
    fn spawn(w: &World, tool: &str, args: &[&str]) -> OnPty {
        let pty = nix::pty::openpty(Some(&winsize(24, 80)), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut cmd = w.cmd(tool);
        cmd.args(args)
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the child gets the PTY as its
        // controlling terminal, so resizes raise SIGWINCH in it as in a real shell.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on pty");
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave fd closes
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().map(|mut s| s.extend_from_slice(&buf[..n])).ok();
            }
        });
        OnPty {
            master,
            child,
            seen,
        }
    }

    fn text(&self) -> String {
        let s = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&s).into_owned()
    }

    /// Waits until the output after byte `from` matches; returns the new end.
    fn expect(&self, from: usize, want: &str, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text();
            if let Some(i) = t.get(from..).and_then(|rest| rest.find(want)) {
                return from + i + want.len();
            }
            assert!(
                Instant::now() < deadline,
                "waited {secs}s for {want:?}; terminal shows: {:?}",
                t.get(from..).unwrap_or("")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to pty");
    }

    /// Asks `busybox stty size` until the terminal shows `want` (the new size after a
    /// resize): the resize travels CLI -> agent -> runtime -> container asynchronously, so
    /// one ask after a fixed pause can come too early on a slow machine. Returns the new end.
    fn expect_size(&mut self, from: usize, want: &str, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.send(b"busybox stty size\r");
            let ask_until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < ask_until {
                let t = self.text();
                if let Some(i) = t.get(from..).and_then(|rest| rest.find(want)) {
                    return from + i + want.len();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                Instant::now() < deadline,
                "waited {secs}s for size {want:?}; terminal shows: {:?}",
                self.text().get(from..).unwrap_or("")
            );
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads the winsize we pass; the kernel signals the foreground
        // process group of the terminal with SIGWINCH.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The exit code, and the end of what the terminal showed (for the failure message: a
    /// runtime that lost the container's status says so there).
    fn wait(mut self, secs: u64) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                // the reader thread may still hold the last bytes: give it a moment
                std::thread::sleep(Duration::from_millis(300));
                let text = self.text();
                let mut from = text.len().saturating_sub(2000);
                while !text.is_char_boundary(from) {
                    from += 1;
                }
                return (st.code(), text[from..].to_string());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {secs}s; terminal: {:?}", self.text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `run -it`: the container sees the user's terminal size, a resize reaches it, Ctrl-C (the
/// 0x03 byte) interrupts the container's foreground program, and the exit status is the
/// container's.
#[test]
fn run_it_has_a_pty_with_resize_and_ctrl_c() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let live = Live::start(tool, &[]);
        let mut t = OnPty::spawn(&live.w, tool, &["run", "-it", "--rm", "bb:1", "sh"]);
        // typing starts at the prompt: keys typed before the CLI switched the terminal to
        // raw mode are flushed by that switch, as in any terminal program
        let mut at = t.expect(0, "# ", 240);
        t.send(b"echo rea''dy\r");
        at = t.expect(at, "ready", 60);
        // the runtime sizes the container's terminal once it runs; asked again until then
        at = t.expect_size(at, "24 80", 90);
        t.resize(40, 132);
        at = t.expect_size(at, "40 132", 60);
        t.send(b"sh -c 'trap \"echo got-int; exit 3\" INT; echo arm''ed; sleep 60'; echo rc=$?\r");
        at = t.expect(at, "armed", 60);
        std::thread::sleep(Duration::from_secs(1));
        t.send(&[0x03]);
        at = t.expect(at, "got-int", 60);
        t.expect(at, "rc=3", 30);
        t.send(b"exit 5\r");
        let (code, shown) = t.wait(120);
        assert_eq!(
            code,
            Some(5),
            "{tool}: exit status of run -it; terminal: {shown:?}"
        );
        live.stop_memres();
    }
}

// ---------------------------------------------------------------------------------------
// logs -f, exec -it

/// `logs -f` prints lines while the container runs and ends by itself when it exits;
/// `exec -it` opens a shell with a PTY in a running container and returns its status.
#[test]
fn logs_follow_streams_until_exit_and_exec_it_gets_a_pty() {
    for (tool, runtime) in tools() {
        vm_or_skip!(runtime);
        let live = Live::start(tool, &[]);
        live.ok(&[
            "run",
            "-d",
            "--name",
            "talker",
            "bb:1",
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.2; done; \
             for i in 1 2 3 4 5 6; do echo line-$i; sleep 2; done",
        ]);
        let mut follow = live
            .w
            .cmd(tool)
            .args(["logs", "-f", "talker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logs -f");
        let mut out = follow.stdout.take().expect("stdout");
        live.ok(&["exec", "talker", "touch", "/tmp/go"]);
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut acc = String::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                acc.push_str(&String::from_utf8_lossy(&buf[..n]));
                let _ = tx.send((Instant::now(), acc.clone()));
            }
        });
        let mut first_line_at = None;
        let mut all = String::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while let Ok((at, text)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if first_line_at.is_none() && text.contains("line-1") {
                first_line_at = Some(at);
            }
            all = text;
        }
        let ended = Instant::now();
        let status = follow.wait().expect("wait logs -f");
        assert_eq!(status.code(), Some(0), "{tool}: logs -f status");
        for i in 1..=6 {
            assert!(all.contains(&format!("line-{i}")), "{tool}: {all:?}");
        }
        let first = first_line_at.expect("line-1 seen");
        assert!(
            ended.duration_since(first) >= Duration::from_secs(5),
            "{tool}: logs -f did not stream (all output arrived at the end): {all:?}"
        );

        // exec -it into a running container
        live.ok(&["run", "-d", "--name", "box", "bb:1", "sleep", "600"]);
        let mut t = OnPty::spawn(&live.w, tool, &["exec", "-it", "box", "sh"]);
        let at = t.expect(0, "# ", 180);
        t.send(b"echo in''side\r");
        let at = t.expect(at, "inside", 60);
        let at = t.expect_size(at, "24 80", 90);
        t.resize(30, 100);
        t.expect_size(at, "30 100", 60);
        t.send(b"exit 4\r");
        let (code, shown) = t.wait(120);
        assert_eq!(
            code,
            Some(4),
            "{tool}: exit status of exec -it; terminal: {shown:?}"
        );
        live.ok(&["rm", "-f", "box", "talker"]);
        live.stop_memres();
    }
}

/// Issue 13 item 4: 6 parallel `run -d -v` on one memres VM (copy-mode volumes) keep 6
/// records in live-volumes.json, so each volume still comes back on `rm`.
#[test]
fn parallel_detached_runs_keep_every_volume_record() {
    let (tool, runtime) = TOOLS[0];
    vm_or_skip!(runtime);
    let live = Live::start_copying(tool);
    let home = live.w.home.path().to_path_buf();
    let children: Vec<_> = (0..6)
        .map(|i| {
            let dir = home.join(format!("vol{i}"));
            std::fs::create_dir(&dir).expect("vol dir");
            live.w
                .cmd(tool)
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("par{i}"),
                    "-v",
                    &format!("{}:/data", dir.display()),
                    "bb:1",
                    "sh",
                    "-c",
                    &format!("echo {i} > /data/out; sleep 600"),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "run par{i}: {}", stderr(&o));
    }
    let records: serde_json::Value = serde_json::from_slice(
        &std::fs::read(live.state_dir().join("live-volumes.json")).expect("live-volumes.json"),
    )
    .expect("json");
    assert_eq!(
        records.as_array().map(Vec::len),
        Some(6),
        "records lost: {records}"
    );
    for i in 0..6 {
        live.wait_in_container(&format!("par{i}"), "/data/out");
    }
    let names: Vec<String> = (0..6).map(|i| format!("par{i}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    live.ok(&args);
    for i in 0..6 {
        assert_eq!(
            read(&home.join(format!("vol{i}/out"))),
            format!("{i}\n"),
            "volume {i} did not come back"
        );
    }
    live.stop_memres();
}

// ---------------------------------------------------------------------------------------
// one memres session through the old tool's bugs (docs/old-bugs.md)

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

/// A port free on every address (TCP), for forwards that listen on 0.0.0.0.
fn free_port_any_address(base: u16) -> u16 {
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

/// One vpdmn memres session through the items about ports, detached volumes, interactive
/// runs, argument quoting, `--stateless` and the memres messages.
#[test]
fn memres_session_has_none_of_the_old_bugs() {
    let tool = "vpdmn";
    vm_or_skip!("podman");
    let w = World::new();
    let (static_host, static_guest) = (free_port_any_address(23100), 18081);

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
    let busy_port = free_port_any_address(23700);
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
    let (p1, p2) = (free_port_any_address(24100), free_port_any_address(24600));
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
