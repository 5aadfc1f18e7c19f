//! A running memres VM, found again through `<state>/vm.json`.
//!
//! vm.json is written by the supervisor once the agent answered Hello, atomically (a temp
//! file renamed into place). It records pids *with* their /proc start times: a VM is only considered running
//! when both the supervisor and QEMU still are the very processes recorded, so a stale file
//! left by a crash (or a recycled pid) is never trusted. Top-level `*_pid` / `*_start_time`
//! pairs keep it readable by simple probes (`memres_probe`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::accel::Accel;
use super::config::{Arch, PortForward};
use super::error::{Result, VmError};
use super::paths::VmPaths;
use super::process::ProcId;
use super::transport::{AgentStream, Endpoint, TransportKind};

pub const VM_JSON: &str = "vm.json";
pub const ACTIVITY: &str = "activity";
pub const PORT_FORWARDS_JSON: &str = "port-forwards.json";
/// Volumes of detached containers still to be synced back (see `runner::volumes::live`).
pub const LIVE_VOLUMES_JSON: &str = "live-volumes.json";
const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub version: u32,
    pub supervisor_pid: i32,
    pub supervisor_start_time: u64,
    pub qemu_pid: i32,
    pub qemu_start_time: u64,
    pub vhost_vsock_pid: Option<i32>,
    pub vhost_vsock_start_time: Option<u64>,
    /// Empty PCIe root ports for volume shares (see `vm::shares`); 0: volumes are copied.
    #[serde(default)]
    pub share_slots: u32,
    /// The engine API relayed to the host, when the VM was started with `--expose`.
    #[serde(default)]
    pub expose: Option<super::config::Expose>,
    /// Why the VM has no volume shares although they were asked for (virtiofsd missing, ...).
    #[serde(default)]
    pub host_share_note: Option<String>,
    /// With snapshots on (vm/snapshot.rs): restored from one, or a cold boot and why.
    #[serde(default)]
    pub snapshot_note: Option<String>,
    pub transport: TransportKind,
    pub endpoint: Endpoint,
    pub paths: VmPaths,
    pub arch: Arch,
    pub runtime: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub port_forwards: Vec<PortForward>,
    pub idle_timeout_secs: u64,
    /// Seconds since the epoch.
    pub started_at: u64,
    /// Spawn of the first process to the agent's Hello.
    pub boot_ms: u64,
    pub agent_version: String,
    pub kernel: String,
}

impl VmRecord {
    pub fn supervisor(&self) -> ProcId {
        ProcId {
            pid: self.supervisor_pid,
            start_time: self.supervisor_start_time,
        }
    }

    pub fn qemu(&self) -> ProcId {
        ProcId {
            pid: self.qemu_pid,
            start_time: self.qemu_start_time,
        }
    }

    pub fn vhost_vsock(&self) -> Option<ProcId> {
        Some(ProcId {
            pid: self.vhost_vsock_pid?,
            start_time: self.vhost_vsock_start_time?,
        })
    }

    pub fn read(state_dir: &Path) -> Option<VmRecord> {
        let bytes = std::fs::read(state_dir.join(VM_JSON)).ok()?;
        let r: VmRecord = serde_json::from_slice(&bytes).ok()?;
        (r.version == RECORD_VERSION).then_some(r)
    }

    pub fn write(&self, state_dir: &Path) -> Result<()> {
        write_atomic(
            &state_dir.join(VM_JSON),
            &serde_json::to_vec_pretty(self).map_err(|e| VmError::Other(e.to_string()))?,
        )
    }

    pub fn new_version() -> u32 {
        RECORD_VERSION
    }
}

/// Write via a temp file + rename so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            VmError::io(format!("writing {}", path.display()), e)
        })
}

/// Set the idle clock of a state dir to now.
pub fn touch_activity(state_dir: &Path) {
    let p = state_dir.join(ACTIVITY);
    let ok = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .and_then(|f| f.set_modified(SystemTime::now()));
    let _ = ok;
}

/// Time since the last activity (None when there is no activity file).
pub fn idle_for(state_dir: &Path) -> Option<Duration> {
    let m = std::fs::metadata(state_dir.join(ACTIVITY))
        .ok()?
        .modified()
        .ok()?;
    Some(SystemTime::now().duration_since(m).unwrap_or_default())
}

/// A running memres VM.
#[derive(Debug, Clone)]
pub struct Instance {
    pub state_dir: PathBuf,
    pub record: VmRecord,
}

