//! The VM layer of vcontainer, a crate of its own (as cloud-hypervisor splits `vmm` from the
//! devices): booting QEMU for a target arch (`vm::boot`, `vm::qemu`), the vsock transports,
//! memres VMs and their supervisor, snapshots, live volume shares, port forwards, and the
//! client of the guest agent (`agent_client`). A test or another tool can boot a guest and
//! run commands in it with this crate alone; the CLI (`vcontainer`) adds the command front,
//! the plugins and the runner on top.
//!
//! `trust` is here because the VM layer refuses socket dirs others could replace, with the
//! same rule the CLI applies to state dirs and plugins.

pub mod agent_client;
pub mod trust;
pub mod vm;
