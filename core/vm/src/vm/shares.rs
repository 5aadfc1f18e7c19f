//! Volume shares of a memres VM: one virtiofsd per volume directory, hot-plugged into the
//! running VM when a command first names that directory, and the owner of `shares.json`.
//!
//! Why per volume: a share of the host's `/` (what memres VMs had before) let root in the
//! guest, i.e. any `--privileged` container, read and write every file of the CLI's user.
//! Now the guest holds exactly the directories some `-v` named, `:ro` ones served read-only
//! by virtiofsd itself (see docs/security.md).
//!
//! How: the VM boots with [`SLOTS`] empty PCIe root ports (`vm::qemu`; a running q35 or arm
//! `virt` machine takes a new PCIe device only on a port that existed at boot) and a shared
//! memory backend (vhost-user needs one). A share is then: virtiofsd started for the dir
//! (sandboxed, as the CLI's user), QMP `chardev-add` + `device_add vhost-user-fs-pci` on the
//! next free port, and the agent's `MountShare`, which mounts it on `SHARES_DIR/<tag>` in the
//! guest, from where the runtime binds it into containers. A share lives as long as the VM
//! (its virtiofsd ends when QEMU goes, and the supervisor stops it too): the next command
//! naming the same dir, with the same `:ro`-ness, reuses it. A slot is never reused in one VM
//! life; when all are used, volumes are copied, with a warning.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vcontainer_proto::SHARES_DIR;

use super::instance::{write_atomic, Instance};
use super::process::{self, ProcId};
use super::qmp::Qmp;
use super::records;
use super::virtiofs;
use crate::agent_client;

/// The record of the running VM's shares, in its state dir.
pub const SHARES_JSON: &str = "shares.json";
/// Empty root ports a memres VM boots with: how many distinct volume dirs (a dir used both
/// rw and `:ro` counts twice) one VM life can share. Each is a PCIe bridge the guest
/// enumerates at boot, so they are not free either.
pub const SLOTS: u32 = 8;

/// Why a volume could not be shared (the caller then copies it, saying this).
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("the VM has no volume share slots")]
    NoSlots,
    #[error("all {0} volume share slots of this VM are in use (`memres restart` frees them)")]
    SlotsUsed(u32),
    #[error("{0}")]
    Virtiofsd(String),
    #[error("hot-plugging the share into the VM: {0}")]
    Hotplug(String),
    #[error("mounting the share in the guest: {0}")]
    Mount(String),
    #[error("{what}: {detail}")]
    Record { what: String, detail: String },
}

/// One volume dir served to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub slot: u32,
    /// Canonical host directory.
    pub host: PathBuf,
    pub read_only: bool,
    pub virtiofsd: ProcId,
    /// False when the guest could not mount it: the slot is spent, the share unusable.
    pub mounted: bool,
}

pub use super::qemu::slot_bus;

fn tag(slot: u32) -> String {
    format!("vcvol{slot}")
}

/// Where the guest sees the share of `slot`.
pub fn guest_dir(slot: u32) -> String {
    format!("{SHARES_DIR}/{}", tag(slot))
}

/// The guest dir serving the host directory `host` (canonical) to `instance`, read-only or
/// not: an existing share of it, or a new one hot-plugged now.
pub fn share(instance: &Instance, host: &Path, read_only: bool) -> Result<String, ShareError> {
    let state = &instance.state_dir;
    let _lock = records::lock(state, SHARES_JSON).map_err(|e| ShareError::Record {
        what: SHARES_JSON.into(),
        detail: format!("{e:#}"),
    })?;
    let mut all = load(state);
    if let Some(s) = all
        .iter()
        .find(|s| s.host == host && s.read_only == read_only && s.mounted)
        .filter(|s| s.virtiofsd.is_alive())
    {
        return Ok(guest_dir(s.slot));
    }
    let slot = free_slot(&all, instance.record.share_slots)?;
    let started = std::time::Instant::now();
    let server = Server::start(instance, slot, host, read_only)?;
    tracing::debug!(slot, elapsed = ?started.elapsed(), "share: virtiofsd listening");
    hotplug(instance, slot)?;
    tracing::debug!(slot, elapsed = ?started.elapsed(), "share: device added");
    let mounted = mount(instance, slot, read_only);
    tracing::debug!(slot, elapsed = ?started.elapsed(), ok = mounted.is_ok(), "share: mounted");
    // plugged in: the slot is spent whatever the mount said
    let virtiofsd = server.keep(mounted.is_ok());
    all.push(Share {
        slot,
        host: host.to_path_buf(),
        read_only,
        virtiofsd,
        mounted: mounted.is_ok(),
    });
    save(state, &all)?;
    mounted.map(|()| guest_dir(slot))
}

fn free_slot(all: &[Share], slots: u32) -> Result<u32, ShareError> {
    if slots == 0 {
        return Err(ShareError::NoSlots);
    }
    (0..slots)
        .find(|n| !all.iter().any(|s| s.slot == *n))
        .ok_or(ShareError::SlotsUsed(slots))
}

/// A started virtiofsd, stopped again on drop unless kept.
struct Server {
    child: Option<Child>,
    socket: PathBuf,
}

impl Server {
    fn start(
        instance: &Instance,
        slot: u32,
        host: &Path,
        read_only: bool,
    ) -> Result<Server, ShareError> {
        let socket = socket_path(instance, slot);
        let log = instance.state_dir.join(format!("virtiofsd-{slot}.log"));
        let child = virtiofs::spawn(&virtiofs::Files {
            socket: &socket,
            log: &log,
            dir: host,
            read_only,
        })
        .map_err(ShareError::Virtiofsd)?;
        Ok(Server {
            child: Some(child),
            socket,
        })
    }

