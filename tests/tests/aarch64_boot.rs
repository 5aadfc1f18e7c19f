//! aarch64 end to end, as far as this x86_64 host allows: the QEMU command line our own code
//! renders for an arm64 guest (`VmSpec` in core/cli/src/vm/qemu.rs: virt machine, `max` CPU
//! with cheap pointer authentication under TCG, ttyAMA0 console, virtio-pci disk and network,
//! hybrid vsock over vhost-user) boots Debian's real arm64 cloud kernel, and the guest sees
//! every virtio device with its driver bound.
//!
//! No aarch64 agent can be built here (no aarch64 Rust target), so the initramfs is a busybox
//! probe instead (scripts/build-aarch64-probe.sh, `make aarch64-probe`): it loads the virtio
//! modules, prints `VCPROBE arch=... virtio=<id>:<driver>,... block=...` and powers off.
//! Skips with a reason when qemu-system-aarch64, vhost-device-vsock or the probe are missing,
//! unless VCONTAINER_E2E=1 (CI), where that is a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vcontainer::vm::accel::{self, Accel};
use vcontainer::vm::process::which;
use vcontainer::vm::qemu::{Disk, DiskRole, KernelArgs, VmSpec, VsockDevice};
use vcontainer::vm::Arch;
use vcontainer_tests::fixtures::MemresGuard;
use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, workspace_root, World,
};

/// TCG arm64 on a loaded 2-core x86 host: the probe needs well under a minute; the margin is
/// for CI machines running other work.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Virtio device ids (sysfs `device`) and the drivers the probe must find bound to them.
const EXPECTED_VIRTIO: [(&str, &str); 3] = [
    ("0x0001", "virtio_net"),
    ("0x0002", "virtio_blk"),
    ("0x0013", "vmw_vsock_virtio_transport"),
];

/// What `scripts/build-aarch64-probe.sh` writes.
fn probe_dir() -> PathBuf {
    std::env::var_os("VCONTAINER_AARCH64_PROBE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/cache/aarch64-probe/out"))
}

struct Tools {
    qemu: PathBuf,
    vhost_device_vsock: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Everything the boot needs, or why it cannot run here.
fn tools() -> Result<Tools, String> {
    let program = vcontainer::vm::qemu::qemu_program(Arch::Aarch64);
    let qemu = which(program).ok_or(format!("{program} is not installed"))?;
    let vhost_device_vsock =
        which("vhost-device-vsock").ok_or("vhost-device-vsock is not installed")?;
    let dir = probe_dir();
    let kernel = dir.join("Image");
    let initrd = dir.join("initramfs.cpio.gz");
    if !kernel.is_file() || !initrd.is_file() {
        return Err(format!(
            "the aarch64 probe is missing under {} (run `make aarch64-probe`)",
            dir.display()
        ));
    }
    Ok(Tools {
        qemu,
        vhost_device_vsock,
        kernel,
        initrd,
    })
}

/// A child process killed when the test ends, passing or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_file(path: &Path) -> File {
    File::create(path).expect("create log file")
}

