//! What the caller decides about a VM: arch, runtime, state dir, resources, forwards, timeouts.
//!
//! Serializable because the memres supervisor (a separate process) receives it as JSON.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::transport::TransportKind;

/// Guest architecture: one type for the whole project, with every per-arch fact.
pub use vcontainer_arch::Arch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// "tcp" / "udp", as QEMU's hostfwd and the forwards table write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A host port forwarded to a guest port through QEMU user networking
/// (`-p [ADDR:]H:G[/udp]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
    pub protocol: Protocol,
    /// The host address QEMU listens on: loopback unless the user named one (a forward must
    /// not open a port to the network by surprise). Absent in records of older tools, whose
    /// forwards listened on every address, hence that default.
    #[serde(default = "any_address")]
    pub host_addr: Ipv4Addr,
}

/// Where a forward listens when the user names no address.
pub const DEFAULT_FORWARD_ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn any_address() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

impl PortForward {
    /// A forward on the default (loopback) address.
    pub fn local(host: u16, guest: u16, protocol: Protocol) -> Self {
        Self {
            host,
            guest,
            protocol,
            host_addr: DEFAULT_FORWARD_ADDR,
        }
    }

    /// The address as `-p`, docker and podman write it: "" for "all addresses" stays "".
    pub fn parse_addr(addr: &str) -> Result<Ipv4Addr, String> {
        match addr {
            "" => Ok(DEFAULT_FORWARD_ADDR),
            a => a.parse().map_err(|_| {
                format!("bad host address {a:?} for a port forward: expected an IPv4 address such as 127.0.0.1 or 0.0.0.0")
            }),
        }
    }
}

impl FromStr for PortForward {
    type Err = String;
    /// `H:G`, `H:G/tcp`, `H:G/udp`, `H` (same port on both sides), each optionally after
    /// `ADDR:` (`0.0.0.0:8080:80` listens on every address; the default is 127.0.0.1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad port forward {s:?}: expected [ADDR:]HOST:GUEST[/tcp|/udp]");
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (s, Protocol::Tcp),
        };
        let (addr, ports) = match ports.matches(':').count() {
            2 => ports.split_once(':').ok_or_else(bad)?,
            0 | 1 => ("", ports),
            _ => return Err(bad()),
        };
        let host_addr = Self::parse_addr(addr)?;
        let (h, g) = ports.split_once(':').unwrap_or((ports, ports));
        let host: u16 = h.parse().map_err(|_| bad())?;
        let guest: u16 = g.parse().map_err(|_| bad())?;
        if host == 0 || guest == 0 {
            return Err(bad());
        }
        Ok(PortForward {
            host,
            guest,
            protocol,
            host_addr,
        })
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = self.protocol.as_str();
        if self.host_addr != DEFAULT_FORWARD_ADDR {
            write!(f, "{}:", self.host_addr)?;
        }
        write!(f, "{}:{}/{}", self.host, self.guest, proto)
    }
}

/// What to expose: part of a memres VM's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expose {
    /// The engine's socket in the guest.
    pub guest_socket: String,
    /// The relayed socket on the host (in the state dir).
    pub host_socket: PathBuf,
    /// Watch the engine's events and forward the published ports of containers started
    /// through the socket (`vm::engine_events`; the plugin's `docker_api_events`).
    #[serde(default)]
    pub watch_events: bool,
}

/// The environment variable that turns snapshots off (`0`); they are on by default.
pub const SNAPSHOT_ENV: &str = "VCONTAINER_SNAPSHOT";

/// Whether VMs start from snapshots by default (`VmConfig::snapshot`): yes, unless
/// `VCONTAINER_SNAPSHOT=0`.
pub fn snapshots_enabled() -> bool {
    snapshots_enabled_by(std::env::var_os(SNAPSHOT_ENV).as_deref())
}

/// [`snapshots_enabled`] for a value of [`SNAPSHOT_ENV`].
pub fn snapshots_enabled_by(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_none_or(|v| v != "0")
}