    /// Leaves it running (for the VM's life) and returns its identity; with `alive` false it
    /// is stopped first (its device stays plugged, unusable).
    fn keep(mut self, alive: bool) -> ProcId {
        let mut child = self.child.take();
        let pid = child.as_ref().map_or(0, |c| c.id() as i32);
        let id = ProcId::of(pid).unwrap_or(ProcId { pid, start_time: 0 });
        if !alive {
            if let Some(c) = child.as_mut() {
                process::kill_child(c);
            }
        }
        id
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            process::kill_child(c);
            virtiofs::remove_files(&self.socket);
        }
    }
}

fn socket_path(instance: &Instance, slot: u32) -> PathBuf {
    instance
        .record
        .paths
        .socket_dir
        .join(format!("vfs{slot}.sock"))
}

/// `chardev-add` for virtiofsd's socket, then `device_add` on the slot's root port.
fn hotplug(instance: &Instance, slot: u32) -> Result<(), ShareError> {
    let paths = &instance.record.paths;
    let mut q =
        Qmp::connect(&paths.qmp_socket, Duration::from_secs(5)).map_err(ShareError::Hotplug)?;
    let socket = socket_path(instance, slot);
    let socket = socket
        .to_str()
        .ok_or_else(|| ShareError::Hotplug(format!("{} is not UTF-8", socket.display())))?;
    let chardev = format!("vcfs{slot}");
    q.execute(
        "chardev-add",
        Some(json!({
            "id": chardev,
            "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": socket}},
                "server": false
            }}
        })),
    )
    .map_err(ShareError::Hotplug)?;
    q.execute(
        "device_add",
        Some(json!({
            "driver": "vhost-user-fs-pci",
            "id": format!("vcfsdev{slot}"),
            "chardev": chardev,
            "tag": tag(slot),
            "bus": slot_bus(slot),
        })),
    )
    .map_err(ShareError::Hotplug)?;
    Ok(())
}

fn mount(instance: &Instance, slot: u32, read_only: bool) -> Result<(), ShareError> {
    let conn = instance
        .connect()
        .map_err(|e| ShareError::Mount(e.to_string()))?;
    agent_client::mount_share(conn, &tag(slot), read_only)
        .map_err(|e| ShareError::Mount(e.to_string()))
}

/// The recorded shares (none when the file is missing or unreadable).
pub fn load(state: &Path) -> Vec<Share> {
    records::load(state, SHARES_JSON)
}

fn save(state: &Path, all: &[Share]) -> Result<(), ShareError> {
    let bytes = serde_json::to_vec_pretty(all).map_err(|e| ShareError::Record {
        what: SHARES_JSON.into(),
        detail: e.to_string(),
    })?;
    write_atomic(&state.join(SHARES_JSON), &bytes).map_err(|e| ShareError::Record {
        what: SHARES_JSON.into(),
        detail: e.to_string(),
    })
}

/// After the VM stopped (or before a new one boots in `state`): stops the shares'
/// virtiofsd that are still there and forgets them. Best effort: a virtiofsd also ends when
/// QEMU, its client, is gone.
pub fn stop_all(state: &Path, socket_dir: &Path) {
    for s in load(state) {
        if s.virtiofsd.signal(Signal::SIGTERM) && !s.virtiofsd.wait_gone(Duration::from_secs(2)) {
            s.virtiofsd.signal(Signal::SIGKILL);
        }
    }
    for slot in 0..SLOTS {
        virtiofs::remove_files(&socket_dir.join(format!("vfs{slot}.sock")));
    }
    let _ = std::fs::remove_file(state.join(SHARES_JSON));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(slot: u32) -> Share {
        Share {
            slot,
            host: PathBuf::from(format!("/h/{slot}")),
            read_only: false,
            // no such process: stop_all must not signal anything real
            virtiofsd: ProcId {
                pid: i32::MAX - 1,
                start_time: 1,
            },
            mounted: true,
        }
    }

    #[test]
    fn slots_are_spent_in_order_and_never_reused() {
        assert_eq!(free_slot(&[], 2).expect("free"), 0);
        assert_eq!(free_slot(&[share(0)], 2).expect("free"), 1);
        assert_eq!(free_slot(&[share(1)], 2).expect("free"), 0);
        assert!(matches!(
            free_slot(&[share(0), share(1)], 2),
            Err(ShareError::SlotsUsed(2))
        ));
        assert!(matches!(free_slot(&[], 0), Err(ShareError::NoSlots)));
    }

    #[test]
    fn tags_are_valid_and_land_under_the_shares_dir() {
        for slot in 0..SLOTS {
            assert!(vcontainer_proto::valid_share_tag(&tag(slot)));
        }
        assert_eq!(guest_dir(3), format!("{SHARES_DIR}/vcvol3"));
        assert_eq!(slot_bus(0), "vcshare0");
    }

    #[test]
    fn the_record_round_trips_and_stop_all_forgets_it() {
        let t = tempfile::tempdir().expect("tmp");
        save(t.path(), &[share(0), share(1)]).expect("save");
        assert_eq!(load(t.path()), [share(0), share(1)]);
        stop_all(t.path(), t.path());
        assert!(load(t.path()).is_empty());
        assert!(!t.path().join(SHARES_JSON).exists());
    }
}
