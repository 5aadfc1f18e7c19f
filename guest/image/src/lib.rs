//! Builds the vcontainer guest blobs (kernel, initramfs with the agent, runtime rootfs
//! squashfs, blobs.json) from Debian packages, cached by a hash of their inputs.
//! See docs/guest-contract.md ("Guest blobs", "Guest boot contract") for what the blobs must
//! hold.

pub mod blobs_json;
pub mod build;
pub mod cache;
pub mod error;
pub mod initramfs;
pub mod modules;
pub mod publish;
pub mod rootfs;
pub mod runtime_files;

pub use build::{build, BuildReport, BuildRequest};
pub use error::{Error, Result};
/// The guest arch and its Debian/kernel facts, shared with the host CLI.
pub use vcontainer_arch::Arch;
