//! The aarch64 guest end to end (issue 11): the real arm64 guest (Debian arm64 kernel, the
//! cross-built agent, real docker and podman) under TCG on the x86_64 build host, driven as a
//! user drives it, through `vpdmn-aarch64` and `vdkr-aarch64`. The images hold real arm64
//! (and armhf, i386) busybox binaries (scripts/fetch-test-busybox.sh), so `uname -m` printing
//! `aarch64` proves the guest ran arm64 code, not an amd64 image under another label.
//!
//! One memres VM per runtime carries most checks (a TCG boot costs seconds); one-shot
//! (`--no-daemon`) runs are checked once per runtime, on the state the memres VM left. All
//! of them start from the runtime's aarch64 snapshot in the harness's shared cache (saved by
//! the first `memres start` of a build): the `-v` lines prove it (docs/snapshot.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vcontainer_tests::fixtures::{BusyboxLayouts, MemresGuard};
use vcontainer_tests::net::{httpd, wait_http};
use vcontainer_tests::terminal::on_terminal;
use vcontainer_tests::{assert_no_vm_processes, stderr, stdout, vm_or_skip, World};

/// The `-v` line of a VM started from a snapshot (vcontainer_vm::vm::snapshot).
const RESTORED: &str = "restored from the snapshot";
/// A VM of the state dir saved with its disk (docs/snapshot.md, "Suspended VMs").
const RESUMED: &str = "restored the suspended VM";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The test images: a multi-arch index (amd64 + arm64 + arm/v7) and an arm/v7-only image.
struct Images {
    _layouts: BusyboxLayouts,
    multi: PathBuf,
    armv7: PathBuf,
}

impl Images {
    fn new() -> Images {
        let layouts = BusyboxLayouts::new().expect("umoci layouts");
        let multi = layouts
            .multi("multi", &["amd64", "arm64", "arm"], false)
            .expect("multi-arch layout");
        let armv7 = layouts.single("armv7", "arm").expect("arm layout");
        Images {
            _layouts: layouts,
            multi,
            armv7,
        }
    }
}

