//! The QEMU command line: one declarative `VmSpec`, rendered once into an argv.
//!
//! The old runner appended to an option string in several places and lost settings on the way
//! (its `-nic none` ordering bug); here the spec is built whole and never mutated, and the argv
//! is a vector handed to `execve` (no shell, so paths with spaces are safe). Paths are escaped
//! for QEMU's own option syntax, where a comma must be doubled.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::accel::Accel;
use super::config::{Arch, PortForward, Protocol};

/// What a virtio disk is for; its position in `VmSpec::disks` gives /dev/vda, /dev/vdb, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskRole {
    /// The runtime's squashfs, read-only (/dev/vda).
    Rootfs,
    /// The persistent ext4 state disk (/dev/vdb).
    State,
}

impl DiskRole {
    fn id(self) -> &'static str {
        match self {
            DiskRole::Rootfs => "rootfs",
            DiskRole::State => "state",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub role: DiskRole,
    pub path: PathBuf,
    pub read_only: bool,
}

/// The vsock device and how the host reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// `vhost-user-vsock-pci` served by vhost-device-vsock on this vhost-user socket; needs
    /// guest RAM in a shared memfd.
    Hybrid { vhost_user_socket: PathBuf },
    /// In-kernel `vhost-vsock-pci`. `vhostfd` is an already opened /dev/vhost-vsock whose CID
    /// was claimed by us (so two VMs can never race for one CID).
    Kernel { cid: u32, vhostfd: Option<i32> },
}

/// The id of root port `slot` (also the bus a share's device is plugged into).
pub fn slot_bus(slot: u32) -> String {
    format!("vcshare{slot}")
}

/// How the command line of a VM saved as a snapshot, or restored from one, differs from a cold
/// boot's (docs/snapshot.md). Both render the same machine except for what QEMU cannot save
/// or belongs to one run (the vsock device, vhost-user or in-kernel with this run's CID; the
/// state disk): those hang on hot-pluggable root ports, plugged after the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotLayout {
    /// Booted to be saved: the vsock device on its root port (unplugged before the save), no
    /// state disk, `vcontainer.snapshot=1` for the agent.
    Save,
    /// Restored: `-incoming defer`, no vsock device yet.
    Restore,
}

/// QOM ids of the snapshot layout's root ports and hot-plugged devices. The chassis numbers
/// stay clear of other root ports' (which count up from 1).
pub const SNAPSHOT_VSOCK_PORT: &str = "vc-snap-rp-vsock";
pub const SNAPSHOT_STATE_PORT: &str = "vc-snap-rp-state";
pub const SNAPSHOT_VSOCK_ID: &str = "vc-snap-vsock";
pub const SNAPSHOT_VSOCK_CHARDEV: &str = "vsock";
pub const SNAPSHOT_STATE_ID: &str = "vc-snap-state";
const SNAPSHOT_CHASSIS: [u8; 2] = [0xf0, 0xf1];

/// The kernel command line keys of the boot contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArgs {
    pub runtime: String,
    /// Guest device of the state disk, None = `vcontainer.state=none`.
    pub state_device: Option<String>,
    pub storage_path: String,
    pub agent_port: u32,
    pub debug: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub arch: Arch,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// In guest order: /dev/vda first.
    pub disks: Vec<Disk>,
    pub port_forwards: Vec<PortForward>,
    pub console_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub vsock: VsockDevice,
    /// Empty PCIe root ports for volume shares hot-plugged later (`vm::shares`); 0 = none.
    pub share_slots: u32,
    /// The 0600 file holding the agent secret, handed to the guest as fw_cfg (QEMU reads it
    /// itself: the secret is on no command line). See docs/security.md.
    pub agent_secret: PathBuf,
    pub kernel_args: KernelArgs,
    /// Set when the VM is saved as a snapshot or restored from one.
    pub snapshot: Option<SnapshotLayout>,
    /// The guest RAM as this named file on a tmpfs (vm/ramfile.rs) instead of a memfd.
    pub guest_ram: Option<PathBuf>,
}