fn spawn_vhost_device_vsock(bin: &Path, dir: &Path) -> Reaped {
    let socket = dir.join("vhost-vsock.sock");
    let log = log_file(&dir.join("vhost-device-vsock.log"));
    let child = Command::new(bin)
        .arg("--guest-cid")
        .arg("3")
        .arg("--socket")
        .arg(&socket)
        .arg("--uds-path")
        .arg(dir.join("vsock.sock"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("start vhost-device-vsock");
    let child = Reaped(child);
    // QEMU connects to the vhost-user socket at start, so it must exist first
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "vhost-device-vsock did not create {} within 10 s",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The spec the CLI would build for an aarch64 guest, with the probe as kernel and initramfs
/// and a scratch disk in the rootfs slot (/dev/vda).
fn probe_spec(t: &Tools, dir: &Path, disk: &Path) -> VmSpec {
    VmSpec {
        arch: Arch::Aarch64,
        // TCG on an x86 host (the guest arch differs); KVM on an arm64 host that has it
        accel: accel::choose(Arch::Aarch64, false).accel,
        memory_mib: 512,
        cpus: 2,
        kernel: t.kernel.clone(),
        initrd: t.initrd.clone(),
        disks: vec![Disk {
            role: DiskRole::Rootfs,
            path: disk.to_path_buf(),
            read_only: true,
        }],
        port_forwards: Vec::new(),
        console_log: dir.join("console.log"),
        qmp_socket: dir.join("qmp.sock"),
        vsock: VsockDevice::Hybrid {
            vhost_user_socket: dir.join("vhost-vsock.sock"),
        },
        host_share: None,
        // QEMU reads the file at start: it must exist (the probe does not check the secret)
        agent_secret: {
            let path = dir.join(vcontainer::vm::secret::FILE_NAME);
            vcontainer::vm::secret::create(&path).expect("agent secret");
            path
        },
        kernel_args: KernelArgs {
            runtime: "probe".into(),
            state_device: None,
            storage_path: "/var/lib/vcontainer".into(),
            agent_port: 1024,
            debug: false,
        },
    }
}

/// The tools, or None after printing why the test skips (a failure under VCONTAINER_E2E=1).
fn tools_or_skip() -> Option<Tools> {
    match tools() {
        Ok(t) => Some(t),
        Err(reason) => {
            if std::env::var("VCONTAINER_E2E").as_deref() == Ok("1") {
                panic!("VCONTAINER_E2E=1 but {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

#[test]
fn aarch64_command_line_boots_debian_arm64_kernel() {
    let Some(t) = tools_or_skip() else { return };
    let tmp = tempfile::Builder::new()
        .prefix("vct-arm64-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path();
    let disk = dir.join("disk.img");
    File::create(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .expect("scratch disk");

    let spec = probe_spec(&t, dir, &disk);
    assert_eq!(spec.program(), "qemu-system-aarch64");
    assert_eq!(spec.console_device(), "ttyAMA0");
    let argv = spec.render();
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(spec.accel, Accel::Tcg);
    }

    let _vhost = spawn_vhost_device_vsock(&t.vhost_device_vsock, dir);
    let qemu_log = log_file(&dir.join("qemu.log"));
    let started = Instant::now();
    let mut qemu = Reaped(
        Command::new(&t.qemu)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone().expect("dup log"))
            .stderr(qemu_log)
            .spawn()
            .expect("start qemu-system-aarch64"),
    );
    let status = loop {
        if let Some(st) = qemu.0.try_wait().expect("wait for qemu") {
            break Some(st);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let qemu_out = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
    let context = format!(
        "argv: {argv:?}\nqemu output:\n{qemu_out}\nconsole:\n{console}",
        console = tail(&console, 40)
    );
    let status = status.unwrap_or_else(|| {
        panic!("qemu-system-aarch64 did not power off within {BOOT_TIMEOUT:?}\n{context}")
    });
    eprintln!(
        "aarch64 probe: QEMU start to power-off {:.1} s ({} accel)",
        elapsed.as_secs_f64(),
        spec.accel
    );
    // `poweroff -f` with -no-reboot: QEMU exits by itself, status 0
    assert!(status.success(), "qemu exited with {status}\n{context}");

    let marker = console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with("VCPROBE arch="))
        .unwrap_or_else(|| panic!("no VCPROBE marker on the console\n{context}"));
    eprintln!("{marker}");
    assert!(
        marker.starts_with("VCPROBE arch=aarch64 "),
        "guest is not aarch64: {marker}"
    );
    for (id, driver) in EXPECTED_VIRTIO {
        assert!(
            marker.contains(&format!("{id}:{driver}")),
            "virtio device {id} without driver {driver}: {marker}\n{context}"
        );
    }
    assert!(
        marker.contains("block=") && marker.contains("vda"),
        "the scratch disk is not /dev/vda: {marker}"
    );
    assert!(
        !console.contains("VCPROBE insmod"),
        "a module failed to load\n{context}"
    );
    assert!(console.contains("VCPROBE END"), "{context}");
}

/// The whole CLI path for an arm64 target, without an aarch64 agent: `vcontainer image build
/// --arch arm64|amd64` + `image index` make a multi-arch image; `vdkr-aarch64 vimport` refuses
/// the amd64-only image before anything boots (and `vdkr-x86_64` the arm64 one), accepts the
/// index (its arm64 manifest), and boots the aarch64 VM through the real boot code
/// (vm/boot.rs: qemu-system-aarch64, rootfs + state disk, hybrid vsock) with the probe blobs
/// standing in for the guest. With no agent to answer, the CLI reports that the VM exited
/// during boot (exit 125), and the console shows the arm64 kernel saw both disks.
#[test]
fn vdkr_aarch64_accepts_the_arm64_image_and_boots_an_arm64_guest() {
    let Some(t) = tools_or_skip() else { return };
    let w = World::new();
    let work = w.home.path().join("work");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir rootfs");
    let tar = work.join("rootfs.tar");
    busybox_rootfs_tar(&tar).expect("busybox rootfs tar");
    tar::Archive::new(File::open(&tar).expect("open tar"))
        .unpack(&rootfs)
        .expect("unpack rootfs");

    let layout = |arch: &str| work.join(format!("{arch}-oci"));
    for arch in ["arm64", "amd64"] {
        let out = layout(arch);
        let o = w.run(
            "vcontainer",
            [
                "image",
                "build",
                "--backend",
                "sloci",
                "--rootfs",
                p(&rootfs),
                "--output",
                p(&out),
                "--arch",
                arch,
                "--tag",
                "v1",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "image build {arch}: {}",
            stderr(&o)
        );
    }
    let multi = work.join("multi-oci");
    let (amd64, arm64) = (layout("amd64"), layout("arm64"));
    let inputs = [format!("{}:v1", p(&amd64)), format!("{}:v1", p(&arm64))];
    let o = w.run(
        "vcontainer",
        [
            "image",
            "index",
            "--output",
            p(&multi),
            "--tag",
            "v1",
            &inputs[0],
            &inputs[1],
        ],
    );
    assert_eq!(o.status.code(), Some(0), "image index: {}", stderr(&o));
    assert!(stdout(&o).contains("linux/arm64"), "{}", stdout(&o));

    let state = w.home.path().join(".vdkr/aarch64");
    // the wrong arch is refused before anything boots, in both directions
    let o = w.run("vdkr-aarch64", ["vimport", p(&amd64), "m:1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("Architecture mismatch") && err.contains("target is aarch64 (arm64)"),
        "{err}"
    );
    assert!(
        !state.join("console.log").exists(),
        "a VM was started for a refused image"
    );
    let o = w.run("vdkr-x86_64", ["vimport", p(&arm64), "m:1"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("Use --arch aarch64"), "{}", stderr(&o));

    // the probe as the aarch64 docker blob set; a scratch file as the rootfs (/dev/vda)
    let blobs = work.join("blobs");
    let set = blobs.join("aarch64/docker");
    std::fs::create_dir_all(&set).expect("mkdir blob set");
    std::os::unix::fs::symlink(&t.kernel, set.join("Image")).expect("link Image");
    std::os::unix::fs::symlink(&t.initrd, set.join("initramfs.cpio.gz")).expect("link initramfs");
    File::create(set.join("rootfs.img"))
        .and_then(|f| f.set_len(1 << 20))
        .expect("scratch rootfs");
    let _stop = MemresGuard::new(&w, "vdkr-aarch64");
    let started = Instant::now();
    let o = w.run(
        "vdkr-aarch64",
        ["--blob-dir", p(&blobs), "vimport", p(&multi), "m:1"],
    );
    eprintln!(
        "vdkr-aarch64 vimport (boot of the probe): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        !err.contains("Architecture"),
        "the index was refused: {err}"
    );
    assert!(err.contains("the VM exited during boot"), "{err}");
    let console = std::fs::read_to_string(state.join("console.log")).unwrap_or_default();
    let marker = console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with("VCPROBE arch="))
        .unwrap_or_else(|| panic!("no VCPROBE marker on the console:\n{console}\n{err}"));
    eprintln!("{marker}");
    assert!(marker.starts_with("VCPROBE arch=aarch64 "), "{marker}");
    // rootfs + state disk, the network and the hybrid vsock device, each with its driver
    assert_eq!(marker.matches("0x0002:virtio_blk").count(), 2, "{marker}");
    assert!(marker.contains("block=vda vdb"), "{marker}");
    for (id, driver) in [EXPECTED_VIRTIO[0], EXPECTED_VIRTIO[2]] {
        assert!(marker.contains(&format!("{id}:{driver}")), "{marker}");
    }
    assert_no_vm_processes(w.home.path());
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