impl Instance {
    /// The VM running for `state_dir`, if its supervisor and QEMU are alive and are the
    /// processes vm.json names.
    pub fn find(state_dir: &Path) -> Option<Instance> {
        let record = VmRecord::read(state_dir)?;
        (record.supervisor().is_alive() && record.qemu().is_alive()).then(|| Instance {
            state_dir: state_dir.to_path_buf(),
            record,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.record.supervisor().is_alive() && self.record.qemu().is_alive()
    }

    /// Open one connection to the agent (and reset the idle clock).
    pub fn connect(&self) -> Result<AgentStream> {
        self.connect_port(vcontainer_proto::AGENT_VSOCK_PORT)
    }

    pub fn connect_port(&self, port: u32) -> Result<AgentStream> {
        touch_activity(&self.state_dir);
        let secret = super::secret::read(&self.record.paths.agent_secret)
            .map_err(|e| self.explain_disconnect().unwrap_or(e))?;
        self.record
            .endpoint
            .connect(port, Duration::from_secs(10), &secret)
            .map_err(|e| self.explain_disconnect().unwrap_or(e))
    }

    /// When a connection broke: if the VM is gone, the error that says so and names the
    /// console log (the caller exits 125 with it); None while the VM is still up.
    pub fn explain_disconnect(&self) -> Option<VmError> {
        if self.record.qemu().is_alive() {
            return None;
        }
        Some(VmError::VmGone {
            detail: "QEMU exited while the command ran (killed, or the guest crashed)".into(),
            console_log: self.record.paths.console_log.clone(),
        })
    }

    pub fn transport(&self) -> TransportKind {
        self.record.transport
    }

    /// Whether volumes can be shared live into this VM (it booted with share slots).
    pub fn shares_volumes(&self) -> bool {
        self.record.share_slots > 0
    }
}

pub fn read_port_forwards(state_dir: &Path) -> Vec<PortForward> {
    std::fs::read(state_dir.join(PORT_FORWARDS_JSON))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn write_port_forwards(state_dir: &Path, all: &[PortForward]) -> Result<()> {
    write_atomic(
        &state_dir.join(PORT_FORWARDS_JSON),
        &serde_json::to_vec_pretty(all).map_err(|e| VmError::Other(e.to_string()))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sup: ProcId, qemu: ProcId, dir: &Path) -> VmRecord {
        VmRecord {
            version: RECORD_VERSION,
            supervisor_pid: sup.pid,
            supervisor_start_time: sup.start_time,
            qemu_pid: qemu.pid,
            qemu_start_time: qemu.start_time,
            vhost_vsock_pid: None,
            vhost_vsock_start_time: None,
            share_slots: 0,
            expose: None,
            host_share_note: None,
            snapshot_note: None,
            transport: TransportKind::Hybrid,
            endpoint: Endpoint::Hybrid {
                uds_path: dir.join("vsock.sock"),
            },
            paths: VmPaths::new(dir).expect("paths"),
            arch: Arch::X86_64,
            runtime: "podman".into(),
            accel: Accel::Tcg,
            accel_reason: "test".into(),
            memory_mib: 2048,
            cpus: 2,
            port_forwards: vec![],
            idle_timeout_secs: 1800,
            started_at: 0,
            boot_ms: 0,
            agent_version: "t".into(),
            kernel: "k".into(),
        }
    }

    #[test]
    fn stale_records_are_not_trusted() {
        let t = tempfile::tempdir().expect("tmp");
        let me = ProcId::of(std::process::id() as i32).expect("self");
        record(me, me, t.path()).write(t.path()).expect("write");
        let i = Instance::find(t.path()).expect("live: both pids are this process");
        assert!(i.explain_disconnect().is_none());

        // same pid, other start time = a recycled pid: not our VM
        let recycled = ProcId {
            pid: me.pid,
            start_time: me.start_time + 7,
        };
        record(me, recycled, t.path())
            .write(t.path())
            .expect("write");
        assert!(Instance::find(t.path()).is_none());

        // garbage and absent files
        std::fs::write(t.path().join(VM_JSON), b"{not json").expect("w");
        assert!(Instance::find(t.path()).is_none());
        std::fs::remove_file(t.path().join(VM_JSON)).expect("rm");
        assert!(Instance::find(t.path()).is_none());
    }

    #[test]
    fn volumes_are_shared_only_with_slots_and_old_records_still_read() {
        let t = tempfile::tempdir().expect("tmp");
        let me = ProcId::of(std::process::id() as i32).expect("self");
        let mut r = record(me, me, t.path());
        let i = |r: &VmRecord| Instance {
            state_dir: t.path().to_path_buf(),
            record: r.clone(),
        };
        assert!(!i(&r).shares_volumes(), "no slots");
        r.share_slots = 8;
        assert!(i(&r).shares_volumes());
        // a vm.json written before slots existed (a `/` share then) reads, without any
        r.write(t.path()).expect("write");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join(VM_JSON)).expect("read"))
                .expect("json");
        let obj = v.as_object_mut().expect("object");
        obj.remove("share_slots");
        obj.remove("host_share_note");
        obj.insert("host_share".into(), "/run/vcontainer/host".into());
        std::fs::write(t.path().join(VM_JSON), v.to_string()).expect("w");
        let old = VmRecord::read(t.path()).expect("old record still readable");
        assert_eq!(old.share_slots, 0);
    }

    #[test]
    fn vm_json_is_probe_friendly() {
        let t = tempfile::tempdir().expect("tmp");
        let me = ProcId::of(std::process::id() as i32).expect("self");
        record(me, me, t.path()).write(t.path()).expect("write");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join(VM_JSON)).expect("read"))
                .expect("json");
        assert_eq!(v["qemu_pid"], me.pid);
        assert_eq!(v["qemu_start_time"], me.start_time);
        assert_eq!(v["transport"], "hybrid");
    }

    #[test]
    fn dead_qemu_gives_the_distinct_error_naming_the_console_log() {
        let t = tempfile::tempdir().expect("tmp");
        let me = ProcId::of(std::process::id() as i32).expect("self");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = ProcId::of(child.id() as i32).unwrap_or(ProcId {
            pid: child.id() as i32,
            start_time: 1,
        });
        child.wait().expect("wait");
        let i = Instance {
            state_dir: t.path().to_path_buf(),
            record: record(me, dead, t.path()),
        };
        let e = i.explain_disconnect().expect("gone");
        assert!(e.to_string().contains("console.log"), "{e}");
        let e = i.connect().expect_err("no socket");
        assert!(matches!(e, VmError::VmGone { .. }), "{e}");
        assert!(idle_for(t.path()).expect("touched") < Duration::from_secs(5));
    }
}