impl VmSpec {
    /// The QEMU binary for the guest arch.
    pub fn program(&self) -> &'static str {
        self.arch.qemu_program()
    }

    /// The console device the kernel writes to.
    pub fn console_device(&self) -> &'static str {
        self.arch.console_device()
    }

    /// The kernel command line (docs/guest-contract.md "Guest boot contract").
    pub fn kernel_cmdline(&self) -> String {
        let k = &self.kernel_args;
        let mut parts = vec![format!("console={}", self.console_device())];
        if !k.debug {
            parts.push("quiet".into());
        }
        parts.push("panic=-1".into());
        parts.push(format!("vcontainer.runtime={}", k.runtime));
        parts.push(format!(
            "vcontainer.state={}",
            k.state_device.as_deref().unwrap_or("none")
        ));
        parts.push(format!("vcontainer.storage={}", k.storage_path));
        parts.push(format!("vcontainer.port={}", k.agent_port));
        if k.debug {
            parts.push("vcontainer.debug=1".into());
        }
        if self.snapshot.is_some() {
            parts.push("vcontainer.snapshot=1".into());
            // freed pages zeroed: a save skips zero pages, so memory the guest used and
            // freed (a finished command, a dropped page cache) is not written and loaded
            // again (docs/snapshot.md, "Suspended VMs")
            parts.push("init_on_free=1".into());
        }
        parts.join(" ")
    }

    /// The argv after the program name, section by section in a fixed order (a restore
    /// needs the devices where the saved guest left them).
    pub fn render(&self) -> Vec<OsString> {
        let mut a = Argv::default();
        self.render_machine(&mut a);
        self.render_kernel(&mut a);
        self.render_host_channels(&mut a);
        self.render_disks(&mut a);
        self.render_network(&mut a);
        self.render_snapshot_ports(&mut a);
        self.render_vsock(&mut a);
        // empty slots for volume shares: a running q35 or arm virt machine takes a new PCIe
        // device only on a root port that existed at boot (see vm::shares)
        for slot in 0..self.share_slots {
            a.opt("-device", share_slot_device(slot));
        }
        if self.snapshot == Some(SnapshotLayout::Restore) {
            a.opt("-incoming", "defer");
        }
        a.0
    }

    /// Machine, accelerator, CPU, memory and the flags that keep QEMU's defaults out.
    fn render_machine(&self, a: &mut Argv) {
        // vhost-user backends (vhost-device-vsock, the virtiofsd of each hot-plugged share)
        // map the guest RAM: it must be a shared memfd, decided at boot
        let hybrid = matches!(self.vsock, VsockDevice::Hybrid { .. });
        let shared_ram = hybrid || self.share_slots > 0 || self.guest_ram.is_some();
        let mut m = self.arch.qemu_machine().to_string();
        if shared_ram {
            m.push_str(",memory-backend=mem");
        }
        a.opt("-machine", m);
        a.opt("-accel", self.accel.to_string());
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => self.arch.qemu_tcg_cpu(),
        };
        a.opt("-cpu", cpu);
        a.opt("-m", format!("{}M", self.memory_mib));
        a.opt("-smp", self.cpus.to_string());
        match &self.guest_ram {
            // a named file, so that QEMU's x-ignore-shared leaves it out of a save
            // (docs/snapshot.md, "The guest RAM in a file")
            Some(file) => a.opt_os(
                "-object",
                cat(&[
                    format!(
                        "memory-backend-file,id=mem,size={}M,share=on,mem-path=",
                        self.memory_mib
                    )
                    .as_ref(),
                    &escape(file),
                ]),
            ),
            None if shared_ram => a.opt(
                "-object",
                format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mib
                ),
            ),
            None => {}
        }
        for flag in ["-nodefaults", "-no-user-config", "-no-reboot"] {
            a.flag(flag);
        }
        a.opt("-display", "none");
    }

    fn render_kernel(&self, a: &mut Argv) {
        a.opt_os("-kernel", self.kernel.as_os_str().to_owned());
        a.opt_os("-initrd", self.initrd.as_os_str().to_owned());
        a.opt("-append", self.kernel_cmdline());
    }

    /// The console to a file, QMP on a socket, and the agent secret by file (q35 and arm
    /// virt both have fw_cfg).
    fn render_host_channels(&self, a: &mut Argv) {
        a.opt_os(
            "-chardev",
            cat(&["file,id=console,path=".as_ref(), &escape(&self.console_log)]),
        );
        a.opt("-serial", "chardev:console");
        a.opt_os(
            "-chardev",
            cat(&[
                "socket,id=qmp,server=on,wait=off,path=".as_ref(),
                &escape(&self.qmp_socket),
            ]),
        );
        a.opt("-mon", "chardev=qmp,mode=control");
        a.opt_os(
            "-fw_cfg",
            cat(&[
                format!("name={},file=", vcontainer_proto::auth::FW_CFG_NAME).as_ref(),
                &escape(&self.agent_secret),
            ]),
        );
    }

    /// The disks, in guest order.
    fn render_disks(&self, a: &mut Argv) {
        for d in &self.disks {
            let id = d.role.id();
            let mut spec = cat(&[
                "file=".as_ref(),
                &escape(&d.path),
                format!(",if=none,id={id},format=raw").as_ref(),
            ]);
            if d.read_only {
                spec.push(",readonly=on");
            } else {
                // writeback: what the guest flushed is in the host page cache, which survives
                // QEMU being killed; discard keeps the sparse file small.
                spec.push(",cache=writeback,discard=unmap,detect-zeroes=unmap");
            }
            a.opt_os("-drive", spec);
            a.opt("-device", format!("virtio-blk-pci,drive={id},serial={id}"));
        }
    }

    /// User networking, id net0 (QMP hostfwd_add relies on that name), with the forwards.
    fn render_network(&self, a: &mut Argv) {
        let mut net = "user,id=net0".to_string();
        for f in &self.port_forwards {
            let proto = match f.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            net.push_str(&format!(
                ",hostfwd={proto}:{}:{}-:{}",
                f.host_addr, f.host, f.guest
            ));
        }
        a.opt("-netdev", net);
        // romfile= : no PXE option ROM to load, we boot with -kernel
        a.opt("-device", "virtio-net-pci,netdev=net0,romfile=");
    }

    /// The root ports a snapshot's vsock device and state disk are plugged into.
    fn render_snapshot_ports(&self, a: &mut Argv) {
        if self.snapshot.is_none() {
            return;
        }
        for (id, chassis) in [SNAPSHOT_VSOCK_PORT, SNAPSHOT_STATE_PORT]
            .iter()
            .zip(SNAPSHOT_CHASSIS)
        {
            a.opt(
                "-device",
                format!("pcie-root-port,id={id},chassis={chassis},slot=0"),
            );
        }
    }

    fn render_vsock(&self, a: &mut Argv) {
        match &self.vsock {
            // restored: hot-plugged once the saved state is loaded
            _ if self.snapshot == Some(SnapshotLayout::Restore) => {}
            VsockDevice::Hybrid { vhost_user_socket } if self.snapshot.is_some() => {
                a.opt_os(
                    "-chardev",
                    cat(&[
                        format!("socket,id={SNAPSHOT_VSOCK_CHARDEV},path=").as_ref(),
                        &escape(vhost_user_socket),
                    ]),
                );
                a.opt(
                    "-device",
                    format!(
                        "vhost-user-vsock-pci,chardev={SNAPSHOT_VSOCK_CHARDEV},id={SNAPSHOT_VSOCK_ID},bus={SNAPSHOT_VSOCK_PORT}"
                    ),
                );
            }
            VsockDevice::Hybrid { vhost_user_socket } => {
                a.opt_os(
                    "-chardev",
                    cat(&["socket,id=vsock,path=".as_ref(), &escape(vhost_user_socket)]),
                );
                a.opt("-device", "vhost-user-vsock-pci,chardev=vsock");
            }
            VsockDevice::Kernel { cid, vhostfd } => {
                let mut d = format!("vhost-vsock-pci,guest-cid={cid}");
                if let Some(fd) = vhostfd {
                    d.push_str(&format!(",vhostfd={fd}"));
                }
                // booted to be saved: on its root port, unplugged before the save
                if self.snapshot.is_some() {
                    d.push_str(&format!(
                        ",id={SNAPSHOT_VSOCK_ID},bus={SNAPSHOT_VSOCK_PORT}"
                    ));
                }
                a.opt("-device", d);
            }
        }
    }
}

