//! The aarch64 boot smoke test: the QEMU command line our own code renders for an arm64 guest
//! (`VmSpec` in core/vm/src/vm/qemu.rs: virt machine, `max` CPU with cheap pointer
//! authentication under TCG, ttyAMA0 console, virtio-pci disk and network, hybrid vsock over
//! vhost-user) boots Debian's real arm64 cloud kernel, and the guest sees every virtio device
//! with its driver bound. It needs no guest blobs (a busybox probe initramfs,
//! scripts/build-aarch64-probe.sh, `make aarch64-probe`), so a broken arm64 command line shows
//! here in seconds, apart from the agent; tests/tests/aarch64.rs runs the real guest.
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
use vcontainer_tests::workspace_root;

/// TCG arm64 on a loaded 2-core x86 host: the probe needs well under a minute; the margin is
/// for CI machines running other work.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Virtio device ids (sysfs `device`) and the drivers the probe must find bound to them.
const EXPECTED_VIRTIO: [(&str, &str); 3] = [
    ("0x0001", "virtio_net"),
    ("0x0002", "virtio_blk"),
    ("0x0013", "vmw_vsock_virtio_transport"),
];

/// What `scripts/build-aarch64-probe.sh` writes: `$PROBE_DIR` there, else
/// `$CACHE_DIR/aarch64-probe/out` (the script's and `make`'s cache dir), else the tree's.
fn probe_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VCONTAINER_AARCH64_PROBE_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("CACHE_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| workspace_root().join("build/cache"));
    cache.join("aarch64-probe/out")
}

struct Tools {
    qemu: PathBuf,
    vhost_device_vsock: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Everything the boot needs, or why it cannot run here.
fn tools() -> Result<Tools, String> {
    let program = Arch::Aarch64.qemu_program();
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
        share_slots: 0,
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
        snapshot: None,
        guest_ram: None,
    }
}

/// The tools, or None after printing why the test skips (a failure under VCONTAINER_E2E=1).
fn tools_or_skip() -> Option<Tools> {
    match tools() {
        Ok(t) => Some(t),
        Err(reason) => {
            vcontainer_tests::skip(reason);
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

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
