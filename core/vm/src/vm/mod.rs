//! The VM: QEMU command line, acceleration, transports, batch and memres lifecycle.
//!
//! One file per concern: `accel` (KVM or TCG), `qemu` (the declarative `VmSpec` and its argv),
//! `transport` (vsock or hybrid vsock, CIDs, connecting), `blobs` (finding kernel/initramfs/
//! rootfs), `statedisk` (the persistent ext4 image), `process` (children and their identity),
//! `qmp` (QEMU's control socket), `boot` (start the processes and wait for the agent's hello),
//! `instance` (vm.json and finding a running VM), `supervisor` (the detached owner of a memres
//! VM), `memres` (start/stop/status/list), `batch` (boot, run, shut down), `doctor`, `vhost_gate`
//! (when a hybrid boot may first connect to vhost-device-vsock), `virtiofs` (one volume
//! dir's virtiofsd), `shares` (volume shares hot-plugged into a memres VM: live `-v` volumes),
//! `records` (the lock of the record files), `secret` (the per-VM agent secret file),
//! `engine_api` (the engine's API socket relayed to the host), `snapshot` (cold start from a
//! saved guest).

pub mod accel;
pub mod batch;
pub mod blobs;
pub mod boot;
pub mod config;
pub mod doctor;
pub mod engine_api;
pub mod engine_events;
pub mod error;
pub mod forwards;
pub mod instance;
pub mod lock;
pub mod memres;
pub mod paths;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod ramfile;
pub mod records;
pub mod secret;
pub mod shares;
pub mod snapshot;
pub mod statedisk;
pub mod supervisor;
pub mod suspend;
pub mod transport;
pub mod vhost_gate;
pub mod virtiofs;

pub use batch::{boot_batch, BatchVm};
pub use config::{Arch, PortForward, Protocol, VmConfig};
pub use doctor::{doctor, DoctorReport};
pub use error::{Result, VmError};
pub use instance::Instance;
pub use transport::AgentStream;