/// The `-device` value of share slot `slot`: a PCIe root port with its own chassis number
/// (QEMU requires chassis/slot pairs to be unique).
fn share_slot_device(slot: u32) -> String {
    format!("pcie-root-port,id={},chassis={}", slot_bus(slot), slot + 1)
}

#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, f: &str) {
        self.0.push(f.into());
    }
    fn opt(&mut self, o: &str, v: impl Into<String>) {
        self.0.push(o.into());
        self.0.push(v.into().into());
    }
    fn opt_os(&mut self, o: &str, v: OsString) {
        self.0.push(o.into());
        self.0.push(v);
    }
}

/// A path as a QEMU option value: commas doubled (QEMU's escape), bytes otherwise kept.
fn escape(p: &std::path::Path) -> OsString {
    let mut out = Vec::with_capacity(p.as_os_str().len());
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn cat(parts: &[&OsStr]) -> OsString {
    let mut s = OsString::new();
    for p in parts {
        s.push(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch, vsock: VsockDevice) -> VmSpec {
        VmSpec {
            arch,
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            kernel: "/b/bzImage".into(),
            initrd: "/b/initramfs.cpio.gz".into(),
            disks: vec![
                Disk {
                    role: DiskRole::Rootfs,
                    path: "/b/rootfs.img".into(),
                    read_only: true,
                },
                Disk {
                    role: DiskRole::State,
                    path: "/s/my,dir/podman-state.img".into(),
                    read_only: false,
                },
            ],
            port_forwards: vec!["8080:80".parse().expect("valid")],
            console_log: "/s/console.log".into(),
            qmp_socket: "/s/qmp.sock".into(),
            vsock,
            share_slots: 0,
            agent_secret: "/s/my,dir/agent.secret".into(),
            kernel_args: KernelArgs {
                runtime: "podman".into(),
                state_device: Some("/dev/vdb".into()),
                storage_path: "/var/lib/containers".into(),
                agent_port: 1024,
                debug: false,
            },
            snapshot: None,
            guest_ram: None,
        }
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    /// Value following the n-th occurrence of an option.
    fn values(argv: &[String], opt: &str) -> Vec<String> {
        argv.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].clone())
            .collect()
    }

    fn hybrid() -> VsockDevice {
        VsockDevice::Hybrid {
            vhost_user_socket: "/s/vhost-vsock.sock".into(),
        }
    }

    #[test]
    fn guest_ram_in_a_file_replaces_the_memfd() {
        let mut s = spec(
            Arch::X86_64,
            VsockDevice::Kernel {
                cid: 5,
                vhostfd: None,
            },
        );
        s.guest_ram = Some("/dev/shm/v,c/guest.ram".into());
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["q35,memory-backend=mem"]);
        assert_eq!(
            values(&argv, "-object"),
            ["memory-backend-file,id=mem,size=2048M,share=on,mem-path=/dev/shm/v,,c/guest.ram"]
        );
    }

    #[test]
    fn x86_64_hybrid() {
        let s = spec(Arch::X86_64, hybrid());
        assert_eq!(s.program(), "qemu-system-x86_64");
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["q35,memory-backend=mem"]);
        assert_eq!(values(&argv, "-cpu"), ["max"]);
        assert_eq!(values(&argv, "-accel"), ["tcg"]);
        assert_eq!(values(&argv, "-m"), ["2048M"]);
        assert_eq!(values(&argv, "-smp"), ["2"]);
        assert_eq!(
            values(&argv, "-object"),
            ["memory-backend-memfd,id=mem,size=2048M,share=on"]
        );
        for f in ["-nodefaults", "-no-user-config", "-no-reboot"] {
            assert!(argv.contains(&f.to_string()), "{f} missing");
        }
        assert_eq!(values(&argv, "-display"), ["none"]);
        assert_eq!(values(&argv, "-kernel"), ["/b/bzImage"]);
        let append = &values(&argv, "-append")[0];
        assert_eq!(
            append,
            "console=ttyS0 quiet panic=-1 vcontainer.runtime=podman vcontainer.state=/dev/vdb \
             vcontainer.storage=/var/lib/containers vcontainer.port=1024"
        );
        let drives = values(&argv, "-drive");
        assert_eq!(drives.len(), 2);
        assert!(drives[0].starts_with("file=/b/rootfs.img,if=none,id=rootfs,format=raw"));
        assert!(drives[0].contains("readonly=on"));
        // the comma in the state dir path is doubled for QEMU's parser
        assert!(drives[1].starts_with("file=/s/my,,dir/podman-state.img,"));
        assert!(!drives[1].contains("readonly"));
        let devices = values(&argv, "-device");
        assert_eq!(devices[0], "virtio-blk-pci,drive=rootfs,serial=rootfs");
        assert_eq!(devices[1], "virtio-blk-pci,drive=state,serial=state");
        assert_eq!(
            values(&argv, "-netdev"),
            ["user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"]
        );
        assert!(devices.contains(&"vhost-user-vsock-pci,chardev=vsock".to_string()));
        let chardevs = values(&argv, "-chardev");
        assert!(chardevs.contains(&"file,id=console,path=/s/console.log".to_string()));
        assert!(chardevs.contains(&"socket,id=qmp,server=on,wait=off,path=/s/qmp.sock".to_string()));
        assert!(chardevs.contains(&"socket,id=vsock,path=/s/vhost-vsock.sock".to_string()));
        assert_eq!(values(&argv, "-serial"), ["chardev:console"]);
        assert_eq!(values(&argv, "-mon"), ["chardev=qmp,mode=control"]);
    }

    #[test]
    fn the_agent_secret_goes_by_file_on_both_arches_never_inline() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let s = spec(arch, hybrid());
            let argv = strings(&s.render());
            assert_eq!(
                values(&argv, "-fw_cfg"),
                ["name=opt/vcontainer/secret,file=/s/my,,dir/agent.secret"]
            );
            // only the path: no `string=` item, nothing about it on the kernel command line
            assert!(!argv.iter().any(|a| a.contains("string=")), "{argv:?}");
            assert!(!s.kernel_cmdline().contains("secret"));
        }
    }

    #[test]
    fn aarch64_kernel_vsock_kvm() {
        let mut s = spec(
            Arch::Aarch64,
            VsockDevice::Kernel {
                cid: 1234,
                vhostfd: Some(5),
            },
        );
        s.accel = Accel::Kvm;
        s.kernel = "/b/Image".into();
        s.kernel_args.state_device = None;
        s.kernel_args.debug = true;
        s.port_forwards = vec!["0.0.0.0:53:5353/udp".parse().expect("valid")];
        s.memory_mib = 1024;
        s.cpus = 4;
        assert_eq!(s.program(), "qemu-system-aarch64");
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["virt"]);
        assert_eq!(values(&argv, "-cpu"), ["host"]);
        assert_eq!(values(&argv, "-accel"), ["kvm"]);
        assert_eq!(values(&argv, "-m"), ["1024M"]);
        assert_eq!(values(&argv, "-smp"), ["4"]);
        assert!(
            values(&argv, "-object").is_empty(),
            "no memfd without vhost-user"
        );
        assert_eq!(values(&argv, "-kernel"), ["/b/Image"]);
        let append = &values(&argv, "-append")[0];
        assert!(append.starts_with("console=ttyAMA0 panic=-1 "), "{append}");
        assert!(append.contains("vcontainer.state=none"));
        assert!(append.ends_with("vcontainer.debug=1"));
        assert!(values(&argv, "-device")
            .contains(&"vhost-vsock-pci,guest-cid=1234,vhostfd=5".to_string()));
        assert_eq!(
            values(&argv, "-netdev"),
            ["user,id=net0,hostfwd=udp:0.0.0.0:53-:5353"],
            "an address the user named is kept"
        );
    }

    #[test]
    fn aarch64_tcg_hybrid_and_x86_kernel_vsock() {
        let s = spec(Arch::Aarch64, hybrid());
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["virt,memory-backend=mem"]);
        assert_eq!(values(&argv, "-cpu"), ["max,pauth-impdef=on"]);
        assert!(values(&argv, "-append")[0].starts_with("console=ttyAMA0 quiet"));
        let s = spec(
            Arch::X86_64,
            VsockDevice::Kernel {
                cid: 7,
                vhostfd: None,
            },
        );
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["q35"]);
        assert!(values(&argv, "-device").contains(&"vhost-vsock-pci,guest-cid=7".to_string()));
        assert!(!argv.iter().any(|a| a.contains("vhost-user")));
    }

    #[test]
    fn share_slots_on_x86_64_and_aarch64() {
        for (arch, machine) in [(Arch::X86_64, "q35"), (Arch::Aarch64, "virt")] {
            let mut s = spec(arch, hybrid());
            s.share_slots = 2;
            let argv = strings(&s.render());
            assert_eq!(
                values(&argv, "-machine"),
                [format!("{machine},memory-backend=mem")]
            );
            assert_eq!(
                values(&argv, "-object"),
                ["memory-backend-memfd,id=mem,size=2048M,share=on"],
                "one shared memfd serves every vhost-user device"
            );
            let devices = values(&argv, "-device");
            assert!(devices.contains(&"pcie-root-port,id=vcshare0,chassis=1".to_string()));
            assert!(devices.contains(&"pcie-root-port,id=vcshare1,chassis=2".to_string()));
            assert!(devices.contains(&"vhost-user-vsock-pci,chardev=vsock".to_string()));
            // nothing of the host is shared at boot
            assert!(!argv.iter().any(|a| a.contains("vhost-user-fs")));
            assert!(!values(&argv, "-append")[0].contains("hostfs"));
        }
        // in-kernel vsock has no memfd of its own: the slots alone need one
        let mut s = spec(
            Arch::Aarch64,
            VsockDevice::Kernel {
                cid: 9,
                vhostfd: None,
            },
        );
        s.share_slots = 1;
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-machine"), ["virt,memory-backend=mem"]);
        assert_eq!(values(&argv, "-cpu"), ["max,pauth-impdef=on"]);
        assert_eq!(values(&argv, "-object").len(), 1);
        // and without slots nothing of it appears
        let argv = strings(&spec(Arch::X86_64, hybrid()).render());
        assert!(!argv.iter().any(|a| a.contains("pcie-root-port")));
    }

    #[test]
    fn snapshot_layouts_differ_only_in_what_is_plugged_later() {
        let mut save = spec(Arch::X86_64, hybrid());
        save.disks.truncate(1);
        save.kernel_args.state_device = None;
        save.snapshot = Some(SnapshotLayout::Save);
        let mut restore = save.clone();
        restore.snapshot = Some(SnapshotLayout::Restore);
        let (s, r) = (strings(&save.render()), strings(&restore.render()));
        for argv in [&s, &r] {
            assert!(values(argv, "-append")[0].ends_with(" vcontainer.snapshot=1 init_on_free=1"));
            let ports: Vec<_> = values(argv, "-device")
                .into_iter()
                .filter(|d| d.starts_with("pcie-root-port"))
                .collect();
            assert_eq!(
                ports,
                [
                    "pcie-root-port,id=vc-snap-rp-vsock,chassis=240,slot=0",
                    "pcie-root-port,id=vc-snap-rp-state,chassis=241,slot=0"
                ]
            );
        }
        assert!(values(&s, "-device").contains(
            &"vhost-user-vsock-pci,chardev=vsock,id=vc-snap-vsock,bus=vc-snap-rp-vsock".to_string()
        ));
        assert!(values(&s, "-incoming").is_empty());
        // restored: no vsock yet, loads the saved state
        assert!(!r.iter().any(|a| a.contains("vhost-user-vsock")), "{r:?}");
        assert_eq!(values(&r, "-incoming"), ["defer"]);
        // everything else, in the same order: the saved devices are where the guest left them
        let strip = |argv: &[String]| -> Vec<String> {
            argv.iter()
                .filter(|a| !a.contains("vsock") && *a != "-incoming" && *a != "defer")
                .cloned()
                .collect()
        };
        let (mut s2, mut r2) = (strip(&s), strip(&r));
        // the options whose values were dropped above
        s2.retain(|a| a != "-chardev" && a != "-device");
        r2.retain(|a| a != "-chardev" && a != "-device");
        assert_eq!(s2, r2);
        // a cold boot has none of it
        let cold = strings(&spec(Arch::X86_64, hybrid()).render());
        assert!(!cold
            .iter()
            .any(|a| a.contains("snapshot") || a.contains("vc-snap")));
    }

    #[test]
    fn a_kernel_vsock_guest_to_be_saved_has_its_device_on_the_snapshot_port() {
        let kernel = VsockDevice::Kernel {
            cid: 77,
            vhostfd: Some(9),
        };
        let mut save = spec(Arch::X86_64, kernel);
        save.snapshot = Some(SnapshotLayout::Save);
        let argv = strings(&save.render());
        let vsock: Vec<_> = values(&argv, "-device")
            .into_iter()
            .filter(|d| d.starts_with("vhost"))
            .collect();
        assert_eq!(
            vsock,
            ["vhost-vsock-pci,guest-cid=77,vhostfd=9,id=vc-snap-vsock,bus=vc-snap-rp-vsock"]
        );
        // restored: plugged after the load, with the restoring run's own CID
        save.snapshot = Some(SnapshotLayout::Restore);
        let argv = strings(&save.render());
        assert!(!argv.iter().any(|a| a.starts_with("vhost")), "{argv:?}");
    }

    #[test]
    fn spaces_in_paths_stay_one_argument() {
        let mut s = spec(Arch::X86_64, hybrid());
        s.kernel = "/my blobs/bzImage".into();
        let argv = strings(&s.render());
        assert_eq!(values(&argv, "-kernel"), ["/my blobs/bzImage"]);
    }
}