/// A free TCP port on the host's loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs and asserts the exit code; returns (stdout, stderr).
fn expect(w: &World, tool: &str, args: &[&str], code: i32) -> (String, String) {
    let started = std::time::Instant::now();
    let o = w.run(tool, args);
    eprintln!(
        "{tool} {args:?}: exit {:?} in {:.1} s",
        o.status.code(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        o.status.code(),
        Some(code),
        "{tool} {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    (stdout(&o), stderr(&o))
}

/// What both runtimes must do on the aarch64 guest with a memres VM: arch selection from the
/// index, arm64 and arm/v7 containers, exit codes and separate streams, a volume, a published
/// port, a TTY, storage export; then stop, and one-shot runs on the state it left.
fn aarch64_end_to_end(tool: &str) {
    let images = Images::new();
    let w = World::new();
    let base = tool.split('-').next().unwrap_or(tool);
    let state = w.home.path().join(format!(".{base}/aarch64"));
    let stop = MemresGuard::new(&w, tool);

    // snapshots are on (docs/snapshot.md): the suite's shared cache holds this runtime's
    // aarch64 snapshot (saved here on the first run of a build), and the VM is restored
    let (_, err) = expect(&w, tool, &["-v", "memres", "start"], 0);
    assert!(err.contains(RESTORED), "{tool} memres start -v: {err}");
    let (out, _) = expect(&w, tool, &["memres", "status"], 0);
    assert!(out.contains("running"), "{tool} memres status: {out}");

    // the index's arm64 image is chosen, and the arm/v7-only image is accepted
    let (_, err) = expect(&w, tool, &["vimport", p(&images.multi), "multi:1"], 0);
    assert!(
        err.contains("Selected platform: linux/arm64/v8"),
        "{tool} vimport of the index: {err}"
    );
    expect(&w, tool, &["vimport", p(&images.armv7), "armv7:1"], 0);
    let (out, _) = expect(&w, tool, &["vrun", "multi:1", "uname", "-m"], 0);
    assert_eq!(
        out.trim(),
        "aarch64",
        "{tool}: the arm64 container's machine"
    );
    // the arm/v7 image holds only armhf code: its shell answering proves AArch32 at EL0
    // (uname says aarch64 or armv8l, depending on the personality the runtime sets)
    let (out, _) = expect(
        &w,
        tool,
        &["vrun", "armv7:1", "sh", "-c", "echo ran-arm32"],
        0,
    );
    assert_eq!(out, "ran-arm32\n", "{tool}: the arm/v7 container");

    // exit status and the two streams, as on x86_64
    let (out, err) = expect(
        &w,
        tool,
        &[
            "vrun",
            "multi:1",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 7",
        ],
        7,
    );
    assert_eq!(out, "to-out\n", "{tool}: stdout");
    assert!(
        err.contains("to-err") && !out.contains("to-err"),
        "{tool}: {err}"
    );
    expect(&w, tool, &["vrun", "multi:1", "false"], 1);

    // a volume: read from the host, written back to it
    let vol = w.home.path().join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir vol");
    std::fs::write(vol.join("in"), "from-host\n").expect("write in");
    let mount = format!("{}:/data", p(&vol));
    let (out, _) = expect(
        &w,
        tool,
        &[
            "vrun",
            "-v",
            &mount,
            "multi:1",
            "sh",
            "-c",
            "cat /data/in; uname -m > /data/out",
        ],
        0,
    );
    assert_eq!(out, "from-host\n", "{tool}: volume read");
    assert_eq!(
        std::fs::read_to_string(vol.join("out")).expect("out written back"),
        "aarch64\n",
        "{tool}: volume write"
    );

    // a published port answers on the host
    let port = free_port();
    let publish = format!("{port}:8080");
    let serve = httpd(8080, "arm64-web");
    expect(
        &w,
        tool,
        &[
            "run", "-d", "--name", "web", "-p", &publish, "multi:1", "sh", "-c", &serve,
        ],
        0,
    );
    assert!(
        wait_http(port, "arm64-web", 120),
        "{tool}: the published port {port} never answered"
    );
    expect(&w, tool, &["rm", "-f", "web"], 0);

    // a TTY: the shell's prompt, a command, its exit status
    let (code, shown) = on_terminal(
        &w,
        tool,
        &["vrun", "-it", "multi:1", "sh"],
        &[("# ", Duration::from_millis(300), "uname -m; exit 4\r")],
    );
    assert_eq!(code, 4, "{tool} vrun -it: terminal {shown:?}");
    assert!(shown.contains("aarch64"), "{tool} vrun -it: {shown:?}");

    // the runtime's storage, exported from the running VM
    let storage = w.home.path().join("storage.tar");
    expect(&w, tool, &["--storage", p(&storage), "images"], 0);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&storage)
        .output()
        .expect("tar -tf");
    assert!(listing.status.success(), "{tool}: storage tar unreadable");
    assert!(
        !listing.stdout.is_empty(),
        "{tool}: the exported storage is empty"
    );

    expect(&w, tool, &["memres", "stop"], 0);
    // as the old tool: status exits 1 when no VM runs
    let (out, _) = expect(&w, tool, &["memres", "status"], 1);
    assert!(
        out.contains("not running"),
        "{tool} memres status after stop: {out}"
    );
    assert_no_vm_processes(w.home.path());
    drop(stop);

    // one-shot VMs on the state the memres VM left, restored from the same snapshot (the
    // state disk is hot-plugged after the restore: the image imported above is there)
    let (out, err) = expect(
        &w,
        tool,
        &["-v", "--no-daemon", "vrun", "multi:1", "uname", "-m"],
        0,
    );
    assert_eq!(out.trim(), "aarch64", "{tool} --no-daemon vrun");
    // docker's VM comes back suspended by `memres stop` when nothing kept it from that
    assert!(
        err.contains(RESTORED) || err.contains(RESUMED),
        "{tool} --no-daemon vrun -v: {err}"
    );
    assert_no_vm_processes(&state);

    // a batch import for aarch64 makes a storage tar in one boot (one-shot, as the Yocto
    // classes run it)
    let batch = w.home.path().join("batch.tar");
    let entry = format!("{}:batch:1", p(&images.multi));
    let (_, err) = expect(
        &w,
        tool,
        &[
            "-v",
            "--no-daemon",
            "vimport-batch",
            "--output",
            p(&batch),
            "--",
            &entry,
        ],
        0,
    );
    assert!(err.contains(RESTORED), "{tool} vimport-batch -v: {err}");
    assert!(
        std::fs::metadata(&batch)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "{tool}: vimport-batch wrote no storage tar"
    );
    assert_no_vm_processes(w.home.path());
}

#[test]
fn vpdmn_aarch64_runs_arm64_and_arm_containers_end_to_end() {
    vm_or_skip!("podman", "aarch64");
    aarch64_end_to_end("vpdmn-aarch64");
}

#[test]
fn vdkr_aarch64_runs_arm64_and_arm_containers_end_to_end() {
    vm_or_skip!("docker", "aarch64");
    aarch64_end_to_end("vdkr-aarch64");
}

/// The x86_64 guest takes the amd64 image from the same index, and runs i386 images (as the
/// Yocto classes map 32-bit x86 targets) instead of refusing them; an arm64-only image is
/// still refused before anything boots, naming both arches.
#[test]
fn x86_64_guest_selects_amd64_from_the_index_and_runs_i386() {
    vm_or_skip!("podman");
    let images = Images::new();
    let layouts = BusyboxLayouts::new().expect("umoci layouts");
    let i386 = layouts.single("i386", "386").expect("386 layout");
    let arm64 = layouts.single("arm64", "arm64").expect("arm64 layout");
    let w = World::new();
    let tool = "vpdmn-x86_64";
    let _stop = MemresGuard::new(&w, tool);
    let (_, err) = expect(&w, tool, &["vimport", p(&arm64), "a:1"], 125);
    assert!(
        err.contains("Architecture mismatch") && err.contains("Use --arch aarch64"),
        "{err}"
    );
    expect(&w, tool, &["memres", "start"], 0);
    let (_, err) = expect(&w, tool, &["vimport", p(&images.multi), "multi:1"], 0);
    assert!(
        err.contains("Selected platform: linux/amd64"),
        "vimport of the index on x86_64: {err}"
    );
    expect(&w, tool, &["vimport", p(&i386), "i386:1"], 0);
    let (out, _) = expect(&w, tool, &["vrun", "multi:1", "uname", "-m"], 0);
    assert_eq!(out.trim(), "x86_64");
    // the image holds only i386 code: its shell answering proves the compat path
    let (out, _) = expect(
        &w,
        tool,
        &["vrun", "i386:1", "sh", "-c", "echo ran-i386"],
        0,
    );
    assert_eq!(out, "ran-i386\n", "the i386 container");
    expect(&w, tool, &["memres", "stop"], 0);
    assert_no_vm_processes(w.home.path());
}