/// Everything needed to boot one VM for one state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    pub arch: Arch,
    /// Runtime plugin name (`docker`, `podman`): picks the blob set and the state disk name.
    pub runtime: String,
    /// Host state dir (`~/.vpdmn/x86_64`); created by the caller, holds the marker file.
    pub state_dir: PathBuf,
    /// `--blob-dir`, when given; otherwise the resolution order of `blobs::resolve` applies.
    pub blob_dir: Option<PathBuf>,
    /// The tool's own blob-dir variable (`<ENV_PREFIX>_BLOB_DIR` of the runtime plugin).
    #[serde(default)]
    pub blob_env: Option<String>,
    /// Guest path the state disk is mounted on (declared by the runtime plugin).
    pub storage_path: String,
    /// False for `--stateless`: no state disk, storage lives in guest RAM.
    pub state_disk: bool,
    pub state_disk_size_mib: u64,
    pub memory_mib: u32,
    pub cpus: u32,
    pub no_kvm: bool,
    pub port_forwards: Vec<PortForward>,
    /// Memres only: stop the VM after this long without a command; 0 = never.
    pub idle_timeout_secs: u64,
    /// How long to wait for the agent's hello after QEMU starts.
    pub boot_timeout_secs: u64,
    /// How long a clean guest shutdown may take before QMP quit, then SIGKILL.
    pub shutdown_timeout_secs: u64,
    /// Forced transport; None = `VCONTAINER_TRANSPORT` or automatic.
    pub transport: Option<TransportKind>,
    /// `vcontainer.debug=1` on the kernel command line and no `quiet`.
    pub debug: bool,
    /// Boot with slots for volume shares hot-plugged later (memres only: live `-v` volumes,
    /// see `vm::shares`). A VM boots without them, with a note, when virtiofsd is missing or
    /// cannot sandbox itself.
    #[serde(default)]
    pub host_share: bool,
    /// Relay the engine's API socket to the host (memres only, `vm::engine_api`).
    #[serde(default)]
    pub expose: Option<Expose>,
    /// Start from a saved guest when one fits (`vm::snapshot`, docs/snapshot.md); the
    /// default is [`snapshots_enabled`] (`VCONTAINER_SNAPSHOT=0` turns it off).
    #[serde(default)]
    pub snapshot: bool,
    /// How to start the memres supervisor; None = this executable + `__vm-supervisor`.
    #[serde(skip)]
    pub supervisor_command: Option<Vec<std::ffi::OsString>>,
}

/// Default guest memory: enough for dockerd + a build.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
pub const DEFAULT_CPUS: u32 = 2;
/// Sparse, so only what the guest writes takes space on the host.
pub const DEFAULT_STATE_DISK_MIB: u64 = 8192;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 1800;
/// TCG boots reach the agent in a few seconds; the margin is for loaded CI machines.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 120;
/// The ext4 journal commit under load took up to 30 s in the old tool; be generous.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 60;

impl VmConfig {
    /// A config with the defaults; the storage path is a neutral one until the runtime's
    /// plugin names its own (`runner::vmconfig` sets it from the spec).
    pub fn new(arch: Arch, runtime: &str, state_dir: impl Into<PathBuf>) -> Self {
        let storage_path = "/var/lib/vcontainer".to_string();
        VmConfig {
            arch,
            runtime: runtime.to_string(),
            state_dir: state_dir.into(),
            blob_dir: None,
            blob_env: None,
            storage_path,
            state_disk: true,
            state_disk_size_mib: DEFAULT_STATE_DISK_MIB,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            no_kvm: false,
            port_forwards: Vec::new(),
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            boot_timeout_secs: DEFAULT_BOOT_TIMEOUT_SECS,
            shutdown_timeout_secs: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            transport: None,
            debug: false,
            host_share: false,
            expose: None,
            snapshot: snapshots_enabled(),
            supervisor_command: None,
        }
    }

    /// `docker-state.img` / `podman-state.img` (names kept from the old tool).
    pub fn state_disk_path(&self) -> PathBuf {
        self.state_dir.join(format!("{}-state.img", self.runtime))
    }

    pub fn console_log(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }

    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_forms() {
        let p: PortForward = "8080:80".parse().expect("valid");
        assert_eq!((p.host, p.guest, p.protocol), (8080, 80, Protocol::Tcp));
        let p: PortForward = "5353:53/udp".parse().expect("valid");
        assert_eq!((p.host, p.guest, p.protocol), (5353, 53, Protocol::Udp));
        assert_eq!(p.host_addr, Ipv4Addr::LOCALHOST, "loopback unless named");
        let p: PortForward = "0.0.0.0:8080:80".parse().expect("valid");
        assert_eq!((p.host, p.guest), (8080, 80));
        assert_eq!(p.host_addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.to_string(), "0.0.0.0:8080:80/tcp");
        let p: PortForward = "192.168.1.2:53:53/udp".parse().expect("valid");
        assert_eq!(p.host_addr, Ipv4Addr::new(192, 168, 1, 2));
        for bad in ["localhost:80:80", "1.2.3:80:80", "::1:80:80"] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad} accepted");
        }
        // a record from an older tool (no address) listened everywhere and says so
        let old: PortForward =
            serde_json::from_str(r#"{"host":1,"guest":2,"protocol":"tcp"}"#).expect("old record");
        assert_eq!(old.host_addr, Ipv4Addr::UNSPECIFIED);
        let p: PortForward = "9000".parse().expect("valid");
        assert_eq!((p.host, p.guest), (9000, 9000));
        for bad in ["", "a:b", "80:80/sctp", "0:80", "70000:80", "80:"] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad} accepted");
        }
        assert_eq!(p.to_string(), "9000:9000/tcp");
    }

    #[test]
    fn config_roundtrips_as_json() {
        let mut c = VmConfig::new(Arch::X86_64, "podman", "/tmp/s");
        c.port_forwards.push("1:2/udp".parse().expect("valid"));
        c.storage_path = "/var/lib/containers".into();
        let j = serde_json::to_string(&c).expect("serializes");
        let back: VmConfig = serde_json::from_str(&j).expect("parses");
        assert_eq!(back.port_forwards, c.port_forwards);
        assert_eq!(
            back.state_disk_path(),
            PathBuf::from("/tmp/s/podman-state.img")
        );
        assert_eq!(back.storage_path, "/var/lib/containers");
    }
}
