//! blobs.json: what a blob directory holds, read by the CLI to check it matches its own
//! protocol and arch before booting.

use crate::error::{io_err, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const BLOBS_JSON: &str = "blobs.json";

/// The contract fields (docs/guest-contract.md "Guest blobs") plus what helps when debugging
/// a blob dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobsJson {
    pub arch: String,
    pub runtime: String,
    pub kernel_version: String,
    /// sha256 over every input of this blob set (the initramfs stage key).
    pub input_hash: String,
    /// The host<->agent protocol version the agent speaks (vcontainer_proto::PROTOCOL_VERSION
    /// of the tree that built it), so the CLI can refuse a mismatched blob dir before booting.
    pub protocol_version: u32,
    /// Modules in the initramfs, in load order (as in /etc/vcontainer/modules).
    #[serde(default)]
    pub boot_modules: Vec<String>,
    /// Debian packages the rootfs was built from (sorted).
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub suite: String,
    #[serde(default)]
    pub squashfs_compression: String,
}

impl BlobsJson {
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(io_err("writing", path))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_has_the_contract_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BLOBS_JSON);
        let b = BlobsJson {
            arch: "x86_64".into(),
            runtime: "docker".into(),
            kernel_version: "6.1.0-50-cloud-amd64".into(),
            input_hash: "ab".repeat(32),
            protocol_version: 1,
            boot_modules: vec!["kernel/fs/squashfs/squashfs.ko".into()],
            packages: vec!["docker.io".into()],
            suite: "bookworm".into(),
            squashfs_compression: "lz4".into(),
        };
        b.write(&path).unwrap();
        assert_eq!(BlobsJson::read(&path).unwrap(), b);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in [
            "arch",
            "runtime",
            "kernel_version",
            "input_hash",
            "protocol_version",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
    }
}
